//! The response future of [`Cache`](crate::Cache).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project::pin_project;

use crate::body::CacheBody;

type BoxFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send>>;

/// The future returned by [`Cache`](crate::Cache).
///
/// A fresh hit is answered without allocating a future: the response is ready when `call`
/// returns. Everything else (coalescing, revalidation, storing) is a sequence of awaits over the
/// inner service's future, kept in one boxed future — which is why this type is generic over the
/// body and error types rather than the inner future.
#[pin_project]
pub struct ResponseFuture<B, E> {
    #[pin]
    state: State<B, E>,
}

#[pin_project(project = StateProj)]
#[expect(
    clippy::large_enum_variant,
    reason = "boxing the ready response would add an allocation to every hit; the future is moved once"
)]
enum State<B, E> {
    Ready(Option<Response<CacheBody<B>>>),
    Boxed(BoxFuture<B, E>),
}

impl<B, E> ResponseFuture<B, E> {
    pub(crate) fn ready(response: Response<CacheBody<B>>) -> Self {
        Self {
            state: State::Ready(Some(response)),
        }
    }

    pub(crate) fn boxed(
        fut: impl Future<Output = Result<Response<CacheBody<B>>, E>> + Send + 'static,
    ) -> Self {
        Self {
            state: State::Boxed(Box::pin(fut)),
        }
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready(r) => match r.take() {
                Some(resp) => Poll::Ready(Ok(resp)),
                None => polled_after_completion(),
            },
            StateProj::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

/// The future was polled again after it completed.
#[cold]
#[expect(
    clippy::unreachable,
    reason = "polling a future after it completed is a caller bug; `Future::poll` allows a panic there, and a panic is loud where a never-woken `Pending` would hang the caller silently"
)]
fn polled_after_completion() -> ! {
    unreachable!("CacheLayer's ResponseFuture polled after completion")
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Ready(_) => "ready",
            State::Boxed(_) => "pending",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
