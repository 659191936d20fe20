//! The cache slot (pass-through until ravelin-cache's layer lands).

use std::sync::Arc;

use hyper::body::Incoming;
use ravelin_config::Switchboard;
use ravelin_proxy::{ModuleStatus, Purge};
use serde_json::Value;

use super::config::EdgeConfig;
use super::modules::apply_killed;
use super::stack::{EdgeService, Slot};

/// The module name.
pub(crate) const NAME: &str = "cache";

/// The cache module.
#[derive(Clone)]
pub(crate) struct CacheModule {
    killed: ravelin_config::KillSwitch,
}

impl CacheModule {
    /// Builds, updates or removes the module.
    ///
    /// # Errors
    /// What could not be built.
    pub(crate) fn update(
        _previous: Option<Self>,
        old: Option<&EdgeConfig>,
        config: &EdgeConfig,
        switchboard: &Switchboard,
    ) -> Result<Option<Self>, String> {
        let switch = switchboard.switch(NAME);
        apply_killed(
            &switch,
            old.filter(|o| o.cache.enabled).map(|o| o.cache.killed),
            config.cache.killed,
        );
        if !config.cache.enabled {
            return Ok(None);
        }
        Ok(Some(Self { killed: switch }))
    }

    /// The slot.
    pub(crate) fn slot(&self) -> Slot<Incoming> {
        Box::new(|inner: EdgeService<Incoming>| inner)
    }

    /// The purge entry point.
    pub(crate) fn purger(&self) -> Arc<dyn Fn(Purge) -> Result<u64, String> + Send + Sync> {
        Arc::new(|_| Ok(0))
    }

    /// `/status` entry.
    pub(crate) fn status(&self) -> ModuleStatus {
        ModuleStatus {
            name: NAME.into(),
            failure_mode: "open".into(),
            timeout_ms: None,
            circuit: None,
            killed: self.killed.is_engaged(),
            detail: Value::Null,
        }
    }
}
