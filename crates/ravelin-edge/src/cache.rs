//! The cache slot: `ravelin-cache`'s RFC 9111 shared cache in front of the forwarder. It always
//! fails open: an internal cache error bypasses the cache for that request.

use std::sync::Arc;

use hyper::body::Incoming;
use ravelin_cache::{BodyError, CacheLayer};
use ravelin_config::Switchboard;
use ravelin_proxy::BoxError;
use ravelin_proxy::{ModuleStatus, Purge};
use serde_json::json;

use crate::config::{CacheSection, EdgeConfig};
use crate::modules::apply_killed;
use crate::stack::{EdgeBody, EdgeService, Slot, boxed};

/// The module name: kill switch and status entry.
pub(crate) const NAME: &str = "cache";

/// The cache module: the layer holds the store, so it is kept across reloads unless the cache
/// settings themselves changed.
#[derive(Clone)]
pub(crate) struct CacheModule {
    layer: CacheLayer,
    killed: ravelin_config::KillSwitch,
}

/// The section without the kill switch: what forces a new store when it changes.
fn storage_settings(section: &CacheSection) -> CacheSection {
    CacheSection {
        killed: false,
        ..section.clone()
    }
}

/// The cache crate's own configuration for a `[cache]` section: the one value both
/// [`check`] and the module build from, so validation and build can never disagree.
pub(crate) fn cache_config(section: &CacheSection) -> ravelin_cache::CacheConfig {
    let mut config = ravelin_cache::CacheConfig {
        name: "ravelin".into(),
        max_capacity_bytes: section.max_bytes,
        max_object_bytes: section.max_object_bytes,
        coalesce_timeout: section.coalesce_timeout,
        ..ravelin_cache::CacheConfig::default()
    };
    if let Some(window) = section.default_stale_if_error {
        config.stale_if_error = window;
    }
    if let Some(window) = section.default_stale_while_revalidate {
        config.stale_while_revalidate = window;
    }
    // Unset keys keep the cache crate's defaults: one set of defaults, documented there.
    if let Some(on) = section.heuristic_freshness {
        config.heuristic_freshness = on;
    }
    if let Some(on) = section.heuristic_with_credentials {
        config.heuristic_with_credentials = on;
    }
    if let Some(on) = section.request_directives {
        config.request_directives = on;
    }
    if let Some(on) = section.invalidate_on_unsafe {
        config.invalidate_on_unsafe = on;
    }
    if let Some(mode) = section.set_cookie {
        config.set_cookie = mode;
    }
    config
}

/// Everything building the cache would refuse in `section`, without allocating its store.
///
/// # Errors
/// The cache crate's validation message.
pub(crate) fn check(section: &CacheSection) -> Result<(), String> {
    cache_config(section).validate().map_err(|e| e.to_string())
}

impl CacheModule {
    /// Builds, updates or removes the module.
    ///
    /// # Errors
    /// What could not be built.
    pub(crate) fn update(
        previous: Option<Self>,
        old: Option<&EdgeConfig>,
        config: &EdgeConfig,
        switchboard: &Switchboard,
    ) -> Result<Option<Self>, String> {
        let section = &config.cache;
        let switch = switchboard.switch(NAME);
        apply_killed(
            &switch,
            old.filter(|o| o.cache.enabled).map(|o| o.cache.killed),
            section.killed,
        );
        if !section.enabled {
            return Ok(None);
        }
        if let (Some(previous), Some(old)) = (previous, old)
            && storage_settings(&old.cache) == storage_settings(section)
        {
            return Ok(Some(previous));
        }
        let builder = CacheLayer::builder()
            .config(cache_config(section))
            .kill_switch(switch.clone());
        let layer = builder.build().map_err(|e| format!("cache: {e}"))?;
        Ok(Some(Self {
            layer,
            killed: switch,
        }))
    }

    /// The slot.
    pub(crate) fn slot(&self) -> Slot<Incoming> {
        let layer = self.layer.clone();
        Box::new(move |inner: EdgeService<Incoming>| {
            // The cache's body error wraps the origin body's; unwrap it so the stack keeps one
            // error type (`BoxError` is not itself an `Error`, so no blanket conversion exists).
            let cached = tower::ServiceExt::map_response(
                tower::Layer::layer(&layer, inner),
                |response: http::Response<ravelin_cache::CacheBody<EdgeBody>>| {
                    response.map(|body| {
                        http_body_util::BodyExt::map_err(body, |error| -> BoxError {
                            match error {
                                BodyError::Origin(inner) => inner,
                                other => other.to_string().into(),
                            }
                        })
                    })
                },
            );
            boxed(cached)
        })
    }

    /// The purge entry point for `POST /cache/purge`.
    pub(crate) fn purger(&self) -> Arc<dyn Fn(Purge) -> Result<u64, String> + Send + Sync> {
        let handle = self.layer.handle();
        Arc::new(move |purge| match purge {
            Purge::Url(url) => handle
                .purge_url(&url)
                .map(|n| n as u64)
                .map_err(|e| e.to_string()),
            Purge::Tag(tag) => Ok(handle.purge_tag(&tag) as u64),
        })
    }

    /// `/status` entry.
    pub(crate) fn status(&self) -> ModuleStatus {
        let handle = self.layer.handle();
        let stats = handle.stats();
        let usage = handle.usage();
        ModuleStatus {
            name: NAME.into(),
            failure_mode: "open".into(),
            timeout_ms: None,
            circuit: None,
            killed: self.killed.is_engaged(),
            detail: json!({
                "entries": usage.entries,
                "bytes": usage.bytes,
                "capacity_bytes": usage.capacity,
                "hits": stats.hits,
                "misses": stats.misses,
                "stale_if_error": stats.stale_if_error,
                "stale_while_revalidate": stats.stale_while_revalidate,
                "coalesced": stats.coalesced,
                "evictions": stats.evictions,
            }),
        }
    }
}
