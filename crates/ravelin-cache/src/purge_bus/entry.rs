//! One purge as a stream entry, and the stream's replies read as untrusted input.
//!
//! An entry is the field list `v 1 kind <url|tag|key> target <…> origin <instance> at <unix ms>`.
//! Anything in the stream may have been written by another version, another program or an
//! attacker with access to Redis: decoding never panics, bounds every size, and skips (and
//! counts) what it cannot use.

use std::fmt;

use ::redis::Value;

/// The entry format's version (`v`).
const VERSION: &[u8] = b"1";
/// The longest purge target (a URL, a tag or a key) published or accepted.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// The largest entry accepted from the stream, every field name and value counted.
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;
/// The most fields (names and values) an accepted entry has.
const MAX_FIELDS: usize = 32;

/// What a purge removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurgeKind {
    /// Every stored response for an absolute URL ([`CacheHandle::purge_url`](crate::CacheHandle::purge_url)).
    Url,
    /// Every stored response carrying a surrogate tag ([`CacheHandle::purge_tag`](crate::CacheHandle::purge_tag)).
    Tag,
    /// Everything under a primary cache key ([`CacheHandle::purge_key`](crate::CacheHandle::purge_key)).
    Key,
}

impl PurgeKind {
    /// The kind as written in an entry and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::Tag => "tag",
            Self::Key => "key",
        }
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        match bytes {
            b"url" => Some(Self::Url),
            b"tag" => Some(Self::Tag),
            b"key" => Some(Self::Key),
            _ => None,
        }
    }
}

/// One purge on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BusEntry {
    pub(crate) kind: PurgeKind,
    pub(crate) target: String,
    /// The publishing proxy's instance id.
    pub(crate) origin: String,
    /// When it was published (unix milliseconds, the publisher's clock).
    pub(crate) at_ms: u64,
}

impl BusEntry {
    /// The field list for `XADD`.
    pub(crate) fn fields(&self) -> [(&'static str, Vec<u8>); 5] {
        [
            ("v", VERSION.to_vec()),
            ("kind", self.kind.as_str().as_bytes().to_vec()),
            ("target", self.target.as_bytes().to_vec()),
            ("origin", self.origin.as_bytes().to_vec()),
            ("at", self.at_ms.to_string().into_bytes()),
        ]
    }

    /// Reads an entry's fields (name, value pairs as Redis returned them).
    pub(crate) fn decode(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Self, Skip> {
        if fields.len() > MAX_FIELDS {
            return Err(Skip::Oversized);
        }
        let size = fields.iter().fold(0usize, |n, (k, v)| {
            n.saturating_add(k.len()).saturating_add(v.len())
        });
        if size > MAX_ENTRY_BYTES {
            return Err(Skip::Oversized);
        }
        let field = |name: &[u8]| {
            fields
                .iter()
                .find(|(k, _)| k.as_slice() == name)
                .map(|(_, v)| v.as_slice())
        };
        match field(b"v") {
            Some(VERSION) => {}
            Some(_) => return Err(Skip::Version),
            None => return Err(Skip::Malformed),
        }
        let kind = PurgeKind::parse(field(b"kind").ok_or(Skip::Malformed)?).ok_or(Skip::Kind)?;
        let target = field(b"target").ok_or(Skip::Malformed)?;
        if target.is_empty() {
            return Err(Skip::Malformed);
        }
        if target.len() > MAX_TARGET_BYTES {
            return Err(Skip::Oversized);
        }
        let target = std::str::from_utf8(target).map_err(|_| Skip::Malformed)?;
        let origin = std::str::from_utf8(field(b"origin").ok_or(Skip::Malformed)?)
            .map_err(|_| Skip::Malformed)?;
        let at_ms = std::str::from_utf8(field(b"at").ok_or(Skip::Malformed)?)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(Skip::Malformed)?;
        Ok(Self {
            kind,
            target: target.to_owned(),
            origin: origin.to_owned(),
            at_ms,
        })
    }
}

/// Why an entry read from the stream was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// A field is missing, not UTF-8, or not a number where one is needed.
    Malformed,
    /// Bigger than [`MAX_ENTRY_BYTES`] or [`MAX_TARGET_BYTES`], or too many fields.
    Oversized,
    /// A `kind` this version does not know.
    Kind,
    /// A format version this version does not read.
    Version,
}

impl Skip {
    /// For logs and the `reason` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Oversized => "oversized",
            Self::Kind => "unknown-kind",
            Self::Version => "unknown-version",
        }
    }
}

// === StreamId ===

/// A stream entry ID, `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub(crate) struct StreamId {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl StreamId {
    pub(crate) const ZERO: Self = Self { ms: 0, seq: 0 };

    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(bytes).ok()?;
        let (ms, seq) = s.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

// === replies ===

/// One entry as `XREAD` returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub(crate) id: StreamId,
    /// The fields, or `None` when they were not a list of name/value pairs.
    pub(crate) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// The bytes of a string reply.
fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The items of a list reply (arrays, sets and RESP3 pushes alike).
fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// The entries of an `XREAD … STREAMS <one stream> <id>` reply: empty for a timeout (nil).
/// A reply of the wrong shape is an error (the caller reconnects); an entry whose fields are
/// not pairs is returned with `fields: None` so that the reader moves past it.
pub(crate) fn parse_xread(value: &Value) -> Result<Vec<RawEntry>, &'static str> {
    let entries = match value {
        Value::Nil => return Ok(Vec::new()),
        // RESP3: a map of stream name to entries.
        Value::Map(streams) => match streams.first() {
            Some((_, entries)) => entries,
            None => return Ok(Vec::new()),
        },
        // RESP2: [[name, entries]].
        other => {
            let streams = items(other).ok_or("XREAD reply is not a list")?;
            let Some(first) = streams.first() else {
                return Ok(Vec::new());
            };
            let pair = items(first).ok_or("XREAD stream is not a pair")?;
            pair.get(1).ok_or("XREAD stream has no entries")?
        }
    };
    parse_entries(entries)
}

/// A list of entries, as `XRANGE` returns it (and `XREAD` for each stream).
pub(crate) fn parse_entries(entries: &Value) -> Result<Vec<RawEntry>, &'static str> {
    let entries = items(entries).ok_or("entries are not a list")?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let parts = items(entry).ok_or("an entry is not a list")?;
        let id = parts
            .first()
            .and_then(bytes)
            .and_then(StreamId::parse)
            .ok_or("an entry has no valid ID")?;
        out.push(RawEntry {
            id,
            fields: parts.get(1).and_then(field_pairs),
        });
    }
    Ok(out)
}

fn field_pairs(value: &Value) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if let Value::Map(pairs) = value {
        return pairs
            .iter()
            .map(|(k, v)| Some((bytes(k)?.to_vec(), bytes(v)?.to_vec())))
            .collect();
    }
    let flat = items(value)?;
    if flat.len() % 2 != 0 || flat.len() > MAX_FIELDS.saturating_mul(2) {
        // Too many fields: keep none, and let decoding call it malformed.
        return None;
    }
    flat.chunks_exact(2)
        .map(|pair| match pair {
            [k, v] => Some((bytes(k)?.to_vec(), bytes(v)?.to_vec())),
            _ => None,
        })
        .collect()
}

/// What `XINFO STREAM` says about the stream, as far as catching up needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StreamInfo {
    /// The newest ID ever generated.
    pub(crate) last_generated: StreamId,
    /// Entries in the stream now.
    pub(crate) length: u64,
    /// Entries ever added (Redis 7.0 and later): more than `length` once any was trimmed.
    pub(crate) entries_added: Option<u64>,
    /// The oldest entry still in the stream.
    pub(crate) first_entry: Option<StreamId>,
}

/// Reads an `XINFO STREAM` reply (a flat list of names and values, or a RESP3 map).
pub(crate) fn parse_xinfo(value: &Value) -> Result<StreamInfo, &'static str> {
    let pairs: Vec<(&Value, &Value)> = match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        other => {
            let flat = items(other).ok_or("XINFO reply is not a list")?;
            flat.chunks_exact(2)
                .filter_map(|pair| match pair {
                    [k, v] => Some((k, v)),
                    _ => None,
                })
                .collect()
        }
    };
    let mut info = StreamInfo::default();
    let mut seen_last = false;
    for (name, value) in pairs {
        match bytes(name) {
            Some(b"last-generated-id") => {
                info.last_generated = bytes(value)
                    .and_then(StreamId::parse)
                    .ok_or("XINFO last-generated-id is not an ID")?;
                seen_last = true;
            }
            Some(b"length") => {
                info.length = match value {
                    Value::Int(n) => u64::try_from(*n).unwrap_or(0),
                    _ => 0,
                };
            }
            Some(b"entries-added") => {
                info.entries_added = match value {
                    Value::Int(n) => u64::try_from(*n).ok(),
                    _ => None,
                };
            }
            Some(b"first-entry") => {
                info.first_entry = items(value)
                    .and_then(|e| e.first())
                    .and_then(bytes)
                    .and_then(StreamId::parse);
            }
            _ => {}
        }
    }
    if !seen_last {
        return Err("XINFO reply has no last-generated-id");
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> BusEntry {
        BusEntry {
            kind: PurgeKind::Tag,
            target: "product-7".into(),
            origin: "edge-a".into(),
            at_ms: 1_700_000_000_123,
        }
    }

    fn owned(e: &BusEntry) -> Vec<(Vec<u8>, Vec<u8>)> {
        e.fields()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect()
    }

    #[test]
    fn an_entry_round_trips() {
        for kind in [PurgeKind::Url, PurgeKind::Tag, PurgeKind::Key] {
            let e = BusEntry { kind, ..entry() };
            assert_eq!(BusEntry::decode(&owned(&e)), Ok(e));
        }
    }

    #[test]
    fn bad_entries_are_skipped_with_a_reason() {
        let mut fields = owned(&entry());
        fields[1].1 = b"everything".to_vec();
        assert_eq!(BusEntry::decode(&fields), Err(Skip::Kind));
        let mut fields = owned(&entry());
        fields[0].1 = b"2".to_vec();
        assert_eq!(BusEntry::decode(&fields), Err(Skip::Version));
        let mut fields = owned(&entry());
        fields[2].1 = vec![b'x'; MAX_TARGET_BYTES + 1];
        assert_eq!(BusEntry::decode(&fields), Err(Skip::Oversized));
        let mut fields = owned(&entry());
        fields[2].1 = vec![0xff, 0xfe];
        assert_eq!(BusEntry::decode(&fields), Err(Skip::Malformed));
        let mut fields = owned(&entry());
        fields[4].1 = b"-1".to_vec();
        assert_eq!(BusEntry::decode(&fields), Err(Skip::Malformed));
        let mut fields = owned(&entry());
        fields.push((b"junk".to_vec(), vec![0; MAX_ENTRY_BYTES]));
        assert_eq!(BusEntry::decode(&fields), Err(Skip::Oversized));
        assert_eq!(BusEntry::decode(&[]), Err(Skip::Malformed));
        // Unknown extra fields are ignored (a later version may add some).
        let mut fields = owned(&entry());
        fields.push((b"reason".to_vec(), b"deploy".to_vec()));
        assert_eq!(BusEntry::decode(&fields), Ok(entry()));
    }

    #[test]
    fn xread_replies_are_read_defensively() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![bulk("5-1"), Value::Array(vec![bulk("v"), bulk("1")])]),
                // Odd field count: kept with no fields, so the reader moves past it.
                Value::Array(vec![bulk("6-0"), Value::Array(vec![bulk("v")])]),
            ]),
        ])]);
        let entries = parse_xread(&reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, StreamId { ms: 5, seq: 1 });
        assert_eq!(
            entries[0].fields,
            Some(vec![(b"v".to_vec(), b"1".to_vec())])
        );
        assert_eq!(entries[1].fields, None);
        assert_eq!(parse_xread(&Value::Nil).unwrap(), vec![]);
        assert!(parse_xread(&Value::Int(3)).is_err());
        assert!(parse_xread(&Value::Array(vec![Value::Array(vec![bulk("s")])])).is_err());
    }

    #[test]
    fn xinfo_replies_give_the_ids_catching_up_needs() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            bulk("length"),
            Value::Int(2),
            bulk("last-generated-id"),
            bulk("9-0"),
            bulk("entries-added"),
            Value::Int(7),
            bulk("first-entry"),
            Value::Array(vec![bulk("4-0"), Value::Array(vec![])]),
        ]);
        let info = parse_xinfo(&reply).unwrap();
        assert_eq!(info.last_generated, StreamId { ms: 9, seq: 0 });
        assert_eq!((info.length, info.entries_added), (2, Some(7)));
        assert_eq!(info.first_entry, Some(StreamId { ms: 4, seq: 0 }));
        assert!(parse_xinfo(&Value::Array(vec![])).is_err());
    }

    #[test]
    fn stream_ids_order_and_print() {
        let a = StreamId::parse(b"10-2").unwrap();
        let b = StreamId::parse(b"10-10").unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-10");
        assert_eq!(StreamId::parse(b"10"), None);
        assert_eq!(StreamId::parse(b"-1-0"), None);
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::BulkString),
            prop_oneof![
                Just("v"),
                Just("1"),
                Just("kind"),
                Just("url"),
                Just("tag"),
                Just("target"),
                Just("origin"),
                Just("at"),
                Just("12-3"),
                Just("last-generated-id"),
            ]
            .prop_map(|s| Value::BulkString(s.as_bytes().to_vec())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        /// Any reply, any fields: decoding answers or skips, never panics.
        #[test]
        fn untrusted_replies_never_panic(reply in value()) {
            if let Ok(entries) = parse_xread(&reply) {
                for e in entries {
                    if let Some(fields) = e.fields {
                        let _ = BusEntry::decode(&fields);
                    }
                }
            }
            let _ = parse_xinfo(&reply);
            let _ = parse_entries(&reply);
        }

        #[test]
        fn arbitrary_fields_decode_or_skip(
            fields in proptest::collection::vec(
                (
                    prop_oneof![Just(b"v".to_vec()), Just(b"kind".to_vec()), Just(b"target".to_vec()),
                                Just(b"origin".to_vec()), Just(b"at".to_vec()),
                                proptest::collection::vec(any::<u8>(), 0..8)],
                    proptest::collection::vec(any::<u8>(), 0..64),
                ),
                0..40,
            )
        ) {
            if let Ok(e) = BusEntry::decode(&fields) {
                prop_assert!(!e.target.is_empty() && e.target.len() <= MAX_TARGET_BYTES);
            }
        }

        #[test]
        fn every_valid_entry_round_trips(
            kind in prop_oneof![Just(PurgeKind::Url), Just(PurgeKind::Tag), Just(PurgeKind::Key)],
            target in "\\PC{1,200}",
            origin in "[a-z0-9:.-]{0,40}",
            at_ms in any::<u64>(),
        ) {
            let e = BusEntry { kind, target, origin, at_ms };
            prop_assert_eq!(BusEntry::decode(&owned(&e)), Ok(e));
        }
    }
}
