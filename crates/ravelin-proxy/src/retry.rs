//! Retries of requests that failed before a byte was sent, within a budget.
//!
//! A request is retried only when all of these hold:
//! - the attempt failed to *connect* (refused, reset during the handshake, connect timeout, no
//!   address): nothing of the request reached the upstream;
//! - its method is idempotent (RFC 9110 §9.2.2: `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`,
//!   `DELETE`), so even a duplicate could do no harm;
//! - it has no body (bodies stream through and are not kept, so there is nothing to send again);
//! - the upstream's retry budget has room, its circuit admits the attempt, and the backoff ends
//!   before the response timeout.
//!
//! The budget follows Finagle's `RetryBudget` (and Envoy's `retry_budget`): over the last 10
//! seconds, retries may number `budget_ratio` × requests plus `min_retries_per_second` × 10. A
//! dead upstream under a flood of requests therefore sees at most 10 % more attempts than
//! requests, not `max_retries` times as many. The backoff before retry `n` is full jitter
//! (AWS's "exponential backoff and jitter"): uniformly random in
//! `[0, min(backoff_max, backoff_base × 2ⁿ⁻¹)]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Uri, Version};
use ravelin_primitives::{Validate, Violations};
use serde::{Deserialize, Serialize};

use crate::health::SharedClock;
use crate::jitter;

/// How an upstream's requests are retried after a failed connection attempt.
///
/// | key | default | bounds | Envoy / Finagle |
/// |---|---|---|---|
/// | `max_retries` | 1 | 0 (off) to 5 | `num_retries` 1 |
/// | `budget_ratio` | 0.1 | 0 to 1 | `budget_percent` 20 % / `percentCanRetry` 0.2 |
/// | `min_retries_per_second` | 3 | 0 to 1,000 | `min_retry_concurrency` 3 / `minRetriesPerSec` 10 |
/// | `backoff_base` | 25 ms | 0 to 10 s | `base_interval` 25 ms |
/// | `backoff_max` | 250 ms | `backoff_base` to 30 s | `max_interval` 250 ms |
///
/// ```
/// use ravelin_proxy::RetryConfig;
/// use ravelin_primitives::Validate;
///
/// let retry: RetryConfig = serde_json::from_str(r#"{ "max_retries": 2 }"#).unwrap();
/// retry.validate().unwrap();
/// assert_eq!(retry.budget_ratio, 0.1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries of one request after failed connection attempts; 0 turns retries off.
    pub max_retries: u32,
    /// Retries allowed as a share of the requests of the last 10 seconds.
    pub budget_ratio: f64,
    /// Retries allowed per second on top of the ratio (so a quiet upstream can retry at all).
    pub min_retries_per_second: u32,
    /// The backoff before the first retry is at most this; it doubles per retry.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// The cap on the backoff before any retry.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 1,
            budget_ratio: 0.1,
            min_retries_per_second: 3,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}

impl RetryConfig {
    /// The most `max_retries`.
    pub const MAX_RETRIES: u32 = 5;
    /// The most `min_retries_per_second`.
    pub const MAX_MIN_RETRIES_PER_SECOND: u32 = 1000;
    /// The longest `backoff_base`.
    pub const MAX_BACKOFF_BASE: Duration = Duration::from_secs(10);
    /// The longest `backoff_max`.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
    /// The budget's window: the last 10 seconds, as Finagle's default `ttl`.
    pub const BUDGET_WINDOW: Duration = Duration::from_secs(WINDOW_SLOTS as u64);

    /// No retries.
    pub fn disabled() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The longest wait before retry `retry` (1 for the first): the full-jitter range's top.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.backoff_base
            .saturating_mul(1_u32 << doublings)
            .min(self.backoff_max)
    }

    /// A random wait before retry `retry`, uniform in `[0, backoff_ceiling(retry)]`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        jitter::up_to(self.backoff_ceiling(retry))
    }
}

impl Validate for RetryConfig {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        v.check_range("max_retries", self.max_retries, 0..=Self::MAX_RETRIES);
        v.check_finite("budget_ratio", self.budget_ratio);
        if self.budget_ratio.is_finite() {
            v.check_range("budget_ratio", self.budget_ratio, 0.0..=1.0);
        }
        v.check_range(
            "min_retries_per_second",
            self.min_retries_per_second,
            0..=Self::MAX_MIN_RETRIES_PER_SECOND,
        );
        if self.backoff_base > Self::MAX_BACKOFF_BASE {
            v.push(
                "backoff_base",
                format!(
                    "must be at most {:?}, got {:?}",
                    Self::MAX_BACKOFF_BASE,
                    self.backoff_base
                ),
            );
        }
        if self.backoff_max < self.backoff_base || self.backoff_max > Self::MAX_BACKOFF {
            v.push(
                "backoff_max",
                format!(
                    "must be between backoff_base ({:?}) and {:?}, got {:?}",
                    self.backoff_base,
                    Self::MAX_BACKOFF,
                    self.backoff_max
                ),
            );
        }
        v.into_result()
    }
}

/// Whether a request with this method may be sent twice (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

// === Replay ===

/// What it takes to send a bodiless request again: its head, copied before the first attempt
/// (hyper's client consumes the request, and gives nothing back when the connection fails).
/// Extensions are not copied: the upstream client reads none.
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// The copy of a request head that may be retried, or `None` when it may not.
    pub(crate) fn of(
        head: &http::request::Parts,
        body_is_empty: bool,
        retries: u32,
    ) -> Option<Self> {
        (retries > 0 && body_is_empty && is_idempotent(&head.method)).then(|| Self {
            method: head.method.clone(),
            uri: head.uri.clone(),
            version: head.version,
            headers: head.headers.clone(),
        })
    }

    /// A new request from the copy, with `body` (an empty one).
    pub(crate) fn request<B>(&self, body: B) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

// === RetryBudget ===

/// Slots of the sliding window, one per second.
const WINDOW_SLOTS: usize = 10;

/// Counts per second over the last [`WINDOW_SLOTS`] seconds, lock-free: each slot packs the
/// second it counts (upper 32 bits) and its count (lower 32 bits) in one atomic word.
struct Window {
    slots: [AtomicU64; WINDOW_SLOTS],
}

const COUNT_MASK: u64 = 0xffff_ffff;

impl Window {
    fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn slot(&self, second: u64) -> Option<&AtomicU64> {
        // The modulo keeps the index in range; `get` keeps the lint honest.
        self.slots
            .get(usize::try_from(second % WINDOW_SLOTS as u64).unwrap_or(0))
    }

    /// Adds `delta` (±1) to this second's count.
    fn add(&self, second: u64, delta: i64) {
        let Some(slot) = self.slot(second) else {
            return;
        };
        let tag = (second & COUNT_MASK) << 32;
        // fetch_update never fails with a closure that always returns Some.
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let count = if word & !COUNT_MASK == tag {
                word & COUNT_MASK
            } else {
                0
            };
            let count = count.saturating_add_signed(delta).min(COUNT_MASK);
            Some(tag | count)
        });
    }

    /// The counts of the last `WINDOW_SLOTS` seconds, this one included.
    fn sum(&self, second: u64) -> u64 {
        self.slots
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|word| {
                // Tags are the second's lower 32 bits: the age is taken in that space.
                let age = (second & COUNT_MASK).wrapping_sub(word >> 32) & COUNT_MASK;
                age < WINDOW_SLOTS as u64
            })
            .map(|word| word & COUNT_MASK)
            .sum()
    }
}

/// One upstream's retry budget (Finagle's `RetryBudget`): every request deposits, every retry
/// withdraws, and a retry is allowed only while retries in the window stay within
/// `budget_ratio × requests + min_retries_per_second × 10`.
pub(crate) struct RetryBudget {
    ratio: f64,
    reserve: u64,
    requests: Window,
    retries: Window,
    clock: SharedClock,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("reserve", &self.reserve)
            .finish_non_exhaustive()
    }
}

impl RetryBudget {
    pub(crate) fn new(config: &RetryConfig, clock: SharedClock) -> Self {
        Self {
            ratio: if config.budget_ratio.is_finite() {
                config.budget_ratio.clamp(0.0, 1.0)
            } else {
                0.0
            },
            reserve: u64::from(config.min_retries_per_second).saturating_mul(WINDOW_SLOTS as u64),
            requests: Window::new(),
            retries: Window::new(),
            clock,
        }
    }

    fn second(&self) -> u64 {
        self.clock.now().as_duration().as_secs()
    }

    /// Counts one request (not a retry).
    pub(crate) fn deposit(&self) {
        self.requests.add(self.second(), 1);
    }

    /// Takes one retry from the budget, or says there is none left.
    pub(crate) fn try_withdraw(&self) -> bool {
        let second = self.second();
        // Count first, then check, and give back on refusal: two racing retries can both be
        // refused at the edge of the budget, never both allowed past it.
        self.retries.add(second, 1);
        let retries = self.retries.sum(second);
        let requests = self.requests.sum(second);
        // Counts stay far below 2^52, where f64 is exact.
        let allowed = self.ratio * requests as f64 + self.reserve as f64;
        let within = retries as f64 <= allowed;
        if !within {
            self.retries.add(second, -1);
        }
        within
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ravelin_primitives::clock::ManualClock;

    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_name_the_field() {
        RetryConfig::default().validate().unwrap();
        let bad = RetryConfig {
            max_retries: 6,
            budget_ratio: f64::NAN,
            min_retries_per_second: 1001,
            backoff_base: Duration::from_secs(11),
            backoff_max: Duration::from_secs(1),
        };
        let text = bad.validate().unwrap_err().to_string();
        for field in [
            "max_retries",
            "budget_ratio",
            "min_retries_per_second",
            "backoff_base",
            "backoff_max",
        ] {
            assert!(text.contains(field), "{text}");
        }
        let ratio = RetryConfig {
            budget_ratio: 1.5,
            ..RetryConfig::default()
        };
        assert!(ratio.validate().is_err());
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let c = RetryConfig::default();
        assert_eq!(c.backoff_ceiling(1), Duration::from_millis(25));
        assert_eq!(c.backoff_ceiling(2), Duration::from_millis(50));
        assert_eq!(c.backoff_ceiling(4), Duration::from_millis(200));
        assert_eq!(c.backoff_ceiling(5), Duration::from_millis(250));
        assert_eq!(c.backoff_ceiling(u32::MAX), Duration::from_millis(250));
        for retry in 1..6 {
            for _ in 0..100 {
                assert!(c.backoff(retry) <= c.backoff_ceiling(retry));
            }
        }
    }

    #[test]
    fn only_bodiless_idempotent_requests_are_replayable() {
        let (get, ()) = Request::get("http://a/x")
            .header("a", "1")
            .body(())
            .unwrap()
            .into_parts();
        let (post, ()) = Request::post("http://a/x").body(()).unwrap().into_parts();
        assert!(Replay::of(&get, true, 1).is_some());
        assert!(Replay::of(&get, false, 1).is_none());
        assert!(Replay::of(&get, true, 0).is_none());
        assert!(Replay::of(&post, true, 1).is_none());
        for method in [Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&method));
        }
        let copy = Replay::of(&get, true, 1).unwrap().request(());
        assert_eq!(copy.uri(), "http://a/x");
        assert_eq!(copy.headers()["a"], "1");
        assert_eq!(copy.method(), Method::GET);
    }

    fn budget(ratio: f64, per_second: u32) -> (RetryBudget, ManualClock) {
        let clock = ManualClock::new();
        let config = RetryConfig {
            budget_ratio: ratio,
            min_retries_per_second: per_second,
            ..RetryConfig::default()
        };
        (RetryBudget::new(&config, Arc::new(clock.clone())), clock)
    }

    #[test]
    fn a_stream_of_failures_never_exceeds_the_budget() {
        let (b, clock) = budget(0.1, 1);
        let mut requests = 0_u64;
        let mut retries = 0_u64;
        // 1000 requests a second for 30 s, every one asking for a retry.
        for _second in 0..30 {
            for _ in 0..1000 {
                b.deposit();
                requests += 1;
                if b.try_withdraw() {
                    retries += 1;
                }
            }
            clock.advance(Duration::from_secs(1));
        }
        // At most 10 % of requests plus 1 per second, over any 10 s window, so over 30 s:
        assert!(retries <= requests / 10 + 30, "{retries} of {requests}");
        // And the budget is actually used.
        assert!(retries >= requests / 10, "{retries} of {requests}");
    }

    #[test]
    fn the_reserve_lets_a_quiet_upstream_retry_and_refills() {
        let (b, clock) = budget(0.1, 1);
        // No requests at all: the reserve alone (1/s over 10 s).
        let allowed = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(allowed, 10);
        clock.advance(Duration::from_secs(5));
        assert!(!b.try_withdraw(), "the window still holds the 10");
        clock.advance(Duration::from_secs(5));
        assert!(
            b.try_withdraw(),
            "after 10 s the old retries left the window"
        );
        // With no ratio and no reserve, nothing.
        let (none, _) = budget(0.0, 0);
        none.deposit();
        assert!(!none.try_withdraw());
    }

    #[test]
    fn window_slots_expire() {
        let w = Window::new();
        w.add(100, 1);
        w.add(100, 1);
        w.add(105, 1);
        assert_eq!(w.sum(105), 3);
        assert_eq!(w.sum(109), 3);
        assert_eq!(w.sum(110), 1);
        assert_eq!(w.sum(115), 0);
        // A slot reused by a later second starts from zero.
        w.add(110, 1);
        assert_eq!(w.sum(110), 2);
        w.add(110, -1);
        w.add(110, -1);
        assert_eq!(w.sum(110), 1);
    }
}
