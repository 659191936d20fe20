//! `[cache.shared_tier]`: the shared second tier, as an operator writes it.

use std::time::Duration;

use ravelin_primitives::{Validate, Violations};
use serde::{Deserialize, Serialize};

/// The default key namespace.
pub const DEFAULT_PREFIX: &str = "ravelin:cache:shared:";
/// The default bound on one Redis call, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// The default largest object written (its encoding: body, header fields, metadata).
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 1024 * 1024;
/// The default cap on the TTL written.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The default life of a purge's tombstone.
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(10);

const MAX_URL_LEN: usize = 1024;
const MAX_PREFIX_LEN: usize = 256;
/// The largest `max_object_bytes` (Redis itself refuses values past 512 MiB).
const MAX_MAX_OBJECT_BYTES: u64 = 64 * 1024 * 1024;

/// A second cache tier on Redis shared by the proxies (`[cache.shared_tier]`; absent: none).
///
/// On a local miss the cache looks here before the origin; fills write through. Every Redis
/// fault (a timeout, a refused connection, an open breaker, a malformed value) is a miss for
/// the request, within `timeout`. See the [module docs](crate::shared_tier).
///
/// ```
/// let cfg: ravelin_cache::shared_tier::SharedTierConfig = serde_json::from_str(r#"{
///     "redis_url": "redis://127.0.0.1:6379/",
///     "timeout": "50ms",
///     "max_object_bytes": 1048576,
///     "min_object_bytes": 4096,
///     "max_ttl": "1h"
/// }"#).unwrap();
/// ravelin_cache::Validate::validate(&cfg).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedTierConfig {
    /// The Redis server: `redis://[user:password@]host:port/db`, `rediss://…` or
    /// `redis+unix:///path`. Required. One server (or a primary): a put and its tag index are
    /// written by one script over several keys, which Redis Cluster would refuse.
    pub redis_url: String,
    /// The namespace of every key written (`<prefix>o:<cache key>` for objects,
    /// `<prefix>t:<tag>` for tag indexes, `<prefix>x:<cache key>` and `<prefix>xt:<tag>` for
    /// purge tombstones).
    pub prefix: String,
    /// The most one lookup, put or purge may take, connecting included; past it the lookup is
    /// a miss (`Unavailable`) and the request goes to the origin.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The largest object written, in encoded bytes (body, header fields and metadata); larger
    /// ones stay local. A value read that is larger is a miss.
    pub max_object_bytes: u64,
    /// The smallest body worth sharing: smaller objects stay local (cheap to fetch again).
    pub min_object_bytes: u64,
    /// The longest TTL written; a longer one asked for is cut to it.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// The most puts in flight; a put past it is dropped and counted.
    pub max_puts_in_flight: usize,
    /// The most keys a tag's index holds; a put that would exceed it is not written (so a
    /// purge by tag never misses an object).
    pub max_keys_per_tag: u64,
    /// Consecutive Redis failures that open the circuit breaker (then lookups and puts are
    /// answered without touching Redis).
    pub breaker_failures: u32,
    /// How long the breaker stays open before one call probes Redis again, ±20 % jitter so
    /// that the proxies do not probe together.
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// How long a purge's tombstone (`<prefix>x:<key>`, `<prefix>xt:<tag>`) refuses puts of
    /// entries received before the purge (at least twice `timeout`): a write-through that
    /// began before the purge and reaches Redis after its delete does not bring the object
    /// back.
    #[serde(with = "humantime_serde")]
    pub tombstone_ttl: Duration,
}

impl Default for SharedTierConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            prefix: DEFAULT_PREFIX.to_string(),
            timeout: DEFAULT_TIMEOUT,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            min_object_bytes: 0,
            max_ttl: DEFAULT_MAX_TTL,
            max_puts_in_flight: 64,
            max_keys_per_tag: 10_000,
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
        }
    }
}

impl SharedTierConfig {
    /// A configuration for `redis_url` with every default.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            ..Self::default()
        }
    }

    pub(crate) fn violations(&self) -> Violations {
        let mut v = Violations::new();
        if self.redis_url.is_empty() {
            v.push("redis_url", "required: the Redis server of the shared tier");
        } else if self.redis_url.len() > MAX_URL_LEN {
            v.push(
                "redis_url",
                format!("{} bytes exceeds limit {MAX_URL_LEN}", self.redis_url.len()),
            );
        } else if let Err(reason) = crate::purge_bus::check_redis_url(&self.redis_url) {
            v.push("redis_url", reason);
        }
        if self.prefix.is_empty() || self.prefix.len() > MAX_PREFIX_LEN {
            v.push(
                "prefix",
                format!(
                    "{} bytes is outside 1..={MAX_PREFIX_LEN}",
                    self.prefix.len()
                ),
            );
        }
        for (path, d, low, high) in [
            (
                "timeout",
                self.timeout,
                Duration::from_millis(1),
                Duration::from_secs(10),
            ),
            (
                "max_ttl",
                self.max_ttl,
                Duration::from_secs(1),
                Duration::from_secs(30 * 24 * 3600),
            ),
            (
                "breaker_open_for",
                self.breaker_open_for,
                Duration::from_millis(10),
                Duration::from_secs(600),
            ),
            (
                "tombstone_ttl",
                self.tombstone_ttl,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            ),
        ] {
            if d < low || d > high {
                v.push(path, format!("value {d:?} is outside {low:?}..={high:?}"));
            }
        }
        v.check_range(
            "max_object_bytes",
            self.max_object_bytes,
            1024..=MAX_MAX_OBJECT_BYTES,
        );
        if self.min_object_bytes >= self.max_object_bytes {
            v.push(
                "min_object_bytes",
                format!(
                    "{} is not below max_object_bytes ({}): nothing would be shared",
                    self.min_object_bytes, self.max_object_bytes
                ),
            );
        }
        v.check_range("max_puts_in_flight", self.max_puts_in_flight, 1..=10_000);
        v.check_range("max_keys_per_tag", self.max_keys_per_tag, 1..=1_000_000);
        v.check_range("breaker_failures", self.breaker_failures, 1..=1000);
        v
    }
}

impl Validate for SharedTierConfig {
    fn validate(&self) -> Result<(), Violations> {
        self.violations().into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_the_url() {
        let err = SharedTierConfig::default()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis_url"), "{err}");
        let cfg = SharedTierConfig::new("redis://127.0.0.1:6379/");
        cfg.validate().unwrap();
        assert_eq!(cfg.timeout, Duration::from_millis(50));
        assert_eq!(cfg.max_object_bytes, 1024 * 1024);
        assert_eq!(cfg.min_object_bytes, 0);
        assert_eq!(cfg.tombstone_ttl, Duration::from_secs(10));
    }

    #[test]
    fn every_bound_is_checked_by_name() {
        let cfg = SharedTierConfig {
            redis_url: "http://nope".into(),
            prefix: String::new(),
            timeout: Duration::ZERO,
            max_object_bytes: 1 << 40,
            min_object_bytes: 1 << 41,
            max_ttl: Duration::ZERO,
            max_puts_in_flight: 0,
            max_keys_per_tag: 0,
            breaker_failures: 0,
            breaker_open_for: Duration::from_secs(3600),
            tombstone_ttl: Duration::ZERO,
        };
        let err = cfg.validate().unwrap_err().to_string();
        for field in [
            "redis_url:",
            "prefix:",
            "timeout:",
            "max_object_bytes:",
            "min_object_bytes:",
            "max_ttl:",
            "max_puts_in_flight:",
            "tombstone_ttl:",
            "max_keys_per_tag:",
            "breaker_failures:",
            "breaker_open_for:",
        ] {
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn deserialises_with_humane_durations_and_refuses_unknown_keys() {
        let cfg: SharedTierConfig = serde_json::from_str(
            r#"{"redis_url": "redis://r/", "timeout": "20ms", "max_ttl": "1h", "breaker_open_for": "2s"}"#,
        )
        .unwrap();
        assert_eq!(cfg.timeout, Duration::from_millis(20));
        assert_eq!(cfg.max_ttl, Duration::from_secs(3600));
        assert_eq!(cfg.prefix, DEFAULT_PREFIX);
        cfg.validate().unwrap();
        assert!(serde_json::from_str::<SharedTierConfig>(r#"{"unknown": 1}"#).is_err());
    }
}
