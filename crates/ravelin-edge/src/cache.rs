//! The cache module: `ravelin-cache`'s RFC 9111 shared cache in front of the forwarder.
//! `[cache]` is the crate's own [`CacheConfig`](ravelin_cache::CacheConfig). It always fails
//! open: an internal cache error bypasses the cache for that request.

use std::sync::Arc;

use hyper::body::Incoming;
use ravelin_cache::{BodyError, CacheLayer};
use ravelin_config::{KillSwitch, Validate, Violations};
use ravelin_proxy::admin::FailureMode;
use ravelin_proxy::{BoxError, ModuleStatus, Purge};
use serde_json::json;

use crate::config::EdgeConfig;
use crate::modules::{Apply, Module, PurgeFn};
use crate::stack::{EdgeBody, EdgeService, Slot, boxed_with};

/// The module name: kill switch and status entry.
pub(crate) const NAME: &str = "cache";

/// The cache module: the layer holds the store, so it is kept across reloads unless `[cache]`
/// itself changed.
#[derive(Clone, Default)]
pub(crate) struct CacheModule {
    state: Option<State>,
}

#[derive(Clone)]
struct State {
    layer: CacheLayer,
    killed: KillSwitch,
}

impl Module for CacheModule {
    fn name(&self) -> &str {
        NAME
    }

    /// The cache crate's own validation: `CacheLayer`'s builder refuses exactly what it does.
    fn check(&self, config: &EdgeConfig, v: &mut Violations) {
        if let Err(violations) = Validate::validate(&config.cache) {
            v.merge_under("cache", violations);
        }
    }

    fn update(&mut self, apply: &Apply<'_>) -> Result<(), String> {
        let section = &apply.config.cache;
        // A main config's canary stack gets a cache of its own (cold, for its share of
        // clients): sharing the running one would let the candidate's answers reach every
        // client, and hide the candidate's routes behind hits.
        if apply.env.live
            && self.state.is_some()
            && apply.previous.map(|p| &p.cache) == Some(section)
        {
            return Ok(());
        }
        let switch = apply.switchboard.switch(NAME);
        let layer = CacheLayer::builder()
            .config(section.clone())
            .kill_switch(switch.clone())
            .build()
            .map_err(|e| format!("cache: {e}"))?;
        self.state = Some(State {
            layer,
            killed: switch,
        });
        Ok(())
    }

    fn stop(&mut self) {
        self.state = None;
    }

    fn slot(&self) -> Option<Slot<Incoming>> {
        let layer = self.state.as_ref()?.layer.clone();
        Some(Box::new(move |inner: EdgeService<Incoming>| {
            // A response passed through keeps the origin's body as it is (no box per
            // request); any other has its cache body boxed, with the cache's body error
            // unwrapped so the stack keeps one error type (`BoxError` is not itself an
            // `Error`, so no blanket conversion exists).
            boxed_with(tower::Layer::layer(&layer, inner), cache_body)
        }))
    }

    /// The purge entry point for `POST /cache/purge`.
    fn purger(&self) -> Option<PurgeFn> {
        let handle = self.state.as_ref()?.layer.handle();
        Some(Arc::new(move |purge| match purge {
            Purge::Url(url) => handle
                .purge_url(&url)
                .map(|n| n as u64)
                .map_err(|e| e.to_string()),
            Purge::Tag(tag) => Ok(handle.purge_tag(&tag) as u64),
        }))
    }

    fn status(&self) -> Option<ModuleStatus> {
        let state = self.state.as_ref()?;
        let handle = state.layer.handle();
        let stats = handle.stats();
        let usage = handle.usage();
        Some(ModuleStatus {
            name: NAME.into(),
            failure_mode: FailureMode::Open,
            timeout_ms: None,
            circuit: None,
            killed: state.killed.is_engaged(),
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
        })
    }

    fn clone_module(&self) -> Box<dyn Module> {
        Box::new(self.clone())
    }
}

/// The cache slot's body as an [`EdgeBody`]: the origin's body itself when the response passed
/// through, else the cache's body boxed with its error unwrapped.
fn cache_body(body: ravelin_cache::CacheBody<EdgeBody>) -> EdgeBody {
    if body.is_pass() {
        // `is_pass` held, so this is `Some`; the fallback (an empty body) is never taken.
        return body.into_pass().unwrap_or_default();
    }
    http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
        body,
        |error| -> BoxError {
            match error {
                BodyError::Origin(inner) => inner,
                other => other.to_string().into(),
            }
        },
    ))
}
