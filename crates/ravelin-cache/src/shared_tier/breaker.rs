//! The shared tier's circuit breaker: lock-free, on the tokio clock (so tests can pause it).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state, for `/status` and the gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls go to Redis.
    Closed,
    /// Calls are answered `Unavailable` without touching Redis.
    Open,
    /// The open period is over: the next call probes Redis.
    HalfOpen,
}

impl BreakerState {
    /// For logs and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

/// Whether a call may go to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: go.
    Go,
    /// Half-open: this call is the one probe.
    Probe,
    /// Open: answer without Redis.
    Refuse,
}

/// Closed until `threshold` consecutive failures; then open for `open_for` ±20 %; then one
/// call probes (the others are still refused) and its outcome closes or reopens it. A probe
/// that never reports (its future dropped) holds the breaker open for `probe_window` only.
#[derive(Debug)]
pub(crate) struct Breaker {
    base: Instant,
    threshold: u32,
    open_for: Duration,
    probe_window: Duration,
    failures: AtomicU32,
    /// 0: closed; else the breaker is open until this many ms after `base` (offset by one).
    open_until: AtomicU64,
    opened: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration, probe_window: Duration) -> Self {
        Self {
            base: Instant::now(),
            threshold: threshold.max(1),
            open_for,
            probe_window,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
    }

    pub(crate) fn admit(&self) -> Admit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Go;
        }
        let now = self.now();
        if now < until {
            return Admit::Refuse;
        }
        // Half-open: whoever moves the deadline past the probe window probes.
        let hold = now.saturating_add(Self::ms(self.probe_window));
        match self
            .open_until
            .compare_exchange(until, hold, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Refuse,
        }
    }

    /// A call reached Redis and got an answer. Returns whether this closed the breaker.
    pub(crate) fn success(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until.swap(0, Ordering::AcqRel) != 0
    }

    /// A call failed (timeout, connection). Returns whether this opened the breaker.
    pub(crate) fn failure(&self, probe: bool) -> bool {
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let current = self.open_until.load(Ordering::Acquire);
        if probe || (current == 0 && n >= self.threshold) {
            let jitter = 0.8 + 0.4 * rand::random::<f64>();
            let open = Duration::try_from_secs_f64(self.open_for.as_secs_f64() * jitter)
                .unwrap_or(self.open_for);
            let until = self.now().saturating_add(Self::ms(open)).max(1);
            if self
                .open_until
                .compare_exchange(current, until, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.opened.fetch_add(1, Ordering::Relaxed);
                return current == 0;
            }
        }
        false
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if self.now() < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Times the breaker opened.
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_secs(10), Duration::from_secs(1));
        assert!(!b.failure(false));
        assert!(!b.failure(false));
        assert_eq!(b.admit(), Admit::Go);
        assert!(b.failure(false));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admit::Refuse);
        // Jitter is ±20 %: still open at 7.9 s, half-open from 12 s.
        tokio::time::advance(Duration::from_millis(7_900)).await;
        assert_eq!(b.admit(), Admit::Refuse);
        tokio::time::advance(Duration::from_millis(4_200)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.admit(), Admit::Refuse, "one probe at a time");
        assert!(b.success());
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(), Admit::Go);
        assert_eq!(b.opened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_a_lost_probe_expires() {
        let b = Breaker::new(1, Duration::from_secs(1), Duration::from_millis(100));
        assert!(b.failure(false));
        tokio::time::advance(Duration::from_millis(1_300)).await;
        assert_eq!(b.admit(), Admit::Probe);
        assert!(!b.failure(true), "reopened, not newly opened");
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1_300)).await;
        assert_eq!(b.admit(), Admit::Probe);
        // The probe's future is dropped: after the probe window another call probes.
        assert_eq!(b.admit(), Admit::Refuse);
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(b.admit(), Admit::Probe);
    }
}
