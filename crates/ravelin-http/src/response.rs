//! Short answers a Ravelin layer writes itself: plain text (a refusal, a 429, a 502) and the
//! fixed answers an operator configures ([`FixedResponse`]).

use bytes::Bytes;
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

/// The largest body a [`FixedResponse`] may hold: 64 KiB. A fixed answer is a short page
/// (a refusal, a challenge); anything larger is a mistake in a configuration, and every copy
/// of the answer is held in memory for as long as its configuration is in force.
pub const MAX_FIXED_BODY_BYTES: usize = 64 * 1024;

/// One reason a [`FixedResponse`] was refused: which field ([`field`](Self::field)) and why
/// (its `Display`, the message a configuration error shows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FixedResponseProblem {
    /// The status is not a client or server error (400..=599).
    #[error("{status} is not a 4xx or 5xx status")]
    Status {
        /// The status as given.
        status: u16,
    },
    /// The content type cannot be sent as a header value (a control character, a newline).
    #[error("{content_type:?} is not a valid header value")]
    ContentType {
        /// The content type as given.
        content_type: String,
    },
    /// The body is longer than [`MAX_FIXED_BODY_BYTES`].
    #[error("{len} bytes exceeds the limit of {MAX_FIXED_BODY_BYTES}")]
    Body {
        /// Its length in bytes.
        len: usize,
    },
}

impl FixedResponseProblem {
    /// The name of the field at fault, as a configuration spells it: `status`, `content_type`
    /// or `body`.
    pub const fn field(&self) -> &'static str {
        match self {
            FixedResponseProblem::Status { .. } => "status",
            FixedResponseProblem::ContentType { .. } => "content_type",
            FixedResponseProblem::Body { .. } => "body",
        }
    }
}

/// Why [`FixedResponse::new`] refused its parts: every problem found, not just the first, so
/// a configuration error can name them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedResponseError {
    /// Never empty, in field order (status, content type, body).
    problems: Vec<FixedResponseProblem>,
}

impl FixedResponseError {
    /// Each problem, in field order: status, content type, body. Never empty.
    pub fn problems(&self) -> &[FixedResponseProblem] {
        &self.problems
    }
}

impl std::fmt::Display for FixedResponseError {
    /// `field: message`, separated by `; `.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {problem}", problem.field())?;
        }
        Ok(())
    }
}

impl std::error::Error for FixedResponseError {}

/// A fixed answer the edge sends instead of asking the origin — a rate limiter's denial, a bot
/// scorer's challenge or block page — checked once, when it is configured, and cheap to send
/// after that.
///
/// Several layers let an operator configure such an answer (status, content type, body), and
/// each needs the same checks: the status must be an error (a `200` challenge page would be
/// cached and counted as success by clients and monitors), the content type must be a header
/// value, the body at most [`MAX_FIXED_BODY_BYTES`]. Defining them here keeps the layers from
/// drifting apart. [`new`](Self::new) is the only way to build one, so a `FixedResponse` always
/// passed them.
///
/// Cloning is cheap (reference counts: the body is [`Bytes`], the content type a
/// [`HeaderValue`]), so a compiled configuration can hand one to every request.
/// [`to_response`](Self::to_response) writes it as [`plain_text`] does (`Cache-Control:
/// no-store`, `X-Content-Type-Options: nosniff`), with the configured content type.
///
/// ```
/// use ravelin_http::{FixedResponse, MAX_FIXED_BODY_BYTES};
///
/// let page = FixedResponse::new(403, "text/html; charset=utf-8", "<h1>Forbidden</h1>").unwrap();
/// let response = page.to_response();
/// assert_eq!(response.status(), 403);
/// assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
/// assert_eq!(response.headers()["cache-control"], "no-store");
/// assert_eq!(response.headers()["x-content-type-options"], "nosniff");
/// assert_eq!(response.body().as_ref(), b"<h1>Forbidden</h1>");
///
/// // Every problem is named, with its field.
/// let err = FixedResponse::new(200, "text/plain\n", "x".repeat(MAX_FIXED_BODY_BYTES + 1))
///     .unwrap_err();
/// let fields: Vec<&str> = err.problems().iter().map(|p| p.field()).collect();
/// assert_eq!(fields, ["status", "content_type", "body"]);
/// assert_eq!(err.problems()[0].to_string(), "200 is not a 4xx or 5xx status");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedResponse {
    status: StatusCode,
    content_type: HeaderValue,
    body: Bytes,
}

impl FixedResponse {
    /// Checks and builds a fixed answer.
    ///
    /// # Errors
    /// [`FixedResponseError`] with every problem found: a status outside 400..=599, a content
    /// type that is no valid header value, a body over [`MAX_FIXED_BODY_BYTES`].
    pub fn new(
        status: u16,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<Self, FixedResponseError> {
        let body = body.into();
        let mut problems = Vec::new();
        let status_code = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error());
        if status_code.is_none() {
            problems.push(FixedResponseProblem::Status { status });
        }
        let header = HeaderValue::from_str(content_type).ok();
        if header.is_none() {
            problems.push(FixedResponseProblem::ContentType {
                content_type: content_type.to_owned(),
            });
        }
        if body.len() > MAX_FIXED_BODY_BYTES {
            problems.push(FixedResponseProblem::Body { len: body.len() });
        }
        match (status_code, header) {
            (Some(status), Some(content_type)) if problems.is_empty() => Ok(Self {
                status,
                content_type,
                body,
            }),
            _ => Err(FixedResponseError { problems }),
        }
    }

    /// The status, a client or server error.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Content-Type` value.
    pub fn content_type(&self) -> &HeaderValue {
        &self.content_type
    }

    /// The body, at most [`MAX_FIXED_BODY_BYTES`].
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The response to send: [`plain_text`]'s (`Cache-Control: no-store`,
    /// `X-Content-Type-Options: nosniff`) with this status and body, then this content type.
    /// Costs a few reference-count increments and the header map.
    pub fn to_response(&self) -> Response<Bytes> {
        let mut response = plain_text(self.status, self.body.clone());
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, self.content_type.clone());
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    fn problems(status: u16, content_type: &str, body: &str) -> Vec<FixedResponseProblem> {
        FixedResponse::new(status, content_type, body.to_owned())
            .unwrap_err()
            .problems()
            .to_vec()
    }

    #[test]
    fn a_valid_answer_keeps_its_parts() {
        for status in [400, 403, 429, 499, 500, 503, 599] {
            let fixed = FixedResponse::new(status, "application/json", "{}").unwrap();
            assert_eq!(fixed.status().as_u16(), status);
            assert_eq!(fixed.content_type(), "application/json");
            assert_eq!(fixed.body().as_ref(), b"{}");
        }
        let full = "x".repeat(MAX_FIXED_BODY_BYTES);
        assert!(FixedResponse::new(429, "text/plain", full).is_ok());
        assert!(FixedResponse::new(429, "text/plain", Bytes::new()).is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        for status in [0, 99, 100, 200, 204, 302, 399, 600, 1000] {
            assert_eq!(
                problems(status, "text/plain", "x"),
                [FixedResponseProblem::Status { status }],
                "{status}"
            );
        }
        let bad_type = problems(403, "text/plain\r\nSet-Cookie: a=b", "x");
        assert_eq!(bad_type.len(), 1);
        assert_eq!(bad_type[0].field(), "content_type");
        assert_eq!(
            bad_type[0].to_string(),
            r#""text/plain\r\nSet-Cookie: a=b" is not a valid header value"#
        );
        let long = "x".repeat(MAX_FIXED_BODY_BYTES + 1);
        let too_long = problems(403, "text/plain", &long);
        assert_eq!(too_long, [FixedResponseProblem::Body { len: 65537 }]);
        assert_eq!(too_long[0].field(), "body");
        assert_eq!(
            too_long[0].to_string(),
            "65537 bytes exceeds the limit of 65536"
        );
        assert_eq!(
            FixedResponseProblem::Status { status: 200 }.to_string(),
            "200 is not a 4xx or 5xx status"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let long = "x".repeat(MAX_FIXED_BODY_BYTES + 1);
        let err = FixedResponse::new(200, "a\nb", long).unwrap_err();
        let fields: Vec<_> = err.problems().iter().map(|p| p.field()).collect();
        assert_eq!(fields, ["status", "content_type", "body"]);
        assert_eq!(
            err.to_string(),
            "status: 200 is not a 4xx or 5xx status; content_type: \"a\\nb\" is not a valid \
             header value; body: 65537 bytes exceeds the limit of 65536"
        );
        let two = FixedResponse::new(302, "\0", "ok").unwrap_err();
        assert_eq!(two.problems().len(), 2);
    }

    #[test]
    fn the_response_is_the_edges_own_answer() {
        let fixed = FixedResponse::new(503, "application/problem+json", r#"{"busy":1}"#).unwrap();
        let response = fixed.to_response();
        assert_eq!(response.status(), 503);
        let headers = response.headers();
        assert_eq!(headers.len(), 3, "{headers:?}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(headers.get_all("content-type").iter().count(), 1);
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(response.body().as_ref(), br#"{"busy":1}"#);
        // A clone shares the body.
        let copy = fixed.clone();
        assert_eq!(copy.body().as_ptr(), fixed.body().as_ptr());
        assert_eq!(copy, fixed);
    }
}
