//! Outcomes and the metric handles of one guard, registered once when the layer is built.

use metrics::{Counter, Gauge, Histogram, Unit};

/// The counter of guard decisions, by `guard` and `outcome`.
pub const DECISIONS_TOTAL: &str = "ravelin_guard_decisions_total";
/// The gauge of each guard's circuit state, by `guard` (see
/// [`CircuitState::gauge_value`](crate::CircuitState::gauge_value)).
pub const CIRCUIT_STATE: &str = "ravelin_guard_circuit_state";
/// The histogram of guard evaluation times in seconds, by `guard`.
pub const DURATION_SECONDS: &str = "ravelin_guard_duration_seconds";

/// How one request fared at one guard: exactly one outcome per request, the `outcome` label of
/// `ravelin_guard_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The guard allowed the request.
    Allowed,
    /// The guard answered the request itself (e.g. 429).
    Responded,
    /// The guard returned an error; fail-open policy: the request continued without it.
    FailedOpen,
    /// The guard returned an error; fail-closed policy: the request got the failure response.
    FailedClosed,
    /// The guard panicked; the panic was contained and the policy applied.
    Panicked,
    /// The guard exceeded its timeout; the policy applied.
    TimedOut,
    /// The guard's circuit was open (or half-open with every probe slot taken): the guard was
    /// not called and the policy applied.
    CircuitOpen,
    /// The guard's kill switch was engaged: module off, the request continued without it.
    Killed,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 8] = [
        Outcome::Allowed,
        Outcome::Responded,
        Outcome::FailedOpen,
        Outcome::FailedClosed,
        Outcome::Panicked,
        Outcome::TimedOut,
        Outcome::CircuitOpen,
        Outcome::Killed,
    ];

    /// The metric label value: `allowed`, `responded`, `failed_open`, `failed_closed`,
    /// `panicked`, `timed_out`, `circuit_open` or `killed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Responded => "responded",
            Outcome::FailedOpen => "failed_open",
            Outcome::FailedClosed => "failed_closed",
            Outcome::Panicked => "panicked",
            Outcome::TimedOut => "timed_out",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::Killed => "killed",
        }
    }
}

/// One guard's metric handles. Each is looked up once here; the request path only increments.
#[derive(Debug)]
pub(crate) struct Metrics {
    allowed: Counter,
    responded: Counter,
    failed_open: Counter,
    failed_closed: Counter,
    panicked: Counter,
    timed_out: Counter,
    circuit_open: Counter,
    killed: Counter,
    pub(crate) circuit_state: Gauge,
    pub(crate) duration: Histogram,
}

impl Metrics {
    pub(crate) fn register(guard: &str) -> Self {
        metrics::describe_counter!(
            DECISIONS_TOTAL,
            Unit::Count,
            "Requests seen by each guard, by outcome."
        );
        metrics::describe_gauge!(
            CIRCUIT_STATE,
            "Circuit state of each guard: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed."
        );
        metrics::describe_histogram!(
            DURATION_SECONDS,
            Unit::Seconds,
            "Time each guard took to reach a verdict or fail."
        );
        let counter = |outcome: Outcome| metrics::counter!(DECISIONS_TOTAL, "guard" => guard.to_owned(), "outcome" => outcome.as_str());
        Self {
            allowed: counter(Outcome::Allowed),
            responded: counter(Outcome::Responded),
            failed_open: counter(Outcome::FailedOpen),
            failed_closed: counter(Outcome::FailedClosed),
            panicked: counter(Outcome::Panicked),
            timed_out: counter(Outcome::TimedOut),
            circuit_open: counter(Outcome::CircuitOpen),
            killed: counter(Outcome::Killed),
            circuit_state: metrics::gauge!(CIRCUIT_STATE, "guard" => guard.to_owned()),
            duration: metrics::histogram!(DURATION_SECONDS, "guard" => guard.to_owned()),
        }
    }

    #[inline]
    pub(crate) fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Responded => &self.responded,
            Outcome::FailedOpen => &self.failed_open,
            Outcome::FailedClosed => &self.failed_closed,
            Outcome::Panicked => &self.panicked,
            Outcome::TimedOut => &self.timed_out,
            Outcome::CircuitOpen => &self.circuit_open,
            Outcome::Killed => &self.killed,
        };
        counter.increment(1);
    }
}
