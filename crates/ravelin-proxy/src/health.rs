//! Passive health of one upstream: a circuit breaker fed by the upstream's own answers
//! (Envoy's outlier detection on `consecutive_gateway_failure`, for one upstream).
//!
//! ```text
//!             `consecutive_failures` gateway failures in a row
//!   ┌────────┐ ─────────────────────────────────────────────▶ ┌────────┐ requests answered 503
//!   │ Closed │                                                │  Open  │ at once, Retry-After =
//!   └────────┘ ◀─────────┐                     ┌────────────▶ └────────┘ the cooldown left
//!                        │ the probe succeeds  │ the probe fails:   │
//!                        │                     │ cooldown doubles   │ jittered cooldown over:
//!                      ┌─┴─────────────────────┴─┐ (to the cap)     ▼ the next request probes
//!                      │        Half-open        │ ◀────────────────┘
//!                      └─────────────────────────┘ one probe in flight; the rest: 503
//! ```
//!
//! A *gateway failure* is what says the upstream itself is unwell: the connection could not be
//! made (refused, reset, connect timeout), the upstream broke the protocol, its response head
//! did not arrive in time, or it answered 502, 503 or 504. Every other answer, 500 included, is
//! a success here: the upstream is up and speaking HTTP.
//!
//! The cooldown after the `n`-th opening in a row is `open_for × 2ⁿ⁻¹`, capped at
//! `max_open_for`, plus a random share of up to half of it, so proxies (or workers) that saw
//! one upstream die together do not probe it together. A dead upstream therefore costs at most
//! one connection attempt per cooldown, and at least `open_for` passes between two.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ravelin_primitives::clock::{Clock, Nanos};
use ravelin_primitives::{LogLimiter, Validate, Violations};
use serde::{Deserialize, Serialize};

use crate::jitter;

/// A shared monotonic clock, as every time-based part of an upstream reads it.
pub(crate) type SharedClock = Arc<dyn Clock<Instant = Nanos>>;

/// When an upstream counts as failing, and how it is given another chance.
///
/// | key | default | bounds | as in Envoy's outlier detection |
/// |---|---|---|---|
/// | `enabled` | `true` | | |
/// | `consecutive_failures` | 5 | 1 to 1,000 | `consecutive_gateway_failure` (5) |
/// | `open_for` | 5 s | 100 ms to 1 h | `base_ejection_time` (30 s) |
/// | `max_open_for` | 60 s | `open_for` to 1 h | `max_ejection_time` (300 s) |
///
/// A single upstream behind a route has no spare to send traffic to while it is ejected, so the
/// first cooldown is shorter than Envoy's: 5 s of fast 503s, then one probe.
///
/// ```
/// use ravelin_proxy::HealthConfig;
/// use ravelin_primitives::Validate;
///
/// let health: HealthConfig =
///     serde_json::from_str(r#"{ "consecutive_failures": 3, "open_for": "2s" }"#).unwrap();
/// health.validate().unwrap();
/// assert_eq!(health.max_open_for, HealthConfig::default().max_open_for);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Off: every request is sent, whatever the upstream did before.
    pub enabled: bool,
    /// Gateway failures in a row that open the circuit.
    pub consecutive_failures: u32,
    /// The first cooldown; it doubles on each failed probe, up to `max_open_for`.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The longest cooldown (before jitter).
    #[serde(with = "humantime_serde")]
    pub max_open_for: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
        }
    }
}

impl HealthConfig {
    /// The most `consecutive_failures`.
    pub const MAX_CONSECUTIVE_FAILURES: u32 = 1000;
    /// The shortest `open_for`.
    pub const MIN_OPEN_FOR: Duration = Duration::from_millis(100);
    /// The longest `open_for` and `max_open_for`.
    pub const MAX_OPEN_FOR: Duration = Duration::from_secs(3600);

    /// Health checking off: no request is ever refused because of earlier failures.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The cooldown before jitter after the `openings`-th opening in a row (1 for the first).
    fn cooldown(&self, openings: u32) -> Duration {
        let doublings = openings.saturating_sub(1).min(31);
        self.open_for
            .saturating_mul(1_u32 << doublings)
            .min(self.max_open_for)
            .max(self.open_for)
    }
}

impl Validate for HealthConfig {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        v.check_range(
            "consecutive_failures",
            self.consecutive_failures,
            1..=Self::MAX_CONSECUTIVE_FAILURES,
        );
        if self.open_for < Self::MIN_OPEN_FOR || self.open_for > Self::MAX_OPEN_FOR {
            v.push(
                "open_for",
                format!(
                    "must be between {:?} and {:?}, got {:?}",
                    Self::MIN_OPEN_FOR,
                    Self::MAX_OPEN_FOR,
                    self.open_for
                ),
            );
        }
        if self.max_open_for < self.open_for || self.max_open_for > Self::MAX_OPEN_FOR {
            v.push(
                "max_open_for",
                format!(
                    "must be between open_for ({:?}) and {:?}, got {:?}",
                    self.open_for,
                    Self::MAX_OPEN_FOR,
                    self.max_open_for
                ),
            );
        }
        v.into_result()
    }
}

// === Health ===

/// The breaker of one upstream. Closed, the request path costs one atomic load to admit and
/// at most one atomic write to record; the mutex is taken only while the circuit is tripped.
pub(crate) struct Health {
    config: HealthConfig,
    clock: SharedClock,
    /// `false` while closed: the fast path.
    tripped: AtomicBool,
    consecutive: AtomicU32,
    /// Bumped on every transition; outcomes of requests admitted before one are ignored.
    generation: AtomicU64,
    slow: Mutex<Slow>,
    metrics: HealthMetrics,
    log: LogLimiter,
    name: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Nanos },
    HalfOpen { probing: bool },
}

struct Slow {
    phase: Phase,
    /// Openings in a row without a successful probe between them.
    openings: u32,
}

struct HealthMetrics {
    /// 0 closed, 1 open, 2 half-open (as `ravelin_guard_circuit_state`).
    state: metrics::Gauge,
    /// Requests answered 503 without contacting the upstream.
    rejected: metrics::Counter,
    opened: metrics::Counter,
}

/// What [`Health::admit`] decided.
pub(crate) enum Admission<'a> {
    /// Send the request; report its outcome on the ticket.
    Pass(Ticket<'a>),
    /// Do not contact the upstream; it may be tried again after this long.
    Reject { retry_after: Duration },
}

/// One admitted request. Dropped without [`Ticket::record`] (the client went away), a probe
/// frees its slot so the next request probes instead.
pub(crate) struct Ticket<'a> {
    health: &'a Health,
    generation: u64,
    probe: bool,
    recorded: bool,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("config", &self.config)
            .field("phase", &self.lock().phase)
            .finish_non_exhaustive()
    }
}

impl Health {
    pub(crate) fn new(name: &Arc<str>, config: HealthConfig, clock: SharedClock) -> Self {
        let upstream = Arc::clone(name);
        Self {
            config,
            clock,
            tripped: AtomicBool::new(false),
            consecutive: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            slow: Mutex::new(Slow {
                phase: Phase::Closed,
                openings: 0,
            }),
            metrics: HealthMetrics {
                state: metrics::gauge!("ravelin_proxy_upstream_circuit_state", "upstream" => Arc::clone(&upstream)),
                rejected: metrics::counter!("ravelin_proxy_upstream_errors_total", "upstream" => Arc::clone(&upstream), "kind" => "circuit_open"),
                opened: metrics::counter!("ravelin_proxy_upstream_circuit_opened_total", "upstream" => Arc::clone(&upstream)),
            },
            log: LogLimiter::per_second(5),
            name: upstream,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slow> {
        // The state is a few plain fields, consistent after every statement: a panic elsewhere
        // while the lock was held cannot leave it half-written.
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request may be sent now.
    pub(crate) fn admit(&self) -> Admission<'_> {
        let ticket = |probe, generation| {
            Admission::Pass(Ticket {
                health: self,
                generation,
                probe,
                recorded: false,
            })
        };
        if !self.config.enabled || !self.tripped.load(Ordering::Acquire) {
            return ticket(false, self.generation.load(Ordering::Acquire));
        }
        let now = self.clock.now();
        let mut slow = self.lock();
        // Read under the lock: every transition happens under it.
        let generation = self.generation.load(Ordering::Acquire);
        match slow.phase {
            Phase::Closed => ticket(false, generation),
            Phase::Open { until } if now < until => {
                self.metrics.rejected.increment(1);
                Admission::Reject {
                    retry_after: until - now,
                }
            }
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                slow.phase = Phase::HalfOpen { probing: true };
                self.metrics.state.set(2.0);
                ticket(true, generation)
            }
            Phase::HalfOpen { probing: true } => {
                self.metrics.rejected.increment(1);
                // The probe's answer is pending; a second is a fair guess of when to look again.
                Admission::Reject {
                    retry_after: Duration::from_secs(1),
                }
            }
        }
    }

    fn open(&self, slow: &mut Slow, now: Nanos) {
        slow.openings = slow.openings.saturating_add(1);
        let cooldown = self.config.cooldown(slow.openings);
        let cooldown = cooldown.saturating_add(jitter::up_to(cooldown / 2));
        slow.phase = Phase::Open {
            until: now + cooldown,
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.tripped.store(true, Ordering::Release);
        self.metrics.state.set(1.0);
        self.metrics.opened.increment(1);
        if let Some(permit) = self.log.check() {
            tracing::warn!(
                upstream = &*self.name,
                cooldown = ?cooldown,
                openings = slow.openings,
                suppressed = permit.suppressed(),
                "upstream failing: requests are answered 503 until a probe succeeds"
            );
        }
    }

    fn close(&self, slow: &mut Slow) {
        slow.phase = Phase::Closed;
        slow.openings = 0;
        self.consecutive.store(0, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.tripped.store(false, Ordering::Release);
        self.metrics.state.set(0.0);
        if let Some(permit) = self.log.check() {
            tracing::info!(
                upstream = &*self.name,
                suppressed = permit.suppressed(),
                "upstream recovered: the probe succeeded"
            );
        }
    }

    fn record(&self, ticket: &Ticket<'_>, failure: bool) {
        if !self.config.enabled {
            return;
        }
        if ticket.probe {
            let mut slow = self.lock();
            if slow.phase == (Phase::HalfOpen { probing: true }) {
                if failure {
                    let now = self.clock.now();
                    self.open(&mut slow, now);
                } else {
                    self.close(&mut slow);
                }
            }
            return;
        }
        // A request admitted before the last transition says nothing about the state now.
        if self.generation.load(Ordering::Acquire) != ticket.generation {
            return;
        }
        if !failure {
            // Read first: a healthy upstream's requests then never write the shared line.
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = self
            .consecutive
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures >= self.config.consecutive_failures {
            let mut slow = self.lock();
            // Checked again under the lock: another failure may have opened it meanwhile.
            if slow.phase == Phase::Closed
                && self.generation.load(Ordering::Acquire) == ticket.generation
            {
                let now = self.clock.now();
                self.open(&mut slow, now);
            }
        }
    }

    fn abandon(&self, ticket: &Ticket<'_>) {
        if ticket.probe {
            let mut slow = self.lock();
            if slow.phase == (Phase::HalfOpen { probing: true }) {
                slow.phase = Phase::HalfOpen { probing: false };
            }
        }
    }
}

impl Ticket<'_> {
    /// Reports the outcome: `failure` for a gateway failure.
    pub(crate) fn record(mut self, failure: bool) {
        self.recorded = true;
        self.health.record(&self, failure);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.health.abandon(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use ravelin_primitives::clock::ManualClock;

    use super::*;

    fn health(config: HealthConfig) -> (Health, ManualClock) {
        let clock = ManualClock::new();
        let name: Arc<str> = Arc::from("web");
        (Health::new(&name, config, Arc::new(clock.clone())), clock)
    }

    fn config() -> HealthConfig {
        HealthConfig {
            consecutive_failures: 3,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(4),
            ..HealthConfig::default()
        }
    }

    /// Sends one request with `failure` as its outcome; `false` when it was refused.
    fn call(health: &Health, failure: bool) -> bool {
        match health.admit() {
            Admission::Pass(ticket) => {
                ticket.record(failure);
                true
            }
            Admission::Reject { .. } => false,
        }
    }

    #[test]
    fn defaults_are_valid_and_bounds_name_the_field() {
        HealthConfig::default().validate().unwrap();
        let bad = HealthConfig {
            consecutive_failures: 0,
            open_for: Duration::from_millis(10),
            max_open_for: Duration::from_secs(7200),
            ..HealthConfig::default()
        };
        let text = bad.validate().unwrap_err().to_string();
        for field in ["consecutive_failures", "open_for", "max_open_for"] {
            assert!(text.contains(field), "{text}");
        }
        let inverted = HealthConfig {
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(5),
            ..HealthConfig::default()
        };
        assert!(inverted.validate().is_err());
    }

    #[test]
    fn cooldown_doubles_to_the_cap() {
        let c = config();
        assert_eq!(c.cooldown(1), Duration::from_secs(1));
        assert_eq!(c.cooldown(2), Duration::from_secs(2));
        assert_eq!(c.cooldown(3), Duration::from_secs(4));
        assert_eq!(c.cooldown(50), Duration::from_secs(4));
        assert_eq!(c.cooldown(u32::MAX), Duration::from_secs(4));
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let (h, _clock) = health(config());
        assert!(call(&h, true));
        assert!(call(&h, true));
        assert!(call(&h, false));
        assert!(call(&h, true));
        assert!(call(&h, true));
        assert!(call(&h, true));
        // Open: refused with the cooldown left, between 1 s and 1.5 s.
        match h.admit() {
            Admission::Reject { retry_after } => {
                assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
                assert!(
                    retry_after <= Duration::from_millis(1500),
                    "{retry_after:?}"
                );
            }
            Admission::Pass(_) => panic!("admitted while open"),
        }
    }

    #[test]
    fn one_probe_per_cooldown_and_the_cooldown_grows() {
        let (h, clock) = health(config());
        for _ in 0..3 {
            call(&h, true);
        }
        // Before the shortest possible cooldown: nothing passes.
        clock.advance(Duration::from_millis(999));
        assert!(!call(&h, true));
        // After the longest possible first cooldown: exactly one probe.
        clock.advance(Duration::from_millis(501));
        let Admission::Pass(probe) = h.admit() else {
            panic!("no probe")
        };
        assert!(matches!(h.admit(), Admission::Reject { .. }));
        probe.record(true);
        // Second cooldown: 2 s to 3 s.
        clock.advance(Duration::from_millis(1999));
        assert!(!call(&h, false));
        clock.advance(Duration::from_millis(1001));
        // The probe succeeds: closed again, and the next opening starts from 1 s.
        assert!(call(&h, false));
        assert!(call(&h, false));
        for _ in 0..3 {
            assert!(call(&h, true));
        }
        clock.advance(Duration::from_millis(1500));
        assert!(call(&h, false));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_request_probe() {
        let (h, clock) = health(config());
        for _ in 0..3 {
            call(&h, true);
        }
        clock.advance(Duration::from_secs(2));
        let Admission::Pass(probe) = h.admit() else {
            panic!("no probe")
        };
        drop(probe);
        assert!(call(&h, false));
        assert!(call(&h, false));
    }

    #[test]
    fn outcomes_from_before_a_transition_are_ignored() {
        let (h, clock) = health(config());
        let Admission::Pass(old) = h.admit() else {
            panic!()
        };
        for _ in 0..3 {
            call(&h, true);
        }
        clock.advance(Duration::from_secs(2));
        assert!(call(&h, false), "probe");
        // Closed again; a late failure from before does not count towards the next opening.
        old.record(true);
        assert!(call(&h, true));
        assert!(call(&h, true));
        assert!(call(&h, false));
    }

    #[test]
    fn disabled_never_refuses() {
        let (h, _clock) = health(HealthConfig::disabled());
        for _ in 0..100 {
            assert!(call(&h, true));
        }
    }
}
