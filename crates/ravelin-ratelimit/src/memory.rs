//! The default store: one process-local bounded table for every rule.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use ravelin_primitives::clock::{Clock, MonotonicClock, Nanos};

use crate::gcra::Decision;
use crate::store::{Check, RateLimitStore, StoreError};
use crate::table::{Table, TableStats};

/// The in-memory [`RateLimitStore`]: every rule's keys share one table of fixed size.
///
/// State is addressed by a hash of `(rule, emission interval, burst, key)`, so a rule keeps its
/// state across a reload as long as its name and quota stay the same, and a rule whose quota
/// changed starts afresh (its old entries expire and are reclaimed like any other).
///
/// Clones share the table.
pub struct MemoryStore<C = MonotonicClock> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    table: Table,
    hasher: foldhash::quality::RandomState,
    clock: C,
}

impl<C> Clone for MemoryStore<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> fmt::Debug for MemoryStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// The default capacity: 100 000 keys (1.6 MB).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A store with room for `capacity` keys across all rules, on the monotonic clock.
    pub fn new(capacity: usize) -> Self {
        Self::with_clock(capacity, MonotonicClock::new())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl<C: Clock<Instant = Nanos>> MemoryStore<C> {
    /// A store with room for `capacity` keys, reading `clock`.
    pub fn with_clock(capacity: usize, clock: C) -> Self {
        Self {
            inner: Arc::new(Inner {
                table: Table::new(capacity, "memory"),
                hasher: foldhash::quality::RandomState::default(),
                clock,
            }),
        }
    }

    /// Memory and degradation counters. `slots` and `bytes` never change after construction.
    pub fn stats(&self) -> TableStats {
        self.inner.table.stats()
    }

    /// How many keys hold state now (a full scan: for tests and status pages).
    pub fn live_keys(&self) -> usize {
        self.inner
            .table
            .live_entries(self.inner.clock.now().as_u64())
    }

    fn hash(&self, check: &Check<'_>) -> u64 {
        self.inner.hasher.hash_one((
            check.rule,
            check.quota.emission_interval_nanos(),
            check.quota.burst(),
            check.key,
        ))
    }

    /// Decides a batch synchronously, with the semantics of [`RateLimitStore::check`].
    pub fn check_sync(&self, checks: &[Check<'_>]) -> Vec<Decision> {
        let now = self.inner.clock.now().as_u64();
        let table = &self.inner.table;
        let mut decisions = Vec::with_capacity(checks.len());
        if let [check] = checks {
            // One rule: a single CAS step is already all-or-nothing.
            let quota = check.quota;
            let cost = check.cost;
            decisions.push(
                table
                    .apply(self.hash(check), now, |tat| quota.decide(tat, now, cost))
                    .decision,
            );
            return decisions;
        }
        let mut hashes = Vec::with_capacity(checks.len());
        // Phase 1: decide every check from the current state without writing. A request that an
        // enforcing rule denies stops here, having written nothing.
        let mut blocked = false;
        for check in checks {
            let hash = self.hash(check);
            hashes.push(hash);
            let decision = check
                .quota
                .decide(table.read(hash), now, check.cost)
                .decision;
            blocked |= check.enforce && !decision.allowed;
            decisions.push(decision);
        }
        if blocked {
            return decisions;
        }
        // Phase 2: charge the allowed checks. Another request may have charged a key since phase
        // 1; if that turns an enforcing check into a denial, undo the charges made so far.
        for (index, (check, &hash)) in checks.iter().zip(&hashes).enumerate() {
            if !decisions.get(index).is_some_and(|d| d.allowed) {
                continue;
            }
            let quota = check.quota;
            let cost = check.cost;
            let decision = table
                .apply(hash, now, |tat| quota.decide(tat, now, cost))
                .decision;
            if let Some(slot) = decisions.get_mut(index) {
                *slot = decision;
            }
            if !decision.allowed && check.enforce {
                self.undo(checks, &hashes, &decisions, index);
                return decisions;
            }
        }
        decisions
    }

    /// Refunds the charges of the allowed checks before `upto`.
    fn undo(&self, checks: &[Check<'_>], hashes: &[u64], decisions: &[Decision], upto: usize) {
        for ((check, &hash), decision) in checks.iter().zip(hashes).zip(decisions).take(upto) {
            if decision.allowed && check.cost > 0 {
                let amount = check
                    .quota
                    .emission_interval_nanos()
                    .saturating_mul(u64::from(check.cost));
                self.inner.table.refund(hash, amount);
            }
        }
    }
}

impl<C: Clock<Instant = Nanos>> RateLimitStore for MemoryStore<C> {
    type Future = std::future::Ready<Result<Vec<Decision>, StoreError>>;

    fn check(&self, checks: &[Check<'_>]) -> Self::Future {
        std::future::ready(Ok(self.check_sync(checks)))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
