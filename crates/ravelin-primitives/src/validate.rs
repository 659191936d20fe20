//! The validation vocabulary every configuration type speaks: [`Validate`] (the owner's rules
//! for a document), [`Violation`] (one broken rule, by field path) and [`Violations`] (all of
//! them, bounded).
//!
//! `ravelin-config`'s store runs these checks on every candidate document before installing it
//! (and re-exports these names); the types live here so that a crate can declare its
//! configuration's rules without depending on the store's parsers, hashing and file I/O.
//!
//! ```
//! use ravelin_primitives::{Validate, Violations};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Limits {
//!     max_keys: usize,
//!     ratio: f64,
//! }
//!
//! impl Validate for Limits {
//!     fn validate(&self) -> Result<(), Violations> {
//!         let mut v = Violations::new();
//!         v.check_range("max_keys", self.max_keys, 1..=1_000_000);
//!         v.check_finite("ratio", self.ratio);
//!         v.into_result()
//!     }
//! }
//!
//! let err = Limits { max_keys: 0, ratio: f64::NAN }.validate().unwrap_err();
//! assert_eq!(err.total(), 2);
//! assert_eq!(
//!     err.to_string(),
//!     "max_keys: value 0 is outside 1..=1000000; ratio: value NaN is not finite"
//! );
//! ```

use std::fmt;

use serde::de::DeserializeOwned;

/// Domain rules for a document type, implemented by the owner of the type.
///
/// A configuration store (`ravelin_config::Store`) calls [`validate`](Validate::validate) on
/// every parsed candidate and installs it only when it returns `Ok`. Put every hard limit here
/// (counts, ranges, uniqueness): a document that passes must be safe to use on the data plane
/// without further checks.
pub trait Validate: DeserializeOwned + Send + Sync + 'static {
    /// Checks the document; every broken rule is a [`Violation`] naming its field path.
    fn validate(&self) -> Result<(), Violations>;

    /// The document's generation, when its format carries one. Versions are monotonic: a
    /// store rejects a candidate older than the active snapshot as stale
    /// (`ravelin_config::Rejection::Stale`).
    fn version(&self) -> Option<u64> {
        None
    }

    /// Precomputes derived state (indexes, compiled matchers) once the document has passed
    /// validation, so that readers never do it per request. Infallible by design: anything that can
    /// fail belongs in [`validate`](Validate::validate).
    fn prepare(&mut self) {}
}

/// One broken rule in a document: the field path and what is wrong with it.
///
/// `path` follows the document: `features[3].weight`, `routes[0].upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field (`features[3].weight`), or `""` for the document as a whole.
    pub path: String,
    /// What is wrong, with the limit and the actual value where there is one.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All the violations found in one document, capped at [`Violations::MAX_KEPT`] so that a document
/// with a million bad rows cannot make its own error report unbounded; the rest are counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations {
    kept: Vec<Violation>,
    total: usize,
}

impl Violations {
    /// How many violations are kept with their text; later ones are only counted.
    pub const MAX_KEPT: usize = 32;

    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A single violation.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        let mut v = Self::new();
        v.push(path, message);
        v
    }

    /// Records a violation at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.total = self.total.saturating_add(1);
        if self.kept.len() < Self::MAX_KEPT {
            self.kept.push(Violation {
                path: path.into(),
                message: message.into(),
            });
        }
    }

    /// Records every violation of `other` (those only counted there stay counted here).
    pub fn merge(&mut self, other: Violations) {
        self.merge_under("", other);
    }

    /// Records every violation of `other` with its path nested under `section`: a document that
    /// embeds another crate's configuration reports `botscore.routes[0].prefix`, not
    /// `routes[0].prefix`. An empty `section` keeps the paths as they are.
    pub fn merge_under(&mut self, section: &str, other: Violations) {
        let hidden = other.total.saturating_sub(other.kept.len());
        for violation in other.kept {
            let path = match (section.is_empty(), violation.path.is_empty()) {
                (true, _) => violation.path,
                (false, true) => section.to_owned(),
                (false, false) => format!("{section}.{}", violation.path),
            };
            self.push(path, violation.message);
        }
        self.total = self.total.saturating_add(hidden);
    }

    /// Records a violation when `count` exceeds `limit`: `"412 entries exceeds limit 256"`.
    /// Returns `false` when the limit was exceeded, so a validator can stop walking a huge list.
    pub fn check_count(&mut self, path: &str, what: &str, count: usize, limit: usize) -> bool {
        if count > limit {
            self.push(path, format!("{count} {what} exceeds limit {limit}"));
            false
        } else {
            true
        }
    }

    /// Records a violation when `value` is NaN or infinite.
    pub fn check_finite(&mut self, path: &str, value: f64) {
        if !value.is_finite() {
            self.push(path, format!("value {value} is not finite"));
        }
    }

    /// Records a violation when `value` lies outside `range`.
    pub fn check_range<N>(&mut self, path: &str, value: N, range: std::ops::RangeInclusive<N>)
    where
        N: PartialOrd + fmt::Display + Copy,
    {
        if !range.contains(&value) {
            self.push(
                path,
                format!(
                    "value {value} is outside {}..={}",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many violations were recorded, including those not kept.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The violations kept with their text (at most [`Violations::MAX_KEPT`]).
    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.kept.iter()
    }

    /// `Ok(())` when empty, else `Err(self)`: the usual last line of a [`Validate`] impl.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.kept.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        let hidden = self.total.saturating_sub(self.kept.len());
        if hidden > 0 {
            write!(f, "; and {hidden} more")?;
        }
        Ok(())
    }
}
