//! A second cache tier on Redis, shared by the proxies (`[cache.shared_tier]`, feature `redis`).
//!
//! With several proxies, each fills its own copy from the origin. With a shared tier, a local
//! miss looks in Redis before the origin, and every fill writes through, so an object fetched
//! by one proxy is a hit on the others.
//!
//! - **Fails open.** [`SharedTier::get`] answers [`Lookup::Hit`], [`Lookup::Miss`] or
//!   [`Lookup::Unavailable`], never an error: a timeout (`timeout`, 50 ms by default, connecting
//!   included), a refused connection or an open circuit breaker is `Unavailable`; a value that
//!   is malformed, truncated, oversized, of another version or written under another key is a
//!   `Miss`. Each is counted. After `breaker_failures` consecutive failures the breaker opens
//!   for `breaker_open_for` (±20 %) and calls are answered without touching Redis; then one call
//!   probes, and its success closes the breaker.
//! - **Bounded.** Objects whose encoding exceeds `max_object_bytes` are never written, and a
//!   lookup reads at most that many bytes (`GETRANGE`). TTLs are cut to `max_ttl`. At most
//!   `max_puts_in_flight` puts run at once; past it a put is dropped and counted.
//! - **Freshness.** A [`SharedEntry`] carries the times (`request_time`, `response_time`,
//!   `corrected_initial_age`) from which the receiving cache recomputes age and freshness as
//!   RFC 9111 §4.2 says, with its own configuration. The proxies' clocks must agree.
//! - **Purges.** An entry's surrogate tags index it (`<prefix>t:<tag>`, a Redis set of object
//!   keys, at most `max_keys_per_tag`, expiring with its longest-lived object);
//!   [`SharedTier::purge_tag`] and [`SharedTier::purge_key`] delete from Redis, and in the same
//!   script leave a tombstone (`<prefix>xt:<tag>`, `<prefix>x:<key>`: the purge time in µs since
//!   the epoch, for `tombstone_ttl`, at least twice `timeout`). A put whose entry's
//!   `response_time` is not later than a tombstone on its key or on one of its tags is refused
//!   in the put's own script ([`Skip::Purged`]): a write-through of a fill that began before the
//!   purge and reaches Redis after its delete does not bring the object back.
//! - **Variants.** One entry per key. An entry stored from a response with `Vary` carries its
//!   selecting fields and values; [`SharedEntry::selects`] says whether a request may use it
//!   (else it is a miss). Callers that want several variants shared key them apart.
//! - **Keys.** `<prefix>o:<key>` for objects, `<prefix>t:<tag>` for tag indexes, `<prefix>x:<key>`
//!   and `<prefix>xt:<tag>` for tombstones. A put writes the object and its tag indexes in
//!   one script over several keys: a single Redis server (or primary), not Redis Cluster.
//!
//! Encoding: see [`SharedEntry::encode`] and the `entry` module's format (magic `RVST`,
//! version 1, length-prefixed fields, the key repeated inside and checked on read).
//!
//! | Metric | Type | Meaning |
//! |---|---|---|
//! | `ravelin_cache_shared_tier_hits_total` | counter | lookups answered with an entry |
//! | `ravelin_cache_shared_tier_misses_total` | counter | lookups with nothing usable (refused values included) |
//! | `ravelin_cache_shared_tier_unavailable_total{reason}` | counter | lookups Redis did not answer (`breaker-open`, `timeout`, `connection`, `server`) |
//! | `ravelin_cache_shared_tier_puts_total` | counter | objects written |
//! | `ravelin_cache_shared_tier_puts_dropped_total` | counter | puts dropped at `max_puts_in_flight` |
//! | `ravelin_cache_shared_tier_puts_skipped_total{reason}` | counter | puts not written (`too-large`, `too-small`, `zero-ttl`, `key-too-long`, `tag-index-full`, `empty-tag`, `purged`) |
//! | `ravelin_cache_shared_tier_errors_total{op,reason}` | counter | failed calls (`get`, `put`, `purge`) and refused values (`decode`) |
//! | `ravelin_cache_shared_tier_breaker_open` | gauge | 1 while the circuit breaker is open |

mod config;
mod entry;

pub use config::{
    DEFAULT_MAX_OBJECT_BYTES, DEFAULT_MAX_TTL, DEFAULT_PREFIX, DEFAULT_TIMEOUT,
    DEFAULT_TOMBSTONE_TTL, SharedTierConfig,
};
pub use entry::{
    DecodeError, EncodeError, MAGIC, MAX_HEADERS, MAX_KEY_BYTES, MAX_TAG_BYTES, MAX_TAGS, MAX_VARY,
    SharedEntry, VERSION,
};

#[cfg(feature = "redis")]
mod breaker;
#[cfg(feature = "redis")]
mod tier;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use breaker::BreakerState;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use tier::{
    Lookup, PutOutcome, SharedTier, SharedTierError, SharedTierStatus, Skip, Unavailable,
};
