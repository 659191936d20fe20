//! Who the client is: the peer address, or a forwarding header only when the peer is trusted.
//!
//! A client can write anything into `X-Forwarded-For` or `Forwarded`. Each proxy that forwards a
//! request *appends* the address it received the request from, so the only entries a server can
//! believe are those appended by proxies it trusts. [`ClientIpResolver`] therefore:
//!
//! 1. starts from the socket peer ([`PeerAddr`](ravelin_http::PeerAddr)); if the peer is not
//!    a trusted proxy, the peer *is* the client and the headers are ignored;
//! 2. otherwise walks the header's addresses from right to left, skipping trusted proxies; the
//!    first untrusted address is the client (the "rightmost untrusted" rule);
//! 3. stops at an entry it cannot parse (`unknown`, an obfuscated identifier, garbage), or after
//!    [`MAX_HOPS`] entries, and then uses the last trusted hop it walked through: a proxy we trust
//!    said it could not tell, and anything further left was written by someone we do not trust.
//!    A `Forwarded` element with a quote that is not a parameter's whole, closed value is such an
//!    entry: an unterminated quoted-string swallows every element a proxy appended after it on
//!    the same line. (Unquoted values are read as before: `for=2001:db8::1` unquoted is common.)
//!
//! IPv4-mapped IPv6 addresses count as IPv4; IPv6 clients are grouped by prefix (a /64 by
//! default, one subscriber's allocation) so that one host cannot mint fresh keys from its own
//! address range.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName};
use ipnet::IpNet;
use ravelin_http::list::{quotes_well_formed, split_quoted};
use ravelin_http::trim_ows as trim;

/// The most forwarding-header entries examined per request.
pub const MAX_HOPS: usize = 32;

/// Which request header carries the forwarding chain, read only from trusted proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (all field lines, in order).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (the `for` parameter of each element).
    Forwarded,
    /// A header holding a single address set by the trusted proxy (`X-Real-IP`,
    /// `CF-Connecting-IP`); a list or a garbage value is ignored.
    Single(HeaderName),
}

/// Resolves and groups the client address of a request.
#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl Default for ClientIpResolver {
    /// No trusted proxies (the peer is the client), IPv4 per address, IPv6 per /64.
    fn default() -> Self {
        Self::new(Vec::new(), ForwardedHeader::XForwardedFor)
    }
}

impl ClientIpResolver {
    /// Trusts the forwarding `header` when the peer lies in one of `trusted`.
    pub fn new(trusted: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self {
            trusted,
            header,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }

    /// Groups IPv4 clients by this prefix length (clamped to 0..=32; default 32).
    pub fn ipv4_prefix(mut self, bits: u8) -> Self {
        self.ipv4_prefix = bits.min(32);
        self
    }

    /// Groups IPv6 clients by this prefix length (clamped to 0..=128; default 64).
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address (not yet grouped), or `None` without a peer address.
    pub fn resolve(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip().to_canonical();
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return Some(peer);
        }
        Some(match &self.header {
            ForwardedHeader::XForwardedFor => {
                self.walk(peer, x_forwarded_for_rev(headers, "x-forwarded-for"))
            }
            ForwardedHeader::Forwarded => self.walk(peer, forwarded_for_rev(headers)),
            ForwardedHeader::Single(name) => single(headers, name).unwrap_or(peer),
        })
    }

    /// The rightmost-untrusted walk over `entries` (right to left), starting at the trusted peer.
    fn walk(&self, peer: IpAddr, entries: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
        let mut last_trusted = peer;
        for entry in entries.take(MAX_HOPS) {
            let Some(ip) = entry else {
                return last_trusted;
            };
            let ip = ip.to_canonical();
            if !self.is_trusted(ip) {
                return ip;
            }
            last_trusted = ip;
        }
        last_trusted
    }

    /// The client's address masked to its group's prefix.
    pub fn group(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                IpAddr::V4(Ipv4Addr::from_bits(mask32(v4.to_bits(), self.ipv4_prefix)))
            }
            IpAddr::V6(v6) => {
                IpAddr::V6(Ipv6Addr::from_bits(mask128(v6.to_bits(), self.ipv6_prefix)))
            }
        }
    }

    /// Resolves and groups: the value a per-client rule is keyed by.
    pub fn client_key(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        self.resolve(peer, headers).map(|ip| self.group(ip))
    }
}

fn mask32(bits: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => bits,
        p => bits & (u32::MAX << (32 - u32::from(p))),
    }
}

fn mask128(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => bits,
        p => bits & (u128::MAX << (128 - u32::from(p))),
    }
}

/// The addresses of every `name` field line, right to left; `None` for an unparseable entry.
fn x_forwarded_for_rev<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> impl Iterator<Item = Option<IpAddr>> + 'h {
    headers
        .get_all(name)
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
        .map(|entry| parse_node(trim(entry)))
}

/// The `for=` values of every `Forwarded` element, right to left; `None` for an element without
/// a usable `for` (missing, `unknown`, obfuscated, malformed — an unterminated quote included:
/// it runs to the end of its line, so it is that line's last element and nothing left of it is
/// read).
///
/// Elements split only left to right (commas may be quoted), so this keeps the *rightmost*
/// [`MAX_HOPS`] of them: those appended by our proxies. Keeping the leftmost ones instead would
/// let a client that writes a long list push the real hops out and choose its own address.
fn forwarded_for_rev(headers: &HeaderMap) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    let mut last: VecDeque<&[u8]> = VecDeque::with_capacity(MAX_HOPS);
    for line in headers.get_all(FORWARDED) {
        for element in split_quoted(line.as_bytes(), b',') {
            if last.len() >= MAX_HOPS {
                last.pop_front();
            }
            last.push_back(element);
        }
    }
    last.into_iter().rev().map(forwarded_element_for)
}

fn single(headers: &HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        // Two lines: someone besides the trusted proxy set it.
        return None;
    }
    parse_node(trim(value.as_bytes()))
}

/// The address in a `Forwarded` element's `for` parameter (RFC 7239 §4, §6); `None` as well for
/// an element with a stray or unterminated quote, whatever its `for` says: its boundaries
/// cannot be believed ([`quotes_well_formed`]).
fn forwarded_element_for(element: &[u8]) -> Option<IpAddr> {
    if !quotes_well_formed(element) {
        return None;
    }
    let mut found = None;
    // `token=value` pairs, split at `;` outside quotes.
    for pair in split_quoted(element, b';') {
        let pair = trim(pair);
        if let Some(eq) = pair.iter().position(|&b| b == b'=') {
            let (name, value) = (
                trim(pair.get(..eq)?),
                trim(pair.get(eq.saturating_add(1)..)?),
            );
            if name.eq_ignore_ascii_case(b"for") {
                if found.is_some() {
                    // A repeated parameter makes the element invalid (RFC 7239 §4).
                    return None;
                }
                found = Some(unquote(value)?);
            }
        }
    }
    parse_node(&found?)
}

/// The content of a quoted-string (escapes resolved), or a token as is.
fn unquote(value: &[u8]) -> Option<Vec<u8>> {
    let Some(inner) = value.strip_prefix(b"\"") else {
        return Some(value.to_vec());
    };
    let inner = inner.strip_suffix(b"\"")?;
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if escaped {
            out.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            return None;
        } else {
            out.push(b);
        }
    }
    if escaped { None } else { Some(out) }
}

/// One node: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:8080`. `unknown`, obfuscated identifiers (`_hidden`) and anything else: `None`.
pub(crate) fn parse_node(node: &[u8]) -> Option<IpAddr> {
    if node.is_empty() || node.len() > 64 {
        return None;
    }
    let text = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    let inner = text.strip_prefix('[')?;
    let inner = inner.split(']').next()?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// Parses an `X-Forwarded-For` value into its addresses, left to right (`None` for an unusable
/// entry). Exposed for fuzzing and tests.
pub fn parse_x_forwarded_for(value: &[u8]) -> Vec<Option<IpAddr>> {
    value
        .split(|&b| b == b',')
        .map(|entry| parse_node(trim(entry)))
        .collect()
}

/// Parses a `Forwarded` value into the `for` address of each element, left to right (`None` for
/// an element without a usable one). Exposed for fuzzing and tests.
pub fn parse_forwarded(value: &[u8]) -> Vec<Option<IpAddr>> {
    split_quoted(value, b',')
        .map(forwarded_element_for)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn resolver(trusted: &[&str], header: ForwardedHeader) -> ClientIpResolver {
        ClientIpResolver::new(trusted.iter().map(|t| t.parse().unwrap()).collect(), header)
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 4711))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_spoofing_xff_is_ignored() {
        let r = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            r.resolve(peer("198.51.100.9"), &h),
            Some(ip("198.51.100.9"))
        );
        // No trusted proxies at all: headers are never read.
        let r = ClientIpResolver::default();
        assert_eq!(
            r.resolve(peer("198.51.100.9"), &h),
            Some(ip("198.51.100.9"))
        );
    }

    #[test]
    fn rightmost_untrusted_wins() {
        let r = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        // The client forged "6.6.6.6"; our proxies appended the real client and themselves.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.0.0.7")]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("203.0.113.5")));
        // Multiple field lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.5, 10.1.1.1"),
        ]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("203.0.113.5")));
    }

    #[test]
    fn garbage_or_all_trusted_falls_back_to_last_trusted_hop() {
        let r = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "203.0.113.5, unknown, 10.0.0.7")]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("10.0.0.7")));
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.7")]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("10.0.0.9")));
        let h = HeaderMap::new();
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("10.0.0.1")));
    }

    #[test]
    fn hops_are_bounded() {
        let r = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let chain = std::iter::once("203.0.113.5".to_owned())
            .chain((0..100).map(|i| format!("10.0.{i}.1")))
            .collect::<Vec<_>>()
            .join(", ");
        let h = headers(&[("x-forwarded-for", &chain)]);
        let got = r.resolve(peer("10.0.0.1"), &h).unwrap();
        assert!(
            r.is_trusted(got),
            "stopped at a trusted hop after {MAX_HOPS} entries"
        );
    }

    #[test]
    fn forwarded_keeps_the_rightmost_hops_of_a_long_list() {
        // A client writes more elements than we walk; the trusted proxy appends the real
        // address to the same line. The walk must start from that end, not the client's.
        let r = resolver(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let spoofed = (0..100)
            .map(|i| format!("for=6.6.{i}.6"))
            .collect::<Vec<_>>()
            .join(", ");
        let line = format!("{spoofed}, for=203.0.113.5, for=10.0.0.3");
        let h = headers(&[("forwarded", &line)]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("203.0.113.5")));
        // The same across field lines: the last line is the nearest proxy's.
        let h = headers(&[("forwarded", &spoofed), ("forwarded", "for=203.0.113.5")]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("203.0.113.5")));
    }

    #[test]
    fn forwarded_header() {
        let r = resolver(
            &["10.0.0.0/8", "2001:db8:ffff::/48"],
            ForwardedHeader::Forwarded,
        );
        let h = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.3;by=10.0.0.1"#,
        )]);
        assert_eq!(
            r.resolve(peer("10.0.0.1"), &h),
            Some(ip("2001:db8:cafe::17"))
        );
        let h = headers(&[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("192.0.2.60")));
        let h = headers(&[("forwarded", "for=unknown, for=10.0.0.4")]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("10.0.0.4")));
        let h = headers(&[("forwarded", r#"for="_hidden", for="192.0.2.1:80""#)]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("192.0.2.1")));
        // A quoted comma does not split the element.
        assert_eq!(
            parse_forwarded(br#"for="a,b";by=x, for=192.0.2.9"#).len(),
            2
        );
        // A repeated `for` makes the element unusable.
        assert_eq!(parse_forwarded(b"for=192.0.2.1;for=192.0.2.2"), vec![None]);
    }

    #[test]
    fn forwarded_unterminated_quote_cannot_choose_the_client() {
        let r = resolver(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        // The client sent `Forwarded: for=9.9.9.9;x="`; the trusted proxy appended its element to
        // the same line. The open quote swallows it: one element, malformed, so the walk stops
        // at the trusted peer instead of reading the client's `for`.
        let h = headers(&[("forwarded", r#"for=9.9.9.9;x=", for=203.0.113.7"#)]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("10.0.0.1")));
        assert_eq!(
            parse_forwarded(br#"for=9.9.9.9;x=", for=203.0.113.7"#),
            vec![None]
        );
        // Behind a trusted hop that appended correctly, the walk stops at that hop.
        let h = headers(&[(
            "forwarded",
            r#"for=9.9.9.9;x=", for=203.0.113.7, for=10.0.0.3"#,
        )]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("10.0.0.1")));
        // The proxy appended a field line of its own: that line is read, the client's is not.
        let h = headers(&[
            ("forwarded", r#"for=9.9.9.9;x=""#),
            ("forwarded", "for=203.0.113.7"),
        ]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("203.0.113.7")));
        // A trusted hop then the malformed element: the last trusted hop walked through.
        let h = headers(&[
            ("forwarded", r#"for=9.9.9.9;x=""#),
            ("forwarded", "for=10.0.0.3"),
        ]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("10.0.0.3")));
        // An escaped closing quote leaves the string open too.
        let h = headers(&[("forwarded", r#"for=9.9.9.9;x="\", for=203.0.113.7"#)]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("10.0.0.1")));
    }

    #[test]
    fn forwarded_stray_quotes_make_the_element_unparseable() {
        let r = resolver(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        for element in [
            r#"for=9.9.9.9;x="a"b"#,
            r#"for=9.9.9.9;x=a"b""#,
            r#"x"y"=1;for=9.9.9.9"#,
        ] {
            assert_eq!(parse_forwarded(element.as_bytes()), vec![None], "{element}");
            // Right of it the walk reads on; at it, it stops at the last trusted hop.
            let line = format!("for=6.6.6.6, {element}, for=10.0.0.3");
            let h = headers(&[("forwarded", &line)]);
            assert_eq!(
                r.resolve(peer("10.0.0.1"), &h),
                Some(ip("10.0.0.3")),
                "{line}"
            );
            let line = format!("for=6.6.6.6, {element}, for=203.0.113.7");
            let h = headers(&[("forwarded", &line)]);
            assert_eq!(
                r.resolve(peer("10.0.0.1"), &h),
                Some(ip("203.0.113.7")),
                "{line}"
            );
        }
        // Oddities without a stray quote stay readable: empty pairs, OWS around `;` and `=`,
        // quoted values holding `;` and `,`, other parameters before `for`, and what common
        // senders write unquoted (IPv6, a host with its port, a flag).
        for (element, want) in [
            ("for=192.0.2.1;", "192.0.2.1"),
            (";for=192.0.2.1", "192.0.2.1"),
            ("proto=https ; for=192.0.2.1", "192.0.2.1"),
            (r#"host="a;b,c";for="192.0.2.1:80""#, "192.0.2.1"),
            ("for = 192.0.2.1", "192.0.2.1"),
            ("for=192.0.2.1;secure", "192.0.2.1"),
            ("for=[2001:db8::1]", "2001:db8::1"),
            ("host=a.example:8080;for=192.0.2.9", "192.0.2.9"),
        ] {
            assert_eq!(
                parse_forwarded(element.as_bytes()),
                vec![Some(ip(want))],
                "{element}"
            );
        }
    }

    #[test]
    fn single_header() {
        let r = resolver(
            &["10.0.0.0/8"],
            ForwardedHeader::Single(HeaderName::from_static("x-real-ip")),
        );
        let h = headers(&[("x-real-ip", "203.0.113.5")]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("203.0.113.5")));
        assert_eq!(r.resolve(peer("192.0.2.1"), &h), Some(ip("192.0.2.1")));
        let h = headers(&[("x-real-ip", "203.0.113.5"), ("x-real-ip", "1.1.1.1")]);
        assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(ip("10.0.0.1")));
    }

    #[test]
    fn grouping_and_mapped_addresses() {
        let r = ClientIpResolver::default().ipv6_prefix(48).ipv4_prefix(24);
        assert_eq!(r.group(ip("2001:db8:1:2:3::4")), ip("2001:db8:1::"));
        assert_eq!(r.group(ip("192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(r.group(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
        let r = ClientIpResolver::default();
        assert_eq!(r.group(ip("2001:db8::1")), r.group(ip("2001:db8::ffff:1")));
        assert_ne!(r.group(ip("2001:db8::1")), r.group(ip("2001:db8:0:1::1")));
        assert_eq!(r.group(ip("192.0.2.77")), ip("192.0.2.77"));
        assert_eq!(
            ClientIpResolver::default()
                .ipv6_prefix(0)
                .group(ip("2001:db8::1")),
            ip("::")
        );
        assert_eq!(
            ClientIpResolver::default()
                .ipv6_prefix(128)
                .group(ip("2001:db8::1")),
            ip("2001:db8::1")
        );
        // A mapped trusted proxy is trusted.
        let t = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        assert!(t.is_trusted(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn nodes() {
        for (text, want) in [
            ("192.0.2.1", Some("192.0.2.1")),
            ("192.0.2.1:80", Some("192.0.2.1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("unknown", None),
            ("_obf", None),
            ("", None),
            ("1.2.3", None),
            ("[1.2.3.4]", None),
        ] {
            assert_eq!(parse_node(text.as_bytes()), want.map(ip), "{text}");
        }
    }

    proptest! {
        /// Whatever a client writes, a request from an untrusted peer is keyed by that peer, and
        /// a request through a trusted proxy is keyed by an address that is either untrusted and
        /// present in the header, or a trusted hop.
        #[test]
        fn resolution_is_spoof_proof(
            client_written in prop::collection::vec(any::<[u8; 4]>(), 0..6),
            garbage in "[ -~]{0,20}",
            appended in any::<[u8; 4]>(),
            trusted_tail in 0usize..3,
        ) {
            prop_assume!(appended[0] != 10);
            let r = resolver(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
            let mut parts: Vec<String> = client_written.iter().map(|a| Ipv4Addr::from(*a).to_string()).collect();
            parts.push(garbage.replace(',', ""));
            let real = Ipv4Addr::from(appended);
            parts.push(real.to_string());
            for i in 0..trusted_tail {
                parts.push(format!("10.9.9.{i}"));
            }
            let value = parts.join(", ");
            let Ok(value) = HeaderValue::from_str(&value) else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", value);
            prop_assert_eq!(r.resolve(peer("198.51.100.1"), &h), Some(ip("198.51.100.1")));
            prop_assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(IpAddr::V4(real)));
        }

        /// An element with an open quote, sent by the client and followed by any elements a
        /// proxy appends on the same line, never yields a `for` from it or from its left: the
        /// client is the trusted peer, or a trusted hop on a later line.
        #[test]
        fn an_open_quote_never_yields_a_for(
            left in prop::collection::vec(any::<[u8; 4]>(), 0..4),
            spoofed in any::<[u8; 4]>(),
            before_quote in "[a-z]{1,5}=",
            inside in "[ !#-\\[\\]-~]{0,12}",
            appended in prop::collection::vec(any::<[u8; 4]>(), 0..4),
            next_line in prop::option::of(0u8..=255),
        ) {
            let r = resolver(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
            let mut line: Vec<String> =
                left.iter().map(|a| format!("for={}", Ipv4Addr::from(*a))).collect();
            line.push(format!(
                "for={};{before_quote}\"{inside}",
                Ipv4Addr::from(spoofed)
            ));
            let mut value = line.join(", ");
            for a in &appended {
                value.push_str(&format!(", for={}", Ipv4Addr::from(*a)));
            }
            prop_assert!(ravelin_http::list::has_unterminated_quote(value.as_bytes()));
            let parsed = parse_forwarded(value.as_bytes());
            prop_assert_eq!(parsed.last(), Some(&None), "{:?}", value);
            let mut h = headers(&[("forwarded", &value)]);
            let want = match next_line {
                Some(last) => {
                    // A line the trusted proxy added: read on its own.
                    let real = Ipv4Addr::new(10, 0, 9, last);
                    h.append("forwarded", HeaderValue::from_str(&format!("for={real}")).unwrap());
                    IpAddr::V4(real)
                }
                None => ip("10.0.0.1"),
            };
            prop_assert_eq!(r.resolve(peer("10.0.0.1"), &h), Some(want), "{:?}", value);
        }

        #[test]
        fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_forwarded(&bytes);
            let _ = parse_x_forwarded_for(&bytes);
        }
    }
}
