//! [`Cache`]: the tower service. It asks the engine what to do, awaits the origin, and moves
//! bodies; every decision runs inside `catch_unwind`, so a bug in cache code bypasses the cache
//! for that request instead of failing it (fail open).

use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use ravelin_http::{CloseDelimited, RequestIdentity};
use tower_service::Service;

use crate::body::{CacheBody, Recorder, Resume, drain};
use crate::engine::{Decision, Engine, FillOutcome, Forward, Pass, Plan, Received};
use crate::error::BoxError;
use crate::fill::{Fill, Join, Leader, Phase};
use crate::future::ResponseFuture;
use crate::policy::{Assessment, assess};
use crate::range::RangeOutcome;
use crate::status::{CacheStatus, Fwd};

/// The cache middleware; see [`CacheLayer`](crate::CacheLayer).
///
/// `Cache` is always ready: it decides in `call` whether the inner service is needed at all, and
/// when it is, it calls a clone of the inner service and waits for that clone's readiness inside
/// the response future. This is why the inner service must be `Clone` (it is also cloned for
/// background revalidation); services that share state behind an `Arc`, as axum routers and
/// hyper clients do, are cheap to clone.
pub struct Cache<S> {
    inner: S,
    engine: Arc<Engine>,
}

// === impl Cache ===

impl<S> Cache<S> {
    pub(crate) fn new(inner: S, engine: Arc<Engine>) -> Self {
        Self { inner, engine }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The handle for purging and statistics.
    pub fn handle(&self) -> crate::CacheHandle {
        crate::CacheHandle::new(self.engine.clone())
    }
}

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            engine: self.engine.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("engine", &self.engine)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + Send + 'static,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let engine = self.engine.clone();
        let plan = catch_unwind(AssertUnwindSafe(|| {
            let content = ravelin_http::request_has_content(req.headers(), req.extensions());
            engine.plan(
                req.method(),
                req.uri(),
                req.headers(),
                req.extensions().get::<RequestIdentity>(),
                content,
            )
        }))
        .unwrap_or_else(|_| {
            internal_error(&engine, "planning a request");
            Plan::Pass(Pass {
                status: CacheStatus::fwd(Fwd::Bypass).detail("internal-error"),
                invalidate: None,
                head_of: None,
                post: false,
                credentials: false,
            })
        });
        match plan {
            Plan::Serve(served, refresh) => {
                if let Some(fwd) = refresh {
                    spawn_refresh(engine, self.inner.clone(), req, *fwd);
                }
                ResponseFuture::ready(served.map(CacheBody::full))
            }
            Plan::Forward(fwd) => {
                ResponseFuture::boxed(forward(engine, self.inner.clone(), req, *fwd))
            }
            Plan::Pass(pass) => {
                ResponseFuture::boxed(pass_through(engine, self.inner.clone(), req, pass))
            }
        }
    }
}

/// Counts an internal error and logs it — the first, second, fourth, eighth… occurrence only, so
/// that a bug hit on every request cannot flood the logs.
fn internal_error(engine: &Engine, during: &str) {
    engine.stats.internal_error();
    let n = engine.stats.snapshot().internal_errors;
    if n.is_power_of_two() {
        tracing::error!(
            cache = engine.name(),
            during,
            occurrences = n,
            "internal cache error; the request bypassed the cache"
        );
    }
}

fn guarded<T>(engine: &Engine, during: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => {
            internal_error(engine, during);
            None
        }
    }
}

enum Upstream<R, E> {
    Response(R),
    Error(E),
    TimedOut,
}

async fn call_inner<S, ReqBody>(
    svc: &mut S,
    req: Request<ReqBody>,
    timeout: Option<Duration>,
) -> Upstream<S::Response, S::Error>
where
    S: Service<Request<ReqBody>>,
{
    let fut = async {
        poll_fn(|cx| svc.poll_ready(cx)).await?;
        svc.call(req).await
    };
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => return Upstream::TimedOut,
        },
        None => fut.await,
    };
    match result {
        Ok(r) => Upstream::Response(r),
        Err(e) => Upstream::Error(e),
    }
}

/// A cacheable request that must go forward: coalesce, then fetch.
async fn forward<S, ReqBody, ResBody>(
    engine: Arc<Engine>,
    svc: S,
    req: Request<ReqBody>,
    fwd: Forward,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + Send + 'static,
{
    let mut fwd = fwd;
    let mut leader = None;
    if fwd.coalesce {
        match engine.fills.join(fwd.fill_key) {
            Join::Lead(l) => leader = Some(l),
            Join::Follow(fill) => {
                if let Some(resp) = follow(&engine, &fill, &fwd, req.headers()).await {
                    engine.stats.coalesced(true);
                    return Ok(resp);
                }
                engine.stats.coalesced(false);
                fwd.collapsed = Some(false);
            }
            Join::Full | Join::Pass => {}
        }
    }
    // A local miss: the fill leader (or, without coalescing, each request, and each conditional
    // miss, which never coalesces) asks the shared tier before the origin. Every fault there is a miss within the tier's timeout.
    #[cfg(feature = "redis")]
    if let Some(tier) = engine.shared.clone()
        && fwd.candidate.is_none()
        && !fwd.req.no_store
        && !fwd.req.no_cache
        && (leader.is_some() || !engine.s.cfg.coalesce || fwd.passes_client_conditionals())
        && let crate::shared_tier::Lookup::Hit(e) = tier.get(fwd.key.as_bytes()).await
        && e.selects(req.headers())
    {
        let used = guarded(&engine, "using a shared-tier entry", || {
            engine.use_shared(&fwd, *e, req.headers())
        })
        .flatten();
        match used {
            Some(crate::engine::SharedUse::Serve(served, refresh)) => {
                if let Some(l) = leader {
                    l.complete();
                }
                if let Some(r) = refresh {
                    spawn_refresh(engine, svc, req, *r);
                }
                return Ok(served.map(CacheBody::full));
            }
            Some(crate::engine::SharedUse::Validate(entry)) => {
                fwd.candidate = Some(entry);
                fwd.fwd = Fwd::Stale;
                fwd.sie_timeout = engine.sie_timeout_for(&fwd);
            }
            None => {}
        }
    }
    fetch(engine, svc, req, fwd, leader).await
}

/// Waits for another request's fetch and answers from it, or returns `None` to go alone.
async fn follow<B>(
    engine: &Arc<Engine>,
    fill: &Arc<Fill>,
    fwd: &Forward,
    headers: &HeaderMap,
) -> Option<Response<CacheBody<B>>> {
    let (phase, head) = tokio::time::timeout(engine.s.cfg.coalesce_timeout, fill.outcome())
        .await
        .ok()?;
    match phase {
        Phase::Streaming => {
            let head = head?;
            guarded(engine, "following a shared fetch", || {
                // Share only a response this request would select and may use (§4, §4.1).
                if head.variant.as_ref().is_some_and(|v| !v.matches(headers)) {
                    return None;
                }
                let now = engine.now();
                if assess(&head.policy, &fwd.req, now) != Assessment::Fresh {
                    return None;
                }
                let mut status = CacheStatus::fwd(fwd.fwd);
                status.collapsed = Some(true);
                status.ttl = Some(head.policy.ttl(now));
                if head.status.is_success()
                    && (headers.contains_key(header::IF_NONE_MATCH)
                        || headers.contains_key(header::IF_MODIFIED_SINCE))
                {
                    // Conditionals need only the head: answer without the body.
                    let served = engine.serve(&head, false, headers, now, status, false);
                    if served.status() == http::StatusCode::NOT_MODIFIED {
                        return Some(served.map(CacheBody::full));
                    }
                    return None;
                }
                let mut resp = Response::new(());
                *resp.status_mut() = head.status;
                let h = resp.headers_mut();
                *h = head.headers.clone();
                engine.outgoing(h);
                for name in &head.policy.no_cache_fields {
                    h.remove(name);
                }
                h.insert(
                    header::AGE,
                    http::HeaderValue::from(
                        head.policy
                            .current_age(now)
                            .as_secs()
                            .min(crate::directives::MAX_DELTA_SECONDS),
                    ),
                );
                if engine.s.cfg.cache_status {
                    status.append_to(engine.name(), h);
                }
                let len = h
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                Some(resp.map(|()| CacheBody::follow(fill.clone(), len)))
            })
            .flatten()
            // A range request following a fill gets its range cut from the streamed body.
            .map(|resp| {
                let len = resp
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok());
                answer_range(engine, headers, resp, len)
            })
        }
        Phase::Complete | Phase::ServedStale => guarded(engine, "reading a shared fetch", || {
            engine.after_fill(fwd, headers, phase == Phase::ServedStale)
        })
        .flatten()
        .map(|s| s.map(CacheBody::full)),
        Phase::Pending | Phase::Uncacheable | Phase::Failed => None,
    }
}

fn exact_size<B: Body>(headers: &HeaderMap, body: &B) -> Option<u64> {
    body.size_hint().exact().or_else(|| {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Goes to the origin (conditionally when a stored response can be validated) and applies the
/// engine's decision to the answer.
async fn fetch<S, ReqBody, ResBody>(
    engine: Arc<Engine>,
    mut svc: S,
    mut req: Request<ReqBody>,
    fwd: Forward,
    leader: Option<Leader>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + Send + 'static,
{
    let request_headers = req.headers().clone();
    if guarded(&engine, "building a validation request", || {
        engine.conditionalise(req.headers_mut(), &fwd);
    })
    .is_none()
    {
        // The request headers may be half-edited; restore the client's.
        *req.headers_mut() = request_headers.clone();
    }
    if fwd.range_fill {
        // The whole representation is fetched to be stored; the client's range is cut from it.
        req.headers_mut().remove(header::RANGE);
        req.headers_mut().remove(header::IF_RANGE);
    }
    let request_time = engine.now();
    let upstream = call_inner(&mut svc, req, fwd.sie_timeout).await;
    let response_time = engine.now();

    let resp = match upstream {
        Upstream::Response(r) => r,
        Upstream::Error(e) => {
            return match guarded(&engine, "stale-if-error", || engine.on_error(&fwd)).flatten() {
                Some(served) => {
                    if let Some(l) = leader {
                        l.served_stale();
                    }
                    Ok(served.map(CacheBody::full))
                }
                None => Err(e),
            };
        }
        Upstream::TimedOut => {
            let served = guarded(&engine, "stale-if-error", || engine.on_error(&fwd)).flatten();
            if let Some(l) = leader {
                if served.is_some() {
                    l.served_stale();
                } else {
                    l.fail();
                }
            }
            let served = served.unwrap_or_else(|| engine.origin_timeout(fwd.fwd));
            return Ok(served.map(CacheBody::full));
        }
    };

    let (mut parts, body) = resp.into_parts();
    let size = exact_size(&parts.headers, &body);
    let decision = guarded(&engine, "deciding on a response", || {
        let received = Received {
            status: parts.status,
            headers: &parts.headers,
            size,
            close_delimited: parts.extensions.get::<CloseDelimited>().is_some(),
            request_time,
            response_time,
        };
        engine.decide(&fwd, &received, &request_headers)
    })
    .unwrap_or_else(|| Decision::Pass {
        status: CacheStatus::fwd(Fwd::Bypass).detail("internal-error"),
    });

    match decision {
        Decision::Stored { served, outcome } => {
            if let Some(l) = leader {
                match outcome {
                    FillOutcome::Complete => l.complete(),
                    FillOutcome::ServedStale => l.served_stale(),
                    FillOutcome::Failed => l.fail(),
                }
            }
            drop(body);
            Ok(served.map(CacheBody::full))
        }
        Decision::Pass { status } => {
            if let Some(l) = leader {
                // Hit-for-pass only when the response itself says it is not for sharing; a
                // reason of this request (Authorization, a range) or this moment (an error over
                // a stored copy, a status) must not switch coalescing off for everyone.
                // A range fill that could not be stored (too large, no length) marks the key too,
                // so that the next range miss goes forward with its `Range`.
                if status
                    .detail
                    .is_some_and(crate::policy::NotStored::is_intrinsic_name)
                    || (fwd.range_fill
                        && status.detail == Some(crate::engine::RANGE_UNKNOWN_LENGTH))
                {
                    l.uncacheable();
                } else {
                    l.not_shared();
                }
            }
            engine.finish_forwarded(&mut parts.headers, &status);
            let resp = Response::from_parts(parts, CacheBody::pass(body));
            Ok(if fwd.range_fill {
                answer_range(&engine, &request_headers, resp, size)
            } else {
                resp
            })
        }
        Decision::Record {
            proto,
            status,
            streamable,
            not_modified,
        } => {
            let resp = record(
                &engine,
                Recording {
                    parts,
                    body,
                    proto: *proto,
                    status,
                    size,
                    leader,
                    streamable,
                    not_modified,
                    whole: fwd.range_fill,
                },
            );
            Ok(if fwd.range_fill {
                answer_range(&engine, &request_headers, resp, size)
            } else {
                resp
            })
        }
    }
}

/// Answers a client's range from a whole 200 response of known length on its way from the
/// origin (a range fill, or a follower of any fill): 206 with the bytes cut from the body as it
/// streams, 416, or the whole response when the range does not apply (`If-Range` did not match,
/// several ranges, another unit). Anything else (another status, an unknown length) goes on
/// whole, which a server may always send instead of a range (RFC 9110 §14.2). A recording cut
/// short or dropped (416) finishes in the background when it is a range fill.
fn answer_range<B>(
    engine: &Engine,
    request: &HeaderMap,
    resp: Response<CacheBody<B>>,
    len: Option<u64>,
) -> Response<CacheBody<B>> {
    if resp.status() != http::StatusCode::OK || !request.contains_key(header::RANGE) {
        return resp;
    }
    let Some(len) = len else {
        return resp;
    };
    let Some(outcome) = guarded(engine, "answering a range", || {
        engine.range_of_forwarded(request, resp.headers(), len)
    }) else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    match outcome {
        RangeOutcome::Full => Response::from_parts(parts, body),
        RangeOutcome::Partial(start, end) => {
            let n = end - start + 1;
            parts.status = http::StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = http::HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                parts.headers.insert(header::CONTENT_RANGE, v);
            }
            parts
                .headers
                .insert(header::CONTENT_LENGTH, http::HeaderValue::from(n));
            Response::from_parts(parts, CacheBody::slice(body, start, n))
        }
        RangeOutcome::Unsatisfiable => {
            parts.status = http::StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{len}")) {
                parts.headers.insert(header::CONTENT_RANGE, v);
            }
            parts
                .headers
                .insert(header::CONTENT_LENGTH, http::HeaderValue::from(0u64));
            // Dropping a range fill's recording finishes it in the background.
            drop(body);
            Response::from_parts(parts, CacheBody::empty())
        }
    }
}

/// A storable response on its way to the client.
struct Recording<B> {
    parts: http::response::Parts,
    body: B,
    proto: crate::entry::StoredResponse,
    status: CacheStatus,
    size: Option<u64>,
    leader: Option<Leader>,
    streamable: bool,
    not_modified: bool,
    /// A range fill: finish the recording even when the client stops reading.
    whole: bool,
}

/// `Cache-Status: …; detail=storing`: the response is storable and its body is being recorded;
/// it is stored only if the body completes within the limits, which is not known when the head
/// is sent. `stored` is claimed only where the whole body was in hand before the head left.
const STORING: &str = "storing";

/// `Cache-Status: …; detail=recording-limit`: storable, but `max_recording_bytes` are already
/// being recorded, so this response passes unrecorded.
const RECORDING_LIMIT: &str = "recording-limit";

/// Sends a storable response on while its body is recorded into the store (the tee), publishing
/// it to coalesced followers when it can be streamed.
fn record<B>(engine: &Arc<Engine>, r: Recording<B>) -> Response<CacheBody<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Recording {
        mut parts,
        body,
        mut proto,
        mut status,
        size,
        leader,
        streamable,
        not_modified,
        whole,
    } = r;
    if size == Some(0) || parts.status == http::StatusCode::NO_CONTENT {
        // No body frames will come (or none may be sent): the whole response is in hand, so it
        // is stored now and `stored` is known.
        let nm = not_modified.then(|| proto.clone());
        let stored = guarded(engine, "storing a response", || {
            engine.commit(proto, Bytes::new())
        });
        status.stored = stored == Some(true);
        if stored.is_none() {
            status.detail = Some("internal-error");
        }
        if let Some(l) = leader {
            if status.stored {
                l.complete();
            } else {
                l.fail();
            }
        }
        if let Some(proto) = nm {
            return not_modified_response(engine, &proto, &status, &parts.headers);
        }
        engine.finish_forwarded(&mut parts.headers, &status);
        return Response::from_parts(parts, CacheBody::pass(body));
    }
    // Reserve a known length up front, so that followers never stream a recording that could
    // be cut off by the budget half way; an unknown length reserves as it arrives.
    let reserved = size.unwrap_or(0);
    if !engine.recording.take(reserved) {
        if let Some(l) = leader {
            // Followers go to the origin themselves; nothing is buffered for them. The budget
            // is this moment's, not the URL's: no hit-for-pass mark.
            l.not_shared();
        }
        status.detail = Some(RECORDING_LIMIT);
        if not_modified {
            return not_modified_response(engine, &proto, &status, &parts.headers);
        }
        engine.finish_forwarded(&mut parts.headers, &status);
        return Response::from_parts(parts, CacheBody::pass(body));
    }
    status.detail = Some(STORING);
    if let Some(n) = size {
        // Followers and later hits need the length the origin may have left to framing.
        proto
            .headers
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from(n));
    }
    let nm = not_modified.then(|| not_modified_response(engine, &proto, &status, &parts.headers));
    let streaming = streamable && leader.is_some();
    if streaming && let Some(l) = &leader {
        l.stream(Arc::new(proto.clone()));
    }
    let commit_engine = engine.clone();
    let commit: Box<dyn FnOnce(Bytes) + Send> = Box::new(move |bytes| {
        let _ = guarded(&commit_engine, "storing a response", || {
            commit_engine.commit(proto, bytes)
        });
    });
    let mut recorder = Recorder::new(
        engine.s.cfg.max_object_bytes,
        size,
        leader,
        streaming,
        commit,
        Some((engine.recording.clone(), reserved)),
    );
    if whole {
        recorder = recorder.fill_whole();
    }
    let limit = engine.s.cfg.background_timeout;
    if let Some(nm) = nm {
        // The client's validator matches: it gets a 304 now, the store gets the body.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(drain(Box::pin(body), recorder, limit));
        }
        return nm;
    }
    let resume: Resume<B> = Box::new(move |rest, recorder| {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(drain(rest, recorder, limit));
        }
    });
    engine.finish_forwarded(&mut parts.headers, &status);
    Response::from_parts(parts, CacheBody::record(body, recorder, Some(resume)))
}

/// The 304 for a client whose validator the recorded response matches. It carries the origin's
/// `Set-Cookie`: the response was fetched for this client, whatever is stored.
fn not_modified_response<B>(
    engine: &Engine,
    proto: &crate::entry::StoredResponse,
    status: &CacheStatus,
    origin: &HeaderMap,
) -> Response<CacheBody<B>> {
    let mut nm = engine.not_modified_for(proto, status);
    for v in origin.get_all(header::SET_COOKIE) {
        nm.headers_mut().append(header::SET_COOKIE, v.clone());
    }
    nm.map(CacheBody::full)
}

/// A request the cache does not store: forward it, then invalidate (§4.4) or freshen a stored
/// GET from a HEAD (§4.3.5) as the plan says.
async fn pass_through<S, ReqBody, ResBody>(
    engine: Arc<Engine>,
    mut svc: S,
    req: Request<ReqBody>,
    pass: Pass,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let request_headers = pass.post.then(|| req.headers().clone());
    let request_time: SystemTime = engine.now();
    let resp = match call_inner(&mut svc, req, None).await {
        Upstream::Response(r) => r,
        Upstream::Error(e) => return Err(e),
        Upstream::TimedOut => {
            return Ok(engine.origin_timeout(Fwd::Bypass).map(CacheBody::full));
        }
    };
    let response_time = engine.now();
    let (mut parts, body) = resp.into_parts();
    let size = exact_size(&parts.headers, &body);
    let post = guarded(&engine, "passing a response", || {
        let received = Received {
            status: parts.status,
            headers: &parts.headers,
            size,
            close_delimited: parts.extensions.get::<CloseDelimited>().is_some(),
            request_time,
            response_time,
        };
        let ok = parts.status.is_success() || parts.status.is_redirection();
        if let Some(inv) = &pass.invalidate
            && ok
        {
            engine.invalidate(inv, &parts.headers);
        }
        if let Some(c) = &pass.head_of
            && parts.status == http::StatusCode::OK
        {
            engine.freshen_from_head(
                c,
                &parts.headers,
                request_time,
                response_time,
                pass.credentials,
            );
        }
        match (&pass.invalidate, &request_headers) {
            (Some(inv), Some(request)) => engine.decide_post(inv, request, &received),
            _ => None,
        }
    })
    .flatten();
    if let Some((proto, status)) = post {
        return Ok(record(
            &engine,
            Recording {
                parts,
                body,
                proto,
                status,
                size,
                leader: None,
                streamable: false,
                not_modified: false,
                whole: false,
            },
        ));
    }
    engine.finish_forwarded(&mut parts.headers, &pass.status);
    Ok(Response::from_parts(parts, CacheBody::pass(body)))
}

/// stale-while-revalidate: refresh the entry in the background, once per key (RFC 5861 §3).
fn spawn_refresh<S, ReqBody, ResBody>(
    engine: Arc<Engine>,
    svc: S,
    req: Request<ReqBody>,
    fwd: Forward,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + Send + 'static,
{
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Join::Lead(leader) = engine.fills.join(fwd.fill_key) else {
        return;
    };
    // A HEAD that hit a stale entry refreshes it with a GET: only a GET response can replace it.
    let mut req = req;
    *req.method_mut() = http::Method::GET;
    engine.stats.background();
    let limit = engine.s.cfg.background_timeout;
    handle.spawn(async move {
        let work = async move {
            if let Ok(resp) = fetch(engine, svc, req, fwd, Some(leader)).await {
                let body = resp.into_body();
                if body.is_recording() {
                    let mut body = std::pin::pin!(body);
                    while let Some(Ok(_)) = body.frame().await {}
                }
            }
        };
        let _ = tokio::time::timeout(limit, work).await;
    });
}
