//! Cache configuration: a plain, serde-friendly document with validated limits.

use std::time::Duration;

use http::header::HeaderName;
use ravelin_primitives::{Validate, Violations};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::key::KeyConfig;
use crate::purge_bus::PurgeBusConfig;
use crate::shared_tier::SharedTierConfig;
use crate::warm::WarmRestartConfig;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// Longest duration any freshness or staleness setting accepts: a year. Longer values are almost
/// certainly unit mistakes.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

// Upper bounds sized so that no accepted configuration can take down a small edge machine
// (2 cores, 24 GiB): the store, one object and every concurrent recording must fit beside the
// rest of the process.
/// The largest `max_capacity_bytes`.
pub(crate) const MAX_CAPACITY_BYTES: u64 = 16 * GIB;
/// The largest `max_object_bytes` (and never more than `max_capacity_bytes`).
pub(crate) const MAX_OBJECT_BYTES: u64 = GIB;
/// The largest `max_recording_bytes`.
pub(crate) const MAX_RECORDING_BYTES: u64 = 4 * GIB;
/// The most fills in flight (`max_inflight`).
pub(crate) const MAX_INFLIGHT: usize = 65_536;
/// The longest `coalesce_timeout` and `stale_if_error_timeout`: a client waits this long at most.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// The longest `background_timeout`: a background fetch holds up to an object's bytes this long.
const MAX_BACKGROUND: Duration = Duration::from_secs(3600);
/// The longest entry of `key.drop_query_params`, `targeted_fields` and `surrogate_key_fields`.
const MAX_NAME_LEN: usize = 256;

/// What the cache does with responses that carry `Set-Cookie`.
///
/// RFC 9111 §7.3 lets a shared cache store and replay `Set-Cookie`; an edge in front of origins
/// it does not control must not hand one client's session cookie to the next. The default stores
/// such a response only when the origin addressed it to shared caches explicitly, and never
/// stores the cookie itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetCookie {
    /// Stored only with an explicit shared-cache opt-in: `public`, `s-maxage`, freshness in a
    /// targeted field (`CDN-Cache-Control: max-age=…`, RFC 9213), or `private="set-cookie"`.
    /// The stored copy never has `Set-Cookie`; the client whose request fetched the response
    /// still gets its cookie. Otherwise the response passes with `Cache-Status: …;
    /// detail=set-cookie`.
    #[default]
    Explicit,
    /// Never stored, whatever the directives say (`detail=set-cookie`).
    Never,
    /// RFC 9111 §7.3: stored like any other response, `Set-Cookie` included and replayed to every
    /// client served from the copy. Only for origins known to mark per-user responses `private`.
    Replay,
}

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
    /// The most bytes buffered at once by all responses being recorded into the store (a body is
    /// held until it is complete). A response that would pass it streams on unrecorded
    /// (`Cache-Status: …; detail=recording-limit`, or recording stops when its length was
    /// unknown). Unset: four times `max_object_bytes`, at least 64 MiB and at most 4 GiB.
    pub max_recording_bytes: Option<u64>,
    /// The largest object a range request that misses fetches whole, to store it and answer
    /// this and later ranges from it (RFC 9110 §14, as Varnish does). The origin's answer must
    /// declare a `Content-Length` of at most this; a longer or unknown one is not stored and the
    /// client still gets its range, cut from the streamed body (or the whole body when its length
    /// is unknown). `0` turns range fills off: range misses go forward with their `Range`, as
    /// before. Unset: `max_object_bytes`.
    pub range_fill_max_bytes: Option<u64>,
    /// Cache-key rules.
    pub key: KeyConfig,
    /// Whether responses without explicit freshness but with `Last-Modified` get a heuristic
    /// lifetime (RFC 9111 §4.2.2).
    pub heuristic_freshness: bool,
    /// Whether a heuristic lifetime may also be given to a response to a request that carried
    /// `Cookie` or `Authorization` (off by default: such a response is likely personalised and
    /// its origin said nothing about caching it). Explicit freshness is unaffected, and RFC 9111
    /// §3.5 still applies: a response to a request with `Authorization` is stored only with
    /// `public`, `s-maxage` or `must-revalidate`.
    pub heuristic_with_credentials: bool,
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
    /// How long a coalesced request waits for the shared fetch before going to the origin itself
    /// (positive; turn coalescing off with `coalesce = false`).
    #[serde(with = "humantime_serde")]
    pub coalesce_timeout: Duration,
    /// The most distinct keys being fetched with coalescing at once; beyond it requests go alone.
    pub max_inflight: usize,
    /// The time allowed to a background revalidation (stale-while-revalidate) and to finishing a
    /// shared fetch whose first client went away.
    #[serde(with = "humantime_serde")]
    pub background_timeout: Duration,
    /// Whether request `Cache-Control` directives (`no-cache`, `max-age`, `min-fresh`, `max-stale`,
    /// `only-if-cached`, `no-store`, `stale-if-error`) and `Pragma: no-cache` are honoured (RFC 9111
    /// §5.2.1, §5.4). Off by default, as at CDNs: otherwise any client can send every request to
    /// the origin (`no-cache`, `max-age=0`) or around request coalescing (`no-store`). Turn it on
    /// only where the clients are trusted (an internal cache, a cache behind an authenticated
    /// edge).
    pub request_directives: bool,
    /// Whether a request `Pragma: no-cache` without `Cache-Control` acts as `no-cache` (RFC 9111
    /// §5.4). Only read when `request_directives` is on.
    pub pragma_no_cache: bool,
    /// Whether unsafe methods change what is stored: RFC 9111 §4.4 invalidation of the target URI
    /// (and same-origin `Location` / `Content-Location`) after a non-error response to POST, PUT,
    /// DELETE, PATCH or an unknown method, and RFC 9110 §9.3.3 storing of a POST response that
    /// names its own URI in `Content-Location`. Off by default: otherwise any client evicts or
    /// replaces a hot object with one anonymous request. Turn it on where unsafe requests are
    /// authenticated before they reach the cache; purge through the [`CacheHandle`](crate::CacheHandle)
    /// otherwise.
    pub invalidate_on_unsafe: bool,
    /// Responses that carry `Set-Cookie`: see [`SetCookie`].
    pub set_cookie: SetCookie,
    /// Targeted cache-control fields, most specific first (RFC 9213); the first valid one present
    /// replaces `Cache-Control` and `Expires` for this cache. `surrogate-control` is read with
    /// the W3C Edge Architecture grammar, `name` as its device token; the members meant for this
    /// cache are removed from responses sent on, and requests to the origin announce the cache
    /// in `Surrogate-Capability`. Leave it out when another surrogate in front should get them.
    pub targeted_fields: Vec<String>,
    /// Response fields carrying surrogate tags for purging.
    pub surrogate_key_fields: Vec<String>,
    /// Whether surrogate-tag fields are sent on to clients (they are stripped by default).
    pub expose_surrogate_keys: bool,
    /// The most surrogate tags kept per response.
    pub max_tags_per_object: usize,
    /// Whether `Cache-Status` (RFC 9211) is added to responses.
    pub cache_status: bool,
    /// Fleet-wide purge over a Redis Stream (`[cache.purge_bus]`); absent: purges stay local.
    /// Read by whatever runs a [`PurgeBus`](crate::purge_bus) (the edge proxy, with the `redis`
    /// feature), not by the layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_bus: Option<PurgeBusConfig>,
    /// A second cache tier on Redis shared by the proxies (`[cache.shared_tier]`, feature
    /// `redis`); absent: none. On a local miss the fill leader looks there before the origin,
    /// and stored responses are written through. See the [module docs](crate::shared_tier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_tier: Option<SharedTierConfig>,
    /// Warm restarts (`[cache.warm_restart]`): the most recently used entries written to a
    /// snapshot file at shutdown and read back at start; absent: the cache starts cold. Read by
    /// whatever owns the cache's lifetime (the edge proxy) through
    /// [`CacheHandle::save_snapshot`](crate::CacheHandle::save_snapshot) and
    /// [`load_snapshot`](crate::CacheHandle::load_snapshot). See the [module docs](crate::warm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_restart: Option<WarmRestartConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            name: "ravelin".to_string(),
            max_capacity_bytes: 256 * MIB,
            max_object_bytes: 8 * MIB,
            max_recording_bytes: None,
            range_fill_max_bytes: None,
            key: KeyConfig::default(),
            heuristic_freshness: true,
            heuristic_with_credentials: false,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(24 * 3600),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            stale_if_error_timeout: None,
            coalesce: true,
            coalesce_timeout: Duration::from_secs(5),
            max_inflight: 16_384,
            background_timeout: Duration::from_secs(30),
            request_directives: false,
            pragma_no_cache: true,
            invalidate_on_unsafe: false,
            set_cookie: SetCookie::Explicit,
            targeted_fields: vec![
                "cdn-cache-control".to_string(),
                "surrogate-control".to_string(),
            ],
            surrogate_key_fields: vec!["surrogate-key".to_string(), "cache-tag".to_string()],
            expose_surrogate_keys: false,
            max_tags_per_object: 64,
            cache_status: true,
            purge_bus: None,
            shared_tier: None,
            warm_restart: None,
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
            MIB..=MAX_CAPACITY_BYTES,
        );
        let object_limit = MAX_OBJECT_BYTES.min(self.max_capacity_bytes.max(1));
        if !(1..=object_limit).contains(&self.max_object_bytes) {
            v.push(
                "max_object_bytes",
                format!(
                    "value {} is outside 1..={object_limit} (the lesser of 1 GiB and \
                     max_capacity_bytes)",
                    self.max_object_bytes
                ),
            );
        }
        if let Some(n) = self.max_recording_bytes {
            let low = self.max_object_bytes.min(MAX_RECORDING_BYTES);
            if !(low..=MAX_RECORDING_BYTES).contains(&n) {
                v.push(
                    "max_recording_bytes",
                    format!(
                        "value {n} is outside {low}..={MAX_RECORDING_BYTES} (at least \
                         max_object_bytes, at most 4 GiB)"
                    ),
                );
            }
        }
        if let Some(n) = self.range_fill_max_bytes
            && n > self.max_object_bytes
        {
            v.push(
                "range_fill_max_bytes",
                format!(
                    "value {n} is outside 0..={} (at most max_object_bytes)",
                    self.max_object_bytes
                ),
            );
        }
        v.check_finite("heuristic_fraction", self.heuristic_fraction);
        v.check_range("heuristic_fraction", self.heuristic_fraction, 0.0..=1.0);
        for (path, d, limit) in [
            ("heuristic_max", self.heuristic_max, MAX_DURATION),
            (
                "stale_while_revalidate",
                self.stale_while_revalidate,
                MAX_DURATION,
            ),
            ("stale_if_error", self.stale_if_error, MAX_DURATION),
            ("coalesce_timeout", self.coalesce_timeout, MAX_WAIT),
            (
                "background_timeout",
                self.background_timeout,
                MAX_BACKGROUND,
            ),
        ] {
            if d > limit {
                v.push(path, format!("value {d:?} exceeds limit {limit:?}"));
            }
        }
        if let Some(t) = self.stale_if_error_timeout
            && (t.is_zero() || t > MAX_WAIT)
        {
            v.push(
                "stale_if_error_timeout",
                format!("value {t:?} must be positive and within limit {MAX_WAIT:?}"),
            );
        }
        if self.background_timeout.is_zero() {
            v.push("background_timeout", "value 0s: must be positive");
        }
        if self.coalesce_timeout.is_zero() {
            v.push(
                "coalesce_timeout",
                "value 0s: must be positive (set coalesce = false to turn coalescing off)",
            );
        }
        v.check_range("max_inflight", self.max_inflight, 1..=MAX_INFLIGHT);
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
                if n.len() > MAX_NAME_LEN {
                    v.push(
                        format!("{list}[{i}]"),
                        format!("{} bytes exceeds limit {MAX_NAME_LEN}", n.len()),
                    );
                } else if HeaderName::from_bytes(n.as_bytes()).is_err() {
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
        if v.check_count(
            "key.drop_query_params",
            "parameters",
            self.key.drop_query_params.len(),
            256,
        ) {
            for (i, p) in self.key.drop_query_params.iter().enumerate() {
                if p.len() > MAX_NAME_LEN {
                    v.push(
                        format!("key.drop_query_params[{i}]"),
                        format!("{} bytes exceeds limit {MAX_NAME_LEN}", p.len()),
                    );
                }
            }
        }
        if let Some(bus) = &self.purge_bus {
            v.merge_under("purge_bus", bus.violations());
        }
        if let Some(tier) = &self.shared_tier {
            v.merge_under("shared_tier", tier.violations());
        }
        if let Some(warm) = &self.warm_restart {
            let mut w = warm.violations();
            if warm.max_bytes > self.max_capacity_bytes {
                w.push(
                    "max_bytes",
                    format!(
                        "value {} exceeds max_capacity_bytes ({}): a snapshot cannot hold more \
                         than the cache",
                        warm.max_bytes, self.max_capacity_bytes
                    ),
                );
            }
            v.merge_under("warm_restart", w);
        }
        v
    }
}

impl CacheConfig {
    /// `max_recording_bytes`, or its default for this `max_object_bytes`.
    pub fn recording_limit(&self) -> u64 {
        self.max_recording_bytes.unwrap_or_else(|| {
            self.max_object_bytes
                .saturating_mul(4)
                .clamp(64 * MIB, MAX_RECORDING_BYTES)
        })
    }
}

impl CacheConfig {
    /// `range_fill_max_bytes`, or its default (`max_object_bytes`); 0 means no range fills.
    pub fn range_fill_limit(&self) -> u64 {
        self.range_fill_max_bytes
            .unwrap_or(self.max_object_bytes)
            .min(self.max_object_bytes)
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
    fn range_fill_max_bytes_is_at_most_max_object_bytes() {
        let cfg = CacheConfig {
            max_object_bytes: 1024,
            range_fill_max_bytes: Some(1025),
            ..CacheConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("range_fill_max_bytes"), "{err}");
        for n in [0, 1024] {
            let cfg = CacheConfig {
                range_fill_max_bytes: Some(n),
                ..cfg.clone()
            };
            assert!(cfg.validate().is_ok(), "{n}");
            assert_eq!(cfg.range_fill_limit(), n);
        }
        assert_eq!(CacheConfig::default().range_fill_limit(), 8 * MIB);
    }

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
    fn edge_safe_defaults() {
        let cfg = CacheConfig::default();
        assert!(
            !cfg.request_directives,
            "clients cannot force origin fetches"
        );
        assert!(
            !cfg.invalidate_on_unsafe,
            "anonymous unsafe requests do not evict"
        );
        assert!(!cfg.heuristic_with_credentials);
        assert_eq!(cfg.set_cookie, SetCookie::Explicit);
        let parsed: CacheConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, cfg);
    }

    #[test]
    fn new_settings_deserialise_and_unknown_values_are_refused() {
        let cfg: CacheConfig = serde_json::from_str(
            r#"{"set_cookie": "replay", "request_directives": true, "pragma_no_cache": false,
                "invalidate_on_unsafe": true, "heuristic_with_credentials": true}"#,
        )
        .unwrap();
        assert_eq!(cfg.set_cookie, SetCookie::Replay);
        assert!(cfg.request_directives && cfg.invalidate_on_unsafe);
        assert!(cfg.heuristic_with_credentials && !cfg.pragma_no_cache);
        cfg.validate().unwrap();
        for mode in ["explicit", "never", "replay"] {
            let cfg: CacheConfig =
                serde_json::from_str(&format!(r#"{{"set_cookie": "{mode}"}}"#)).unwrap();
            cfg.validate().unwrap();
        }
        let err = serde_json::from_str::<CacheConfig>(r#"{"set_cookie": "strip"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant"), "{err}");
    }

    #[test]
    fn numeric_settings_have_upper_bounds_naming_field_limit_and_value() {
        let gib = 1024 * MIB;
        let cases: Vec<(CacheConfig, &str, &str, &str)> = vec![
            (
                CacheConfig {
                    max_capacity_bytes: 17 * gib,
                    max_object_bytes: MIB,
                    ..CacheConfig::default()
                },
                "max_capacity_bytes",
                "17179869184",
                "18253611008",
            ),
            (
                CacheConfig {
                    max_capacity_bytes: 16 * gib,
                    max_object_bytes: 2 * gib,
                    ..CacheConfig::default()
                },
                "max_object_bytes",
                "1073741824",
                "2147483648",
            ),
            (
                CacheConfig {
                    max_capacity_bytes: 64 * MIB,
                    max_object_bytes: 65 * MIB,
                    ..CacheConfig::default()
                },
                "max_object_bytes",
                "67108864",
                "68157440",
            ),
            (
                CacheConfig {
                    max_recording_bytes: Some(5 * gib),
                    ..CacheConfig::default()
                },
                "max_recording_bytes",
                "4294967296",
                "5368709120",
            ),
            (
                CacheConfig {
                    max_recording_bytes: Some(MIB),
                    ..CacheConfig::default()
                },
                "max_recording_bytes",
                "8388608..=",
                "1048576",
            ),
            (
                CacheConfig {
                    max_inflight: 100_000,
                    ..CacheConfig::default()
                },
                "max_inflight",
                "65536",
                "100000",
            ),
            (
                CacheConfig {
                    coalesce_timeout: Duration::from_secs(600),
                    ..CacheConfig::default()
                },
                "coalesce_timeout",
                "300s",
                "600s",
            ),
            (
                CacheConfig {
                    coalesce_timeout: Duration::ZERO,
                    ..CacheConfig::default()
                },
                "coalesce_timeout",
                "must be positive",
                "0s",
            ),
            (
                CacheConfig {
                    stale_if_error_timeout: Some(Duration::from_secs(600)),
                    ..CacheConfig::default()
                },
                "stale_if_error_timeout",
                "300s",
                "600s",
            ),
            (
                CacheConfig {
                    background_timeout: Duration::from_secs(7200),
                    ..CacheConfig::default()
                },
                "background_timeout",
                "3600s",
                "7200s",
            ),
            (
                CacheConfig {
                    heuristic_max: Duration::from_secs(400 * 24 * 3600),
                    ..CacheConfig::default()
                },
                "heuristic_max",
                "31536000s",
                "34560000s",
            ),
            (
                CacheConfig {
                    max_tags_per_object: 2000,
                    ..CacheConfig::default()
                },
                "max_tags_per_object",
                "1024",
                "2000",
            ),
        ];
        for (cfg, field, limit, value) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("{field}:")), "{field}: {err}");
            assert!(err.contains(limit), "{field} limit: {err}");
            assert!(err.contains(value), "{field} value: {err}");
        }
        // The recording budget's default follows the object limit.
        assert_eq!(CacheConfig::default().recording_limit(), 64 * MIB);
        let big = CacheConfig {
            max_capacity_bytes: MAX_CAPACITY_BYTES,
            max_object_bytes: 512 * MIB,
            ..CacheConfig::default()
        };
        assert_eq!(big.recording_limit(), 2 * gib);
        // The limits themselves are accepted.
        CacheConfig {
            max_capacity_bytes: MAX_CAPACITY_BYTES,
            max_object_bytes: MAX_OBJECT_BYTES,
            max_inflight: MAX_INFLIGHT,
            coalesce_timeout: MAX_WAIT,
            stale_if_error_timeout: Some(MAX_WAIT),
            background_timeout: MAX_BACKGROUND,
            max_recording_bytes: Some(MAX_RECORDING_BYTES),
            ..CacheConfig::default()
        }
        .validate()
        .unwrap();
        let long = CacheConfig {
            key: KeyConfig {
                drop_query_params: vec!["p".repeat(300)],
                ..KeyConfig::default()
            },
            targeted_fields: vec!["f".repeat(300)],
            ..CacheConfig::default()
        };
        let err = long.validate().unwrap_err().to_string();
        assert!(
            err.contains("key.drop_query_params[0]: 300 bytes exceeds limit 256"),
            "{err}"
        );
        assert!(
            err.contains("targeted_fields[0]: 300 bytes exceeds limit 256"),
            "{err}"
        );
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
