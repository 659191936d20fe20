//! The cache module: `ravelin-cache`'s RFC 9111 shared cache in front of the forwarder.
//! `[cache]` is the crate's own [`CacheConfig`](ravelin_cache::CacheConfig). It always fails
//! open: an internal cache error bypasses the cache for that request.
//!
//! With `[cache.purge_bus]`, purges go through a [`PurgeBus`]: applied here, published to a Redis
//! Stream and applied by every other proxy. The bus is started on commit and stopped with the
//! module (on shutdown, when the cache is switched off, or when a reload changes `[cache]` and
//! so starts a new cache).
//!
//! With `[cache.shared_tier]`, the cache looks in a second tier on Redis on a local miss and
//! writes its fills through (all inside `ravelin-cache`). A purge received here deletes from
//! the tier first and is published on the bus only then, so no proxy applying it refills from
//! Redis in between; the bus applies purges with a local-only handle (the proxy that received
//! the purge already deleted it from Redis).

use std::sync::Arc;

use hyper::body::Incoming;
use ravelin_cache::purge_bus::{PurgeBus, ResettableStore};
use ravelin_cache::warm::WarmRestartConfig;
use ravelin_cache::{BodyError, CacheHandle, CacheLayer};
use ravelin_config::{KillSwitch, Validate, Violations};
use ravelin_proxy::admin::FailureMode;
use ravelin_proxy::{BoxError, ModuleStatus, Purge};
use serde_json::json;

use crate::config::EdgeConfig;
use crate::modules::{Apply, Module, PurgeFn, Stop};
use crate::stack::{EdgeBody, EdgeService, Slot, boxed_with};

/// The module name: kill switch and status entry.
pub(crate) const NAME: &str = "cache";

/// The cache module: the layer holds the store, so it is kept across reloads unless `[cache]`
/// itself changed.
#[derive(Clone, Default)]
pub(crate) struct CacheModule {
    state: Option<State>,
    /// Whether a snapshot save is under way, shared by the module's copies: a reload that
    /// switches the cache off saves in the background, and what comes next (switching it back
    /// on and reading the snapshot, another save, shutdown) waits for that save first.
    saves: SaveInProgress,
}

/// A flag and a condition variable: set while a snapshot save runs on its thread.
#[derive(Clone, Default)]
struct SaveInProgress(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl SaveInProgress {
    /// Marks a save as started; the returned guard marks it ended when dropped (also if the
    /// save panics).
    fn begin(&self) -> SaveGuard {
        let (flag, _) = &*self.0;
        *flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        SaveGuard(self.clone())
    }

    /// Waits up to `timeout` for a save under way to end; whether none is running now.
    fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let (flag, ended) = &*self.0;
        let guard = flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = ended
            .wait_timeout_while(guard, timeout, |running| *running)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !*guard
    }
}

struct SaveGuard(SaveInProgress);

impl Drop for SaveGuard {
    fn drop(&mut self) {
        let (flag, ended) = &*(self.0).0;
        *flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        ended.notify_all();
    }
}

#[derive(Clone)]
struct State {
    layer: CacheLayer,
    killed: KillSwitch,
    /// The fleet-wide purge bus, when `[cache.purge_bus]` is present (started on commit; its
    /// tasks stop when the last clone of this state is dropped, or on `stop`).
    bus: Option<PurgeBus>,
    /// `[cache.warm_restart]`, on the live cache only (a canary's cache never writes it).
    warm: Option<WarmRestartConfig>,
    /// What reading the snapshot at start did (for `/status`).
    warm_start: Option<serde_json::Value>,
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
        let mut builder = CacheLayer::builder()
            .config(section.clone())
            .kill_switch(switch.clone());
        // With the bus, the store can be emptied at once (when purges were lost).
        let store = section
            .purge_bus
            .as_ref()
            .map(|_| ResettableStore::for_config(section));
        if let Some(store) = &store {
            builder = builder.storage(store.clone());
        }
        let layer = builder.build().map_err(|e| format!("cache: {e}"))?;
        let bus = match (&section.purge_bus, store) {
            (Some(cfg), Some(store)) => Some(
                // The full handle: a proxy applying a purge from the bus also deletes it from
                // the shared tier (best effort), so a delete that failed on the purging proxy
                // (Redis away at that moment) is done again by every other proxy, and none
                // refills the purged object from Redis afterwards.
                PurgeBus::new(cfg, layer.handle(), store)
                    .map_err(|e| format!("cache.purge_bus: {e}"))?,
            ),
            _ => None,
        };
        let warm = section.warm_restart.clone().filter(|_| apply.env.live);
        // Read at start only: `previous` is `None` when the module was not running.
        let warm_start = match &warm {
            Some(cfg) if apply.previous.is_none() => {
                // Switched back on while the save of its switching off still runs: read the
                // snapshot that save writes, not the one before it (bounded: rare, and only
                // then does this wait).
                if !self.saves.wait_idle(cfg.save_timeout) {
                    tracing::warn!(
                        path = %cfg.path.display(),
                        "cache.warm_restart: the last snapshot save is still running; reading the snapshot before it"
                    );
                }
                let (report, written_at) = load_warm(&layer.handle(), cfg);
                // Purges published while this proxy was down must reach what it reloaded: the
                // bus replays from the snapshot's time (or purges everything once if the
                // stream no longer reaches back that far).
                if let (Some(bus), Some(written_at)) = (&bus, written_at) {
                    let since = read_bus_mark(&cfg.path).map_or(written_at, |m| m.min(written_at));
                    bus.replay_since(since);
                }
                Some(report)
            }
            _ => None,
        };
        self.state = Some(State {
            layer,
            killed: switch,
            bus,
            warm,
            warm_start,
        });
        Ok(())
    }

    /// Starts the purge bus (once; a kept state's bus is already running).
    fn commit(&mut self) {
        if let Some(bus) = self.state.as_ref().and_then(|s| s.bus.as_ref())
            && let Err(e) = bus.start()
        {
            tracing::error!(error = %e, "cache.purge_bus: not started; purges stay local");
        }
    }

    fn stop(&mut self, why: Stop) {
        if let Some(bus) = self.state.as_ref().and_then(|s| s.bus.as_ref()) {
            bus.shutdown();
        }
        if let Some(state) = &self.state
            && let Some(cfg) = &state.warm
        {
            // The snapshot is only as current as the purges this proxy applied: with a bus,
            // its position is kept beside the snapshot, and the next start replays from there
            // (a proxy cut off from Redis for an hour replays that hour).
            if let Some(bus) = &state.bus {
                write_bus_mark(&cfg.path, bus.caught_up_to());
            }
            save_warm(state.layer.handle(), cfg.clone(), why, &self.saves);
        }
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

    /// The purge entry point for `POST /cache/purge`: through the bus when there is one (the
    /// purge is applied here either way; `/status` shows whether it was published yet).
    fn purger(&self) -> Option<PurgeFn> {
        let state = self.state.as_ref()?;
        if let Some(bus) = state.bus.clone()
            && state.layer.handle().shared_tier().is_some()
        {
            // Shared tier and bus: purge here at once (the answer's count), delete from Redis,
            // and only then publish (which applies the purge here again, harmlessly).
            let handle = state.layer.handle();
            let local = handle.local_only();
            return Some(Arc::new(move |purge| {
                let removed = match &purge {
                    Purge::Url(url) => local.purge_url(url).map_err(|e| e.to_string())?,
                    Purge::Tag(tag) => local.purge_tag(tag),
                };
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Err("no runtime to purge the shared tier on".to_string());
                };
                let (handle, bus) = (handle.clone(), bus.clone());
                let fleet = if bus.status().connected {
                    ravelin_cache::purge_bus::Publication::Queued
                } else {
                    ravelin_cache::purge_bus::Publication::Pending
                };
                runtime.spawn(async move {
                    let shared = match &purge {
                        Purge::Url(url) => handle.purge_shared_url(url).await,
                        Purge::Tag(tag) => handle.purge_shared_tag(tag).await,
                    };
                    if let Err(e) = shared {
                        tracing::warn!(
                            error = %e,
                            "cache purge applied here, but the shared tier could not be purged"
                        );
                    }
                    let _ = match purge {
                        Purge::Url(url) => bus.purge_url(&url).map(|o| o.publication),
                        Purge::Tag(tag) => Ok(bus.purge_tag(&tag).publication),
                    };
                });
                Ok(ravelin_proxy::admin::PurgeAnswer {
                    purged: removed as u64,
                    fleet: Some(fleet.as_str()),
                })
            }));
        }
        if let Some(bus) = state.bus.clone() {
            return Some(Arc::new(move |purge| {
                let outcome = match purge {
                    Purge::Url(url) => bus.purge_url(&url).map_err(|e| e.to_string())?,
                    Purge::Tag(tag) => bus.purge_tag(&tag),
                };
                if outcome.publication != ravelin_cache::purge_bus::Publication::Queued {
                    tracing::warn!(
                        publication = outcome.publication.as_str(),
                        "cache purge applied here but not published to the other proxies yet"
                    );
                }
                Ok(ravelin_proxy::admin::PurgeAnswer {
                    purged: outcome.removed as u64,
                    fleet: Some(outcome.publication.as_str()),
                })
            }));
        }
        let handle = state.layer.handle();
        Some(Arc::new(move |purge| match purge {
            Purge::Url(url) => handle
                .purge_url(&url)
                .map(|n| (n as u64).into())
                .map_err(|e| e.to_string()),
            Purge::Tag(tag) => Ok((handle.purge_tag(&tag) as u64).into()),
        }))
    }

    fn status(&self) -> Option<ModuleStatus> {
        let state = self.state.as_ref()?;
        let handle = state.layer.handle();
        let stats = handle.stats();
        let usage = handle.usage();
        let bus = state
            .bus
            .as_ref()
            .and_then(|bus| serde_json::to_value(bus.status()).ok());
        let shared_tier = handle
            .shared_tier()
            .and_then(|tier| serde_json::to_value(tier.status()).ok());
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
                "purge_bus": bus,
                "shared_hits": stats.shared_hits,
                "shared_tier": shared_tier,
                "warm_restart": state.warm_start,
            }),
        })
    }

    fn clone_module(&self) -> Box<dyn Module> {
        Box::new(self.clone())
    }
}

/// `<snapshot>.bus`: when the proxy that wrote the snapshot had applied every purge of the bus
/// up to (milliseconds since the epoch, as text).
fn bus_mark_path(snapshot: &std::path::Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.bus", snapshot.display()))
}

/// Writes the bus mark beside the snapshot (atomically: temporary file, rename); a failure is
/// logged, and the next start replays from the snapshot's own time.
fn write_bus_mark(snapshot: &std::path::Path, caught_up: std::time::SystemTime) {
    let ms = caught_up
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let path = bus_mark_path(snapshot);
    let temporary = std::path::PathBuf::from(format!("{}.tmp", path.display()));
    let written = std::fs::write(&temporary, ms.to_string())
        .and_then(|()| std::fs::rename(&temporary, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cache.warm_restart: the purge bus mark was not written");
    }
}

/// The bus mark beside the snapshot, if one is there and reads as a time (at most 32 bytes).
fn read_bus_mark(snapshot: &std::path::Path) -> Option<std::time::SystemTime> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(bus_mark_path(snapshot))
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    let ms: u64 = text.trim().parse().ok()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms))
}

/// Reads the snapshot into a new cache; never fails (a refused snapshot means a cold start).
/// The report for `/status`, and when the snapshot was written (when one was loaded).
fn load_warm(
    handle: &CacheHandle,
    cfg: &WarmRestartConfig,
) -> (serde_json::Value, Option<std::time::SystemTime>) {
    let path = cfg.path.display().to_string();
    match handle.load_snapshot(&cfg.path, cfg.limits()) {
        Ok(report) => {
            tracing::info!(
                path,
                entries = report.entries,
                skipped = report.skipped,
                bytes = report.bytes,
                "cache.warm_restart: snapshot loaded; the cache starts warm"
            );
            (
                json!({
                    "path": path,
                    "start": "warm",
                    "loaded": report.entries,
                    "skipped": report.skipped,
                }),
                report.written_at,
            )
        }
        Err(e) => {
            if matches!(e, ravelin_cache::warm::SnapshotError::Missing) {
                tracing::info!(
                    path,
                    "cache.warm_restart: no snapshot yet; the cache starts cold"
                );
            } else {
                tracing::warn!(
                    path,
                    reason = e.as_str(),
                    error = %e,
                    "cache.warm_restart: snapshot ignored; the cache starts cold"
                );
            }
            (
                json!({
                    "path": path,
                    "start": "cold",
                    "reason": e.as_str(),
                    "error": e.to_string(),
                }),
                None,
            )
        }
    }
}

/// Writes the snapshot on a thread of its own. At shutdown, waits for it at most
/// `save_timeout` (past it the write goes on in the background and may not finish before the
/// process exits; the previous snapshot is only replaced by a complete one). When a reload
/// switched the cache off, does not wait: the edge goes on serving, and the thread reports its
/// own outcome (the control task that called this would otherwise hold the admin API and every
/// later reload for up to `save_timeout`, five minutes at most).
fn save_warm(handle: CacheHandle, cfg: WarmRestartConfig, why: Stop, saves: &SaveInProgress) {
    let (tx, rx) = std::sync::mpsc::channel();
    let timeout = cfg.save_timeout;
    let path = cfg.path.display().to_string();
    // A save still running (a reload switched the cache off moments ago) is waited for, so
    // that shutdown's save comes after it and the last one written is the newest.
    if !saves.wait_idle(timeout) {
        tracing::warn!(
            path,
            "cache.warm_restart: the last snapshot save is still running; this one is skipped"
        );
        return;
    }
    let running = saves.begin();
    let spawned = std::thread::Builder::new()
        .name("cache-snapshot".into())
        .spawn(move || {
            let _running = running;
            let outcome = handle.save_snapshot(&cfg.path, cfg.limits());
            if why == Stop::SwitchedOff {
                report_save(&cfg.path.display().to_string(), outcome);
            } else {
                let _ = tx.send(outcome);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(path, error = %e, "cache.warm_restart: snapshot not written (no thread)");
        return;
    }
    if why == Stop::SwitchedOff {
        return;
    }
    match rx.recv_timeout(timeout) {
        Ok(outcome) => report_save(&path, outcome),
        Err(_) => tracing::warn!(
            path,
            timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            "cache.warm_restart: snapshot not written within save_timeout; shutting down without it"
        ),
    }
}

fn report_save(path: &str, outcome: std::io::Result<ravelin_cache::warm::SnapshotReport>) {
    match outcome {
        Ok(report) => tracing::info!(
            path,
            entries = report.entries,
            bytes = report.bytes,
            "cache.warm_restart: snapshot written"
        ),
        Err(e) => tracing::warn!(path, error = %e, "cache.warm_restart: snapshot not written"),
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
