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
pub use error::{BodyError, BoxError, ConfigError, PurgeError};
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

    /// Reads `data` as `Surrogate-Control` field lines (split at `\n`) as this cache does: for
    /// its own device token, then as a response going downstream with this cache's members
    /// removed. Never a panic. Returns whether the device token compares without case, and
    /// whether what is left after removing this cache's members says nothing to this cache and
    /// is left alone by a second removal (the fuzz target asserts it): a downstream surrogate
    /// with the same token must not read directives this cache already consumed.
    pub fn surrogate_control(data: &[u8]) -> bool {
        let name = HeaderName::from_static("surrogate-control");
        let mut headers = HeaderMap::new();
        for line in data.split(|b| *b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append(name.clone(), value);
            }
        }
        let parse = |headers: &HeaderMap, device: &str| {
            crate::directives::parse_surrogate_control(headers.get_all(&name), device)
        };
        let ours = parse(&headers, "ravelin");
        let case_blind = parse(&headers, "RaVeLiN") == ours;
        let mut stripped = headers.clone();
        crate::headers::strip_surrogate_control(&mut stripped, "ravelin");
        let consumed = parse(&stripped, "ravelin").is_none();
        let mut again = stripped.clone();
        crate::headers::strip_surrogate_control(&mut again, "ravelin");
        case_blind && consumed && again == stripped
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

    /// Reads `data` as a Redis reply on the wire (RESP2 or RESP3, untrusted: anyone with access
    /// to Redis can write to the stream) through every purge-bus reply parser: `XREAD`,
    /// `XRANGE` and `XINFO STREAM`, then each entry's fields as a purge. Never a panic. Returns
    /// whether every entry ID prints back to itself and every purge that decodes encodes to
    /// fields that decode to the same purge (the fuzz target asserts it).
    #[cfg(feature = "redis")]
    pub fn bus_reply(data: &[u8]) -> bool {
        use crate::purge_bus::entry::{self, BusEntry, RawEntry, StreamId};

        fn entries_hold(entries: &[RawEntry]) -> bool {
            entries.iter().all(|raw| {
                let id_round_trips = StreamId::parse(raw.id.to_string().as_bytes()) == Some(raw.id);
                let purge_round_trips = match raw.fields.as_deref().map(BusEntry::decode) {
                    Some(Ok(purge)) => {
                        let fields: Vec<(Vec<u8>, Vec<u8>)> = purge
                            .fields()
                            .into_iter()
                            .map(|(name, value)| (name.as_bytes().to_vec(), value))
                            .collect();
                        BusEntry::decode(&fields) == Ok(purge)
                    }
                    Some(Err(_)) | None => true,
                };
                id_round_trips && purge_round_trips
            })
        }

        let Ok(value) = ::redis::parse_redis_value(data) else {
            return true;
        };
        let xread = entry::parse_xread(&value).map_or(true, |e| entries_hold(&e));
        let xrange = entry::parse_entries(&value).map_or(true, |e| entries_hold(&e));
        let xinfo = entry::parse_xinfo(&value).map_or(true, |info| {
            let id = info.last_generated;
            StreamId::parse(id.to_string().as_bytes()) == Some(id)
                && info.first_entry.is_none_or(|first| {
                    StreamId::parse(first.to_string().as_bytes()) == Some(first)
                })
        });
        xread && xrange && xinfo
    }
}
