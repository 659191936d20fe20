//! Header handling for a forwarding proxy: hop-by-hop removal (RFC 9110 §7.6.1), `Via`
//! (§7.6.3), `Forwarded` (RFC 7239) and the de-facto `X-Forwarded-*` fields.

use std::net::IpAddr;
use std::sync::LazyLock;

use http::Version;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// The `X-Forwarded-For` field name.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The `X-Forwarded-Proto` field name.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The `X-Forwarded-Host` field name.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The `X-Forwarded-Port` field name.
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// The `X-Forwarded-Prefix` field name (the path prefix a proxy stripped; Spring, ASP.NET).
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// The `X-Real-IP` field name (nginx's single-address variant of `X-Forwarded-For`).
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The fields through which a proxy tells the next hop who the client is and what it asked
/// for. Origins believe them, so only trusted proxies may send them: the
/// [ingress stage](crate::ingress) removes them from every other peer. (A `static`: a `const`
/// array of names is built and dropped at every use.)
pub static FORWARDING_HEADERS: [HeaderName; 7] = [
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
    X_FORWARDED_PORT,
    X_FORWARDED_PREFIX,
    X_REAL_IP,
];

/// Removes the hop-by-hop fields from `headers`: the fixed set of RFC 9110 §7.6.1 (`Connection`,
/// `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`), the hop-specific
/// `Proxy-Authenticate`/`Proxy-Authorization`/`Proxy-Authentication-Info` (§11.7) and
/// `Trailer`, plus every field named in `Connection` (the first
/// [`MAX_CONNECTION_OPTIONS`](ravelin_http::MAX_CONNECTION_OPTIONS) names) — except `Host`: a `Connection: host` is ignored, because a request without
/// `Host` would be routed, cached and forwarded by whatever authority the next reader guesses.
///
/// `TE: trailers` is the one hop-by-hop value that must survive to an HTTP/2 upstream (gRPC
/// needs it): when the client offered `trailers`, it is put back as exactly `te: trailers`.
///
/// `Upgrade` is removed too. An upgrade (WebSocket) request that is passed through gets
/// `Connection: upgrade` and its `Upgrade` back after this removal, from the
/// [ingress stage](crate::ingress) and [`Forward`](crate::Forward), which decide whether it
/// is one; every other request loses them here, so nothing promises a switch no one relays.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_hop_by_hop_except(headers, &[]);
}

/// As [`remove_hop_by_hop`], but `Connection` may not name any of `protected` either (nor
/// `Host`): such tokens are ignored. The [ingress stage](crate::ingress) protects the headers
/// only the edge may set and those it accepts from trusted proxies, so a client cannot use
/// `Connection: x-request-id` to remove a field a later stage adds or relies on.
pub fn remove_hop_by_hop_except(headers: &mut HeaderMap, protected: &[HeaderName]) {
    // One pass over the names present, compared without hashing: most messages carry few or
    // none of these fields, and removing each absent name cost a hash and a probe, ten or more
    // per message, twice per forwarded request (issue 13).
    // Bit i: HOP_BY_HOP[i] is present (a set past 64 names would be removed whole).
    let mut present: u64 = 0;
    let (mut connection, mut te, mut trailer) = (false, false, false);
    for name in headers.keys() {
        if !may_be_hop_by_hop(name) {
            continue;
        }
        if name == header::TRAILER {
            trailer = true;
        } else if let Some(index) = ravelin_http::HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= u32::try_from(index)
                .ok()
                .and_then(|shift| 1u64.checked_shl(shift))
                .unwrap_or(0);
            connection |= name == header::CONNECTION;
            te |= name == header::TE;
        }
    }
    let any = present != 0 || trailer || ravelin_http::HOP_BY_HOP.len() > 64;
    if !any {
        // No `Connection` (so no named options), no `TE`, nothing of the fixed set.
        return;
    }
    let wants_trailers = te
        && headers.get_all(header::TE).iter().any(|v| {
            // `TE: trailers, gzip;q="0.5"`: members split outside quoted-strings, then the
            // coding name before any `;` parameter.
            ravelin_http::split_list(v.as_bytes()).any(|member| {
                ravelin_http::list::split_quoted(member, b';')
                    .next()
                    .is_some_and(|name| {
                        ravelin_http::trim_ows(name).eq_ignore_ascii_case(b"trailers")
                    })
            })
        });
    if connection {
        // The names listed in Connection, read before it is removed: the first
        // MAX_CONNECTION_OPTIONS valid field names count (invalid tokens could not name a
        // field we would forward anyway), and each is looked up among the names present, so
        // the usual `keep-alive` or `close` costs no name built and no hash (issue 13).
        let mut counted = 0;
        let mut named: Vec<HeaderName> = Vec::new();
        'values: for value in headers.get_all(header::CONNECTION) {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = ravelin_http::trim_ows(token);
                // What `HeaderName::from_bytes` accepts: a token, shorter than 64 KiB.
                if token.is_empty()
                    || token.len() >= 1 << 16
                    || !token.iter().all(|&b| ravelin_http::is_tchar(b))
                {
                    continue;
                }
                if counted >= ravelin_http::MAX_CONNECTION_OPTIONS {
                    break 'values;
                }
                counted += 1;
                let Some(name) = headers
                    .keys()
                    .find(|name| name.as_str().as_bytes().eq_ignore_ascii_case(token))
                else {
                    continue;
                };
                // The fixed set goes below anyway.
                if !always_removed(name) && name != header::HOST && !protected.contains(name) {
                    named.push(name.clone());
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    // The one hop-by-hop set, shared with the cache (which never stores those fields), and
    // `Trailer`, which this proxy has always removed too: RFC 2616 §13.5.1 listed it as
    // hop-by-hop; RFC 9110 does not, so the cache keeps it.
    for (index, name) in ravelin_http::HOP_BY_HOP.iter().enumerate() {
        if index >= 64 || present & (1u64 << index) != 0 {
            headers.remove(name);
        }
    }
    if trailer {
        headers.remove(header::TRAILER);
    }
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Bit `n` is set when a name of [`HOP_BY_HOP`](ravelin_http::HOP_BY_HOP) or `Trailer` is `n`
/// bytes long; all bits when a name is 64 bytes or longer (then nothing is skipped). Derived from
/// the list itself, so a name ravelin-http adds to the set is never skipped.
static HOP_BY_HOP_LENGTHS: LazyLock<u64> = LazyLock::new(|| {
    ravelin_http::HOP_BY_HOP
        .iter()
        .chain([&header::TRAILER])
        .try_fold(0u64, |mask, name| {
            let bit = u32::try_from(name.as_str().len())
                .ok()
                .and_then(|len| 1u64.checked_shl(len))?;
            Some(mask | bit)
        })
        .unwrap_or(u64::MAX)
});

/// `false` when `name` cannot be hop-by-hop or `Trailer` because no such name has its length:
/// most names a message carries are skipped by one bit test before the comparisons against the
/// set (a tenth of a forwarded request's header work; issue 13).
fn may_be_hop_by_hop(name: &HeaderName) -> bool {
    let mask = *HOP_BY_HOP_LENGTHS;
    u32::try_from(name.as_str().len())
        .ok()
        .and_then(|len| 1u64.checked_shl(len))
        .map_or(mask == u64::MAX, |bit| mask & bit != 0)
}

/// Whether [`remove_hop_by_hop`] removes `name` whatever `Connection` says: the shared
/// hop-by-hop set and `Trailer`. Standard names compare by their tag, the others by bytes
/// after a length check: no hashing.
fn always_removed(name: &HeaderName) -> bool {
    name == header::TRAILER || ravelin_http::is_hop_by_hop(name)
}

/// The `received-protocol` of RFC 9110 §7.6.3 for `version`: `1.0`, `1.1`, `2`, `3`.
pub fn via_protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Appends `Via: <protocol> <pseudonym>` to `headers` (as a new field line, which is equivalent
/// to appending to the list, §5.3).
pub fn append_via(headers: &mut HeaderMap, version: Version, pseudonym: &str) {
    let protocol = via_protocol(version);
    let mut value = String::with_capacity(protocol.len() + 1 + pseudonym.len());
    value.push_str(protocol);
    value.push(' ');
    value.push_str(pseudonym);
    if let Some(value) = owned_value(value) {
        headers.append(header::VIA, value);
    }
}

/// `text` as a header value without copying it once more (issue 13: one allocation per built
/// field value, the string's own, when it was allocated at its exact length); `None` when it
/// is not a valid field value.
fn owned_value(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text.into_bytes())).ok()
}

/// Adds the forwarding fields for a request received from `peer` over `scheme`:
///
/// - `X-Forwarded-For`: the peer address is appended to the existing list (an origin that
///   trusts this proxy reads the last entry; entries before it came from the client and are
///   only as trustworthy as the hops that added them);
/// - `Forwarded` (RFC 7239): an element `for=…;proto=…;host=…` is appended to the existing
///   list, IPv6 addresses quoted and bracketed (§6), values quoted when they are not tokens
///   (`host="example.com:8080"`); without a peer address the element has no `for`;
/// - `X-Forwarded-Proto`: replaced by the scheme this proxy received the request on;
/// - `X-Forwarded-Host`: replaced by the host the client asked for, when there is one
///   ([`Forward`](crate::Forward) passes the [`RequestIdentity`](ravelin_http::RequestIdentity)'s
///   authority).
///
/// Lists are written as one field line (several lines are equivalent, RFC 9110 §5.3, but some
/// origins read only the first); existing lines that are not visible ASCII are dropped.
///
/// A malformed `Forwarded` element (a quote that is not a parameter's whole, closed value, such
/// as an unterminated quoted-string; unquoted values are not judged) is dropped with everything
/// left of it, lines before included; the well-formed elements right of it are kept as they are. Kept in front of the
/// element appended here, an open quote would swallow it and every real hop, and the next
/// reader would take the `for` a client wrote; a reader walking right to left stops at such an
/// element anyway, so what is dropped was never believed. A well-formed list is kept byte for
/// byte.
///
/// Whether the existing entries can be believed is decided before this runs: the ingress stage
/// removes `Forwarded` and `X-Forwarded-*` from peers that are not trusted proxies.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    scheme: &str,
    original_host: Option<&HeaderValue>,
) {
    if let Some(ip) = peer {
        append_to_list(headers, &X_FORWARDED_FOR, IpText::of(ip).as_str());
    }
    append_to_list(
        headers,
        &header::FORWARDED,
        forwarded_element(peer, scheme, original_host),
    );
    let proto = match scheme {
        "http" => Some(HeaderValue::from_static("http")),
        "https" => Some(HeaderValue::from_static("https")),
        other => HeaderValue::from_str(other).ok(),
    };
    if let Some(value) = proto {
        headers.insert(X_FORWARDED_PROTO, value);
    }
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// One RFC 7239 `forwarded-element` (§4) for a hop from `peer` over `scheme` for `host`.
pub fn forwarded_element(peer: Option<IpAddr>, scheme: &str, host: Option<&HeaderValue>) -> String {
    use std::fmt::Write as _;
    // Written into one string (no string per pair, no join; issue 13), sized for the usual
    // element so it is allocated once.
    let host = host.and_then(|h| h.to_str().ok());
    let mut out = String::with_capacity(
        "for=\"[]\";proto=;host=\"\"".len() + 39 + scheme.len() + host.map_or(0, str::len),
    );
    match peer {
        // §6: an IPv6 address is bracketed, and `[`/`:` are not token characters, so quoted.
        Some(IpAddr::V6(ip)) => {
            let _ = write!(out, "for=\"[{ip}]\"");
        }
        Some(IpAddr::V4(ip)) => {
            out.push_str("for=");
            out.push_str(IpText::of(IpAddr::V4(ip)).as_str());
        }
        None => {}
    }
    for (key, value) in [("proto=", Some(scheme)), ("host=", host)] {
        let Some(value) = value.filter(|v| forwarded_value_ok(v)) else {
            continue;
        };
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(key);
        push_forwarded_value(&mut out, value);
    }
    out
}

/// An address as text without the formatting machinery for IPv4, the usual peer (issue 13:
/// `Display` through `fmt::write` was a tenth of the forwarding headers' cost); IPv6 keeps
/// the standard library's canonical form (RFC 5952 compression).
enum IpText {
    /// Up to `255.255.255.255`, and its length.
    V4([u8; 15], usize),
    V6(String),
}

impl IpText {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(ip) => {
                let mut text = [0u8; 15];
                let mut len = 0;
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        push_byte(&mut text, &mut len, b'.');
                    }
                    if octet >= 100 {
                        push_byte(&mut text, &mut len, b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        push_byte(&mut text, &mut len, b'0' + octet / 10 % 10);
                    }
                    push_byte(&mut text, &mut len, b'0' + octet % 10);
                }
                Self::V4(text, len)
            }
            IpAddr::V6(ip) => Self::V6(ip.to_string()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Only ASCII digits and dots were written.
            Self::V4(text, len) => text
                .get(..*len)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .unwrap_or_default(),
            Self::V6(text) => text,
        }
    }
}

/// Writes `byte` at `*len` of `text` (which holds the longest dotted quad) and advances.
fn push_byte(text: &mut [u8; 15], len: &mut usize, byte: u8) {
    if let Some(slot) = text.get_mut(*len) {
        *slot = byte;
        *len += 1;
    }
}

/// Whether `value` can be an RFC 7239 `value` (`token / quoted-string`): not empty and without
/// a character a quoted-string cannot carry (a control character other than tab).
fn forwarded_value_ok(value: &str) -> bool {
    !value.is_empty() && !value.bytes().any(|b| b.is_ascii_control() && b != b'\t')
}

/// Appends `value` (one [`forwarded_value_ok`] accepts) as an RFC 7239 `value`: as is when it
/// is a token, quoted with `"` and `\` escaped otherwise.
fn push_forwarded_value(out: &mut String, value: &str) {
    if value.bytes().all(ravelin_http::is_tchar) {
        out.push_str(value);
        return;
    }
    // Runs between escapes appended whole, not a `char` at a time.
    out.push('"');
    let mut copied = 0;
    for (at, escaped) in value.match_indices(['"', '\\']) {
        out.push_str(value.get(copied..at).unwrap_or_default());
        out.push('\\');
        out.push_str(escaped);
        copied = at.saturating_add(escaped.len());
    }
    out.push_str(value.get(copied..).unwrap_or_default());
    out.push('"');
}

/// Appends `item` to the comma-separated list in `name`, as one field line.
fn append_to_list(
    headers: &mut HeaderMap,
    name: &HeaderName,
    item: impl AsRef<str> + Into<String>,
) {
    if item.as_ref().is_empty() {
        return;
    }
    // One lookup through the entry (it was three: two reads of the values and an insert), and
    // no join when the field is absent, as it is unless a trusted proxy sent it (issue 13).
    match headers.entry(name) {
        Entry::Vacant(slot) => {
            if let Some(value) = owned_value(item.into()) {
                slot.insert(value);
            }
        }
        Entry::Occupied(mut slot) => {
            // A `Forwarded` list keeps only what is right of its last malformed element.
            let cut = if *name == header::FORWARDED {
                last_malformed_forwarded(list_members(slot.iter()))
            } else {
                None
            };
            // Sized exactly, so the list is allocated once and becomes the value without a
            // copy; the new value replaces every line of the field.
            let len = kept_members(slot.iter(), cut)
                .map(|text| text.len() + 2)
                .sum::<usize>();
            let item = item.as_ref();
            let mut joined = String::with_capacity(len + item.len());
            for text in kept_members(slot.iter(), cut) {
                joined.push_str(text);
                joined.push_str(", ");
            }
            joined.push_str(item);
            if let Some(value) = owned_value(joined) {
                slot.insert(value);
            }
        }
    }
}

/// Where the elements right of the last malformed `Forwarded` element start: the index of its
/// line among `lines` (a `Forwarded` field's, in order) and the byte offset in that line past
/// its comma. Malformed: a quote that is not a parameter's whole, closed value
/// ([`quotes_well_formed`](ravelin_http::list::quotes_well_formed)); an unterminated
/// quoted-string runs to the end of its line. Unquoted values are not judged (`for=2001:db8::1`
/// unquoted is common and harmless). `None` when no element is malformed.
fn last_malformed_forwarded<'a>(lines: impl Iterator<Item = &'a str>) -> Option<(usize, usize)> {
    let mut cut = None;
    for (index, line) in lines.enumerate() {
        let mut at = 0usize;
        for element in ravelin_http::list::split_quoted(line.as_bytes(), b',') {
            // Past this element and its comma (a piece is followed by one unless it is last).
            at = at.saturating_add(element.len()).saturating_add(1);
            if !ravelin_http::list::quotes_well_formed(ravelin_http::trim_ows(element)) {
                cut = Some((index, at));
            }
        }
    }
    cut
}

/// The [`list_members`] of `values` to keep in front of an appended item: all of them without a
/// `cut` (allocation-free, as before); with one (from [`last_malformed_forwarded`]), none of
/// the lines before it, the rest of its line after the offset (trimmed, left out when empty),
/// and every later line as it is.
fn kept_members<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
    cut: Option<(usize, usize)>,
) -> impl Iterator<Item = &'a str> {
    list_members(values)
        .enumerate()
        .filter_map(move |(index, text)| match cut {
            Some((line, _)) if index < line => None,
            // Splits are at ASCII commas, so `at` is a character boundary (or past the end).
            Some((line, at)) if index == line => {
                Some(text.get(at..).unwrap_or_default().trim()).filter(|rest| !rest.is_empty())
            }
            _ => Some(text),
        })
}

/// A field's lines as trimmed text, empty and non-text lines left out.
fn list_members<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> impl Iterator<Item = &'a str> {
    values
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_length_filter_passes_the_fixed_set_and_trailer() {
        let mut lengths = 0u64;
        for name in ravelin_http::HOP_BY_HOP.iter().chain([&header::TRAILER]) {
            assert!(may_be_hop_by_hop(name), "{name}");
            lengths |= 1 << name.as_str().len();
        }
        assert_eq!(
            lengths, *HOP_BY_HOP_LENGTHS,
            "the mask is exactly the set's lengths"
        );
        assert!(!may_be_hop_by_hop(&header::HOST));
        assert!(!may_be_hop_by_hop(&HeaderName::from_static(
            "a-name-longer-than-sixty-four-bytes-which-no-hop-by-hop-field-has-at-all"
        )));
    }

    /// The length filter applies to the fixed set only: a field `Connection` names is removed
    /// whatever its length.
    #[test]
    fn connection_options_of_any_length_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-abc, X-Some-Much-Longer-Option-Name"),
        );
        headers.insert("x-abc", HeaderValue::from_static("1"));
        headers.insert(
            "x-some-much-longer-option-name",
            HeaderValue::from_static("2"),
        );
        headers.insert("x-kept", HeaderValue::from_static("3"));
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn forwarded_values_are_quoted_with_escapes() {
        for (value, quoted) in [
            ("a.example:8443", r#""a.example:8443""#),
            (r#"a"b\c"#, r#""a\"b\\c""#),
            (r#"""#, r#""\"""#),
            ("token", "token"),
        ] {
            let mut out = String::new();
            push_forwarded_value(&mut out, value);
            assert_eq!(out, quoted, "{value}");
        }
    }

    /// One RFC 7239 `value` as the element writer renders it (`None`: left out).
    fn forwarded_value(value: &str) -> Option<String> {
        forwarded_value_ok(value).then(|| {
            let mut out = String::new();
            push_forwarded_value(&mut out, value);
            out
        })
    }

    /// What `remove_hop_by_hop` removes whatever `Connection` says.
    fn always_removed(name: &HeaderName) -> bool {
        ravelin_http::is_hop_by_hop(name) || name == header::TRAILER
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_fixed_set_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret ,x-other"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("trailer", "x-checksum"),
            ("proxy-authorization", "Basic abc"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("close", "odd but named"),
            ("accept", "*/*"),
            ("x-keep", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["accept", "x-keep"]);
    }

    #[test]
    fn ip_text_edges() {
        for text in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "1.22.255.0"] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(IpText::of(ip).as_str(), text);
        }
    }

    #[test]
    fn te_trailers_survives_alone() {
        let mut h = map(&[("te", "gzip, trailers;q=1")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "gzip")]);
        remove_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
        // A quoted parameter holding a comma does not make a member of its own.
        let mut h = map(&[("te", r#"x;p="a, trailers""#)]);
        remove_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
        let mut h = map(&[("te", r#"x;p="a, b" , Trailers"#)]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn connection_token_count_is_bounded() {
        let many: Vec<String> = (0..100).map(|i| format!("x-h{i}")).collect();
        let mut pairs: Vec<(String, String)> =
            many.iter().map(|n| (n.clone(), "v".into())).collect();
        pairs.push(("connection".into(), many.join(",")));
        let mut h = HeaderMap::new();
        for (k, v) in &pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        remove_hop_by_hop(&mut h);
        // The first 32 named fields are removed; the rest stay (they are still end-to-end by
        // default, and the request is not failed for an oversized Connection header).
        assert_eq!(h.len(), 100 - ravelin_http::MAX_CONNECTION_OPTIONS);
    }

    #[test]
    fn via_and_forwarded() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        append_via(&mut h, Version::HTTP_2, "ravelin");
        add_forwarded(
            &mut h,
            Some("127.0.0.1".parse().unwrap()),
            "http",
            Some(&HeaderValue::from_static("example.com")),
        );
        assert_eq!(h.get("via").unwrap(), "2 ravelin");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "example.com");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=127.0.0.1;proto=http;host=example.com"
        );
    }

    #[test]
    fn connection_cannot_name_host_or_protected_fields() {
        let mut h = map(&[
            ("connection", "host, x-request-id, x-other"),
            ("host", "a.example"),
            ("x-request-id", "abc"),
            ("x-other", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.get("host").unwrap(), "a.example");
        assert!(h.get("x-request-id").is_none());
        assert!(h.get("x-other").is_none());

        let mut h = map(&[
            ("connection", "HOST, X-Request-Id, x-other"),
            ("host", "a.example"),
            ("x-request-id", "abc"),
            ("x-other", "1"),
        ]);
        remove_hop_by_hop_except(&mut h, &[HeaderName::from_static("x-request-id")]);
        assert_eq!(h.get("host").unwrap(), "a.example");
        assert_eq!(h.get("x-request-id").unwrap(), "abc");
        assert!(h.get("x-other").is_none());
        assert!(h.get("connection").is_none());
    }

    #[test]
    fn forwarded_elements_follow_rfc_7239() {
        let v6 = Some("2001:db8::1".parse().unwrap());
        assert_eq!(
            forwarded_element(
                v6,
                "https",
                Some(&HeaderValue::from_static("a.example:8443"))
            ),
            "for=\"[2001:db8::1]\";proto=https;host=\"a.example:8443\""
        );
        assert_eq!(forwarded_element(None, "http", None), "proto=http");
        assert_eq!(
            forwarded_element(None, "http", Some(&HeaderValue::from_static("[::1]"))),
            "proto=http;host=\"[::1]\""
        );
        assert_eq!(forwarded_value("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert_eq!(forwarded_value(""), None);

        // Appended to every existing line, as one line.
        let mut h = map(&[
            ("forwarded", "for=192.0.2.60;proto=http"),
            ("forwarded", "for=198.51.100.17"),
            ("x-forwarded-for", "192.0.2.60"),
            ("x-forwarded-for", "198.51.100.17"),
        ]);
        add_forwarded(&mut h, Some("10.0.0.1".parse().unwrap()), "http", None);
        assert_eq!(
            h.get_all("forwarded").iter().collect::<Vec<_>>(),
            ["for=192.0.2.60;proto=http, for=198.51.100.17, for=10.0.0.1;proto=http"]
        );
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["192.0.2.60, 198.51.100.17, 10.0.0.1"]
        );
    }

    /// The `Forwarded` field after the edge appended its element for a peer `10.0.0.1` over http.
    fn forwarded_after_edge(lines: &[&str]) -> String {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(header::FORWARDED, HeaderValue::from_str(line).unwrap());
        }
        add_forwarded(&mut h, Some("10.0.0.1".parse().unwrap()), "http", None);
        let all: Vec<&HeaderValue> = h.get_all(header::FORWARDED).iter().collect();
        assert_eq!(all.len(), 1, "one line");
        all[0].to_str().unwrap().to_owned()
    }

    /// The elements of a `Forwarded` value as the rate limiter splits them, with whether each is
    /// well-formed, and whether the value ends inside an open quote.
    fn forwarded_elements(value: &str) -> (Vec<(&str, bool)>, bool) {
        let mut pieces = ravelin_http::list::split_quoted(value.as_bytes(), b',');
        let elements = pieces
            .by_ref()
            .map(|e| {
                let e = std::str::from_utf8(ravelin_http::trim_ows(e)).unwrap();
                (e, ravelin_http::list::quotes_well_formed(e.as_bytes()))
            })
            .collect();
        (elements, pieces.unterminated())
    }

    #[test]
    fn a_malformed_forwarded_value_cannot_swallow_the_edge_element() {
        // The client sent `for=9.9.9.9;x="`, the trusted proxy appended on the same line.
        // Kept in front, the open quote would swallow the edge's element and every real hop.
        let out = forwarded_after_edge(&[r#"for=9.9.9.9;x=", for=203.0.113.7"#]);
        assert_eq!(out, "for=10.0.0.1;proto=http");
        // A malformed line drops the lines before it too: they are left of it.
        let out = forwarded_after_edge(&[
            "for=6.6.6.6",
            r#"for=9.9.9.9;x=", for=203.0.113.7"#,
            "for=198.51.100.2;proto=https",
        ]);
        assert_eq!(out, "for=198.51.100.2;proto=https, for=10.0.0.1;proto=http");
        // Elements right of a malformed (but closed) element stay, as they were.
        let out =
            forwarded_after_edge(&[r#"for=6.6.6.6, for=9.9.9.9;x="a"b ,  for=203.0.113.7;by=x"#]);
        assert_eq!(out, "for=203.0.113.7;by=x, for=10.0.0.1;proto=http");
        for bad in [
            "for=9.9.9.9;x=\"",
            r#"for=9.9.9.9;x="\""#,
            r#"for="a"b"#,
            r#"x"y"=1;for=9.9.9.9"#,
        ] {
            assert_eq!(
                forwarded_after_edge(&["for=203.0.113.1", bad]),
                "for=10.0.0.1;proto=http",
                "{bad}"
            );
            let out = forwarded_after_edge(&[bad]);
            let (elements, open) = forwarded_elements(&out);
            assert!(!open);
            assert_eq!(elements, [("for=10.0.0.1;proto=http", true)]);
        }
        // Values without a stray quote, odd ones and what common senders write unquoted
        // included, are kept byte for byte.
        for good in [
            r#"for="[2001:db8::1]:80";proto=https, for=_hidden"#,
            r#"for=192.0.2.1;host="a,b;\"c", , for=unknown;"#,
            "proto=https ; for=192.0.2.1,for=192.0.2.2",
            "for=[2001:db8::1];host=a.example:8080, for = 192.0.2.3;secure",
        ] {
            assert_eq!(
                forwarded_after_edge(&[good]),
                format!("{good}, for=10.0.0.1;proto=http")
            );
        }
        // X-Forwarded-For is not a Forwarded list: its lines are kept as they are.
        let mut h = map(&[("x-forwarded-for", r#"9.9.9.9;x=""#)]);
        add_forwarded(&mut h, Some("10.0.0.1".parse().unwrap()), "http", None);
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            r#"9.9.9.9;x=", 10.0.0.1"#
        );
    }

    /// One well-formed RFC 7239 element: `for`, `by`, `proto` or `host` pairs with token or
    /// quoted values (escapes included), possibly none.
    fn well_formed_element() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            "[A-Za-z0-9._-]{1,10}".prop_map(|s: String| s),
            proptest::collection::vec(
                prop_oneof![
                    "[ !#-\\[\\]-~]{1,4}".prop_map(|s: String| s),
                    Just("\\\"".to_owned()),
                    Just("\\\\".to_owned()),
                ],
                0..4,
            )
            .prop_map(|parts| format!("\"{}\"", parts.concat())),
        ];
        proptest::collection::vec(
            (
                prop::sample::select(vec!["for", "by", "proto", "host"]),
                value,
            ),
            0..4,
        )
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";")
        })
    }

    proptest! {
        /// Trusted well-formed `Forwarded` lines are kept byte for byte (trimmed, joined with
        /// `, `) in front of the edge's element.
        #[test]
        fn well_formed_forwarded_lines_are_kept(
            lines in proptest::collection::vec(
                proptest::collection::vec(well_formed_element(), 1..4),
                1..3,
            ),
        ) {
            let lines: Vec<String> = lines.iter().map(|l| l.join(", ")).collect();
            let kept: Vec<&str> =
                lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let out = forwarded_after_edge(&refs);
            let mut want = kept.join(", ");
            if !want.is_empty() {
                want.push_str(", ");
            }
            want.push_str("for=10.0.0.1;proto=http");
            prop_assert_eq!(out, want);
        }

        /// A trusted line holding an open quote (well-formed elements, then `for=<spoofed>`
        /// with a pair whose quote never closes, then whatever a proxy appended) never leaves a
        /// `for` from inside or left of it: the value the edge sends is well-formed, ends with
        /// the edge's element, and holds only the elements of later lines before it.
        #[test]
        fn an_open_quote_never_reaches_the_next_hop(
            left in proptest::collection::vec(well_formed_element(), 0..3),
            inside in "[ !#-\\[\\]-~]{0,16}",
            later in proptest::collection::vec(well_formed_element(), 0..3),
            earlier_line in proptest::option::of(well_formed_element()),
        ) {
            let mut line = left.join(", ");
            if !line.is_empty() {
                line.push_str(", ");
            }
            line.push_str("for=9.9.9.9;x=\"");
            line.push_str(&inside);
            let later_line = later.join(", ");
            let mut lines: Vec<&str> = earlier_line.iter().map(String::as_str).collect();
            lines.push(&line);
            if !later_line.trim().is_empty() {
                lines.push(&later_line);
            }
            let out = forwarded_after_edge(&lines);
            let (elements, open) = forwarded_elements(&out);
            prop_assert!(!open, "{:?}", out);
            prop_assert!(elements.iter().all(|(_, ok)| *ok), "{:?}", out);
            prop_assert_eq!(elements.last().map(|e| e.0), Some("for=10.0.0.1;proto=http"));
            prop_assert!(!out.contains("9.9.9.9"), "{:?}", out);
            let mut want = later_line.trim().to_owned();
            if !want.is_empty() {
                want.push_str(", ");
            }
            want.push_str("for=10.0.0.1;proto=http");
            prop_assert_eq!(out, want);
        }

        /// The hand-written dotted quad is the standard library's, for every address.
        #[test]
        fn ip_text_is_display(bits in any::<u32>(), v6 in any::<u128>()) {
            let v4 = IpAddr::V4(std::net::Ipv4Addr::from(bits));
            prop_assert_eq!(IpText::of(v4).as_str().to_owned(), v4.to_string());
            let v6 = IpAddr::V6(std::net::Ipv6Addr::from(v6));
            prop_assert_eq!(IpText::of(v6).as_str().to_owned(), v6.to_string());
        }

        /// Whatever the client sends, no hop-by-hop field and nothing named in `Connection`
        /// (within the token bound) reaches the upstream except `Host`, and every other field
        /// is kept.
        #[test]
        fn hop_by_hop_removal_matches_model(
            names in proptest::collection::vec("[a-z][a-z0-9-]{0,8}", 0..12),
            listed in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            fixed in proptest::collection::vec(0usize..=ravelin_http::HOP_BY_HOP.len(), 0..4),
            with_host in any::<bool>(),
            host_listed in any::<bool>(),
        ) {
            let mut h = HeaderMap::new();
            for n in &names {
                h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_static("v"));
            }
            // The shared set, and `Trailer` at the index past its end.
            let fixed_names: Vec<HeaderName> =
                ravelin_http::HOP_BY_HOP.iter().cloned().chain([header::TRAILER]).collect();
            for i in &fixed {
                if fixed_names[*i] != header::CONNECTION && fixed_names[*i] != header::TE {
                    h.append(fixed_names[*i].clone(), HeaderValue::from_static("v"));
                }
            }
            if with_host {
                h.append(header::HOST, HeaderValue::from_static("a.example"));
            }
            let conn: Vec<&str> = if names.is_empty() {
                Vec::new()
            } else {
                listed.iter().map(|ix| names[ix.index(names.len())].as_str()).collect()
            };
            let mut conn = conn;
            if host_listed {
                conn.push("host");
            }
            if !conn.is_empty() {
                h.append(header::CONNECTION, HeaderValue::from_str(&conn.join(", ")).unwrap());
            }
            let had_host = h.contains_key(header::HOST);
            remove_hop_by_hop(&mut h);
            for name in h.keys() {
                prop_assert!(!always_removed(name));
                prop_assert!(name != header::UPGRADE);
                // Host is the one field Connection can never name away.
                prop_assert!(!conn.contains(&name.as_str()) || name == header::HOST);
            }
            prop_assert_eq!(h.contains_key(header::HOST), had_host);
            for n in &names {
                let hop = always_removed(&HeaderName::from_bytes(n.as_bytes()).unwrap());
                if !conn.contains(&n.as_str()) && !hop {
                    prop_assert!(h.contains_key(n.as_str()));
                }
            }
        }
    }
}
