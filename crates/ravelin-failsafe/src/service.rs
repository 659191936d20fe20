//! [`GuardService`]: the service a [`GuardLayer`](crate::GuardLayer) makes.

use std::any::Any;
use std::fmt;
use std::future::Ready;
use std::mem;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::body::GuardBody;
use crate::circuit::Rejected;
use crate::future::{ResponseFuture, Tracker};
use crate::guard::{Guard, GuardError, GuardErrorKind, RequestHead, SkipReason, Verdict};
use crate::handle::GuardHandle;
use crate::metrics::Outcome;
use crate::panic::contain;
use crate::shared::{Decision, Failure, Shared};

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
    /// Carries out a decision taken in `call`, where the ready inner service is at hand.
    #[inline]
    fn settle<ReqB>(
        &mut self,
        mut request: Request<ReqB>,
        result: Result<Verdict, Failure>,
    ) -> ResponseFuture<S, G, ReqB>
    where
        S: Service<Request<ReqB>>,
        G: Guard,
    {
        match self.shared.decide(&mut request, result) {
            Decision::Forward(annotations) => {
                ResponseFuture::calling(self.inner.call(request), annotations)
            }
            Decision::Respond(response) => ResponseFuture::respond(response),
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
        // Client copies of the headers the guard owns go first, whatever happens next: the
        // inner service trusts them to come from the guard.
        for name in self.guard.owned_headers() {
            request.headers_mut().remove(name);
        }
        if self.shared.is_killed() {
            self.shared.metrics.count(Outcome::Killed);
            self.shared.mark_skipped(&mut request, SkipReason::Killed);
            return ResponseFuture::calling(self.inner.call(request), None);
        }
        // Every answer reached here flows to the one `settle` below (one call site, so it is
        // inlined and the request is not copied once more on the way).
        let result = 'decided: {
            let permit = match self.shared.breaker.acquire() {
                Ok(permit) => permit,
                Err(Rejected) => break 'decided Err(Failure::CircuitOpen),
            };
            // One clock read here and one when the guard has answered: a guard that answers
            // after its budget is held to it (see `Shared::within_budget`).
            let timing = self.shared.start_timing();

            // The future is written to a slot rather than returned through `catch_unwind`,
            // which would move it (and, for a ready verdict, all of it) a few more times.
            let mut checked: Option<G::Future> = None;
            let head = RequestHead::from_request(&request);
            let guard = &*self.guard;
            // Why `AssertUnwindSafe` is sound: unwind safety is about code observing state
            // that a panic left half-updated. Here the panicking code is the guard's `check`,
            // which sees the request only through `&` (the request is not mutated, and is
            // used afterwards only to be forwarded or dropped), and the guard itself through
            // `&`. What a panic may have left half-updated is the guard's own shared state,
            // behind interior mutability; the `Guard` trait requires that state to be
            // panic-tolerant (poisoning locks handled, atomics, no invariant spread across a
            // panic point), and that is the guard author's contract, as it is for any `Sync`
            // type used across threads. The slot is `None` or a complete future: a panic
            // inside `check` never writes it.
            let contained = contain(AssertUnwindSafe(|| checked = Some(guard.check(&head))));
            if let Err(panic) = contained {
                self.shared.breaker.record(permit, false);
                let _ = self.shared.finish_timing(&timing);
                break 'decided Err(Failure::Panicked(panic));
            }

            // A synchronous guard (`type Future = std::future::Ready<..>`, as `guard_fn`) has
            // its verdict already: decide here, call the inner service now, and skip the clone
            // of the inner service and the state the response future would otherwise carry.
            // The type test is resolved at compile time. Its work is done: if it took longer
            // than the timeout, its verdict is discarded and the policy applies.
            if let Some(ready) = (&mut checked as &mut dyn Any)
                .downcast_mut::<Option<Ready<Result<Verdict, GuardError>>>>()
                && let Some(ready) = ready.take()
            {
                let result = self
                    .shared
                    .within_budget(&timing, ready.into_inner().map_err(Failure::Error));
                self.shared.breaker.record(permit, result.is_ok());
                break 'decided result;
            }

            let Some(future) = checked else {
                // `contain` returned normally, so the closure ran to its end and filled it.
                self.shared.breaker.record(permit, false);
                break 'decided Err(Failure::Error(GuardError::new(
                    GuardErrorKind::Internal,
                    "guard produced no future",
                )));
            };
            // The inner service that `poll_ready` made ready goes with the request, to be
            // called once the guard allows it; a clone stays for the next `poll_ready`
            // (tower's clone-and-swap).
            let clone = self.inner.clone();
            let inner = mem::replace(&mut self.inner, clone);
            return ResponseFuture::checking(
                future,
                request,
                inner,
                Tracker::new(self.shared.clone(), permit, timing),
            );
        };
        self.settle(request, result)
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
