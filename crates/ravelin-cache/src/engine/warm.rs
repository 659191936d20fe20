//! Warm restarts: choosing the entries a snapshot keeps, and re-admitting the entries of one
//! read back under this cache's rules (through the shared tier's path: see `shared.rs`).

use std::sync::Arc;

use http::HeaderMap;

use crate::entry::{Object, StoredResponse};
use crate::policy::RequestDirectives;
use crate::shared_tier::SharedEntry;
use crate::status::Fwd;
use crate::warm::SnapshotLimits;

use super::{Engine, Forward};

/// The entries chosen for a snapshot, encoded, and how many were left out.
pub(crate) struct Chosen {
    pub(crate) entries: Vec<(Box<str>, Vec<u8>)>,
    pub(crate) bytes: u64,
    pub(crate) skipped: u64,
}

impl Engine {
    /// The most recently used fresh entries, encoded, within `limits`: by recency, each entry
    /// that still fits is taken (a large one past the byte bound is skipped, smaller ones after
    /// it may still fit).
    pub(crate) fn choose_for_snapshot(&self, limits: SnapshotLimits) -> Chosen {
        let now = self.now();
        let mut responses: Vec<Arc<StoredResponse>> = Vec::new();
        let mut skipped = 0u64;
        for object in self.store.objects() {
            if let Object::Response(r) = object {
                // Stale now would be stale at reload; a 304-less HEAD record has no body.
                if r.policy.ttl(now) > 0 {
                    responses.push(r);
                } else {
                    skipped += 1;
                }
            }
        }
        responses.sort_by_key(|r| std::cmp::Reverse(r.last_used.get()));
        let mut chosen = Chosen {
            entries: Vec::new(),
            bytes: 0,
            skipped,
        };
        for r in responses {
            if chosen.entries.len() >= limits.max_entries {
                chosen.skipped += 1;
                continue;
            }
            let room = limits.max_bytes.saturating_sub(chosen.bytes);
            let limit =
                usize::try_from(room.saturating_sub(8 + r.key.len() as u64)).unwrap_or(usize::MAX);
            match to_shared(&r).encode(r.key.as_bytes(), limit) {
                Ok(bytes) => {
                    chosen.bytes += 8 + r.key.len() as u64 + bytes.len() as u64;
                    chosen.entries.push((r.key.clone(), bytes));
                }
                Err(_) => chosen.skipped += 1,
            }
        }
        chosen
    }

    /// Stores an entry read from a snapshot if this cache's rules allow it and it is still
    /// fresh now; returns whether it was stored.
    pub(crate) fn readmit(&self, key: &str, e: SharedEntry) -> bool {
        let primary = self.hasher.primary(key);
        let fwd = Forward {
            key: key.into(),
            primary,
            fill_key: primary,
            candidate: None,
            fwd: Fwd::UriMiss,
            req: RequestDirectives::default(),
            coalesce: false,
            // The request that fetched it passed §3.5 when it was stored; the entry itself
            // must still be storable for a plain request here.
            authorization: false,
            credentials: false,
            client_conditionals: HeaderMap::new(),
            sie_timeout: None,
            collapsed: None,
            range_fill: false,
        };
        let Some(stored) = self.stored_from_shared(&fwd, e) else {
            return false;
        };
        if stored.policy.ttl(self.now()) <= 0 {
            return false;
        }
        self.put(&Arc::new(stored));
        true
    }
}

/// A stored response as a shared entry (the encoding both tiers use).
pub(crate) fn to_shared(entry: &StoredResponse) -> SharedEntry {
    let p = &entry.policy;
    SharedEntry {
        status: entry.status,
        headers: entry.headers.clone(),
        body: entry.body.clone(),
        // The policy keeps the corrected initial age, which already counts the response
        // delay; the reader only needs `response_time` with it.
        request_time: p.response_time,
        response_time: p.response_time,
        corrected_initial_age: p.corrected_initial_age,
        vary: entry
            .variant
            .as_ref()
            .map(|v| {
                v.names
                    .iter()
                    .zip(v.values.iter())
                    .map(|(n, v)| {
                        (
                            n.clone(),
                            v.as_ref().map(|b| bytes::Bytes::copy_from_slice(b)),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        tags: entry.tags.iter().map(|t| t.to_string()).collect(),
    }
}
