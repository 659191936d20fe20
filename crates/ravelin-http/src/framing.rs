//! How a response body was delimited on the wire.

/// A response extension: the upstream delimited this body by closing the connection (an
/// HTTP/1.x response with neither `Content-Length` nor chunked framing, RFC 9112 §6.3 rule 8).
///
/// Such a body cannot be told apart from one cut short by a dropped connection, so a cache must
/// not store it: a truncated copy would be served as if it were whole. The forwarding proxy sets
/// this marker; ravelin-cache refuses to store a response that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloseDelimited;
