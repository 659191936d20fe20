//! [`Enforcement`]: whether a policy acts on its decisions or only reports them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether a policy (a rate-limit rule, a bot-score route) acts on its decisions or only
/// reports them. One type for every module, spelled `"enforce"` / `"shadow"` in configuration.
///
/// Shadow mode computes the same decision, logs it and counts it, but lets the request through
/// untouched: the way to try a new limit or threshold on live traffic before enforcing it.
///
/// ```
/// use ravelin_primitives::Enforcement;
///
/// #[derive(serde::Deserialize)]
/// struct Rule {
///     #[serde(default)]
///     action: Enforcement,
/// }
///
/// let rule: Rule = serde_json::from_str(r#"{ "action": "shadow" }"#).unwrap();
/// assert_eq!(rule.action, Enforcement::Shadow);
/// assert!(rule.action.is_shadow());
/// let rule: Rule = serde_json::from_str("{}").unwrap();
/// assert_eq!(rule.action, Enforcement::Enforce);
/// assert_eq!(rule.action.as_str(), "enforce");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Act on the decision: answer 429, challenge, block (default).
    #[default]
    Enforce,
    /// Compute, log and count the decision, but never act on it.
    Shadow,
}

impl Enforcement {
    /// A short stable name, for logs and metric labels: `"enforce"` or `"shadow"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Enforcement::Enforce => "enforce",
            Enforcement::Shadow => "shadow",
        }
    }

    /// Whether decisions are acted on.
    pub const fn is_enforce(self) -> bool {
        matches!(self, Enforcement::Enforce)
    }

    /// Whether decisions are only reported.
    pub const fn is_shadow(self) -> bool {
        matches!(self, Enforcement::Shadow)
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_the_configuration_spellings() {
        for (value, text) in [
            (Enforcement::Enforce, "\"enforce\""),
            (Enforcement::Shadow, "\"shadow\""),
        ] {
            assert_eq!(serde_json::to_string(&value).unwrap(), text);
            assert_eq!(serde_json::from_str::<Enforcement>(text).unwrap(), value);
            assert_eq!(format!("\"{value}\""), text);
        }
        assert!(serde_json::from_str::<Enforcement>("\"Enforce\"").is_err());
        assert!(serde_json::from_str::<Enforcement>("\"log\"").is_err());
    }
}
