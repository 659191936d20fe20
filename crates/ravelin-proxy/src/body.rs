//! Body types: the streamed upstream body (under an idle timeout) or a short local answer, and
//! the watched request body that tells a client's fault from the upstream's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project::pin_project;
use ravelin_primitives::LogLimiter;
use tokio::time::{Instant, Sleep};

use crate::forward::BoxError;

/// Why a [`ForwardBody`] ended with an error. Either way the response to the client is cut
/// off (hyper closes an HTTP/1.1 connection mid-body, resets an HTTP/2 stream), and a cache
/// filling from the body sees the error and does not store the truncated copy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardBodyError {
    /// The upstream connection failed while the body streamed (reset, malformed chunk).
    #[error("the upstream body failed: {0}")]
    Upstream(hyper::Error),
    /// No frame arrived from the upstream within its `body_idle_timeout`
    /// ([`UpstreamBuilder::body_idle_timeout`](crate::UpstreamBuilder::body_idle_timeout)).
    #[error("upstream {upstream:?} sent no body data for {timeout:?} (body_idle_timeout)")]
    IdleTimeout {
        /// The upstream's name.
        upstream: Arc<str>,
        /// The idle timeout that passed.
        timeout: Duration,
    },
}

impl From<hyper::Error> for ForwardBodyError {
    fn from(error: hyper::Error) -> Self {
        Self::Upstream(error)
    }
}

impl ForwardBodyError {
    /// Whether the body was cut by the idle timeout.
    pub fn is_idle_timeout(&self) -> bool {
        matches!(self, Self::IdleTimeout { .. })
    }

    /// The `kind` label of the failure: `upstream` or `idle_timeout`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Upstream(_) => "upstream",
            Self::IdleTimeout { .. } => "idle_timeout",
        }
    }
}

/// What an upstream body is watched with: one per upstream, shared by its responses.
pub(crate) struct IdleWatch {
    pub(crate) upstream: Arc<str>,
    pub(crate) timeout: Duration,
    /// `ravelin_proxy_upstream_errors_total{kind="body_idle_timeout"}`.
    pub(crate) timeouts: metrics::Counter,
    pub(crate) log: LogLimiter,
}

impl std::fmt::Debug for IdleWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleWatch")
            .field("upstream", &self.upstream)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The response body of [`Forward`](crate::Forward): the upstream's body streamed frame by frame
/// (never buffered) under the upstream's body idle timeout, or a short body the proxy wrote
/// itself (502, 504, 404, 400).
#[pin_project]
#[derive(Debug)]
pub struct ForwardBody {
    #[pin]
    kind: Kind,
}

#[pin_project(project = KindProj)]
#[derive(Debug)]
enum Kind {
    Upstream(#[pin] IdleBody<Incoming>),
    Local(#[pin] Full<Bytes>),
}

impl ForwardBody {
    pub(crate) fn upstream(body: Incoming, watch: Arc<IdleWatch>) -> Self {
        Self {
            kind: Kind::Upstream(IdleBody::new(body, watch)),
        }
    }

    /// A body the proxy wrote itself.
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Local(Full::new(bytes.into())),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::local(Bytes::new())
    }

    /// Whether the body streams from the upstream (rather than being written by the proxy).
    pub fn is_upstream(&self) -> bool {
        matches!(self.kind, Kind::Upstream(_))
    }
}

impl Default for ForwardBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = ForwardBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ForwardBodyError>>> {
        match self.project().kind.project() {
            KindProj::Upstream(body) => body.poll_frame(cx),
            KindProj::Local(body) => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body) => body.size_hint(),
            Kind::Local(body) => body.size_hint(),
        }
    }
}

// === impl IdleBody ===

/// A body that ends with [`ForwardBodyError::IdleTimeout`] when no frame arrives from `body`
/// within the watch's timeout (nginx's `proxy_read_timeout`, measured between frames).
#[pin_project]
#[derive(Debug)]
struct IdleBody<B> {
    #[pin]
    body: B,
    watch: Arc<IdleWatch>,
    /// When the last frame arrived (or the body was created).
    last_frame: Instant,
    /// Armed the first time the body is pending, then re-armed lazily: a frame only records
    /// its time, and the timer moves when it fires early. One clock read per frame, no
    /// timer-wheel work per frame.
    idle: Option<Pin<Box<Sleep>>>,
    /// Set once the idle timeout fired: the body is over.
    expired: bool,
}

impl<B> IdleBody<B> {
    fn new(body: B, watch: Arc<IdleWatch>) -> Self {
        Self {
            body,
            watch,
            last_frame: Instant::now(),
            idle: None,
            expired: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<ForwardBodyError>,
{
    type Data = Bytes;
    type Error = ForwardBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ForwardBodyError>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.last_frame = Instant::now();
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let watch = &**this.watch;
        let deadline = *this.last_frame + watch.timeout;
        let sleep = this
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer was armed before the latest frame: move it and wait again.
            let deadline = *this.last_frame + watch.timeout;
            if deadline > Instant::now() {
                sleep.as_mut().reset(deadline);
                continue;
            }
            *this.expired = true;
            watch.timeouts.increment(1);
            if let Some(permit) = watch.log.check() {
                tracing::warn!(
                    upstream = &*watch.upstream,
                    timeout_ms = u64::try_from(watch.timeout.as_millis()).unwrap_or(u64::MAX),
                    suppressed = permit.suppressed(),
                    "upstream body idle for longer than body_idle_timeout; response aborted"
                );
            }
            return Poll::Ready(Some(Err(ForwardBodyError::IdleTimeout {
                upstream: Arc::clone(&watch.upstream),
                timeout: watch.timeout,
            })));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

// === impl WatchedBody ===

/// A request body on its way upstream that records whether it failed, so that a failed
/// upstream exchange can be blamed on the client (a malformed chunk, a reset mid-upload)
/// instead of on the upstream.
#[pin_project]
#[derive(Debug)]
pub(crate) struct WatchedBody<B> {
    #[pin]
    inner: B,
    failed: Arc<AtomicBool>,
}

impl<B> WatchedBody<B> {
    /// Wraps `inner`; the flag turns true when it yields an error.
    pub(crate) fn new(inner: B) -> (Self, Arc<AtomicBool>) {
        let failed = Arc::new(AtomicBool::new(false));
        (
            Self {
                inner,
                failed: Arc::clone(&failed),
            },
            failed,
        )
    }
}

impl<B> Body for WatchedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(error))) => {
                this.failed.store(true, Ordering::Release);
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn watch(timeout: Duration) -> Arc<IdleWatch> {
        Arc::new(IdleWatch {
            upstream: Arc::from("test"),
            timeout,
            timeouts: metrics::Counter::noop(),
            log: LogLimiter::per_second(1),
        })
    }

    /// Frames spaced under the timeout pass however long the whole body takes; a gap over it
    /// ends the body with the idle error, after which it yields nothing more.
    #[tokio::test(start_paused = true)]
    async fn idle_body_cuts_a_stalled_stream_only() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, ForwardBodyError>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let body = IdleBody::new(
            http_body_util::StreamBody::new(stream),
            watch(Duration::from_secs(1)),
        );
        let mut body = std::pin::pin!(body);
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            // Stall with the sender alive.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..5 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is_idle_timeout(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
        feeder.abort();
    }

    #[tokio::test]
    async fn watched_body_records_an_error() {
        let failing = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err::<Frame<Bytes>, std::io::Error>(std::io::Error::other("bad chunk")),
        ]));
        let (body, failed) = WatchedBody::new(failing);
        assert!(body.collect().await.is_err());
        assert!(failed.load(Ordering::Acquire));

        let (body, failed) = WatchedBody::new(Full::new(Bytes::from_static(b"ok")));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        assert!(!failed.load(Ordering::Acquire));
    }
}
