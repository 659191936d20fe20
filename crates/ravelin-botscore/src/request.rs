//! What the scorer looks at: a borrowed view of a request head.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, USER_AGENT};
use http::{Extensions, Version};
use ravelin_failsafe::RequestHead;
use ravelin_http::TlsInfo;

/// A TLS fingerprint computed by the TLS terminator, set as a request extension.
///
/// The scorer does not compute fingerprints: the component that terminates TLS sees the
/// ClientHello and supplies one. Ravelin's own terminator (`ravelin-tls`, the edge's `[tls]`)
/// sets the [`ravelin_http::TlsInfo`] extension, which the scorer reads without configuration;
/// this extension is for other terminators (and takes precedence), as is a trusted header (see
/// [`BotGuardBuilder::fingerprint_header`](crate::BotGuardBuilder::fingerprint_header)). Feature
/// kinds `ja4_*` read the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsFingerprint {
    ja4: Arc<str>,
}

impl TlsFingerprint {
    /// A fingerprint from its JA4 string (e.g. `t13d1516h2_8daaf6152771_02713d6af862`).
    pub fn ja4(ja4: impl Into<Arc<str>>) -> Self {
        Self { ja4: ja4.into() }
    }

    /// The JA4 string.
    pub fn as_ja4(&self) -> &str {
        &self.ja4
    }
}

/// The parts of a request the scorer reads. Borrowed, so building one allocates nothing.
///
/// A view is either a **full request** (method, version, headers in arrival order) or a
/// **UA-only record** ([`RequestView::user_agent_only`]) where nothing but the User-Agent is
/// known. In a UA-only record header features do not fire and the `headers_unknown` feature does,
/// so a missing `accept` header is not mistaken for a library that sent none.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub(crate) user_agent: Option<&'a [u8]>,
    pub(crate) user_agent_count: usize,
    pub(crate) headers: Option<&'a HeaderMap>,
    pub(crate) version: Version,
    pub(crate) ja4: Option<&'a str>,
    /// The connection is TLS terminated by Ravelin (a `TlsInfo` extension) and its ClientHello
    /// gave no fingerprint: a hello the parser refused (oversized, malformed) — which real
    /// browsers never send, so `ja4_stack_mismatch` treats it as a stack that is not theirs.
    pub(crate) tls_without_ja4: bool,
    pub(crate) peer: Option<IpAddr>,
}

impl<'a> RequestView<'a> {
    /// A full request: its version and headers (header order matters, so pass the map the server
    /// parsed, in arrival order).
    pub fn new(version: Version, headers: &'a HeaderMap) -> Self {
        let mut values = headers.get_all(USER_AGENT).iter();
        let user_agent = values.next().map(|v| v.as_bytes());
        let user_agent_count = usize::from(user_agent.is_some()).saturating_add(values.count());
        Self {
            user_agent,
            user_agent_count,
            headers: Some(headers),
            version,
            ja4: None,
            tls_without_ja4: false,
            peer: None,
        }
    }

    /// A record of which only the User-Agent is known (`None`: known to have none).
    pub fn user_agent_only(user_agent: Option<&'a str>) -> Self {
        Self {
            user_agent: user_agent.map(str::as_bytes),
            user_agent_count: usize::from(user_agent.is_some()),
            headers: None,
            version: Version::HTTP_11,
            ja4: None,
            tls_without_ja4: false,
            peer: None,
        }
    }

    /// The head of a request as a guard sees it: version, headers, the JA4 fingerprint and the
    /// peer address.
    ///
    /// The fingerprint is the first of: the [`TlsFingerprint`] extension, the JA4 of the
    /// [`ravelin_http::TlsInfo`] extension (set by Ravelin's TLS terminator), and, when
    /// `fingerprint_header` is set and the edge did not terminate TLS itself (no `TlsInfo`),
    /// that header.
    pub fn from_head(head: &RequestHead<'a>, fingerprint_header: Option<&HeaderName>) -> Self {
        let mut view = Self::new(head.version, head.headers);
        view.ja4 = fingerprint_of(head.extensions, head.headers, fingerprint_header);
        view.tls_without_ja4 = view.ja4.is_none() && TlsInfo::of(head.extensions).is_some();
        view.peer = head.peer.map(|addr| canonical_ip(addr.ip()));
        view
    }

    /// The head of `request`, for scoring outside a guard.
    pub fn from_request<B>(request: &'a http::Request<B>) -> Self {
        Self::from_head(&RequestHead::from_request(request), None)
    }

    /// Sets the JA4 fingerprint.
    pub fn with_ja4(mut self, ja4: Option<&'a str>) -> Self {
        self.ja4 = ja4;
        self
    }

    /// Sets the client's address (used to check verified-bot IP ranges).
    pub fn with_peer(mut self, peer: Option<IpAddr>) -> Self {
        self.peer = peer.map(canonical_ip);
        self
    }

    /// The first User-Agent value's bytes.
    pub fn user_agent(&self) -> Option<&'a [u8]> {
        self.user_agent
    }

    /// Whether header features can be evaluated (false for UA-only records).
    pub fn headers_known(&self) -> bool {
        self.headers.is_some()
    }

    /// The client's address, if known.
    pub fn peer(&self) -> Option<IpAddr> {
        self.peer
    }
}

fn fingerprint_of<'a>(
    extensions: &'a Extensions,
    headers: &'a HeaderMap,
    header: Option<&HeaderName>,
) -> Option<&'a str> {
    if let Some(fp) = extensions.get::<TlsFingerprint>() {
        return Some(fp.as_ja4());
    }
    if let Some(tls) = TlsInfo::of(extensions) {
        // The edge terminated TLS itself: its fingerprint (or its absence) is the truth, and a
        // header could only be the client's own words.
        return tls.ja4.as_deref();
    }
    let value = headers.get(header?)?;
    value.to_str().ok()
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, what a dual-stack listener reports for IPv4
/// clients) are compared as IPv4, so an operator's IPv4 ranges match them.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_JA4: &str = "t13d1517h2_8daaf6152771_cb7bf5808d99";
    const CURL_JA4: &str = "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6";

    fn view_ja4(
        extensions: &Extensions,
        headers: &HeaderMap,
        header: Option<&HeaderName>,
    ) -> Option<String> {
        let method = http::Method::GET;
        let uri = http::Uri::from_static("/");
        let head = RequestHead {
            method: &method,
            uri: &uri,
            version: Version::HTTP_2,
            headers,
            extensions,
            peer: None,
        };
        RequestView::from_head(&head, header).ja4.map(str::to_owned)
    }

    fn tls_info(ja4: Option<&str>) -> TlsInfo {
        TlsInfo {
            version: "TLSv1.3",
            ja4: ja4.map(Arc::from),
            ..TlsInfo::default()
        }
    }

    #[test]
    fn the_edge_tls_info_supplies_the_ja4_after_the_extension_and_before_the_header() {
        let header = HeaderName::from_static("x-ja4");
        let mut headers = HeaderMap::new();
        headers.insert(
            &header,
            http::HeaderValue::from_static("t12i0000h1_from_header"),
        );

        let mut ext = Extensions::new();
        ext.insert(tls_info(Some(CHROME_JA4)));
        assert_eq!(
            view_ja4(&ext, &HeaderMap::new(), None).as_deref(),
            Some(CHROME_JA4)
        );
        assert_eq!(
            view_ja4(&ext, &headers, Some(&header)).as_deref(),
            Some(CHROME_JA4),
            "the terminator's extension wins over a header"
        );

        ext.insert(TlsFingerprint::ja4(CURL_JA4));
        assert_eq!(
            view_ja4(&ext, &headers, Some(&header)).as_deref(),
            Some(CURL_JA4),
            "the scorer's own extension comes first"
        );

        // TLS the edge terminated without a fingerprint (a hello the parser refused): never
        // the header — with the edge as terminator it could only be the client's own words —
        // and the view says so, for `ja4_stack_mismatch`.
        let mut ext = Extensions::new();
        ext.insert(tls_info(None));
        assert_eq!(view_ja4(&ext, &HeaderMap::new(), None), None);
        assert_eq!(view_ja4(&ext, &headers, Some(&header)), None);
        let head = RequestHead {
            method: &http::Method::GET,
            uri: &http::Uri::from_static("/"),
            version: http::Version::HTTP_2,
            headers: &headers,
            extensions: &ext,
            peer: None,
        };
        assert!(RequestView::from_head(&head, Some(&header)).tls_without_ja4);
        // A terminator in front of the edge (no TlsInfo): its header, when configured.
        assert_eq!(
            view_ja4(&Extensions::new(), &headers, Some(&header)).as_deref(),
            Some("t12i0000h1_from_header")
        );
        // Plaintext: no extension, no fingerprint.
        assert_eq!(view_ja4(&Extensions::new(), &headers, None), None);
    }
}
