//! [`GuardService`]: the service a [`GuardLayer`](crate::GuardLayer) makes.

use std::fmt;
use std::mem;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use tower_service::Service;

use crate::body::GuardBody;
use crate::circuit::Rejected;
use crate::future::{ResponseFuture, Tracker};
use crate::guard::{Guard, RequestHead, SkipReason};
use crate::handle::GuardHandle;
use crate::metrics::Outcome;
use crate::panic::contain;
use crate::shared::{Applied, Failure, Shared};

/// Applies a [`Guard`] to each request before the inner service; see
/// [`GuardLayer`](crate::GuardLayer).
///
/// Always as ready as the inner service: `poll_ready` delegates, and the guard decides in
/// `call` and the response future (as tower's `LoadShed` does, never by queueing). Because the
/// guard may be asynchronous, the inner service that `poll_ready` made ready travels with the
/// request and is called once the guard allows it; a clone takes its place (tower's
/// clone-and-swap idiom), hence `S: Clone`.
///
/// The inner service's error passes through unchanged. Responses have a [`GuardBody`]: the
/// inner body, or a complete body when the guard or the fail-closed policy answered.
pub struct GuardService<S, G> {
    inner: S,
    guard: Arc<G>,
    shared: Arc<Shared>,
}

// === impl GuardService ===

impl<S, G> GuardService<S, G> {
    pub(crate) fn from_parts(inner: S, guard: Arc<G>, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            guard,
            shared,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The guard.
    pub fn guard(&self) -> &G {
        &self.guard
    }

    /// The guard's control handle (the same state as the layer's).
    pub fn handle(&self) -> GuardHandle {
        GuardHandle::new(self.shared.clone())
    }
}

impl<S, G> GuardService<S, G> {
    /// Applies the failure policy in `call`, where the ready inner service is at hand.
    fn apply<ReqB>(
        &mut self,
        request: Request<ReqB>,
        failure: Failure,
    ) -> ResponseFuture<S, G, ReqB>
    where
        S: Service<Request<ReqB>>,
        G: Guard,
    {
        match self.shared.fail(request, failure) {
            Applied::Forward(request) => {
                ResponseFuture::calling(self.inner.call(request), HeaderMap::new())
            }
            Applied::Respond(response) => ResponseFuture::respond(response),
        }
    }
}

impl<S, G, ReqB, ResB> Service<Request<ReqB>> for GuardService<S, G>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    G: Guard,
{
    type Response = Response<GuardBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, G, ReqB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let shared = &*self.shared;
        if shared.is_killed() {
            shared.metrics.count(Outcome::Killed);
            shared.mark_skipped(&mut request, SkipReason::Killed);
            return ResponseFuture::calling(self.inner.call(request), HeaderMap::new());
        }
        let permit = match shared.breaker.acquire() {
            Ok(permit) => permit,
            Err(Rejected) => return self.apply(request, Failure::CircuitOpen),
        };
        let start = Instant::now();
        let head = RequestHead::from_request(&request);
        // Why `AssertUnwindSafe` is sound: unwind safety is about code observing state that a
        // panic left half-updated. Here the panicking code is the guard's `check`, which sees
        // the request only through `&` (the request is not mutated, and is used afterwards
        // only to be forwarded or dropped), and the guard itself through `&`. What a panic
        // may have left half-updated is the guard's own shared state, behind interior
        // mutability; the `Guard` trait requires that state to be panic-tolerant (poisoning
        // locks handled, atomics, no invariant spread across a panic point), and that is the
        // guard author's contract, as it is for any `Sync` type used across threads.
        let checked = contain(AssertUnwindSafe(|| self.guard.check(&head)));
        match checked {
            Ok(future) => {
                let clone = self.inner.clone();
                let inner = mem::replace(&mut self.inner, clone);
                ResponseFuture::checking(
                    future,
                    request,
                    inner,
                    Tracker::new(self.shared.clone(), permit, start),
                )
            }
            Err(panic) => {
                shared.breaker.record(permit, false);
                shared.observe_duration(start);
                self.apply(request, Failure::Panicked(panic))
            }
        }
    }
}

impl<S: Clone, G> Clone for GuardService<S, G> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            guard: self.guard.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, G> fmt::Debug for GuardService<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardService")
            .field("inner", &self.inner)
            .field("guard", &std::any::type_name::<G>())
            .field("shared", &self.shared)
            .finish()
    }
}
