//! How a message's content is delimited on the wire, for layers that cannot see the body.

/// A response extension: the upstream delimited this body by closing the connection (an
/// HTTP/1.x response with neither `Content-Length` nor chunked framing, RFC 9112 §6.3 rule 8).
///
/// Such a body cannot be told apart from one cut short by a dropped connection, so a cache must
/// not store it: a truncated copy would be served as if it were whole. The forwarding proxy sets
/// this marker; ravelin-cache refuses to store a response that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloseDelimited;

/// A request extension: the request may carry content that its header fields do not announce —
/// an HTTP/2 or HTTP/3 request whose HEADERS frame did not end the stream, with no
/// `Content-Length` (its DATA frames may still turn out empty: such a request is treated as
/// having content, the safe side for a cache).
///
/// Layers that cannot see the body type (a cache is generic over it) learn from
/// [`request_has_content`] whether a request has content; over HTTP/1.1 the header fields tell
/// (RFC 9112 §6.3), over HTTP/2 and HTTP/3 only the frames do, so the server that read the
/// request sets this marker. ravelin-proxy's server does; an embedder serving HTTP/2 through
/// its own server sets it where `!body.is_end_stream()` and no `Content-Length` was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnframedContent;

/// Whether a request carries content: `Transfer-Encoding` (any), a `Content-Length` other than
/// `0`, or the [`UnframedContent`] marker. A `GET` or `HEAD` with content ("fat GET") is a
/// cache-poisoning vector — origins that read parameters from a GET body answer for content the
/// cache key does not include — so ravelin-cache never stores or shares a response to one.
/// Takes the header fields and extensions apart, so it serves a `Request` and its `Parts` alike.
pub fn request_has_content(headers: &http::HeaderMap, extensions: &http::Extensions) -> bool {
    headers_have_content(headers) || extensions.get::<UnframedContent>().is_some()
}

/// The header-field half of [`request_has_content`]: `Transfer-Encoding` present, or a
/// `Content-Length` that is not exactly `0` (an unparseable one counts as content: a server in
/// front refused it or framed it some other way, and either way it is not known to be empty).
pub fn headers_have_content(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().iter().any(|&b| b != b'0'))
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn has_content(build: http::request::Builder) -> bool {
        let request = build.body(()).unwrap();
        request_has_content(request.headers(), request.extensions())
    }

    #[test]
    fn content_is_announced_by_framing_or_marked() {
        let get = || Request::get("/");
        assert!(!has_content(get()));
        assert!(!has_content(get().header("content-length", "0")));
        assert!(!has_content(get().header("content-length", "000")));
        assert!(has_content(get().header("content-length", "27")));
        assert!(has_content(get().header("content-length", "10")));
        assert!(has_content(get().header("transfer-encoding", "chunked")));
        assert!(has_content(get().extension(UnframedContent)));
    }
}
