//! Planning: what to do with a request. Looks it up (§4.1), judges the stored response's
//! freshness (§4.2), and decides whether to serve it, go forward through the cache (with
//! coalescing and revalidation) or pass around it; then rewrites the validators of the request
//! that goes upstream.

use std::sync::Arc;

use http::header;
use http::{HeaderMap, HeaderValue, Method, Uri};
use ravelin_http::RequestIdentity;
use ravelin_primitives::KillSwitch;

use crate::date::fmt_http_date;
use crate::entry::{Object, StoredResponse};
use crate::headers::EntityTag;
use crate::key::primary_key;
use crate::policy::{Assessment, RequestDirectives, Validate, assess, stale_if_error_allowed};
use crate::stats::StaleReason;
use crate::status::{CacheStatus, Fwd};

use super::{Engine, Forward, HDR_AUTHORIZATION, Invalidate, Pass, Plan, Served, has_credentials};

fn status_fwd(v: Validate) -> Fwd {
    match v {
        Validate::Request => Fwd::Request,
        Validate::Stale | Validate::ResponseNoCache => Fwd::Stale,
    }
}

impl Engine {
    // === Requests ===

    /// RFC 9111 §4: can the request be answered from the cache, and if not, how does it go on?
    /// `identity`, when the ingress stage decided one, names the resource in the key; `content`
    /// says the request carries content ([`ravelin_http::request_has_content`]).
    pub(crate) fn plan(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        identity: Option<&RequestIdentity>,
        content: bool,
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

        if content {
            // A GET or HEAD with content (a "fat GET"): the key does not include the content,
            // yet an origin that reads parameters from it (Rack, Express's body parsers,
            // Elasticsearch) answers for them. Stored, that answer would be served for the URL
            // to everyone (cache poisoning); served from the cache, a stored answer may not be
            // what this request asks for. So it goes around the cache both ways.
            return Plan::Pass(Pass::with_status(
                CacheStatus::fwd(Fwd::Bypass).detail("request-content"),
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
                                range_fill: false,
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

        let range = headers.contains_key(header::RANGE);
        // A range miss fetches the whole representation to store it (RFC 9110 §14; Varnish's
        // default), decided before forwarding from what is known: nothing stored to validate,
        // the request may be stored, range fills are on, the range is a closed one ending
        // within `range_fill_max_bytes` (so no small request reads a large object to its end),
        // and the key's last response was not unstorable or too large (a hit-for-pass mark).
        // Otherwise it goes forward untouched.
        let range_fill = range
            && !head
            && candidate.is_none()
            && !req.no_store
            && self.s.cfg.range_fill_limit() > 0
            && crate::range::fill_is_bounded(
                headers.get(header::RANGE),
                self.s.cfg.range_fill_limit(),
            )
            && !self.fills.marked(fill_key);
        if head || (range && !range_fill) {
            // A HEAD cannot fill the cache, and a range request that may not fill goes forward
            // untouched.
            return Plan::Pass(Pass {
                status: CacheStatus::fwd(fwd),
                invalidate: None,
                // §3.5: the answer to a HEAD with `Authorization` may be the user's own; it
                // neither freshens nor evicts the shared stored GET.
                head_of: if head && !headers.contains_key(&HDR_AUTHORIZATION) {
                    candidate
                } else {
                    None
                },
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
        // A conditional miss forwards the client's validators (§4.3.2); the origin may answer
        // it with a 304 that has no body for followers to share, so it goes alone too.
        let conditional_miss = candidate.is_none() && !client_conditionals.is_empty();
        Plan::Forward(Box::new(Forward {
            key: key.into(),
            primary,
            fill_key,
            // A request that must see the origin (no-cache) or must not be stored (no-store)
            // would only wait to be turned away; it goes alone.
            coalesce: self.s.cfg.coalesce && !req.no_store && !req.no_cache && !conditional_miss,
            candidate,
            fwd,
            req,
            authorization: headers.contains_key(&HDR_AUTHORIZATION),
            credentials: has_credentials(headers),
            client_conditionals,
            sie_timeout,
            collapsed: None,
            range_fill,
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

    // === Upstream requests ===

    /// Replaces the client's validators with the stored response's (§4.3.1), and announces
    /// this cache as a surrogate when it honours `Surrogate-Control`. A conditional miss (no
    /// stored response at all) keeps the client's validators as sent (§4.3.2, RFC 9110
    /// §13.2.1): the origin's 304 is then the client's answer.
    pub(crate) fn conditionalise(&self, headers: &mut HeaderMap, fwd: &Forward) {
        if let Some(device) = self.surrogate_device() {
            crate::headers::announce_surrogate(headers, device);
        }
        if fwd.passes_client_conditionals() {
            return;
        }
        let candidate = fwd.candidate.as_deref();
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
}
