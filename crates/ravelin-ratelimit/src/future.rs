//! The futures of this crate, named for what they resolve to (after tower-http's `future`
//! modules): [`CheckFuture`], the guard's verdict; [`ResponseFuture`], the response of a
//! [`RateLimit`](crate::RateLimit) service; and, with the `redis` feature, `StoreFuture`, a
//! boxed batch of store decisions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use ravelin_failsafe::{GuardError, Verdict};

use crate::gcra::Decision;
use crate::guard::{Plan, RateLimitGuard};
use crate::memory::MemoryStore;
use crate::store::StoreError;

/// The guard layer's response future, generic over the guard: what [`ResponseFuture`] is with
/// the guard fixed (re-exported so the alias can be followed without ravelin-failsafe).
pub use ravelin_failsafe::future::ResponseFuture as GuardResponseFuture;

/// The response future of a [`RateLimit`](crate::RateLimit) service: the guard layer's
/// ([`ravelin_failsafe::future::ResponseFuture`]) around a [`RateLimitGuard`] on store `S`,
/// for inner service `Svc` and request body `B`.
pub type ResponseFuture<Svc, B, S = MemoryStore> =
    ravelin_failsafe::future::ResponseFuture<Svc, RateLimitGuard<S>, B>;

/// A boxed future of a batch's decisions: what the Redis stores
/// ([`RedisStore`](crate::redis::RedisStore), [`FallbackStore`](crate::redis::FallbackStore))
/// return from [`RateLimitStore::check`](crate::RateLimitStore::check).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub type StoreFuture = Pin<Box<dyn Future<Output = Result<Vec<Decision>, StoreError>> + Send>>;

/// The future of a [`RateLimitGuard`]'s verdict ([`Guard::check`](ravelin_failsafe::Guard::check)):
/// ready at once when no rule applies or the store answers synchronously (the in-memory store),
/// else waiting for the store. Not a service's response future: the layer's is
/// [`ResponseFuture`].
#[pin_project]
pub struct CheckFuture<F> {
    #[pin]
    state: State<F>,
}

#[pin_project(project = StateProj)]
enum State<F> {
    Ready(Option<Result<Verdict, GuardError>>),
    Waiting {
        #[pin]
        future: F,
        plan: Option<Plan>,
    },
}

impl<F> CheckFuture<F> {
    pub(crate) fn ready(result: Result<Verdict, GuardError>) -> Self {
        Self {
            state: State::Ready(Some(result)),
        }
    }

    pub(crate) fn waiting(future: F, plan: Plan) -> Self {
        Self {
            state: State::Waiting {
                future,
                plan: Some(plan),
            },
        }
    }
}

impl<F> fmt::Debug for CheckFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready(_) => "ready",
            State::Waiting { .. } => "waiting",
        };
        f.debug_struct("CheckFuture")
            .field("state", &state)
            .finish()
    }
}

/// The future was polled again after it completed.
#[cold]
#[expect(
    clippy::unreachable,
    reason = "polling a future after it completed is a caller bug; `Future::poll` allows a panic there, and a panic is loud where a never-woken `Pending` would hang the caller silently"
)]
fn polled_after_completion() -> ! {
    unreachable!("the rate-limit check future polled after completion")
}

impl<F> Future for CheckFuture<F>
where
    F: Future<Output = Result<Vec<Decision>, StoreError>>,
{
    type Output = Result<Verdict, GuardError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready(result) => match result.take() {
                Some(result) => Poll::Ready(result),
                None => polled_after_completion(),
            },
            StateProj::Waiting { future, plan } => {
                let decisions = std::task::ready!(future.poll(cx));
                match plan.take() {
                    Some(plan) => Poll::Ready(plan.verdict(decisions)),
                    None => polled_after_completion(),
                }
            }
        }
    }
}
