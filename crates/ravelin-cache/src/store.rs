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

    /// Takes the keys of `group` and records the purge.
    fn take_group(&self, group: u64) -> Vec<u64> {
        let mut g = self.inner.lock();
        g.purge_seq = g.purge_seq.wrapping_add(1);
        let seq = g.purge_seq;
        if g.recent.len() >= RECENT_PURGES {
            g.recent.pop_front();
        }
        g.recent.push_back((seq, group));
        g.groups
            .get(&group)
            .map(|set| set.iter().copied().collect())
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
        let mut purged = 0;
        for key in keys {
            if let Some((_, object)) = self.cache.remove_if(&key, |o| o.groups().contains(&group)) {
                self.index.remove(key, object.id());
                purged += 1;
            }
        }
        purged
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
