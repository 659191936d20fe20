//! How a module fails and where its circuit stands: the two facts every guard declares and every
//! status page shows, defined once so that `ravelin-failsafe` (which acts on them) and
//! `ravelin-proxy`'s `/status` (which reports them) share one type instead of strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which way a guard fails. In configuration and on `/status`: `"open"` or `"closed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// The request continues as if the guard were absent, marked skipped.
    Open,
    /// The request is answered with the guard's failure response.
    Closed,
}

impl FailureMode {
    /// `"open"` or `"closed"`, for logs, metrics and status pages.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

/// Where a guard's circuit stands. On `/status`: `"closed"`, `"open"`, `"half_open"`,
/// `"forced_open"` or `"forced_closed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// The guard is called for every request; failures are counted.
    Closed,
    /// The guard is not called; the failure policy applies to every request.
    Open,
    /// A few requests probe the guard; the rest get the failure policy.
    HalfOpen,
    /// Opened by an operator; stays open until reset or forced closed.
    ForcedOpen,
    /// Closed by an operator; failures are not counted and never open it.
    ForcedClosed,
}

impl CircuitState {
    /// `closed`, `open`, `half_open`, `forced_open` or `forced_closed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::ForcedClosed => "forced_closed",
        }
    }

    /// The value of the `ravelin_guard_circuit_state` gauge: 0 closed, 1 open, 2 half-open,
    /// 3 forced open, 4 forced closed.
    pub const fn gauge_value(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::Open => 1.0,
            CircuitState::HalfOpen => 2.0,
            CircuitState::ForcedOpen => 3.0,
            CircuitState::ForcedClosed => 4.0,
        }
    }

    /// Whether requests skip the guard in this state (before any half-open probe cap).
    pub const fn is_open(self) -> bool {
        matches!(self, CircuitState::Open | CircuitState::ForcedOpen)
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
