//! The cache's decisions, as synchronous functions over headers: what to do with a request
//! ([`Engine::plan`]) and with the origin's answer ([`Engine::decide`]). The tower service in
//! `service.rs` only moves bodies and awaits the origin; keeping every rule here lets the service
//! wrap each decision in `catch_unwind` and fail open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use ravelin_config::KillSwitch;
use ravelin_http::{RequestIdentity, canonical_path_lenient};

use crate::body::RecordingBudget;
use crate::clock::Clock;
use crate::config::{SetCookie, Settings};
use crate::date::fmt_http_date;
use crate::directives::MAX_DELTA_SECONDS;
use crate::entry::{Object, StoredResponse, VaryRecord};
use crate::fill::Fills;
use crate::headers::{self, EntityTag, Vary};
use crate::key::{KeyHasher, Variant, key_of, primary_key};
use crate::policy::{
    self, Assessment, Effective, Heuristics, NotStored, Policy, RequestDirectives, StaleDefaults,
    Validate, assess, stale_if_error_allowed, storable,
};
use crate::range::{self, RangeOutcome};
use crate::stats::{StaleReason, Stats};
use crate::status::{CacheStatus, Fwd};
use crate::store::Storage;

/// Longest surrogate tag kept, in bytes.
const MAX_TAG_LEN: usize = 256;

/// Shared state of one cache: settings, store, coalescing registry, clock and counters.
pub(crate) struct Engine {
    pub(crate) s: Settings,
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) fills: Arc<Fills>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hasher: KeyHasher,
    pub(crate) stats: Arc<Stats>,
    pub(crate) kill_switch: Option<KillSwitch>,
    /// Bytes held by recordings in progress, against `max_recording_bytes`.
    pub(crate) recording: Arc<RecordingBudget>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.s.cfg.name)
            .field("usage", &self.store.usage())
            .finish_non_exhaustive()
    }
}

/// A response the cache answers with by itself (hit, 304, 206, 504).
pub(crate) type Served = Response<Bytes>;

/// What to do with a request.
pub(crate) enum Plan {
    /// Answer from the cache; maybe also refresh the entry in the background.
    Serve(Served, Option<Box<Forward>>),
    /// Go to the origin through the cache (coalescing, revalidation, storing).
    Forward(Box<Forward>),
    /// Go to the origin around the cache.
    Pass(Pass),
}

/// A cacheable request going forward.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    pub(crate) key: Box<str>,
    pub(crate) primary: u64,
    pub(crate) fill_key: u64,
    pub(crate) candidate: Option<Arc<StoredResponse>>,
    pub(crate) fwd: Fwd,
    pub(crate) req: RequestDirectives,
    pub(crate) coalesce: bool,
    pub(crate) authorization: bool,
    /// The request carried `Cookie` or `Authorization`: no heuristic freshness unless configured.
    pub(crate) credentials: bool,
    /// The client's own `If-None-Match` / `If-Modified-Since`, replaced upstream by the cache's
    /// validators and evaluated locally against the result.
    pub(crate) client_conditionals: HeaderMap,
    /// How long to wait for the origin before serving the candidate under stale-if-error.
    pub(crate) sie_timeout: Option<Duration>,
    /// `Some(false)` when this request waited on another's fetch and then went alone.
    pub(crate) collapsed: Option<bool>,
}

/// A request passed around the cache.
#[derive(Debug, Clone)]
pub(crate) struct Pass {
    pub(crate) status: CacheStatus,
    /// After a non-error response to an unsafe method, invalidate these (§4.4).
    pub(crate) invalidate: Option<Invalidate>,
    /// A stale stored GET a HEAD response may freshen (§4.3.5).
    pub(crate) head_of: Option<Arc<StoredResponse>>,
    /// A POST, whose response may be stored for later GETs (RFC 9110 §9.3.3).
    pub(crate) post: bool,
    /// The request carried `Cookie` or `Authorization` (for a HEAD that freshens a stored GET).
    pub(crate) credentials: bool,
}

impl Pass {
    fn with_status(status: CacheStatus) -> Self {
        Self {
            status,
            invalidate: None,
            head_of: None,
            post: false,
            credentials: false,
        }
    }
}

/// The target of an unsafe request, for invalidation (§4.4) and POST responses (RFC 9110 §9.3.3).
#[derive(Debug, Clone)]
pub(crate) struct Invalidate {
    pub(crate) key: String,
    pub(crate) uri: Uri,
    pub(crate) host: Option<HeaderValue>,
    /// The request identity the key was built from, when the ingress stage set one.
    pub(crate) identity: Option<RequestIdentity>,
}

/// The origin's response head, as the decisions need it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received<'a> {
    pub(crate) status: StatusCode,
    pub(crate) headers: &'a HeaderMap,
    /// The body's length when known (size hint or `Content-Length`).
    pub(crate) size: Option<u64>,
    /// The body ends at connection close ([`ravelin_http::CloseDelimited`]): never stored.
    pub(crate) close_delimited: bool,
    pub(crate) request_time: SystemTime,
    pub(crate) response_time: SystemTime,
}

/// What to do with the origin's response to a forwarded request.
pub(crate) enum Decision {
    /// Answer from the stored (possibly just refreshed) response instead.
    Stored {
        served: Served,
        outcome: FillOutcome,
    },
    /// Send the origin's response on, recording it. `status` does not say `stored`: whether it
    /// is stored is known only once the body is complete.
    Record {
        proto: Box<StoredResponse>,
        status: CacheStatus,
        /// Followers may stream it (known length within the limit).
        streamable: bool,
        /// The client's conditional request is satisfied by this response: send it a 304 and
        /// record the body in the background.
        not_modified: bool,
    },
    /// Send the origin's response on without storing it.
    Pass { status: CacheStatus },
}

/// How a leader's fill ends when the cache answers from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillOutcome {
    Complete,
    ServedStale,
    Failed,
}

fn status_fwd(v: Validate) -> Fwd {
    match v {
        Validate::Request => Fwd::Request,
        Validate::Stale | Validate::ResponseNoCache => Fwd::Stale,
    }
}

static HDR_AUTHORIZATION: HeaderName = header::AUTHORIZATION;

/// Whether a request carries credentials that may personalise its response.
fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(&HDR_AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

impl Engine {
    pub(crate) fn new(
        s: Settings,
        store: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
        kill_switch: Option<KillSwitch>,
    ) -> Self {
        let fills = Fills::new(s.cfg.max_inflight);
        let recording = RecordingBudget::new(s.cfg.recording_limit());
        Self {
            recording,
            s,
            store,
            fills,
            clock,
            hasher: KeyHasher::new(),
            stats,
            kill_switch,
            next_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub(crate) fn name(&self) -> &str {
        &self.s.cfg.name
    }

    /// Heuristic freshness for a response to a request with or without credentials.
    fn heuristics(&self, credentials: bool) -> Heuristics {
        Heuristics {
            enabled: self.s.cfg.heuristic_freshness
                && (self.s.cfg.heuristic_with_credentials || !credentials),
            fraction: self.s.cfg.heuristic_fraction,
            max: self.s.cfg.heuristic_max,
        }
    }

    fn stale_defaults(&self) -> StaleDefaults {
        StaleDefaults {
            while_revalidate: self.s.cfg.stale_while_revalidate,
            if_error: self.s.cfg.stale_if_error,
        }
    }

    fn effective(&self, headers: &HeaderMap) -> Effective {
        policy::effective(headers, &self.s.targeted)
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    // === Requests ===

    /// RFC 9111 §4: can the request be answered from the cache, and if not, how does it go on?
    /// `identity`, when the ingress stage decided one, names the resource in the key.
    pub(crate) fn plan(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        identity: Option<&RequestIdentity>,
    ) -> Plan {
        if self
            .kill_switch
            .as_ref()
            .is_some_and(KillSwitch::is_engaged)
        {
            self.stats.bypassed();
            return Plan::Pass(Pass::with_status(
                CacheStatus::fwd(Fwd::Bypass).detail("disabled"),
            ));
        }
        let head = *method == Method::HEAD;
        if *method != Method::GET && !head {
            // §4.4: unsafe methods (and those of unknown safety) invalidate on success — only
            // where configured: an edge does not let anonymous clients evict what others read.
            let safe = matches!(*method, Method::OPTIONS | Method::TRACE | Method::CONNECT);
            let invalidate = (!safe && self.s.cfg.invalidate_on_unsafe).then(|| Invalidate {
                key: primary_key(uri, headers, &self.s.cfg.key, identity),
                uri: uri.clone(),
                host: headers.get(header::HOST).cloned(),
                identity: identity.cloned(),
            });
            return Plan::Pass(Pass {
                status: CacheStatus::fwd(Fwd::Method),
                invalidate,
                head_of: None,
                post: *method == Method::POST,
                credentials: has_credentials(headers),
            });
        }

        if headers.contains_key(header::UPGRADE) {
            // A protocol switch (WebSocket) is a connection, not a representation.
            return Plan::Pass(Pass::with_status(
                CacheStatus::fwd(Fwd::Bypass).detail("upgrade"),
            ));
        }

        let key = primary_key(uri, headers, &self.s.cfg.key, identity);
        let primary = self.hasher.primary(&key);
        let req = RequestDirectives::from_headers(
            headers,
            self.s.cfg.request_directives,
            self.s.cfg.pragma_no_cache,
        );
        let (found, fill_key, miss) = self.lookup(&key, primary, headers);
        let now = self.now();

        let mut candidate = None;
        let mut fwd = miss;
        if let Some(entry) = found {
            match assess(&entry.policy, &req, now) {
                Assessment::Fresh => {
                    self.stats.hit();
                    let status = CacheStatus::hit(entry.policy.ttl(now));
                    return Plan::Serve(
                        self.serve(&entry, head, headers, now, status, false),
                        None,
                    );
                }
                Assessment::StaleAllowed => {
                    self.stats.hit();
                    self.stats.stale(StaleReason::MaxStale);
                    let status = CacheStatus::hit(entry.policy.ttl(now)).detail("max-stale");
                    return Plan::Serve(
                        self.serve(&entry, head, headers, now, status, false),
                        None,
                    );
                }
                Assessment::StaleWhileRevalidate => {
                    self.stats.hit();
                    self.stats.stale(StaleReason::WhileRevalidate);
                    let status =
                        CacheStatus::hit(entry.policy.ttl(now)).detail("stale-while-revalidate");
                    let served = self.serve(&entry, head, headers, now, status, false);
                    // only-if-cached forbids going forward, even in the background (§5.2.1.7).
                    let refresh =
                        (!req.only_if_cached && !self.fills.in_flight(fill_key)).then(|| {
                            Box::new(Forward {
                                key: key.clone().into(),
                                primary,
                                fill_key,
                                candidate: Some(entry.clone()),
                                fwd: Fwd::Stale,
                                req: RequestDirectives::default(),
                                coalesce: true,
                                authorization: headers.contains_key(&HDR_AUTHORIZATION),
                                credentials: has_credentials(headers),
                                client_conditionals: HeaderMap::new(),
                                sie_timeout: None,
                                collapsed: None,
                            })
                        });
                    return Plan::Serve(served, refresh);
                }
                Assessment::MustValidate(why) => {
                    fwd = status_fwd(why);
                    candidate = Some(entry);
                }
            }
        }

        if req.only_if_cached {
            // §5.2.1.7: nothing usable is stored; do not go forward.
            self.stats.miss();
            return Plan::Serve(self.gateway_timeout(), None);
        }
        self.stats.miss();

        if head || headers.contains_key(header::RANGE) {
            // A HEAD cannot fill the cache, and a range request goes forward untouched rather
            // than fetching a whole representation for a few bytes.
            return Plan::Pass(Pass {
                status: CacheStatus::fwd(fwd),
                invalidate: None,
                head_of: if head { candidate } else { None },
                post: false,
                credentials: has_credentials(headers),
            });
        }

        let sie_timeout = match (&candidate, self.s.cfg.stale_if_error_timeout) {
            (Some(c), Some(t)) if stale_if_error_allowed(&c.policy, &req, now) => Some(t),
            _ => None,
        };
        let mut client_conditionals = HeaderMap::new();
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            for v in headers.get_all(&name) {
                client_conditionals.append(name.clone(), v.clone());
            }
        }
        Plan::Forward(Box::new(Forward {
            key: key.into(),
            primary,
            fill_key,
            // A request that must see the origin (no-cache) or must not be stored (no-store)
            // would only wait to be turned away; it goes alone.
            coalesce: self.s.cfg.coalesce && !req.no_store && !req.no_cache,
            candidate,
            fwd,
            req,
            authorization: headers.contains_key(&HDR_AUTHORIZATION),
            credentials: has_credentials(headers),
            client_conditionals,
            sie_timeout,
            collapsed: None,
        }))
    }

    /// Finds the stored response selected by the request (§4.1). Returns it, the key a fetch for
    /// it coalesces on, and the kind of miss when there is none.
    fn lookup(
        &self,
        key: &str,
        primary: u64,
        headers: &HeaderMap,
    ) -> (Option<Arc<StoredResponse>>, u64, Fwd) {
        match self.store.get(primary) {
            Some(Object::Response(r)) if *r.key == *key && r.variant.is_none() => {
                (Some(r), primary, Fwd::UriMiss)
            }
            Some(Object::Vary(v)) if *v.key == *key => {
                let vkey = self.hasher.variant_of(key, &v.names, headers);
                match self.store.get(vkey) {
                    Some(Object::Response(r))
                        if *r.key == *key
                            && r.variant
                                .as_ref()
                                .is_some_and(|rv| rv.names == v.names && rv.matches(headers)) =>
                    {
                        (Some(r), vkey, Fwd::VaryMiss)
                    }
                    _ => (None, vkey, Fwd::VaryMiss),
                }
            }
            _ => (None, primary, Fwd::UriMiss),
        }
    }

    /// Looks the request up again after a shared fetch finished, for a follower. Only a fresh
    /// hit (or stale-if-error after a failed fetch) counts: anything else goes to the origin.
    pub(crate) fn after_fill(
        &self,
        fwd: &Forward,
        headers: &HeaderMap,
        served_stale: bool,
    ) -> Option<Served> {
        let (found, _, _) = self.lookup(&fwd.key, fwd.primary, headers);
        let entry = found?;
        let now = self.now();
        let mut status = match assess(&entry.policy, &fwd.req, now) {
            // Counted as a miss when planned and as coalesced by the caller, not as a hit: the
            // request did go forward, collapsed into another (RFC 9211 §2.6).
            Assessment::Fresh => {
                let mut s = CacheStatus::fwd(fwd.fwd);
                s.ttl = Some(entry.policy.ttl(now));
                s
            }
            _ if served_stale && stale_if_error_allowed(&entry.policy, &fwd.req, now) => {
                self.stats.stale(StaleReason::IfError);
                let mut s = CacheStatus::fwd(Fwd::Stale).detail("stale-if-error");
                s.ttl = Some(entry.policy.ttl(now));
                s
            }
            _ => return None,
        };
        status.collapsed = Some(true);
        Some(self.serve(&entry, false, headers, now, status, false))
    }

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

    /// Evaluates the client's `If-None-Match`, else `If-Modified-Since`, against a stored response
    /// (RFC 9110 §13.1.2, §13.1.3; RFC 9111 §4.3.2).
    fn not_modified(&self, entry: &StoredResponse, request: &HeaderMap) -> bool {
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
    fn gateway_timeout(&self) -> Served {
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

    // === Upstream requests ===

    /// Replaces the client's validators with the stored response's (§4.3.1).
    pub(crate) fn conditionalise(
        &self,
        headers: &mut HeaderMap,
        candidate: Option<&StoredResponse>,
    ) {
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        let Some(c) = candidate else { return };
        if let Some(v) = c.etag.as_ref().and_then(EntityTag::to_header_value) {
            headers.insert(header::IF_NONE_MATCH, v);
        }
        if c.has_last_modified
            && let Ok(v) = HeaderValue::from_str(&fmt_http_date(c.last_modified))
        {
            headers.insert(header::IF_MODIFIED_SINCE, v);
        }
    }

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
        // §4.3.4: the 304 must be about this stored response. Many servers send no validator
        // in a 304; that is accepted, a different one is not.
        let lm_differs = headers::date_field(headers, &header::LAST_MODIFIED)
            .is_some_and(|lm| c.has_last_modified && lm != c.last_modified);
        let matches = !lm_differs
            && match (headers::etag(headers), &c.etag) {
                (Some(new), Some(old)) => new.weak_eq(old),
                (Some(_), None) => false,
                (None, _) => true,
            };
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
        })
    }

    fn groups(&self, key: &str, tags: &[Box<str>]) -> Box<[u64]> {
        std::iter::once(self.hasher.url_group(key))
            .chain(tags.iter().map(|t| self.hasher.tag_group(t)))
            .collect()
    }

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
        self.put(&Arc::new(proto));
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

    fn remove_entry(&self, entry: &StoredResponse) {
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
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(target) = response.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(key) = self.same_origin_key(inv, target)
                && key != inv.key
            {
                self.purge_key(&key);
                self.stats.invalidation();
            }
        }
    }

    /// The cache key of a `Location`-style reference, if it is on the request's origin. With a
    /// request identity, paths are canonicalised as the ingress stage does, so they compare
    /// equal to the keys of stored responses.
    fn same_origin_key(&self, inv: &Invalidate, reference: &str) -> Option<String> {
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

    /// Headers every response forwarded to a client gets: `Date` when missing (RFC 9110
    /// §6.6.1), surrogate tags stripped unless exposed, and `Cache-Status`.
    pub(crate) fn finish_forwarded(&self, headers: &mut HeaderMap, status: &CacheStatus) {
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
fn last_modified_of(headers: &HeaderMap, response_time: SystemTime) -> (SystemTime, bool) {
    match headers::date_field(headers, &header::LAST_MODIFIED) {
        Some(lm) => (lm, true),
        None => (
            headers::date_field(headers, &header::DATE).unwrap_or(response_time),
            false,
        ),
    }
}
