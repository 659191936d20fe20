//! Fleet-wide purge over a Redis Stream (`[cache.purge_bus]`).
//!
//! With several proxies, each holds its own cache; a purge must reach all of them. A
//! `PurgeBus` (feature `redis`) applies each purge locally, then publishes it once to a Redis
//! Stream (`XADD <stream> MAXLEN ~ <max_len> * v 1 kind … target … origin … at …`). Every proxy
//! runs one reader (`XREAD BLOCK <block> STREAMS <stream> <last id>`; no consumer group: every
//! proxy sees every entry) and applies each entry it did not publish itself.
//!
//! - **Catching up.** The reader keeps the ID of the last entry it read; after a disconnection
//!   it reads on from there. If the stream was trimmed past that ID, or Redis lost the stream,
//!   it cannot know what was purged: it empties its whole cache once (`ResettableStore::clear`)
//!   and says so (a warning, `ravelin_cache_purge_bus_full_purges_total`,
//!   `PurgeBusStatus::full_purges`).
//! - **Redis down.** The local purge always happens; the entry waits in a bounded outbox
//!   (`Publication::Pending`, `PurgeBusStatus::outbox`) and is published on reconnection.
//!   Past the bound the oldest is dropped and counted. Every Redis call has a timeout; the
//!   tasks reconnect with capped, jittered backoff. No purge call waits for Redis.
//! - **Untrusted entries.** An entry that is malformed, larger than 16 KiB or of an unknown kind
//!   or version is skipped and counted (`ravelin_cache_purge_bus_skipped_total{reason}`).
//!
//! Delivery is at least once to every proxy connected, or reconnecting while the stream still
//! holds the entries it missed (`max_len` entries, approximately); see `docs/cache.md`,
//! "Fleet-wide purge".
//!
//! | Metric | Type | Meaning |
//! |---|---|---|
//! | `ravelin_cache_purge_bus_published_total` | counter | purges published |
//! | `ravelin_cache_purge_bus_applied_total` | counter | other proxies' purges applied here |
//! | `ravelin_cache_purge_bus_errors_total{op}` | counter | Redis calls failed or timed out (`connect`, `read`, `publish`) |
//! | `ravelin_cache_purge_bus_skipped_total{reason}` | counter | entries skipped (`malformed`, `oversized`, `unknown-kind`, `unknown-version`, `invalid-url`) |
//! | `ravelin_cache_purge_bus_lag_seconds` | gauge | now − publication time of the last entry applied; 0 when caught up |
//! | `ravelin_cache_purge_bus_connected` | gauge | 1 while the reader's calls succeed |
//! | `ravelin_cache_purge_bus_full_purges_total` | counter | whole-cache purges after lost entries |
//! | `ravelin_cache_purge_bus_outbox` | gauge | purges waiting to be published |
//! | `ravelin_cache_purge_bus_outbox_dropped_total` | counter | purges dropped from a full outbox |

mod config;

pub(crate) use config::check_redis_url;
pub use config::{DEFAULT_MAX_LEN, DEFAULT_STREAM, DEFAULT_TIMEOUT, PurgeBusConfig};

#[cfg(feature = "redis")]
mod bus;
#[cfg(feature = "redis")]
pub(crate) mod entry;
#[cfg(feature = "redis")]
mod store;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use bus::{Publication, PurgeBus, PurgeBusError, PurgeBusStatus, PurgeOutcome};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use entry::{MAX_ENTRY_BYTES, MAX_TARGET_BYTES, PurgeKind};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::ResettableStore;
