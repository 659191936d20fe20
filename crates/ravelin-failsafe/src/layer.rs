//! [`GuardLayer`]: a guard with a failure policy, a timeout, panic containment, a circuit
//! breaker and a kill switch, as a tower layer.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ravelin_config::KillSwitch;
use tower_layer::Layer;

use crate::circuit::CircuitBreakerConfig;
use crate::clock::{Clock, SystemClock};
use crate::guard::Guard;
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
/// [timeout](GuardLayer::timeout)); the sample only decides which measurements go into the
/// histogram, whose recording (with a Prometheus recorder) costs more than the reads. A uniform
/// sample keeps the histogram's shape (its quantiles) while its count is about a sixteenth of
/// the decisions; the exact counts are in `ravelin_guard_decisions_total`.
pub const DEFAULT_DURATION_SAMPLING: u32 = 16;

/// Applies a [`Guard`] to every request, with a declared [`FailurePolicy`], a timeout, panic
/// containment, a circuit breaker and an optional kill switch.
///
/// | setting | default | builder |
/// |---|---|---|
/// | name (metric label, log field, skip header value) | `"guard"` | [`name`](Self::name) |
/// | failure policy | [`FailurePolicy::open`] | [`policy`](Self::policy) |
/// | timeout | [`DEFAULT_TIMEOUT`] (100 ms) | [`timeout`](Self::timeout) |
/// | kill switch | none | [`kill_switch`](Self::kill_switch) |
/// | circuit breaker | [`CircuitBreakerConfig::new`] | [`circuit_breaker`](Self::circuit_breaker) |
/// | failure log lines | 5 per second | [`log_lines_per_second`](Self::log_lines_per_second) |
/// | evaluations timed for the duration histogram | 1 in 16 | [`duration_sampling`](Self::duration_sampling) |
/// | clock (breaker, log limiter) | [`SystemClock`] | [`clock`](Self::clock) |
///
/// The layer and its clones, every service it makes and their clones share one guard state:
/// one circuit breaker, one set of metrics, one [`GuardHandle`]. Calling a builder method
/// returns a layer with a state of its own, so finish configuring before taking
/// [`handle`](Self::handle) or building services.
///
/// ```
/// use ravelin_failsafe::{FailurePolicy, GuardLayer, Verdict, guard_fn};
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = GuardLayer::new(guard_fn(|_head| Ok(Verdict::allow())))
///     .name("example")
///     .policy(FailurePolicy::open())
///     .timeout(Duration::from_millis(20));
/// let handle = layer.handle();
///
/// let service = ServiceBuilder::new().layer(layer).service(service_fn(|_req| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
/// }));
/// let response = service.oneshot(http::Request::new(())).await.unwrap();
/// assert_eq!(response.status(), 200);
/// assert_eq!(handle.circuit_state().as_str(), "closed");
/// # }
/// ```
pub struct GuardLayer<G> {
    guard: Arc<G>,
    config: Config,
    shared: Arc<OnceLock<Arc<Shared>>>,
}

// === impl GuardLayer ===

impl<G: Guard> GuardLayer<G> {
    /// Wraps `guard` with the defaults in the table above.
    pub fn new(guard: G) -> Self {
        Self {
            guard: Arc::new(guard),
            config: Config {
                name: Cow::Borrowed("guard"),
                policy: FailurePolicy::open(),
                timeout: DEFAULT_TIMEOUT,
                kill_switch: None,
                breaker: CircuitBreakerConfig::new(),
                clock: Arc::new(SystemClock),
                clock_injected: false,
                log_lines_per_second: DEFAULT_LOG_LINES_PER_SECOND,
                duration_sampling: DEFAULT_DURATION_SAMPLING,
            },
            shared: Arc::new(OnceLock::new()),
        }
    }
}

impl<G> GuardLayer<G> {
    fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        if self.shared.get().is_some() {
            tracing::warn!(
                guard = %self.config.name,
                "GuardLayer reconfigured after its handle or a service was taken: the \
                 reconfigured layer gets a circuit breaker and handle of its own"
            );
        }
        f(&mut self.config);
        self.shared = Arc::new(OnceLock::new());
        self
    }

    fn shared(&self) -> &Arc<Shared> {
        self.shared
            .get_or_init(|| Arc::new(Shared::new(self.config.clone())))
    }

    /// Names the guard: the `guard` label of its metrics, the `guard` field of its logs, the
    /// value of its skip header and its entry in [`Skipped`](crate::Skipped). Use a short
    /// stable token such as `"botscore"`.
    pub fn name(self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        self.configure(|c| c.name = name)
    }

    /// What happens to a request when the guard fails (errors, panics, times out, or its
    /// circuit is open). Default: [`FailurePolicy::open`].
    pub fn policy(self, policy: FailurePolicy) -> Self {
        self.configure(|c| c.policy = policy)
    }

    /// How long the guard may take, from the moment it is called; longer is a failure (outcome
    /// `timed_out`, [`SkipReason::TimedOut`](crate::SkipReason::TimedOut)). Default:
    /// [`DEFAULT_TIMEOUT`].
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
    pub fn timeout(self, timeout: Duration) -> Self {
        self.configure(|c| c.timeout = timeout)
    }

    /// Turns the guard off while `switch` is engaged ("module off"): the guard is not called,
    /// the request continues without it (under either policy), marked
    /// [`Skipped`](crate::Skipped) with [`SkipReason::Killed`](crate::SkipReason::Killed),
    /// outcome `killed`. Checked on every request with one atomic load. Take the switch from
    /// the process's [`Switchboard`](ravelin_config::Switchboard) so operators can flip it
    /// by name.
    pub fn kill_switch(self, switch: KillSwitch) -> Self {
        self.configure(|c| c.kill_switch = Some(switch))
    }

    /// When the circuit opens and how it recovers. Default: [`CircuitBreakerConfig::new`].
    /// An out-of-range value is clamped into range and logged when the layer is built; call
    /// [`CircuitBreakerConfig::validate`] first to refuse it instead.
    pub fn circuit_breaker(self, config: CircuitBreakerConfig) -> Self {
        self.configure(|c| c.breaker = config)
    }

    /// At most `lines` failure log lines per second for this guard, then one line saying how
    /// many were suppressed. Default: [`DEFAULT_LOG_LINES_PER_SECOND`].
    pub fn log_lines_per_second(self, lines: u32) -> Self {
        self.configure(|c| c.log_lines_per_second = lines)
    }

    /// Times one evaluation in `one_in` for `ravelin_guard_duration_seconds`, picked at
    /// random: 1 times every evaluation, 0 none. Default: [`DEFAULT_DURATION_SAMPLING`] (16).
    pub fn duration_sampling(self, one_in: u32) -> Self {
        self.configure(|c| c.duration_sampling = one_in)
    }

    /// The clock of the circuit breaker, the log limiter and the guard's time budget (tests
    /// use [`ManualClock`](crate::ManualClock) or [`TokioClock`](crate::TokioClock); a
    /// synchronous guard that advances a `ManualClock` past the timeout overruns it). Without
    /// one, the breaker and the log limiter read [`SystemClock`] and budgets are measured on
    /// the time-stamp counter. The wait for a pending guard always uses Tokio's timer.
    pub fn clock(self, clock: impl Clock) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        self.configure(|c| {
            c.clock = clock;
            c.clock_injected = true;
        })
    }

    /// The guard's control handle: name, failure mode, circuit state and kill switch, and
    /// forcing the circuit. Shares state with every service this layer makes.
    pub fn handle(&self) -> GuardHandle {
        GuardHandle::new(self.shared().clone())
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
            config: self.config.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<G> fmt::Debug for GuardLayer<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field("guard", &std::any::type_name::<G>())
            .field("config", &self.config)
            .finish()
    }
}

impl<S, G> Layer<S> for GuardLayer<G> {
    type Service = GuardService<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::from_parts(inner, self.guard.clone(), self.shared().clone())
    }
}
