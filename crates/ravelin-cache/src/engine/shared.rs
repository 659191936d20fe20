//! The shared tier (`[cache.shared_tier]`, feature `redis`): turning an entry read from Redis
//! into a local stored response under this cache's own rules, and writing stored responses
//! through.
//!
//! An entry from the tier is treated as a response from the origin that arrived at the
//! writer's `response_time`: the freshness lifetime, heuristics and stale windows are this
//! cache's (computed from the stored fields), the age is the writer's `corrected_initial_age`
//! plus the time since, and storability is checked again with the local rules (a writer with
//! `set_cookie = "replay"` does not make this cache replay cookies).

#[cfg(feature = "redis")]
use std::sync::Arc;
#[cfg(feature = "redis")]
use std::time::Duration;

#[cfg(feature = "redis")]
use http::HeaderMap;
use http::StatusCode;
use http::header::{self, HeaderValue};

use crate::config::SetCookie;
use crate::entry::StoredResponse;
use crate::headers::{self, Vary};
use crate::key::Variant;
#[cfg(feature = "redis")]
use crate::policy::{Assessment, assess, stale_if_error_allowed};
use crate::policy::{Policy, storable};
use crate::shared_tier::SharedEntry;
#[cfg(feature = "redis")]
use crate::stats::StaleReason;
#[cfg(feature = "redis")]
use crate::status::{CacheStatus, Fwd};

#[cfg(feature = "redis")]
use super::Served;
use super::respond::{MAX_TAG_LEN, last_modified_of};
use super::{Engine, Forward};

#[cfg(feature = "redis")]
/// `Cache-Status: …; detail=shared`: answered from the shared tier.
pub(crate) const SHARED: &str = "shared";

#[cfg(feature = "redis")]
/// What a lookup in the shared tier found that this request may use.
pub(crate) enum SharedUse {
    /// Serve it (fresh, or stale where allowed); maybe refresh it in the background.
    Serve(Served, Option<Box<Forward>>),
    /// Stored locally but stale: validate it with the origin.
    Validate(Arc<StoredResponse>),
}

impl Engine {
    /// Deletes `keys` from the shared tier in the background (unsafe-method invalidation,
    /// RFC 9111 §4.4): best effort, a failure logged by the tier.
    #[cfg(feature = "redis")]
    pub(crate) fn spawn_tier_delete(&self, keys: Vec<String>) {
        let Some(tier) = self.shared.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let at = std::time::SystemTime::now();
        runtime.spawn(async move {
            for key in keys {
                // A failure is counted and logged (rate-limited) by the tier: requests cause
                // invalidations, so no line per failure here.
                let _ = tier.purge_key_at(key.as_bytes(), at).await;
            }
        });
    }

    /// Without Redis there is no shared tier to delete from.
    #[cfg(not(feature = "redis"))]
    pub(crate) fn spawn_tier_delete(&self, _keys: Vec<String>) {}

    /// A stored response rebuilt from a shared entry, with this cache's rules; `None` when it
    /// may not be stored (or used) here. The caller checked [`SharedEntry::selects`].
    pub(crate) fn stored_from_shared(
        &self,
        fwd: &Forward,
        e: SharedEntry,
    ) -> Option<StoredResponse> {
        let SharedEntry {
            status,
            mut headers,
            body,
            request_time,
            response_time,
            corrected_initial_age,
            vary,
            tags,
        } = e;
        if body.len() as u64 > self.s.cfg.max_object_bytes || fwd.req.no_store {
            return None;
        }
        let eff = self.effective(&headers);
        let vary_field = headers::vary(&headers);
        storable(
            status,
            &eff,
            &headers,
            &vary_field,
            fwd.authorization,
            self.s.cfg.set_cookie,
        )
        .ok()?;
        // The entry's selecting fields must be the ones its `Vary` names.
        let variant = match vary_field {
            Vary::None if vary.is_empty() => None,
            Vary::Fields(names)
                if names.len() == vary.len()
                    && names.iter().zip(&vary).all(|(a, (b, _))| a == b) =>
            {
                Some(Variant {
                    names: names.into(),
                    values: vary
                        .into_iter()
                        .map(|(_, v)| v.map(|b| Box::<[u8]>::from(&b[..])))
                        .collect(),
                })
            }
            _ => return None,
        };
        // A value from Redis or a snapshot file is untrusted: its fields pass the same filter as
        // an origin response's before they are stored (hop-by-hop fields and what `Connection`
        // names, `Cache-Status`, `private="…"` fields, surrogate tags unless exposed), and its
        // times are never later than now (a writer ahead of this clock, or a forged value,
        // would otherwise count no resident time and stay fresh).
        let private: Vec<http::HeaderName> = match &eff.cc.private {
            Some(crate::directives::FieldScope::Fields(names)) => names.to_vec(),
            _ => Vec::new(),
        };
        headers = headers::storable_headers(
            &headers,
            &private,
            &self.s.tag_fields,
            self.s.cfg.expose_surrogate_keys,
        );
        let now = self.now();
        let response_time = response_time.min(now);
        let request_time = request_time.min(response_time);
        // The writer stored by its own rules; this cache applies its own.
        if self.s.cfg.set_cookie != SetCookie::Replay {
            headers.remove(header::SET_COOKIE);
        }
        if status != StatusCode::NO_CONTENT {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
        }
        let mut policy = Policy::new(
            status,
            &headers,
            &eff,
            request_time,
            response_time,
            self.heuristics(fwd.credentials),
            self.stale_defaults(),
        );
        // The stored fields carry no `Age`: the writer's corrected initial age stands in.
        policy.corrected_initial_age = corrected_initial_age;
        let etag = headers::etag(&headers);
        let (last_modified, has_lm) = last_modified_of(&headers, response_time);
        if !policy.reusable(etag.is_some() || has_lm) {
            return None;
        }
        let tags: Box<[Box<str>]> = tags
            .into_iter()
            .filter(|t| !t.is_empty() && t.len() <= MAX_TAG_LEN)
            .take(self.s.cfg.max_tags_per_object)
            .map(String::into_boxed_str)
            .collect();
        let groups = self.groups(&fwd.key, &tags);
        let weight = StoredResponse::compute_weight(&headers, body.len(), &fwd.key);
        Some(StoredResponse {
            id: self.next_id(),
            key: fwd.key.clone(),
            variant,
            status,
            version: http::Version::HTTP_11,
            headers,
            body,
            policy,
            etag,
            last_modified,
            has_last_modified: has_lm,
            tags,
            groups,
            weight,
            last_used: crate::entry::LastUsed::at(self.now()),
        })
    }

    #[cfg(feature = "redis")]
    /// Stores a shared entry locally and assesses it for the request as a lookup would.
    /// `None`: not usable here (a miss: the request goes to the origin).
    pub(crate) fn use_shared(
        &self,
        fwd: &Forward,
        e: SharedEntry,
        request: &HeaderMap,
    ) -> Option<SharedUse> {
        let entry = Arc::new(self.stored_from_shared(fwd, e)?);
        self.put(&entry);
        let now = self.now();
        let ttl = entry.policy.ttl(now);
        match assess(&entry.policy, &fwd.req, now) {
            Assessment::Fresh => {
                self.stats.shared_hit();
                let status = CacheStatus::hit(ttl).detail(SHARED);
                Some(SharedUse::Serve(
                    self.serve(&entry, false, request, now, status, false),
                    None,
                ))
            }
            Assessment::StaleAllowed => {
                self.stats.shared_hit();
                self.stats.stale(StaleReason::MaxStale);
                let status = CacheStatus::hit(ttl).detail(SHARED);
                Some(SharedUse::Serve(
                    self.serve(&entry, false, request, now, status, false),
                    None,
                ))
            }
            Assessment::StaleWhileRevalidate => {
                self.stats.shared_hit();
                self.stats.stale(StaleReason::WhileRevalidate);
                let status = CacheStatus::hit(ttl).detail(SHARED);
                let served = self.serve(&entry, false, request, now, status, false);
                let refresh = (!fwd.req.only_if_cached).then(|| {
                    let mut r = fwd.clone();
                    r.candidate = Some(entry.clone());
                    r.fwd = Fwd::Stale;
                    r.client_conditionals = HeaderMap::new();
                    r.sie_timeout = None;
                    r.collapsed = None;
                    Box::new(r)
                });
                Some(SharedUse::Serve(served, refresh))
            }
            Assessment::MustValidate(_) => Some(SharedUse::Validate(entry)),
        }
    }

    #[cfg(feature = "redis")]
    /// How long a validated candidate may wait for the origin before stale-if-error.
    pub(crate) fn sie_timeout_for(&self, fwd: &Forward) -> Option<Duration> {
        let c = fwd.candidate.as_ref()?;
        let t = self.s.cfg.stale_if_error_timeout?;
        stale_if_error_allowed(&c.policy, &fwd.req, self.now()).then_some(t)
    }

    #[cfg(feature = "redis")]
    /// Writes a stored response through to the shared tier (in the background), for as long as
    /// it can be used: its remaining freshness plus the longer of its stale windows.
    pub(crate) fn share(&self, entry: &StoredResponse) {
        let Some(tier) = &self.shared else { return };
        let p = &entry.policy;
        let ttl = p
            .lifetime
            .saturating_add(p.stale_while_revalidate.max(p.stale_if_error))
            .saturating_sub(p.current_age(self.now()));
        let shared = super::warm::to_shared(entry);
        let _ = tier.spawn_put(entry.key.as_bytes(), &shared, ttl);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use http::HeaderMap;

    use ravelin_primitives::clock::ManualClock;

    use super::*;
    use crate::config::{CacheConfig, Settings};
    use crate::policy::RequestDirectives;
    use crate::stats::Stats;
    use crate::status::Fwd;
    use crate::store::MemoryStore;

    const KEY: &str = "http://example.com/a";

    fn engine(cfg: CacheConfig, now: SystemTime) -> Engine {
        let stats = Arc::new(Stats::new("test"));
        Engine::new(
            Settings::new(cfg).unwrap(),
            Arc::new(MemoryStore::new(1 << 20, 1 << 16)),
            Arc::new(ManualClock::at(now)),
            stats,
            None,
        )
    }

    fn forward(e: &Engine, authorization: bool) -> Forward {
        let primary = e.hasher.primary(KEY);
        Forward {
            key: KEY.into(),
            primary,
            fill_key: primary,
            candidate: None,
            fwd: Fwd::UriMiss,
            req: RequestDirectives::default(),
            coalesce: true,
            authorization,
            credentials: authorization,
            client_conditionals: HeaderMap::new(),
            sie_timeout: None,
            collapsed: None,
            range_fill: false,
        }
    }

    fn entry(now: SystemTime, fields: &[(&'static str, &'static str)]) -> SharedEntry {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::DATE,
            HeaderValue::from_str(&crate::date::fmt_http_date(now)).unwrap(),
        );
        for (k, v) in fields {
            headers.append(*k, HeaderValue::from_static(v));
        }
        SharedEntry::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(b"hello"),
            now,
            now,
        )
    }

    #[test]
    fn the_writers_age_counts_and_local_freshness_applies() {
        let now = SystemTime::now();
        let e = engine(CacheConfig::default(), now);
        let mut shared = entry(now, &[("cache-control", "max-age=60")]);
        shared.corrected_initial_age = Duration::from_secs(50);
        shared.tags = vec!["t1".into(), String::new()];
        let stored = e.stored_from_shared(&forward(&e, false), shared).unwrap();
        assert_eq!(stored.policy.ttl(now), 10);
        assert_eq!(&*stored.tags, &["t1".into()] as &[Box<str>]);
        assert_eq!(stored.headers[header::CONTENT_LENGTH], "5");
    }

    #[test]
    fn local_storability_rules_apply_again() {
        let now = SystemTime::now();
        let e = engine(CacheConfig::default(), now);
        // A writer that replays cookies does not make this cache do so.
        let cookie = entry(
            now,
            &[("cache-control", "max-age=60"), ("set-cookie", "a=1")],
        );
        assert!(e.stored_from_shared(&forward(&e, false), cookie).is_none());
        // Authorization needs explicit permission (§3.5).
        let plain = entry(now, &[("cache-control", "max-age=60")]);
        assert!(
            e.stored_from_shared(&forward(&e, true), plain.clone())
                .is_none()
        );
        let public = entry(now, &[("cache-control", "public, max-age=60")]);
        assert!(e.stored_from_shared(&forward(&e, true), public).is_some());
        // A request's no-store.
        let mut f = forward(&e, false);
        f.req.no_store = true;
        assert!(e.stored_from_shared(&f, plain).is_none());
    }

    #[test]
    fn untrusted_fields_are_filtered_and_times_from_the_future_clamped() {
        let now = SystemTime::now();
        let e = engine(CacheConfig::default(), now);
        let mut shared = entry(
            now,
            &[
                ("cache-control", "max-age=60"),
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("transfer-encoding", "chunked"),
                ("cache-status", "forged; hit"),
                ("x-kept", "yes"),
            ],
        );
        // Written "an hour from now": it must not stay fresh for an hour and a minute.
        shared.response_time = now + Duration::from_secs(3600);
        shared.request_time = shared.response_time;
        let stored = e.stored_from_shared(&forward(&e, false), shared).unwrap();
        for name in [
            "connection",
            "x-secret",
            "transfer-encoding",
            "cache-status",
        ] {
            assert!(!stored.headers.contains_key(name), "{name} was stored");
        }
        assert_eq!(stored.headers["x-kept"], "yes");
        assert_eq!(stored.policy.ttl(now), 60);
    }

    #[test]
    fn the_vary_field_and_the_selection_must_agree() {
        let now = SystemTime::now();
        let e = engine(CacheConfig::default(), now);
        let fwd = forward(&e, false);
        let mut shared = entry(now, &[("cache-control", "max-age=60"), ("vary", "accept")]);
        assert!(e.stored_from_shared(&fwd, shared.clone()).is_none());
        shared.vary = vec![(header::ACCEPT, Some(Bytes::from_static(b"text/html")))];
        let stored = e.stored_from_shared(&fwd, shared.clone()).unwrap();
        let mut request = HeaderMap::new();
        request.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert!(stored.variant.as_ref().unwrap().matches(&request));
        shared.vary = vec![(header::ACCEPT_LANGUAGE, None)];
        assert!(e.stored_from_shared(&fwd, shared).is_none());
    }
}
