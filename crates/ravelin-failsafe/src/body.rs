//! The response body of a guarded service.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

/// The body of a [`GuardService`](crate::GuardService) response: the inner service's body, or
/// a complete body the guard layer produced (a guard's `Respond` verdict, a fail-closed
/// response).
///
/// No boxing: the inner body is polled in place.
#[pin_project]
#[derive(Debug)]
pub struct GuardBody<B> {
    #[pin]
    kind: Kind<B>,
}

#[pin_project(project = KindProj)]
#[derive(Debug)]
enum Kind<B> {
    Inner(#[pin] B),
    /// `None` once sent (or when empty).
    Full(Option<Bytes>),
}

impl<B> GuardBody<B> {
    /// Wraps the inner service's body.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner(body),
        }
    }

    /// A complete body.
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full((!data.is_empty()).then_some(data)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// Whether this is the inner service's body (not a response made by the guard layer).
    pub fn is_inner(&self) -> bool {
        matches!(self.kind, Kind::Inner(_))
    }

    /// The inner service's body, if this is one.
    pub fn into_inner(self) -> Option<B> {
        match self.kind {
            Kind::Inner(body) => Some(body),
            Kind::Full(_) => None,
        }
    }
}

impl<B> Default for GuardBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> Body for GuardBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner(body) => body.poll_frame(cx),
            KindProj::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner(body) => body.is_end_stream(),
            Kind::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner(body) => body.size_hint(),
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn full_body_yields_its_bytes_once() {
        let body: GuardBody<Full<Bytes>> = GuardBody::full(Bytes::from_static(b"no"));
        assert!(!body.is_inner());
        assert_eq!(body.size_hint().exact(), Some(2));
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "no");
    }

    #[tokio::test]
    async fn inner_body_passes_through() {
        let body = GuardBody::new(Full::new(Bytes::from_static(b"origin")));
        assert!(body.is_inner());
        assert_eq!(body.size_hint().exact(), Some(6));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "origin");
    }

    #[test]
    fn empty_body_is_at_its_end() {
        let body: GuardBody<Full<Bytes>> = GuardBody::full(Bytes::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(GuardBody::<Full<Bytes>>::default().is_end_stream());
    }
}
