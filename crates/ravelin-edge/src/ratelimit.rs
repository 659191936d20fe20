//! The rate-limit slot: `ravelin-ratelimit`'s guard (memory or Redis store) in its failure
//! policy. Rules live in a `ravelin-config` store of their own, so a reload that changes them
//! keeps the state of every rule whose name and quota did not change.

use hyper::body::Incoming;
use ravelin_config::{Format, Store, Switchboard};
use ravelin_failsafe::GuardLayer;
use ravelin_proxy::ModuleStatus;
use ravelin_ratelimit::redis::{FallbackStore, RedisStore};
use ravelin_ratelimit::{MemoryStore, RateLimitGuard, Rules};
use serde_json::json;

use crate::config::{EdgeConfig, GuardConfig, RateLimitSection, StoreSetting};
use crate::modules::{apply_killed, guard_layer, guard_status};
use crate::stack::{BoxGuard, EdgeService, Slot, layered};

/// The module name: the guard's own ([`ravelin_ratelimit::GUARD_NAME`]), which names its kill
/// switch, metric label and skip-header key.
pub(crate) const NAME: &str = ravelin_ratelimit::GUARD_NAME;

/// What decides where the buckets live: a change starts a new (empty) store.
#[derive(Clone, PartialEq)]
struct StoreKey {
    store: StoreSetting,
    capacity: usize,
    redis_timeout: std::time::Duration,
    local_fallback: bool,
}

impl StoreKey {
    fn of(section: &RateLimitSection) -> Self {
        Self {
            store: section.store.clone(),
            capacity: section.capacity,
            redis_timeout: section.redis_timeout,
            local_fallback: section.local_fallback,
        }
    }
}

/// The rate-limit module.
#[derive(Clone)]
pub(crate) struct RateLimitModule {
    rules: Store<Rules>,
    store_key: StoreKey,
    guard: BoxGuard,
    policy: GuardConfig,
    layer: GuardLayer<BoxGuard>,
}

/// Everything building the module would refuse in `section` beyond the rule document's own
/// validation: the Redis URL.
///
/// # Errors
/// What the build refuses.
pub(crate) fn check(section: &RateLimitSection) -> Result<(), String> {
    if let StoreSetting::Redis(url) = &section.store {
        redis::Client::open(url.as_str())
            .map_err(|e| format!("{url:?} is not a usable Redis URL: {e}"))?;
    }
    Ok(())
}

impl RateLimitModule {
    /// Builds, updates or removes the module.
    ///
    /// # Errors
    /// What could not be built.
    pub(crate) async fn update(
        previous: Option<Self>,
        old: Option<&EdgeConfig>,
        config: &EdgeConfig,
        switchboard: &Switchboard,
    ) -> Result<Option<Self>, String> {
        let section = &config.ratelimit;
        let switch = switchboard.switch(NAME);
        apply_killed(
            &switch,
            old.filter(|o| o.ratelimit.enabled)
                .map(|o| o.ratelimit.killed),
            section.killed,
        );
        if !section.enabled {
            return Ok(None);
        }
        let document = serde_json::to_vec(&section.rules_document(&config.ingress))
            .map_err(|e| format!("ratelimit rules: {e}"))?;
        let store_key = StoreKey::of(section);
        let policy = section.guard.clone();

        if let Some(previous) = previous
            && previous.store_key == store_key
        {
            // Same buckets: hand the new rules to the rule store (unchanged rules keep state).
            previous
                .rules
                .submit(&document, "edge-proxy config")
                .map_err(|e| format!("ratelimit rules: {e}"))?;
            let layer = if previous.policy == policy {
                previous.layer
            } else {
                guard_layer(previous.guard.clone(), &policy, switchboard)?
            };
            return Ok(Some(Self {
                policy,
                layer,
                ..previous
            }));
        }

        let rules = Store::<Rules>::builder("ratelimit-rules")
            .format(Format::Json)
            .initial_bytes(document, "edge-proxy config")
            .build()
            .map_err(|e| format!("ratelimit rules: {e}"))?;
        let reloadable = RateLimitGuard::reloadable(rules.clone());
        let guard = match &section.store {
            StoreSetting::Memory => {
                BoxGuard::new(reloadable.with_store(MemoryStore::new(section.capacity)))
            }
            StoreSetting::Redis(url) => {
                let redis = RedisStore::builder(url)
                    .timeout(section.redis_timeout)
                    .build()
                    .map_err(|e| format!("ratelimit.store: {e}"))?;
                if section.local_fallback {
                    let local = MemoryStore::new(section.capacity);
                    BoxGuard::new(reloadable.with_store(FallbackStore::new(redis, local)))
                } else {
                    BoxGuard::new(reloadable.with_store(redis))
                }
            }
        };
        let layer = guard_layer(guard.clone(), &policy, switchboard)?;
        Ok(Some(Self {
            rules,
            store_key,
            guard,
            policy,
            layer,
        }))
    }

    /// The slot.
    pub(crate) fn slot(&self) -> Slot<Incoming> {
        let layer = self.layer.clone();
        Box::new(move |inner: EdgeService<Incoming>| layered(layer, inner))
    }

    /// `/status` entry.
    pub(crate) fn status(&self) -> ModuleStatus {
        let rules = self.rules.load();
        let store = match &self.store_key.store {
            StoreSetting::Memory => "memory".to_owned(),
            StoreSetting::Redis(url) => format!("redis ({})", redact(url)),
        };
        guard_status(
            &self.layer.handle(),
            json!({
                "store": store,
                "capacity": self.store_key.capacity,
                "rules": rules.value().rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
                "rules_generation": rules.meta().generation,
            }),
        )
    }
}

/// A Redis URL without its password, for status pages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!(
                "{}://***{}",
                url.get(..scheme).unwrap_or(""),
                url.get(at..).unwrap_or("")
            )
        }
        _ => url.to_owned(),
    }
}
