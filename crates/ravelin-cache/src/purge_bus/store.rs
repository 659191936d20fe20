//! [`ResettableStore`]: the in-memory store, emptied at once when the purge bus lost entries.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::entry::Object;
use crate::store::{MemoryStore, Storage, StorageUsage};

/// A [`MemoryStore`] that can be emptied in one step ([`clear`](Self::clear)): a fresh store is
/// swapped in. What the purge bus uses when the stream lost entries it should have applied
/// (then it cannot know what to purge, so it purges everything).
///
/// Reads go through one lock-free [`ArcSwap`] load. Give it to
/// [`CacheLayerBuilder::storage`](crate::CacheLayerBuilder::storage) with the layer's own
/// capacity settings:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ravelin_cache::{CacheConfig, CacheLayer, purge_bus::ResettableStore};
/// let cfg = CacheConfig::default();
/// let store = ResettableStore::for_config(&cfg);
/// let layer = CacheLayer::builder().config(cfg).storage(store.clone()).build()?;
/// assert_eq!(store.clear(), 0);
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ResettableStore {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<MemoryStore>,
    capacity_bytes: u64,
    max_object_bytes: u64,
    /// Evictions counted by stores since swapped out.
    evicted_before: AtomicU64,
    hook: Arc<dyn Fn(u64) + Send + Sync>,
}

impl ResettableStore {
    /// A store of `capacity_bytes` for objects up to `max_object_bytes`; evictions are counted in
    /// `ravelin_cache_evictions_total{cache=<name>}`, as the layer's own store does.
    pub fn new(name: &str, capacity_bytes: u64, max_object_bytes: u64) -> Self {
        let evictions =
            metrics::counter!("ravelin_cache_evictions_total", "cache" => name.to_string());
        let hook: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| evictions.increment(n));
        let first = MemoryStore::with_eviction_hook(
            capacity_bytes,
            max_object_bytes,
            Some(Arc::clone(&hook)),
        );
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(first),
                capacity_bytes,
                max_object_bytes,
                evicted_before: AtomicU64::new(0),
                hook,
            }),
        }
    }

    /// A store sized as `cfg` sizes the layer's own.
    pub fn for_config(cfg: &crate::CacheConfig) -> Self {
        Self::new(&cfg.name, cfg.max_capacity_bytes, cfg.max_object_bytes)
    }

    /// Empties the store; returns how many objects it held. A response being recorded when it is
    /// called is stored in the new, empty store when its body completes.
    pub fn clear(&self) -> u64 {
        let fresh = MemoryStore::with_eviction_hook(
            self.inner.capacity_bytes,
            self.inner.max_object_bytes,
            Some(Arc::clone(&self.inner.hook)),
        );
        let old = self.inner.current.swap(Arc::new(fresh));
        let usage = old.usage();
        self.inner
            .evicted_before
            .fetch_add(usage.evictions, Ordering::Relaxed);
        usage.entries
    }
}

impl Storage for ResettableStore {
    fn get(&self, key: u64) -> Option<Object> {
        self.inner.current.load().get(key)
    }

    fn insert(&self, key: u64, object: Object) {
        self.inner.current.load().insert(key, object);
    }

    fn remove(&self, key: u64, id: Option<u64>) -> bool {
        self.inner.current.load().remove(key, id)
    }

    fn purge_group(&self, group: u64) -> usize {
        self.inner.current.load().purge_group(group)
    }

    fn objects(&self) -> Vec<Object> {
        self.inner.current.load().objects()
    }

    fn usage(&self) -> StorageUsage {
        let mut usage = self.inner.current.load().usage();
        usage.evictions = usage
            .evictions
            .saturating_add(self.inner.evicted_before.load(Ordering::Relaxed));
        usage
    }
}

impl fmt::Debug for ResettableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResettableStore")
            .field("usage", &self.usage())
            .finish()
    }
}
