//! Short plain-text answers a Ravelin layer writes itself (a refusal, a 429, a 502).

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

/// `text/plain; charset=utf-8`.
pub const TEXT_PLAIN_UTF8: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A short plain-text answer written by the edge, not the origin: `status`, `body`,
/// `Content-Type: text/plain; charset=utf-8`, `Cache-Control: no-store` (an answer the edge
/// writes about one request must never be cached over good content) and
/// `X-Content-Type-Options: nosniff`. Generic over the body type, so every layer keeps its own.
///
/// ```
/// use bytes::Bytes;
/// use http::StatusCode;
/// use ravelin_http::plain_text;
///
/// let response = plain_text(StatusCode::BAD_GATEWAY, Bytes::from_static(b"502 bad gateway\n"));
/// assert_eq!(response.status(), 502);
/// assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
/// assert_eq!(response.headers()["cache-control"], "no-store");
/// ```
pub fn plain_text<B>(status: StatusCode, body: B) -> Response<B> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, TEXT_PLAIN_UTF8);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
