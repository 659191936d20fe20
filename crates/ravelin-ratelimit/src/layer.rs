//! [`RateLimitLayer`]: a rule set applied to every request, as a tower layer; its builder and
//! its service, [`RateLimit`].

use std::fmt;
use std::time::Duration;

use ravelin_config::{KillSwitch, Switchboard};
use ravelin_failsafe::{
    CircuitBreakerConfig, ConfigError, FailurePolicy, GuardConfig, GuardHandle, GuardLayer,
    GuardLayerBuilder, GuardService,
};
use tower_layer::Layer;

use crate::guard::{GUARD_NAME, RateLimitGuard, Source, compile};
use crate::memory::MemoryStore;
use crate::response::{MissingPeer, ResponseTemplate};
use crate::rules::{Rules, RulesError};
use crate::store::RateLimitStore;

/// The service of a [`RateLimitLayer`]: the guard layer's [`GuardService`] around a
/// [`RateLimitGuard`] on store `S`, for inner service `Svc`. Its response future is
/// [`future::ResponseFuture`](crate::future::ResponseFuture).
pub type RateLimit<Svc, S = MemoryStore> = GuardService<Svc, RateLimitGuard<S>>;

/// Applies a [`Rules`] set to every request: a [`RateLimitGuard`] in a
/// [`GuardLayer`](ravelin_failsafe::GuardLayer), named [`GUARD_NAME`] (`"ratelimit"`: the
/// metric label, the kill switch in a [`Switchboard`], the `x-ravelin-skipped` key), failing
/// **open** by default: if the store cannot decide (Redis down, a timeout), requests go through
/// unlimited and the failure is counted and logged.
///
/// [`RateLimitLayer::new`] takes the rules and every default (an in-memory store of
/// [`MemoryStore::DEFAULT_CAPACITY`] keys, the failsafe defaults);
/// [`RateLimitLayer::builder`] changes the store and the guard's failure semantics. Clones, and
/// every service the layer makes, share one store and one circuit breaker.
///
/// ```
/// use std::time::Duration;
/// use ravelin_ratelimit::{KeyPart, RateLimitLayer, Rule, Rules};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::new().rule(
///     Rule::new("per-ip", 2, Duration::from_secs(60)).key(KeyPart::ClientIp),
/// );
/// let layer = RateLimitLayer::builder(rules)
///     .timeout(Duration::from_millis(20))
///     .build()?;
/// let service = ServiceBuilder::new().layer(layer).service(service_fn(|_req| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
/// }));
///
/// let request = || {
///     let mut request = http::Request::new(());
///     request.extensions_mut().insert(ravelin_http::PeerAddr("192.0.2.7:5000".parse().unwrap()));
///     request
/// };
/// assert_eq!(service.clone().oneshot(request()).await?.status(), 200);
/// assert_eq!(service.clone().oneshot(request()).await?.status(), 200);
/// let limited = service.clone().oneshot(request()).await?;
/// assert_eq!(limited.status(), 429);
/// assert_eq!(limited.headers()["ratelimit"], r#""per-ip";r=0;t=30"#);
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
pub struct RateLimitLayer<S = MemoryStore> {
    inner: GuardLayer<RateLimitGuard<S>>,
}

/// Where a [`RateLimitLayer`]'s rules come from: a fixed [`Rules`] set, or a
/// `ravelin-config` store whose every installed document takes effect on the next request
/// (see [`RateLimitGuard::reloadable`]).
#[derive(Debug)]
pub enum RulesSource {
    /// Fixed rules, validated and compiled when the layer is built.
    Fixed(Rules),
    /// Rules reloaded from this store.
    Reloadable(ravelin_config::Store<Rules>),
}

impl From<Rules> for RulesSource {
    fn from(rules: Rules) -> Self {
        RulesSource::Fixed(rules)
    }
}

impl From<ravelin_config::Store<Rules>> for RulesSource {
    fn from(store: ravelin_config::Store<Rules>) -> Self {
        RulesSource::Reloadable(store)
    }
}

/// A [`RateLimitLayer`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The rules break their limits; each violation names its field.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// A guard setting (timeout, breaker, failure response) is out of range.
    #[error("rate-limit guard: {0}")]
    Guard(#[from] ConfigError),
}

// === impl RateLimitLayer ===

impl RateLimitLayer<MemoryStore> {
    /// Limits requests by `rules`, with an in-memory store and the failsafe defaults (fail
    /// open, 100 ms timeout, default circuit breaker, no kill switch).
    ///
    /// # Errors
    /// The rule set's violations, by field.
    pub fn new(rules: Rules) -> Result<Self, RulesError> {
        let guard = RateLimitGuard::new(rules)?;
        Ok(Self {
            inner: GuardLayer::new(guard),
        })
    }

    /// Starts a layer limiting by `rules` (a [`Rules`] set, or a `ravelin_config::Store<Rules>`
    /// to reload them), with the defaults of [`new`](Self::new) until changed.
    pub fn builder(rules: impl Into<RulesSource>) -> RateLimitLayerBuilder<MemoryStore> {
        RateLimitLayerBuilder {
            rules: rules.into(),
            store: Box::new(MemoryStore::default),
            guard: GuardSettings::default(),
            missing_peer: None,
            denied_response: None,
        }
    }
}

impl<S> RateLimitLayer<S> {
    /// The guard's control handle (name, failure mode, circuit state, kill switch): the state
    /// every service of this layer shares.
    pub fn handle(&self) -> GuardHandle {
        self.inner.handle()
    }

    /// The guard (its store, for statistics).
    pub fn guard(&self) -> &RateLimitGuard<S> {
        self.inner.guard()
    }

    /// The guard layer inside.
    pub fn guard_layer(&self) -> &GuardLayer<RateLimitGuard<S>> {
        &self.inner
    }
}

/// Any guard layer around a [`RateLimitGuard`], for settings the builder does not offer (a
/// clock, the log budget): `GuardLayer::builder(guard)….build()?.into()`.
impl<S> From<GuardLayer<RateLimitGuard<S>>> for RateLimitLayer<S> {
    fn from(inner: GuardLayer<RateLimitGuard<S>>) -> Self {
        Self { inner }
    }
}

impl<S> Clone for RateLimitLayer<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for RateLimitLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<Svc, S> Layer<Svc> for RateLimitLayer<S> {
    type Service = RateLimit<Svc, S>;

    fn layer(&self, inner: Svc) -> Self::Service {
        self.inner.layer(inner)
    }
}

// === impl RateLimitLayerBuilder ===

/// Builds a [`RateLimitLayer`]; from [`RateLimitLayer::builder`]. Consuming setters, then
/// [`build`](Self::build), which validates the rules and every guard setting.
///
/// The guard settings follow [`GuardLayerBuilder`]'s: [`guard_config`](Self::guard_config)
/// sets the policy, timeout and breaker of a `[ratelimit.guard]` section, and
/// [`policy`](Self::policy), [`timeout`](Self::timeout) and
/// [`circuit_breaker`](Self::circuit_breaker) override it whatever the order of the calls.
pub struct RateLimitLayerBuilder<S = MemoryStore> {
    rules: RulesSource,
    store: Box<dyn FnOnce() -> S + Send>,
    guard: GuardSettings,
    missing_peer: Option<MissingPeer>,
    denied_response: Option<ResponseTemplate>,
}

/// The guard-layer settings collected before the guard exists (its store type can still
/// change), applied to its [`GuardLayerBuilder`] by `build`.
#[derive(Debug, Default)]
struct GuardSettings {
    config: Option<GuardConfig>,
    policy: Option<FailurePolicy>,
    timeout: Option<Duration>,
    breaker: Option<CircuitBreakerConfig>,
    kill_switch: Option<KillSwitch>,
}

impl GuardSettings {
    fn apply<G: ravelin_failsafe::Guard>(
        self,
        mut builder: GuardLayerBuilder<G>,
    ) -> GuardLayerBuilder<G> {
        if let Some(config) = &self.config {
            builder = builder.config(config);
        }
        if let Some(policy) = self.policy {
            builder = builder.policy(policy);
        }
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(breaker) = self.breaker {
            builder = builder.circuit_breaker(breaker);
        }
        if let Some(switch) = self.kill_switch {
            builder = builder.kill_switch(switch);
        }
        builder
    }
}

impl<S> RateLimitLayerBuilder<S> {
    /// Keeps the buckets in `store` instead (a larger [`MemoryStore`], or Redis with the
    /// `redis` feature).
    pub fn store<T: RateLimitStore>(self, store: T) -> RateLimitLayerBuilder<T> {
        RateLimitLayerBuilder {
            rules: self.rules,
            store: Box::new(move || store),
            guard: self.guard,
            missing_peer: self.missing_peer,
            denied_response: self.denied_response,
        }
    }

    /// The failure policy, timeout and circuit breaker of `config` (a `[ratelimit.guard]`
    /// section); `build` refuses a configuration that breaks its own rules.
    pub fn guard_config(mut self, config: &GuardConfig) -> Self {
        self.guard.config = Some(config.clone());
        self
    }

    /// What happens to a request when the store fails (default: fail open).
    pub fn policy(mut self, policy: FailurePolicy) -> Self {
        self.guard.policy = Some(policy);
        self
    }

    /// The guard's budget per request (default 100 ms; above a Redis store's own timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.guard.timeout = Some(timeout);
        self
    }

    /// When the circuit opens and how it recovers.
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.guard.breaker = Some(config);
        self
    }

    /// Takes the kill switch named [`GUARD_NAME`] from `switchboard`.
    pub fn switchboard(self, switchboard: &Switchboard) -> Self {
        self.kill_switch(switchboard.switch(GUARD_NAME))
    }

    /// Turns rate limiting off while `switch` is engaged.
    pub fn kill_switch(mut self, switch: KillSwitch) -> Self {
        self.guard.kill_switch = Some(switch);
        self
    }

    /// What a rule keyed by `client_ip` does with a request that has no peer address
    /// (default [`MissingPeer::Reject`]: a `500` naming
    /// [`PeerAddrLayer`](ravelin_http::PeerAddrLayer), an error log, a metric). Wins over the
    /// rules document's `missing_peer`.
    pub fn missing_peer(mut self, missing_peer: MissingPeer) -> Self {
        self.missing_peer = Some(missing_peer);
        self
    }

    /// Answers limited requests with `template` (default 429 `too many requests`);
    /// `Retry-After` and the `RateLimit` fields are still added. Wins over the rules
    /// document's `denied_response`; `build` refuses a template out of range.
    pub fn denied_response(mut self, template: ResponseTemplate) -> Self {
        self.denied_response = Some(template);
        self
    }
}

impl<S: RateLimitStore> RateLimitLayerBuilder<S> {
    /// Validates and compiles the rules, checks the guard settings and builds the layer (its
    /// circuit breaker and metric handles, once).
    ///
    /// # Errors
    /// [`BuildError::Rules`] naming every broken rule (or `denied_response.*` for a template
    /// out of range), or [`BuildError::Guard`] naming the guard setting out of range.
    pub fn build(self) -> Result<RateLimitLayer<S>, BuildError> {
        let source = match self.rules {
            RulesSource::Fixed(rules) => Source::Fixed(compile(rules)?),
            RulesSource::Reloadable(store) => Source::Reloadable(store),
        };
        let mut guard = RateLimitGuard::with_source((self.store)(), source);
        if let Some(missing_peer) = self.missing_peer {
            guard = guard.missing_peer(missing_peer);
        }
        if let Some(template) = &self.denied_response {
            guard = guard.denied_response(template)?;
        }
        let inner = self.guard.apply(GuardLayer::builder(guard)).build()?;
        Ok(RateLimitLayer { inner })
    }
}

impl<S> fmt::Debug for RateLimitLayerBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("rules", &self.rules)
            .field("store", &std::any::type_name::<S>())
            .field("guard", &self.guard)
            .field("missing_peer", &self.missing_peer)
            .field("denied_response", &self.denied_response)
            .finish()
    }
}
