//! Storage: the [`Storage`] trait and the in-memory, byte-bounded [`MemoryStore`].
//!
//! The memory store is `quick_cache` (chosen by measurement, see `docs/performance.md`): its
//! CLOCK-PRO-style policy admits new objects to a small "cold" queue and promotes only objects that
//! are hit again, so a stream of one-hit wonders cannot flush hot content, and it was both faster
//! and hit more often than moka's TinyLFU on a Zipf(1.0) trace.
//!
//! Purges by URL and by surrogate tag go through a group index (group → keys) kept beside the
//! store and updated on insert, removal and eviction, so purging 10,000 objects of one tag touches
//! exactly those 10,000 keys.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::entry::Object;

/// Usage figures of a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageUsage {
    /// Objects held.
    pub entries: u64,
    /// Bytes held (by the objects' weights).
    pub bytes: u64,
    /// The byte capacity.
    pub capacity: u64,
    /// Objects evicted to make room since the store was created.
    pub evictions: u64,
}

/// A tier of the cache.
///
/// Keys are `u64` hashes of the cache key; every object carries its full key and the cache
/// compares it on lookup, so an implementation may treat keys as opaque. Implementations must be
/// cheap to call from the request path (no blocking I/O): this trait is the synchronous memory
/// tier. A disk or shared tier would sit behind it as a separate, asynchronous tier that fills
/// this one.
pub trait Storage: Send + Sync + 'static {
    /// The object stored under `key`.
    fn get(&self, key: u64) -> Option<Object>;

    /// Stores `object` under `key`, replacing what was there; may evict other objects, or drop
    /// this one if it can never fit.
    fn insert(&self, key: u64, object: Object);

    /// Removes the object under `key` — only if its id is `id`, when given. Returns whether an
    /// object was removed.
    fn remove(&self, key: u64, id: Option<u64>) -> bool;

    /// Removes every object belonging to `group` (see [`Object::groups`]); returns how many.
    fn purge_group(&self, group: u64) -> usize;

    /// Current usage.
    fn usage(&self) -> StorageUsage;

    /// Every object held, in no particular order (for warm-restart snapshots). The default, for
    /// stores that cannot list their contents, is none: such a cache writes empty snapshots.
    fn objects(&self) -> Vec<Object> {
        Vec::new()
    }
}

// === GroupIndex ===

/// How many recent purges are remembered to catch an insert racing a purge.
const RECENT_PURGES: usize = 4096;

#[derive(Default)]
struct IndexInner {
    groups: HashMap<u64, HashSet<u64, foldhash::fast::RandomState>, foldhash::fast::RandomState>,
    members: HashMap<u64, (u64, Box<[u64]>), foldhash::fast::RandomState>,
    purge_seq: u64,
    recent: VecDeque<(u64, u64)>,
}

/// group → keys, and key → (object id, groups). One short mutex: it is taken on stores, evictions
/// and purges, never on hits.
#[derive(Default)]
struct GroupIndex {
    inner: Mutex<IndexInner>,
}

impl GroupIndex {
    fn purge_seq(&self) -> u64 {
        self.inner.lock().purge_seq
    }

    fn add(&self, key: u64, id: u64, groups: &[u64]) {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        if let Some((_, old)) = inner.members.remove(&key) {
            for group in old.iter() {
                if let Some(set) = inner.groups.get_mut(group) {
                    set.remove(&key);
                    if set.is_empty() {
                        inner.groups.remove(group);
                    }
                }
            }
        }
        for group in groups {
            inner.groups.entry(*group).or_default().insert(key);
        }
        inner.members.insert(key, (id, groups.into()));
    }

    /// Forgets `key` if it still maps to object `id`.
    fn remove(&self, key: u64, id: u64) {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        if inner.members.get(&key).is_some_and(|(have, _)| *have == id)
            && let Some((_, groups)) = inner.members.remove(&key)
        {
            for group in groups.iter() {
                if let Some(set) = inner.groups.get_mut(group) {
                    set.remove(&key);
                    if set.is_empty() {
                        inner.groups.remove(group);
                    }
                }
            }
        }
    }

    /// Forgets many `(key, id)` pairs under one lock.
    fn remove_many(&self, removed: impl Iterator<Item = (u64, u64)>) {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        for (key, id) in removed {
            if inner.members.get(&key).is_some_and(|(have, _)| *have == id)
                && let Some((_, groups)) = inner.members.remove(&key)
            {
                for group in groups.iter() {
                    if let Some(set) = inner.groups.get_mut(group) {
                        set.remove(&key);
                        if set.is_empty() {
                            inner.groups.remove(group);
                        }
                    }
                }
            }
        }
    }

    /// Takes the keys of `group` and records the purge.
    fn take_group(&self, group: u64) -> Vec<u64> {
        let mut g = self.inner.lock();
        g.purge_seq = g.purge_seq.wrapping_add(1);
        let seq = g.purge_seq;
        if g.recent.len() >= RECENT_PURGES {
            g.recent.pop_front();
        }
        g.recent.push_back((seq, group));
        // The whole group goes: drop its set at once rather than key by key.
        g.groups
            .remove(&group)
            .map(|set| set.into_iter().collect())
            .unwrap_or_default()
    }

    /// Whether a purge of any of `groups` started after `since`. When the record of recent purges
    /// no longer reaches back that far, answers `true`: purging too much is safe, too little is not.
    fn purged_since(&self, since: u64, groups: &[u64]) -> bool {
        let g = self.inner.lock();
        if g.purge_seq == since {
            return false;
        }
        match g.recent.front() {
            Some((oldest, _)) if *oldest <= since.wrapping_add(1) => g
                .recent
                .iter()
                .any(|(seq, group)| *seq > since && groups.contains(group)),
            _ => true,
        }
    }

    fn len(&self) -> usize {
        self.inner.lock().members.len()
    }
}

// === MemoryStore ===

#[derive(Clone)]
struct Weigher;

impl quick_cache::Weighter<u64, Object> for Weigher {
    fn weight(&self, _key: &u64, val: &Object) -> u64 {
        val.weight()
    }
}

/// Eviction notifications, collected during a store call and applied after it returns (outside
/// the shard lock).
#[derive(Clone)]
struct Evictions {
    index: Arc<GroupIndex>,
    evicted: Arc<AtomicU64>,
    on_evict: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl quick_cache::Lifecycle<u64, Object> for Evictions {
    type RequestState = Vec<(u64, Object)>;

    fn begin_request(&self) -> Self::RequestState {
        Vec::new()
    }

    fn on_evict(&self, state: &mut Self::RequestState, key: u64, val: Object) {
        state.push((key, val));
    }

    fn end_request(&self, state: Self::RequestState) {
        if state.is_empty() {
            return;
        }
        let n = u64::try_from(state.len()).unwrap_or(u64::MAX);
        for (key, val) in &state {
            self.index.remove(*key, val.id());
        }
        self.evicted.fetch_add(n, Ordering::Relaxed);
        if let Some(f) = &self.on_evict {
            f(n);
        }
    }
}

type Inner =
    quick_cache::sync::Cache<u64, Object, Weigher, quick_cache::DefaultHashBuilder, Evictions>;

/// The in-memory tier: byte-bounded, with scan-resistant admission and a purge index.
pub struct MemoryStore {
    cache: Inner,
    index: Arc<GroupIndex>,
    evicted: Arc<AtomicU64>,
    capacity: u64,
    // Same-key stores are serialised so that the index and the store agree on which object a key
    // holds; striped so that different keys never wait for each other.
    insert_locks: [Mutex<()>; STRIPES],
}

const STRIPES: usize = 64;

impl MemoryStore {
    /// A store holding at most `capacity_bytes`, sized for objects up to `max_object_bytes`.
    pub fn new(capacity_bytes: u64, max_object_bytes: u64) -> Self {
        Self::with_eviction_hook(capacity_bytes, max_object_bytes, None)
    }

    pub(crate) fn with_eviction_hook(
        capacity_bytes: u64,
        max_object_bytes: u64,
        on_evict: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    ) -> Self {
        let capacity = capacity_bytes.max(1);
        // quick_cache splits capacity across shards; keep each shard at least four of the largest
        // objects so that no admissible object is rejected for its size.
        let parallel = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let by_size = capacity / max_object_bytes.max(1).saturating_mul(4).max(1);
        let shards = usize::try_from(by_size)
            .unwrap_or(usize::MAX)
            .min(parallel.saturating_mul(4))
            .max(1);
        let shards = if shards.is_power_of_two() {
            shards
        } else {
            shards.next_power_of_two() / 2
        }
        .max(1);
        let estimated_items = usize::try_from(capacity / 16_384)
            .unwrap_or(usize::MAX)
            .clamp(16, 1 << 24);
        let index = Arc::new(GroupIndex::default());
        let evicted = Arc::new(AtomicU64::new(0));
        let lifecycle = Evictions {
            index: index.clone(),
            evicted: evicted.clone(),
            on_evict,
        };
        let mut builder = quick_cache::OptionsBuilder::new();
        builder
            .weight_capacity(capacity)
            .estimated_items_capacity(estimated_items)
            .shards(shards);
        let cache = match builder.build() {
            Ok(options) => Inner::with_options(options, Weigher, Default::default(), lifecycle),
            // Unreachable in practice (both required options are set); fall back to defaults.
            Err(_) => Inner::with(
                estimated_items,
                capacity,
                Weigher,
                Default::default(),
                lifecycle,
            ),
        };
        Self {
            cache,
            index,
            evicted,
            capacity,
            insert_locks: std::array::from_fn(|_| Mutex::new(())),
        }
    }

    fn stripe(&self, key: u64) -> Option<&Mutex<()>> {
        // Always `Some`: the remainder is below `STRIPES`.
        self.insert_locks
            .get(usize::try_from(key % STRIPES as u64).unwrap_or(0))
    }

    /// Objects tracked by the purge index (equal to the object count once evictions are applied).
    pub fn indexed(&self) -> usize {
        self.index.len()
    }
}

impl Storage for MemoryStore {
    fn get(&self, key: u64) -> Option<Object> {
        self.cache.get(&key)
    }

    fn insert(&self, key: u64, object: Object) {
        if object.weight() > self.capacity {
            return;
        }
        let id = object.id();
        let groups: Box<[u64]> = object.groups().into();
        let _same_key = self.stripe(key).map(Mutex::lock);
        let since = self.index.purge_seq();
        self.index.add(key, id, &groups);
        self.cache.insert(key, object);
        // A purge of one of our groups may have run between reading the index and storing: it
        // could not see this object, so remove it now rather than serve purged content.
        if self.index.purged_since(since, &groups) {
            self.cache.remove_if(&key, |o| o.id() == id);
            self.index.remove(key, id);
        }
    }

    fn remove(&self, key: u64, id: Option<u64>) -> bool {
        let removed = match id {
            Some(id) => self.cache.remove_if(&key, |o| o.id() == id),
            None => self.cache.remove(&key),
        };
        match removed {
            Some((_, object)) => {
                self.index.remove(key, object.id());
                true
            }
            None => false,
        }
    }

    fn purge_group(&self, group: u64) -> usize {
        let keys = self.index.take_group(group);
        let mut removed = Vec::with_capacity(keys.len());
        // In chunks, so that a purge of many objects never holds the index lock (which stores
        // and evictions take) for long.
        for chunk in keys.chunks(256) {
            let start = removed.len();
            for key in chunk {
                if let Some(hit) = self.cache.remove_if(key, |o| o.groups().contains(&group)) {
                    removed.push(hit);
                }
            }
            self.index.remove_many(
                removed
                    .get(start..)
                    .unwrap_or_default()
                    .iter()
                    .map(|(key, object)| (*key, object.id())),
            );
        }
        // The objects are freed here, after every lock is released.
        removed.len()
    }

    fn objects(&self) -> Vec<Object> {
        // `iter` visits one shard at a time under its read lock, cloning (an `Arc`) each value.
        self.cache.iter().map(|(_, object)| object).collect()
    }

    fn usage(&self) -> StorageUsage {
        StorageUsage {
            entries: u64::try_from(self.cache.len()).unwrap_or(u64::MAX),
            bytes: self.cache.weight(),
            capacity: self.capacity,
            evictions: self.evicted.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::StoredResponse;
    use crate::policy::Policy;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::time::{Duration, UNIX_EPOCH};

    fn object(id: u64, groups: &[u64], weight: u64) -> Object {
        Object::Response(Arc::new(StoredResponse {
            id,
            key: format!("k{id}").into(),
            variant: None,
            status: http::StatusCode::OK,
            version: http::Version::HTTP_11,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
            policy: Policy {
                response_time: UNIX_EPOCH,
                corrected_initial_age: Duration::ZERO,
                lifetime: Duration::ZERO,
                no_cache: false,
                no_cache_fields: Vec::new(),
                stale_forbidden: false,
                stale_implied_forbidden: false,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
            },
            etag: None,
            last_modified: UNIX_EPOCH,
            has_last_modified: false,
            tags: Box::new([]),
            groups: groups.into(),
            weight,
            last_used: Default::default(),
        }))
    }

    #[test]
    fn purge_removes_exactly_the_group() {
        let s = MemoryStore::new(1 << 20, 1 << 16);
        s.insert(1, object(1, &[10, 20], 100));
        s.insert(2, object(2, &[10], 100));
        s.insert(3, object(3, &[30], 100));
        assert_eq!(s.purge_group(10), 2);
        assert!(s.get(1).is_none() && s.get(2).is_none());
        assert!(s.get(3).is_some());
        assert_eq!(s.purge_group(20), 0);
        assert_eq!(s.indexed(), 1);
    }

    #[test]
    fn a_replaced_object_leaves_its_old_groups() {
        let s = MemoryStore::new(1 << 20, 1 << 16);
        s.insert(1, object(1, &[10], 100));
        s.insert(1, object(2, &[20], 100));
        assert_eq!(
            s.purge_group(10),
            0,
            "the new object is not in the old group"
        );
        assert_eq!(s.purge_group(20), 1);
        assert_eq!(s.indexed(), 0);
    }

    #[test]
    fn evictions_keep_the_index_in_step_and_are_counted() {
        let s = MemoryStore::new(1 << 20, 1 << 16);
        for i in 0..1000 {
            s.insert(i, object(i, &[7], 16 << 10));
        }
        let u = s.usage();
        assert!(u.bytes <= 1 << 20, "{u:?}");
        assert!(u.evictions > 0);
        assert_eq!(s.indexed() as u64, u.entries);
        assert_eq!(s.purge_group(7) as u64, u.entries);
    }

    #[test]
    fn an_object_larger_than_the_store_is_refused() {
        let s = MemoryStore::new(1 << 20, 1 << 16);
        s.insert(1, object(1, &[], 2 << 20));
        assert!(s.get(1).is_none());
        assert_eq!(s.indexed(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, Vec<u64>),
        Remove(u64),
        Purge(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..16, proptest::collection::vec(0u64..6, 0..3)).prop_map(|(k, g)| Op::Insert(k, g)),
            1 => (0u64..16).prop_map(Op::Remove),
            2 => (0u64..6).prop_map(Op::Purge),
        ]
    }

    proptest! {
        /// The store (with room for everything, so nothing is evicted) behaves like a map whose
        /// purge removes exactly the objects currently in the group.
        #[test]
        fn store_matches_a_map_model(ops in proptest::collection::vec(op(), 1..80)) {
            let s = MemoryStore::new(1 << 24, 1 << 16);
            let mut model: HashMap<u64, (u64, Vec<u64>)> = HashMap::new();
            for (n, op) in ops.into_iter().enumerate() {
                let id = n as u64 + 1;
                match op {
                    Op::Insert(k, g) => {
                        s.insert(k, object(id, &g, 100));
                        model.insert(k, (id, g));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(s.remove(k, None), model.remove(&k).is_some());
                    }
                    Op::Purge(g) => {
                        let want = model.values().filter(|(_, gs)| gs.contains(&g)).count();
                        prop_assert_eq!(s.purge_group(g), want);
                        model.retain(|_, (_, gs)| !gs.contains(&g));
                    }
                }
                for k in 0..16 {
                    prop_assert_eq!(s.get(k).map(|o| o.id()), model.get(&k).map(|(id, _)| *id));
                }
                prop_assert_eq!(s.indexed(), model.len());
            }
        }
    }
}
