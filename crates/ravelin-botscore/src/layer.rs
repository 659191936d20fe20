//! [`BotScoreLayer`]: the bot-score guard in a tower stack, failing open, with forged score
//! headers removed first.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use ravelin_config::KillSwitch;
use ravelin_failsafe::{FailurePolicy, GuardHandle, GuardLayer, GuardService};
use tower_layer::Layer;
use tower_service::Service;

use crate::guard::{BotGuard, ForwardHeaders, GUARD_NAME};

/// Scores every request with a [`BotGuard`] inside a
/// [`GuardLayer`](ravelin_failsafe::GuardLayer) named [`GUARD_NAME`] with the **open** failure
/// policy: when scoring fails, times out, panics, is circuit-broken or killed, the request goes
/// on *unscored* ([`ScoreStatus::Unscored`](crate::ScoreStatus)) — never with a made-up score.
///
/// Before the guard runs, client-sent copies of the score headers ([`ForwardHeaders`]) are
/// removed, so a client cannot forge its score, and an unscored request reaches the origin
/// without any.
///
/// ```
/// use ravelin_botscore::{BotGuard, BotScoreLayer, Route, ScoreStatus, Scorer};
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let guard = BotGuard::builder(Scorer::builtin()?)
///     .route(Route::annotate("/login").challenge_at_or_below(29))
///     .build()?;
///
/// let service = ServiceBuilder::new()
///     .layer(BotScoreLayer::new(guard).timeout(Duration::from_millis(5)))
///     .service(service_fn(|request: http::Request<()>| async move {
///         // The origin sees x-bot-score; handlers read the extension.
///         let score = ScoreStatus::of(request.extensions()).score();
///         let forwarded = request.headers().get("x-bot-score").cloned();
///         assert_eq!(score.map(|s| s.to_string()), forwarded.map(|v| v.to_str().unwrap().to_owned()));
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     }));
///
/// let request = http::Request::builder()
///     .uri("/")
///     .header("user-agent", "curl/8.5.0")
///     .header("x-bot-score", "99") // forged: removed before scoring
///     .body(())?;
/// let response = service.oneshot(request).await?;
/// assert_eq!(response.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BotScoreLayer {
    guard: GuardLayer<BotGuard>,
    headers: Arc<ForwardHeaders>,
}

// === impl BotScoreLayer ===

impl BotScoreLayer {
    /// Wraps `guard` in a [`GuardLayer`] named [`GUARD_NAME`], failing open, with the default
    /// timeout.
    pub fn new(guard: BotGuard) -> Self {
        let headers = Arc::new(guard.forward_headers().clone());
        Self {
            guard: GuardLayer::new(guard)
                .name(GUARD_NAME)
                .policy(FailurePolicy::open()),
            headers,
        }
    }

    /// The guard's time budget (default [`ravelin_failsafe::DEFAULT_TIMEOUT`]; scoring takes
    /// microseconds).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map_guard_layer(|l| l.timeout(timeout))
    }

    /// Turns bot scoring off while `switch` is engaged: requests pass unscored.
    pub fn kill_switch(self, switch: KillSwitch) -> Self {
        self.map_guard_layer(|l| l.kill_switch(switch))
    }

    /// Replaces the failure policy. Keep it open unless an unscored request must be refused: an
    /// unavailable scorer should not block humans.
    pub fn policy(self, policy: FailurePolicy) -> Self {
        self.map_guard_layer(|l| l.policy(policy))
    }

    /// Any other [`GuardLayer`] setting (circuit breaker, clock, log budget). Keep the name: it
    /// is how [`ScoreStatus`](crate::ScoreStatus) finds the skip reason.
    pub fn map_guard_layer(
        mut self,
        f: impl FnOnce(GuardLayer<BotGuard>) -> GuardLayer<BotGuard>,
    ) -> Self {
        self.guard = f(self.guard);
        self
    }

    /// The guard's control handle (circuit state, kill switch).
    pub fn handle(&self) -> GuardHandle {
        self.guard.handle()
    }

    /// The guard.
    pub fn guard(&self) -> &BotGuard {
        self.guard.guard()
    }
}

impl fmt::Debug for BotScoreLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotScoreLayer")
            .field("guard", &self.guard)
            .field("headers", &self.headers)
            .finish()
    }
}

impl<S> Layer<S> for BotScoreLayer {
    type Service = BotScoring<GuardService<S, BotGuard>>;

    fn layer(&self, inner: S) -> Self::Service {
        BotScoring {
            inner: self.guard.layer(inner),
            headers: self.headers.clone(),
        }
    }
}

/// The service of [`BotScoreLayer`]: removes client-sent score headers, then calls the guarded
/// inner service.
pub struct BotScoring<S> {
    inner: S,
    headers: Arc<ForwardHeaders>,
}

// === impl BotScoring ===

impl<S> BotScoring<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for BotScoring<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            headers: self.headers.clone(),
        }
    }
}

impl<S> fmt::Debug for BotScoring<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotScoring")
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for BotScoring<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        self.headers.strip(request.headers_mut());
        self.inner.call(request)
    }
}
