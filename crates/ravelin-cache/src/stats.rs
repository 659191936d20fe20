//! Counters: kept as atomics for [`CacheHandle::stats`](crate::CacheHandle::stats) and mirrored
//! to the `metrics` facade (the binary picks the exporter).
//!
//! Metric names (all labelled `cache=<name>`):
//! `ravelin_cache_hits_total`, `ravelin_cache_misses_total`,
//! `ravelin_cache_stale_served_total{reason=while-revalidate|if-error|max-stale}`,
//! `ravelin_cache_coalesced_total{outcome=shared|alone}`, `ravelin_cache_stores_total`,
//! `ravelin_cache_evictions_total`, `ravelin_cache_purges_total{kind=url|tag}`,
//! `ravelin_cache_purged_objects_total`, `ravelin_cache_invalidations_total`,
//! `ravelin_cache_bypassed_total`, `ravelin_cache_internal_errors_total`,
//! `ravelin_cache_shared_hits_total` (local misses answered by the shared tier),
//! and gauges `ravelin_cache_stored_bytes`, `ravelin_cache_entries`.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge};

/// Why a stale response was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaleReason {
    WhileRevalidate,
    IfError,
    MaxStale,
}

/// A snapshot of a cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Requests answered from the store at lookup (fresh, or stale where allowed).
    pub hits: u64,
    /// Cacheable requests that found nothing usable at lookup (miss, stale, or forced by the
    /// request); those answered by another request's fetch are also counted in `coalesced`.
    pub misses: u64,
    /// Stale responses served during `stale-while-revalidate`.
    pub stale_while_revalidate: u64,
    /// Stale responses served because the origin failed (`stale-if-error`).
    pub stale_if_error: u64,
    /// Stale responses served because the request allowed it (`max-stale`).
    pub stale_max_stale: u64,
    /// Requests that waited on another request's fetch and were answered by it.
    pub coalesced: u64,
    /// Local misses answered from the shared tier (`[cache.shared_tier]`), also counted in
    /// `misses` (the request missed locally) and served with `Cache-Status: …; detail=shared`.
    pub shared_hits: u64,
    /// Requests that waited on another request's fetch, then had to go to the origin themselves
    /// (timeout, failure, or a response that could not be shared).
    pub coalesced_alone: u64,
    /// Responses stored (including refreshes after a 304).
    pub stores: u64,
    /// Bytes held right now by responses being recorded into the store (bounded by
    /// `max_recording_bytes`).
    pub recording_bytes: u64,
    /// Background revalidations started.
    pub background_revalidations: u64,
    /// Objects evicted to make room.
    pub evictions: u64,
    /// Purge calls.
    pub purges: u64,
    /// Objects removed by purges.
    pub purged_objects: u64,
    /// URIs invalidated by unsafe methods (RFC 9111 §4.4).
    pub invalidations: u64,
    /// Requests passed through untouched because the cache was switched off.
    pub bypassed: u64,
    /// Internal errors (a panic in cache code, a failed store); each request affected bypassed
    /// the cache.
    pub internal_errors: u64,
    /// Objects in the store.
    pub entries: u64,
    /// Bytes in the store.
    pub stored_bytes: u64,
    /// Shared fetches in flight.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
struct Atomics {
    hits: AtomicU64,
    misses: AtomicU64,
    swr: AtomicU64,
    sie: AtomicU64,
    max_stale: AtomicU64,
    coalesced: AtomicU64,
    coalesced_alone: AtomicU64,
    shared_hits: AtomicU64,
    stores: AtomicU64,
    background: AtomicU64,
    purges: AtomicU64,
    purged_objects: AtomicU64,
    invalidations: AtomicU64,
    bypassed: AtomicU64,
    internal_errors: AtomicU64,
}

#[derive(Debug)]
struct Handles {
    hits: Counter,
    misses: Counter,
    swr: Counter,
    sie: Counter,
    max_stale: Counter,
    coalesced: Counter,
    coalesced_alone: Counter,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    shared_hits: Counter,
    stores: Counter,
    background: Counter,
    evictions: Counter,
    purges_url: Counter,
    purges_tag: Counter,
    purged_objects: Counter,
    invalidations: Counter,
    bypassed: Counter,
    internal_errors: Counter,
    stored_bytes: Gauge,
    entries: Gauge,
}

/// The counters of one cache.
#[derive(Debug)]
pub(crate) struct Stats {
    a: Atomics,
    m: Handles,
}

fn bump(a: &AtomicU64, c: &Counter, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
    c.increment(n);
}

impl Stats {
    pub(crate) fn new(name: &str) -> Self {
        let label = name.to_string();
        let c = |n: &'static str| metrics::counter!(n, "cache" => label.clone());
        let stale = |reason: &'static str| metrics::counter!("ravelin_cache_stale_served_total", "cache" => label.clone(), "reason" => reason);
        let coalesced = |outcome: &'static str| metrics::counter!("ravelin_cache_coalesced_total", "cache" => label.clone(), "outcome" => outcome);
        let purges = |kind: &'static str| metrics::counter!("ravelin_cache_purges_total", "cache" => label.clone(), "kind" => kind);
        Self {
            a: Atomics::default(),
            m: Handles {
                hits: c("ravelin_cache_hits_total"),
                misses: c("ravelin_cache_misses_total"),
                swr: stale("while-revalidate"),
                sie: stale("if-error"),
                max_stale: stale("max-stale"),
                coalesced: coalesced("shared"),
                coalesced_alone: coalesced("alone"),
                shared_hits: c("ravelin_cache_shared_hits_total"),
                stores: c("ravelin_cache_stores_total"),
                background: c("ravelin_cache_background_revalidations_total"),
                evictions: c("ravelin_cache_evictions_total"),
                purges_url: purges("url"),
                purges_tag: purges("tag"),
                purged_objects: c("ravelin_cache_purged_objects_total"),
                invalidations: c("ravelin_cache_invalidations_total"),
                bypassed: c("ravelin_cache_bypassed_total"),
                internal_errors: c("ravelin_cache_internal_errors_total"),
                stored_bytes: metrics::gauge!("ravelin_cache_stored_bytes", "cache" => label.clone()),
                entries: metrics::gauge!("ravelin_cache_entries", "cache" => label.clone()),
            },
        }
    }

    pub(crate) fn hit(&self) {
        bump(&self.a.hits, &self.m.hits, 1);
    }
    pub(crate) fn miss(&self) {
        bump(&self.a.misses, &self.m.misses, 1);
    }
    pub(crate) fn stale(&self, reason: StaleReason) {
        match reason {
            StaleReason::WhileRevalidate => bump(&self.a.swr, &self.m.swr, 1),
            StaleReason::IfError => bump(&self.a.sie, &self.m.sie, 1),
            StaleReason::MaxStale => bump(&self.a.max_stale, &self.m.max_stale, 1),
        }
    }
    pub(crate) fn coalesced(&self, shared: bool) {
        if shared {
            bump(&self.a.coalesced, &self.m.coalesced, 1);
        } else {
            bump(&self.a.coalesced_alone, &self.m.coalesced_alone, 1);
        }
    }
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn shared_hit(&self) {
        bump(&self.a.shared_hits, &self.m.shared_hits, 1);
    }
    pub(crate) fn stored(&self) {
        bump(&self.a.stores, &self.m.stores, 1);
    }
    pub(crate) fn background(&self) {
        bump(&self.a.background, &self.m.background, 1);
    }
    pub(crate) fn evicted(&self, n: u64) {
        self.m.evictions.increment(n);
    }
    pub(crate) fn purge(&self, tag: bool, objects: u64) {
        self.a.purges.fetch_add(1, Ordering::Relaxed);
        if tag {
            self.m.purges_tag.increment(1);
        } else {
            self.m.purges_url.increment(1);
        }
        bump(&self.a.purged_objects, &self.m.purged_objects, objects);
    }
    pub(crate) fn invalidation(&self) {
        bump(&self.a.invalidations, &self.m.invalidations, 1);
    }
    pub(crate) fn bypassed(&self) {
        bump(&self.a.bypassed, &self.m.bypassed, 1);
    }
    pub(crate) fn internal_error(&self) {
        bump(&self.a.internal_errors, &self.m.internal_errors, 1);
    }
    pub(crate) fn usage(&self, entries: u64, bytes: u64) {
        // Gauges take f64; precision loss above 2^53 bytes is irrelevant.
        self.m.entries.set(entries as f64);
        self.m.stored_bytes.set(bytes as f64);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: l(&self.a.hits),
            misses: l(&self.a.misses),
            stale_while_revalidate: l(&self.a.swr),
            stale_if_error: l(&self.a.sie),
            stale_max_stale: l(&self.a.max_stale),
            coalesced: l(&self.a.coalesced),
            coalesced_alone: l(&self.a.coalesced_alone),
            shared_hits: l(&self.a.shared_hits),
            stores: l(&self.a.stores),
            // Filled in by the handle from the recording budget.
            recording_bytes: 0,
            background_revalidations: l(&self.a.background),
            evictions: 0,
            purges: l(&self.a.purges),
            purged_objects: l(&self.a.purged_objects),
            invalidations: l(&self.a.invalidations),
            bypassed: l(&self.a.bypassed),
            internal_errors: l(&self.a.internal_errors),
            entries: 0,
            stored_bytes: 0,
            in_flight: 0,
        }
    }
}
