//! A guard's failure semantics as an operator writes them: one serde type, owned here, so every
//! module and every assembly (the edge's `[ratelimit.guard]`, `[botscore.guard]`) share one set
//! of names, defaults and checks instead of re-declaring them per module.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use ravelin_primitives::{Validate, Violations};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::{CircuitBreakerConfig, DEFAULT_TIMEOUT, FailureMode, FailurePolicy, X_RAVELIN_SKIPPED};

/// The longest per-request budget a [`GuardConfig`] or a [`GuardLayer`](crate::GuardLayer)
/// builder accepts: a guard looks at a request head.
pub const MAX_GUARD_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest fail-closed body a [`GuardConfig`] or a [`GuardLayer`](crate::GuardLayer)
/// builder accepts, in bytes.
pub const MAX_FAILURE_BODY_BYTES: usize = 4096;

/// How a guard fails, as configuration: the [`FailurePolicy`], the per-request budget and the
/// circuit breaker of one [`GuardLayer`](crate::GuardLayer). Every field has a default; unknown
/// keys are errors.
///
/// | key | default |
/// |---|---|
/// | `failure_mode` | `"open"` |
/// | `timeout` | `"100ms"` ([`DEFAULT_TIMEOUT`]) |
/// | `failure_status` | `503` (fail-closed answer; any 4xx or 5xx) |
/// | `failure_body` | the policy's short text |
/// | `mark_skipped` | `true`: a request that passes because the guard failed open or was killed is marked in `x-ravelin-skipped: <guard>=<reason>` to the origin |
/// | `circuit` | [`CircuitConfig`]: failsafe's breaker defaults |
///
/// ```
/// use ravelin_failsafe::{Validate, FailureMode, GuardConfig, GuardLayer, guard_fn, Verdict};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config: GuardConfig = serde_json::from_str(
///     r#"{ "failure_mode": "closed", "timeout": "50ms", "failure_status": 403,
///          "circuit": { "window": 50, "minimum_calls": 10 } }"#,
/// )?;
/// config.validate().map_err(|violations| violations.to_string())?;
/// let layer = GuardLayer::from_config(guard_fn("authz", |_| Ok(Verdict::allow())), &config)?;
/// assert_eq!(layer.handle().failure_mode(), FailureMode::Closed);
///
/// // What `validate` refuses, building refuses too.
/// let zero: GuardConfig = serde_json::from_str(r#"{ "timeout": "0s" }"#)?;
/// let refused = GuardLayer::from_config(guard_fn("authz", |_| Ok(Verdict::allow())), &zero);
/// assert!(refused.unwrap_err().to_string().contains("timeout: must be greater than zero"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// `open` or `closed`.
    pub failure_mode: FailureMode,
    /// The guard's budget per request (wall-clock; see [`GuardLayerBuilder::timeout`](crate::GuardLayerBuilder::timeout)).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Status of the fail-closed answer.
    pub failure_status: u16,
    /// Body of the fail-closed answer; `None` keeps the policy's default text.
    pub failure_body: Option<String>,
    /// Whether a fail-open pass is marked towards the origin with `x-ravelin-skipped`.
    pub mark_skipped: bool,
    /// Circuit-breaker overrides.
    pub circuit: CircuitConfig,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            failure_mode: FailureMode::Open,
            timeout: DEFAULT_TIMEOUT,
            failure_status: 503,
            failure_body: None,
            mark_skipped: true,
            circuit: CircuitConfig::default(),
        }
    }
}

impl GuardConfig {
    /// The failure policy this configuration declares. An invalid status (refused by
    /// [`validate`](Validate::validate)) keeps the policy's default 503.
    pub fn policy(&self) -> FailurePolicy {
        match self.failure_mode {
            FailureMode::Open if self.mark_skipped => {
                FailurePolicy::open().skip_header(X_RAVELIN_SKIPPED)
            }
            FailureMode::Open => FailurePolicy::open(),
            FailureMode::Closed => {
                let mut closed = FailurePolicy::closed();
                if let Ok(status) = StatusCode::from_u16(self.failure_status) {
                    closed = closed.status(status);
                }
                if let Some(body) = &self.failure_body {
                    closed = closed.body(Bytes::from(body.clone()));
                }
                closed
            }
        }
    }

    /// The circuit breaker this configuration declares.
    pub fn circuit_breaker(&self) -> CircuitBreakerConfig {
        self.circuit.breaker()
    }
}

impl Validate for GuardConfig {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        if self.timeout.is_zero() {
            v.push("timeout", "must be greater than zero");
        } else if self.timeout > MAX_GUARD_TIMEOUT {
            v.push(
                "timeout",
                format!(
                    "{:?} is longer than the limit of {MAX_GUARD_TIMEOUT:?}: a guard's budget is per request",
                    self.timeout
                ),
            );
        }
        if !(400..=599).contains(&self.failure_status) {
            v.push(
                "failure_status",
                format!("{} is not a 4xx or 5xx status", self.failure_status),
            );
        }
        if let Some(body) = &self.failure_body {
            v.check_count("failure_body", "bytes", body.len(), MAX_FAILURE_BODY_BYTES);
        }
        match self.circuit_breaker().validate() {
            Ok(()) => {}
            Err(ConfigError::CircuitBreaker {
                setting,
                value,
                allowed,
            }) => v.push(
                format!("circuit.{setting}"),
                format!("{value} is out of range; allowed: {allowed}"),
            ),
            Err(other) => v.push("circuit", other.to_string()),
        }
        v.into_result()
    }
}

/// Overrides of the circuit-breaker defaults ([`CircuitBreakerConfig::new`]); an absent key
/// keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitConfig {
    /// Never open by itself (forcing through the handle still works).
    pub disabled: bool,
    /// Opens when this share of the window failed; (0, 1].
    pub failure_rate: Option<f64>,
    /// Calls in the sliding window; 1..=4096.
    pub window: Option<u32>,
    /// Calls before the rate counts; 1..=window.
    pub minimum_calls: Option<u32>,
    /// Opens after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// How long it stays open before probing.
    #[serde(with = "humantime_serde")]
    pub open_for: Option<Duration>,
    /// Probes allowed in flight while half-open.
    pub half_open_probes: Option<u32>,
    /// Successful probes needed to close.
    pub half_open_successes: Option<u32>,
    /// The longest time half-open before re-opening.
    #[serde(with = "humantime_serde")]
    pub max_half_open: Option<Duration>,
}

impl CircuitConfig {
    /// The breaker: failsafe's defaults with these overrides.
    pub fn breaker(&self) -> CircuitBreakerConfig {
        let mut config = if self.disabled {
            CircuitBreakerConfig::disabled()
        } else {
            CircuitBreakerConfig::new()
        };
        if let Some(rate) = self.failure_rate {
            config = config.failure_rate(rate);
        }
        if let Some(window) = self.window {
            config = config.window(window);
        }
        if let Some(minimum) = self.minimum_calls {
            config = config.minimum_calls(minimum);
        }
        if let Some(consecutive) = self.consecutive_failures {
            config = config.consecutive_failures(consecutive);
        }
        if let Some(open_for) = self.open_for {
            config = config.open_for(open_for);
        }
        if let Some(probes) = self.half_open_probes {
            config = config.half_open_probes(probes);
        }
        if let Some(successes) = self.half_open_successes {
            config = config.half_open_successes(successes);
        }
        if let Some(max) = self.max_half_open {
            config = config.max_half_open(max);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<GuardConfig, String> {
        let config: GuardConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        config.validate().map_err(|v| v.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_empty_document_is_the_default() {
        let config = parse("{}").unwrap();
        assert_eq!(config, GuardConfig::default());
        assert_eq!(config.timeout, DEFAULT_TIMEOUT);
        assert_eq!(config.policy().mode(), FailureMode::Open);
        assert_eq!(config.policy().skip_header_name(), Some(&X_RAVELIN_SKIPPED));
        assert_eq!(config.circuit_breaker(), CircuitBreakerConfig::new());
    }

    #[test]
    fn closed_policy_carries_status_and_body() {
        let config = parse(
            r#"{"failure_mode": "closed", "failure_status": 403, "failure_body": "no\n", "timeout": "20ms"}"#,
        )
        .unwrap();
        assert_eq!(config.policy().mode(), FailureMode::Closed);
        assert_eq!(config.timeout, Duration::from_millis(20));
    }

    #[test]
    fn circuit_overrides_apply_over_the_defaults() {
        let config =
            parse(r#"{"circuit": {"window": 50, "minimum_calls": 10, "open_for": "2s"}}"#).unwrap();
        let expected = CircuitBreakerConfig::new()
            .window(50)
            .minimum_calls(10)
            .open_for(Duration::from_secs(2));
        assert_eq!(config.circuit_breaker(), expected);
        let disabled = parse(r#"{"circuit": {"disabled": true}}"#).unwrap();
        assert!(!disabled.circuit_breaker().is_enabled());
    }

    #[test]
    fn every_bad_value_is_named() {
        for (json, field) in [
            (r#"{"timeout": "0s"}"#, "timeout"),
            (r#"{"timeout": "2m"}"#, "timeout"),
            (r#"{"failure_status": 200}"#, "failure_status"),
            (r#"{"failure_status": 999}"#, "failure_status"),
            (r#"{"circuit": {"window": 100000}}"#, "circuit"),
            (r#"{"circuit": {"failure_rate": 0.0}}"#, "circuit"),
            (r#"{"circuit": {"open_for": "2h"}}"#, "circuit.open_for"),
        ] {
            let error = parse(json).unwrap_err();
            assert!(error.contains(field), "{json}: {error}");
        }
        let long_body = format!(r#"{{"failure_body": "{}"}}"#, "x".repeat(5000));
        assert!(parse(&long_body).unwrap_err().contains("failure_body"));
    }

    #[test]
    fn unknown_keys_and_modes_are_refused() {
        assert!(
            parse(r#"{"failure_mod": "open"}"#)
                .unwrap_err()
                .contains("failure_mod")
        );
        assert!(
            parse(r#"{"failure_mode": "sideways"}"#)
                .unwrap_err()
                .contains("sideways")
        );
        assert!(
            parse(r#"{"circuit": {"windw": 5}}"#)
                .unwrap_err()
                .contains("windw")
        );
    }
}
