//! What the store holds: complete responses, and `Vary` records that point at their variants.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, StatusCode, Version};

use crate::headers::EntityTag;
use crate::key::Variant;
use crate::policy::Policy;

/// A fixed per-object overhead added to the byte weight, so that many tiny objects are not free.
const OBJECT_OVERHEAD: u64 = 256;

/// A complete response held by the cache, with what is needed to reuse it.
///
/// Immutable: refreshing (a 304) stores a new `StoredResponse` sharing the same body bytes.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub(crate) id: u64,
    pub(crate) key: Box<str>,
    pub(crate) variant: Option<Variant>,
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) policy: Policy,
    pub(crate) etag: Option<EntityTag>,
    /// For `If-Modified-Since`: `Last-Modified`, else `Date`, else the time of receipt (§4.3.2).
    pub(crate) last_modified: SystemTime,
    pub(crate) has_last_modified: bool,
    pub(crate) tags: Box<[Box<str>]>,
    pub(crate) groups: Box<[u64]>,
    pub(crate) weight: u64,
    /// When it was last stored or served (for warm-restart snapshots, which keep the most
    /// recently used entries).
    pub(crate) last_used: LastUsed,
}

/// A whole-second wall-clock stamp of an object's last use. The store (`quick_cache`) exposes
/// neither per-object hit counts nor its hot/cold classification, so recency is tracked here.
/// Hits write it only when the second changed: a hot object costs one relaxed load per hit
/// and one store per second, not a contended write on every hit.
#[derive(Debug, Default)]
pub(crate) struct LastUsed(std::sync::atomic::AtomicU64);

impl LastUsed {
    pub(crate) fn at(now: SystemTime) -> Self {
        Self(std::sync::atomic::AtomicU64::new(secs(now)))
    }

    pub(crate) fn touch(&self, now: SystemTime) {
        let s = secs(now);
        if self.0.load(std::sync::atomic::Ordering::Relaxed) < s {
            self.0.store(s, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Clone for LastUsed {
    fn clone(&self) -> Self {
        Self(std::sync::atomic::AtomicU64::new(self.get()))
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl StoredResponse {
    /// The primary cache key (`scheme://host/path?query`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The stored status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stored header fields (without `Age`, hop-by-hop fields and, unless exposed, surrogate
    /// tags).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The stored body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The surrogate tags this response was stored with.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|t| &**t)
    }

    /// Bytes charged against the store's capacity: body, headers and a fixed overhead.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// Purge groups (the URL and each tag, hashed) this object belongs to.
    pub fn groups(&self) -> &[u64] {
        &self.groups
    }

    /// A process-unique id: a replaced object never shares it with its successor.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The selecting header fields of this variant (empty without `Vary`).
    pub fn vary(&self) -> &[HeaderName] {
        self.variant.as_ref().map(|v| &*v.names).unwrap_or(&[])
    }

    pub(crate) fn compute_weight(headers: &HeaderMap, body_len: usize, key: &str) -> u64 {
        let header_bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        OBJECT_OVERHEAD
            .saturating_add(u64::try_from(header_bytes).unwrap_or(u64::MAX))
            .saturating_add(u64::try_from(body_len).unwrap_or(u64::MAX))
            .saturating_add(u64::try_from(key.len()).unwrap_or(u64::MAX))
    }
}

/// The record kept under a URL whose responses carry `Vary`: it names the selecting fields, and
/// the variants are stored under keys derived from them (RFC 9111 §4.1).
#[derive(Debug)]
pub struct VaryRecord {
    pub(crate) id: u64,
    pub(crate) key: Box<str>,
    pub(crate) names: Box<[HeaderName]>,
    pub(crate) groups: Box<[u64]>,
}

impl VaryRecord {
    /// The primary cache key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The selecting header fields.
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }
}

/// One object in a [`Storage`](crate::Storage).
#[derive(Debug, Clone)]
pub enum Object {
    /// A complete response.
    Response(Arc<StoredResponse>),
    /// A `Vary` record for a URL.
    Vary(Arc<VaryRecord>),
}

impl Object {
    /// Bytes charged against capacity.
    pub fn weight(&self) -> u64 {
        match self {
            Object::Response(r) => r.weight.max(1),
            Object::Vary(v) => OBJECT_OVERHEAD + u64::try_from(v.key.len()).unwrap_or(u64::MAX),
        }
    }

    /// Purge groups the object belongs to.
    pub fn groups(&self) -> &[u64] {
        match self {
            Object::Response(r) => &r.groups,
            Object::Vary(v) => &v.groups,
        }
    }

    /// The object's process-unique id.
    pub fn id(&self) -> u64 {
        match self {
            Object::Response(r) => r.id,
            Object::Vary(v) => v.id,
        }
    }

    /// The primary key the object was stored under.
    pub fn key(&self) -> &str {
        match self {
            Object::Response(r) => &r.key,
            Object::Vary(v) => &v.key,
        }
    }
}
