//! The keyed state: a fixed-size, sharded table of 16-byte entries in 128-byte buckets.
//!
//! Each entry is two atomic words: the key's 64-bit hash (its *tag*; `0` means never used) and its
//! TAT. The table is allocated once, at its capacity, and never grows.
//!
//! Placement is two-choice hashing: each key has two distinct candidate buckets of 8 entries, the
//! first anywhere in its shard and the second within the same window of 32 buckets (4 KiB, so
//! both usually share a page and one TLB entry), and is inserted into the one holding fewer live
//! entries (the first on ties). Windows are the page-aligned groups of 32 buckets, except that
//! the last one of a shard always ends at the shard's last bucket and so also spans 32 buckets:
//! a shorter tail group (a shard of 196 buckets has a tail of 4) gave its keys a handful of second
//! choices, and a quarter of them the same bucket twice, so that it overflowed, evicting live
//! keys, with the table only half full. Against one bucket or a linear-probing window this keeps buckets
//! even: with the table 80% full of live keys, about 1 insertion in 1000 finds both buckets full
//! (5 in 100 000 at 70%), where linear probing over 16 slots evicts 2%. Fully independent choices
//! would evict 5 times less at 80%, but cost a second page walk on every lookup: the grouped
//! layout measured ~15% fewer cycles per check with two threads on a million keys.
//!
//! - **Lookups and updates are lock-free**: find the tag in the first bucket, then the second,
//!   and CAS the TAT.
//! - **Insertions take the shard's mutex**, so a key is never stored twice and two inserters never
//!   pick the same slot. An insertion takes a free entry of the bucket with fewer live entries
//!   (then of the other): an unused one, else the one that *expired* longest ago (TAT ≤ now:
//!   identical to an absent key, so reclaiming it loses nothing). Only when all 16 candidates
//!   are live — the table is over capacity there — does it evict: the live entry with the
//!   smallest TAT, the least recently charged key, whose forgotten debt is the smallest. Keys
//!   being limited carry the largest TATs and are evicted last.
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

/// Entries per bucket: 8 × 16 bytes, two cache lines.
pub(crate) const BUCKET: usize = 8;

/// Buckets per placement group: 32 × 128 bytes = 4 KiB, one page.
const GROUP: u64 = 32;

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

/// Slots fill from the front and are never emptied, so a lookup stops at the first unused one.
#[derive(Default)]
#[repr(C, align(64))]
struct Bucket {
    slots: [Slot; BUCKET],
}

/// One insert lock and its buckets; aligned so that shard headers
/// do not share cache lines.
#[repr(align(64))]
struct Shard {
    buckets: Box<[Bucket]>,
    /// `buckets.len()`.
    count: u64,
    /// Serialises insertions and replacements in this shard. Held for a scan of two buckets and
    /// three stores; never on the lookup/update path.
    insert: Mutex<()>,
}

/// Counters of a table's memory and degradation, also exported as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Entries allocated (fixed at construction).
    pub slots: usize,
    /// Bytes allocated for the entries and shard headers (fixed at construction).
    pub bytes: usize,
    /// Live entries evicted to make room (`ravelin_ratelimit_evictions_total`): each one is a key
    /// whose recorded use was forgotten.
    pub evictions: u64,
    /// Allowed requests whose new state could not be stored because their buckets kept changing
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
    /// The slot changed owner: look the key up again.
    Retry,
    /// The slot is mid-replacement: wait for the inserter by taking the shard lock.
    Wait,
}

/// Where a key lives: its shard, its two candidate buckets and its tag.
struct Place<'t> {
    shard: &'t Shard,
    left: &'t Bucket,
    right: &'t Bucket,
    tag: u64,
}

impl Table {
    /// A table holding at least `capacity` entries (clamped to `1..=MAX_CAPACITY`).
    pub(crate) fn new(capacity: usize, label: &'static str) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        // About two thousand entries per shard, so inserts rarely meet on one lock.
        let shards = (capacity / 2048)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two()
            .min(MAX_SHARDS);
        let count = capacity.div_ceil(shards).div_ceil(BUCKET).max(1);
        let shards: Box<[Shard]> = (0..shards)
            .map(|_| Shard {
                buckets: (0..count).map(|_| Bucket::default()).collect(),
                count: count as u64,
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
        let buckets: usize = self.shards.iter().map(|s| s.buckets.len()).sum();
        TableStats {
            slots: buckets.saturating_mul(BUCKET),
            bytes: buckets
                .saturating_mul(size_of::<Bucket>())
                .saturating_add(self.shards.len().saturating_mul(size_of::<Shard>())),
            evictions: self.evictions.load(Ordering::Relaxed),
            overflows: self.overflows.load(Ordering::Relaxed),
        }
    }

    /// The shard, candidate buckets and tag of a key hash. Bits: the top ones pick the shard, the
    /// low 32 the first bucket and bits 26..58 the second, another bucket of the first's window
    /// of [`GROUP`] buckets (Lemire's multiply-shift maps each onto its range without a
    /// division); the whole hash is the tag.
    #[inline]
    fn locate(&self, hash: u64) -> Option<Place<'_>> {
        let shard_index = if self.shard_bits == 0 {
            0
        } else {
            usize::try_from(hash >> (64 - self.shard_bits)).unwrap_or(0)
        };
        let shard = self.shards.get(shard_index)?;
        let first = ((hash & 0xffff_ffff) * shard.count) >> 32;
        // The window of second choices: the GROUP-aligned group holding `first`, except at the
        // end of a shard whose bucket count is not a multiple of GROUP, where the window is moved
        // back to end at the last bucket so that it, too, spans GROUP buckets.
        let window = shard.count.min(GROUP);
        let group = (first & !(GROUP - 1)).min(shard.count.saturating_sub(window));
        // Any bucket of the window but `first` itself: a key whose two choices coincide has
        // only one bucket.
        let other = (((hash >> 26) & 0xffff_ffff) * window.saturating_sub(1)) >> 32;
        let mut offset = first - group + 1 + other;
        if offset >= window {
            offset -= window;
        }
        let second = group + offset;
        let left = shard.buckets.get(usize::try_from(first).ok()?)?;
        let right = shard.buckets.get(usize::try_from(second).ok()?)?;
        let tag = if hash == EMPTY { 1 } else { hash };
        Some(Place {
            shard,
            left,
            right,
            tag,
        })
    }

    /// The slot holding `tag` in `slots`, if any.
    #[inline]
    fn find_in(slots: &[Slot], tag: u64) -> Option<&Slot> {
        for slot in slots {
            let t = slot.tag.load(Ordering::Acquire);
            if t == tag {
                return Some(slot);
            }
            if t == EMPTY {
                return None;
            }
        }
        None
    }

    #[inline]
    fn find<'t>(place: &Place<'t>) -> Option<&'t Slot> {
        // Reading the right bucket's first line early, to overlap the two misses, measured no
        // better on the 1M-key benchmark (it spends a miss on every key found on the left).
        Self::find_in(&place.left.slots, place.tag)
            .or_else(|| Self::find_in(&place.right.slots, place.tag))
    }

    /// The key's stored TAT (`0` when absent), without writing.
    pub(crate) fn read(&self, hash: u64) -> u64 {
        let Some(place) = self.locate(hash) else {
            return 0;
        };
        loop {
            let Some(slot) = Self::find(&place) else {
                return 0;
            };
            let tat = slot.tat.load(Ordering::Acquire);
            if tat == LOCKED {
                // Being replaced; the replacer holds the lock for a few stores.
                drop(lock(place.shard));
            } else if slot.tag.load(Ordering::Acquire) == place.tag {
                return tat;
            }
        }
    }

    /// Runs one GCRA step for the key: `decide` maps the stored TAT (`0` when absent) to an
    /// evaluation, and its `new_tat`, if any, is stored atomically with respect to the read.
    #[inline]
    pub(crate) fn apply(
        &self,
        hash: u64,
        now: u64,
        mut decide: impl FnMut(u64) -> Evaluation,
    ) -> Evaluation {
        let Some(place) = self.locate(hash) else {
            // Not reachable for a constructed table (it has at least one shard of two buckets);
            // deciding without state is the lenient answer and never panics.
            return decide(0);
        };
        loop {
            if let Some(slot) = Self::find(&place) {
                match Self::update(slot, place.tag, &mut decide) {
                    Step::Done(evaluation) => return evaluation,
                    Step::Retry => continue,
                    Step::Wait => {
                        drop(lock(place.shard));
                        continue;
                    }
                }
            }
            let evaluation = decide(0);
            let Some(new_tat) = evaluation.new_tat else {
                // Denied, or a read: an absent key takes no slot.
                return evaluation;
            };
            let guard = lock(place.shard);
            if Self::find(&place).is_some() {
                // Inserted by another request meanwhile: update it lock-free instead.
                drop(guard);
                continue;
            }
            self.insert(&place, now, new_tat);
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
            match slot.tat.compare_exchange_weak(
                stored,
                new_tat,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
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

    /// Stores `new_tat` for a key absent from both its buckets. Called with the shard lock.
    ///
    /// Preference: a free entry (unused, else the one that expired longest ago) of the bucket
    /// with fewer live entries, then of the other; only when all 16 candidates are live, the live
    /// entry with the smallest TAT (an eviction). Balancing on *live* entries keeps buckets even
    /// also once every slot has been used, and reclaiming the entry that expired longest ago
    /// keeps state that a clock stepping back by less than its age would still need.
    fn insert(&self, place: &Place<'_>, now: u64, new_tat: u64) {
        for _ in 0..INSERT_ATTEMPTS {
            let left = Self::survey(place.left, now);
            let right = Self::survey(place.right, now);
            let (first, second) = if right.live < left.live {
                (&right, &left)
            } else {
                (&left, &right)
            };
            if let Some(slot) = first.unused.or(second.unused) {
                // No updater can address an unused slot, and other inserters wait on the lock:
                // plain stores suffice; the release on the tag publishes the TAT.
                slot.tat.store(new_tat, Ordering::Relaxed);
                slot.tag.store(place.tag, Ordering::Release);
                return;
            }
            let victim =
                first
                    .expired
                    .or(second.expired)
                    .or(match (left.oldest_live, right.oldest_live) {
                        (Some(l), Some(r)) => Some(if r.1 < l.1 { r } else { l }),
                        (one, other) => one.or(other),
                    });
            let Some((slot, expected)) = victim else {
                // Every entry is mid-replacement: impossible under the lock; give up safely.
                break;
            };
            // Claim the victim; fails if an updater charged it since the survey.
            if slot
                .tat
                .compare_exchange(expected, LOCKED, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            slot.tag.store(place.tag, Ordering::Release);
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

    /// Counts a bucket's live entries and finds its first unused slot, its expired entry with the
    /// smallest TAT and its live entry with the smallest TAT.
    fn survey(bucket: &Bucket, now: u64) -> Survey<'_> {
        let mut survey = Survey {
            live: 0,
            unused: None,
            expired: None,
            oldest_live: None,
        };
        for slot in &bucket.slots {
            if slot.tag.load(Ordering::Acquire) == EMPTY {
                survey.unused = Some(slot);
                break;
            }
            let tat = slot.tat.load(Ordering::Acquire);
            if tat == LOCKED {
                continue;
            }
            let best = if tat > now {
                survey.live += 1;
                &mut survey.oldest_live
            } else {
                &mut survey.expired
            };
            if best.is_none_or(|(_, oldest)| tat < oldest) {
                *best = Some((slot, tat));
            }
        }
        survey
    }

    /// Gives back `amount` nanoseconds of a key's TAT (undoing a charge), if the key is still
    /// stored. Never moves a TAT below zero.
    pub(crate) fn refund(&self, hash: u64, amount: u64) {
        let Some(place) = self.locate(hash) else {
            return;
        };
        loop {
            let Some(slot) = Self::find(&place) else {
                // Evicted since: its debt was forgiven already.
                return;
            };
            let stored = slot.tat.load(Ordering::Acquire);
            if stored == LOCKED {
                drop(lock(place.shard));
                continue;
            }
            let refunded = stored.saturating_sub(amount);
            if slot
                .tat
                .compare_exchange(stored, refunded, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if slot.tag.load(Ordering::Acquire) != place.tag {
                    let _ = slot.tat.compare_exchange(
                        refunded,
                        stored,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
                return;
            }
        }
    }

    /// How many slots hold a TAT after `now` (a full scan, for tests and status pages).
    pub(crate) fn live_entries(&self, now: u64) -> usize {
        self.shards
            .iter()
            .flat_map(|s| s.buckets.iter())
            .flat_map(|b| b.slots.iter())
            .filter(|s| {
                s.tag.load(Ordering::Relaxed) != EMPTY && {
                    let t = s.tat.load(Ordering::Relaxed);
                    t != LOCKED && t > now
                }
            })
            .count()
    }
}

struct Survey<'b> {
    live: usize,
    unused: Option<&'b Slot>,
    expired: Option<(&'b Slot, u64)>,
    oldest_live: Option<(&'b Slot, u64)>,
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

    /// The buckets `locate` picks, as indexes within the shard.
    fn choices(table: &Table, hash: u64) -> (usize, usize, usize) {
        let place = table.locate(hash).unwrap();
        let shard = table
            .shards
            .iter()
            .position(|s| std::ptr::eq(s, place.shard))
            .unwrap();
        let index = |bucket: &Bucket| {
            place
                .shard
                .buckets
                .iter()
                .position(|b| std::ptr::eq(b, bucket))
                .unwrap()
        };
        (shard, index(place.left), index(place.right))
    }

    #[test]
    fn two_distinct_choices_within_a_full_window() {
        // 196 buckets per shard: a tail of 4 past the last whole group of 32.
        for capacity in [16, 100, 256, 1000, 100_000] {
            let table = Table::new(capacity, "test");
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (_, first, second) = choices(&table, x);
                let count = table.shards[0].buckets.len();
                assert!(first < count && second < count);
                if count > 1 {
                    assert_ne!(first, second, "capacity {capacity}, hash {x:#x}");
                }
                assert!(first.abs_diff(second) < GROUP as usize);
            }
        }
    }

    #[test]
    fn tail_buckets_choose_among_a_whole_window() {
        let table = Table::new(100_000, "test");
        let count = table.shards[0].buckets.len();
        assert_ne!(
            count % GROUP as usize,
            0,
            "the case under test: a short tail"
        );
        let mut seconds = std::collections::HashSet::new();
        let mut x = 1u64;
        for _ in 0..200_000 {
            x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
            let (_, first, second) = choices(&table, x);
            if first == count - 1 {
                seconds.insert(second);
            }
        }
        // The last bucket's second choice: any of the 31 buckets before it.
        let expected: std::collections::HashSet<usize> =
            (count - GROUP as usize..count - 1).collect();
        assert_eq!(seconds, expected);
    }

    #[test]
    fn half_full_table_of_live_keys_never_evicts() {
        // The flood test's second phase, over several hash sequences: 50 000 live keys in a
        // table of 100 000. With a 4-bucket tail window this evicted in about 1 table in 14
        // (the old layout first evicted in round 29 of this sequence).
        let q = Quota::per_minute(10).unwrap();
        let mut x = 0x1234_5678_9ABC_DEF1u64;
        for round in 0..32 {
            let table = Table::new(100_000, "test");
            let now = 1_000_000_000u64;
            for _ in 0..50_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert!(
                    table
                        .apply(x, now, |tat| q.decide(tat, now, 1))
                        .decision
                        .allowed
                );
            }
            assert_eq!(table.stats().evictions, 0, "round {round}");
        }
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
