//! The response future of [`GuardService`](crate::GuardService).

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use pin_project::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::body::GuardBody;
use crate::circuit::Permit;
use crate::guard::{Guard, Verdict};
use crate::metrics::Outcome;
use crate::panic::contain;
use crate::shared::{Applied, Failure, Shared};

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
        #[pin]
        timer: Timer,
        pending: Option<(Request<B>, S)>,
        tracker: Tracker,
    },
    /// Awaiting the inner service; `response_headers` come from an `Allow` verdict.
    Calling {
        #[pin]
        future: F,
        response_headers: HeaderMap,
    },
    /// Answered without the inner service.
    Respond { response: Option<Response<Bytes>> },
}

/// The guard's timer, created only when the guard is not ready at its first poll.
#[pin_project(project = TimerProj)]
enum Timer {
    Idle,
    Armed(#[pin] Sleep),
    Unavailable,
}

/// The breaker permit and start time of one guard call. Dropped without an outcome (the
/// request was cancelled while the guard ran), it gives a half-open probe slot back.
pub(crate) struct Tracker {
    shared: Arc<Shared>,
    permit: Option<Permit>,
    start: Instant,
}

impl Tracker {
    pub(crate) fn new(shared: Arc<Shared>, permit: Permit, start: Instant) -> Self {
        Self {
            shared,
            permit: Some(permit),
            start,
        }
    }

    fn finish(&mut self, success: bool) {
        if let Some(permit) = self.permit.take() {
            self.shared.breaker.record(permit, success);
        }
        self.shared.observe_duration(self.start);
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

    pub(crate) fn calling(future: S::Future, response_headers: HeaderMap) -> Self {
        Self {
            state: State::Calling {
                future,
                response_headers,
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Checking {
                    guard,
                    mut timer,
                    pending,
                    tracker,
                } => {
                    // Why `AssertUnwindSafe` is sound: after a panic the guard future is never
                    // polled again (the state moves on and drops it), so its possibly broken
                    // insides are never observed. `cx` is only lent for the poll. Guard state
                    // shared across requests must be panic-tolerant; that is the `Guard`
                    // trait's contract (see `GuardService::call`).
                    let polled = contain(AssertUnwindSafe(|| guard.poll(cx)));
                    let result = match polled {
                        Ok(Poll::Ready(Ok(verdict))) => Ok(verdict),
                        Ok(Poll::Ready(Err(error))) => Err(Failure::Error(error)),
                        Err(panic) => Err(Failure::Panicked(panic)),
                        Ok(Poll::Pending) => {
                            if let TimerProj::Idle = timer.as_mut().project() {
                                let remaining = tracker
                                    .shared
                                    .timeout
                                    .saturating_sub(tracker.start.elapsed());
                                match start_timer(remaining) {
                                    Some(sleep) => timer.set(Timer::Armed(sleep)),
                                    None => {
                                        tracker.shared.report_no_timer();
                                        timer.set(Timer::Unavailable);
                                    }
                                }
                            }
                            match timer.project() {
                                TimerProj::Armed(sleep) => {
                                    ready!(sleep.poll(cx));
                                    Err(Failure::TimedOut)
                                }
                                TimerProj::Idle | TimerProj::Unavailable => return Poll::Pending,
                            }
                        }
                    };
                    // Always `Some` here: it is only taken on the way out of this state.
                    let Some((mut request, mut inner)) = pending.take() else {
                        return Poll::Pending;
                    };
                    tracker.finish(result.is_ok());
                    let shared = &*tracker.shared;
                    // A failed guard reaches this point as `Failure`, which carries no verdict
                    // and no annotations: only an `Allow` from a guard that answered can
                    // annotate the request.
                    match result {
                        Ok(Verdict::Allow(allow)) => {
                            shared.metrics.count(Outcome::Allowed);
                            let response_headers = allow.apply_to_request(&mut request);
                            State::Calling {
                                future: inner.call(request),
                                response_headers,
                            }
                        }
                        Ok(Verdict::Respond(response)) => {
                            shared.metrics.count(Outcome::Responded);
                            State::Respond {
                                response: Some(response),
                            }
                        }
                        Err(failure) => match shared.fail(request, failure) {
                            Applied::Forward(request) => State::Calling {
                                future: inner.call(request),
                                response_headers: HeaderMap::new(),
                            },
                            Applied::Respond(response) => State::Respond {
                                response: Some(response),
                            },
                        },
                    }
                }
                StateProj::Calling {
                    future,
                    response_headers,
                } => {
                    let mut response = ready!(future.poll(cx))?.map(GuardBody::new);
                    if !response_headers.is_empty() {
                        append_all(response.headers_mut(), std::mem::take(response_headers));
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Respond { response } => {
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(response.map(GuardBody::full))),
                        None => Poll::Pending,
                    };
                }
            };
            state.set(next);
        }
    }
}

/// Starts the guard's timer, or `None` when there is no Tokio timer to start.
#[cold]
fn start_timer(after: Duration) -> Option<Sleep> {
    tokio::runtime::Handle::try_current().ok()?;
    // A runtime built without `enable_time()` panics here; contain it and run untimed rather
    // than take the request down.
    contain(AssertUnwindSafe(|| tokio::time::sleep(after))).ok()
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
