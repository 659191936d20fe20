//! [`RateLimitConfig`]: the rate limiter as a deployment configures it — where the buckets live,
//! how the guard fails, and the rules — as one serde type with the checks building it performs.
//!
//! It is `[ratelimit]` in the edge's configuration file, nested as it is: the edge declares no
//! field of its own for the rate limiter.

use std::time::Duration;

use ravelin_failsafe::GuardConfig;
use ravelin_primitives::{Validate, Violations};
use serde::{Deserialize, Serialize};

use crate::response::{MissingPeer, ResponseTemplate};
use crate::rules::{ClientIp, KeyPart, ResponseHeaders, Rule, Rules};

/// The most keys the in-memory table may hold (about 1.6 GB at 16 bytes a key).
pub const MAX_CAPACITY: usize = 100_000_000;
/// The longest budget of one Redis call.
pub const MAX_REDIS_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the buckets live: `"memory"` or a `redis://` / `rediss://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreConfig {
    /// In-process, bounded by [`RateLimitConfig::capacity`].
    Memory,
    /// A shared Redis (`redis://host:port/db`); needs the `redis` feature.
    Redis(String),
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "memory" {
            Ok(StoreConfig::Memory)
        } else if text.starts_with("redis://") || text.starts_with("rediss://") {
            Ok(StoreConfig::Redis(text))
        } else {
            Err(serde::de::Error::custom(format!(
                "store must be \"memory\" or a redis:// URL, not {text:?}"
            )))
        }
    }
}

impl Serialize for StoreConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StoreConfig::Memory => s.serialize_str("memory"),
            StoreConfig::Redis(url) => s.serialize_str(url),
        }
    }
}

/// The rate limiter as deployed: its guard's failure settings, its bucket store and its rules.
///
/// | key | default | meaning |
/// |---|---|---|
/// | `guard` | failsafe's `GuardConfig` with a 20 ms `timeout` | how the limiter fails (Envoy's rate-limit timeout: a Redis round trip must fit) |
/// | `store` | `"memory"` | `"memory"` or a Redis URL |
/// | `capacity` | 100000 | keys held in memory (the memory store's bound; also the local fallback's), 1..=[`MAX_CAPACITY`] |
/// | `redis_timeout` | `"10ms"` | budget of one Redis call: more than zero, at most `guard.timeout` and [`MAX_REDIS_TIMEOUT`] |
/// | `local_fallback` | `true` | while Redis is unavailable, enforce the same quotas per process in memory |
/// | `response_headers` | `"always"` | when `RateLimit`/`RateLimit-Policy` are sent |
/// | `client_ip` | socket peer | how the client address is found ([`ClientIp`]) |
/// | `missing_peer` | `"reject"` | a `client_ip` rule on a request without a peer address: `reject` (500 naming the fix) or `skip` ([`MissingPeer`]) |
/// | `denied_response` | 429 `too many requests` | `{ status, content_type, body }` of a limited request ([`ResponseTemplate`]) |
/// | `rules` | one rule, `per-ip`: 100/s, burst 100, keyed by client address | the [`Rule`]s |
///
/// ```
/// use ravelin_ratelimit::RateLimitConfig;
/// use ravelin_primitives::Validate;
///
/// let config: RateLimitConfig = toml::from_str(r#"
///     store = "memory"
///     [[rules]]
///     name = "login"
///     limit = 5
///     window = "1m"
///     key = ["client_ip"]
/// "#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.rules_document().rules.len(), 1);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(from = "Document")]
pub struct RateLimitConfig {
    /// How the limiter fails (`[ratelimit.guard]`).
    pub guard: GuardConfig,
    /// `"memory"` or a Redis URL.
    pub store: StoreConfig,
    /// Keys held in memory (the memory store's bound; also the local fallback's).
    pub capacity: usize,
    /// Time budget of one Redis call (at most `guard.timeout`).
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// While Redis is unavailable, enforce the same quotas per process in memory.
    pub local_fallback: bool,
    /// When `RateLimit`/`RateLimit-Policy` are sent: `always`, `denied`, `never`.
    pub response_headers: ResponseHeaders,
    /// How the client address is found (`[ratelimit.client_ip]`).
    pub client_ip: ClientIp,
    /// What a rule keyed by `client_ip` does with a request without a peer address.
    pub missing_peer: MissingPeer,
    /// The answer to a limited request (`[ratelimit.denied_response]`).
    pub denied_response: ResponseTemplate,
    /// The rules (`[[ratelimit.rules]]`).
    pub rules: Vec<Rule>,
    /// Whether the document wrote `rules` (`[[ratelimit.rules]]` or `rules = […]`), or
    /// `rules` is the default per-ip rule because the key is absent — from a file cut short,
    /// too. A loader comparing documents tells "the rules are gone" from "the defaults".
    #[serde(skip)]
    rules_written: Written,
}

/// Whether a key was in the document; not part of the value (two configurations with the same
/// settings are equal however they were written).
#[derive(Debug, Clone, Copy, Default)]
struct Written(bool);

impl PartialEq for Written {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// `[ratelimit]` as written: [`RateLimitConfig`] plus whether `rules` was.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default = "default_guard")]
    guard: GuardConfig,
    #[serde(default = "memory")]
    store: StoreConfig,
    #[serde(default = "default_capacity")]
    capacity: usize,
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    redis_timeout: Duration,
    #[serde(default = "yes")]
    local_fallback: bool,
    #[serde(default)]
    response_headers: ResponseHeaders,
    #[serde(default)]
    client_ip: ClientIp,
    #[serde(default)]
    missing_peer: MissingPeer,
    #[serde(default)]
    denied_response: ResponseTemplate,
    #[serde(default)]
    rules: Option<Vec<Rule>>,
}

impl From<Document> for RateLimitConfig {
    fn from(document: Document) -> Self {
        Self {
            guard: document.guard,
            store: document.store,
            capacity: document.capacity,
            redis_timeout: document.redis_timeout,
            local_fallback: document.local_fallback,
            response_headers: document.response_headers,
            client_ip: document.client_ip,
            missing_peer: document.missing_peer,
            denied_response: document.denied_response,
            rules_written: Written(document.rules.is_some()),
            rules: document.rules.unwrap_or_else(default_rules),
        }
    }
}

impl RateLimitConfig {
    /// Whether the document this came from wrote `rules` (`false`: absent, so `rules` is the
    /// default per-ip rule; also `false` for [`RateLimitConfig::default`]). Setting `rules` in
    /// code does not change it; [`with_rules`](Self::with_rules) does.
    pub fn rules_written(&self) -> bool {
        self.rules_written.0
    }

    /// These rules, as a document writing them would have them.
    #[must_use]
    pub fn with_rules(mut self, rules: Vec<Rule>) -> Self {
        self.rules = rules;
        self.rules_written = Written(true);
        self
    }

    /// The rule document this configuration installs (client address, response headers,
    /// missing-peer policy, denied response, rules), as a [`Store<Rules>`](ravelin_config::Store) validates and serves it.
    pub fn rules_document(&self) -> Rules {
        let mut rules = Rules::new();
        rules.client_ip = self.client_ip.clone();
        rules.response_headers = self.response_headers;
        rules.missing_peer = self.missing_peer;
        rules.denied_response = self.denied_response.clone();
        rules.rules = self.rules.clone();
        rules
    }

    /// Whether `store` names a usable Redis URL (the Redis client's own parse).
    fn check_store(&self) -> Result<(), String> {
        match &self.store {
            StoreConfig::Memory => Ok(()),
            #[cfg(feature = "redis")]
            StoreConfig::Redis(url) => redis::Client::open(url.as_str())
                .map(|_| ())
                .map_err(|e| format!("{url:?} is not a usable Redis URL: {e}")),
            #[cfg(not(feature = "redis"))]
            StoreConfig::Redis(_) => {
                Err("this build of ravelin-ratelimit has no `redis` feature".to_owned())
            }
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            guard: default_guard(),
            store: memory(),
            capacity: default_capacity(),
            redis_timeout: default_redis_timeout(),
            local_fallback: true,
            response_headers: ResponseHeaders::default(),
            client_ip: ClientIp::default(),
            missing_peer: MissingPeer::default(),
            denied_response: ResponseTemplate::default(),
            rules: default_rules(),
            rules_written: Written(false),
        }
    }
}

impl Validate for RateLimitConfig {
    /// Every check building the limiter performs: the guard's settings, the memory bound, the
    /// Redis budget and URL, and the rule document as the rule store validates it.
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        if let Err(guard) = self.guard.validate() {
            v.merge_under("guard", guard);
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            v.push(
                "capacity",
                format!("{} is outside 1..={MAX_CAPACITY}", self.capacity),
            );
        }
        let timeout = self.redis_timeout;
        if timeout.is_zero() || timeout > self.guard.timeout {
            v.push(
                "redis_timeout",
                format!(
                    "{timeout:?} must be greater than zero and at most guard.timeout ({:?}): one Redis call has to fit in the guard's budget",
                    self.guard.timeout
                ),
            );
        } else if timeout > MAX_REDIS_TIMEOUT {
            v.push(
                "redis_timeout",
                format!("{timeout:?} is longer than the limit of {MAX_REDIS_TIMEOUT:?}"),
            );
        }
        if let Err(reason) = self.check_store() {
            v.push("store", reason);
        }
        if let Err(rules) = self.rules_document().validate() {
            v.merge(rules);
        }
        v.into_result()
    }
}

// === defaults ===

/// Failsafe's defaults with a 20 ms budget (Envoy's rate-limit timeout): a Redis round trip must
/// fit, and a dead Redis costs no more than that per request until the circuit opens.
fn default_guard() -> GuardConfig {
    GuardConfig {
        timeout: Duration::from_millis(20),
        ..GuardConfig::default()
    }
}
fn memory() -> StoreConfig {
    StoreConfig::Memory
}
fn default_capacity() -> usize {
    100_000
}
fn default_redis_timeout() -> Duration {
    Duration::from_millis(10)
}
fn yes() -> bool {
    true
}
fn default_rules() -> Vec<Rule> {
    vec![
        Rule::new("per-ip", 100, Duration::from_secs(1))
            .burst(100)
            .key(KeyPart::ClientIp),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RateLimitConfig, String> {
        let config: RateLimitConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|v| v.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_default_is_valid_and_limits_per_address() {
        let config = parse("").unwrap();
        assert_eq!(config, RateLimitConfig::default());
        assert_eq!(config.rules.len(), 1);
        assert_eq!(config.guard.timeout, Duration::from_millis(20));
    }

    #[test]
    fn every_build_check_is_a_violation_named_by_its_key() {
        for (text, key) in [
            ("capacity = 0", "capacity"),
            ("capacity = 100000001", "capacity"),
            ("redis_timeout = \"0s\"", "redis_timeout"),
            ("redis_timeout = \"21ms\"", "redis_timeout"),
            ("[guard]\ntimeout = \"0s\"", "guard.timeout"),
            (
                "[[rules]]\nname = \"x\"\nlimit = 0\nwindow = \"1s\"",
                "rules[0].limit",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text:?} → {err}");
        }
    }

    #[test]
    fn store_is_memory_or_a_redis_url() {
        assert!(
            parse("store = \"mongodb://x\"")
                .unwrap_err()
                .contains("redis://")
        );
        let redis = parse("store = \"redis://127.0.0.1:6379/0\"");
        if cfg!(feature = "redis") {
            assert_eq!(
                redis.unwrap().store,
                StoreConfig::Redis("redis://127.0.0.1:6379/0".into())
            );
        } else {
            assert!(redis.unwrap_err().contains("redis"));
        }
    }

    #[test]
    fn whether_rules_were_written_is_kept_and_not_part_of_the_value() {
        let absent = parse("").unwrap();
        assert!(!absent.rules_written());
        assert_eq!(absent.rules.len(), 1, "the default per-ip rule");
        let empty = parse("rules = []").unwrap();
        assert!(empty.rules_written() && empty.rules.is_empty());
        let written = parse(
            "[[rules]]\nname = \"per-ip\"\nlimit = 100\nwindow = \"1s\"\nburst = 100\nkey = [\"client_ip\"]",
        )
        .unwrap();
        assert!(written.rules_written());
        // The same settings are equal however they were written.
        assert_eq!(written, absent);
        let killed =
            parse("[[rules]]\nname = \"x\"\nlimit = 1\nwindow = \"1s\"\nkilled = true").unwrap();
        assert!(killed.rules[0].killed);
        assert!(
            RateLimitConfig::default()
                .with_rules(Vec::new())
                .rules_written()
        );
    }

    #[test]
    fn missing_peer_and_denied_response_are_read_checked_and_installed() {
        let config = parse(
            "missing_peer = \"skip\"\n[denied_response]\nstatus = 503\ncontent_type = \"application/json\"\nbody = \"{}\"",
        )
        .unwrap();
        assert_eq!(config.missing_peer, MissingPeer::Skip);
        let document = config.rules_document();
        assert_eq!(document.missing_peer, MissingPeer::Skip);
        assert_eq!(
            document.denied_response,
            ResponseTemplate::new(http::StatusCode::SERVICE_UNAVAILABLE, "{}")
                .content_type("application/json")
        );
        let default = parse("").unwrap();
        assert_eq!(default.missing_peer, MissingPeer::Reject);
        assert_eq!(default.denied_response, ResponseTemplate::default_denied());
        for (text, key) in [
            ("missing_peer = \"ignore\"", "missing_peer"),
            ("[denied_response]\nstatus = 200", "denied_response.status"),
            ("[denied_response]\nstatus = 429\ncolor = 1", "color"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text:?} → {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(parse("timeout = \"20ms\"").unwrap_err().contains("timeout"));
    }
}
