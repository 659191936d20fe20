//! [`GuardLayer`]: a guard with a failure policy, a timeout, panic containment, a circuit
//! breaker and a kill switch, as a tower layer; [`GuardLayerBuilder`] checks its settings.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ravelin_primitives::clock::{Clock, MonotonicClock, Nanos};
use ravelin_primitives::{KillSwitch, Switchboard, Validate, Violations};
use tower_layer::Layer;

use crate::circuit::CircuitBreakerConfig;
use crate::config::{GuardConfig, MAX_FAILURE_BODY_BYTES, MAX_GUARD_TIMEOUT};
use crate::error::ConfigError;
use crate::guard::{Guard, is_structured_key};
use crate::handle::GuardHandle;
use crate::policy::FailurePolicy;
use crate::service::GuardService;
use crate::shared::{Config, Shared};

/// The default guard timeout: 100 ms.
///
/// Between Envoy's rate-limit filter (20 ms) and `ext_authz` (200 ms). A local guard (bot
/// scoring, an in-memory limiter) answers in microseconds; one that calls a store in the same
/// datacenter answers in about a millisecond. 100 ms leaves room for a slow moment, and bounds
/// the latency a stalled dependency can add before the circuit breaker takes over.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// The default number of failure log lines per second per guard: 5.
pub const DEFAULT_LOG_LINES_PER_SECOND: u32 = 5;

/// By default one guard evaluation in 16 is recorded in `ravelin_guard_duration_seconds`.
///
/// Every evaluation is measured (two reads of the time-stamp counter, to hold the guard to its
/// [timeout](GuardLayerBuilder::timeout)); the sample only decides which measurements go into the
/// histogram, whose recording (with a Prometheus recorder) costs more than the reads. A uniform
/// sample keeps the histogram's shape (its quantiles) while its count is about a sixteenth of
/// the decisions; the exact counts are in `ravelin_guard_decisions_total`.
pub const DEFAULT_DURATION_SAMPLING: u32 = 16;

/// Applies a [`Guard`] to every request, with a declared [`FailurePolicy`], a timeout, panic
/// containment, a circuit breaker and an optional kill switch.
///
/// The guard says who it is ([`Guard::name`]): the layer derives from that name the `guard`
/// label of its metrics, the `guard` field of its logs, its entry in
/// [`Skipped`](crate::Skipped) and in the skip header, and the kill switch
/// [`switchboard`](GuardLayerBuilder::switchboard) looks up.
///
/// | setting | default | builder |
/// |---|---|---|
/// | failure policy | [`FailurePolicy::open`] | [`policy`](GuardLayerBuilder::policy) |
/// | timeout | [`DEFAULT_TIMEOUT`] (100 ms) | [`timeout`](GuardLayerBuilder::timeout) |
/// | kill switch | none | [`switchboard`](GuardLayerBuilder::switchboard), [`kill_switch`](GuardLayerBuilder::kill_switch) |
/// | circuit breaker | [`CircuitBreakerConfig::new`] | [`circuit_breaker`](GuardLayerBuilder::circuit_breaker) |
/// | failure log lines | 5 per second | [`log_lines_per_second`](GuardLayerBuilder::log_lines_per_second) |
/// | evaluations timed for the duration histogram | 1 in 16 | [`duration_sampling`](GuardLayerBuilder::duration_sampling) |
/// | clock (breaker, log limiter) | [`MonotonicClock`] | [`clock`](GuardLayerBuilder::clock) |
///
/// [`GuardLayer::new`] takes every default; [`GuardLayer::builder`] changes them and
/// [`build`](GuardLayerBuilder::build) refuses an out-of-range value with a [`ConfigError`]
/// (nothing is clamped); [`GuardLayer::from_config`] builds from a serde [`GuardConfig`].
///
/// The guard's shared state (circuit breaker, metric handles, log limiter) is created when the
/// layer is built, as tower's `GlobalConcurrencyLimitLayer` creates its semaphore: the layer
/// and its clones, every service it makes and their clones, and every [`handle`](Self::handle)
/// share that one state. A layer cannot be reconfigured afterwards, so nothing can fork it.
///
/// ```
/// use ravelin_failsafe::{FailurePolicy, GuardLayer, Verdict, guard_fn};
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = GuardLayer::builder(guard_fn("example", |_head| Ok(Verdict::allow())))
///     .policy(FailurePolicy::open())
///     .timeout(Duration::from_millis(20))
///     .build()?;
/// let handle = layer.handle();
/// assert_eq!(handle.name(), "example");
///
/// let service = ServiceBuilder::new().layer(layer).service(service_fn(|_req| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// }));
/// let response = service.oneshot(http::Request::new(())).await?;
/// assert_eq!(response.status(), 200);
/// assert_eq!(handle.circuit_state().as_str(), "closed");
///
/// // Out-of-range settings are refused, not clamped.
/// let refused = GuardLayer::builder(guard_fn("example", |_head| Ok(Verdict::allow())))
///     .timeout(Duration::ZERO)
///     .build();
/// assert!(refused.unwrap_err().to_string().contains("timeout"));
/// # Ok(())
/// # }
/// ```
///
/// # The inner service must be `Clone`
///
/// The service this layer makes is a [`GuardService`](crate::GuardService), which is a `Service` only when the
/// inner service is `Clone`: a guard may decide asynchronously, so the inner service that
/// `poll_ready` made ready travels with the request and a clone takes its place. Without
/// `Clone` the compiler reports unmet trait bounds (E0599/E0277) without naming `Clone`: make
/// the service `Clone` (share its state behind an `Arc`), or put
/// `tower::buffer::BufferLayer` under this layer (a `Buffer` is `Clone`).
pub struct GuardLayer<G> {
    guard: Arc<G>,
    shared: Arc<Shared>,
}

/// Builds a [`GuardLayer`]: consuming setters, then [`build`](Self::build), which checks every
/// setting. From [`GuardLayer::builder`].
pub struct GuardLayerBuilder<G> {
    guard: G,
    config: Config,
    /// What [`config`](Self::config) found wrong with a `GuardConfig`, refused by `build`.
    violations: Option<Violations>,
}

// === impl GuardLayer ===

impl<G: Guard> GuardLayer<G> {
    /// Wraps `guard` with the defaults in the table above. Infallible: the defaults are in
    /// range.
    pub fn new(guard: G) -> Self {
        let config = Config::defaults(guard.name());
        Self::from_parts(guard, config)
    }

    /// Starts a layer for `guard` with the defaults in the table above.
    pub fn builder(guard: G) -> GuardLayerBuilder<G> {
        let config = Config::defaults(guard.name());
        GuardLayerBuilder {
            guard,
            config,
            violations: None,
        }
    }

    /// A layer for `guard` with the failure policy, timeout and circuit breaker of `config`
    /// (shorthand for `GuardLayer::builder(guard).config(config).build()`).
    ///
    /// # Errors
    /// [`ConfigError::Config`] with every violation of `config`, or another [`ConfigError`]
    /// naming the setting out of range.
    pub fn from_config(guard: G, config: &GuardConfig) -> Result<Self, ConfigError> {
        Self::builder(guard).config(config).build()
    }

    fn from_parts(guard: G, config: Config) -> Self {
        Self {
            guard: Arc::new(guard),
            shared: Arc::new(Shared::new(config)),
        }
    }
}

impl<G> GuardLayer<G> {
    /// The guard's control handle: name, failure mode, circuit state and kill switch, and
    /// forcing the circuit. A cheap clone of the state every service of this layer shares.
    pub fn handle(&self) -> GuardHandle {
        GuardHandle::new(self.shared.clone())
    }

    /// The guard.
    pub fn guard(&self) -> &G {
        &self.guard
    }
}

impl<G> Clone for GuardLayer<G> {
    fn clone(&self) -> Self {
        Self {
            guard: self.guard.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<G> fmt::Debug for GuardLayer<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field("guard", &std::any::type_name::<G>())
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, G> Layer<S> for GuardLayer<G> {
    type Service = GuardService<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::from_parts(inner, self.guard.clone(), self.shared.clone())
    }
}

// === impl GuardLayerBuilder ===

impl<G: Guard> GuardLayerBuilder<G> {
    /// What happens to a request when the guard fails (errors, panics, times out, or its
    /// circuit is open). Default: [`FailurePolicy::open`]. `build` refuses a fail-closed
    /// status that is not a 4xx or 5xx, a body over [`MAX_FAILURE_BODY_BYTES`], and a skip
    /// header when the guard's name is not a structured-field key (see [`Guard::name`]).
    pub fn policy(mut self, policy: FailurePolicy) -> Self {
        self.config.policy = policy;
        self
    }

    /// How long the guard may take, from the moment it is called; longer is a failure (outcome
    /// `timed_out`, [`SkipReason::TimedOut`](crate::SkipReason::TimedOut)). Default:
    /// [`DEFAULT_TIMEOUT`]; `build` refuses zero and anything over [`MAX_GUARD_TIMEOUT`].
    ///
    /// What is guaranteed:
    ///
    /// - **No verdict from a guard that overran.** Whenever the guard answers (in `check` for a
    ///   synchronous guard, or in any poll of its future), the time since the call is checked;
    ///   an answer that comes after the timeout is discarded and the failure policy applies,
    ///   counted as `timed_out`, as a breaker failure.
    /// - **Waiting is interrupted.** While the guard's future is pending, a Tokio timer ends
    ///   the wait when the budget runs out. It is created only when the future is not ready at
    ///   its first poll, so synchronous guards pay nothing for it; a guard found already over
    ///   budget at that poll times out at once.
    /// - **Computing is not.** A synchronous check, or a poll that computes without returning
    ///   `Pending`, cannot be preempted (no thread can be): the request waits for it, then gets
    ///   the failure policy. Keep synchronous guards cheap.
    ///
    /// The budget is wall-clock time, measured with two reads of the CPU's time-stamp counter
    /// (a few nanoseconds each; see [`clock`](Self::clock) to measure on another clock). Time
    /// the thread spends preempted counts: on a busy machine the OS (or, in a VM, the
    /// hypervisor) may take a thread off the CPU for milliseconds in the middle of a check
    /// (stalls of 12 ms were seen on the project's 2-vCPU test VM while other builds ran), so
    /// keep budgets well above that or expect the failure policy for a few requests under CPU
    /// starvation. Interrupting a
    /// pending guard needs a Tokio runtime with time enabled; without one it is awaited
    /// untimed and an error is logged (a late answer is still discarded).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Takes the guard's kill switch from `switchboard`, by the guard's name: operators flip
    /// it by that name (`POST /modules/{name}/kill`). See [`kill_switch`](Self::kill_switch).
    pub fn switchboard(self, switchboard: &Switchboard) -> Self {
        let switch = switchboard.switch(&self.config.name);
        self.kill_switch(switch)
    }

    /// Turns the guard off while `switch` is engaged ("module off"): the guard is not called,
    /// the request continues without it (under either policy), marked
    /// [`Skipped`](crate::Skipped) with [`SkipReason::Killed`](crate::SkipReason::Killed),
    /// outcome `killed`. Checked on every request with one atomic load. Usually
    /// [`switchboard`](Self::switchboard), which names the switch after the guard; this takes
    /// any switch (a test's [`KillSwitch::standalone`]).
    pub fn kill_switch(mut self, switch: KillSwitch) -> Self {
        self.config.kill_switch = Some(switch);
        self
    }

    /// When the circuit opens and how it recovers. Default: [`CircuitBreakerConfig::new`];
    /// `build` refuses what [`CircuitBreakerConfig::validate`] refuses.
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.config.breaker = config;
        self
    }

    /// At most `lines` failure log lines per second for this guard, then one line saying how
    /// many were suppressed. Default: [`DEFAULT_LOG_LINES_PER_SECOND`].
    pub fn log_lines_per_second(mut self, lines: u32) -> Self {
        self.config.log_lines_per_second = lines;
        self
    }

    /// Times one evaluation in `one_in` for `ravelin_guard_duration_seconds`, picked at
    /// random: 1 times every evaluation, 0 none. Default: [`DEFAULT_DURATION_SAMPLING`] (16).
    pub fn duration_sampling(mut self, one_in: u32) -> Self {
        self.config.duration_sampling = one_in;
        self
    }

    /// The clock of the circuit breaker, the log limiter and the guard's time budget (tests
    /// use [`ManualClock`](crate::ManualClock) or [`TokioClock`](crate::TokioClock); a
    /// synchronous guard that advances a `ManualClock` past the timeout overruns it). Without
    /// one, the breaker and the log limiter read a [`MonotonicClock`] and budgets are measured
    /// on the time-stamp counter. The wait for a pending guard always uses Tokio's timer.
    pub fn clock(mut self, clock: impl Clock<Instant = Nanos>) -> Self {
        self.config.clock = Arc::new(clock);
        self.config.clock_injected = true;
        self
    }

    /// The failure policy, timeout and circuit breaker of `config` (a `[<module>.guard]`
    /// section). `build` refuses the layer if `config` breaks its own rules
    /// ([`Validate::validate`]), even when a later setter replaces the faulty value.
    pub fn config(mut self, config: &GuardConfig) -> Self {
        if let Err(violations) = config.validate() {
            self.violations = Some(violations);
        }
        self.config.policy = config.policy();
        self.config.timeout = config.timeout;
        self.config.breaker = config.circuit_breaker();
        self
    }

    /// Checks every setting and builds the layer, creating its shared state.
    ///
    /// # Errors
    /// The first [`ConfigError`] found: a `GuardConfig` given to [`config`](Self::config)
    /// that breaks its rules, a timeout of zero or over [`MAX_GUARD_TIMEOUT`], an invalid
    /// circuit breaker, a fail-closed status that is not 4xx/5xx or a body over
    /// [`MAX_FAILURE_BODY_BYTES`], or a skip header with a name that cannot be its key.
    pub fn build(self) -> Result<GuardLayer<G>, ConfigError> {
        if let Some(violations) = self.violations {
            return Err(ConfigError::Config(violations));
        }
        let config = &self.config;
        if config.timeout.is_zero() || config.timeout > MAX_GUARD_TIMEOUT {
            return Err(ConfigError::Timeout {
                timeout: config.timeout,
                max: MAX_GUARD_TIMEOUT,
            });
        }
        config.breaker.validate()?;
        let status = config.policy.failure_status().as_u16();
        if !(400..=599).contains(&status) {
            return Err(ConfigError::FailureStatus { status });
        }
        let bytes = config.policy.failure_body_len();
        if bytes > MAX_FAILURE_BODY_BYTES {
            return Err(ConfigError::FailureBody {
                bytes,
                max: MAX_FAILURE_BODY_BYTES,
            });
        }
        if config.policy.skip_header_name().is_some() && !is_structured_key(&config.name) {
            return Err(ConfigError::Name {
                name: config.name.to_string(),
            });
        }
        Ok(GuardLayer::from_parts(self.guard, self.config))
    }
}

impl<G> fmt::Debug for GuardLayerBuilder<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayerBuilder")
            .field("guard", &std::any::type_name::<G>())
            .field("config", &self.config)
            .field("violations", &self.violations)
            .finish()
    }
}

// === impl Config ===

impl Config {
    /// The defaults of a guard named `name`.
    fn defaults(name: Cow<'static, str>) -> Self {
        Self {
            name,
            policy: FailurePolicy::open(),
            timeout: DEFAULT_TIMEOUT,
            kill_switch: None,
            breaker: CircuitBreakerConfig::new(),
            clock: Arc::new(MonotonicClock::new()),
            clock_injected: false,
            log_lines_per_second: DEFAULT_LOG_LINES_PER_SECOND,
            duration_sampling: DEFAULT_DURATION_SAMPLING,
        }
    }
}
