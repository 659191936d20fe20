//! Module slots: each module turns its config section into a layer of the stack, keeps its state
//! across reloads, and reports itself to `/status`.

use hyper::body::Incoming;
use ravelin_config::{KillSwitch, Switchboard};
use ravelin_failsafe::{Guard, GuardConfig, GuardHandle, GuardLayer};
use ravelin_proxy::ModuleStatus;
use serde_json::Value;

use crate::stack::{BoxGuard, EdgeService, Slot, layered};

/// Wraps `guard` (a module under the name it gives itself) with the policy, timeout and breaker
/// of its `[<module>.guard]` (failsafe's own `GuardLayerBuilder::config`) and the kill switch of
/// that name.
///
/// # Errors
/// What the guard layer refuses, prefixed with the module's name.
pub(crate) fn guard_layer<G: Guard>(
    guard: G,
    config: &GuardConfig,
    switchboard: &Switchboard,
) -> Result<GuardLayer<G>, String> {
    let name = guard.name();
    GuardLayer::builder(guard)
        .config(config)
        .switchboard(switchboard)
        .build()
        .map_err(|e| format!("{name}.guard: {e}"))
}

/// A guard module's `/status` entry from its handle.
pub(crate) fn guard_status(handle: &GuardHandle, detail: Value) -> ModuleStatus {
    ModuleStatus {
        name: handle.name().to_owned(),
        failure_mode: handle.failure_mode().as_str().to_owned(),
        timeout_ms: Some(u64::try_from(handle.timeout().as_millis()).unwrap_or(u64::MAX)),
        circuit: Some(handle.circuit_state().as_str().to_owned()),
        killed: handle.is_killed(),
        detail,
    }
}

/// Sets a kill switch from the config when the config's value changed (or at startup), so an
/// operator's `POST /modules/{name}/kill` is not undone by an unrelated reload.
pub(crate) fn apply_killed(switch: &KillSwitch, old: Option<bool>, new: bool) {
    if old != Some(new) {
        switch.set(new, "config");
    }
}

// === extra guard ===

/// An additional guard placed after bot scoring: how tests put a misbehaving module (one that
/// panics on every request) into the real stack.
#[derive(Clone, Debug)]
pub struct ExtraGuard {
    /// The guard; its own name ([`Guard::name`]) is the module's (kill switch, metrics label,
    /// `/status` entry, skip-header key).
    pub guard: BoxGuard,
    /// Its policy.
    pub policy: GuardConfig,
}

/// The extra guard's slot.
#[derive(Clone)]
pub(crate) struct ExtraModule {
    layer: GuardLayer<BoxGuard>,
}

impl ExtraModule {
    /// Builds the layer once: its circuit breaker lives as long as the process.
    ///
    /// # Errors
    /// What the guard layer refuses in the extra guard's policy.
    pub(crate) fn new(extra: &ExtraGuard, switchboard: &Switchboard) -> Result<Self, String> {
        Ok(Self {
            layer: guard_layer(extra.guard.clone(), &extra.policy, switchboard)?,
        })
    }

    /// The slot.
    pub(crate) fn slot(&self) -> Slot<Incoming> {
        let layer = self.layer.clone();
        Box::new(move |inner: EdgeService<Incoming>| layered(layer, inner))
    }

    /// `/status` entry.
    pub(crate) fn status(&self) -> ModuleStatus {
        guard_status(&self.layer.handle(), Value::Null)
    }
}
