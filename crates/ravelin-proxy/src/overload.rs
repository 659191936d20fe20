//! Load shedding: past a bound on requests in flight, answer `503` with `Retry-After` at once
//! instead of queueing.
//!
//! [`LoadShedLayer`] counts a request in flight from the moment it enters the layer until its
//! response body has been sent or dropped — not only until the response head, as tower's
//! `ConcurrencyLimit` does — so a slow download holds its slot as long as it holds the
//! upstream connection behind it. A request over the bound never reaches the inner service:
//! it is answered
//!
//! ```text
//! HTTP/1.1 503 Service Unavailable
//! retry-after: 1
//! content-type: text/plain; charset=utf-8
//! cache-control: no-store
//!
//! 503 Service Unavailable: the proxy is at capacity; retry later
//! ```
//!
//! and counted in `ravelin_proxy_shed_total{reason="max_requests"}`. Like Envoy's overload
//! manager (`envoy.overload_actions.stop_accepting_requests`) and nginx's `limit_conn`, the
//! answer is immediate: a client told to come back later can go elsewhere or wait where it
//! wants, while a queued request only grows everyone's latency.
//!
//! The layer's state (one semaphore) is created by [`LoadShedLayer::new`] and shared by every
//! clone and every service it wraps, so one layer bounds the whole stack it is applied to.
//! The connection-level counterpart, answering 503 to connections past `max_connections`, is
//! [`ServerConfig::overflow_connections`](crate::ServerConfig::overflow_connections).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use ravelin_primitives::{Validate, Violations};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_layer::Layer;
use tower_service::Service;

/// The body of a request shed by [`LoadShed`].
const SHED_BODY: &str = "503 Service Unavailable: the proxy is at capacity; retry later\n";

/// When requests and connections are shed: [`LoadShedLayer`] reads `max_requests`,
/// [`ServerConfig::overload`](crate::ServerConfig::overload) reads `overflow_connections`,
/// and both answer with `retry_after`.
///
/// | key | default | bounds |
/// |---|---|---|
/// | `max_requests` | 10,000 | 1 to 1,000,000 |
/// | `overflow_connections` | 0 (connections past `max_connections` wait in the backlog) | 0 to 10,000 |
/// | `retry_after` | 1 s | 1 s to 1 h (whole seconds, rounded up) |
///
/// ```
/// use ravelin_proxy::OverloadConfig;
/// use ravelin_primitives::Validate;
///
/// let overload: OverloadConfig = serde_json::from_str(
///     r#"{ "max_requests": 2000, "overflow_connections": 64, "retry_after": "2s" }"#,
/// ).unwrap();
/// overload.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadConfig {
    /// Requests in flight (from arrival until the response body is done) past which new ones
    /// are answered 503.
    pub max_requests: usize,
    /// Connections accepted past the server's `max_connections` only to be answered 503 (see
    /// [`ServerConfig::overflow_connections`](crate::ServerConfig::overflow_connections)).
    pub overflow_connections: usize,
    /// The `Retry-After` of the 503s.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            max_requests: 10_000,
            overflow_connections: 0,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl OverloadConfig {
    /// The most `max_requests`: as many as the server's largest connection limit.
    pub const MAX_REQUESTS_LIMIT: usize = 1_000_000;
    /// The longest `retry_after`.
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
}

// The semaphore would panic above its maximum; the bound keeps far below it.
const _: () = assert!(OverloadConfig::MAX_REQUESTS_LIMIT <= Semaphore::MAX_PERMITS);

impl Validate for OverloadConfig {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        v.check_range(
            "max_requests",
            self.max_requests,
            1..=Self::MAX_REQUESTS_LIMIT,
        );
        v.check_range(
            "overflow_connections",
            self.overflow_connections,
            0..=crate::ServerConfig::OVERFLOW_CONNECTIONS_LIMIT,
        );
        if let Err(reason) = check_retry_after(self.retry_after) {
            v.push("retry_after", reason);
        }
        v.into_result()
    }
}

/// The bounds of a `Retry-After` the proxy writes: 1 s to 1 h.
pub(crate) fn check_retry_after(retry_after: Duration) -> Result<(), String> {
    if retry_after < Duration::from_secs(1) || retry_after > OverloadConfig::MAX_RETRY_AFTER {
        return Err(format!(
            "must be between 1s and {:?}, got {retry_after:?}",
            OverloadConfig::MAX_RETRY_AFTER
        ));
    }
    Ok(())
}

/// A `Retry-After` value in whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_value(retry_after: Duration) -> HeaderValue {
    let mut seconds = retry_after.as_secs();
    if retry_after.subsec_nanos() > 0 {
        seconds = seconds.saturating_add(1);
    }
    HeaderValue::from(seconds.max(1))
}

/// A 503 written by the proxy: `Retry-After`, plain text, never cached.
pub(crate) fn unavailable(retry_after: &HeaderValue, body: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, retry_after.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// === connections past max_connections ===

/// The body of the answer on a connection accepted past `max_connections`.
const OVERFLOW_BODY: &str =
    "503 Service Unavailable: the proxy is at its connection limit; retry later\n";

/// The longest an overflow connection is kept: time for a client to send one request head and
/// read the 503, and no more, so overflow connections cannot hold descriptors for long.
pub(crate) const OVERFLOW_LIFETIME: Duration = Duration::from_secs(2);

/// Serves one connection accepted past `max_connections`: its request is answered 503 with
/// `Retry-After` (and `Connection: close` on HTTP/1.1; `GOAWAY` on HTTP/2) without reaching the
/// service, and the connection is closed after the answer or after [`OVERFLOW_LIFETIME`].
pub(crate) async fn serve_overflow(
    builder: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    stream: tokio::net::TcpStream,
    retry_after: HeaderValue,
    shed: metrics::Counter,
) {
    let answered = Arc::new(tokio::sync::Notify::new());
    let service = {
        let answered = Arc::clone(&answered);
        hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            shed.increment(1);
            answered.notify_one();
            let mut response =
                unavailable(&retry_after, OVERFLOW_BODY).map(http_body_util::Full::new);
            // HTTP/2 has no `Connection` field; its connection ends with the GOAWAY below.
            if request.version() < http::Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        })
    };
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(connection);
    let deadline = tokio::time::Instant::now() + OVERFLOW_LIFETIME;
    tokio::select! {
        // The client left, or HTTP/1.1 closed after the answer.
        _ = connection.as_mut() => return,
        () = answered.notified() => connection.as_mut().graceful_shutdown(),
        () = tokio::time::sleep_until(deadline) => return,
    }
    // HTTP/2: let the answer and the GOAWAY go out.
    let _ = tokio::time::timeout_at(deadline, connection).await;
}

// === LoadShedLayer ===

/// Sheds requests past a bound on requests in flight; see the [module docs](self).
///
/// ```
/// use ravelin_proxy::{Forward, LoadShedLayer, OverloadConfig, Upstream};
/// use tower::ServiceBuilder;
///
/// # fn build() -> Result<(), ravelin_proxy::UpstreamError> {
/// let upstream = Upstream::builder("web", "http://127.0.0.1:3000").build()?;
/// let shed = LoadShedLayer::new(&OverloadConfig { max_requests: 512, ..OverloadConfig::default() });
/// let service = ServiceBuilder::new().layer(shed).service(Forward::new(upstream));
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LoadShedLayer {
    shared: Arc<Shared>,
}

struct Shared {
    permits: Arc<Semaphore>,
    max: usize,
    retry_after: HeaderValue,
    shed: metrics::Counter,
}

impl fmt::Debug for LoadShedLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("max_requests", &self.shared.max)
            .field("in_flight", &self.in_flight())
            .field("retry_after", &self.shared.retry_after)
            .finish()
    }
}

impl LoadShedLayer {
    /// A layer admitting `config.max_requests` requests at once (a value out of bounds is
    /// clamped into them; check the config with [`Validate`] first). The counter handle is
    /// registered here: install the metrics recorder before.
    pub fn new(config: &OverloadConfig) -> Self {
        let max = config
            .max_requests
            .clamp(1, OverloadConfig::MAX_REQUESTS_LIMIT);
        let retry_after = config
            .retry_after
            .clamp(Duration::from_secs(1), OverloadConfig::MAX_RETRY_AFTER);
        Self {
            shared: Arc::new(Shared {
                permits: Arc::new(Semaphore::new(max)),
                max,
                retry_after: retry_after_value(retry_after),
                shed: metrics::counter!("ravelin_proxy_shed_total", "reason" => "max_requests"),
            }),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.shared
            .max
            .saturating_sub(self.shared.permits.available_permits())
    }

    /// The bound.
    pub fn max_requests(&self) -> usize {
        self.shared.max
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> LoadShed<S> {
        LoadShed {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`LoadShedLayer`].
#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for LoadShed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .field("max_requests", &self.shared.max)
            .finish()
    }
}

impl<S> LoadShed<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResB> Service<Request<B>> for LoadShed<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<ShedBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match Arc::clone(&self.shared.permits).try_acquire_owned() {
            Ok(permit) => ResponseFuture::Admitted {
                future: self.inner.call(request),
                permit: Some(Slot(permit)),
            },
            Err(_) => {
                self.shared.shed.increment(1);
                let response = unavailable(&self.shared.retry_after, SHED_BODY);
                ResponseFuture::Shed {
                    response: Some(response.map(ShedBody::local)),
                }
            }
        }
    }
}

/// One admitted request's place among [`LoadShed`]'s `max_requests`: held by the request's
/// response future, then by its body, and given back when dropped. Opaque (issue 17): how slots
/// are counted is the layer's business, not part of its API.
pub struct Slot(
    // Held, never read: dropping it gives the place back.
    #[expect(dead_code, reason = "held for its Drop, which releases the slot")]
    OwnedSemaphorePermit,
);

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

/// The response future of [`LoadShed`]: the inner future, whose response body then holds the
/// request's slot, or the ready 503.
#[pin_project(project = ResponseFutureProj)]
pub enum ResponseFuture<F, B> {
    /// Admitted: the inner service's future and the slot.
    Admitted {
        /// The inner future.
        #[pin]
        future: F,
        /// The slot, handed to the response body.
        permit: Option<Slot>,
    },
    /// Shed: the answer.
    Shed {
        /// Taken when polled.
        response: Option<Response<ShedBody<B>>>,
    },
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admitted { .. } => f.write_str("ResponseFuture::Admitted"),
            Self::Shed { .. } => f.write_str("ResponseFuture::Shed"),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<ShedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Admitted { future, permit } => {
                let response = ready!(future.poll(cx))?;
                let permit = permit.take();
                Poll::Ready(Ok(response.map(|body| ShedBody::Inner {
                    body,
                    _permit: permit,
                })))
            }
            ResponseFutureProj::Shed { response } => {
                let Some(response) = response.take() else {
                    polled_after_completion()
                };
                Poll::Ready(Ok(response))
            }
        }
    }
}

/// The shed answer was polled again after it was given.
#[cold]
#[expect(
    clippy::unreachable,
    reason = "polling a future after it completed is a caller bug; `Future::poll` allows a panic there, and a panic is loud where a never-woken `Pending` would hang the caller silently"
)]
fn polled_after_completion() -> ! {
    unreachable!("LoadShed's ResponseFuture polled after completion")
}

/// The response body of [`LoadShed`]: the inner body holding its request's slot until it is
/// dropped, or the text of a 503.
#[pin_project(project = ShedBodyProj)]
pub enum ShedBody<B> {
    /// An admitted request's body.
    Inner {
        /// The inner body.
        #[pin]
        body: B,
        /// Released when the body is dropped.
        _permit: Option<Slot>,
    },
    /// The 503's text, taken when polled.
    Local {
        /// The bytes not yet sent.
        data: Option<Bytes>,
    },
}

impl<B> ShedBody<B> {
    fn local(data: Bytes) -> Self {
        Self::Local { data: Some(data) }
    }
}

impl<B> fmt::Debug for ShedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inner { .. } => f.write_str("ShedBody::Inner"),
            Self::Local { .. } => f.write_str("ShedBody::Local"),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ShedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            ShedBodyProj::Inner { body, .. } => body.poll_frame(cx),
            ShedBodyProj::Local { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body, .. } => body.is_end_stream(),
            Self::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body, .. } => body.size_hint(),
            Self::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn bounds_name_the_field() {
        OverloadConfig::default().validate().unwrap();
        let bad = OverloadConfig {
            max_requests: 0,
            overflow_connections: 0,
            retry_after: Duration::from_millis(500),
        };
        let text = bad.validate().unwrap_err().to_string();
        assert!(
            text.contains("max_requests") && text.contains("retry_after"),
            "{text}"
        );
        let big = OverloadConfig {
            max_requests: OverloadConfig::MAX_REQUESTS_LIMIT + 1,
            overflow_connections: 10_001,
            retry_after: Duration::from_secs(3601),
        };
        assert_eq!(big.validate().unwrap_err().total(), 3);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_value(Duration::from_secs(1)), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after_value(Duration::ZERO), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1)), "1");
    }

    #[tokio::test]
    async fn the_slot_is_held_until_the_body_is_dropped() {
        let layer = LoadShedLayer::new(&OverloadConfig {
            max_requests: 1,
            ..OverloadConfig::default()
        });
        let service = layer.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
        let first = service.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(layer.in_flight(), 1);
        // The first body is not done: the second request is shed.
        let second = service.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()["retry-after"], "1");
        assert_eq!(second.headers()["cache-control"], "no-store");
        let text = second.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(text, SHED_BODY.as_bytes());
        // Reading the first body to its end and dropping it frees the slot.
        let body = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        assert_eq!(layer.in_flight(), 0);
        let third = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(third.status(), StatusCode::OK);
    }
}
