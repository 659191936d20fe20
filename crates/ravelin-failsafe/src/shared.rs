//! The state one guard shares across its layer, every service clone, every in-flight request
//! and its handle: configuration, circuit breaker, log limiter and metric handles.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use ravelin_config::KillSwitch;

use crate::circuit::{Breaker, CircuitBreakerConfig, CircuitState, Transition};
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::guard::{GuardError, SkipReason, Skipped};
use crate::log::LogLimiter;
use crate::metrics::{Metrics, Outcome};
use crate::panic::PanicReport;
use crate::policy::{FailureMode, FailurePolicy};

/// Everything a `GuardLayer` builder collects.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name: Cow<'static, str>,
    pub(crate) policy: FailurePolicy,
    pub(crate) timeout: Duration,
    pub(crate) kill_switch: Option<KillSwitch>,
    pub(crate) breaker: CircuitBreakerConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) log_lines_per_second: u32,
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
            .field("log_lines_per_second", &self.log_lines_per_second)
            .finish()
    }
}

/// Why a guard gave no verdict for a request.
#[derive(Debug)]
pub(crate) enum Failure {
    Error(GuardError),
    Panicked(PanicReport),
    TimedOut,
    CircuitOpen,
}

impl Failure {
    fn skip_reason(&self) -> SkipReason {
        match self {
            Failure::Error(_) => SkipReason::Failed,
            Failure::Panicked(_) => SkipReason::Panicked,
            Failure::TimedOut => SkipReason::TimedOut,
            Failure::CircuitOpen => SkipReason::CircuitOpen,
        }
    }

    fn outcome(&self, mode: FailureMode) -> Outcome {
        match (self, mode) {
            (Failure::Error(_), FailureMode::Open) => Outcome::FailedOpen,
            (Failure::Error(_), FailureMode::Closed) => Outcome::FailedClosed,
            (Failure::Panicked(_), _) => Outcome::Panicked,
            (Failure::TimedOut, _) => Outcome::TimedOut,
            (Failure::CircuitOpen, _) => Outcome::CircuitOpen,
        }
    }
}

/// What the failure policy made of a failed request.
pub(crate) enum Applied<B> {
    /// Fail open: forward this (now marked) request.
    Forward(Request<B>),
    /// Fail closed: answer with this.
    Respond(Response<Bytes>),
}

pub(crate) struct Shared {
    pub(crate) name: Cow<'static, str>,
    pub(crate) policy: FailurePolicy,
    pub(crate) timeout: Duration,
    pub(crate) kill_switch: Option<KillSwitch>,
    pub(crate) breaker: Breaker,
    pub(crate) metrics: Arc<Metrics>,
    skip_value: Option<HeaderValue>,
    log: LogLimiter,
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let name = config.name;
        let metrics = Arc::new(Metrics::register(&name));
        metrics
            .circuit_state
            .set(CircuitState::Closed.gauge_value());

        if let Err(error) = config.breaker.validate() {
            tracing::error!(
                guard = %name,
                %error,
                "invalid circuit breaker configuration: running with the value clamped into range"
            );
        }
        let skip_value = match HeaderValue::from_str(&name) {
            Ok(value) => Some(value),
            Err(_) => {
                if config.policy.skip_header_name().is_some() {
                    let error = ConfigError::Name {
                        name: name.to_string(),
                    };
                    tracing::error!(guard = %name, %error, "guard misconfigured");
                }
                None
            }
        };
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
        Self {
            breaker: Breaker::new(&config.breaker, config.clock.clone(), observer),
            log: LogLimiter::per_second(config.log_lines_per_second)
                .with_shared_clock(config.clock),
            name,
            policy: config.policy,
            timeout: config.timeout,
            kill_switch: config.kill_switch,
            metrics,
            skip_value,
        }
    }

    /// The kill switch, read lock-free (one relaxed load).
    #[inline]
    pub(crate) fn is_killed(&self) -> bool {
        self.kill_switch
            .as_ref()
            .is_some_and(KillSwitch::is_engaged)
    }

    /// Marks `request` as not checked by this guard: the `Skipped` extension and, when
    /// configured, the skip header.
    pub(crate) fn mark_skipped<B>(&self, request: &mut Request<B>, reason: SkipReason) {
        let extensions = request.extensions_mut();
        match extensions.get_mut::<Skipped>() {
            Some(skipped) => skipped.push(self.name.clone(), reason),
            None => {
                let mut skipped = Skipped::default();
                skipped.push(self.name.clone(), reason);
                extensions.insert(skipped);
            }
        }
        if let (Some(header), Some(value)) = (self.policy.skip_header_name(), &self.skip_value) {
            request.headers_mut().append(header.clone(), value.clone());
        }
    }

    /// Counts, reports (rate-limited) and applies the failure policy.
    #[cold]
    pub(crate) fn fail<B>(&self, mut request: Request<B>, failure: Failure) -> Applied<B> {
        let mode = self.policy.mode();
        let outcome = failure.outcome(mode);
        self.metrics.count(outcome);
        self.report(&failure, outcome);
        match mode {
            FailureMode::Open => {
                self.mark_skipped(&mut request, failure.skip_reason());
                Applied::Forward(request)
            }
            FailureMode::Closed => Applied::Respond(self.policy.failure_response()),
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
                timeout_ms = self.timeout.as_millis() as u64,
                "guard {name} timed out after {:?}; {then}",
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

    /// Records a finished guard evaluation: breaker outcome and duration.
    #[inline]
    pub(crate) fn observe_duration(&self, start: Instant) {
        self.metrics.duration.record(start.elapsed().as_secs_f64());
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
