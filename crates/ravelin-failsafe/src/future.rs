//! The response future of [`GuardService`](crate::GuardService).

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use pin_project::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::body::GuardBody;
use crate::circuit::Permit;
use crate::guard::{Annotations, Guard, GuardError, Verdict};
use crate::panic::contain;
use crate::shared::{Decision, Failure, Shared, Timing};

/// The response future of [`GuardService`](crate::GuardService): awaits the guard (with its
/// timeout, panics contained), then the inner service or the answer the guard or the policy
/// gave. No allocation of its own.
///
/// Polling it again after it completed returns `Pending`.
#[pin_project]
pub struct ResponseFuture<S, G, B>
where
    S: Service<Request<B>>,
    G: Guard,
{
    #[pin]
    state: State<G::Future, S, S::Future, B>,
}

// The checking state is the large one (request, timer); boxing it would allocate on every
// request, which this future exists to avoid.
#[allow(
    clippy::large_enum_variant,
    reason = "boxing the checking state would allocate per request"
)]
#[pin_project(project = StateProj)]
enum State<GF, S, F, B> {
    /// Awaiting the guard. `pending` holds the request and the ready inner service until the
    /// verdict; it is `None` only after they were handed on.
    Checking {
        #[pin]
        guard: GF,
        timer: Timer,
        pending: Option<(Request<B>, S)>,
        tracker: Tracker,
    },
    /// Awaiting the inner service; `annotations` hold response headers from an `Allow`.
    Calling {
        #[pin]
        future: F,
        annotations: Option<Box<Annotations>>,
    },
    /// Answered without the inner service.
    Respond { response: Option<Response<Bytes>> },
}

/// The guard's timer, created only when the guard is not ready at its first poll. Boxed: one
/// allocation for a guard that waits anyway (on a store, say), and a response future that
/// stays small for the synchronous guards that never need it.
enum Timer {
    Idle,
    Armed(Pin<Box<Sleep>>),
    Unavailable,
}

/// The breaker permit and start time of one guard call. Dropped without an outcome (the
/// request was cancelled while the guard ran), it gives a half-open probe slot back.
pub(crate) struct Tracker {
    shared: Arc<Shared>,
    permit: Option<Permit>,
    timing: Timing,
}

impl Tracker {
    pub(crate) fn new(shared: Arc<Shared>, permit: Permit, timing: Timing) -> Self {
        Self {
            shared,
            permit: Some(permit),
            timing,
        }
    }

    /// Holds the guard's answer to its budget (a late answer is a timeout), records the
    /// outcome in the breaker and the duration in the histogram.
    fn finish(&mut self, result: Result<Verdict, Failure>) -> Result<Verdict, Failure> {
        let result = self.shared.within_budget(&self.timing, result);
        if let Some(permit) = self.permit.take() {
            self.shared.breaker.record(permit, result.is_ok());
        }
        result
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.shared.breaker.abandon(permit);
        }
    }
}

// === impl ResponseFuture ===

impl<S, G, B> ResponseFuture<S, G, B>
where
    S: Service<Request<B>>,
    G: Guard,
{
    pub(crate) fn checking(
        guard: G::Future,
        request: Request<B>,
        inner: S,
        tracker: Tracker,
    ) -> Self {
        Self {
            state: State::Checking {
                guard,
                timer: Timer::Idle,
                pending: Some((request, inner)),
                tracker,
            },
        }
    }

    pub(crate) fn calling(future: S::Future, annotations: Option<Box<Annotations>>) -> Self {
        Self {
            state: State::Calling {
                future,
                annotations,
            },
        }
    }

    pub(crate) fn respond(response: Response<Bytes>) -> Self {
        Self {
            state: State::Respond {
                response: Some(response),
            },
        }
    }
}

impl<S, G, B, ResB> Future for ResponseFuture<S, G, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    G: Guard,
{
    type Output = Result<Response<GuardBody<ResB>>, S::Error>;

    // Small and inlined: the states every request ends in. Awaiting the guard is out of line.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Calling {
                    future,
                    annotations,
                } => {
                    let mut response = ready!(future.poll(cx))?.map(GuardBody::new);
                    if let Some(annotations) = annotations.take() {
                        append_all(response.headers_mut(), annotations.response_headers);
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Respond { response } => {
                    let Some(response) = response.take() else {
                        polled_after_completion()
                    };
                    return Poll::Ready(Ok(response.map(GuardBody::full)));
                }
                StateProj::Checking { .. } => {
                    let next = ready!(poll_checking(state.as_mut(), cx));
                    state.set(next);
                }
            }
        }
    }
}

/// The response state was polled again after it gave its response.
#[cold]
#[expect(
    clippy::unreachable,
    reason = "polling a future after it completed is a caller bug; `Future::poll` allows a panic there, and a panic is loud where a never-woken `Pending` would hang the caller silently"
)]
fn polled_after_completion() -> ! {
    unreachable!("GuardLayer's ResponseFuture polled after completion")
}

/// `poll_checking` was called outside the `Checking` state.
#[cold]
#[expect(
    clippy::unreachable,
    reason = "`ResponseFuture::poll` calls `poll_checking` only from its `Checking` arm, the one place that matches that state"
)]
fn not_checking() -> ! {
    unreachable!("poll_checking called outside the Checking state")
}

/// Awaits the guard (with its timeout, panics contained) and returns the state that follows.
fn poll_checking<GF, S, B>(
    state: Pin<&mut State<GF, S, S::Future, B>>,
    cx: &mut Context<'_>,
) -> Poll<State<GF, S, S::Future, B>>
where
    GF: Future<Output = Result<Verdict, GuardError>>,
    S: Service<Request<B>>,
{
    let StateProj::Checking {
        guard,
        timer,
        pending,
        tracker,
    } = state.project()
    else {
        not_checking()
    };

    // Why `AssertUnwindSafe` is sound: after a panic the guard future is never
    // polled again (the state moves on and drops it), so its possibly broken
    // insides are never observed. `cx` is only lent for the poll. Guard state
    // shared across requests must be panic-tolerant; that is the `Guard`
    // trait's contract (see `GuardService::call`). The verdict goes to a slot
    // instead of through `catch_unwind`'s return value, which would move it
    // more often.
    let mut output = None;
    let contained = contain(AssertUnwindSafe(|| {
        if let Poll::Ready(result) = guard.poll(cx) {
            output = Some(result);
        }
    }));
    let result = match (contained, output) {
        (Err(panic), _) => Err(Failure::Panicked(panic)),
        (Ok(()), Some(result)) => result.map_err(Failure::Error),
        (Ok(()), None) => 'waiting: {
            if let Timer::Idle = timer {
                // Counted from the call: the time `check` and this first poll
                // took is part of the budget.
                let remaining = tracker
                    .shared
                    .timeout
                    .saturating_sub(tracker.shared.elapsed(&tracker.timing));
                if remaining.is_zero() {
                    // Spent before the first wait: no timer needed to know.
                    break 'waiting Err(Failure::TimedOut);
                }
                *timer = match start_timer(remaining) {
                    Some(sleep) => Timer::Armed(sleep),
                    None => {
                        tracker.shared.report_no_timer();
                        Timer::Unavailable
                    }
                };
            }
            match timer {
                Timer::Armed(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    Err(Failure::TimedOut)
                }
                Timer::Idle | Timer::Unavailable => return Poll::Pending,
            }
        }
    };
    // Always `Some` here: it is only taken on the way out of this state.
    let Some((mut request, mut inner)) = pending.take() else {
        return Poll::Pending;
    };
    let result = tracker.finish(result);
    Poll::Ready(match tracker.shared.decide(&mut request, result) {
        Decision::Forward(annotations) => State::Calling {
            future: inner.call(request),
            annotations,
        },
        Decision::Respond(response) => State::Respond {
            response: Some(response),
        },
    })
}

/// Starts the guard's timer, or `None` when there is no Tokio timer to start.
#[cold]
fn start_timer(after: Duration) -> Option<Pin<Box<Sleep>>> {
    tokio::runtime::Handle::try_current().ok()?;
    // A runtime built without `enable_time()` panics here; contain it and run untimed rather
    // than take the request down.
    contain(AssertUnwindSafe(|| Box::pin(tokio::time::sleep(after)))).ok()
}

/// Appends every value of `from` to `to` (`HeaderMap::extend` would replace).
fn append_all(to: &mut HeaderMap, from: HeaderMap) {
    let mut last = None;
    for (name, value) in from {
        if let Some(name) = name {
            last = Some(name);
        }
        if let Some(name) = &last {
            to.append(name.clone(), value);
        }
    }
}

impl<S, G, B> fmt::Debug for ResponseFuture<S, G, B>
where
    S: Service<Request<B>>,
    G: Guard,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "checking",
            State::Calling { .. } => "calling",
            State::Respond { .. } => "respond",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
