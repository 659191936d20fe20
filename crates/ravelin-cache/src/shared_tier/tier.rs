//! [`SharedTier`]: lookups, puts and purges against Redis, failing open within the timeout.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError};
use parking_lot::Mutex;
use ravelin_primitives::Violations;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::SharedTierConfig;
use super::breaker::{Admit, Breaker, BreakerState};
use super::entry::{EncodeError, MAX_KEY_BYTES, SharedEntry};

/// At most one log line per kind of trouble in this period.
const LOG_EVERY_MS: u64 = 10_000;

/// One line per [`LOG_EVERY_MS`] at most (the permit says how many were held back).
fn log_limiter() -> ravelin_primitives::LogLimiter {
    ravelin_primitives::LogLimiter::new(1, Duration::from_millis(LOG_EVERY_MS))
}
/// Purges are admin calls, not on a request's path: they may take this long at least.
const MIN_PURGE_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys deleted per `DEL` by the purge script.
const PURGE_BATCH: usize = 500;

/// Writes the object and adds it to each tag's index, unless a purge's tombstone on the key or
/// on one of its tags is not older than the entry's `response_time` (a fill that began before
/// the purge: nothing is written, -1), or an index is full (nothing is written, 0: a purge by
/// tag must never miss an object). Each index lives as long as the longest-lived object it
/// names. KEYS: object, n tag indexes, the object's tombstone, n tag tombstones; ARGV: value,
/// ttl ms, max keys, response time µs, n.
const PUT_SCRIPT: &str = r"
local ttl = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local at = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
for i = n + 2, 2 * n + 2 do
  local purged = tonumber(redis.call('GET', KEYS[i]) or '')
  if purged and at <= purged then
    return -1
  end
end
for i = 2, n + 1 do
  if redis.call('SCARD', KEYS[i]) >= max and redis.call('SISMEMBER', KEYS[i], KEYS[1]) == 0 then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2, n + 1 do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
";

/// Sets a tombstone to the purge time, unless it holds a later one (then only its TTL is
/// renewed). Shared by the purge scripts: KEYS[2] the tombstone; ARGV[2] now µs, ARGV[3] ttl ms.
macro_rules! tombstone_lua {
    () => {
        r"
local purged = tonumber(redis.call('GET', KEYS[2]) or '')
if purged and purged > tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
else
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
"
    };
}

/// Deletes an object and leaves its tombstone. KEYS: the object, its tombstone; ARGV: unused,
/// now µs, tombstone ttl ms.
const PURGE_KEY_SCRIPT: &str = concat!(
    "local n = redis.call('DEL', KEYS[1])\n",
    tombstone_lua!(),
    "return n\n"
);

/// Deletes every object a tag's index names, then the index, and leaves the tag's tombstone.
/// KEYS: the index, the tag's tombstone; ARGV: batch, now µs, tombstone ttl ms.
const PURGE_TAG_SCRIPT: &str = concat!(
    r"
local members = redis.call('SMEMBERS', KEYS[1])
local batch = tonumber(ARGV[1])
local n = 0
for i = 1, #members, batch do
  n = n + redis.call('DEL', unpack(members, i, math.min(i + batch - 1, #members)))
end
redis.call('DEL', KEYS[1])
",
    tombstone_lua!(),
    "return n\n"
);

/// Why a [`SharedTier`] could not be made, or a purge did not reach Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedTierError {
    /// `[cache.shared_tier]` is out of range; the message names each field.
    #[error("invalid shared tier configuration: {0}")]
    Invalid(Violations),
    /// Redis did not answer the purge (retrying makes sense once it is back; local caches are
    /// purged regardless).
    #[error("shared tier purge failed ({reason}): {detail}", reason = reason.as_str())]
    Unavailable {
        /// The kind of fault.
        reason: Unavailable,
        /// The Redis client's message.
        detail: String,
    },
}

/// Why the shared tier did not answer: the request goes on to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Unavailable {
    /// The circuit breaker is open: Redis was not asked.
    BreakerOpen,
    /// Connecting or the call took longer than `timeout`.
    Timeout,
    /// No connection (refused, reset, closed).
    Connection,
    /// Redis answered with an error (it is up: the breaker does not count it).
    Server,
}

impl Unavailable {
    /// For logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BreakerOpen => "breaker-open",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Server => "server",
        }
    }
}

/// The answer of a [`SharedTier::get`]. Never an error: each case lets the request go on.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A stored entry, decoded and checked. The caller still applies RFC 9111 (freshness with
    /// its own configuration, the `Vary` selection with [`SharedEntry::selects`]).
    Hit(Box<SharedEntry>),
    /// Nothing usable under the key: absent, expired, or a value refused as malformed,
    /// oversized or of another version (counted in `errors_total{op="decode"}`).
    Miss,
    /// Redis could not be asked or did not answer in time.
    Unavailable(Unavailable),
}

/// Why a put did not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Skip {
    /// The encoded object is larger than `max_object_bytes`, or past a bound of the format.
    TooLarge,
    /// The body is smaller than `min_object_bytes`.
    TooSmall,
    /// The TTL asked for is zero.
    ZeroTtl,
    /// The key is longer than [`MAX_KEY_BYTES`].
    KeyTooLong,
    /// One of the entry's tag indexes holds `max_keys_per_tag` keys already.
    TagIndexFull,
    /// One of the entry's tags is empty.
    EmptyTag,
    /// The key or one of the entry's tags was purged at or after the entry's `response_time`
    /// (its tombstone is still there): a fill that began before the purge.
    Purged,
}

impl Skip {
    /// For logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too-large",
            Self::TooSmall => "too-small",
            Self::ZeroTtl => "zero-ttl",
            Self::KeyTooLong => "key-too-long",
            Self::TagIndexFull => "tag-index-full",
            Self::EmptyTag => "empty-tag",
            Self::Purged => "purged",
        }
    }
}

/// What became of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "reason")]
#[non_exhaustive]
pub enum PutOutcome {
    /// Written (by [`SharedTier::put`]).
    Written,
    /// Handed to a task (by [`SharedTier::spawn_put`]); its outcome is counted, not returned.
    Spawned,
    /// Not written: the entry is not to be shared.
    Skipped(Skip),
    /// Not written: `max_puts_in_flight` puts are in flight already (or no runtime to spawn on).
    Dropped,
    /// Not written: Redis could not be asked or failed.
    Unavailable(Unavailable),
}

/// The shared tier as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharedTierStatus {
    /// The key namespace.
    pub prefix: String,
    /// The circuit breaker.
    pub breaker: BreakerState,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Lookups answered with an entry.
    pub hits: u64,
    /// Lookups that found nothing usable (malformed values included).
    pub misses: u64,
    /// Lookups Redis did not answer (breaker open included).
    pub unavailable: u64,
    /// Objects written.
    pub puts: u64,
    /// Puts dropped at the in-flight bound.
    pub puts_dropped: u64,
    /// Puts not written because the entry is not to be shared.
    pub puts_skipped: u64,
    /// Puts in flight now.
    pub puts_in_flight: usize,
    /// Failed Redis calls and refused values.
    pub errors: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// A second cache tier on Redis shared by the proxies. See the [module docs](crate::shared_tier).
///
/// Cheap to clone (an `Arc` inside); clones share the connection, the breaker, the put bound and
/// the counters. No call waits for Redis longer than the configured timeout, and none can fail a
/// request: lookups answer [`Lookup`], puts [`PutOutcome`].
#[derive(Clone)]
pub struct SharedTier {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: SharedTierConfig,
    client: Client,
    /// The shared multiplexed connection; the lock is held only to clone or replace it.
    connection: Mutex<Option<MultiplexedConnection>>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    puts_in_flight: Arc<Semaphore>,
    breaker: Breaker,
    hits: AtomicU64,
    misses: AtomicU64,
    unavailable: AtomicU64,
    puts: AtomicU64,
    puts_dropped: AtomicU64,
    puts_skipped: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    m: Metrics,
    error_log: ravelin_primitives::LogLimiter,
    decode_log: ravelin_primitives::LogLimiter,
    drop_log: ravelin_primitives::LogLimiter,
}

struct Metrics {
    label: String,
    hits: metrics::Counter,
    misses: metrics::Counter,
    puts: metrics::Counter,
    puts_dropped: metrics::Counter,
    breaker_open: metrics::Gauge,
}

impl Metrics {
    fn new(cache: &str) -> Self {
        let label = cache.to_string();
        let c = |n: &'static str| metrics::counter!(n, "cache" => label.clone());
        Self {
            hits: c("ravelin_cache_shared_tier_hits_total"),
            misses: c("ravelin_cache_shared_tier_misses_total"),
            puts: c("ravelin_cache_shared_tier_puts_total"),
            puts_dropped: c("ravelin_cache_shared_tier_puts_dropped_total"),
            breaker_open: metrics::gauge!("ravelin_cache_shared_tier_breaker_open", "cache" => label.clone()),
            label,
        }
    }

    fn unavailable(&self, reason: Unavailable) {
        metrics::counter!("ravelin_cache_shared_tier_unavailable_total", "cache" => self.label.clone(), "reason" => reason.as_str())
            .increment(1);
    }

    fn error(&self, op: &'static str, reason: &'static str) {
        metrics::counter!("ravelin_cache_shared_tier_errors_total", "cache" => self.label.clone(), "op" => op, "reason" => reason)
            .increment(1);
    }

    fn skipped(&self, reason: Skip) {
        metrics::counter!("ravelin_cache_shared_tier_puts_skipped_total", "cache" => self.label.clone(), "reason" => reason.as_str())
            .increment(1);
    }
}

/// A Redis call's failure, classified.
struct Fault {
    reason: Unavailable,
    detail: String,
}

impl Fault {
    fn from_redis(e: &RedisError) -> Self {
        // Redis's own error replies (`ERR`, `WRONGTYPE`, `OOM`, … : `Extension` is any code
        // the client does not name) and replies of an unexpected type mean Redis answered.
        let answered = matches!(
            e.kind(),
            ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType
        );
        let reason = if e.is_timeout() {
            Unavailable::Timeout
        } else if answered && !e.is_io_error() && !e.is_connection_dropped() {
            Unavailable::Server
        } else {
            Unavailable::Connection
        };
        Self {
            reason,
            detail: e.to_string(),
        }
    }
}

/// A put checked and encoded, ready to write.
struct Prepared {
    object: Vec<u8>,
    tags: Vec<Vec<u8>>,
    /// The object's tombstone, then each tag's, in the order of `tags`.
    tombstones: Vec<Vec<u8>>,
    value: Vec<u8>,
    ttl_ms: u64,
    /// The entry's `response_time`, µs since the epoch.
    response_us: u64,
}

/// Microseconds since the Unix epoch (0 before it): a purge and a fill on one proxy within the
/// same millisecond are still ordered. Exact as a Lua number (below 2^53) until the year 2255.
fn epoch_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// === impl SharedTier ===

impl SharedTier {
    /// A tier for the cache named `cache` (the `cache` label of its metrics). Nothing connects
    /// until the first call; connecting is part of that call's timeout.
    ///
    /// # Errors
    /// What `config`'s [`Validate`](crate::Validate) refuses.
    pub fn new(cache: &str, config: &SharedTierConfig) -> Result<Self, SharedTierError> {
        config
            .violations()
            .into_result()
            .map_err(SharedTierError::Invalid)?;
        let client = Client::open(config.redis_url.as_str()).map_err(|e| {
            SharedTierError::Invalid(Violations::one(
                "redis_url",
                format!("not a Redis URL: {e}"),
            ))
        })?;
        let m = Metrics::new(cache);
        m.breaker_open.set(0.0);
        Ok(Self {
            inner: Arc::new(Inner {
                cfg: config.clone(),
                client,
                connection: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                puts_in_flight: Arc::new(Semaphore::new(config.max_puts_in_flight)),
                breaker: Breaker::new(
                    config.breaker_failures,
                    config.breaker_open_for,
                    config.timeout.saturating_mul(2),
                ),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                unavailable: AtomicU64::new(0),
                puts: AtomicU64::new(0),
                puts_dropped: AtomicU64::new(0),
                puts_skipped: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                last_error: Mutex::new(None),
                m,
                error_log: log_limiter(),
                decode_log: log_limiter(),
                drop_log: log_limiter(),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &SharedTierConfig {
        &self.inner.cfg
    }

    /// Looks `key` up (the cache's primary key; see the module docs for variants). At most
    /// `timeout`; reads at most `max_object_bytes` + 1 bytes of the value (`GETRANGE`), so a
    /// huge value planted under the key costs no more than a legitimate one.
    pub async fn get(&self, key: &[u8]) -> Lookup {
        let inner = &*self.inner;
        if key.len() > MAX_KEY_BYTES {
            inner.miss();
            return Lookup::Miss;
        }
        let limit = inner.max_object_bytes();
        let object = inner.object_key(key);
        let result = inner
            .call("get", inner.cfg.timeout, |mut c| async move {
                ::redis::cmd("GETRANGE")
                    .arg(&object)
                    .arg(0)
                    .arg(limit)
                    .query_async::<Vec<u8>>(&mut c)
                    .await
            })
            .await;
        match result {
            Err(reason) => {
                inner.unavailable.fetch_add(1, Ordering::Relaxed);
                inner.m.unavailable(reason);
                Lookup::Unavailable(reason)
            }
            // GETRANGE answers "" for an absent (or expired) key.
            Ok(value) if value.is_empty() => {
                inner.miss();
                Lookup::Miss
            }
            Ok(value) => match SharedEntry::decode(key, &value, limit) {
                Ok(entry) => {
                    inner.hits.fetch_add(1, Ordering::Relaxed);
                    inner.m.hits.increment(1);
                    Lookup::Hit(Box::new(entry))
                }
                Err(e) => {
                    inner.errors.fetch_add(1, Ordering::Relaxed);
                    inner.m.error("decode", e.as_str());
                    *inner.last_error.lock() = Some(format!("decode: {e}"));
                    if let Some(held) = inner.decode_log.check().map(|p| p.suppressed()) {
                        tracing::warn!(
                            reason = e.as_str(),
                            held_back = held,
                            "cache shared tier: a stored value was refused; answered as a miss"
                        );
                    }
                    inner.miss();
                    Lookup::Miss
                }
            },
        }
    }

    /// Writes `entry` under `key` for `ttl` (cut to `max_ttl`), indexed under each of its
    /// tags, and waits for Redis (at most `timeout`). Skips entries that are not to be shared;
    /// drops the put when `max_puts_in_flight` are in flight.
    pub async fn put(&self, key: &[u8], entry: &SharedEntry, ttl: Duration) -> PutOutcome {
        let prepared = match self.inner.prepare(key, entry, ttl) {
            Ok(p) => p,
            Err(skip) => return PutOutcome::Skipped(skip),
        };
        let Ok(permit) = Arc::clone(&self.inner.puts_in_flight).try_acquire_owned() else {
            self.inner.dropped();
            return PutOutcome::Dropped;
        };
        let outcome = self.inner.write(prepared).await;
        drop(permit);
        outcome
    }

    /// [`put`](Self::put) on a task of the current runtime: checks, encodes and takes a slot at
    /// once (so the answer says whether it was skipped or dropped), and returns without waiting
    /// for Redis. What the fill path calls once a response is complete.
    pub fn spawn_put(&self, key: &[u8], entry: &SharedEntry, ttl: Duration) -> PutOutcome {
        let prepared = match self.inner.prepare(key, entry, ttl) {
            Ok(p) => p,
            Err(skip) => return PutOutcome::Skipped(skip),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.dropped();
            return PutOutcome::Dropped;
        };
        let Ok(permit) = Arc::clone(&self.inner.puts_in_flight).try_acquire_owned() else {
            self.inner.dropped();
            return PutOutcome::Dropped;
        };
        let inner = Arc::clone(&self.inner);
        runtime.spawn(async move {
            let _ = inner.write(prepared).await;
            drop(permit);
        });
        PutOutcome::Spawned
    }

    /// Deletes the object under `key`. Bypasses the breaker (a purge should be tried); bounded
    /// by `timeout` or 1 s, whichever is longer. Returns whether an object was deleted.
    ///
    /// # Errors
    /// Redis did not answer.
    pub async fn purge_key(&self, key: &[u8]) -> Result<bool, SharedTierError> {
        self.purge_key_at(key, SystemTime::now()).await
    }

    /// [`purge_key`](Self::purge_key) for a purge issued at `at` (its tombstone holds that
    /// time): for callers that run the purge later, in the background, so that a fill whose
    /// response came after the purge was issued is not refused for the delay.
    ///
    /// # Errors
    /// Redis did not answer.
    pub async fn purge_key_at(&self, key: &[u8], at: SystemTime) -> Result<bool, SharedTierError> {
        let inner = &*self.inner;
        let object = inner.object_key(key);
        let tombstone = inner.key_tombstone(key);
        let (now, ttl) = (epoch_us(at), inner.tombstone_ttl_ms());
        inner
            .purge("purge", |mut c| async move {
                ::redis::cmd("EVAL")
                    .arg(PURGE_KEY_SCRIPT)
                    .arg(2)
                    .arg(&object)
                    .arg(&tombstone)
                    .arg(0)
                    .arg(now)
                    .arg(ttl)
                    .query_async::<u64>(&mut c)
                    .await
            })
            .await
            .map(|n| n > 0)
    }

    /// Deletes every object stored with `tag`, and the tag's index. Bounded as
    /// [`purge_key`](Self::purge_key). Returns how many objects were deleted.
    ///
    /// # Errors
    /// Redis did not answer.
    pub async fn purge_tag(&self, tag: &str) -> Result<u64, SharedTierError> {
        self.purge_tag_at(tag, SystemTime::now()).await
    }

    /// [`purge_tag`](Self::purge_tag) for a purge issued at `at` (see
    /// [`purge_key_at`](Self::purge_key_at)).
    ///
    /// # Errors
    /// Redis did not answer.
    pub async fn purge_tag_at(&self, tag: &str, at: SystemTime) -> Result<u64, SharedTierError> {
        let inner = &*self.inner;
        let index = inner.tag_key(tag);
        let tombstone = inner.tag_tombstone(tag);
        let (now, ttl) = (epoch_us(at), inner.tombstone_ttl_ms());
        inner
            .purge("purge", |mut c| async move {
                ::redis::cmd("EVAL")
                    .arg(PURGE_TAG_SCRIPT)
                    .arg(2)
                    .arg(&index)
                    .arg(&tombstone)
                    .arg(PURGE_BATCH)
                    .arg(now)
                    .arg(ttl)
                    .query_async::<u64>(&mut c)
                    .await
            })
            .await
    }

    /// The tier for `/status`.
    pub fn status(&self) -> SharedTierStatus {
        let s = &*self.inner;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SharedTierStatus {
            prefix: s.cfg.prefix.clone(),
            breaker: s.breaker.state(),
            breaker_opened: s.breaker.opened(),
            hits: load(&s.hits),
            misses: load(&s.misses),
            unavailable: load(&s.unavailable),
            puts: load(&s.puts),
            puts_dropped: load(&s.puts_dropped),
            puts_skipped: load(&s.puts_skipped),
            puts_in_flight: s
                .cfg
                .max_puts_in_flight
                .saturating_sub(s.puts_in_flight.available_permits()),
            errors: load(&s.errors),
            last_error: s.last_error.lock().clone(),
        }
    }
}

impl fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTier")
            .field("prefix", &self.inner.cfg.prefix)
            .field("breaker", &self.inner.breaker.state())
            .finish()
    }
}

// === impl Inner ===

impl Inner {
    fn max_object_bytes(&self) -> usize {
        usize::try_from(self.cfg.max_object_bytes).unwrap_or(usize::MAX)
    }

    fn object_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.cfg.prefix.len() + 2 + key.len());
        k.extend_from_slice(self.cfg.prefix.as_bytes());
        k.extend_from_slice(b"o:");
        k.extend_from_slice(key);
        k
    }

    fn tag_key(&self, tag: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.cfg.prefix.len() + 2 + tag.len());
        k.extend_from_slice(self.cfg.prefix.as_bytes());
        k.extend_from_slice(b"t:");
        k.extend_from_slice(tag.as_bytes());
        k
    }

    fn key_tombstone(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.cfg.prefix.len() + 2 + key.len());
        k.extend_from_slice(self.cfg.prefix.as_bytes());
        k.extend_from_slice(b"x:");
        k.extend_from_slice(key);
        k
    }

    fn tag_tombstone(&self, tag: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.cfg.prefix.len() + 3 + tag.len());
        k.extend_from_slice(self.cfg.prefix.as_bytes());
        k.extend_from_slice(b"xt:");
        k.extend_from_slice(tag.as_bytes());
        k
    }

    /// `tombstone_ttl`, at least twice `timeout` (a put may reach Redis up to `timeout` after
    /// it was sent), in ms.
    fn tombstone_ttl_ms(&self) -> u64 {
        let ttl = self
            .cfg
            .tombstone_ttl
            .max(self.cfg.timeout.saturating_mul(2));
        u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.m.misses.increment(1);
    }

    fn dropped(&self) {
        self.puts_dropped.fetch_add(1, Ordering::Relaxed);
        self.m.puts_dropped.increment(1);
        if let Some(held) = self.drop_log.check().map(|p| p.suppressed()) {
            tracing::warn!(
                limit = self.cfg.max_puts_in_flight,
                held_back = held,
                "cache shared tier: too many puts in flight, a put was dropped"
            );
        }
    }

    fn skipped(&self, skip: Skip) -> Skip {
        self.puts_skipped.fetch_add(1, Ordering::Relaxed);
        self.m.skipped(skip);
        skip
    }

    fn prepare(&self, key: &[u8], entry: &SharedEntry, ttl: Duration) -> Result<Prepared, Skip> {
        let ttl = ttl.min(self.cfg.max_ttl);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(self.skipped(Skip::ZeroTtl));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(self.skipped(Skip::KeyTooLong));
        }
        if u64::try_from(entry.body.len()).unwrap_or(u64::MAX) < self.cfg.min_object_bytes {
            return Err(self.skipped(Skip::TooSmall));
        }
        // Checked before encoding, so an oversized body costs no copy.
        if entry.encoded_len(key) > self.max_object_bytes() {
            return Err(self.skipped(Skip::TooLarge));
        }
        let value = entry.encode(key, self.max_object_bytes()).map_err(|e| {
            self.skipped(match e {
                EncodeError::EmptyTag => Skip::EmptyTag,
                _ => Skip::TooLarge,
            })
        })?;
        Ok(Prepared {
            object: self.object_key(key),
            tags: entry.tags.iter().map(|t| self.tag_key(t)).collect(),
            tombstones: std::iter::once(self.key_tombstone(key))
                .chain(entry.tags.iter().map(|t| self.tag_tombstone(t)))
                .collect(),
            value,
            ttl_ms,
            response_us: epoch_us(entry.response_time),
        })
    }

    async fn write(&self, p: Prepared) -> PutOutcome {
        let Prepared {
            object,
            tags,
            tombstones,
            value,
            ttl_ms,
            response_us,
        } = p;
        let max_keys = self.cfg.max_keys_per_tag;
        let result = self
            .call("put", self.cfg.timeout, |mut c| async move {
                // EVAL, not EVALSHA: the script is small beside the value it writes, and a
                // restarted Redis needs no reload.
                let mut eval = ::redis::cmd("EVAL");
                eval.arg(PUT_SCRIPT)
                    .arg(
                        tags.len()
                            .saturating_add(tombstones.len())
                            .saturating_add(1),
                    )
                    .arg(&object);
                for key in tags.iter().chain(&tombstones) {
                    eval.arg(key);
                }
                eval.arg(&value)
                    .arg(ttl_ms)
                    .arg(max_keys)
                    .arg(response_us)
                    .arg(tags.len())
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        match result {
            Ok(1) => {
                self.puts.fetch_add(1, Ordering::Relaxed);
                self.m.puts.increment(1);
                PutOutcome::Written
            }
            Ok(-1) => PutOutcome::Skipped(self.skipped(Skip::Purged)),
            Ok(_) => PutOutcome::Skipped(self.skipped(Skip::TagIndexFull)),
            Err(reason) => PutOutcome::Unavailable(reason),
        }
    }

    /// A call on the request path: through the breaker, connecting included, within `timeout`.
    async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, Unavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let probe = match self.breaker.admit() {
            Admit::Go => false,
            Admit::Probe => true,
            Admit::Refuse => return Err(Unavailable::BreakerOpen),
        };
        match self.run(timeout, f).await {
            Ok(v) => {
                self.succeeded();
                Ok(v)
            }
            Err(fault) => {
                let reason = fault.reason;
                self.failed(op, fault, probe);
                Err(reason)
            }
        }
    }

    /// An admin call: not refused by the breaker, bounded by `timeout` or 1 s.
    async fn purge<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, SharedTierError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        match self.run(self.cfg.timeout.max(MIN_PURGE_TIMEOUT), f).await {
            Ok(v) => {
                self.succeeded();
                Ok(v)
            }
            Err(fault) => {
                let err = SharedTierError::Unavailable {
                    reason: fault.reason,
                    detail: fault.detail.clone(),
                };
                self.failed(op, fault, false);
                Err(err)
            }
        }
    }

    async fn run<T, F, Fut>(&self, timeout: Duration, f: F) -> Result<T, Fault>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            let connection = self.connection().await?;
            f(connection).await.map_err(|e| {
                let fault = Fault::from_redis(&e);
                if fault.reason != Unavailable::Server {
                    // A dead connection answers every later call with an error: start anew.
                    *self.connection.lock() = None;
                }
                fault
            })
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Fault {
                reason: Unavailable::Timeout,
                detail: format!("no answer within {timeout:?}"),
            }),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, Fault> {
        if let Some(c) = self.connection.lock().clone() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.connection.lock().clone() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.timeout))
            // Every call is bounded by the tier's own timeout, connecting included.
            .set_response_timeout(None);
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| {
                let mut fault = Fault::from_redis(&e);
                if fault.reason == Unavailable::Server {
                    // AUTH or SELECT refused: not usable, like no connection.
                    fault.reason = Unavailable::Connection;
                }
                fault
            })?;
        *self.connection.lock() = Some(connection.clone());
        Ok(connection)
    }

    fn succeeded(&self) {
        if self.breaker.success() {
            self.m.breaker_open.set(0.0);
            tracing::info!("cache shared tier: Redis answers again, circuit breaker closed");
        }
    }

    fn failed(&self, op: &'static str, fault: Fault, probe: bool) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.m.error(op, fault.reason.as_str());
        let opened = fault.reason != Unavailable::Server && self.breaker.failure(probe);
        if fault.reason == Unavailable::Server {
            // Redis is up and answered: not a reason to stop asking it.
            self.breaker.success();
        }
        if opened {
            self.m.breaker_open.set(1.0);
            tracing::warn!(
                failures = self.cfg.breaker_failures,
                open_for = ?self.cfg.breaker_open_for,
                error = %fault.detail,
                "cache shared tier: circuit breaker open, lookups go to the origin"
            );
        } else if let Some(held) = self.error_log.check().map(|p| p.suppressed()) {
            tracing::warn!(
                op,
                reason = fault.reason.as_str(),
                error = %fault.detail,
                held_back = held,
                "cache shared tier: Redis call failed; answered as a miss"
            );
        }
        *self.last_error.lock() = Some(format!("{op}: {}", fault.detail));
    }
}
