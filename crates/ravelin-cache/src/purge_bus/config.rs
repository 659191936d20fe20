//! `[cache.purge_bus]`: the fleet-wide purge bus, as an operator writes it.

use std::time::Duration;

use ravelin_primitives::{Validate, Violations};
use serde::{Deserialize, Serialize};

/// The default stream name.
pub const DEFAULT_STREAM: &str = "ravelin:cache:purge";
/// The default bound on the stream's length (`XADD … MAXLEN ~`).
pub const DEFAULT_MAX_LEN: u64 = 10_000;
/// The default timeout of every Redis call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// The largest accepted `max_len`.
const MAX_MAX_LEN: u64 = 10_000_000;
/// The longest `redis_url`, `stream` and `instance`.
const MAX_URL_LEN: usize = 1024;
const MAX_STREAM_LEN: usize = 256;
/// The longest `instance` id (it travels in every entry).
pub(crate) const MAX_INSTANCE_LEN: usize = 128;

/// Fleet-wide purge over a Redis Stream (`[cache.purge_bus]`; absent: purges stay local).
///
/// Every purge made through the `PurgeBus` (feature `redis`) is applied locally, then
/// published once to `stream`; every proxy reads the stream and applies what others published.
/// See the crate README's *Fleet-wide purge* section and `docs/cache.md` for the guarantee.
///
/// ```
/// let cfg: ravelin_cache::purge_bus::PurgeBusConfig = serde_json::from_str(r#"{
///     "redis_url": "redis://127.0.0.1:6379/",
///     "max_len": 10000,
///     "timeout": "250ms"
/// }"#).unwrap();
/// ravelin_cache::Validate::validate(&cfg).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PurgeBusConfig {
    /// The Redis server: `redis://[user:password@]host:port/db`, `rediss://…` or
    /// `redis+unix:///path`. Required.
    pub redis_url: String,
    /// The stream's key.
    pub stream: String,
    /// The stream's approximate length bound (`XADD <stream> MAXLEN ~ <max_len>`): how many
    /// purges a disconnected proxy can miss and still catch up.
    pub max_len: u64,
    /// The most any Redis call may take (connecting, publishing, checking the stream); a blocking
    /// read may take `block` more.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long one read waits for new entries (`XREAD BLOCK`).
    #[serde(with = "humantime_serde")]
    pub block: Duration,
    /// The most entries one read returns (`XREAD COUNT`).
    pub batch: usize,
    /// The most purges queued for publication (default 10,000): while Redis cannot be reached
    /// (published on reconnect) or arriving faster than it takes them; past it the oldest is
    /// dropped and counted.
    pub outbox: usize,
    /// This proxy's id in the entries it publishes (it skips its own). Unset: random per start.
    pub instance: Option<String>,
}

impl Default for PurgeBusConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            stream: DEFAULT_STREAM.to_string(),
            max_len: DEFAULT_MAX_LEN,
            timeout: DEFAULT_TIMEOUT,
            block: Duration::from_secs(1),
            batch: 100,
            outbox: 10_000,
            instance: None,
        }
    }
}

impl PurgeBusConfig {
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
            v.push(
                "redis_url",
                "required: the Redis server to publish purges to",
            );
        } else if self.redis_url.len() > MAX_URL_LEN {
            v.push(
                "redis_url",
                format!("{} bytes exceeds limit {MAX_URL_LEN}", self.redis_url.len()),
            );
        } else if let Err(reason) = check_redis_url(&self.redis_url) {
            v.push("redis_url", reason);
        }
        if self.stream.is_empty() || self.stream.len() > MAX_STREAM_LEN {
            v.push(
                "stream",
                format!(
                    "{} bytes is outside 1..={MAX_STREAM_LEN}",
                    self.stream.len()
                ),
            );
        }
        v.check_range("max_len", self.max_len, 1..=MAX_MAX_LEN);
        for (path, d, low, high) in [
            (
                "timeout",
                self.timeout,
                Duration::from_millis(1),
                Duration::from_secs(10),
            ),
            (
                "block",
                self.block,
                Duration::from_millis(10),
                Duration::from_secs(60),
            ),
        ] {
            if d < low || d > high {
                v.push(path, format!("value {d:?} is outside {low:?}..={high:?}"));
            }
        }
        v.check_range("batch", self.batch, 1..=10_000);
        v.check_range("outbox", self.outbox, 1..=100_000);
        if let Some(id) = &self.instance
            && (id.is_empty()
                || id.len() > MAX_INSTANCE_LEN
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)))
        {
            v.push(
                "instance",
                format!(
                    "{id:?} is not 1..={MAX_INSTANCE_LEN} characters of letters, digits, '.', \
                     '_', ':' and '-'"
                ),
            );
        }
        v
    }
}

/// The URL as the Redis client reads it (with the `redis` feature), else its scheme: the check
/// of every Redis URL the cache's config names (the purge bus's, the shared tier's).
pub(crate) fn check_redis_url(url: &str) -> Result<(), String> {
    #[cfg(feature = "redis")]
    {
        ::redis::Client::open(url)
            .map(drop)
            .map_err(|e| format!("not a Redis URL: {e}"))
    }
    #[cfg(not(feature = "redis"))]
    {
        if ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|s| url.starts_with(s))
        {
            Ok(())
        } else {
            Err(format!(
                "{url:?} is not a redis://, rediss:// or redis+unix:// URL"
            ))
        }
    }
}

impl Validate for PurgeBusConfig {
    fn validate(&self) -> Result<(), Violations> {
        self.violations().into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_the_url() {
        let err = PurgeBusConfig::default()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis_url"), "{err}");
        PurgeBusConfig::new("redis://127.0.0.1:6379/")
            .validate()
            .unwrap();
    }

    #[test]
    fn every_bound_is_checked_by_name() {
        let cfg = PurgeBusConfig {
            redis_url: "http://nope".into(),
            stream: String::new(),
            max_len: 0,
            timeout: Duration::ZERO,
            block: Duration::from_secs(600),
            batch: 0,
            outbox: 1_000_000,
            instance: Some("has space".into()),
        };
        let err = cfg.validate().unwrap_err().to_string();
        for field in [
            "redis_url:",
            "stream:",
            "max_len:",
            "timeout:",
            "block:",
            "batch:",
            "outbox:",
            "instance:",
        ] {
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn deserialises_with_humane_durations_and_refuses_unknown_keys() {
        let cfg: PurgeBusConfig = serde_json::from_str(
            r#"{"redis_url": "redis://r/", "timeout": "100ms", "block": "2s", "instance": "edge-1"}"#,
        )
        .unwrap();
        assert_eq!(cfg.timeout, Duration::from_millis(100));
        assert_eq!(cfg.block, Duration::from_secs(2));
        assert_eq!(cfg.stream, DEFAULT_STREAM);
        assert_eq!(cfg.max_len, 10_000);
        cfg.validate().unwrap();
        assert!(serde_json::from_str::<PurgeBusConfig>(r#"{"unknown": 1}"#).is_err());
    }
}
