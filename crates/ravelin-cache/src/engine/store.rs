//! Storage: writing completed responses under their keys with consistent `Vary` records,
//! removing entries, purging URLs, and invalidation after unsafe requests (§4.4).

use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use ravelin_http::canonical_path_lenient;

use crate::entry::{Object, StoredResponse, VaryRecord};
use crate::key::{key_of, primary_key};

use super::{Engine, Invalidate};

impl Engine {
    // === The store ===

    /// Completes a recorded response and stores it. Returns whether it was stored.
    pub(crate) fn commit(&self, mut proto: StoredResponse, body: Bytes) -> bool {
        // The stored body's length is known: say so, as the origin's framing (chunked, or a
        // length added only on the wire) is not stored (RFC 9110 §8.6; never on a 204).
        if proto.status != StatusCode::NO_CONTENT
            && !proto.headers.contains_key(header::CONTENT_LENGTH)
        {
            proto
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
        }
        proto.weight = StoredResponse::compute_weight(&proto.headers, body.len(), &proto.key);
        proto.body = body;
        if proto.body.len() as u64 > self.s.cfg.max_object_bytes {
            return false;
        }
        let entry = Arc::new(proto);
        self.put(&entry);
        #[cfg(feature = "redis")]
        self.share(&entry);
        true
    }

    /// Stores a response under its key, keeping the `Vary` record of its URL consistent (§4.1).
    pub(crate) fn put(&self, entry: &Arc<StoredResponse>) {
        let primary = self.hasher.primary(&entry.key);
        let url_group = self.hasher.url_group(&entry.key);
        let existing = self.store.get(primary);
        match &entry.variant {
            None => {
                if let Some(Object::Vary(_)) = existing {
                    // The URL stopped varying: its variants are obsolete.
                    self.store.purge_group(url_group);
                }
                self.store.insert(primary, Object::Response(entry.clone()));
            }
            Some(variant) => {
                let same_shape = matches!(&existing, Some(Object::Vary(v)) if *v.key == *entry.key && v.names == variant.names);
                if !same_shape {
                    if existing.is_some() {
                        // A different set of selecting fields makes the old variants unreachable.
                        self.store.purge_group(url_group);
                    }
                    let record = VaryRecord {
                        id: self.next_id(),
                        key: entry.key.clone(),
                        names: variant.names.clone(),
                        groups: Box::new([url_group]),
                    };
                    self.store.insert(primary, Object::Vary(Arc::new(record)));
                }
                self.store.insert(
                    self.hasher.variant(&entry.key, variant),
                    Object::Response(entry.clone()),
                );
            }
        }
        self.stats.stored();
        let u = self.store.usage();
        self.stats.usage(u.entries, u.bytes);
    }

    pub(super) fn remove_entry(&self, entry: &StoredResponse) {
        let key = match &entry.variant {
            Some(v) => self.hasher.variant(&entry.key, v),
            None => self.hasher.primary(&entry.key),
        };
        self.store.remove(key, Some(entry.id));
    }

    /// Removes everything stored for a URL (all variants).
    pub(crate) fn purge_key(&self, key: &str) -> usize {
        self.store.purge_group(self.hasher.url_group(key))
    }

    /// §4.4: after a non-error response to an unsafe request, invalidate the target URI and the
    /// same-origin `Location` and `Content-Location` URIs.
    pub(crate) fn invalidate(&self, inv: &Invalidate, response: &HeaderMap) {
        self.purge_key(&inv.key);
        self.stats.invalidation();
        let mut invalidated = vec![inv.key.to_string()];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(target) = response.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(key) = self.same_origin_key(inv, target)
                && key != inv.key
            {
                self.purge_key(&key);
                self.stats.invalidation();
                invalidated.push(key.to_string());
            }
        }
        // And in the shared tier, or the next miss anywhere would bring the old copy back.
        self.spawn_tier_delete(invalidated);
    }

    /// The cache key of a `Location`-style reference, if it is on the request's origin. With a
    /// request identity, paths are canonicalised as the ingress stage does, so they compare
    /// equal to the keys of stored responses.
    pub(super) fn same_origin_key(&self, inv: &Invalidate, reference: &str) -> Option<String> {
        let cfg = &self.s.cfg.key;
        let (scheme, rest) = inv.key.split_once("://")?;
        let host = rest.split('/').next()?;
        let reference = reference.trim();
        let absolute = reference.starts_with("//")
            || reference.split_once(':').is_some_and(|(scheme, _)| {
                !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            });
        if absolute {
            let target: Uri = if reference.starts_with("//") {
                format!("{scheme}:{reference}").parse().ok()?
            } else {
                reference.parse().ok()?
            };
            let key = match &inv.identity {
                Some(_) => key_of(
                    target.scheme_str().unwrap_or(scheme),
                    target.authority().map(|a| a.as_str()).unwrap_or_default(),
                    &canonical_path_lenient(target.path()),
                    target.query(),
                    cfg,
                ),
                None => primary_key(&target, &HeaderMap::new(), cfg, None),
            };
            let (t_scheme, t_rest) = key.split_once("://")?;
            let t_host = t_rest.split('/').next()?;
            return (t_scheme == scheme && t_host == host).then_some(key);
        }
        // A relative reference: resolve against the request's path (RFC 3986 §5.2; dot segments
        // are removed only where the keys are canonical, which is enough for equality with them).
        if let Some(id) = &inv.identity {
            let (path, query) = match reference.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (reference, None),
            };
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                let base = id.canonical_path();
                let dir = base.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                format!("{dir}/{path}")
            };
            let authority = id.authority().map(|a| a.as_str()).unwrap_or_default();
            return Some(key_of(
                id.scheme().as_str(),
                authority,
                &canonical_path_lenient(&path),
                query,
                cfg,
            ));
        }
        let mut host_headers = HeaderMap::new();
        if let Some(h) = &inv.host {
            host_headers.insert(header::HOST, h.clone());
        }
        let path_and_query = if reference.starts_with('/') {
            reference.to_string()
        } else {
            let base = inv.uri.path();
            let dir = base.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            format!("{dir}/{reference}")
        };
        let mut parts = inv.uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse().ok()?);
        let uri = Uri::from_parts(parts).ok()?;
        Some(primary_key(&uri, &host_headers, cfg, None))
    }
}
