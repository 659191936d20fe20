//! [`CacheHandle`]: purging and statistics, for an admin API.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Uri};

use crate::engine::Engine;
use crate::error::PurgeError;
use crate::key::{key_of, primary_key};
use crate::stats::CacheStats;
use crate::store::StorageUsage;
use ravelin_http::canonical_path_lenient;

/// Purges and reads the counters of one cache. Cheap to clone.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = ravelin_cache::CacheLayer::builder().build()?;
/// let handle = layer.handle();
/// assert_eq!(handle.purge_url("https://example.com/a?b=1")?, 0);
/// assert_eq!(handle.purge_tag("product-7"), 0);
/// assert_eq!(handle.stats().purges, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CacheHandle {
    engine: Arc<Engine>,
}

impl CacheHandle {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        self.engine.name()
    }

    /// Removes every stored response (all `Vary` variants) for an absolute URL such as
    /// `https://example.com/a?b=1`; the URL goes through the same key normalisation as requests.
    /// Both spellings of the path are purged: as given (the key of a request that reached the
    /// cache without a [`RequestIdentity`](ravelin_http::RequestIdentity)) and canonical (the key
    /// when the ingress stage set one), so `/a/../b` and `/%62` purge `/b`. Returns how many
    /// objects were removed.
    pub fn purge_url(&self, url: &str) -> Result<usize, PurgeError> {
        let uri: Uri = url.parse().map_err(|_| PurgeError::InvalidUrl {
            url: url.to_string(),
            reason: "not a valid URI",
        })?;
        if self.engine.s.cfg.key.include_host && uri.authority().is_none() {
            return Err(PurgeError::InvalidUrl {
                url: url.to_string(),
                reason: "the cache key includes the host, so the URL must be absolute (scheme://host/path)",
            });
        }
        let cfg = &self.engine.s.cfg.key;
        let key = primary_key(&uri, &HeaderMap::new(), cfg, None);
        let canonical = key_of(
            uri.scheme_str().unwrap_or(cfg.default_scheme.as_str()),
            uri.authority().map(|a| a.as_str()).unwrap_or_default(),
            &canonical_path_lenient(uri.path()),
            uri.query(),
            cfg,
        );
        let mut n = self.engine.purge_key(&key);
        if canonical != key {
            n = n.saturating_add(self.engine.purge_key(&canonical));
        }
        self.engine.stats.purge(false, n as u64);
        self.refresh_usage();
        Ok(n)
    }

    /// Removes everything stored under a primary cache key, as reported by
    /// [`key_for`](Self::key_for) or a stored response's [`key`](crate::StoredResponse::key).
    pub fn purge_key(&self, key: &str) -> usize {
        let n = self.engine.purge_key(key);
        self.engine.stats.purge(false, n as u64);
        self.refresh_usage();
        n
    }

    /// Removes every stored response carrying a surrogate tag (`Surrogate-Key` / `Cache-Tag`).
    /// Touches only the tagged objects: purging 10,000 of them takes milliseconds.
    pub fn purge_tag(&self, tag: &str) -> usize {
        let n = self
            .engine
            .store
            .purge_group(self.engine.hasher.tag_group(tag));
        self.engine.stats.purge(true, n as u64);
        self.refresh_usage();
        n
    }

    /// The primary cache key a request maps to (for debugging and for [`purge_key`](Self::purge_key)),
    /// for a request without a [`RequestIdentity`](ravelin_http::RequestIdentity); see
    /// [`key_for_request`](Self::key_for_request).
    pub fn key_for(&self, uri: &Uri, headers: &HeaderMap) -> String {
        primary_key(uri, headers, &self.engine.s.cfg.key, None)
    }

    /// The primary cache key of a request, from its [`RequestIdentity`](ravelin_http::RequestIdentity)
    /// extension when it has one, as the cache computes it.
    pub fn key_for_request(&self, parts: &http::request::Parts) -> String {
        primary_key(
            &parts.uri,
            &parts.headers,
            &self.engine.s.cfg.key,
            parts.extensions.get::<ravelin_http::RequestIdentity>(),
        )
    }

    /// Counters and current usage.
    pub fn stats(&self) -> CacheStats {
        let mut s = self.engine.stats.snapshot();
        let u = self.engine.store.usage();
        s.entries = u.entries;
        s.stored_bytes = u.bytes;
        s.evictions = u.evictions;
        s.in_flight = self.engine.fills.len() as u64;
        s.recording_bytes = self.engine.recording.used();
        s
    }

    /// The store's usage.
    pub fn usage(&self) -> StorageUsage {
        self.engine.store.usage()
    }

    fn refresh_usage(&self) {
        let u = self.engine.store.usage();
        self.engine.stats.usage(u.entries, u.bytes);
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("name", &self.name())
            .finish()
    }
}
