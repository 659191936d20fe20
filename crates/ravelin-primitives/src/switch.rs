//! Kill switches: named, lock-free flags that turn a module off at run time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// A runtime switch for one module. Cheap to clone; every clone sees the same state.
///
/// Reading is one relaxed atomic load, so it can be checked on every request.
#[derive(Clone)]
pub struct KillSwitch {
    inner: Arc<SwitchInner>,
}

struct SwitchInner {
    name: String,
    engaged: AtomicBool,
}

impl KillSwitch {
    /// A switch not registered on any [`Switchboard`], for tests and single-module embeddings.
    pub fn standalone(name: impl Into<String>) -> Self {
        let switch = Self {
            inner: Arc::new(SwitchInner {
                name: name.into(),
                engaged: AtomicBool::new(false),
            }),
        };
        switch.publish();
        switch
    }

    /// The module this switch controls.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the module is switched off. Relaxed ordering: a flip only has to become visible
    /// soon, and it orders nothing else.
    #[inline]
    pub fn is_engaged(&self) -> bool {
        self.inner.engaged.load(Ordering::Relaxed)
    }

    /// Switches the module off; logged and exported.
    pub fn engage(&self, by: &str) {
        self.set(true, by);
    }

    /// Switches the module back on; logged and exported.
    pub fn disengage(&self, by: &str) {
        self.set(false, by);
    }

    /// Sets the state; returns the previous one. Every flip is logged with who asked for it.
    pub fn set(&self, engaged: bool, by: &str) -> bool {
        let previous = self.inner.engaged.swap(engaged, Ordering::Relaxed);
        if previous != engaged {
            tracing::warn!(
                module = %self.inner.name,
                engaged,
                by,
                "kill switch {}",
                if engaged { "engaged: module off" } else { "released: module on" }
            );
        }
        self.publish();
        previous
    }

    fn publish(&self) {
        metrics::gauge!("ravelin_killswitch_engaged", "module" => self.inner.name.clone())
            .set(if self.is_engaged() { 1.0 } else { 0.0 });
    }
}

impl fmt::Debug for KillSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KillSwitch")
            .field("name", &self.inner.name)
            .field("engaged", &self.is_engaged())
            .finish()
    }
}

/// A kill switch name that no module registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no kill switch named {name:?}; known switches: {known}")]
pub struct UnknownSwitch {
    /// The name asked for.
    pub name: String,
    /// The registered names, comma-separated.
    pub known: String,
}

/// The set of kill switches in a process, by module name.
///
/// Modules register their switch when they are built ([`Switchboard::switch`]); operators flip
/// them by name ([`Switchboard::set`]), through an admin API or config. Only code registers
/// switches, never traffic, so the set is bounded by the program.
#[derive(Clone, Default)]
pub struct Switchboard {
    switches: Arc<RwLock<BTreeMap<String, KillSwitch>>>,
}

impl Switchboard {
    /// An empty switchboard.
    pub fn new() -> Self {
        Self::default()
    }

    /// The switch for `module`, registering it (released) on first use. Call this when building a
    /// module, then keep the returned handle: reading it does not touch the switchboard.
    pub fn switch(&self, module: &str) -> KillSwitch {
        if let Some(existing) = self.read().get(module) {
            return existing.clone();
        }
        let mut map = self
            .switches
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(module.to_owned())
            .or_insert_with(|| KillSwitch::standalone(module))
            .clone()
    }

    /// Engages (`true`) or releases (`false`) the switch of `module`; returns its previous state.
    ///
    /// # Errors
    /// [`UnknownSwitch`] when no module registered that name.
    pub fn set(&self, module: &str, engaged: bool, by: &str) -> Result<bool, UnknownSwitch> {
        let map = self.read();
        match map.get(module) {
            Some(switch) => Ok(switch.set(engaged, by)),
            None => Err(UnknownSwitch {
                name: module.to_owned(),
                known: map.keys().cloned().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Whether `module`'s switch is engaged (`None` when unknown).
    pub fn is_engaged(&self, module: &str) -> Option<bool> {
        self.read().get(module).map(KillSwitch::is_engaged)
    }

    /// Every switch and its state, by name.
    pub fn states(&self) -> Vec<(String, bool)> {
        self.read()
            .iter()
            .map(|(name, s)| (name.clone(), s.is_engaged()))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, KillSwitch>> {
        // Registration inserts whole entries; a poisoned lock holds a consistent map.
        self.switches.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Switchboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.states()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_shared_by_name() {
        let board = Switchboard::new();
        let a = board.switch("botscore");
        let b = board.switch("botscore");
        assert!(!a.is_engaged());
        assert_eq!(board.set("botscore", true, "test"), Ok(false));
        assert!(a.is_engaged() && b.is_engaged());
        assert_eq!(board.is_engaged("botscore"), Some(true));
        b.disengage("test");
        assert!(!a.is_engaged());
    }

    #[test]
    fn unknown_switch_names_the_known_ones() {
        let board = Switchboard::new();
        board.switch("ratelimit");
        let err = board.set("ratelimt", true, "test").unwrap_err();
        assert_eq!(err.name, "ratelimt");
        assert!(err.to_string().contains("ratelimit"), "{err}");
    }

    #[test]
    fn flipping_from_many_threads_keeps_a_valid_state() {
        let board = Switchboard::new();
        let switch = board.switch("cache");
        std::thread::scope(|s| {
            for t in 0..4 {
                let board = board.clone();
                s.spawn(move || {
                    for i in 0..1000 {
                        board.set("cache", (i + t) % 2 == 0, "test").unwrap();
                    }
                });
            }
        });
        board.set("cache", false, "test").unwrap();
        assert!(!switch.is_engaged());
    }
}
