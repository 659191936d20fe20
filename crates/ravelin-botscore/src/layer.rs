//! [`BotScoreLayer`]: the bot-score guard in a tower stack, failing open; its builder and its
//! service, [`BotScoring`].

use std::fmt;
use std::time::Duration;

use ravelin_config::{KillSwitch, Switchboard};
use ravelin_failsafe::{
    CircuitBreakerConfig, ConfigError, FailurePolicy, GuardConfig, GuardHandle, GuardLayer,
    GuardLayerBuilder, GuardService,
};
use tower_layer::Layer;

use crate::guard::BotGuard;

/// The service of a [`BotScoreLayer`]: the guard layer's [`GuardService`] around a
/// [`BotGuard`]. Its response future is [`future::ResponseFuture`](crate::future::ResponseFuture).
pub type BotScoring<S> = GuardService<S, BotGuard>;

/// Scores every request with a [`BotGuard`] inside a
/// [`GuardLayer`](ravelin_failsafe::GuardLayer) with the **open** failure policy: when scoring
/// fails, times out, panics, is circuit-broken or killed, the request goes on *unscored*
/// ([`ScoreStatus::Unscored`](crate::ScoreStatus)) — never with a made-up score.
///
/// The guard names itself [`GUARD_NAME`](crate::GUARD_NAME) (`"botscore"`: the metric label, the kill switch in a
/// [`Switchboard`], the [`Skipped`](ravelin_failsafe::Skipped) key that
/// [`ScoreStatus::of`](crate::ScoreStatus::of) reads) and owns its score headers
/// ([`ForwardHeaders`](crate::ForwardHeaders)): client-sent copies are removed before
/// anything else, so a client cannot forge its score, and an unscored request reaches the
/// origin without any.
///
/// [`BotScoreLayer::new`] takes the failsafe defaults; [`BotScoreLayer::builder`] changes them
/// and refuses out-of-range values.
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
/// let layer = BotScoreLayer::builder(guard)
///     .timeout(Duration::from_millis(5))
///     .build()?;
///
/// let service = ServiceBuilder::new()
///     .layer(layer)
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
///
/// # The inner service must be `Clone`
///
/// The service this layer makes is a [`GuardService`], which is a `Service` only when the
/// inner service is `Clone`: a guard may decide asynchronously, so the inner service that
/// `poll_ready` made ready travels with the request and a clone takes its place. Without
/// `Clone` the compiler reports unmet trait bounds (E0599/E0277) without naming `Clone`: make
/// the service `Clone` (share its state behind an `Arc`), or put
/// `tower::buffer::BufferLayer` under this layer (a `Buffer` is `Clone`).
#[derive(Clone)]
pub struct BotScoreLayer {
    inner: GuardLayer<BotGuard>,
}

/// Builds a [`BotScoreLayer`]; from [`BotScoreLayer::builder`]. Consuming setters, then
/// [`build`](Self::build), which refuses out-of-range settings.
pub struct BotScoreLayerBuilder {
    inner: GuardLayerBuilder<BotGuard>,
}

// === impl BotScoreLayer ===

impl BotScoreLayer {
    /// Scores with `guard` under the failsafe defaults: fail open, 100 ms timeout
    /// ([`ravelin_failsafe::DEFAULT_TIMEOUT`]; scoring takes microseconds), the default circuit
    /// breaker, no kill switch.
    pub fn new(guard: BotGuard) -> Self {
        Self {
            inner: GuardLayer::new(guard),
        }
    }

    /// Starts a layer scoring with `guard`, with the defaults of [`new`](Self::new).
    pub fn builder(guard: BotGuard) -> BotScoreLayerBuilder {
        BotScoreLayerBuilder {
            inner: GuardLayer::builder(guard),
        }
    }

    /// The guard's control handle (circuit state, kill switch).
    pub fn handle(&self) -> GuardHandle {
        self.inner.handle()
    }

    /// The guard.
    pub fn guard(&self) -> &BotGuard {
        self.inner.guard()
    }

    /// The guard layer inside.
    pub fn guard_layer(&self) -> &GuardLayer<BotGuard> {
        &self.inner
    }
}

/// Any guard layer around a [`BotGuard`], for settings the builder does not offer (a clock,
/// the log budget): `GuardLayer::builder(guard)….build()?.into()`. The guard's name and owned
/// headers travel with it whatever the layer.
impl From<GuardLayer<BotGuard>> for BotScoreLayer {
    fn from(inner: GuardLayer<BotGuard>) -> Self {
        Self { inner }
    }
}

impl fmt::Debug for BotScoreLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotScoreLayer")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S> Layer<S> for BotScoreLayer {
    type Service = BotScoring<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.inner.layer(inner)
    }
}

// === impl BotScoreLayerBuilder ===

impl BotScoreLayerBuilder {
    /// The guard's time budget (default [`ravelin_failsafe::DEFAULT_TIMEOUT`]).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|b| b.timeout(timeout))
    }

    /// Takes the kill switch named [`GUARD_NAME`](crate::GUARD_NAME) from `switchboard`: while engaged, requests
    /// pass unscored.
    pub fn switchboard(self, switchboard: &Switchboard) -> Self {
        self.map(|b| b.switchboard(switchboard))
    }

    /// Turns bot scoring off while `switch` is engaged: requests pass unscored.
    pub fn kill_switch(self, switch: KillSwitch) -> Self {
        self.map(|b| b.kill_switch(switch))
    }

    /// Replaces the failure policy. Keep it open unless an unscored request must be refused: an
    /// unavailable scorer should not block humans.
    pub fn policy(self, policy: FailurePolicy) -> Self {
        self.map(|b| b.policy(policy))
    }

    /// When the circuit opens and how it recovers.
    pub fn circuit_breaker(self, config: CircuitBreakerConfig) -> Self {
        self.map(|b| b.circuit_breaker(config))
    }

    /// The failure policy, timeout and circuit breaker of `config` (a `[botscore.guard]`
    /// section); `build` refuses a configuration that breaks its own rules.
    pub fn guard_config(self, config: &GuardConfig) -> Self {
        self.map(|b| b.config(config))
    }

    fn map(
        self,
        f: impl FnOnce(GuardLayerBuilder<BotGuard>) -> GuardLayerBuilder<BotGuard>,
    ) -> Self {
        Self {
            inner: f(self.inner),
        }
    }

    /// Checks every setting and builds the layer (its circuit breaker and metric handles,
    /// once).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting out of range.
    pub fn build(self) -> Result<BotScoreLayer, ConfigError> {
        Ok(BotScoreLayer {
            inner: self.inner.build()?,
        })
    }
}

impl fmt::Debug for BotScoreLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotScoreLayerBuilder")
            .field("inner", &self.inner)
            .finish()
    }
}
