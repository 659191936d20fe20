//! Cache configuration: a plain, serde-friendly document with validated limits.

use std::time::Duration;

use http::header::HeaderName;
use ravelin_config::{Validate, Violations};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::key::KeyConfig;

const MIB: u64 = 1024 * 1024;
/// Longest duration any setting accepts: a year. Longer values are almost certainly unit mistakes.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Everything that shapes a cache, as an operator writes it (TOML/JSON through `ravelin-config`).
///
/// Every field has a default; [`CacheConfig::validate`] (also the [`Validate`] impl used by
/// `ravelin_config::Store`) checks every limit before a cache is built.
///
/// ```
/// let cfg: ravelin_cache::CacheConfig = serde_json::from_str(r#"{
///     "max_capacity_bytes": 536870912,
///     "stale_if_error": "1h",
///     "key": { "query": "sort", "drop_query_params": ["utm_*"] }
/// }"#).unwrap();
/// cfg.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// This cache's name in `Cache-Status` (an RFC 8941 token) and in metric labels.
    pub name: String,
    /// The most bytes of responses (bodies plus an estimate of headers) held in memory.
    pub max_capacity_bytes: u64,
    /// The largest response stored; bigger ones stream through uncached.
    pub max_object_bytes: u64,
    /// Cache-key rules.
    pub key: KeyConfig,
    /// Whether responses without explicit freshness but with `Last-Modified` get a heuristic
    /// lifetime (RFC 9111 §4.2.2).
    pub heuristic_freshness: bool,
    /// The fraction of the time since `Last-Modified` used as heuristic lifetime (0.1 is typical).
    pub heuristic_fraction: f64,
    /// The cap on a heuristic lifetime.
    #[serde(with = "humantime_serde")]
    pub heuristic_max: Duration,
    /// `stale-while-revalidate` applied to responses that do not send one (RFC 5861 §3). Zero
    /// disables it. Never applied where a directive forbids serving stale.
    #[serde(with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` applied to responses that do not send one (RFC 5861 §4). Zero disables it.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// How long to wait for the origin when a stale copy could be served if it fails; after this
    /// the stale copy is served (a timeout counts as an error for `stale-if-error`).
    #[serde(with = "humantime_serde")]
    pub stale_if_error_timeout: Option<Duration>,
    /// Whether concurrent misses for one key share one origin request.
    pub coalesce: bool,
    /// How long a coalesced request waits for the shared fetch before going to the origin itself.
    #[serde(with = "humantime_serde")]
    pub coalesce_timeout: Duration,
    /// The most distinct keys being fetched with coalescing at once; beyond it requests go alone.
    pub max_inflight: usize,
    /// The time allowed to a background revalidation (stale-while-revalidate) and to finishing a
    /// shared fetch whose first client went away.
    #[serde(with = "humantime_serde")]
    pub background_timeout: Duration,
    /// Whether request `Cache-Control` directives (`no-cache`, `max-age`, `min-fresh`, `max-stale`,
    /// `only-if-cached`, `no-store`) are honoured. An edge that must protect its origin from clients
    /// forcing refreshes can turn this off.
    pub request_directives: bool,
    /// Whether a request `Pragma: no-cache` without `Cache-Control` acts as `no-cache` (RFC 9111 §5.4).
    pub pragma_no_cache: bool,
    /// Targeted cache-control fields, most specific first (RFC 9213); the first valid one present
    /// replaces `Cache-Control` and `Expires` for this cache.
    pub targeted_fields: Vec<String>,
    /// Response fields carrying surrogate tags for purging.
    pub surrogate_key_fields: Vec<String>,
    /// Whether surrogate-tag fields are sent on to clients (they are stripped by default).
    pub expose_surrogate_keys: bool,
    /// The most surrogate tags kept per response.
    pub max_tags_per_object: usize,
    /// Whether `Cache-Status` (RFC 9211) is added to responses.
    pub cache_status: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            name: "ravelin".to_string(),
            max_capacity_bytes: 256 * MIB,
            max_object_bytes: 8 * MIB,
            key: KeyConfig::default(),
            heuristic_freshness: true,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(24 * 3600),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            stale_if_error_timeout: None,
            coalesce: true,
            coalesce_timeout: Duration::from_secs(5),
            max_inflight: 16_384,
            background_timeout: Duration::from_secs(30),
            request_directives: true,
            pragma_no_cache: true,
            targeted_fields: vec!["cdn-cache-control".to_string()],
            surrogate_key_fields: vec!["surrogate-key".to_string(), "cache-tag".to_string()],
            expose_surrogate_keys: false,
            max_tags_per_object: 64,
            cache_status: true,
        }
    }
}

impl CacheConfig {
    /// Checks every limit; the error names each offending field and the accepted range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.violations()
            .into_result()
            .map_err(ConfigError::Invalid)
    }

    fn violations(&self) -> Violations {
        let mut v = Violations::new();
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_alphabetic() || (i > 0 && crate::directives::is_tchar(b)))
        {
            v.push(
                "name",
                format!(
                    "{:?} is not a token of 1..=64 characters starting with a letter",
                    self.name
                ),
            );
        }
        v.check_range(
            "max_capacity_bytes",
            self.max_capacity_bytes,
            MIB..=(1 << 40),
        );
        v.check_range(
            "max_object_bytes",
            self.max_object_bytes,
            1..=self.max_capacity_bytes.max(1),
        );
        if self.max_object_bytes > u64::from(u32::MAX) {
            v.push(
                "max_object_bytes",
                format!("{} exceeds 4 GiB", self.max_object_bytes),
            );
        }
        v.check_finite("heuristic_fraction", self.heuristic_fraction);
        v.check_range("heuristic_fraction", self.heuristic_fraction, 0.0..=1.0);
        for (path, d) in [
            ("heuristic_max", self.heuristic_max),
            ("stale_while_revalidate", self.stale_while_revalidate),
            ("stale_if_error", self.stale_if_error),
            ("coalesce_timeout", self.coalesce_timeout),
            ("background_timeout", self.background_timeout),
        ] {
            if d > MAX_DURATION {
                v.push(path, format!("{d:?} exceeds one year"));
            }
        }
        if let Some(t) = self.stale_if_error_timeout
            && (t.is_zero() || t > MAX_DURATION)
        {
            v.push(
                "stale_if_error_timeout",
                format!("{t:?} is outside 1ms..=1 year"),
            );
        }
        if self.background_timeout.is_zero() {
            v.push("background_timeout", "must be positive");
        }
        v.check_range("max_inflight", self.max_inflight, 1..=1_000_000);
        v.check_range("max_tags_per_object", self.max_tags_per_object, 0..=1024);
        v.check_count("targeted_fields", "fields", self.targeted_fields.len(), 8);
        v.check_count(
            "surrogate_key_fields",
            "fields",
            self.surrogate_key_fields.len(),
            8,
        );
        for (list, names) in [
            ("targeted_fields", &self.targeted_fields),
            ("surrogate_key_fields", &self.surrogate_key_fields),
        ] {
            for (i, n) in names.iter().enumerate() {
                if HeaderName::from_bytes(n.as_bytes()).is_err() {
                    v.push(
                        format!("{list}[{i}]"),
                        format!("{n:?} is not a header field name"),
                    );
                }
            }
        }
        if !matches!(
            self.key.default_scheme.to_ascii_lowercase().as_str(),
            "http" | "https"
        ) {
            v.push(
                "key.default_scheme",
                format!("{:?} is neither http nor https", self.key.default_scheme),
            );
        }
        v.check_count(
            "key.drop_query_params",
            "parameters",
            self.key.drop_query_params.len(),
            256,
        );
        v
    }
}

impl Validate for CacheConfig {
    fn validate(&self) -> Result<(), Violations> {
        self.violations().into_result()
    }
}

/// The validated configuration with header names parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) cfg: CacheConfig,
    pub(crate) targeted: Vec<HeaderName>,
    pub(crate) tag_fields: Vec<HeaderName>,
}

impl Settings {
    pub(crate) fn new(cfg: CacheConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let parse = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect::<Vec<_>>()
        };
        Ok(Self {
            targeted: parse(&cfg.targeted_fields),
            tag_fields: parse(&cfg.surrogate_key_fields),
            cfg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        CacheConfig::default().validate().unwrap();
    }

    #[test]
    fn violations_name_the_field() {
        let cfg = CacheConfig {
            name: "bad name".into(),
            max_object_bytes: 0,
            heuristic_fraction: f64::NAN,
            targeted_fields: vec!["bad field".into()],
            ..CacheConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("name:"), "{err}");
        assert!(err.contains("max_object_bytes"), "{err}");
        assert!(err.contains("heuristic_fraction"), "{err}");
        assert!(err.contains("targeted_fields[0]"), "{err}");
    }

    #[test]
    fn deserialises_with_humane_durations() {
        let cfg: CacheConfig = serde_json::from_str(
            r#"{"stale_while_revalidate": "30s", "stale_if_error_timeout": "250ms"}"#,
        )
        .unwrap();
        assert_eq!(cfg.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(cfg.stale_if_error_timeout, Some(Duration::from_millis(250)));
        assert!(serde_json::from_str::<CacheConfig>(r#"{"unknown": 1}"#).is_err());
    }
}
