//! The generic cell rate algorithm: quotas, decisions and the pure arithmetic every store shares.
//!
//! GCRA keeps one number per key, the *theoretical arrival time* (TAT): the instant at which the
//! key's bucket would be full again if no further request arrived. With an emission interval `T`
//! (window / limit) and a tolerance `τ = T × burst`, a request of cost `c` arriving at `now` is
//! allowed when `max(TAT, now) + T × c − now ≤ τ`, and then moves the TAT there. A TAT at or before
//! `now` means a full bucket, exactly like a key never seen: this is why idle state can be dropped
//! without changing any decision.

use std::time::Duration;

/// The largest tolerance (`emission interval × burst`) a quota may have: about 146 years. It keeps
/// every sum of instants and tolerances far from `u64` overflow.
const MAX_TOLERANCE_NANOS: u64 = 1 << 62;

/// Why a [`Quota`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The limit is zero: a rule that allows nothing is a block rule, not a rate limit.
    #[error("quota limit must be at least 1 request per window")]
    ZeroLimit,
    /// The window is zero.
    #[error("quota window must be longer than zero")]
    ZeroWindow,
    /// The burst is zero.
    #[error("quota burst must be at least 1")]
    ZeroBurst,
    /// More than one request per nanosecond: the emission interval would round to zero.
    #[error(
        "quota of {limit} per {window:?} is finer than one request per nanosecond; lower the limit or widen the window"
    )]
    TooFine {
        /// The requested limit.
        limit: u32,
        /// The requested window.
        window: Duration,
    },
    /// The emission interval times the burst exceeds about 146 years.
    #[error(
        "quota of {limit} per {window:?} with burst {burst} spans more than 2^62 ns; shorten the window or the burst"
    )]
    TooLong {
        /// The requested limit.
        limit: u32,
        /// The requested window.
        window: Duration,
        /// The requested burst.
        burst: u32,
    },
}

/// A rate: `limit` units per `window`, of which up to `burst` may be spent at once.
///
/// GCRA spaces units by the *emission interval* `T = window / limit` (whole nanoseconds, rounded
/// down) and tolerates bursts up to `τ = T × burst`. The burst defaults to the limit, so a fresh
/// key may spend its whole window's allowance at once and then earns one unit back every `T`.
///
/// ```
/// use std::time::Duration;
/// use ravelin_ratelimit::Quota;
///
/// let q = Quota::per_minute(100)?.with_burst(20)?;
/// assert_eq!(q.emission_interval(), Duration::from_millis(600));
/// assert_eq!(q.burst(), 20);
/// # Ok::<(), ravelin_ratelimit::QuotaError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u32,
    window_nanos: u64,
    burst: u32,
    emission_nanos: u64,
    /// `⌊2^64 / T⌋ + 1` (0 when `T = 1`): turns the division in `remaining` into a multiply.
    reciprocal: u64,
}

impl Quota {
    /// `limit` units per `window`, burst equal to `limit`.
    ///
    /// # Errors
    /// A zero limit or window, a rate finer than one unit per nanosecond, or a tolerance beyond
    /// about 146 years.
    pub fn new(limit: u32, window: Duration) -> Result<Self, QuotaError> {
        Self::with_limit_window_burst(limit, window, limit)
    }

    /// `limit` units per second.
    ///
    /// # Errors
    /// See [`Quota::new`].
    pub fn per_second(limit: u32) -> Result<Self, QuotaError> {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` units per minute.
    ///
    /// # Errors
    /// See [`Quota::new`].
    pub fn per_minute(limit: u32) -> Result<Self, QuotaError> {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` units per hour.
    ///
    /// # Errors
    /// See [`Quota::new`].
    pub fn per_hour(limit: u32) -> Result<Self, QuotaError> {
        Self::new(limit, Duration::from_secs(3600))
    }

    /// The same rate with a different burst (the most units spendable at once).
    ///
    /// # Errors
    /// A zero burst, or a tolerance beyond about 146 years.
    pub fn with_burst(self, burst: u32) -> Result<Self, QuotaError> {
        Self::with_limit_window_burst(self.limit, self.window(), burst)
    }

    fn with_limit_window_burst(
        limit: u32,
        window: Duration,
        burst: u32,
    ) -> Result<Self, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        if window.is_zero() {
            return Err(QuotaError::ZeroWindow);
        }
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        let too_long = QuotaError::TooLong {
            limit,
            window,
            burst,
        };
        let window_nanos = u64::try_from(window.as_nanos()).map_err(|_| too_long)?;
        let emission_nanos = window_nanos / u64::from(limit);
        if emission_nanos == 0 {
            return Err(QuotaError::TooFine { limit, window });
        }
        match emission_nanos.checked_mul(u64::from(burst)) {
            Some(t) if t <= MAX_TOLERANCE_NANOS && window_nanos <= MAX_TOLERANCE_NANOS => {}
            _ => return Err(too_long),
        }
        let reciprocal = u64::try_from((1u128 << 64) / u128::from(emission_nanos) + 1).unwrap_or(0);
        Ok(Self {
            limit,
            window_nanos,
            burst,
            emission_nanos,
            reciprocal,
        })
    }

    /// Units per window (the `q` of the `RateLimit-Policy` header).
    pub const fn limit(&self) -> u32 {
        self.limit
    }

    /// The window (the `w` of the `RateLimit-Policy` header).
    pub const fn window(&self) -> Duration {
        Duration::from_nanos(self.window_nanos)
    }

    /// The most units spendable at once.
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// `T`: the time one unit takes to come back.
    pub const fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_nanos)
    }

    /// `T` in nanoseconds.
    pub const fn emission_interval_nanos(&self) -> u64 {
        self.emission_nanos
    }

    /// `τ = T × burst` in nanoseconds: how far ahead of `now` a key's TAT may run.
    pub const fn tolerance_nanos(&self) -> u64 {
        // Cannot overflow: checked against MAX_TOLERANCE_NANOS at construction.
        self.emission_nanos.saturating_mul(self.burst as u64)
    }

    /// Whole units in `span` nanoseconds: `⌊span / T⌋`, clamped to `u32` (a span never exceeds
    /// `τ = T × burst`, so the clamp never bites for a consistent state).
    ///
    /// A 64-bit division costs tens of cycles on the hot path; multiplying by the precomputed
    /// reciprocal gives the quotient or one more, and one multiply checks which.
    #[inline]
    fn units(&self, span: u64) -> u32 {
        let t = self.emission_nanos;
        let quotient = if self.reciprocal == 0 {
            // T = 1 ns.
            span
        } else {
            let q = ((u128::from(span) * u128::from(self.reciprocal)) >> 64) as u64;
            if u128::from(q) * u128::from(t) > u128::from(span) {
                q - 1
            } else {
                q
            }
        };
        u32::try_from(quotient).unwrap_or(u32::MAX)
    }

    /// The pure GCRA step: given a key's stored TAT (`0` for an absent key), the current instant
    /// and a cost, what is decided and what the TAT becomes.
    ///
    /// All instants are nanoseconds on one clock. Every store must produce exactly these
    /// decisions:
    ///
    /// - `tat = max(stored_tat, now)`; `new_tat = tat + T × cost`;
    /// - **allowed** iff `new_tat − now ≤ τ`; then the TAT becomes `new_tat`,
    ///   `remaining = ⌊(now + τ − new_tat) / T⌋`, `reset_after = new_tat − now`, `retry_after = 0`;
    /// - **denied** otherwise; the TAT is unchanged, `remaining = ⌊(now + τ − tat) / T⌋` (0 when
    ///   negative), `reset_after = tat − now`, `retry_after = new_tat − τ − now` (the wait after
    ///   which this cost would be allowed; for a cost above the burst no wait suffices).
    ///
    /// A cost of zero never changes the TAT: it is a read ("peek"). A clock that steps backwards
    /// only makes decisions stricter (`tat − now` grows), never grants extra units.
    #[inline]
    pub fn decide(&self, stored_tat: u64, now: u64, cost: u32) -> Evaluation {
        let t = self.emission_nanos;
        let tau = self.tolerance_nanos();
        let tat = stored_tat.max(now);
        let new_tat = tat.saturating_add(t.saturating_mul(u64::from(cost)));
        let horizon = now.saturating_add(tau);
        if new_tat <= horizon {
            Evaluation {
                decision: Decision {
                    allowed: true,
                    limit: self.burst,
                    remaining: self.units(horizon - new_tat),
                    reset_after: Duration::from_nanos(new_tat - now),
                    retry_after: Duration::ZERO,
                },
                // A zero cost reads: there is nothing to store.
                new_tat: (cost > 0).then_some(new_tat),
            }
        } else {
            Evaluation {
                decision: Decision {
                    allowed: false,
                    limit: self.burst,
                    remaining: self.units(horizon.saturating_sub(tat)),
                    reset_after: Duration::from_nanos(tat - now),
                    retry_after: Duration::from_nanos(new_tat - horizon),
                },
                new_tat: None,
            }
        }
    }
}

/// The result of one GCRA step: the decision, and the TAT to store when it allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// What was decided.
    pub decision: Decision,
    /// The TAT to store: `Some` when allowed with a cost above zero, `None` when denied or when
    /// the cost was zero (the state does not change).
    pub new_tat: Option<u64>,
}

/// The answer for one key and one quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the units were granted.
    pub allowed: bool,
    /// The burst: the most units spendable at once.
    pub limit: u32,
    /// Whole units still spendable right now (after this request, when allowed).
    pub remaining: u32,
    /// Time until the key's bucket is full again (its TAT minus now).
    pub reset_after: Duration,
    /// When denied, the wait after which the same cost would be allowed; zero when allowed.
    pub retry_after: Duration,
}

impl Decision {
    /// A short stable name, for logs and metric labels.
    pub const fn as_str(&self) -> &'static str {
        if self.allowed { "allowed" } else { "denied" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn units_is_floor_division(
            limit in 1u32..=u32::MAX,
            window_ns in 1u64..(1 << 62),
            span in any::<u64>(),
        ) {
            if let Ok(q) = Quota::new(limit, Duration::from_nanos(window_ns)) {
                let want = u32::try_from(span / q.emission_interval_nanos()).unwrap_or(u32::MAX);
                prop_assert_eq!(q.units(span), want);
            }
        }
    }

    #[test]
    fn units_edges() {
        for t in [1u64, 2, 3, 7, 1_000, 999_999_937, 1 << 40, (1 << 62) - 1] {
            let q = Quota::new(1, Duration::from_nanos(t)).unwrap();
            for span in [
                0,
                1,
                t - 1,
                t,
                t + 1,
                2 * t - 1,
                2 * t,
                u64::MAX / 2,
                u64::MAX,
            ] {
                let want = u32::try_from(span / t).unwrap_or(u32::MAX);
                assert_eq!(q.units(span), want, "span {span} / {t}");
            }
        }
    }
}
