#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod config;
mod date;
pub mod directives;
mod engine;
mod entry;
mod error;
mod fill;
pub mod future;
mod handle;
mod headers;
mod key;
mod layer;
mod policy;
pub mod purge_bus;
mod range;
mod service;
pub mod shared_tier;
mod stats;
mod status;
mod store;
pub mod warm;

pub use body::CacheBody;
pub use config::{CacheConfig, SetCookie};
pub use entry::{Object, StoredResponse, VaryRecord};
pub use error::{BodyError, ConfigError, PurgeError};
pub use handle::CacheHandle;
pub use key::{KeyConfig, QueryMode};
pub use layer::{CacheLayer, CacheLayerBuilder};
pub use service::Cache;
pub use stats::CacheStats;
pub use store::{MemoryStore, Storage, StorageUsage};

// The shared primitives this crate's API takes: the wall clock (`CacheLayerBuilder::clock`), the
// kill switch, and the validation vocabulary `CacheConfig` implements. Re-exported so users need
// no other dependency.
pub use ravelin_primitives::clock::{Clock, ManualClock, WallClock};
pub use ravelin_primitives::{KillSwitch, Validate, Violations};

/// Entry points for the fuzz targets in `fuzz/`: not part of the API.
#[doc(hidden)]
pub mod fuzz_logic {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// Runs every parser of untrusted header text over `data`: directives (both syntaxes),
    /// `Pragma`, HTTP dates, `Age`, `Vary`, entity tags, `If-None-Match`, surrogate tags and
    /// `Range`. None may panic. Returns whether parsing the directives twice gave the same
    /// result (the fuzz target asserts it).
    pub fn parse_all(data: &[u8]) -> bool {
        let Ok(value) = HeaderValue::from_bytes(data) else {
            return true;
        };
        let a = crate::directives::CacheControl::parse([&value]);
        let b = crate::directives::CacheControl::parse([&value]);
        let _ = crate::directives::parse_targeted([&value]);
        let _ = crate::directives::parse_surrogate_control([&value], "ravelin");
        let _ = crate::directives::pragma_no_cache([&value]);
        if let Ok(s) = value.to_str() {
            let _ = crate::date::parse_http_date(s);
        }
        let mut headers = HeaderMap::new();
        for name in [
            "age",
            "vary",
            "etag",
            "if-none-match",
            "surrogate-key",
            "range",
            "if-range",
            "last-modified",
        ] {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
        let _ = crate::headers::age_value(&headers);
        let _ = crate::headers::vary(&headers);
        let tag = crate::headers::etag(&headers);
        let _ = tag
            .as_ref()
            .and_then(crate::headers::EntityTag::to_header_value);
        let _ = crate::headers::if_none_match_matches(&headers, tag.as_ref());
        let _ = crate::headers::surrogate_tags(
            &headers,
            &[HeaderName::from_static("surrogate-key")],
            64,
            256,
        );
        let _ = crate::headers::selecting_value(&headers, &HeaderName::from_static("vary"));
        let _ = crate::range::evaluate(
            headers.get("range"),
            headers.get("if-range"),
            u64::from(data.first().copied().unwrap_or(0)) * 1000,
            tag.as_ref(),
            None,
        );
        a == b
    }

    /// Decodes `data` as a shared-tier value (untrusted: written by another proxy, or by
    /// anyone with access to Redis): the first byte says how much of the rest is the key the
    /// value is read under. Never a panic; a value that decodes must encode back to a value
    /// that decodes to the same entry (the fuzz target asserts it).
    pub fn decode_shared_entry(data: &[u8]) -> bool {
        let Some((&split, rest)) = data.split_first() else {
            return true;
        };
        let (key, value) = rest.split_at(usize::from(split).min(rest.len()));
        let limit = 1 << 20;
        match crate::shared_tier::SharedEntry::decode(key, value, limit) {
            Ok(entry) => entry
                .encode(key, limit)
                .ok()
                .and_then(|bytes| crate::shared_tier::SharedEntry::decode(key, &bytes, limit).ok())
                .is_some_and(|again| again == entry),
            Err(_) => true,
        }
    }
}
