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
///
/// With a shared tier (`[cache.shared_tier]`), the purges also delete from Redis, in the
/// background (the counts are the local ones); the `purge_shared_*` methods do that part alone
/// and wait for it, for callers that must order it before something else (the edge deletes from
/// the tier before publishing a purge to the other proxies, so none of them refills from Redis
/// in between). A handle made [`local_only`](Self::local_only) never touches the tier.
#[derive(Clone)]
pub struct CacheHandle {
    pub(crate) engine: Arc<Engine>,
    /// Purges leave the shared tier alone.
    local: bool,
}

impl CacheHandle {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            local: false,
        }
    }

    /// A handle whose purges apply to this proxy's store only, never to the shared tier: for
    /// purges another proxy already deleted from the tier (the purge bus's entries), or for a
    /// caller that deletes from the tier itself with the `purge_shared_*` methods.
    pub fn local_only(&self) -> CacheHandle {
        Self {
            engine: self.engine.clone(),
            local: true,
        }
    }

    /// The shared tier, when `[cache.shared_tier]` is configured (for `/status`).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn shared_tier(&self) -> Option<&crate::shared_tier::SharedTier> {
        self.engine.shared.as_ref()
    }

    /// Deletes a URL's entry from the shared tier (both spellings of the path, as
    /// [`purge_url`](Self::purge_url) does locally) and waits for Redis, at most the tier's
    /// purge bound. `Ok(0)` without a tier or for a URL that cannot be purged.
    ///
    /// # Errors
    /// Redis did not answer (counted and logged by the tier).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn purge_shared_url(
        &self,
        url: &str,
    ) -> Result<u64, crate::shared_tier::SharedTierError> {
        let Some(tier) = &self.engine.shared else {
            return Ok(0);
        };
        let Ok((key, canonical)) = self.url_keys(url) else {
            return Ok(0);
        };
        let mut n = u64::from(tier.purge_key(key.as_bytes()).await?);
        if let Some(c) = canonical {
            n += u64::from(tier.purge_key(c.as_bytes()).await?);
        }
        Ok(n)
    }

    /// Deletes every shared-tier entry tagged `tag` and waits for Redis. `Ok(0)` without a tier.
    ///
    /// # Errors
    /// Redis did not answer.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn purge_shared_tag(
        &self,
        tag: &str,
    ) -> Result<u64, crate::shared_tier::SharedTierError> {
        match &self.engine.shared {
            Some(tier) => tier.purge_tag(tag).await,
            None => Ok(0),
        }
    }

    /// Deletes the shared-tier entry under a primary key and waits for Redis. `Ok(0)` without
    /// a tier.
    ///
    /// # Errors
    /// Redis did not answer.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn purge_shared_key(
        &self,
        key: &str,
    ) -> Result<u64, crate::shared_tier::SharedTierError> {
        match &self.engine.shared {
            Some(tier) => tier.purge_key(key.as_bytes()).await.map(u64::from),
            None => Ok(0),
        }
    }

    /// Deletes from the shared tier in the background (unless this handle is local only).
    #[cfg(feature = "redis")]
    fn spawn_shared_purge(&self, keys: Vec<String>, tag: Option<String>) {
        if self.local || self.engine.shared.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                cache = self.name(),
                "cache purge: no runtime to delete from the shared tier; purged locally only"
            );
            return;
        };
        let handle = self.clone();
        let Some(tier) = self.engine.shared.clone() else {
            return;
        };
        // The purge's time is now, when it was issued: its tombstones refuse fills that began
        // before it, not those that began while this task waited to run.
        let at = std::time::SystemTime::now();
        runtime.spawn(async move {
            let mut failed = None;
            for key in &keys {
                if let Err(e) = tier.purge_key_at(key.as_bytes(), at).await {
                    failed = Some(e);
                }
            }
            if let Some(tag) = &tag
                && let Err(e) = tier.purge_tag_at(tag, at).await
            {
                failed = Some(e);
            }
            if let Some(e) = failed {
                tracing::warn!(
                    cache = handle.name(),
                    error = %e,
                    "cache purge: applied locally, but the shared tier could not be purged"
                );
            }
        });
    }

    #[cfg(not(feature = "redis"))]
    fn spawn_shared_purge(&self, _keys: Vec<String>, _tag: Option<String>) {}

    /// The primary key of an absolute URL, and its canonical spelling when that differs.
    fn url_keys(&self, url: &str) -> Result<(String, Option<String>), PurgeError> {
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
        let canonical = (canonical != key).then_some(canonical);
        Ok((key, canonical))
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
        let (key, canonical) = self.url_keys(url)?;
        let mut n = self.engine.purge_key(&key);
        if let Some(c) = &canonical {
            n = n.saturating_add(self.engine.purge_key(c));
        }
        self.engine.stats.purge(false, n as u64);
        self.refresh_usage();
        self.spawn_shared_purge(std::iter::once(key).chain(canonical).collect(), None);
        Ok(n)
    }

    /// Removes everything stored under a primary cache key, as reported by
    /// [`key_for`](Self::key_for) or a stored response's [`key`](crate::StoredResponse::key).
    pub fn purge_key(&self, key: &str) -> usize {
        let n = self.engine.purge_key(key);
        self.engine.stats.purge(false, n as u64);
        self.refresh_usage();
        self.spawn_shared_purge(vec![key.to_string()], None);
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
        self.spawn_shared_purge(Vec::new(), Some(tag.to_string()));
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
            .field("local_only", &self.local)
            .finish()
    }
}
