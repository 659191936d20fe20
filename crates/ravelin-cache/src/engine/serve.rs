//! Responses the cache builds by itself from a stored one: full, partial (`Range`) and 304
//! answers with `Age` and `Cache-Status`, and the 504s sent when nothing usable is stored.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::date::fmt_http_date;
use crate::directives::MAX_DELTA_SECONDS;
use crate::entry::StoredResponse;
use crate::headers;
use crate::range::{self, RangeOutcome};
use crate::status::{CacheStatus, Fwd};

use super::{Engine, Served};

impl Engine {
    // === Building responses from the store ===

    /// A response from a stored one (§4): client conditionals (§4.3.2), ranges, `Age` (§5.1),
    /// `Cache-Status`. `validated` says the response was just validated, so qualified `no-cache`
    /// fields may be sent.
    pub(crate) fn serve(
        &self,
        entry: &StoredResponse,
        head: bool,
        request: &HeaderMap,
        now: SystemTime,
        status: CacheStatus,
        validated: bool,
    ) -> Served {
        entry.last_used.touch(now);
        // §5.1: an age past 2^31 is sent as 2^31.
        let age = entry
            .policy
            .current_age(now)
            .as_secs()
            .min(MAX_DELTA_SECONDS);
        if entry.status.is_success() && self.not_modified(entry, request) {
            return self.not_modified_response(entry, age, &status);
        }
        let mut headers = entry.headers.clone();
        self.outgoing(&mut headers);
        if !validated {
            for name in &entry.policy.no_cache_fields {
                headers.remove(name);
            }
        }
        headers.insert(header::AGE, HeaderValue::from(age));
        let mut code = entry.status;
        let mut body = entry.body.clone();
        if entry.status == StatusCode::OK {
            let lm = entry.has_last_modified.then_some(entry.last_modified);
            let len = entry.body.len() as u64;
            match range::evaluate(
                request.get(header::RANGE),
                request.get(header::IF_RANGE),
                len,
                entry.etag.as_ref(),
                lm,
            ) {
                RangeOutcome::Full => {}
                RangeOutcome::Partial(start, end) => {
                    code = StatusCode::PARTIAL_CONTENT;
                    let (s, e) = (
                        usize::try_from(start).unwrap_or(0),
                        usize::try_from(end).unwrap_or(0),
                    );
                    body = entry
                        .body
                        .slice(s.min(entry.body.len())..e.saturating_add(1).min(entry.body.len()));
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                        headers.insert(header::CONTENT_RANGE, v);
                    }
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
                }
                RangeOutcome::Unsatisfiable => {
                    code = StatusCode::RANGE_NOT_SATISFIABLE;
                    body = Bytes::new();
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                        headers.insert(header::CONTENT_RANGE, v);
                    }
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                }
            }
        }
        if self.s.cfg.cache_status {
            status.append_to(self.name(), &mut headers);
        }
        let mut resp = Response::new(if head { Bytes::new() } else { body });
        *resp.status_mut() = code;
        *resp.headers_mut() = headers;
        resp
    }

    /// The client's `Range` (and `If-Range`) against a whole 200 response of `len` bytes being
    /// forwarded: a range fill's answer, or a follower's of a fill in progress (RFC 9110 §14).
    pub(crate) fn range_of_forwarded(
        &self,
        request: &HeaderMap,
        response: &HeaderMap,
        len: u64,
    ) -> RangeOutcome {
        let etag = response
            .get(header::ETAG)
            .and_then(|v| headers::EntityTag::parse(v.as_bytes()));
        let lm = headers::date_field(response, &header::LAST_MODIFIED);
        range::evaluate(
            request.get(header::RANGE),
            request.get(header::IF_RANGE),
            len,
            etag.as_ref(),
            lm,
        )
    }

    /// Evaluates the client's `If-None-Match`, else `If-Modified-Since`, against a stored response
    /// (RFC 9110 §13.1.2, §13.1.3; RFC 9111 §4.3.2).
    pub(super) fn not_modified(&self, entry: &StoredResponse, request: &HeaderMap) -> bool {
        match headers::if_none_match_matches(request, entry.etag.as_ref()) {
            Some(matched) => matched,
            None => headers::date_field(request, &header::IF_MODIFIED_SINCE)
                .is_some_and(|ims| entry.last_modified <= ims),
        }
    }

    /// A 304 from a response being recorded, for a client whose validator it matches.
    pub(crate) fn not_modified_for(&self, proto: &StoredResponse, status: &CacheStatus) -> Served {
        let age = proto
            .policy
            .current_age(self.now())
            .as_secs()
            .min(MAX_DELTA_SECONDS);
        self.not_modified_response(proto, age, status)
    }

    /// A 304 generated from a stored response: the fields RFC 9110 §15.4.5 requires.
    fn not_modified_response(
        &self,
        entry: &StoredResponse,
        age: u64,
        status: &CacheStatus,
    ) -> Served {
        let mut headers = HeaderMap::new();
        let mut copy = |name: HeaderName| {
            for v in entry.headers.get_all(&name) {
                headers.append(name.clone(), v.clone());
            }
        };
        copy(header::CACHE_CONTROL);
        copy(header::CONTENT_LOCATION);
        copy(header::DATE);
        copy(header::ETAG);
        copy(header::EXPIRES);
        copy(header::VARY);
        if entry.etag.is_none() {
            copy(header::LAST_MODIFIED);
        }
        headers.insert(header::AGE, HeaderValue::from(age));
        if self.s.cfg.cache_status {
            status.append_to(self.name(), &mut headers);
        }
        let mut resp = Response::new(Bytes::new());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        *resp.headers_mut() = headers;
        resp
    }

    /// `only-if-cached` with nothing usable stored (§5.2.1.7).
    pub(super) fn gateway_timeout(&self) -> Served {
        let mut resp = Response::new(Bytes::new());
        *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
        if let Ok(v) = HeaderValue::from_str(&fmt_http_date(self.now())) {
            h.insert(header::DATE, v);
        }
        if self.s.cfg.cache_status {
            CacheStatus::default()
                .detail("only-if-cached")
                .append_to(self.name(), h);
        }
        resp
    }

    /// A 504 for a forwarded request whose origin did not answer in time when the stale copy
    /// it was waiting to fall back on turned out unusable.
    pub(crate) fn origin_timeout(&self, fwd: Fwd) -> Served {
        let mut resp = Response::new(Bytes::new());
        *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
        if self.s.cfg.cache_status {
            CacheStatus::fwd(fwd)
                .detail("origin-timeout")
                .append_to(self.name(), h);
        }
        resp
    }
}
