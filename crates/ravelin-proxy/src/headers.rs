//! Header handling for a forwarding proxy: hop-by-hop removal (RFC 9110 §7.6.1), `Via`
//! (§7.6.3) and the de-facto `X-Forwarded-*` fields.

use std::net::IpAddr;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that are always connection-specific (RFC 9110 §7.6.1, plus the obsolete
/// `Proxy-Connection` and the hop-specific proxy credentials of §11.7).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The `X-Forwarded-For` field name.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The `X-Forwarded-Proto` field name.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The `X-Forwarded-Host` field name.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How many field names a `Connection` header may list before the rest are ignored. A client
/// cannot make the proxy do unbounded work per request through it.
const MAX_CONNECTION_TOKENS: usize = 32;

/// Removes the hop-by-hop fields from `headers`: the fixed set of RFC 9110 §7.6.1 (`Connection`,
/// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) and the
/// hop-specific `Proxy-Authenticate`/`Proxy-Authorization`, plus every field named in
/// `Connection`.
///
/// `TE: trailers` is the one hop-by-hop value that must survive to an HTTP/2 upstream (gRPC
/// needs it): when the client offered `trailers`, it is put back as exactly `te: trailers`.
///
/// `Upgrade` is removed too: this proxy does not tunnel protocol upgrades (WebSocket), so
/// passing the request on with `Upgrade` would promise what it cannot do.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Collect the names listed in Connection before removing it. Invalid tokens are ignored:
    // they could not name a field we would forward anyway.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',') {
            if named.len() >= MAX_CONNECTION_TOKENS {
                break;
            }
            let token = token.trim();
            if token.is_empty() {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    let wants_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|t| {
            t.split(',').any(|p| {
                p.split(';')
                    .next()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case("trailers"))
            })
        })
    });
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
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
    let value = format!("{} {}", via_protocol(version), pseudonym);
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.append(header::VIA, value);
    }
}

/// Adds the `X-Forwarded-*` fields for a request received from `peer` over `scheme`:
///
/// - `X-Forwarded-For`: the peer address is appended to the existing list (an origin that
///   trusts this proxy reads the last entry; entries before it came from the client and are
///   only as trustworthy as the hops that added them);
/// - `X-Forwarded-Proto`: replaced by the scheme this proxy received the request on;
/// - `X-Forwarded-Host`: replaced by the host the client asked for (`Host`, or the URI
///   authority for HTTP/2), when there is one.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    scheme: &str,
    original_host: Option<&HeaderValue>,
) {
    if let Some(ip) = peer {
        let ip = ip.to_string();
        // Join into one field line: several X-Forwarded-For lines are legal but some origins
        // read only the first line.
        let joined = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.trim().is_empty() => format!("{existing}, {ip}"),
            _ => ip,
        };
        if let Ok(value) = HeaderValue::from_str(&joined) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(scheme) {
        headers.insert(X_FORWARDED_PROTO, value);
    }
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn te_trailers_survives_alone() {
        let mut h = map(&[("te", "gzip, trailers;q=1")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "gzip")]);
        remove_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
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
        assert_eq!(h.len(), 100 - MAX_CONNECTION_TOKENS);
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
    }

    proptest! {
        /// Whatever the client sends, no hop-by-hop field and nothing named in `Connection`
        /// (within the token bound) reaches the upstream, and every other field is kept.
        #[test]
        fn hop_by_hop_removal_matches_model(
            names in proptest::collection::vec("[a-z][a-z0-9-]{0,8}", 0..12),
            listed in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            fixed in proptest::collection::vec(0usize..HOP_BY_HOP.len(), 0..4),
        ) {
            let mut h = HeaderMap::new();
            for n in &names {
                h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_static("v"));
            }
            for i in &fixed {
                if HOP_BY_HOP[*i] != header::CONNECTION && HOP_BY_HOP[*i] != header::TE {
                    h.append(HOP_BY_HOP[*i].clone(), HeaderValue::from_static("v"));
                }
            }
            let conn: Vec<&str> = if names.is_empty() {
                Vec::new()
            } else {
                listed.iter().map(|ix| names[ix.index(names.len())].as_str()).collect()
            };
            if !conn.is_empty() {
                h.append(header::CONNECTION, HeaderValue::from_str(&conn.join(", ")).unwrap());
            }
            remove_hop_by_hop(&mut h);
            for name in h.keys() {
                prop_assert!(!HOP_BY_HOP.contains(name));
                prop_assert!(name != header::UPGRADE);
                prop_assert!(!conn.contains(&name.as_str()));
            }
            for n in &names {
                let hop = HOP_BY_HOP.iter().any(|h| h.as_str() == n) || n == "upgrade";
                if !conn.contains(&n.as_str()) && !hop {
                    prop_assert!(h.contains_key(n.as_str()));
                }
            }
        }
    }
}
