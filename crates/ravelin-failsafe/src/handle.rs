//! [`GuardHandle`]: what an admin endpoint needs to see and steer one guard.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ravelin_primitives::KillSwitch;

use crate::circuit::{CircuitBreakerConfig, CircuitState};
use crate::policy::FailureMode;
use crate::shared::Shared;

/// A cloneable control handle for one guard, from [`GuardLayer::handle`] or
/// [`GuardService::handle`]: for status pages and operator actions. Not generic over the
/// guard, so a proxy can keep a `Vec<GuardHandle>` of all of them.
///
/// Forcing the circuit is logged and reflected in `ravelin_guard_circuit_state`.
///
/// ```
/// use ravelin_failsafe::{CircuitState, FailureMode, GuardLayer, Verdict, guard_fn};
///
/// let layer = GuardLayer::new(guard_fn("waf", |_| Ok(Verdict::allow())));
/// let handle = layer.handle();
/// assert_eq!(handle.name(), "waf");
/// assert_eq!(handle.failure_mode(), FailureMode::Open);
///
/// handle.force_open(); // every request now gets the failure policy
/// assert_eq!(handle.circuit_state().as_str(), "forced_open");
/// handle.reset();
/// assert_eq!(handle.circuit_state(), CircuitState::Closed);
/// ```
///
/// [`GuardLayer::handle`]: crate::GuardLayer::handle
/// [`GuardService::handle`]: crate::GuardService::handle
#[derive(Clone)]
pub struct GuardHandle {
    shared: Arc<Shared>,
}

impl GuardHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The guard's name ([`Guard::name`](crate::Guard::name)).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the guard fails open or closed.
    pub fn failure_mode(&self) -> FailureMode {
        self.shared.policy.mode()
    }

    /// The guard's timeout.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// The circuit's state now.
    pub fn circuit_state(&self) -> CircuitState {
        self.shared.breaker.state()
    }

    /// The circuit breaker settings in effect.
    pub fn circuit_breaker(&self) -> &CircuitBreakerConfig {
        self.shared.breaker.config()
    }

    /// The guard's kill switch, if it has one.
    pub fn kill_switch(&self) -> Option<&KillSwitch> {
        self.shared.kill_switch.as_ref()
    }

    /// Whether the kill switch is engaged (module off).
    pub fn is_killed(&self) -> bool {
        self.shared.is_killed()
    }

    /// Opens the circuit until [`reset`](Self::reset) or [`force_closed`](Self::force_closed):
    /// the guard is not called and its failure policy applies to every request (outcome
    /// `circuit_open`). Unlike the kill switch, a fail-closed guard then refuses requests.
    pub fn force_open(&self) {
        self.shared.breaker.force_open();
    }

    /// Closes the circuit and stops counting failures until [`reset`](Self::reset) or
    /// [`force_open`](Self::force_open): the guard is always called.
    pub fn force_closed(&self) {
        self.shared.breaker.force_closed();
    }

    /// Back to a normal closed circuit with an empty window.
    pub fn reset(&self) {
        self.shared.breaker.reset();
    }
}

impl fmt::Debug for GuardHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardHandle")
            .field("name", &self.name())
            .field("failure_mode", &self.failure_mode())
            .field("circuit_state", &self.circuit_state())
            .field("killed", &self.is_killed())
            .finish()
    }
}
