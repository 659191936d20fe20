//! Body types: the streamed upstream body or a short local answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project::pin_project;

/// The response body of [`Forward`](crate::Forward): the upstream's body streamed frame by frame
/// (never buffered), or a short body the proxy wrote itself (502, 504, 404).
#[pin_project]
#[derive(Debug)]
pub struct ForwardBody {
    #[pin]
    kind: Kind,
}

#[pin_project(project = KindProj)]
#[derive(Debug)]
enum Kind {
    Upstream(#[pin] Incoming),
    Local(#[pin] Full<Bytes>),
}

impl ForwardBody {
    pub(crate) fn upstream(body: Incoming) -> Self {
        Self {
            kind: Kind::Upstream(body),
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
