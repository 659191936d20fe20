//! Errors of the layer's own configuration. Guard failures are [`GuardError`](crate::GuardError);
//! the inner service's errors pass through unchanged.

use std::time::Duration;

/// A guard layer setting is out of range: [`GuardLayerBuilder::build`](crate::GuardLayerBuilder::build)
/// refuses it (nothing is clamped), naming the setting, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A circuit breaker setting is out of range.
    #[error("circuit breaker setting `{setting}` is {value}; allowed: {allowed}")]
    CircuitBreaker {
        /// The setting's name, as its builder method.
        setting: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        allowed: String,
    },
    /// The guard's name cannot be shown in the skip header.
    #[error(
        "guard name {name:?} cannot be a key of the skip header: use a structured-field key \
         (a lowercase letter or `*`, then lowercase letters, digits, `_`, `-`, `.`, `*`; e.g. \
         \"botscore\")"
    )]
    Name {
        /// The name given.
        name: String,
    },
    /// The timeout is zero or longer than [`MAX_GUARD_TIMEOUT`](crate::MAX_GUARD_TIMEOUT).
    #[error("guard timeout {timeout:?} is out of range: more than zero and at most {max:?}")]
    Timeout {
        /// The value given.
        timeout: Duration,
        /// [`MAX_GUARD_TIMEOUT`](crate::MAX_GUARD_TIMEOUT).
        max: Duration,
    },
    /// The fail-closed status is not a 4xx or 5xx.
    #[error("failure status {status} is not a 4xx or 5xx status")]
    FailureStatus {
        /// The status given.
        status: u16,
    },
    /// The fail-closed body is longer than [`MAX_FAILURE_BODY_BYTES`](crate::MAX_FAILURE_BODY_BYTES).
    #[error("failure body is {bytes} bytes; the limit is {max}")]
    FailureBody {
        /// The body's length.
        bytes: usize,
        /// [`MAX_FAILURE_BODY_BYTES`](crate::MAX_FAILURE_BODY_BYTES).
        max: usize,
    },
    /// A [`GuardConfig`](crate::GuardConfig) breaks its rules: every violation, by field.
    #[error("guard configuration: {0}")]
    Config(ravelin_primitives::Violations),
}
