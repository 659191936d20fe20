//! A circuit breaker for one guard: stop calling a guard that keeps failing, probe it after a
//! cooldown, close again when it recovers.
//!
//! ```text
//!            failure rate >= threshold over the last `window` calls (at least `minimum_calls`)
//!            or `consecutive_failures` failures in a row
//!   ┌────────┐ ───────────────────────────────────────────────▶ ┌────────┐
//!   │ Closed │                                                  │  Open  │ guard not called,
//!   └────────┘ ◀──────────┐                      ┌────────────▶ └────────┘ policy applies
//!        ▲                │ `half_open_successes` │ a probe fails,    │
//!        │                │ probes succeed        │ or `max_half_open`│ `open_for` elapsed:
//!        │                │                       │ passes            ▼ the next request probes
//!        │              ┌─┴───────────────────────┴─┐
//!        │              │         Half-open         │ at most `half_open_probes` guard calls
//!        │              └───────────────────────────┘ in flight; other requests: policy
//!        │ reset()
//!   ForcedOpen / ForcedClosed: set through GuardHandle, left only by reset() or the other force.
//! ```

use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use ravelin_primitives::clock::Nanos;

use crate::clock::SharedClock;
use crate::error::ConfigError;

/// The largest sliding window, in calls. The window is a bitmap (one bit per call); on each
/// failure its set bits are counted, so 4096 calls cost 64 word reads on the failure path.
pub const MAX_WINDOW: u32 = 4096;
/// The largest value for the half-open probe and success counts (12-bit fields of the packed
/// state).
pub const MAX_HALF_OPEN_COUNT: u32 = 4095;
/// The longest cooldown ([`open_for`](CircuitBreakerConfig::open_for)) or half-open wait
/// ([`max_half_open`](CircuitBreakerConfig::max_half_open)) a breaker accepts: an hour.
pub const MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(3600);

/// When a guard's circuit opens and how it recovers.
///
/// | setting | Ravelin | resilience4j | tower-resilience | Envoy outlier detection |
/// |---|---|---|---|---|
/// | failure rate threshold | 50 % | 50 % | 50 % | — |
/// | sliding window | last 100 calls | last 100 calls | last 100 calls | — |
/// | minimum calls before the rate counts | 20 | 100 | — | — |
/// | consecutive failures | 10 | — | — | 5 (`consecutive_5xx`) |
/// | open (cooldown) | 10 s | 60 s | 30 s | 30 s (`base_ejection_time`) |
/// | concurrent half-open probes | 1 | 10 calls (not concurrent) | 1 | — |
/// | successes to close | 3 | rate over 10 calls | 1 | — |
/// | max time half-open | 30 s | off (`maxWaitDurationInHalfOpenState`) | — | — |
///
/// Why these values:
/// - **50 % over the last 100 calls** is what resilience4j and tower-resilience use, so
///   operators reading either get what they expect.
/// - **Minimum 20 calls**, not 100: with 100, a guard on a quiet route would need 100 requests
///   before a dead dependency could trip it. 20 still keeps one failure in two calls from
///   opening the circuit.
/// - **10 consecutive failures** trips a circuit whose dependency died while the window is full
///   of successes (the rate would need 50 more failures). At a healthy 1 % error rate, ten in a
///   row happen with probability 10⁻²⁰.
/// - **10 s open**: while open, a fail-open guard protects nothing and a fail-closed guard
///   refuses everything, so Ravelin probes sooner than resilience4j (60 s); probing is cheap
///   because it is capped.
/// - **1 probe at a time, 3 successes to close**: a recovering dependency sees a trickle, not
///   a herd; any probe failure re-opens.
/// - **30 s max half-open**: probes that never complete (a guard stuck without a timeout, low
///   traffic) cannot hold the circuit half-open forever; it re-opens and tries again later.
///
/// Only guard failures count: errors, panics, timeouts. A `Respond` verdict (429, 403) is a
/// success: the guard worked.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakerConfig {
    enabled: bool,
    failure_rate: f64,
    window: u32,
    minimum_calls: u32,
    consecutive_failures: u32,
    open_for: Duration,
    half_open_probes: u32,
    half_open_successes: u32,
    max_half_open: Duration,
}

// === impl CircuitBreakerConfig ===

impl CircuitBreakerConfig {
    /// The defaults in the table above.
    pub const fn new() -> Self {
        Self {
            enabled: true,
            failure_rate: 0.5,
            window: 100,
            minimum_calls: 20,
            consecutive_failures: 10,
            open_for: Duration::from_secs(10),
            half_open_probes: 1,
            half_open_successes: 3,
            max_half_open: Duration::from_secs(30),
        }
    }

    /// A breaker that never opens by itself (forcing through the handle still works). For
    /// guards whose failures are per-request facts rather than a broken dependency.
    pub const fn disabled() -> Self {
        let mut config = Self::new();
        config.enabled = false;
        config
    }

    /// Whether the breaker opens by itself.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Open when at least this fraction of the calls in the window failed, in `(0, 1]`.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// The sliding window, in calls (1 to [`MAX_WINDOW`]).
    pub fn window(mut self, calls: u32) -> Self {
        self.window = calls;
        self
    }

    /// The failure rate counts only once the window holds this many calls (1 to `window`).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// Open after this many failures in a row; 0 turns the rule off.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// How long the circuit stays open before probing (at most [`MAX_CIRCUIT_DURATION`]).
    pub fn open_for(mut self, cooldown: Duration) -> Self {
        self.open_for = cooldown;
        self
    }

    /// Guard calls allowed in flight while half-open (1 to [`MAX_HALF_OPEN_COUNT`]); requests
    /// beyond get the policy, as when open.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// Successful probes needed to close (1 to [`MAX_HALF_OPEN_COUNT`]).
    pub fn half_open_successes(mut self, successes: u32) -> Self {
        self.half_open_successes = successes;
        self
    }

    /// The longest the circuit stays half-open before re-opening (more than zero, at most
    /// [`MAX_CIRCUIT_DURATION`]).
    pub fn max_half_open(mut self, max: Duration) -> Self {
        self.max_half_open = max;
        self
    }

    /// Checks every value, naming the first one out of range.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting, its value and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &'static str, value: String, allowed: String| {
            Err(ConfigError::CircuitBreaker {
                setting,
                value,
                allowed,
            })
        };
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return invalid(
                "failure_rate",
                self.failure_rate.to_string(),
                "more than 0 and at most 1".into(),
            );
        }
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return invalid(
                "window",
                self.window.to_string(),
                format!("1 to {MAX_WINDOW} calls"),
            );
        }
        if !(1..=self.window).contains(&self.minimum_calls) {
            return invalid(
                "minimum_calls",
                self.minimum_calls.to_string(),
                format!("1 to the window ({})", self.window),
            );
        }
        if !(1..=MAX_HALF_OPEN_COUNT).contains(&self.half_open_probes) {
            return invalid(
                "half_open_probes",
                self.half_open_probes.to_string(),
                format!("1 to {MAX_HALF_OPEN_COUNT}"),
            );
        }
        if !(1..=MAX_HALF_OPEN_COUNT).contains(&self.half_open_successes) {
            return invalid(
                "half_open_successes",
                self.half_open_successes.to_string(),
                format!("1 to {MAX_HALF_OPEN_COUNT}"),
            );
        }
        if self.open_for > MAX_CIRCUIT_DURATION {
            return invalid(
                "open_for",
                format!("{:?}", self.open_for),
                format!("at most {MAX_CIRCUIT_DURATION:?}"),
            );
        }
        if self.max_half_open.is_zero() || self.max_half_open > MAX_CIRCUIT_DURATION {
            return invalid(
                "max_half_open",
                format!("{:?}", self.max_half_open),
                format!("more than zero and at most {MAX_CIRCUIT_DURATION:?}"),
            );
        }
        Ok(())
    }

    /// Every value forced into range. `GuardLayerBuilder::build` refuses an invalid
    /// configuration, so there this changes nothing; it keeps `Breaker::new` total for any input.
    fn sanitized(&self) -> Self {
        let defaults = Self::new();
        let window = self.window.clamp(1, MAX_WINDOW);
        Self {
            enabled: self.enabled,
            failure_rate: if self.failure_rate > 0.0 && self.failure_rate <= 1.0 {
                self.failure_rate
            } else {
                defaults.failure_rate
            },
            window,
            minimum_calls: self.minimum_calls.clamp(1, window),
            consecutive_failures: self.consecutive_failures,
            open_for: self.open_for,
            half_open_probes: self.half_open_probes.clamp(1, MAX_HALF_OPEN_COUNT),
            half_open_successes: self.half_open_successes.clamp(1, MAX_HALF_OPEN_COUNT),
            max_half_open: if self.max_half_open.is_zero() {
                defaults.max_half_open
            } else {
                self.max_half_open
            },
        }
    }
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a guard's circuit stands: defined in `ravelin-primitives`, where `/status` finds it too.
pub use ravelin_primitives::CircuitState;

/// The state a tag of the circuit's atomic word stands for.
const fn state_from_tag(tag: u64) -> CircuitState {
    match tag {
        OPEN => CircuitState::Open,
        HALF_OPEN => CircuitState::HalfOpen,
        FORCED_OPEN => CircuitState::ForcedOpen,
        FORCED_CLOSED => CircuitState::ForcedClosed,
        _ => CircuitState::Closed,
    }
}

// The whole state is one atomic word, so every transition is one compare-and-swap and the
// success path is plain loads:
//   bits 0..8 tag | 8..20 probes in flight | 20..32 probe successes | 32..64 epoch.
// The epoch grows with every transition; a permit remembers the epoch it was taken in, so an
// outcome that arrives after the circuit moved on (a slow call from before it opened) is
// ignored instead of being counted against the new state.
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;
const TAG_MASK: u64 = 0xff;
const IN_FLIGHT_SHIFT: u32 = 8;
const SUCCESS_SHIFT: u32 = 20;
const COUNT_MASK: u64 = 0xfff;
const EPOCH_SHIFT: u32 = 32;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    const fn new(tag: u64, epoch: u32, in_flight: u64, successes: u64) -> Self {
        Word(
            tag | (in_flight & COUNT_MASK) << IN_FLIGHT_SHIFT
                | (successes & COUNT_MASK) << SUCCESS_SHIFT
                | (epoch as u64) << EPOCH_SHIFT,
        )
    }
    const fn tag(self) -> u64 {
        self.0 & TAG_MASK
    }
    const fn in_flight(self) -> u64 {
        (self.0 >> IN_FLIGHT_SHIFT) & COUNT_MASK
    }
    const fn successes(self) -> u64 {
        (self.0 >> SUCCESS_SHIFT) & COUNT_MASK
    }
    const fn epoch(self) -> u32 {
        (self.0 >> EPOCH_SHIFT) as u32
    }
    const fn next(self, tag: u64) -> Self {
        Word::new(tag, self.epoch().wrapping_add(1), 0, 0)
    }
}

/// A state change, reported to the owner of the breaker (which logs it and sets the gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: CircuitState,
    pub(crate) to: CircuitState,
    pub(crate) reason: &'static str,
}

type Observer = Box<dyn Fn(Transition) + Send + Sync>;

/// Permission to call the guard for one request; report how it went with
/// [`Breaker::record`], or [`Breaker::abandon`] it when the request is dropped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit {
    epoch: u32,
    kind: PermitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Closed: the outcome goes into the window.
    Counted,
    /// Half-open: the outcome decides between closing and re-opening.
    Probe,
    /// Forced closed or breaker disabled: the outcome is not counted.
    Uncounted,
}

/// The circuit is open (or half-open with every probe slot taken): do not call the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejected;

/// The breaker of one guard, shared by every clone of its service.
pub(crate) struct Breaker {
    config: CircuitBreakerConfig,
    open_for: u64,
    max_half_open: u64,
    clock: SharedClock,
    origin: Nanos,
    state: AtomicU64,
    /// When the circuit last entered `Open` or `HalfOpen`, in nanoseconds since `origin`.
    since: AtomicU64,
    consecutive: AtomicU32,
    window: Window,
    observer: Observer,
}

// === impl Breaker ===

impl Breaker {
    pub(crate) fn new(
        config: &CircuitBreakerConfig,
        clock: SharedClock,
        observer: impl Fn(Transition) + Send + Sync + 'static,
    ) -> Self {
        let config = config.sanitized();
        Self {
            open_for: Nanos::from_duration(config.open_for).as_u64(),
            max_half_open: Nanos::from_duration(config.max_half_open).as_u64(),
            origin: clock.now(),
            clock,
            state: AtomicU64::new(Word::new(CLOSED, 0, 0, 0).0),
            since: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            window: Window::new(config.window),
            observer: Box::new(observer),
            config,
        }
    }

    pub(crate) fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    pub(crate) fn state(&self) -> CircuitState {
        state_from_tag(self.load().tag())
    }

    #[inline]
    fn load(&self) -> Word {
        Word(self.state.load(Ordering::Acquire))
    }

    fn now(&self) -> u64 {
        self.clock
            .now()
            .as_u64()
            .saturating_sub(self.origin.as_u64())
    }

    fn cas(&self, current: Word, next: Word) -> Result<(), Word> {
        self.state
            .compare_exchange(current.0, next.0, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Word)
    }

    fn notify(&self, from: Word, to: Word, reason: &'static str) {
        (self.observer)(Transition {
            from: state_from_tag(from.tag()),
            to: state_from_tag(to.tag()),
            reason,
        });
    }

    /// May the guard be called for this request? Closed: one atomic load.
    #[inline]
    pub(crate) fn acquire(&self) -> Result<Permit, Rejected> {
        let current = self.load();
        match current.tag() {
            CLOSED if self.config.enabled => Ok(Permit {
                epoch: current.epoch(),
                kind: PermitKind::Counted,
            }),
            CLOSED | FORCED_CLOSED => Ok(Permit {
                epoch: current.epoch(),
                kind: PermitKind::Uncounted,
            }),
            _ => self.acquire_slow(current),
        }
    }

    #[cold]
    fn acquire_slow(&self, mut current: Word) -> Result<Permit, Rejected> {
        loop {
            match current.tag() {
                OPEN => {
                    let now = self.now();
                    let since = self.since.load(Ordering::Relaxed);
                    if now.saturating_sub(since) < self.open_for {
                        return Err(Rejected);
                    }
                    // The cooldown is over: this request becomes the first probe. `since` is
                    // written before the swap publishes the state; racing writers store
                    // nearly the same instant.
                    self.since.store(now, Ordering::Relaxed);
                    let next = Word::new(HALF_OPEN, current.epoch().wrapping_add(1), 1, 0);
                    match self.cas(current, next) {
                        Ok(()) => {
                            self.notify(current, next, "cooldown elapsed");
                            return Ok(Permit {
                                epoch: next.epoch(),
                                kind: PermitKind::Probe,
                            });
                        }
                        Err(actual) => current = actual,
                    }
                }
                HALF_OPEN => {
                    let now = self.now();
                    let since = self.since.load(Ordering::Relaxed);
                    if now.saturating_sub(since) >= self.max_half_open {
                        self.since.store(now, Ordering::Relaxed);
                        let next = current.next(OPEN);
                        match self.cas(current, next) {
                            Ok(()) => {
                                self.notify(current, next, "max half-open time elapsed");
                                return Err(Rejected);
                            }
                            Err(actual) => {
                                current = actual;
                                continue;
                            }
                        }
                    }
                    if current.in_flight() >= u64::from(self.config.half_open_probes) {
                        return Err(Rejected);
                    }
                    let next = Word(current.0 + (1 << IN_FLIGHT_SHIFT));
                    match self.cas(current, next) {
                        Ok(()) => {
                            return Ok(Permit {
                                epoch: current.epoch(),
                                kind: PermitKind::Probe,
                            });
                        }
                        Err(actual) => current = actual,
                    }
                }
                FORCED_OPEN => return Err(Rejected),
                // Closed in the meantime.
                CLOSED if self.config.enabled => {
                    return Ok(Permit {
                        epoch: current.epoch(),
                        kind: PermitKind::Counted,
                    });
                }
                _ => {
                    return Ok(Permit {
                        epoch: current.epoch(),
                        kind: PermitKind::Uncounted,
                    });
                }
            }
        }
    }

    /// Reports the outcome of a permitted guard call. Closed and successful: two loads and one
    /// `fetch_add` (no lock, no clock).
    #[inline]
    pub(crate) fn record(&self, permit: Permit, success: bool) {
        match permit.kind {
            PermitKind::Uncounted => {}
            PermitKind::Counted => {
                let current = self.load();
                if current.tag() != CLOSED || current.epoch() != permit.epoch {
                    return;
                }
                if success {
                    self.window.record_success();
                    if self.consecutive.load(Ordering::Relaxed) != 0 {
                        self.consecutive.store(0, Ordering::Relaxed);
                    }
                } else {
                    self.record_failure(current);
                }
            }
            PermitKind::Probe => self.record_probe(permit, success),
        }
    }

    #[cold]
    fn record_failure(&self, current: Word) {
        let consecutive = self
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let (calls, failures) = self.window.record_failure();
        let reason = if self.config.consecutive_failures > 0
            && consecutive >= self.config.consecutive_failures
        {
            "consecutive failures"
        } else if calls >= u64::from(self.config.minimum_calls)
            && failures as f64 >= self.config.failure_rate * calls as f64
        {
            "failure rate over the window"
        } else {
            return;
        };
        self.since.store(self.now(), Ordering::Relaxed);
        let next = current.next(OPEN);
        if self.cas(current, next).is_ok() {
            // Closed-state writers of the old epoch stop at the epoch check; clearing after
            // the swap leaves at most a stray bit from one that passed it just before, and
            // the window is cleared again when the circuit closes.
            self.clear_counts();
            self.notify(current, next, reason);
        }
    }

    fn record_probe(&self, permit: Permit, success: bool) {
        let mut current = self.load();
        loop {
            if current.tag() != HALF_OPEN || current.epoch() != permit.epoch {
                return;
            }
            let (next, reason) = if !success {
                self.since.store(self.now(), Ordering::Relaxed);
                (current.next(OPEN), Some("probe failed"))
            } else {
                let successes = current.successes().saturating_add(1);
                if successes >= u64::from(self.config.half_open_successes) {
                    // Nothing writes the window while half-open: clear it before publishing
                    // `Closed`, so the new epoch starts from zero.
                    self.clear_counts();
                    (current.next(CLOSED), Some("probes succeeded"))
                } else {
                    let in_flight = current.in_flight().saturating_sub(1);
                    (
                        Word::new(HALF_OPEN, current.epoch(), in_flight, successes),
                        None,
                    )
                }
            };
            match self.cas(current, next) {
                Ok(()) => {
                    if let Some(reason) = reason {
                        self.notify(current, next, reason);
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back a permit whose request was dropped before the guard answered: a probe slot
    /// is freed without counting an outcome.
    pub(crate) fn abandon(&self, permit: Permit) {
        if permit.kind != PermitKind::Probe {
            return;
        }
        let mut current = self.load();
        while current.tag() == HALF_OPEN
            && current.epoch() == permit.epoch
            && current.in_flight() > 0
        {
            let next = Word(current.0 - (1 << IN_FLIGHT_SHIFT));
            match self.cas(current, next) {
                Ok(()) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves to `tag` unconditionally (operator action).
    fn force(&self, tag: u64, reason: &'static str) {
        if tag == CLOSED {
            self.clear_counts();
        }
        if tag == OPEN || tag == FORCED_OPEN {
            self.since.store(self.now(), Ordering::Relaxed);
        }
        let mut current = self.load();
        loop {
            let next = current.next(tag);
            match self.cas(current, next) {
                Ok(()) => {
                    self.notify(current, next, reason);
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    pub(crate) fn force_open(&self) {
        self.force(FORCED_OPEN, "forced open by operator");
    }

    pub(crate) fn force_closed(&self) {
        self.force(FORCED_CLOSED, "forced closed by operator");
    }

    pub(crate) fn reset(&self) {
        self.force(CLOSED, "reset by operator");
    }

    fn clear_counts(&self) {
        self.window.clear();
        self.consecutive.store(0, Ordering::Relaxed);
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The outcomes of the last `size` calls, one bit each (1 = failure), written round-robin.
struct Window {
    bits: Box<[AtomicU64]>,
    size: NonZeroU64,
    calls: AtomicU64,
    /// The index (plus one) of the most recent failure; 0 when there has been none since the
    /// last clear.
    last_failure: AtomicU64,
}

impl Window {
    fn new(size: u32) -> Self {
        let size = NonZeroU64::new(u64::from(size)).unwrap_or(NonZeroU64::MIN);
        let words = size.get().div_ceil(64);
        Self {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            size,
            calls: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
        }
    }

    fn slot(&self) -> (u64, Option<&AtomicU64>, u64) {
        let index = self.calls.fetch_add(1, Ordering::Relaxed);
        let slot = index % self.size;
        let word = usize::try_from(slot / 64)
            .ok()
            .and_then(|w| self.bits.get(w));
        (index, word, 1 << (slot % 64))
    }

    #[inline]
    fn record_success(&self) {
        // A full window without a failure in it stays the same whatever success is added, so
        // the common case writes nothing: two loads, no read-modify-write on a shared line.
        // (The position is not advanced meanwhile; with every slot a success, it does not
        // matter where the next outcome goes.) A success racing a failure may go unrecorded,
        // which only lets that failure age out one call later.
        let calls = self.calls.load(Ordering::Relaxed);
        if calls >= self.size.get() {
            let last = self.last_failure.load(Ordering::Relaxed);
            if last == 0 || calls.saturating_sub(last) >= self.size.get() {
                return;
            }
        }
        let (_, word, bit) = self.slot();
        if let Some(word) = word
            && word.load(Ordering::Relaxed) & bit != 0
        {
            word.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// Records a failure; returns (calls in the window, failures in the window).
    fn record_failure(&self) -> (u64, u64) {
        let (index, word, bit) = self.slot();
        if let Some(word) = word {
            word.fetch_or(bit, Ordering::Relaxed);
        }
        self.last_failure
            .fetch_max(index.saturating_add(1), Ordering::Relaxed);
        let calls = index.saturating_add(1).min(self.size.get());
        let failures = self
            .bits
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum();
        (calls, failures)
    }

    fn clear(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.last_failure.store(0, Ordering::Relaxed);
        for word in self.bits.iter() {
            word.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::Mutex;

    fn breaker(
        config: CircuitBreakerConfig,
    ) -> (Breaker, ManualClock, Arc<Mutex<Vec<Transition>>>) {
        let clock = ManualClock::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let breaker = Breaker::new(&config, Arc::new(clock.clone()), move |t| {
            log.lock().unwrap().push(t)
        });
        (breaker, clock, seen)
    }

    fn call(b: &Breaker, success: bool) -> bool {
        match b.acquire() {
            Ok(permit) => {
                b.record(permit, success);
                true
            }
            Err(Rejected) => false,
        }
    }

    #[test]
    fn defaults_are_valid() {
        CircuitBreakerConfig::default().validate().unwrap();
        CircuitBreakerConfig::disabled().validate().unwrap();
    }

    #[test]
    fn validate_names_the_setting() {
        let err = CircuitBreakerConfig::new()
            .failure_rate(f64::NAN)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("failure_rate"), "{err}");
        let err = CircuitBreakerConfig::new()
            .window(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("window"), "{err}");
        let err = CircuitBreakerConfig::new()
            .window(10)
            .minimum_calls(11)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("minimum_calls"), "{err}");
        let err = CircuitBreakerConfig::new()
            .half_open_probes(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("half_open_probes"), "{err}");
    }

    #[test]
    fn invalid_values_run_sanitized() {
        let (b, _, _) = breaker(CircuitBreakerConfig::new().window(0).failure_rate(7.0));
        assert_eq!(b.config().window, 1);
        assert_eq!(b.config().failure_rate, 0.5);
        assert_eq!(b.config().minimum_calls, 1);
    }

    #[test]
    fn opens_on_failure_rate_after_minimum_calls() {
        let config = CircuitBreakerConfig::new()
            .window(10)
            .minimum_calls(4)
            .consecutive_failures(0);
        let (b, _, seen) = breaker(config);
        // Alternate: 50 % failures, trips as soon as 4 calls are in.
        assert!(call(&b, true));
        assert!(call(&b, false));
        assert!(call(&b, true));
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!call(&b, true), "open: the guard is not called");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].reason, "failure rate over the window");
    }

    #[test]
    fn opens_on_consecutive_failures_with_a_window_full_of_successes() {
        let config = CircuitBreakerConfig::new().consecutive_failures(5);
        let (b, _, _) = breaker(config);
        for _ in 0..100 {
            call(&b, true);
        }
        for _ in 0..4 {
            call(&b, false);
        }
        call(&b, true);
        for _ in 0..4 {
            call(&b, false);
        }
        assert_eq!(b.state(), CircuitState::Closed, "a success resets the run");
        call(&b, false);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn half_open_caps_probes_and_recovers() {
        let config = CircuitBreakerConfig::new()
            .consecutive_failures(1)
            .open_for(Duration::from_secs(10))
            .half_open_probes(2)
            .half_open_successes(3);
        let (b, clock, seen) = breaker(config);
        call(&b, false);
        assert_eq!(b.state(), CircuitState::Open);

        clock.advance(Duration::from_secs(9));
        assert_eq!(b.acquire(), Err(Rejected), "still cooling down");
        clock.advance(Duration::from_secs(1));

        let p1 = b.acquire().unwrap();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let p2 = b.acquire().unwrap();
        assert_eq!(b.acquire(), Err(Rejected), "probe cap of 2 reached");
        b.record(p1, true);
        let p3 = b.acquire().expect("a slot was freed");
        b.record(p2, true);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.record(p3, true);
        assert_eq!(b.state(), CircuitState::Closed);

        let reasons: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|t| (t.to, t.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (CircuitState::Open, "consecutive failures"),
                (CircuitState::HalfOpen, "cooldown elapsed"),
                (CircuitState::Closed, "probes succeeded"),
            ]
        );
        // The window starts empty after closing: one failure (threshold 1) trips again.
        call(&b, false);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_cooldown() {
        let config = CircuitBreakerConfig::new().consecutive_failures(1);
        let (b, clock, _) = breaker(config);
        call(&b, false);
        clock.advance(Duration::from_secs(10));
        let probe = b.acquire().unwrap();
        b.record(probe, false);
        assert_eq!(b.state(), CircuitState::Open);
        clock.advance(Duration::from_secs(9));
        assert_eq!(b.acquire(), Err(Rejected));
        clock.advance(Duration::from_secs(1));
        assert!(b.acquire().is_ok());
    }

    #[test]
    fn stuck_half_open_reopens_after_max_time() {
        let config = CircuitBreakerConfig::new()
            .consecutive_failures(1)
            .max_half_open(Duration::from_secs(30));
        let (b, clock, seen) = breaker(config);
        call(&b, false);
        clock.advance(Duration::from_secs(10));
        let stuck = b.acquire().unwrap();
        clock.advance(Duration::from_secs(29));
        assert_eq!(b.acquire(), Err(Rejected), "the single probe slot is taken");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.acquire(), Err(Rejected));
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(
            seen.lock().unwrap().last().unwrap().reason,
            "max half-open time elapsed"
        );
        // The stuck probe's late answer belongs to an old epoch: ignored.
        b.record(stuck, true);
        assert_eq!(b.state(), CircuitState::Open);
        clock.advance(Duration::from_secs(10));
        assert!(b.acquire().is_ok(), "a new half-open period");
    }

    #[test]
    fn abandoned_probe_frees_its_slot() {
        let (b, clock, _) = breaker(CircuitBreakerConfig::new().consecutive_failures(1));
        call(&b, false);
        clock.advance(Duration::from_secs(10));
        let probe = b.acquire().unwrap();
        assert_eq!(b.acquire(), Err(Rejected));
        b.abandon(probe);
        assert!(b.acquire().is_ok());
    }

    #[test]
    fn stale_closed_outcomes_are_ignored() {
        let (b, _, _) = breaker(CircuitBreakerConfig::new().consecutive_failures(2));
        let old = b.acquire().unwrap();
        b.force_open();
        b.reset();
        b.record(old, false);
        let fresh = b.acquire().unwrap();
        b.record(fresh, false);
        assert_eq!(b.state(), CircuitState::Closed, "only one failure counts");
    }

    #[test]
    fn forced_states_hold_until_reset() {
        let (b, clock, _) = breaker(CircuitBreakerConfig::new().consecutive_failures(1));
        b.force_open();
        assert_eq!(b.state(), CircuitState::ForcedOpen);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(b.acquire(), Err(Rejected), "no cooldown ends a forced open");

        b.force_closed();
        for _ in 0..100 {
            assert!(call(&b, false));
        }
        assert_eq!(b.state(), CircuitState::ForcedClosed);

        b.reset();
        assert_eq!(b.state(), CircuitState::Closed);
        call(&b, false);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn disabled_never_opens_by_itself() {
        let (b, _, _) = breaker(CircuitBreakerConfig::disabled());
        for _ in 0..1000 {
            assert!(call(&b, false));
        }
        assert_eq!(b.state(), CircuitState::Closed);
        b.force_open();
        assert!(!call(&b, true));
    }

    #[test]
    fn concurrent_callers_keep_a_consistent_state() {
        let (b, clock, _) = breaker(
            CircuitBreakerConfig::new()
                .consecutive_failures(3)
                .half_open_probes(2)
                .open_for(Duration::ZERO),
        );
        std::thread::scope(|s| {
            for t in 0..4_u64 {
                let b = &b;
                let clock = &clock;
                s.spawn(move || {
                    for i in 0..5000_u64 {
                        call(b, (i + t) % 7 != 0);
                        if i % 100 == 0 {
                            clock.advance(Duration::from_secs(40));
                        }
                    }
                });
            }
        });
        let word = b.load();
        assert!(
            word.in_flight() <= 2,
            "probe count never leaks past the cap"
        );
    }

    /// The reference model: a queue of the last `window` outcomes and a run counter.
    struct Model {
        window: VecDeque<bool>,
        size: usize,
        minimum: usize,
        rate: f64,
        consecutive_limit: u32,
        consecutive: u32,
    }

    impl Model {
        /// Records an outcome; true when the circuit must open.
        fn record(&mut self, failure: bool) -> bool {
            if self.window.len() == self.size {
                self.window.pop_front();
            }
            self.window.push_back(failure);
            if !failure {
                self.consecutive = 0;
                return false;
            }
            self.consecutive += 1;
            let failures = self.window.iter().filter(|f| **f).count();
            (self.consecutive_limit > 0 && self.consecutive >= self.consecutive_limit)
                || (self.window.len() >= self.minimum
                    && failures as f64 >= self.rate * self.window.len() as f64)
        }
    }

    proptest! {
        #[test]
        fn closed_state_trips_exactly_when_the_model_does(
            size in 1u32..150,
            minimum_frac in 0.0f64..1.0,
            rate in 0.05f64..1.0,
            consecutive_limit in 0u32..12,
            outcomes in proptest::collection::vec(proptest::bool::weighted(0.3), 0..400),
        ) {
            let minimum = ((f64::from(size) * minimum_frac) as u32).clamp(1, size);
            let config = CircuitBreakerConfig::new()
                .window(size)
                .minimum_calls(minimum)
                .failure_rate(rate)
                .consecutive_failures(consecutive_limit);
            prop_assert!(config.validate().is_ok());
            let (b, _, _) = breaker(config);
            let mut model = Model {
                window: VecDeque::new(),
                size: size as usize,
                minimum: minimum as usize,
                rate,
                consecutive_limit,
                consecutive: 0,
            };
            for failure in outcomes {
                let permit = b.acquire();
                prop_assert!(permit.is_ok());
                b.record(permit.unwrap(), !failure);
                let trip = model.record(failure);
                prop_assert_eq!(b.state() == CircuitState::Open, trip);
                if trip {
                    break;
                }
            }
        }
    }
}
