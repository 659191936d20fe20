//! [`TlsInfo`]: what the TLS handshake of the request's connection said.

use std::sync::Arc;

/// What the TLS handshake of a request's connection established, set as a request extension
/// by the server that terminated TLS (`ravelin-proxy`'s server with a `ravelin-tls` acceptor).
/// Absent on plaintext connections.
///
/// It lives here, in the shared vocabulary, so a guard (the bot scorer, a rule of one's own)
/// can read the client's TLS fingerprint without depending on a TLS stack.
///
/// ```
/// use ravelin_http::TlsInfo;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(TlsInfo {
///     ja4: Some("t13d1516h2_8daaf6152771_e5627efa2ab1".into()),
///     ..TlsInfo::default()
/// });
/// let ja4 = TlsInfo::of(request.extensions()).and_then(|tls| tls.ja4.as_deref());
/// assert_eq!(ja4, Some("t13d1516h2_8daaf6152771_e5627efa2ab1"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The server name the client asked for (SNI), if it sent one.
    pub server_name: Option<Arc<str>>,
    /// The application protocol agreed by ALPN (`h2`, `http/1.1`), if any.
    pub alpn: Option<Arc<[u8]>>,
    /// The protocol version: `"TLSv1.3"` or `"TLSv1.2"`.
    pub version: &'static str,
    /// The client's JA4 fingerprint (FoxIO), computed from its ClientHello; `None` when the
    /// hello could not be read (the handshake went on without a fingerprint).
    pub ja4: Option<Arc<str>>,
    /// Whether the session was resumed (a ticket or a cached session) rather than a full
    /// handshake.
    pub resumed: bool,
}

impl TlsInfo {
    /// The TLS information in `extensions`, when the connection was TLS.
    pub fn of(extensions: &http::Extensions) -> Option<&TlsInfo> {
        extensions.get::<TlsInfo>()
    }
}
