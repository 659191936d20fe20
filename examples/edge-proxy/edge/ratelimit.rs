//! The rate-limit slot (pass-through until ravelin-ratelimit's guard lands).

use hyper::body::Incoming;
use ravelin_config::Switchboard;
use ravelin_proxy::ModuleStatus;
use serde_json::Value;

use super::config::EdgeConfig;
use super::modules::apply_killed;
use super::stack::{EdgeService, Slot};

/// The module name.
pub(crate) const NAME: &str = "ratelimit";

/// The rate-limit module.
#[derive(Clone)]
pub(crate) struct RateLimitModule {
    config: EdgeConfig,
    killed: ravelin_config::KillSwitch,
}

impl RateLimitModule {
    /// Builds, updates or removes the module.
    ///
    /// # Errors
    /// What could not be built.
    pub(crate) async fn update(
        _previous: Option<Self>,
        old: Option<&EdgeConfig>,
        config: &EdgeConfig,
        switchboard: &Switchboard,
    ) -> Result<Option<Self>, String> {
        let switch = switchboard.switch(NAME);
        apply_killed(
            &switch,
            old.filter(|o| o.ratelimit.enabled)
                .map(|o| o.ratelimit.killed),
            config.ratelimit.killed,
        );
        if !config.ratelimit.enabled {
            return Ok(None);
        }
        Ok(Some(Self {
            config: config.clone(),
            killed: switch,
        }))
    }

    /// The slot.
    pub(crate) fn slot(&self) -> Slot<Incoming> {
        Box::new(|inner: EdgeService<Incoming>| inner)
    }

    /// `/status` entry.
    pub(crate) fn status(&self) -> ModuleStatus {
        ModuleStatus {
            name: NAME.into(),
            failure_mode: self.config.ratelimit.failure_mode.as_str().into(),
            timeout_ms: None,
            circuit: None,
            killed: self.killed.is_engaged(),
            detail: Value::Null,
        }
    }
}
