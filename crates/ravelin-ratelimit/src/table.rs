//! The keyed state: a fixed-size, sharded open-addressing table of 16-byte entries.
//!
//! Each entry is two atomic words: the key's 64-bit hash (its *tag*; `0` means never used) and its
//! TAT. The table is allocated once, at its capacity, and never grows.
//!
//! - **Lookups and updates are lock-free**: find the tag in the key's probe window (16 slots
//!   from a position derived from the hash), then CAS the TAT.
//! - **Insertions take the shard's mutex**, so a key is never stored twice and two inserters never
//!   pick the same slot. An insertion takes the first never-used slot of the window, else the first
//!   *expired* one (TAT ≤ now: identical to an absent key, so reclaiming it loses nothing), else —
//!   the window is full of live state, the table is over capacity here — it evicts the entry with
//!   the smallest TAT: the least recently charged key, whose forgotten debt is the smallest in the
//!   window. Keys being limited carry the largest TATs and are evicted last.
//! - Only an allowed request with a cost above zero inserts: denied requests and reads of absent
//!   keys never take a slot, so a flood of unique keys that are all denied costs nothing.
//!
//! A replacement swaps a slot from key A to key B while lock-free updaters of A may still hold
//! it: the replacer first CASes the TAT to [`LOCKED`], then writes B's tag, then B's TAT (release);
//! an updater re-reads the tag after its read or CAS and retries when the slot changed owner. In
//! the one interleaving where B's TAT equals the value an updater of A expected (an ABA on the
//! TAT word), the updater's CAS lands on B's state; it detects this by the tag re-check and undoes
//! its write with a CAS, which fails only if B was charged again in the same few nanoseconds, in
//! which case B is left charged once too many (stricter, never more lenient).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::gcra::Evaluation;

/// Slots scanned per key. 16 entries of 16 bytes: four cache lines, read sequentially.
pub(crate) const WINDOW: usize = 16;

/// At most this many shards (insert locks); more buys nothing on machines we target.
const MAX_SHARDS: usize = 64;

/// The largest capacity accepted: 2^30 entries (16 GiB); larger requests are clamped.
pub(crate) const MAX_CAPACITY: usize = 1 << 30;

/// A TAT value no real state takes (real TATs stay below 2^63): marks a slot being replaced.
const LOCKED: u64 = u64::MAX;

/// The tag of a never-used slot.
const EMPTY: u64 = 0;

/// How many times an inserter retries a victim whose TAT changed under it before giving up.
const INSERT_ATTEMPTS: usize = 4;

#[derive(Default)]
struct Slot {
    tag: AtomicU64,
    tat: AtomicU64,
}

/// One insert lock and its slots; aligned so that shard headers do not share cache lines.
#[repr(align(64))]
struct Shard {
    slots: Box<[Slot]>,
    /// Serialises insertions and replacements in this shard. Held for a window scan and three
    /// stores; never on the lookup/update path.
    insert: Mutex<()>,
}

/// Counters of a table's degradation, also exported as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Slots allocated (fixed at construction).
    pub slots: usize,
    /// Bytes allocated for the slots and shard headers (fixed at construction).
    pub bytes: usize,
    /// Live entries evicted to make room (`ravelin_ratelimit_evictions_total`): each one is a key
    /// whose recorded use was forgotten.
    pub evictions: u64,
    /// Allowed requests whose new state could not be stored because their window kept changing
    /// under the inserter (`ravelin_ratelimit_overflow_total`).
    pub overflows: u64,
}

pub(crate) struct Table {
    shards: Box<[Shard]>,
    /// `log2(shards.len())`.
    shard_bits: u32,
    evictions: AtomicU64,
    overflows: AtomicU64,
    evictions_metric: metrics::Counter,
    overflow_metric: metrics::Counter,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("shards", &self.shards.len())
            .field("stats", &self.stats())
            .finish()
    }
}

enum Step {
    Done(Evaluation),
    /// The slot changed owner or is being replaced: look the key up again.
    Retry,
    /// The slot is mid-replacement: wait for the inserter by taking the shard lock.
    Wait,
}

impl Table {
    /// A table holding at least `capacity` entries (clamped to `1..=MAX_CAPACITY`).
    pub(crate) fn new(capacity: usize, label: &'static str) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        // About a thousand slots per shard, so inserts rarely meet on one lock.
        let shards = (capacity / 1024).clamp(1, MAX_SHARDS).next_power_of_two().min(MAX_SHARDS);
        let per_shard = capacity.div_ceil(shards);
        let shards: Box<[Shard]> = (0..shards)
            .map(|_| Shard {
                slots: (0..per_shard).map(|_| Slot::default()).collect(),
                insert: Mutex::new(()),
            })
            .collect();
        Self {
            shard_bits: shards.len().trailing_zeros(),
            shards,
            evictions: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            evictions_metric: metrics::counter!("ravelin_ratelimit_evictions_total", "table" => label),
            overflow_metric: metrics::counter!("ravelin_ratelimit_overflow_total", "table" => label),
        }
    }

    pub(crate) fn stats(&self) -> TableStats {
        let slots: usize = self.shards.iter().map(|s| s.slots.len()).sum();
        TableStats {
            slots,
            bytes: slots
                .saturating_mul(size_of::<Slot>())
                .saturating_add(self.shards.len().saturating_mul(size_of::<Shard>())),
            evictions: self.evictions.load(Ordering::Relaxed),
            overflows: self.overflows.load(Ordering::Relaxed),
        }
    }

    /// The shard, window start and tag of a key hash.
    #[inline]
    fn locate(&self, hash: u64) -> Option<(&Shard, usize, u64)> {
        let shard_index = if self.shard_bits == 0 {
            0
        } else {
            usize::try_from(hash >> (64 - self.shard_bits)).unwrap_or(0)
        };
        let shard = self.shards.get(shard_index)?;
        let n = shard.slots.len() as u64;
        // Lemire's multiply-shift maps the low 32 bits onto 0..n without a division.
        let start = usize::try_from(((hash & 0xffff_ffff) * n) >> 32).unwrap_or(0);
        let tag = if hash == EMPTY { 1 } else { hash };
        Some((shard, start, tag))
    }

    /// The slot holding `tag` in its window, if any.
    #[inline]
    fn find<'s>(shard: &'s Shard, start: usize, tag: u64) -> Option<&'s Slot> {
        let n = shard.slots.len();
        let mut index = start;
        for _ in 0..WINDOW.min(n) {
            let slot = shard.slots.get(index)?;
            let t = slot.tag.load(Ordering::Acquire);
            if t == tag {
                return Some(slot);
            }
            // Slots are never emptied once used and inserts take the first empty slot, so an
            // empty slot ends the search.
            if t == EMPTY {
                return None;
            }
            index += 1;
            if index == n {
                index = 0;
            }
        }
        None
    }

    /// The key's stored TAT (`0` when absent), without writing.
    pub(crate) fn read(&self, hash: u64) -> u64 {
        let Some((shard, start, tag)) = self.locate(hash) else {
            return 0;
        };
        loop {
            let Some(slot) = Self::find(shard, start, tag) else {
                return 0;
            };
            let tat = slot.tat.load(Ordering::Acquire);
            if tat != LOCKED && slot.tag.load(Ordering::Acquire) == tag {
                return tat;
            }
            if tat == LOCKED {
                // Being replaced; the replacer holds the lock for a few stores.
                drop(lock(shard));
            }
        }
    }

    /// Runs one GCRA step for the key: `decide` maps the stored TAT (`0` when absent) to an
    /// evaluation, and its `new_tat`, if any, is stored atomically with respect to the read.
    pub(crate) fn apply(
        &self,
        hash: u64,
        now: u64,
        mut decide: impl FnMut(u64) -> Evaluation,
    ) -> Evaluation {
        let Some((shard, start, tag)) = self.locate(hash) else {
            // Unreachable for a constructed table (it has at least one shard); deciding without
            // state is the lenient answer and never panics.
            return decide(0);
        };
        loop {
            if let Some(slot) = Self::find(shard, start, tag) {
                match Self::update(slot, tag, &mut decide) {
                    Step::Done(evaluation) => return evaluation,
                    Step::Retry => continue,
                    Step::Wait => {
                        drop(lock(shard));
                        continue;
                    }
                }
            }
            let evaluation = decide(0);
            let Some(new_tat) = evaluation.new_tat else {
                // Denied, or a read: an absent key takes no slot.
                return evaluation;
            };
            let guard = lock(shard);
            if Self::find(shard, start, tag).is_some() {
                // Inserted by another request meanwhile: update it lock-free instead.
                drop(guard);
                continue;
            }
            self.insert(shard, start, tag, now, new_tat);
            drop(guard);
            return evaluation;
        }
    }

    /// The lock-free CAS step on a slot found holding `tag`.
    #[inline]
    fn update(slot: &Slot, tag: u64, decide: &mut impl FnMut(u64) -> Evaluation) -> Step {
        loop {
            let stored = slot.tat.load(Ordering::Acquire);
            if stored == LOCKED {
                return Step::Wait;
            }
            let evaluation = decide(stored);
            let Some(new_tat) = evaluation.new_tat else {
                // Nothing to write; the decision stands if `stored` was this key's state, which
                // the tag re-check proves (a replacement writes the tag before the new TAT).
                if slot.tag.load(Ordering::Acquire) == tag {
                    return Step::Done(evaluation);
                }
                return Step::Retry;
            };
            match slot
                .tat
                .compare_exchange_weak(stored, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if slot.tag.load(Ordering::Acquire) == tag {
                        return Step::Done(evaluation);
                    }
                    // ABA: the slot changed owner and the new owner's TAT equalled `stored`.
                    // Undo (see the module docs), then decide again from scratch.
                    let _ = slot.tat.compare_exchange(
                        new_tat,
                        stored,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    return Step::Retry;
                }
                Err(_) => {
                    if slot.tag.load(Ordering::Acquire) != tag {
                        return Step::Retry;
                    }
                }
            }
        }
    }

    /// Stores `new_tat` for `tag`, which is absent from its window. Called with the shard lock.
    fn insert(&self, shard: &Shard, start: usize, tag: u64, now: u64, new_tat: u64) {
        let n = shard.slots.len();
        for _ in 0..INSERT_ATTEMPTS {
            let mut victim: Option<(&Slot, u64)> = None;
            let mut index = start;
            for _ in 0..WINDOW.min(n) {
                let Some(slot) = shard.slots.get(index) else {
                    break;
                };
                if slot.tag.load(Ordering::Acquire) == EMPTY {
                    // No updater can address an unused slot, and other inserters wait on the
                    // lock: plain stores suffice; the release on the tag publishes the TAT.
                    slot.tat.store(new_tat, Ordering::Relaxed);
                    slot.tag.store(tag, Ordering::Release);
                    return;
                }
                let tat = slot.tat.load(Ordering::Acquire);
                if tat <= now {
                    // Expired: identical to absent. Take the first one.
                    victim = Some((slot, tat));
                    break;
                }
                if tat != LOCKED && victim.is_none_or(|(_, best)| tat < best) {
                    victim = Some((slot, tat));
                }
                index += 1;
                if index == n {
                    index = 0;
                }
            }
            let Some((slot, expected)) = victim else {
                break;
            };
            // Claim the victim; fails if an updater charged it since the scan.
            if slot
                .tat
                .compare_exchange(expected, LOCKED, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            slot.tag.store(tag, Ordering::Release);
            slot.tat.store(new_tat, Ordering::Release);
            if expected > now {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                self.evictions_metric.increment(1);
            }
            return;
        }
        self.overflows.fetch_add(1, Ordering::Relaxed);
        self.overflow_metric.increment(1);
    }

    /// Gives back `amount` nanoseconds of a key's TAT (undoing a charge), if the key is still
    /// stored. Never moves a TAT below zero.
    pub(crate) fn refund(&self, hash: u64, amount: u64) {
        self.apply_refund(hash, amount);
    }

    fn apply_refund(&self, hash: u64, amount: u64) {
        let Some((shard, start, tag)) = self.locate(hash) else {
            return;
        };
        loop {
            let Some(slot) = Self::find(shard, start, tag) else {
                // Evicted since: its debt was forgiven already.
                return;
            };
            let stored = slot.tat.load(Ordering::Acquire);
            if stored == LOCKED {
                drop(lock(shard));
                continue;
            }
            let refunded = stored.saturating_sub(amount);
            match slot
                .tat
                .compare_exchange(stored, refunded, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if slot.tag.load(Ordering::Acquire) != tag {
                        let _ = slot.tat.compare_exchange(
                            refunded,
                            stored,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                    }
                    return;
                }
                Err(_) => continue,
            }
        }
    }

    /// How many slots hold a TAT after `now` (a full scan, for tests and status pages).
    pub(crate) fn live_entries(&self, now: u64) -> usize {
        self.shards
            .iter()
            .flat_map(|s| s.slots.iter())
            .filter(|s| {
                s.tag.load(Ordering::Relaxed) != EMPTY && {
                    let t = s.tat.load(Ordering::Relaxed);
                    t != LOCKED && t > now
                }
            })
            .count()
    }
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, ()> {
    // The lock guards no data of its own (the slots are atomics): a poisoned lock is still good.
    shard.insert.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;

    #[test]
    fn never_grows_and_evicts_least_charged() {
        let table = Table::new(64, "test");
        let before = table.stats();
        let q = Quota::per_second(1).unwrap();
        for key in 0..10_000u64 {
            let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            table.apply(h, key, |tat| q.decide(tat, key, 1));
        }
        let after = table.stats();
        assert_eq!(before.slots, after.slots);
        assert_eq!(before.bytes, after.bytes);
        assert!(after.evictions > 0);
        assert!(table.live_entries(10_000) <= after.slots);
    }

    #[test]
    fn expired_entries_are_reclaimed_without_eviction() {
        let table = Table::new(16, "test");
        let q = Quota::per_second(10).unwrap();
        let t = q.emission_interval_nanos();
        for round in 0..100u64 {
            for key in 0..16u64 {
                let now = round * 10 * t;
                let h = (round * 16 + key).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                table.apply(h, now, |tat| q.decide(tat, now, 1));
            }
        }
        assert_eq!(table.stats().evictions, 0);
    }

    #[test]
    fn denied_and_zero_cost_requests_take_no_slot() {
        let table = Table::new(16, "test");
        let q = Quota::per_second(1).unwrap();
        for key in 1..1000u64 {
            // cost above the burst: denied
            let e = table.apply(key << 20, 0, |tat| q.decide(tat, 0, 2));
            assert!(!e.decision.allowed);
            let e = table.apply(key << 20, 0, |tat| q.decide(tat, 0, 0));
            assert!(e.decision.allowed);
        }
        assert_eq!(table.live_entries(0), 0);
    }

    #[test]
    fn refund_restores() {
        let table = Table::new(16, "test");
        let q = Quota::per_second(2).unwrap();
        let a = table.apply(42, 0, |tat| q.decide(tat, 0, 1));
        assert_eq!(a.decision.remaining, 1);
        table.refund(42, q.emission_interval_nanos());
        let b = table.apply(42, 0, |tat| q.decide(tat, 0, 1));
        assert_eq!(b.decision.remaining, 1);
        assert_eq!(table.read(42), q.emission_interval_nanos());
    }
}
