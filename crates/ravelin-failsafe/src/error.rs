//! Errors of the layer's own configuration. Guard failures are [`GuardError`](crate::GuardError);
//! the inner service's errors pass through unchanged.

/// A guard layer setting is out of range. The layer still runs, with the value clamped into
/// range (see [`CircuitBreakerConfig::validate`](crate::CircuitBreakerConfig::validate)), and
/// logs this error when it is built; call `validate` yourself to refuse such a configuration.
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
    /// The guard's name cannot be used as a header value.
    #[error(
        "guard name {name:?} is not a valid header value (use visible ASCII, e.g. \"botscore\"); \
         the skip header is left out for this guard"
    )]
    Name {
        /// The name given.
        name: String,
    },
}
