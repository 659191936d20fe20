//! What the rate limiter answers itself: the denial ([`ResponseTemplate`], 429 by default) and,
//! for a rule keyed by `client_ip` on a request with no peer address, [`MissingPeer`].

use bytes::Bytes;
use http::{Response, StatusCode};
use ravelin_config::Violations;
use ravelin_http::{FixedResponse, FixedResponseError, plain_text};
use serde::{Deserialize, Serialize};

/// Maximum size of a [`ResponseTemplate`] body: [`ravelin_http::MAX_FIXED_BODY_BYTES`], the
/// bound of every fixed answer (bot-score's templates too).
pub const MAX_BODY_BYTES: usize = ravelin_http::MAX_FIXED_BODY_BYTES;

/// The answer to a request an enforcing rule limits: status, content type and body. The
/// `Retry-After` and `RateLimit` / `RateLimit-Policy` fields are added to it as to the default
/// one, with `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`.
///
/// The same shape and names as `ravelin-botscore`'s block and challenge templates, so one
/// configuration reads alike in both: `denied_response = { status = 503, body = "busy\n" }`.
///
/// ```
/// use http::StatusCode;
/// use ravelin_ratelimit::ResponseTemplate;
///
/// let json = ResponseTemplate::new(StatusCode::TOO_MANY_REQUESTS, r#"{"error":"rate_limited"}"#)
///     .content_type("application/json");
/// assert_eq!(ResponseTemplate::default().status, 429);
/// # let _ = json;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseTemplate {
    /// Status code (400..=599; 429 by default, 503 for clients that only back off on it).
    pub status: u16,
    /// `content-type` of the body (default `text/plain; charset=utf-8`).
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The body (at most [`MAX_BODY_BYTES`]).
    #[serde(default)]
    pub body: String,
}

fn default_content_type() -> String {
    "text/plain; charset=utf-8".into()
}

impl ResponseTemplate {
    /// A template with `status` and a plain-text `body`.
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status: status.as_u16(),
            content_type: default_content_type(),
            body: body.into(),
        }
    }

    /// Sets the content type (e.g. `application/problem+json`).
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// The default denial: 429 `too many requests`.
    pub fn default_denied() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too many requests\n")
    }

    /// Records what makes this template unusable, under `what` (`denied_response`): each
    /// problem [`FixedResponse::new`] finds, as `{what}.{field}`.
    pub(crate) fn check(&self, what: &str, v: &mut Violations) {
        if let Err(err) = self.compile() {
            record_problems(what, &err, v);
        }
    }

    /// The response to send, checked by [`FixedResponse::new`], or every reason it is not
    /// usable (what [`check`](Self::check) records).
    pub(crate) fn compile(&self) -> Result<FixedResponse, FixedResponseError> {
        FixedResponse::new(self.status, &self.content_type, self.body.clone())
    }
}

/// Records each of `err`'s problems under `{what}.{field}`.
pub(crate) fn record_problems(what: &str, err: &FixedResponseError, v: &mut Violations) {
    for problem in err.problems() {
        v.push(format!("{what}.{}", problem.field()), problem.to_string());
    }
}

impl Default for ResponseTemplate {
    /// [`ResponseTemplate::default_denied`].
    fn default() -> Self {
        Self::default_denied()
    }
}

/// The built-in denial, [`ResponseTemplate::default_denied`] as a response: what is sent when
/// no usable template was compiled (never, in practice: documents are validated first).
pub(crate) fn default_denied_response() -> Response<Bytes> {
    plain_text(
        StatusCode::TOO_MANY_REQUESTS,
        Bytes::from_static(b"too many requests\n"),
    )
}

/// What a rule keyed by `client_ip` does with a request that has no peer address (no
/// [`PeerAddr`](ravelin_http::PeerAddr) extension: nothing in front of the rate limiter set
/// it).
///
/// Without an address the rule has no key, so it cannot limit anyone; silently letting such
/// requests through would leave a service unprotected while its configuration looks right.
/// Hence the default, [`Reject`](MissingPeer::Reject): the request is answered `500` with a
/// body naming the fix, an error is logged (a few lines per second at most) and
/// `ravelin_ratelimit_missing_peer_total{rule}` counts it. The answer is the guard's verdict,
/// not an error, so a fail-open guard policy cannot swallow it. A `shadow` rule never blocks:
/// it logs and counts, and the request goes on.
///
/// The edge always sets the address, so there it never applies. In a `[ratelimit]` or rules
/// document: `missing_peer = "reject"` or `"skip"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPeer {
    /// Answer `500` with [`MISSING_PEER_BODY`], log an error, count it (default).
    #[default]
    Reject,
    /// Skip the rule for this request (counted as `outcome="skipped"`, logged as a warning):
    /// the behaviour before this setting existed, for services where some requests
    /// legitimately arrive without an address (a Unix socket) and are limited otherwise.
    Skip,
}

impl MissingPeer {
    /// A short stable name, for logs and metric labels: `reject`, `skip`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MissingPeer::Reject => "reject",
            MissingPeer::Skip => "skip",
        }
    }
}

/// The body of the `500` answered under [`MissingPeer::Reject`]: what to add.
pub const MISSING_PEER_BODY: &str = "rate limiting is misconfigured: a rule keyed by client_ip found no client address (no ravelin_http::PeerAddr extension on the request); add ravelin_http::PeerAddrLayer in front of the rate limiter (axum: PeerAddrLayer::new() with the `axum` feature, serving with into_make_service_with_connect_info::<SocketAddr>(); hyper: PeerAddrLayer::fixed(addr) for each accepted connection), or set missing_peer = \"skip\".\n";

/// The `500` answered under [`MissingPeer::Reject`].
pub(crate) fn missing_peer_response() -> Response<Bytes> {
    plain_text(
        StatusCode::INTERNAL_SERVER_ERROR,
        Bytes::from_static(MISSING_PEER_BODY.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_template_is_checked_field_by_field() {
        let mut v = Violations::new();
        ResponseTemplate::new(StatusCode::OK, "x".repeat(MAX_BODY_BYTES + 1))
            .content_type("bad\nvalue")
            .check("denied_response", &mut v);
        let text = v.to_string();
        for field in [
            "denied_response.status: 200 is not a 4xx or 5xx status",
            "denied_response.content_type",
            "denied_response.body",
        ] {
            assert!(text.contains(field), "{text}");
        }
        let mut ok = Violations::new();
        ResponseTemplate::default().check("denied_response", &mut ok);
        assert!(ok.into_result().is_ok());
    }

    #[test]
    fn the_default_template_is_the_default_answer() {
        let compiled = ResponseTemplate::default().compile().unwrap().to_response();
        let builtin = default_denied_response();
        assert_eq!(compiled.status(), builtin.status());
        assert_eq!(compiled.headers(), builtin.headers());
        assert_eq!(compiled.body(), builtin.body());
        assert_eq!(compiled.headers()["cache-control"], "no-store");
    }

    #[test]
    fn the_missing_peer_answer_names_the_fix() {
        let response = missing_peer_response();
        assert_eq!(response.status(), 500);
        let body = std::str::from_utf8(response.body()).unwrap();
        assert!(
            body.contains("PeerAddrLayer") && body.contains("into_make_service_with_connect_info")
        );
    }
}
