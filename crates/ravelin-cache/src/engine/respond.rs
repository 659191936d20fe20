//! Response decisions: what to do with the origin's answer to a forwarded request (store,
//! update, pass, serve stale), merging a 304 or a HEAD response into the stored one, the stored
//! form of a storable response, and the headers every forwarded response gets.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::config::SetCookie;
use crate::date::fmt_http_date;
use crate::entry::StoredResponse;
use crate::headers::{self, Vary};
use crate::key::Variant;
use crate::policy::{NotStored, Policy, RequestDirectives, stale_if_error_allowed, storable};
use crate::stats::StaleReason;
use crate::status::{CacheStatus, Fwd};

use super::{
    Decision, Engine, FillOutcome, Forward, HDR_AUTHORIZATION, Invalidate, Received, Served,
    has_credentials,
};

/// Longest surrogate tag kept, in bytes.
pub(super) const MAX_TAG_LEN: usize = 256;

impl Engine {
    // === Responses ===

    /// The origin failed (an error, or a timeout waiting for it): may the stale copy stand in?
    pub(crate) fn on_error(&self, fwd: &Forward) -> Option<Served> {
        let c = fwd.candidate.as_ref()?;
        let now = self.now();
        if !stale_if_error_allowed(&c.policy, &fwd.req, now) {
            return None;
        }
        self.stats.stale(StaleReason::IfError);
        let mut status = CacheStatus::fwd(fwd.fwd).detail("stale-if-error");
        status.ttl = Some(c.policy.ttl(now));
        status.collapsed = fwd.collapsed;
        Some(self.serve(c, false, &fwd.client_conditionals, now, status, false))
    }

    /// What to do with the origin's response head (§3, §4.3.3, §4.3.4, RFC 5861).
    pub(crate) fn decide(&self, fwd: &Forward, r: &Received<'_>, request: &HeaderMap) -> Decision {
        // fwd-status is only sent where the client gets a different status (RFC 9211 §2.3).
        let mut cs = CacheStatus::fwd(fwd.fwd);
        cs.collapsed = fwd.collapsed;
        let now = r.response_time;
        let status = r.status;

        if let Some(c) = &fwd.candidate {
            if status == StatusCode::NOT_MODIFIED {
                return self.on_not_modified(fwd, c, r, cs);
            }
            // RFC 5861 §4 and the never-store-an-error-over-a-good-copy rule.
            if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
                if stale_if_error_allowed(&c.policy, &fwd.req, now) {
                    self.stats.stale(StaleReason::IfError);
                    cs.fwd_status = Some(status.as_u16());
                    let mut s = cs.detail("stale-if-error");
                    s.ttl = Some(c.policy.ttl(now));
                    return Decision::Stored {
                        served: self.serve(c, false, &fwd.client_conditionals, now, s, false),
                        outcome: FillOutcome::ServedStale,
                    };
                }
                return Decision::Pass {
                    status: cs.detail(NotStored::ErrorOverStored.as_str()),
                };
            }
        }

        if fwd.candidate.is_none() && status == StatusCode::NOT_MODIFIED {
            // A conditional miss forwarded the client's validators (§4.3.2): the 304 answers
            // the client, and is not a complete response to store (§3).
            return Decision::Pass {
                status: cs.detail(super::CONDITIONAL_MISS),
            };
        }

        match self.prepare(fwd, r, request) {
            Err(why) => Decision::Pass {
                status: cs.detail(why.as_str()),
            },
            Ok(proto) => {
                let limit = self.s.cfg.max_object_bytes;
                if r.size.is_some_and(|n| n > limit) {
                    return Decision::Pass {
                        status: cs.detail(NotStored::TooLarge.as_str()),
                    };
                }
                // A range fill is stored only with a declared length within its bound: the
                // client waits for its range behind the bytes before it.
                if fwd.range_fill {
                    match r.size {
                        None => {
                            return Decision::Pass {
                                status: cs.detail(super::RANGE_UNKNOWN_LENGTH),
                            };
                        }
                        Some(n) if n > self.s.cfg.range_fill_limit() => {
                            return Decision::Pass {
                                status: cs.detail(NotStored::TooLarge.as_str()),
                            };
                        }
                        Some(_) => {}
                    }
                }
                cs.ttl = Some(proto.policy.ttl(now));
                let not_modified = proto.status.is_success()
                    && self.not_modified(&proto, &fwd.client_conditionals);
                Decision::Record {
                    streamable: r.size.is_some(),
                    proto: Box::new(proto),
                    status: cs,
                    not_modified,
                }
            }
        }
    }

    /// §4.3.4: a 304 freshens the stored response it validates.
    fn on_not_modified(
        &self,
        fwd: &Forward,
        c: &Arc<StoredResponse>,
        r: &Received<'_>,
        mut cs: CacheStatus,
    ) -> Decision {
        let headers = r.headers;
        let now = r.response_time;
        cs.fwd_status = Some(StatusCode::NOT_MODIFIED.as_u16());
        // §4.3.4: the 304 must be about this stored response. This cache validates one stored
        // response at a time and sends only its validators (`Engine::conditionalise`), so a 304 is
        // the origin's statement that this response is current (RFC 9110 §13.1.2: the condition
        // on its entity tag or date was false). An `ETag` in the 304 is then the
        // representation's current tag (RFC 9110 §15.4.5), merged like any other field (§3.2):
        // origins relabel unchanged content (a new build, a strong tag made weak), and refusing
        // the 304 would drop a good response and send the next request to the origin for
        // nothing. §4.3.4's rule against updating with a different strong validator picks among
        // several stored responses; with the one the request named there is nothing to pick.
        // A `Last-Modified` that contradicts the stored one is still refused: the origin dates
        // a different representation than the one the cache holds.
        let matches = !headers::date_field(headers, &header::LAST_MODIFIED)
            .is_some_and(|lm| c.has_last_modified && lm != c.last_modified);
        if !matches {
            // The 304 is about some other representation: do not trust the stored one again.
            self.remove_entry(c);
            return Decision::Stored {
                served: self.serve(
                    c,
                    false,
                    &fwd.client_conditionals,
                    now,
                    cs.detail("validator-mismatch"),
                    false,
                ),
                outcome: FillOutcome::Failed,
            };
        }
        let updated = self.refreshed(c, headers, r.request_time, r.response_time, fwd.credentials);
        let entry = match updated {
            Some(u) => {
                let u = Arc::new(u);
                self.put(&u);
                #[cfg(feature = "redis")]
                self.share(&u);
                cs.stored = true;
                u
            }
            None => {
                // The merged response forbids storing now (e.g. no-store): serve it once, drop it.
                self.remove_entry(c);
                c.clone()
            }
        };
        cs.ttl = Some(entry.policy.ttl(now));
        let mut request = fwd.client_conditionals.clone();
        request.remove(header::RANGE);
        let mut served = self.serve(&entry, false, &request, now, cs, true);
        if self.s.cfg.set_cookie != SetCookie::Replay {
            // The cookie is for the client whose request was validated, never for the store.
            for v in headers.get_all(header::SET_COOKIE) {
                served.headers_mut().append(header::SET_COOKIE, v.clone());
            }
        }
        Decision::Stored {
            served,
            outcome: FillOutcome::Complete,
        }
    }

    /// The stored response with header fields updated from a 304 or a HEAD response (§3.2).
    /// `None` when the merged response may no longer be stored.
    pub(crate) fn refreshed(
        &self,
        c: &StoredResponse,
        update: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        credentials: bool,
    ) -> Option<StoredResponse> {
        let keep_tags = self.s.cfg.expose_surrogate_keys;
        let mut merged = headers::merge_updated(&c.headers, update, &self.s.tag_fields, keep_tags);
        if self.s.cfg.set_cookie != SetCookie::Replay {
            merged.remove(header::SET_COOKIE);
        }
        // RFC 9110 §6.6.1: an update without `Date` is dated when received; otherwise the stored
        // `Date` would make the just-validated response look as old as the stored one.
        if !update.contains_key(header::DATE)
            && let Ok(v) = HeaderValue::from_str(&fmt_http_date(response_time))
        {
            merged.insert(header::DATE, v);
        }
        let eff = self.effective(&merged);
        if (eff.cc.no_store && !eff.cc.must_understand)
            || eff.cc.private == Some(crate::directives::FieldScope::All)
        {
            return None;
        }
        // The policy reads the 304's Age (not stored as a field).
        let mut with_age = merged.clone();
        if let Some(age) = update.get(header::AGE) {
            with_age.insert(header::AGE, age.clone());
        }
        let policy = Policy::new(
            c.status,
            &with_age,
            &eff,
            request_time,
            response_time,
            self.heuristics(credentials),
            self.stale_defaults(),
        );
        if let Some(crate::directives::FieldScope::Fields(private)) = &eff.cc.private {
            for name in private {
                merged.remove(name);
            }
        }
        let has_tags = self.s.tag_fields.iter().any(|f| update.contains_key(f));
        let tags = if has_tags {
            headers::surrogate_tags(
                update,
                &self.s.tag_fields,
                self.s.cfg.max_tags_per_object,
                MAX_TAG_LEN,
            )
            .into()
        } else {
            c.tags.clone()
        };
        let etag = headers::etag(&merged);
        let (last_modified, has_lm) = last_modified_of(&merged, response_time);
        let groups = self.groups(&c.key, &tags);
        let weight = StoredResponse::compute_weight(&merged, c.body.len(), &c.key);
        Some(StoredResponse {
            id: self.next_id(),
            key: c.key.clone(),
            variant: c.variant.clone(),
            status: c.status,
            version: c.version,
            headers: merged,
            body: c.body.clone(),
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

    /// The stored form of a storable response, with an empty body (§3, §3.1).
    fn prepare(
        &self,
        fwd: &Forward,
        r: &Received<'_>,
        request: &HeaderMap,
    ) -> Result<StoredResponse, NotStored> {
        let (status, headers) = (r.status, r.headers);
        let (request_time, response_time) = (r.request_time, r.response_time);
        let eff = self.effective(headers);
        let vary = headers::vary(headers);
        storable(
            status,
            &eff,
            headers,
            &vary,
            fwd.authorization,
            self.s.cfg.set_cookie,
        )?;
        if fwd.req.no_store {
            return Err(NotStored::RequestNoStore);
        }
        let policy = Policy::new(
            status,
            headers,
            &eff,
            request_time,
            response_time,
            self.heuristics(fwd.credentials),
            self.stale_defaults(),
        );
        let etag = headers::etag(headers);
        let (last_modified, has_lm) = last_modified_of(headers, response_time);
        if !policy.reusable(etag.is_some() || has_lm) {
            return Err(NotStored::NotReusable);
        }
        if r.close_delimited {
            // Checked after the rules above, so that `detail` names the most basic reason.
            return Err(NotStored::CloseDelimited);
        }
        let private: &[HeaderName] = match &eff.cc.private {
            Some(crate::directives::FieldScope::Fields(f)) => f,
            _ => &[],
        };
        let mut stored = headers::storable_headers(
            headers,
            private,
            &self.s.tag_fields,
            self.s.cfg.expose_surrogate_keys,
        );
        if self.s.cfg.set_cookie != SetCookie::Replay {
            // Stored under an explicit opt-in, the response is shared; its cookie is not.
            stored.remove(header::SET_COOKIE);
        }
        if !stored.contains_key(header::DATE)
            && let Ok(v) = HeaderValue::from_str(&fmt_http_date(response_time))
        {
            stored.insert(header::DATE, v);
        }
        let tags: Box<[Box<str>]> = headers::surrogate_tags(
            headers,
            &self.s.tag_fields,
            self.s.cfg.max_tags_per_object,
            MAX_TAG_LEN,
        )
        .into();
        let variant = match vary {
            Vary::Fields(names) => Some(Variant::of(&names, request)),
            Vary::None | Vary::Star => None,
        };
        let groups = self.groups(&fwd.key, &tags);
        Ok(StoredResponse {
            id: self.next_id(),
            key: fwd.key.clone(),
            variant,
            status,
            version: http::Version::HTTP_11,
            headers: stored,
            body: Bytes::new(),
            policy,
            etag,
            last_modified,
            has_last_modified: has_lm,
            tags,
            groups,
            weight: 0,
            last_used: crate::entry::LastUsed::at(self.now()),
        })
    }

    pub(super) fn groups(&self, key: &str, tags: &[Box<str>]) -> Box<[u64]> {
        std::iter::once(self.hasher.url_group(key))
            .chain(tags.iter().map(|t| self.hasher.tag_group(t)))
            .collect()
    }

    // === Responses to passed requests ===

    /// RFC 9110 §9.3.3: a response to a POST with explicit freshness and a `Content-Location`
    /// equal to the target URI may answer later GETs. Returns its stored form.
    pub(crate) fn decide_post(
        &self,
        inv: &Invalidate,
        request: &HeaderMap,
        r: &Received<'_>,
    ) -> Option<(StoredResponse, CacheStatus)> {
        let (status, headers, size) = (r.status, r.headers, r.size);
        let location = headers.get(header::CONTENT_LOCATION)?.to_str().ok()?;
        if self.same_origin_key(inv, location)? != inv.key || !status.is_success() {
            return None;
        }
        let eff = self.effective(headers);
        let explicit = eff.cc.max_age.is_some()
            || eff.cc.s_maxage.is_some()
            || (!eff.targeted && headers.contains_key(header::EXPIRES));
        if !explicit || size.is_some_and(|n| n > self.s.cfg.max_object_bytes) {
            return None;
        }
        let primary = self.hasher.primary(&inv.key);
        let fwd = Forward {
            key: inv.key.clone().into(),
            primary,
            fill_key: primary,
            candidate: None,
            fwd: Fwd::Method,
            req: RequestDirectives::from_headers(
                request,
                self.s.cfg.request_directives,
                self.s.cfg.pragma_no_cache,
            ),
            coalesce: false,
            authorization: request.contains_key(&HDR_AUTHORIZATION),
            credentials: has_credentials(request),
            client_conditionals: HeaderMap::new(),
            sie_timeout: None,
            collapsed: None,
            range_fill: false,
        };
        let proto = self.prepare(&fwd, r, request).ok()?;
        let mut cs = CacheStatus::fwd(Fwd::Method);
        cs.ttl = Some(proto.policy.ttl(r.response_time));
        Some((proto, cs))
    }

    /// §4.3.5: a 200 to a HEAD freshens the stored GET it describes, or shows it is outdated.
    pub(crate) fn freshen_from_head(
        &self,
        c: &StoredResponse,
        headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        credentials: bool,
    ) {
        let same = match (headers::etag(headers), &c.etag) {
            (Some(new), Some(old)) => new.weak_eq(old),
            (None, None) => match headers::date_field(headers, &header::LAST_MODIFIED) {
                Some(lm) => c.has_last_modified && lm == c.last_modified,
                None => {
                    !c.has_last_modified
                        && headers.get(header::CONTENT_LENGTH)
                            == c.headers.get(header::CONTENT_LENGTH)
                }
            },
            _ => false,
        };
        if !same {
            self.remove_entry(c);
            return;
        }
        match self.refreshed(c, headers, request_time, response_time, credentials) {
            Some(updated) => self.put(&Arc::new(updated)),
            None => self.remove_entry(c),
        }
    }

    // === Forwarded responses ===

    /// Headers every response forwarded to a client gets: `Date` when missing (RFC 9110
    /// §6.6.1), surrogate tags stripped unless exposed, this cache's `Surrogate-Control`
    /// directives removed, and `Cache-Status`.
    pub(crate) fn finish_forwarded(&self, headers: &mut HeaderMap, status: &CacheStatus) {
        self.outgoing(headers);
        if !headers.contains_key(header::DATE)
            && let Ok(v) = HeaderValue::from_str(&fmt_http_date(self.now()))
        {
            headers.insert(header::DATE, v);
        }
        if !self.s.cfg.expose_surrogate_keys {
            for f in &self.s.tag_fields {
                headers.remove(f);
            }
        }
        if self.s.cfg.cache_status {
            status.append_to(self.name(), headers);
        }
    }
}

/// `Last-Modified`, else `Date`, else the time of receipt (§4.3.2), and whether it was a real
/// `Last-Modified`.
pub(super) fn last_modified_of(
    headers: &HeaderMap,
    response_time: SystemTime,
) -> (SystemTime, bool) {
    match headers::date_field(headers, &header::LAST_MODIFIED) {
        Some(lm) => (lm, true),
        None => (
            headers::date_field(headers, &header::DATE).unwrap_or(response_time),
            false,
        ),
    }
}
