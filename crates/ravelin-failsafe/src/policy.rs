//! What happens to a request when its guard cannot decide.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};

/// The request header [`FailurePolicy::skip_header`] is usually given: `x-ravelin-skipped`,
/// one field naming every skipped guard and why (`ratelimit=timed_out, botscore=killed`, an
/// RFC 8941 dictionary), so the origin can tell "not checked" from "checked and allowed".
/// Defined in `ravelin-http`, where the proxy's ingress stage finds it too.
pub use ravelin_http::X_RAVELIN_SKIPPED;

/// Which way a guard fails: defined in `ravelin-primitives`, where `/status` finds it too.
pub use ravelin_primitives::FailureMode;

/// What a [`GuardLayer`](crate::GuardLayer) does with a request when its guard errors, panics,
/// times out or has its circuit open. Declared per guard.
///
/// - [`FailurePolicy::open`] (the default): the request continues as if the guard were absent.
///   The request gets the [`Skipped`](crate::Skipped) extension naming the guard and why, and,
///   if configured, a [`skip_header`](Self::skip_header) for the origin. Right for guards whose
///   failure should cost protection, not availability: rate limiting, bot scoring. Envoy's
///   rate-limit filter fails open the same way (`failure_mode_deny: false`).
/// - [`FailurePolicy::closed`]: the request is answered with `503 Service Unavailable`, a short
///   `text/plain` body and `Retry-After: 5`; the inner service is not called. Right for guards
///   that authorize, where letting a request through unchecked is worse than refusing it.
///   Envoy's `ext_authz` fails closed by default (`failure_mode_allow: false`, with 403).
///   Ravelin answers 503 rather than 403: the client did nothing wrong, the check is broken,
///   and 503 with `Retry-After` tells clients and monitors exactly that.
///
/// Open is the default because the outage this crate answers (18 November 2025) was a
/// protective module whose failure became a 5xx for all traffic: a guard's bug should not turn
/// into an outage unless its author decided so.
///
/// ```
/// use ravelin_failsafe::{FailurePolicy, X_RAVELIN_SKIPPED};
/// use http::StatusCode;
/// use std::time::Duration;
///
/// let scoring = FailurePolicy::open().skip_header(X_RAVELIN_SKIPPED);
/// let authz = FailurePolicy::closed()
///     .status(StatusCode::FORBIDDEN)
///     .body("access check unavailable\n")
///     .retry_after(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
pub struct FailurePolicy {
    mode: FailureMode,
    skip_header: Option<HeaderName>,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The default `Retry-After` of a fail-closed response, in seconds.
const DEFAULT_RETRY_AFTER_SECS: u64 = 5;

impl FailurePolicy {
    /// Fail open: the request continues without the guard's verdict.
    pub fn open() -> Self {
        Self::with_mode(FailureMode::Open)
    }

    /// Fail closed: the request is answered with the failure response (by default 503, a short
    /// `text/plain` body and `Retry-After: 5`).
    pub fn closed() -> Self {
        Self::with_mode(FailureMode::Closed)
    }

    fn with_mode(mode: FailureMode) -> Self {
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(CONTENT_TYPE, ravelin_http::TEXT_PLAIN_UTF8);
        headers.insert(RETRY_AFTER, HeaderValue::from(DEFAULT_RETRY_AFTER_SECS));
        Self {
            mode,
            skip_header: None,
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers,
            body: Bytes::from_static(b"service unavailable: a request check failed\n"),
        }
    }

    /// The mode.
    pub fn mode(&self) -> FailureMode {
        self.mode
    }

    /// Marks every request that goes on without the guard (a fail-open failure, or the kill
    /// switch) in header `name`. Off by default, as Envoy's `failure_mode_allow_header_add`.
    /// Usually [`X_RAVELIN_SKIPPED`].
    ///
    /// The header is one field for the whole request, rendered from every guard marked in it
    /// so far (see [`Skipped::header_value`](crate::Skipped::header_value)):
    /// `x-ravelin-skipped: ratelimit=timed_out, botscore=killed`. Each skipping layer rewrites
    /// it, so the origin sees one field line, not one per guard. The guard's name must be a
    /// structured-field key (see [`Guard::name`](crate::Guard::name)); the layer's `build`
    /// refuses it otherwise.
    ///
    /// The [`Skipped`](crate::Skipped) extension is set either way; the header is for origins
    /// behind a proxy. Strip client-sent copies of it at the edge if the origin trusts it (a
    /// skipping layer replaces any copy, but a request no guard skipped keeps it).
    pub fn skip_header(mut self, name: HeaderName) -> Self {
        self.skip_header = Some(name);
        self
    }

    /// The skip header, if any.
    pub fn skip_header_name(&self) -> Option<&HeaderName> {
        self.skip_header.as_ref()
    }

    /// The fail-closed response status.
    pub(crate) fn failure_status(&self) -> StatusCode {
        self.status
    }

    /// The length of the fail-closed response body, in bytes.
    pub(crate) fn failure_body_len(&self) -> usize {
        self.body.len()
    }

    /// Fail-closed response status (default 503; a layer refuses anything but a 4xx or 5xx).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Fail-closed response body (default a one-line `text/plain` message). Keep it short and
    /// free of internals: it goes to clients.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets (replaces) a header of the fail-closed response, e.g. `content-type`.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// `Retry-After` of the fail-closed response, in whole seconds rounded up (default 5 s).
    pub fn retry_after(self, after: Duration) -> Self {
        let secs = after
            .as_secs()
            .saturating_add(u64::from(after.subsec_nanos() > 0));
        self.header(RETRY_AFTER, HeaderValue::from(secs))
    }

    /// No `Retry-After` on the fail-closed response.
    pub fn no_retry_after(mut self) -> Self {
        self.headers.remove(RETRY_AFTER);
        self
    }

    /// The fail-closed response, built fresh for one request.
    pub fn failure_response(&self) -> Response<Bytes> {
        let mut response = Response::new(self.body.clone());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

impl Default for FailurePolicy {
    /// [`FailurePolicy::open`].
    fn default() -> Self {
        Self::open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_default_is_a_short_503_with_retry_after() {
        let response = FailurePolicy::closed().failure_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert!(response.body().len() < 100);
    }

    #[test]
    fn retry_after_rounds_up_and_can_be_removed() {
        let policy = FailurePolicy::closed().retry_after(Duration::from_millis(1500));
        assert_eq!(policy.failure_response().headers()[RETRY_AFTER], "2");
        let policy = policy.no_retry_after();
        assert!(
            policy
                .failure_response()
                .headers()
                .get(RETRY_AFTER)
                .is_none()
        );
    }

    #[test]
    fn open_is_the_default() {
        assert_eq!(FailurePolicy::default().mode(), FailureMode::Open);
        assert_eq!(FailureMode::Closed.as_str(), "closed");
    }
}
