//! [`SharedEntry`]: a stored response as another proxy needs it, and its versioned binary
//! encoding. A value read from Redis is untrusted input: [`SharedEntry::decode`] checks every
//! length against what remains and against fixed bounds, and never panics.
//!
//! Format, version 1 (integers big-endian; `bytes16`/`bytes32` = a `u16`/`u32` length, then the
//! bytes):
//!
//! ```text
//! magic "RVST" | version u8 = 1 | flags u8 = 0
//! key                    bytes32   the tier key it was written under (checked on read)
//! status                 u16       100..=999
//! request_time_ms        u64       ms since the Unix epoch (the writer's clock)
//! response_time_ms       u64
//! corrected_initial_age_ms u64     RFC 9111 §4.2.3, at response_time
//! headers                u16 count, then (name bytes16, value bytes32) each
//! vary                   u16 count, then (name bytes16, present u8 0|1, [value bytes32]) each
//! tags                   u16 count, then (tag bytes16, UTF-8) each
//! body                   bytes32
//! (nothing after the body)
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::key::Variant;

/// The first bytes of every encoded entry.
pub const MAGIC: &[u8; 4] = b"RVST";
/// The encoding version written and the only one read.
pub const VERSION: u8 = 1;
/// The longest tier key (a primary cache key, possibly with a variant suffix).
pub const MAX_KEY_BYTES: usize = 8 * 1024;
/// The most header fields in one entry.
pub const MAX_HEADERS: usize = 1024;
/// The most `Vary` selecting fields.
pub const MAX_VARY: usize = 64;
/// The most surrogate tags (as `[cache] max_tags_per_object` allows).
pub const MAX_TAGS: usize = 1024;
/// The longest surrogate tag.
pub const MAX_TAG_BYTES: usize = 1024;
/// The longest header name.
const MAX_NAME_BYTES: usize = 1024;
/// No time or age is past this (about 1000 years after 1970): a larger value is malformed.
const MAX_TIME_MS: u64 = 1000 * 365 * 24 * 3600 * 1000;

/// A response stored in the shared tier: what a cache needs to serve it (status, header
/// fields, body) and to keep RFC 9111 semantics on another proxy (the times from which age
/// and freshness are recomputed, the `Vary` selection, the purge tags).
///
/// The receiving cache recomputes the freshness lifetime from `headers` with its own
/// configuration (as it would for a response from the origin), and the age from
/// `corrected_initial_age` and `response_time`: [`current_age`](Self::current_age). Times are
/// the writer's wall clock, so the proxies' clocks must agree (NTP) to the precision that
/// matters for the freshness lifetimes served; a reader whose clock is behind counts no
/// resident time (never a negative age).
///
/// Times and the age travel in whole milliseconds (finer parts are dropped by the encoding).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedEntry {
    /// The status code.
    pub status: StatusCode,
    /// The stored header fields (as the cache stores them: no `Age`, no hop-by-hop fields).
    pub headers: HeaderMap,
    /// The complete body.
    pub body: Bytes,
    /// When the request that fetched the response was sent (RFC 9111 §4.2.3 `request_time`).
    pub request_time: SystemTime,
    /// When the response was received (`response_time`).
    pub response_time: SystemTime,
    /// `corrected_initial_age` (§4.2.3) as computed by the cache that fetched it, from the
    /// response's `Date` and `Age` (the stored headers no longer carry `Age`).
    pub corrected_initial_age: Duration,
    /// The variant's selecting fields and the values the request that fetched it had (absent:
    /// `None`); empty without `Vary`. See [`selects`](Self::selects).
    pub vary: Vec<(HeaderName, Option<Bytes>)>,
    /// The surrogate tags the response was stored with, for purge by tag.
    pub tags: Vec<String>,
}

/// Why a value read from the shared tier was refused (it is then a miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The value ends before a field it announces.
    #[error("truncated")]
    Truncated,
    /// Not an entry of this format.
    #[error("bad magic")]
    BadMagic,
    /// A version (or flags) this proxy does not read.
    #[error("unknown version")]
    UnknownVersion,
    /// Larger than the configured bound, or a count or length past its fixed bound.
    #[error("oversized")]
    Oversized,
    /// Written under another key.
    #[error("key mismatch")]
    KeyMismatch,
    /// A status, header field, tag or time that is not valid.
    #[error("invalid field")]
    Invalid,
    /// Bytes after the body.
    #[error("trailing bytes")]
    Trailing,
}

impl DecodeError {
    /// For logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadMagic => "bad-magic",
            Self::UnknownVersion => "unknown-version",
            Self::Oversized => "oversized",
            Self::KeyMismatch => "key-mismatch",
            Self::Invalid => "invalid",
            Self::Trailing => "trailing",
        }
    }
}

/// Why an entry cannot be encoded (it is then not shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The key, a header name, the tags or the `Vary` fields exceed a fixed bound, or the
    /// encoding exceeds the given limit.
    #[error("entry exceeds a bound of the encoding")]
    TooLarge,
    /// A tag is empty (a reader would refuse the entry).
    #[error("empty tag")]
    EmptyTag,
}

// === impl SharedEntry ===

impl SharedEntry {
    /// An entry without `Vary` and tags, received at `response_time` with no initial age.
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Self {
        Self {
            status,
            headers,
            body,
            request_time,
            response_time,
            corrected_initial_age: Duration::ZERO,
            vary: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// RFC 9111 §4.2.3 `current_age` at `now`: `corrected_initial_age + (now − response_time)`
    /// (no resident time when `now` is before `response_time`).
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let resident = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.corrected_initial_age.saturating_add(resident)
    }

    /// Whether `request` selects this variant (RFC 9111 §4.1), comparing the selecting fields
    /// as the local cache does; always true without `Vary`.
    pub fn selects(&self, request: &HeaderMap) -> bool {
        if self.vary.is_empty() {
            return true;
        }
        let variant = Variant {
            names: self.vary.iter().map(|(n, _)| n.clone()).collect(),
            values: self
                .vary
                .iter()
                .map(|(_, v)| v.as_ref().map(|v| Box::<[u8]>::from(&v[..])))
                .collect(),
        };
        variant.matches(request)
    }

    /// The encoded size in bytes under `key`.
    pub fn encoded_len(&self, key: &[u8]) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| 2 + n.as_str().len() + 4 + v.len())
            .sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|(n, v)| 2 + n.as_str().len() + 1 + v.as_ref().map_or(0, |v| 4 + v.len()))
            .sum();
        let tags: usize = self.tags.iter().map(|t| 2 + t.len()).sum();
        4 + 1
            + 1
            + 4
            + key.len()
            + 2
            + 8 * 3
            + 2
            + headers
            + 2
            + vary
            + 2
            + tags
            + 4
            + self.body.len()
    }

    /// Encodes the entry under `key`, refusing one whose encoding would exceed `limit` bytes or
    /// a fixed bound of the format.
    ///
    /// # Errors
    /// [`EncodeError::TooLarge`].
    pub fn encode(&self, key: &[u8], limit: usize) -> Result<Vec<u8>, EncodeError> {
        let len = self.encoded_len(key);
        if len > limit
            || key.len() > MAX_KEY_BYTES
            || self.headers.len() > MAX_HEADERS
            || self.vary.len() > MAX_VARY
            || self.tags.len() > MAX_TAGS
            || self.tags.iter().any(|t| t.len() > MAX_TAG_BYTES)
            || self
                .headers
                .keys()
                .any(|n| n.as_str().len() > MAX_NAME_BYTES)
            || self
                .vary
                .iter()
                .any(|(n, _)| n.as_str().len() > MAX_NAME_BYTES)
            || self.body.len() > u32::MAX as usize
        {
            return Err(EncodeError::TooLarge);
        }
        if self.tags.iter().any(String::is_empty) {
            return Err(EncodeError::EmptyTag);
        }
        let mut w = Writer(Vec::with_capacity(len));
        w.0.extend_from_slice(MAGIC);
        w.0.extend_from_slice(&[VERSION, 0]);
        w.bytes32(key)?;
        w.0.extend_from_slice(&self.status.as_u16().to_be_bytes());
        for t in [self.request_time, self.response_time] {
            w.u64(ms_since_epoch(t));
        }
        w.u64(
            u64::try_from(self.corrected_initial_age.as_millis())
                .unwrap_or(u64::MAX)
                .min(MAX_TIME_MS),
        );
        w.count(self.headers.len())?;
        for (name, value) in &self.headers {
            w.bytes16(name.as_str().as_bytes())?;
            w.bytes32(value.as_bytes())?;
        }
        w.count(self.vary.len())?;
        for (name, value) in &self.vary {
            w.bytes16(name.as_str().as_bytes())?;
            match value {
                Some(v) => {
                    w.0.push(1);
                    w.bytes32(v)?;
                }
                None => w.0.push(0),
            }
        }
        w.count(self.tags.len())?;
        for tag in &self.tags {
            w.bytes16(tag.as_bytes())?;
        }
        w.bytes32(&self.body)?;
        Ok(w.0)
    }

    /// Decodes a value read under `key`, refusing anything malformed, truncated, longer than
    /// `limit` bytes, of another version or written under another key. Never panics.
    ///
    /// # Errors
    /// The [`DecodeError`] that names what was wrong.
    pub fn decode(key: &[u8], value: &[u8], limit: usize) -> Result<Self, DecodeError> {
        if value.len() > limit {
            return Err(DecodeError::Oversized);
        }
        let mut r = Reader(value);
        if r.take(4)? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if r.take(2)? != [VERSION, 0] {
            return Err(DecodeError::UnknownVersion);
        }
        if r.bytes32()? != key {
            return Err(DecodeError::KeyMismatch);
        }
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Invalid)?;
        let request_time = r.time()?;
        let response_time = r.time()?;
        let age = r.u64()?;
        if age > MAX_TIME_MS {
            return Err(DecodeError::Invalid);
        }
        let corrected_initial_age = Duration::from_millis(age);

        let n = r.count(MAX_HEADERS)?;
        let mut headers = HeaderMap::with_capacity(n.min(64));
        for _ in 0..n {
            let name = r.name()?;
            let value = HeaderValue::from_bytes(r.bytes32()?).map_err(|_| DecodeError::Invalid)?;
            headers
                .try_append(name, value)
                .map_err(|_| DecodeError::Oversized)?;
        }
        let n = r.count(MAX_VARY)?;
        let mut vary = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.name()?;
            let value = match r.take(1)? {
                [0] => None,
                [1] => Some(Bytes::copy_from_slice(r.bytes32()?)),
                _ => return Err(DecodeError::Invalid),
            };
            vary.push((name, value));
        }
        let n = r.count(MAX_TAGS)?;
        let mut tags = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let raw = r.bytes16()?;
            if raw.is_empty() || raw.len() > MAX_TAG_BYTES {
                return Err(DecodeError::Invalid);
            }
            let tag = std::str::from_utf8(raw).map_err(|_| DecodeError::Invalid)?;
            tags.push(tag.to_owned());
        }
        let body = Bytes::copy_from_slice(r.bytes32()?);
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing);
        }
        Ok(Self {
            status,
            headers,
            body,
            request_time,
            response_time,
            corrected_initial_age,
            vary,
            tags,
        })
    }
}

fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
        .min(MAX_TIME_MS)
}

struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn count(&mut self, n: usize) -> Result<(), EncodeError> {
        let n = u16::try_from(n).map_err(|_| EncodeError::TooLarge)?;
        self.0.extend_from_slice(&n.to_be_bytes());
        Ok(())
    }

    fn bytes16(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        self.count(b.len())?;
        self.0.extend_from_slice(b);
        Ok(())
    }

    fn bytes32(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let n = u32::try_from(b.len()).map_err(|_| EncodeError::TooLarge)?;
        self.0.extend_from_slice(&n.to_be_bytes());
        self.0.extend_from_slice(b);
        Ok(())
    }
}

/// Reads from the front of a slice; every read checks what remains.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::Truncated)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    fn time(&mut self) -> Result<SystemTime, DecodeError> {
        let ms = self.u64()?;
        if ms > MAX_TIME_MS {
            return Err(DecodeError::Invalid);
        }
        UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .ok_or(DecodeError::Invalid)
    }

    fn count(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(DecodeError::Oversized);
        }
        Ok(n)
    }

    fn bytes16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    fn bytes32(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(u32::from_be_bytes(self.array()?))
            .map_err(|_| DecodeError::Oversized)?;
        self.take(n)
    }

    fn name(&mut self) -> Result<HeaderName, DecodeError> {
        let raw = self.bytes16()?;
        if raw.len() > MAX_NAME_BYTES {
            return Err(DecodeError::Oversized);
        }
        HeaderName::from_bytes(raw).map_err(|_| DecodeError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 1 << 20;

    fn sample() -> SharedEntry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        SharedEntry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello"),
            request_time: t,
            response_time: t + Duration::from_millis(40),
            corrected_initial_age: Duration::from_secs(3),
            vary: vec![
                (
                    HeaderName::from_static("accept-encoding"),
                    Some(Bytes::from_static(b"gzip")),
                ),
                (HeaderName::from_static("accept-language"), None),
            ],
            tags: vec!["product-1".into(), "all".into()],
        }
    }

    #[test]
    fn round_trips_and_checks_the_key() {
        let e = sample();
        let bytes = e.encode(b"k", LIMIT).unwrap();
        assert_eq!(bytes.len(), e.encoded_len(b"k"));
        assert_eq!(SharedEntry::decode(b"k", &bytes, LIMIT).unwrap(), e);
        assert_eq!(
            SharedEntry::decode(b"other", &bytes, LIMIT),
            Err(DecodeError::KeyMismatch)
        );
        assert_eq!(
            SharedEntry::decode(b"k", &bytes, bytes.len() - 1),
            Err(DecodeError::Oversized)
        );
        assert_eq!(e.encode(b"k", bytes.len() - 1), Err(EncodeError::TooLarge));
    }

    #[test]
    fn refuses_truncation_trailing_bytes_and_other_versions() {
        let bytes = sample().encode(b"k", LIMIT).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                SharedEntry::decode(b"k", &bytes[..cut], LIMIT).is_err(),
                "{cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            SharedEntry::decode(b"k", &longer, LIMIT),
            Err(DecodeError::Trailing)
        );
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(
            SharedEntry::decode(b"k", &v2, LIMIT),
            Err(DecodeError::UnknownVersion)
        );
        let mut magic = bytes;
        magic[0] = b'X';
        assert_eq!(
            SharedEntry::decode(b"k", &magic, LIMIT),
            Err(DecodeError::BadMagic)
        );
    }

    #[test]
    fn age_grows_with_resident_time_and_never_goes_negative() {
        let e = sample();
        assert_eq!(
            e.current_age(e.response_time + Duration::from_secs(10)),
            Duration::from_secs(13)
        );
        assert_eq!(
            e.current_age(e.response_time - Duration::from_secs(10)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn selects_its_variant_only() {
        let e = sample();
        let mut req = HeaderMap::new();
        req.insert("accept-encoding", HeaderValue::from_static("gzip"));
        assert!(e.selects(&req));
        req.insert("accept-language", HeaderValue::from_static("fr"));
        assert!(!e.selects(&req));
        let mut other = HeaderMap::new();
        other.insert("accept-encoding", HeaderValue::from_static("br"));
        assert!(!e.selects(&other));
        let plain = SharedEntry {
            vary: Vec::new(),
            ..e
        };
        assert!(plain.selects(&other));
    }

    fn arb_entry() -> impl Strategy<Value = SharedEntry> {
        let header = ("[a-z][a-z0-9-]{0,20}", "[ -~]{0,40}");
        (
            prop::sample::select(vec![200u16, 203, 204, 301, 404, 410, 500, 999]),
            prop::collection::vec(header, 0..10),
            prop::collection::vec(any::<u8>(), 0..200),
            0u64..4_000_000_000_000,
            0u64..100_000,
            0u64..10_000_000,
            prop::collection::vec(("[a-z][a-z-]{0,10}", prop::option::of("[ -~]{0,20}")), 0..4),
            prop::collection::vec("[a-zA-Z0-9_.:-]{1,30}", 0..6),
        )
            .prop_map(|(status, hs, body, req, delay, age, vary, tags)| {
                let mut headers = HeaderMap::new();
                for (n, v) in hs {
                    headers.append(
                        HeaderName::from_bytes(n.as_bytes()).unwrap(),
                        HeaderValue::from_str(&v).unwrap(),
                    );
                }
                let request_time = UNIX_EPOCH + Duration::from_millis(req);
                SharedEntry {
                    status: StatusCode::from_u16(status).unwrap(),
                    headers,
                    body: Bytes::from(body),
                    request_time,
                    response_time: request_time + Duration::from_millis(delay),
                    corrected_initial_age: Duration::from_millis(age),
                    vary: vary
                        .into_iter()
                        .map(|(n, v)| {
                            (
                                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                                v.map(Bytes::from),
                            )
                        })
                        .collect(),
                    tags,
                }
            })
    }

    proptest! {
        #[test]
        fn decode_never_panics(key in prop::collection::vec(any::<u8>(), 0..8),
                               bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = SharedEntry::decode(&key, &bytes, LIMIT);
            // Behind a valid prefix too, so the fuzzing reaches past the magic.
            let mut prefixed = MAGIC.to_vec();
            prefixed.extend_from_slice(&[VERSION, 0]);
            prefixed.extend_from_slice(&u32::try_from(key.len()).unwrap().to_be_bytes());
            prefixed.extend_from_slice(&key);
            prefixed.extend_from_slice(&bytes);
            let _ = SharedEntry::decode(&key, &prefixed, LIMIT);
        }

        #[test]
        fn encode_decode_round_trips(e in arb_entry(), key in prop::collection::vec(any::<u8>(), 0..64)) {
            let bytes = e.encode(&key, LIMIT).unwrap();
            prop_assert_eq!(bytes.len(), e.encoded_len(&key));
            prop_assert_eq!(SharedEntry::decode(&key, &bytes, LIMIT).unwrap(), e);
        }

        #[test]
        fn a_flipped_byte_never_panics(e in arb_entry(), at in any::<prop::sample::Index>(), x in 1u8..) {
            let mut bytes = e.encode(b"k", LIMIT).unwrap();
            let i = at.index(bytes.len());
            bytes[i] ^= x;
            let _ = SharedEntry::decode(b"k", &bytes, LIMIT);
        }
    }
}
