//! The state one guard shares across its layer, every service clone, every in-flight request
//! and its handle: configuration, circuit breaker, log limiter and metric handles.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use ravelin_primitives::{KillSwitch, LogLimiter};

use crate::circuit::{Breaker, CircuitBreakerConfig, CircuitState, Transition};
use crate::clock::{SharedClock, Stopwatch};
use crate::guard::{Annotations, GuardError, SkipReason, Skipped, Verdict};
use crate::metrics::{Metrics, Outcome};
use crate::panic::PanicReport;
use crate::policy::{FailureMode, FailurePolicy};

/// Everything a [`GuardLayerBuilder`](crate::GuardLayerBuilder) collects; checked by its `build`.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name: Cow<'static, str>,
    pub(crate) policy: FailurePolicy,
    pub(crate) timeout: Duration,
    pub(crate) kill_switch: Option<KillSwitch>,
    pub(crate) breaker: CircuitBreakerConfig,
    pub(crate) clock: SharedClock,
    /// Whether `clock` was set by the builder: then it also measures guard budgets.
    pub(crate) clock_injected: bool,
    pub(crate) log_lines_per_second: u32,
    pub(crate) duration_sampling: u32,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .field("kill_switch", &self.kill_switch)
            .field("breaker", &self.breaker)
            .field("clock", &self.clock)
            .field("clock_injected", &self.clock_injected)
            .field("log_lines_per_second", &self.log_lines_per_second)
            .field("duration_sampling", &self.duration_sampling)
            .finish()
    }
}

/// Why a guard gave no verdict for a request.
#[derive(Debug)]
pub(crate) enum Failure {
    Error(GuardError),
    Panicked(PanicReport),
    /// The timer fired while the guard was still pending.
    TimedOut,
    /// The guard answered, but only after its budget had passed (it took this long): its
    /// answer is discarded, as if the timer had fired.
    Overran(Duration),
    CircuitOpen,
}

impl Failure {
    fn skip_reason(&self) -> SkipReason {
        match self {
            Failure::Error(_) => SkipReason::Failed,
            Failure::Panicked(_) => SkipReason::Panicked,
            Failure::TimedOut | Failure::Overran(_) => SkipReason::TimedOut,
            Failure::CircuitOpen => SkipReason::CircuitOpen,
        }
    }

    fn outcome(&self, mode: FailureMode) -> Outcome {
        match (self, mode) {
            (Failure::Error(_), FailureMode::Open) => Outcome::FailedOpen,
            (Failure::Error(_), FailureMode::Closed) => Outcome::FailedClosed,
            (Failure::Panicked(_), _) => Outcome::Panicked,
            (Failure::TimedOut | Failure::Overran(_), _) => Outcome::TimedOut,
            (Failure::CircuitOpen, _) => Outcome::CircuitOpen,
        }
    }
}

/// What happens to a request once its guard answered or failed.
pub(crate) enum Decision {
    /// Forward the request; add these response headers (from an `Allow`) to the response.
    Forward(Option<Box<Annotations>>),
    /// Answer with this, without the inner service.
    Respond(Response<Bytes>),
}

pub(crate) struct Shared {
    pub(crate) name: Cow<'static, str>,
    pub(crate) policy: FailurePolicy,
    pub(crate) timeout: Duration,
    pub(crate) kill_switch: Option<KillSwitch>,
    pub(crate) breaker: Breaker,
    pub(crate) metrics: Arc<Metrics>,
    log: LogLimiter,
    duration_threshold: u64,
    stopwatch: Stopwatch,
}

/// When one guard evaluation started, and whether its duration goes to the histogram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    start: u64,
    sampled: bool,
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let name = config.name;
        let metrics = Arc::new(Metrics::register(&name));
        metrics
            .circuit_state
            .set(CircuitState::Closed.gauge_value());

        if cfg!(panic = "abort") {
            tracing::warn!(
                guard = %name,
                "this binary is built with panic = \"abort\": a panic in the guard aborts the \
                 process and cannot be contained"
            );
        }

        let observer = {
            let name = name.clone();
            let metrics = metrics.clone();
            move |t: Transition| {
                metrics.circuit_state.set(t.to.gauge_value());
                match t.to {
                    CircuitState::Open | CircuitState::ForcedOpen => tracing::warn!(
                        guard = %name,
                        from = t.from.as_str(),
                        to = t.to.as_str(),
                        reason = t.reason,
                        "guard circuit opened: the guard is not called, its failure policy applies"
                    ),
                    _ => tracing::info!(
                        guard = %name,
                        from = t.from.as_str(),
                        to = t.to.as_str(),
                        reason = t.reason,
                        "guard circuit {}",
                        t.to.as_str()
                    ),
                }
            }
        };
        let stopwatch = if config.clock_injected {
            Stopwatch::injected(config.clock.clone())
        } else {
            Stopwatch::counter()
        };
        Self {
            breaker: Breaker::new(&config.breaker, config.clock.clone(), observer),
            log: LogLimiter::per_second(config.log_lines_per_second)
                .with_shared_clock(config.clock),
            name,
            policy: config.policy,
            timeout: config.timeout,
            kill_switch: config.kill_switch,
            metrics,
            duration_threshold: sample_threshold(config.duration_sampling),
            stopwatch,
        }
    }

    /// The kill switch, read lock-free (one relaxed load).
    #[inline]
    pub(crate) fn is_killed(&self) -> bool {
        self.kill_switch
            .as_ref()
            .is_some_and(KillSwitch::is_engaged)
    }

    /// Marks `request` as not checked by this guard: an entry in the `Skipped` extension and,
    /// when the policy has a skip header, that header rewritten as one field rendered from every
    /// entry marked for it (this guard's and those of the layers before it).
    pub(crate) fn mark_skipped<B>(&self, request: &mut Request<B>, reason: SkipReason) {
        let marker = self.policy.skip_header_name();
        let skipped = request.extensions_mut().get_or_insert_default::<Skipped>();
        skipped.push_marked(self.name.clone(), reason, marker);
        if let Some(header) = marker {
            let value = skipped.marker_value(header);
            if let Some(value) = value {
                request.headers_mut().insert(header.clone(), value);
            }
        }
    }

    /// Turns a guard's answer, or its failure, into what happens to the request. The one
    /// place that counts the outcome: a verdict's annotations are applied only here, and only
    /// for `Ok(Verdict::Allow)`; a `Failure` carries none.
    #[inline]
    pub(crate) fn decide<B>(
        &self,
        request: &mut Request<B>,
        result: Result<Verdict, Failure>,
    ) -> Decision {
        match result {
            Ok(Verdict::Allow(allow)) => {
                self.metrics.count(Outcome::Allowed);
                Decision::Forward(allow.apply(request))
            }
            Ok(Verdict::Respond(response)) => {
                self.metrics.count(Outcome::Responded);
                Decision::Respond(response)
            }
            Err(failure) => self.fail(request, failure),
        }
    }

    /// Counts, reports (rate-limited) and applies the failure policy.
    #[cold]
    fn fail<B>(&self, request: &mut Request<B>, failure: Failure) -> Decision {
        let mode = self.policy.mode();
        let outcome = failure.outcome(mode);
        self.metrics.count(outcome);
        self.report(&failure, outcome);
        match mode {
            FailureMode::Open => {
                self.mark_skipped(request, failure.skip_reason());
                Decision::Forward(None)
            }
            FailureMode::Closed => Decision::Respond(self.policy.failure_response()),
        }
    }

    /// Logs a failure, at most `log_lines_per_second` lines per second for this guard plus one
    /// line saying how many were held back. An open circuit is not logged per request: its
    /// transitions are, and the counter says the rest.
    fn report(&self, failure: &Failure, outcome: Outcome) {
        if matches!(failure, Failure::CircuitOpen) {
            return;
        }
        let Some(permit) = self.log.check() else {
            return;
        };
        let name = &*self.name;
        let then = match self.policy.mode() {
            FailureMode::Open => "request continues without it",
            FailureMode::Closed => "request refused",
        };
        if permit.suppressed() > 0 {
            tracing::warn!(
                guard = name,
                suppressed = permit.suppressed(),
                "guard {name}: {} failure reports suppressed by the log rate limit",
                permit.suppressed()
            );
        }
        match failure {
            Failure::Error(error) => tracing::warn!(
                guard = name,
                outcome = outcome.as_str(),
                kind = error.kind().as_str(),
                error = %ErrorChain(error),
                "guard {name} failed; {then}"
            ),
            Failure::Panicked(panic) => tracing::error!(
                guard = name,
                outcome = outcome.as_str(),
                panic = %panic,
                "guard {name} panicked (contained to this request); {then}"
            ),
            Failure::TimedOut => tracing::warn!(
                guard = name,
                outcome = outcome.as_str(),
                timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                "guard {name} timed out after {:?}; {then}",
                self.timeout
            ),
            Failure::Overran(took) => tracing::warn!(
                guard = name,
                outcome = outcome.as_str(),
                timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                "guard {name} answered after {took:?}, over its timeout of {:?} (it could not be \
                 interrupted: it did not wait); its answer was discarded; {then}",
                self.timeout
            ),
            Failure::CircuitOpen => {}
        }
    }

    /// Reports that the guard could not be given a timer; the request waits for the guard.
    #[cold]
    pub(crate) fn report_no_timer(&self) {
        if self.log.check().is_some() {
            tracing::error!(
                guard = %self.name,
                "no Tokio timer available (not inside a Tokio runtime with time enabled): the \
                 guard's timeout cannot be enforced"
            );
        }
    }

    /// Starts timing an evaluation: one clock read, and whether the histogram samples it.
    #[inline]
    pub(crate) fn start_timing(&self) -> Timing {
        Timing {
            start: self.stopwatch.mark(),
            sampled: sample(self.duration_threshold),
        }
    }

    /// How long the evaluation has run so far.
    pub(crate) fn elapsed(&self, timing: &Timing) -> Duration {
        self.stopwatch.between(timing.start, self.stopwatch.mark())
    }

    /// Ends timing an evaluation (one clock read): records its duration when sampled, and
    /// returns it if it exceeded the timeout.
    #[inline]
    pub(crate) fn finish_timing(&self, timing: &Timing) -> Option<Duration> {
        let took = self.elapsed(timing);
        if timing.sampled {
            self.metrics.duration.record(took.as_secs_f64());
        }
        (took > self.timeout).then_some(took)
    }

    /// The verdict of an evaluation that has ended, held to its budget: an answer (verdict or
    /// error) that came after the timeout is replaced by [`Failure::Overran`], as if the timer
    /// had fired; a panic stays a panic.
    #[inline]
    pub(crate) fn within_budget(
        &self,
        timing: &Timing,
        result: Result<Verdict, Failure>,
    ) -> Result<Verdict, Failure> {
        match (self.finish_timing(timing), result) {
            (Some(took), Ok(_) | Err(Failure::Error(_))) => Err(Failure::Overran(took)),
            (_, result) => result,
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("mode", &self.policy.mode())
            .field("timeout", &self.timeout)
            .field("kill_switch", &self.kill_switch)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Per-thread xorshift state for duration sampling; 0 until first use.
    static SAMPLER: Cell<u64> = const { Cell::new(0) };
}

/// The sampling threshold for timing one evaluation in `one_in`: a random `u64` at or below
/// it is picked. Computed once, so the request path compares instead of dividing.
fn sample_threshold(one_in: u32) -> u64 {
    match one_in {
        0 => 0,
        n => u64::MAX / u64::from(n),
    }
}

/// Whether to time this evaluation: true with probability `threshold / u64::MAX` (always for
/// `u64::MAX`, never for 0).
///
/// Random rather than every n-th, so that guards evaluated in a fixed pattern (two guards per
/// request on one thread) are each sampled fairly. A per-thread generator keeps it free of
/// shared writes.
#[inline]
fn sample(threshold: u64) -> bool {
    match threshold {
        0 => false,
        u64::MAX => true,
        threshold => SAMPLER
            .try_with(|state| {
                let mut x = state.get();
                if x == 0 {
                    x = RandomState::new().hash_one(0_u64) | 1;
                }
                // xorshift64: never 0 from a non-zero state.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                state.set(x);
                x <= threshold
            })
            .unwrap_or(false),
    }
}

/// An error with its `source()` chain, `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        // Bounded: a cyclic or absurdly deep chain cannot make a log line unbounded.
        let mut depth = 0;
        while let Some(error) = source {
            if depth == 8 {
                return f.write_str(": …");
            }
            write!(f, ": {error}")?;
            source = error.source();
            depth += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{sample, sample_threshold};

    #[test]
    fn sampling_rate_is_about_one_in_n() {
        assert!((0..1000).all(|_| sample(sample_threshold(1))));
        assert!((0..1000).all(|_| !sample(sample_threshold(0))));
        let sixteenth = sample_threshold(16);
        let hits = (0..160_000).filter(|_| sample(sixteenth)).count();
        // Expected 10,000; a xorshift generator stays well within ±20 %.
        assert!((8_000..12_000).contains(&hits), "{hits}");
    }

    #[test]
    fn two_interleaved_guards_are_sampled_alike() {
        let (mut a, mut b) = (0, 0);
        let sixteenth = sample_threshold(16);
        for _ in 0..80_000 {
            a += usize::from(sample(sixteenth));
            b += usize::from(sample(sixteenth));
        }
        assert!((4_000..6_000).contains(&a), "{a}");
        assert!((4_000..6_000).contains(&b), "{b}");
    }
}
