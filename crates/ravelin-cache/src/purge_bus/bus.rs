//! [`PurgeBus`]: purges applied here and published to a Redis Stream; every other proxy's read
//! back and applied.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Value};
use parking_lot::Mutex;
use ravelin_primitives::Violations;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::entry::{
    BusEntry, MAX_TARGET_BYTES, PurgeKind, RawEntry, Skip, StreamId, StreamInfo, parse_entries,
    parse_xinfo, parse_xread,
};
use super::{PurgeBusConfig, ResettableStore};
use crate::CacheHandle;
use crate::error::PurgeError;

/// The first delay before reconnecting; it doubles up to [`BACKOFF_MAX`], jittered.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest delay between two connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A proxy starting up reads entries published up to this long before it started (another
/// host's clock may be a little ahead; applying a purge twice is harmless).
const START_MARGIN_MS: u64 = 5_000;
/// At most one log line per kind of trouble in this period.
const LOG_EVERY_MS: u64 = 10_000;

/// One line per [`LOG_EVERY_MS`] at most (the permit says how many were held back).
fn log_limiter() -> ravelin_primitives::LogLimiter {
    ravelin_primitives::LogLimiter::new(1, Duration::from_millis(LOG_EVERY_MS))
}

/// Why a [`PurgeBus`] could not be made or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeBusError {
    /// `[cache.purge_bus]` is out of range; the message names each field.
    #[error("invalid purge bus configuration: {0}")]
    Invalid(Violations),
    /// The bus must be started inside a Tokio runtime: its tasks run there.
    #[error("PurgeBus::start must be called inside a Tokio runtime (its tasks run there)")]
    NoRuntime,
}

/// What became of a purge beyond this proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Publication {
    /// Queued while Redis answers: published within a round trip.
    Queued,
    /// Not published yet: Redis cannot be reached. It waits in the outbox and is published on
    /// reconnection (unless the outbox overflows first: see [`PurgeBusStatus::outbox_dropped`]).
    Pending,
    /// Not published: the target is longer than 8 KiB, which other proxies would refuse.
    Refused,
}

impl Publication {
    /// For logs and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Pending => "pending",
            Self::Refused => "refused",
        }
    }
}

/// The answer to a purge through the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PurgeOutcome {
    /// Objects removed from this proxy's cache.
    pub removed: usize,
    /// Whether it is on its way to the other proxies.
    pub publication: Publication,
}

/// The bus as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeBusStatus {
    /// The stream's key.
    pub stream: String,
    /// This proxy's id in the entries it publishes.
    pub instance: String,
    /// Whether the reader is connected (its last call to Redis succeeded).
    pub connected: bool,
    /// Whether the last attempt to publish failed (purges wait in the outbox).
    pub publish_failing: bool,
    /// The ID of the last entry read (applied, skipped or this proxy's own).
    pub last_id: Option<String>,
    /// Now minus the publication time of the last entry applied, while entries are being read;
    /// 0 once the reader has caught up.
    pub lag_seconds: f64,
    /// Purges made here and not yet published.
    pub outbox: usize,
    /// Purges dropped from a full outbox: never published.
    pub outbox_dropped: u64,
    /// Purges published.
    pub published: u64,
    /// Entries from other proxies applied here.
    pub applied: u64,
    /// Entries skipped as malformed, oversized or of an unknown kind or version.
    pub skipped: u64,
    /// Redis calls that failed or timed out.
    pub errors: u64,
    /// Times the whole local cache was purged because entries were lost.
    pub full_purges: u64,
    /// The last Redis error, if any.
    pub last_error: Option<String>,
    /// Why the last full purge happened, if one did.
    pub last_full_purge: Option<String>,
}

/// Fleet-wide purge: each purge is applied to this proxy's cache, then published once to a
/// Redis Stream; a background reader applies every entry other proxies published. See the
/// [module docs](crate::purge_bus).
///
/// Cheap to clone; the tasks stop with [`shutdown`](Self::shutdown) or when the last clone is
/// dropped. No method waits for Redis: purges go through a bounded outbox.
#[derive(Clone)]
pub struct PurgeBus {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

struct Tasks {
    stop: watch::Sender<bool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for handle in self.handles.get_mut().drain(..) {
            handle.abort();
        }
    }
}

struct Shared {
    cfg: PurgeBusConfig,
    instance: String,
    client: Client,
    cache: CacheHandle,
    store: ResettableStore,
    outbox: Mutex<Outbox>,
    wake: Notify,
    reader: Mutex<Reader>,
    started: AtomicBool,
    /// When the reader last found nothing new (ms since the epoch; 0: never): every purge
    /// published before it had been applied.
    caught_up_ms: AtomicU64,
    connected: AtomicBool,
    publish_failing: AtomicBool,
    published: AtomicU64,
    applied: AtomicU64,
    skipped: AtomicU64,
    errors: AtomicU64,
    full_purges: AtomicU64,
    outbox_dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
    m: Metrics,
    error_log: ravelin_primitives::LogLimiter,
    skip_log: ravelin_primitives::LogLimiter,
}

#[derive(Default)]
struct Outbox {
    queue: VecDeque<(u64, BusEntry)>,
    next: u64,
}

/// Where the reader is in the stream.
#[derive(Debug, Clone, PartialEq)]
struct Reader {
    last_id: StreamId,
    /// Whether `last_id` is an entry read from the stream, which must still be there: trimming
    /// removes the oldest entries first, so while it is, nothing after it was lost.
    anchored: bool,
    /// Whether the start position was checked against the stream (once, on the first read).
    start_checked: bool,
    lag_seconds: f64,
    last_full_purge: Option<String>,
}

struct Metrics {
    published: metrics::Counter,
    applied: metrics::Counter,
    full_purges: metrics::Counter,
    outbox_dropped: metrics::Counter,
    lag: metrics::Gauge,
    connected: metrics::Gauge,
    outbox: metrics::Gauge,
    label: String,
}

impl Metrics {
    fn new(cache: &str) -> Self {
        let label = cache.to_string();
        let c = |n: &'static str| metrics::counter!(n, "cache" => label.clone());
        let g = |n: &'static str| metrics::gauge!(n, "cache" => label.clone());
        Self {
            published: c("ravelin_cache_purge_bus_published_total"),
            applied: c("ravelin_cache_purge_bus_applied_total"),
            full_purges: c("ravelin_cache_purge_bus_full_purges_total"),
            outbox_dropped: c("ravelin_cache_purge_bus_outbox_dropped_total"),
            lag: g("ravelin_cache_purge_bus_lag_seconds"),
            connected: g("ravelin_cache_purge_bus_connected"),
            outbox: g("ravelin_cache_purge_bus_outbox"),
            label,
        }
    }

    fn error(&self, op: &'static str) {
        metrics::counter!("ravelin_cache_purge_bus_errors_total", "cache" => self.label.clone(), "op" => op)
            .increment(1);
    }

    fn skipped(&self, reason: &'static str) {
        metrics::counter!("ravelin_cache_purge_bus_skipped_total", "cache" => self.label.clone(), "reason" => reason)
            .increment(1);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A random instance id: `<host>-<pid>-<random>` where the host name is known.
fn random_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 64
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .unwrap_or_else(|| "edge".to_string());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

// === impl PurgeBus ===

impl PurgeBus {
    /// A bus for `cache`, whose store is `store` (emptied when entries were lost). Nothing
    /// connects until [`start`](Self::start).
    ///
    /// # Errors
    /// What `config`'s [`Validate`](crate::Validate) refuses.
    pub fn new(
        config: &PurgeBusConfig,
        cache: CacheHandle,
        store: ResettableStore,
    ) -> Result<Self, PurgeBusError> {
        config
            .violations()
            .into_result()
            .map_err(PurgeBusError::Invalid)?;
        let client = Client::open(config.redis_url.as_str()).map_err(|e| {
            PurgeBusError::Invalid(Violations::one(
                "redis_url",
                format!("not a Redis URL: {e}"),
            ))
        })?;
        let instance = config.instance.clone().unwrap_or_else(random_instance);
        let start = StreamId {
            ms: now_ms().saturating_sub(START_MARGIN_MS),
            seq: 0,
        };
        let m = Metrics::new(cache.name());
        m.connected.set(0.0);
        let (stop, _) = watch::channel(false);
        Ok(Self {
            shared: Arc::new(Shared {
                cfg: config.clone(),
                instance,
                client,
                cache,
                store,
                outbox: Mutex::new(Outbox::default()),
                wake: Notify::new(),
                reader: Mutex::new(Reader {
                    last_id: start,
                    anchored: false,
                    start_checked: false,
                    lag_seconds: 0.0,
                    last_full_purge: None,
                }),
                started: AtomicBool::new(false),
                caught_up_ms: AtomicU64::new(0),
                connected: AtomicBool::new(false),
                publish_failing: AtomicBool::new(false),
                published: AtomicU64::new(0),
                applied: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                full_purges: AtomicU64::new(0),
                outbox_dropped: AtomicU64::new(0),
                last_error: Mutex::new(None),
                m,
                error_log: log_limiter(),
                skip_log: log_limiter(),
            }),
            tasks: Arc::new(Tasks {
                stop,
                handles: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Replays the purges published since `since` (less a few seconds of margin) once
    /// started, instead of those of the last few seconds: for a cache that starts warm from a
    /// snapshot written at `since`, so purges published while this proxy was down reach the
    /// entries it reloaded. If the stream no longer holds entries that old (trimmed past them),
    /// the whole local cache is purged once, as after any loss. Has no effect once started.
    pub fn replay_since(&self, since: SystemTime) {
        if self.shared.started.load(Ordering::SeqCst) {
            return;
        }
        let ms = since
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
            .saturating_sub(START_MARGIN_MS);
        let from = StreamId { ms, seq: 0 };
        let mut reader = self.shared.reader.lock();
        if !reader.anchored && from < reader.last_id {
            reader.last_id = from;
            reader.start_checked = false;
        }
    }

    /// The time up to which this proxy has applied every purge published on the bus: when its
    /// reader last found nothing new, or — if it never did — where it started reading. A
    /// snapshot of the cache saved now is only as current as this: the next start replays
    /// from it ([`replay_since`](Self::replay_since)), so purges this proxy missed while cut off
    /// from Redis reach the entries it reloads.
    pub fn caught_up_to(&self) -> SystemTime {
        let ms = match self.shared.caught_up_ms.load(Ordering::Relaxed) {
            0 => {
                let reader = self.shared.reader.lock();
                if reader.anchored {
                    // The last entry applied.
                    reader.last_id.ms
                } else {
                    // Nothing read yet: covered up to where reading began (a start, or the
                    // snapshot time it replays from), which the margin was taken off.
                    reader.last_id.ms.saturating_add(START_MARGIN_MS)
                }
            }
            ms => ms,
        };
        UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .unwrap_or(UNIX_EPOCH)
    }

    /// Starts the reader and the publisher on the current Tokio runtime. Calling it again does
    /// nothing.
    ///
    /// # Errors
    /// Called outside a Tokio runtime.
    pub fn start(&self) -> Result<(), PurgeBusError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| PurgeBusError::NoRuntime)?;
        if self.shared.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let reader = runtime.spawn(read_loop(
            Arc::clone(&self.shared),
            self.tasks.stop.subscribe(),
        ));
        let publisher = runtime.spawn(publish_loop(
            Arc::clone(&self.shared),
            self.tasks.stop.subscribe(),
        ));
        self.tasks.handles.lock().extend([reader, publisher]);
        tracing::info!(
            stream = %self.shared.cfg.stream,
            instance = %self.shared.instance,
            "cache purge bus started"
        );
        Ok(())
    }

    /// Stops the tasks (purges made afterwards stay local). Idempotent.
    pub fn shutdown(&self) {
        let _ = self.tasks.stop.send(true);
        for handle in self.tasks.handles.lock().drain(..) {
            handle.abort();
        }
        self.shared.connected.store(false, Ordering::Relaxed);
        self.shared.m.connected.set(0.0);
    }

    /// This proxy's id in the entries it publishes.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// [`CacheHandle::purge_url`] here, then on every proxy.
    ///
    /// # Errors
    /// The URL cannot be purged (nothing is published then).
    pub fn purge_url(&self, url: &str) -> Result<PurgeOutcome, PurgeError> {
        let removed = self.shared.cache.purge_url(url)?;
        Ok(self.publish(PurgeKind::Url, url, removed))
    }

    /// [`CacheHandle::purge_tag`] here, then on every proxy.
    pub fn purge_tag(&self, tag: &str) -> PurgeOutcome {
        let removed = self.shared.cache.purge_tag(tag);
        self.publish(PurgeKind::Tag, tag, removed)
    }

    /// [`CacheHandle::purge_key`] here, then on every proxy.
    pub fn purge_key(&self, key: &str) -> PurgeOutcome {
        let removed = self.shared.cache.purge_key(key);
        self.publish(PurgeKind::Key, key, removed)
    }

    fn publish(&self, kind: PurgeKind, target: &str, removed: usize) -> PurgeOutcome {
        let publication = self.shared.enqueue(kind, target);
        PurgeOutcome {
            removed,
            publication,
        }
    }

    /// The bus for `/status`.
    pub fn status(&self) -> PurgeBusStatus {
        let s = &self.shared;
        let reader = s.reader.lock().clone();
        PurgeBusStatus {
            stream: s.cfg.stream.clone(),
            instance: s.instance.clone(),
            connected: s.connected.load(Ordering::Relaxed),
            publish_failing: s.publish_failing.load(Ordering::Relaxed),
            last_id: reader.anchored.then(|| reader.last_id.to_string()),
            lag_seconds: reader.lag_seconds,
            outbox: s.outbox.lock().queue.len(),
            outbox_dropped: s.outbox_dropped.load(Ordering::Relaxed),
            published: s.published.load(Ordering::Relaxed),
            applied: s.applied.load(Ordering::Relaxed),
            skipped: s.skipped.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            full_purges: s.full_purges.load(Ordering::Relaxed),
            last_error: s.last_error.lock().clone(),
            last_full_purge: reader.last_full_purge,
        }
    }
}

impl fmt::Debug for PurgeBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PurgeBus")
            .field("stream", &self.shared.cfg.stream)
            .field("instance", &self.shared.instance)
            .field("started", &self.shared.started.load(Ordering::Relaxed))
            .finish()
    }
}

// === impl Shared ===

/// How a read session ended.
enum Ended {
    Stopped,
    Failed(&'static str, String),
}

impl Shared {
    fn enqueue(&self, kind: PurgeKind, target: &str) -> Publication {
        if target.len() > MAX_TARGET_BYTES {
            self.m.skipped("oversized");
            return Publication::Refused;
        }
        let entry = BusEntry {
            kind,
            target: target.to_owned(),
            origin: self.instance.clone(),
            at_ms: now_ms(),
        };
        let len = {
            let mut outbox = self.outbox.lock();
            if outbox.queue.len() >= self.cfg.outbox {
                outbox.queue.pop_front();
                self.outbox_dropped.fetch_add(1, Ordering::Relaxed);
                self.m.outbox_dropped.increment(1);
                tracing::warn!(
                    limit = self.cfg.outbox,
                    "cache purge bus: outbox full, the oldest unpublished purge is dropped"
                );
            }
            let seq = outbox.next;
            outbox.next = outbox.next.wrapping_add(1);
            outbox.queue.push_back((seq, entry));
            outbox.queue.len()
        };
        self.m.outbox.set(len as f64);
        self.wake.notify_one();
        if self.connected.load(Ordering::Relaxed) && !self.publish_failing.load(Ordering::Relaxed) {
            Publication::Queued
        } else {
            Publication::Pending
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.timeout))
            // Each call is bounded by its own timeout below (a blocking read waits longer).
            .set_response_timeout(None);
        match tokio::time::timeout(
            self.cfg.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("connecting timed out after {:?}", self.cfg.timeout)),
        }
    }

    /// A failed call: counted, remembered for `/status`, logged at most every 10 s.
    fn failed(&self, op: &'static str, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.m.error(op);
        *self.last_error.lock() = Some(format!("{op}: {error}"));
        if let Some(held) = self.error_log.check().map(|p| p.suppressed()) {
            tracing::warn!(op, error, held_back = held, stream = %self.cfg.stream,
                "cache purge bus: Redis call failed (purges stay local until it answers)");
        }
    }

    fn set_connected(&self, up: bool) {
        let was = self.connected.swap(up, Ordering::Relaxed);
        self.m.connected.set(if up { 1.0 } else { 0.0 });
        if was != up {
            if up {
                tracing::info!(stream = %self.cfg.stream, "cache purge bus: connected");
            } else {
                tracing::warn!(stream = %self.cfg.stream, "cache purge bus: disconnected");
            }
        }
    }

    /// Reads on from the last entry read, and checks in the same transaction (one consistent
    /// view of the stream) that no entry after it was lost: if one may have been, purges
    /// everything once. Returns the entries after the last one read.
    async fn snapshot(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> Result<Vec<RawEntry>, Ended> {
        let last = self.reader.lock().last_id;
        let mut pipe = ::redis::pipe();
        pipe.atomic().ignore_errors();
        pipe.cmd("EXISTS").arg(&self.cfg.stream);
        pipe.cmd("XINFO").arg("STREAM").arg(&self.cfg.stream);
        // From the last entry read, inclusive: whether it is still there is the check.
        pipe.cmd("XRANGE")
            .arg(&self.cfg.stream)
            .arg(last.to_string())
            .arg("+")
            .arg("COUNT")
            .arg(self.cfg.batch.saturating_add(1));
        let call = pipe.query_async::<Vec<Value>>(connection);
        let replies = match tokio::time::timeout(self.cfg.timeout, call).await {
            Err(_) => return Err(Ended::Failed("read", "timed out".into())),
            Ok(Err(e)) => return Err(Ended::Failed("read", e.to_string())),
            Ok(Ok(replies)) => replies,
        };
        let [exists, xinfo, xrange] = replies.as_slice() else {
            return Err(Ended::Failed(
                "read",
                "transaction reply has the wrong length".into(),
            ));
        };
        let (info, mut entries) = match exists {
            Value::Int(0) => (None, Vec::new()),
            _ => (
                Some(parse_xinfo(xinfo).map_err(|e| Ended::Failed("read", e.to_string()))?),
                parse_entries(xrange).map_err(|e| Ended::Failed("read", e.to_string()))?,
            ),
        };
        let decision = {
            let mut reader = self.reader.lock();
            let decision = assess(&reader, info.as_ref(), entries.first().map(|e| e.id));
            reader.start_checked = true;
            if decision.lost.is_some() {
                reader.anchored = false;
            }
            if let Some(to) = decision.move_to {
                reader.last_id = to;
                reader.anchored = false;
            }
            if let Some(reason) = decision.lost {
                reader.last_full_purge = Some(reason.to_string());
            }
            decision
        };
        if let Some(reason) = decision.lost {
            let removed = self.store.clear();
            self.full_purges.fetch_add(1, Ordering::Relaxed);
            self.m.full_purges.increment(1);
            tracing::warn!(
                reason,
                removed,
                stream = %self.cfg.stream,
                "cache purge bus: purges may have been lost, so the whole local cache was purged"
            );
        }
        entries.retain(|e| e.id > last);
        Ok(entries)
    }

    /// Applies one entry read from the stream and moves past it.
    fn apply(&self, raw: RawEntry) {
        let decoded = raw
            .fields
            .as_deref()
            .ok_or(Skip::Malformed)
            .and_then(BusEntry::decode);
        let mut lag = None;
        match decoded {
            Err(skip) => self.skip(raw.id, skip.as_str()),
            Ok(entry) if entry.origin == self.instance => {}
            Ok(entry) => {
                let applied = match entry.kind {
                    PurgeKind::Url => self.cache.purge_url(&entry.target).map(drop),
                    PurgeKind::Tag => {
                        self.cache.purge_tag(&entry.target);
                        Ok(())
                    }
                    PurgeKind::Key => {
                        self.cache.purge_key(&entry.target);
                        Ok(())
                    }
                };
                match applied {
                    Ok(()) => {
                        self.applied.fetch_add(1, Ordering::Relaxed);
                        self.m.applied.increment(1);
                        let behind = now_ms().saturating_sub(entry.at_ms);
                        lag = Some(behind as f64 / 1000.0);
                    }
                    Err(_) => self.skip(raw.id, "invalid-url"),
                }
            }
        }
        let mut reader = self.reader.lock();
        if raw.id > reader.last_id {
            reader.last_id = raw.id;
        }
        reader.anchored = true;
        if let Some(lag) = lag {
            reader.lag_seconds = lag;
            self.m.lag.set(lag);
        }
    }

    fn skip(&self, id: StreamId, reason: &'static str) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.m.skipped(reason);
        if let Some(held) = self.skip_log.check().map(|p| p.suppressed()) {
            tracing::warn!(%id, reason, held_back = held, stream = %self.cfg.stream,
                "cache purge bus: entry skipped");
        }
    }

    /// One connected session of the reader, until an error or the stop: snapshots (check and
    /// read) while there is something to read, then a blocking `XREAD` that only waits for the
    /// next entry — the snapshot after it reads the entries, so a trim in between is noticed.
    async fn read_session(
        &self,
        mut connection: MultiplexedConnection,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Ended {
        loop {
            let asked_ms = now_ms();
            let entries = match self.snapshot(&mut connection).await {
                Ok(entries) => entries,
                Err(ended) => return ended,
            };
            self.set_connected(true);
            backoff.reset();
            if entries.is_empty() {
                self.caught_up_ms.store(asked_ms, Ordering::Relaxed);
            } else {
                for entry in entries {
                    self.apply(entry);
                }
                // Read on (and check again) until a snapshot finds nothing new.
                continue;
            }
            self.reader.lock().lag_seconds = 0.0;
            self.m.lag.set(0.0);
            let last = self.reader.lock().last_id;
            let block_ms = u64::try_from(self.cfg.block.as_millis()).unwrap_or(u64::MAX);
            let mut xread = ::redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&self.cfg.stream)
                .arg(last.to_string());
            let call = xread.query_async::<Value>(&mut connection);
            let bound = self.cfg.block.saturating_add(self.cfg.timeout);
            let reply = tokio::select! {
                _ = stop.changed() => return Ended::Stopped,
                reply = tokio::time::timeout(bound, call) => reply,
            };
            match reply {
                Err(_) => return Ended::Failed("read", format!("timed out after {bound:?}")),
                Ok(Err(e)) => return Ended::Failed("read", e.to_string()),
                // Only a wake-up: the next snapshot reads the entries.
                Ok(Ok(value)) => {
                    if let Err(e) = parse_xread(&value) {
                        return Ended::Failed("read", e.to_string());
                    }
                }
            }
        }
    }
}

/// What [`assess`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Decision {
    /// Why entries may have been lost (then the whole cache is purged).
    lost: Option<&'static str>,
    /// Where the reader continues instead (from the start of a re-created stream).
    move_to: Option<StreamId>,
}

/// Whether entries after the reader's position may have been lost, given the stream's state
/// (`None`: the stream does not exist) and the first entry at or after the position.
fn assess(reader: &Reader, info: Option<&StreamInfo>, first_read: Option<StreamId>) -> Decision {
    let Some(info) = info else {
        return if reader.anchored {
            // It existed: it was deleted, or Redis lost its data (restarted without persistence).
            Decision {
                lost: Some("the stream is gone (deleted, or Redis lost its data)"),
                move_to: Some(StreamId::ZERO),
            }
        } else {
            Decision::default()
        };
    };
    if reader.anchored {
        if first_read == Some(reader.last_id) {
            return Decision::default();
        }
        // The last entry read is gone: trimmed (with whatever followed it, perhaps), or the
        // stream was re-created.
        let recreated = info.last_generated < reader.last_id;
        return Decision {
            lost: Some(if recreated {
                "the stream was re-created (Redis lost its data)"
            } else {
                "the stream no longer holds the last entry read (trimmed past it)"
            }),
            move_to: recreated.then_some(StreamId::ZERO),
        };
    }
    if !reader.start_checked
        && info.entries_added.is_none_or(|added| added > info.length)
        && info.first_entry.is_some_and(|first| first > reader.last_id)
    {
        // Starting: entries from before the start position onwards were trimmed, perhaps some
        // published after it.
        return Decision {
            lost: Some("the stream was trimmed past this proxy's start"),
            move_to: None,
        };
    }
    Decision::default()
}

/// The reader task: connect, read, reconnect with backoff, until stopped.
async fn read_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let ended = match shared.connect().await {
            Ok(connection) => {
                shared
                    .read_session(connection, &mut stop, &mut backoff)
                    .await
            }
            Err(e) => Ended::Failed("connect", e),
        };
        match ended {
            Ended::Stopped => break,
            Ended::Failed(op, e) => {
                shared.set_connected(false);
                shared.failed(op, &e);
            }
        }
        if sleep_or_stop(backoff.next_delay(), &mut stop).await {
            break;
        }
    }
    shared.set_connected(false);
}

/// The most entries sent in one pipeline: a bulk purge drains at hundreds per round trip.
const PUBLISH_BATCH: usize = 500;

/// The publisher task: publishes the outbox in order, oldest first.
async fn publish_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    let mut connection: Option<MultiplexedConnection> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        // Up to `batch` entries from the front, sent in one pipeline: one round trip for a
        // burst, so a bulk purge is not limited to one entry per round trip (and the outbox
        // does not overflow while Redis is up).
        let front: Vec<(u64, BusEntry)> = shared
            .outbox
            .lock()
            .queue
            .iter()
            .take(PUBLISH_BATCH)
            .cloned()
            .collect();
        let Some(&(last_seq, _)) = front.last() else {
            tokio::select! {
                _ = shared.wake.notified() => continue,
                _ = stop.changed() => return,
            }
        };
        let mut live = match connection.take() {
            Some(live) => live,
            None => match shared.connect().await {
                Ok(live) => live,
                Err(e) => {
                    shared.publish_failing.store(true, Ordering::Relaxed);
                    shared.failed("connect", &e);
                    if sleep_or_stop(backoff.next_delay(), &mut stop).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let mut pipe = ::redis::pipe();
        for (_, entry) in &front {
            let xadd = pipe
                .cmd("XADD")
                .arg(&shared.cfg.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(shared.cfg.max_len)
                .arg("*");
            for (name, value) in entry.fields() {
                xadd.arg(name).arg(value);
            }
        }
        let call = pipe.query_async::<Vec<Value>>(&mut live);
        match tokio::time::timeout(shared.cfg.timeout, call).await {
            Ok(Ok(_ids)) => {
                let (len, sent) = {
                    let mut outbox = shared.outbox.lock();
                    // The entries sent that are still queued (an overflow may have dropped
                    // some of them meanwhile: those were counted as dropped already).
                    let mut sent = 0u64;
                    while outbox.queue.front().is_some_and(|(s, _)| *s <= last_seq) {
                        outbox.queue.pop_front();
                        sent = sent.saturating_add(1);
                    }
                    (outbox.queue.len(), sent)
                };
                shared.m.outbox.set(len as f64);
                shared.published.fetch_add(sent, Ordering::Relaxed);
                shared.m.published.increment(sent);
                shared.publish_failing.store(false, Ordering::Relaxed);
                backoff.reset();
                connection = Some(live);
            }
            Ok(Err(e)) => {
                shared.publish_failing.store(true, Ordering::Relaxed);
                shared.failed("publish", &e.to_string());
                if sleep_or_stop(backoff.next_delay(), &mut stop).await {
                    return;
                }
            }
            Err(_) => {
                shared.publish_failing.store(true, Ordering::Relaxed);
                shared.failed("publish", "timed out");
                if sleep_or_stop(backoff.next_delay(), &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps `delay` unless stopped first; `true` when stopped.
async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Capped exponential backoff with jitter (each delay uniform in its upper half).
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(BACKOFF_MAX);
        base.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn reader(last: u64, anchored: bool) -> Reader {
        Reader {
            last_id: id(last),
            anchored,
            start_checked: anchored,
            lag_seconds: 0.0,
            last_full_purge: None,
        }
    }

    fn info(last: u64, length: u64, added: Option<u64>, first: Option<u64>) -> StreamInfo {
        StreamInfo {
            last_generated: id(last),
            length,
            entries_added: added,
            first_entry: first.map(id),
        }
    }

    #[test]
    fn catching_up_purges_everything_only_when_entries_may_be_lost() {
        // The last entry read is still there: nothing after it was lost.
        let i = info(20, 5, Some(9), Some(8));
        assert_eq!(
            assess(&reader(10, true), Some(&i), Some(id(10))),
            Decision::default()
        );
        // It is gone: trimmed past it.
        let d = assess(&reader(10, true), Some(&i), Some(id(12)));
        assert!(d.lost.unwrap().contains("trimmed"));
        assert_eq!(d.move_to, None);
        let d = assess(&reader(10, true), Some(&i), None);
        assert!(d.lost.is_some());
        // Re-created: younger than what was read.
        let d = assess(&reader(30, true), Some(&i), None);
        assert!(d.lost.unwrap().contains("re-created"));
        assert_eq!(d.move_to, Some(StreamId::ZERO));
        // Gone altogether.
        let d = assess(&reader(10, true), None, None);
        assert!(d.lost.is_some());
        assert_eq!(d.move_to, Some(StreamId::ZERO));
        assert_eq!(assess(&reader(10, false), None, None), Decision::default());
        // Starting: trimmed past the start position, or not.
        assert!(
            assess(
                &reader(10, false),
                Some(&info(20, 5, Some(9), Some(12))),
                Some(id(12))
            )
            .lost
            .is_some()
        );
        assert_eq!(
            assess(
                &reader(10, false),
                Some(&info(20, 5, Some(5), Some(12))),
                Some(id(12))
            ),
            Decision::default(),
            "never trimmed"
        );
        assert_eq!(
            assess(
                &reader(10, false),
                Some(&info(20, 5, Some(9), Some(8))),
                Some(id(12))
            ),
            Decision::default(),
            "the start position is still covered"
        );
        let mut checked = reader(10, false);
        checked.start_checked = true;
        assert_eq!(
            assess(
                &checked,
                Some(&info(20, 5, Some(9), Some(12))),
                Some(id(12))
            ),
            Decision::default(),
            "checked once"
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d <= BACKOFF_MAX && *d >= BACKOFF_MIN / 2)
        );
        assert!(delays[19] >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }

    #[test]
    fn the_log_limiter_holds_back_repeats() {
        let limiter = log_limiter();
        assert_eq!(limiter.check().map(|p| p.suppressed()), Some(0));
        assert!(limiter.check().is_none());
        assert_eq!(limiter.suppressed_total(), 1);
    }

    #[tokio::test]
    async fn purges_apply_locally_and_wait_in_a_bounded_outbox_while_redis_is_away() {
        let cfg = crate::CacheConfig::default();
        let store = ResettableStore::for_config(&cfg);
        let layer = crate::CacheLayer::builder()
            .config(cfg)
            .storage(store.clone())
            .build()
            .unwrap();
        let bus_cfg = PurgeBusConfig {
            outbox: 2,
            ..PurgeBusConfig::new("redis://127.0.0.1:1/")
        };
        let bus = PurgeBus::new(&bus_cfg, layer.handle(), store).unwrap();
        // Not started: nothing is connected, so every purge is pending.
        let out = bus.purge_tag("a");
        assert_eq!(out.publication, Publication::Pending);
        assert_eq!(
            bus.purge_url("http://x.test/a").unwrap().publication,
            Publication::Pending
        );
        assert_eq!(bus.purge_key("k").publication, Publication::Pending);
        assert_eq!(
            bus.purge_tag(&"t".repeat(MAX_TARGET_BYTES + 1)).publication,
            Publication::Refused
        );
        let status = bus.status();
        assert_eq!(status.outbox, 2);
        assert_eq!(status.outbox_dropped, 1);
        assert!(!status.connected);
        assert!(bus.purge_url("not a url").is_err());
        assert_eq!(layer.handle().stats().purges, 4);
    }

    #[tokio::test]
    async fn a_warm_start_replays_from_the_snapshot_time_and_never_later() {
        let cfg = crate::CacheConfig::default();
        let store = ResettableStore::for_config(&cfg);
        let layer = crate::CacheLayer::builder()
            .config(cfg)
            .storage(store.clone())
            .build()
            .unwrap();
        let bus = PurgeBus::new(
            &PurgeBusConfig::new("redis://127.0.0.1:1/"),
            layer.handle(),
            store,
        )
        .unwrap();
        let default_start = bus.shared.reader.lock().last_id;
        // A snapshot written an hour ago: the reader starts an hour (and the margin) back.
        let written = SystemTime::now() - Duration::from_secs(3600);
        bus.replay_since(written);
        let start = bus.shared.reader.lock().last_id;
        let written_ms =
            u64::try_from(written.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
        assert_eq!(start.ms, written_ms - START_MARGIN_MS);
        assert!(start < default_start);
        // A later time never moves it forward (purges since the older time stay replayed).
        bus.replay_since(SystemTime::now());
        assert_eq!(bus.shared.reader.lock().last_id, start);
        // Never caught up since: the bus covers no more than that hour-old time, so a snapshot
        // saved now keeps the older mark.
        let covered = bus
            .caught_up_to()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(u64::try_from(covered).unwrap(), written_ms);
    }

    #[tokio::test]
    async fn a_bus_without_redis_keeps_trying_and_says_why() {
        let cfg = crate::CacheConfig::default();
        let store = ResettableStore::for_config(&cfg);
        let layer = crate::CacheLayer::builder()
            .config(cfg)
            .storage(store.clone())
            .build()
            .unwrap();
        let bus_cfg = PurgeBusConfig {
            timeout: Duration::from_millis(50),
            ..PurgeBusConfig::new("redis://127.0.0.1:1/")
        };
        let bus = PurgeBus::new(&bus_cfg, layer.handle(), store).unwrap();
        bus.start().unwrap();
        bus.start().unwrap();
        bus.purge_tag("a");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while bus.status().errors < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no error recorded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = bus.status();
        assert!(status.last_error.is_some());
        assert!(!status.connected);
        assert_eq!(status.outbox, 1);
        bus.shutdown();
        assert!(!bus.status().connected);
    }

    #[test]
    fn starting_needs_a_runtime() {
        let cfg = crate::CacheConfig::default();
        let store = ResettableStore::for_config(&cfg);
        let layer = crate::CacheLayer::builder().build().unwrap();
        let bus = PurgeBus::new(
            &PurgeBusConfig::new("redis://127.0.0.1:1/"),
            layer.handle(),
            store,
        )
        .unwrap();
        assert!(matches!(bus.start(), Err(PurgeBusError::NoRuntime)));
        assert!(matches!(
            PurgeBus::new(
                &PurgeBusConfig::default(),
                layer.handle(),
                ResettableStore::for_config(&cfg)
            ),
            Err(PurgeBusError::Invalid(_))
        ));
    }
}
