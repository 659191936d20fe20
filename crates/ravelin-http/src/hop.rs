//! The hop-by-hop fields (RFC 9110 §7.6.1): connection-specific, never forwarded by a proxy
//! and never stored by a cache (RFC 9111 §3.1).

use http::HeaderMap;
use http::header::{self, HeaderName};

use crate::list::trim_ows;

/// The fields that are always connection-specific: those RFC 9110 §7.6.1 names (`Connection`,
/// `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`) and the proxy
/// authentication fields of §11.7, which belong to one hop (RFC 9111 §3.1 forbids a cache to
/// store them). The fields a `Connection` header names are hop-by-hop too; see
/// [`connection_options`].
///
/// One list for the proxy (which removes them before forwarding) and the cache (which never
/// stores them). `Trailer` is not in it: RFC 9110 does not make it hop-by-hop (RFC 2616 did).
///
/// A `static`, not a `const`: a `const` array of header names is built and dropped again at
/// every use, which cost the proxy hundreds of instructions per request (issue 13).
pub static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-authentication-info"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is in [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// How many field names [`connection_options`] reads from `Connection` before ignoring the
/// rest: a sender cannot make a proxy or cache do unbounded work per message through it.
pub const MAX_CONNECTION_OPTIONS: usize = 32;

/// The field names listed in `headers`' `Connection` fields (connection options, RFC 9110
/// §7.6.1), in order, at most [`MAX_CONNECTION_OPTIONS`]. Tokens that are not field names are
/// skipped (they could name no field); the others count even on a line that also carries
/// bytes outside visible ASCII.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::CONNECTION};
/// use ravelin_http::connection_options;
///
/// let mut headers = HeaderMap::new();
/// headers.append(CONNECTION, HeaderValue::from_static("close, X-Debug , bad token"));
/// headers.append(CONNECTION, HeaderValue::from_static("keep-alive"));
/// let names: Vec<_> = connection_options(&headers).iter().map(|n| n.as_str().to_owned()).collect();
/// assert_eq!(names, ["close", "x-debug", "keep-alive"]);
/// ```
pub fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = trim_ows(token);
            if token.is_empty() {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                if names.len() >= MAX_CONNECTION_OPTIONS {
                    return names;
                }
                names.push(name);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_set() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "proxy-authentication-info",
            "te",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in [
            "host",
            "cache-control",
            "content-length",
            "authorization",
            "via",
            "trailer",
        ] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn connection_options_are_bounded() {
        let mut headers = HeaderMap::new();
        let many: Vec<String> = (0..100).map(|i| format!("x-{i}")).collect();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_str(&many.join(",")).unwrap(),
        );
        let names = connection_options(&headers);
        assert_eq!(names.len(), MAX_CONNECTION_OPTIONS);
        assert_eq!(names.first().unwrap(), "x-0");
        assert_eq!(names.last().unwrap(), "x-31");
        // Invalid tokens do not count against the bound.
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("bad token, (x), ok"),
        );
        assert_eq!(connection_options(&headers), ["ok"]);
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-a, caf\xe9, x-b").unwrap(),
        );
        assert_eq!(connection_options(&headers), ["x-a", "x-b"]);
    }
}
