//! The cache's decisions, as synchronous functions over headers: what to do with a request
//! ([`Engine::plan`]) and with the origin's answer ([`Engine::decide`]). The tower service in
//! `service.rs` only moves bodies and awaits the origin; keeping every rule here lets the service
//! wrap each decision in `catch_unwind` and fail open.
//!
//! This module holds the [`Engine`] and the types its entry points take and return; the rules
//! live in one submodule per responsibility:
//!
//! - `plan.rs`: what to do with a request (lookup, freshness, coalescing, the upstream
//!   validators);
//! - `serve.rs`: responses built from a stored one (hits, 304, 206, 504);
//! - `respond.rs`: what to do with the origin's response (store, update, pass, serve stale;
//!   304 and HEAD merges; headers of forwarded responses);
//! - `store.rs`: writing entries, removing and purging them, invalidation.

mod plan;
mod respond;
mod serve;
// Always compiled: warm restarts rebuild entries through it too (its Redis parts are gated).
mod shared;
mod store;
mod warm;

#[cfg(feature = "redis")]
pub(crate) use shared::SharedUse;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use ravelin_http::RequestIdentity;
use ravelin_primitives::KillSwitch;
use ravelin_primitives::clock::Clock;

use crate::body::RecordingBudget;
use crate::config::Settings;
use crate::entry::StoredResponse;
use crate::fill::Fills;
use crate::headers;
use crate::key::KeyHasher;
use crate::policy::{self, Effective, Heuristics, RequestDirectives, StaleDefaults};
use crate::stats::Stats;
use crate::status::{CacheStatus, Fwd};
use crate::store::Storage;

/// The wall clock freshness arithmetic reads: HTTP ages are computed against `Date`, `Expires`
/// and `Last-Modified`, which are wall-clock times, so the cache needs a [`SystemTime`], not a
/// monotonic instant. (Timeouts use `tokio::time`, which tests pause.)
pub(crate) type WallTime = Arc<dyn Clock<Instant = SystemTime>>;

/// Shared state of one cache: settings, store, coalescing registry, clock and counters.
pub(crate) struct Engine {
    pub(crate) s: Settings,
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) fills: Arc<Fills>,
    pub(crate) clock: WallTime,
    pub(crate) hasher: KeyHasher,
    pub(crate) stats: Arc<Stats>,
    pub(crate) kill_switch: Option<KillSwitch>,
    /// Bytes held by recordings in progress, against `max_recording_bytes`.
    pub(crate) recording: Arc<RecordingBudget>,
    /// The shared second tier (`[cache.shared_tier]`), built once with the layer.
    #[cfg(feature = "redis")]
    pub(crate) shared: Option<crate::shared_tier::SharedTier>,
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
    /// The client's own `If-None-Match` / `If-Modified-Since`. With a candidate they are
    /// replaced upstream by the cache's validators and evaluated locally against the result;
    /// without one they go upstream as sent (see [`Forward::passes_client_conditionals`]).
    pub(crate) client_conditionals: HeaderMap,
    /// How long to wait for the origin before serving the candidate under stale-if-error.
    pub(crate) sie_timeout: Option<Duration>,
    /// `Some(false)` when this request waited on another's fetch and then went alone.
    pub(crate) collapsed: Option<bool>,
    /// A GET with `Range` that missed, fetched whole (without `Range` and `If-Range`) to be
    /// stored when its declared length is within `range_fill_max_bytes`; the client's range is
    /// answered from the response (RFC 9110 §14).
    pub(crate) range_fill: bool,
}

impl Forward {
    /// A conditional miss: nothing is stored for the request (not even a stale response), so
    /// the client's `If-None-Match` / `If-Modified-Since` go upstream as sent (RFC 9111 §4.3.2,
    /// RFC 9110 §13.2.1), and an origin's 304 goes back to the client unstored. Such a request
    /// does not lead a coalesced fill: its 304 would leave followers without a body.
    pub(crate) fn passes_client_conditionals(&self) -> bool {
        self.candidate.is_none() && !self.client_conditionals.is_empty()
    }
}

/// `Cache-Status: …; detail=conditional-miss`: a 304 from the origin to a miss that carried the
/// client's validators, passed on to the client and not stored.
pub(crate) const CONDITIONAL_MISS: &str = "conditional-miss";

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

/// `Cache-Status: …; detail=unknown-length`: a range fill whose response declared no length,
/// passed on whole and not stored.
pub(crate) const RANGE_UNKNOWN_LENGTH: &str = "unknown-length";

static HDR_AUTHORIZATION: HeaderName = header::AUTHORIZATION;

/// Whether a request carries credentials that may personalise its response.
fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(&HDR_AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

impl Engine {
    pub(crate) fn new(
        s: Settings,
        store: Arc<dyn Storage>,
        clock: WallTime,
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
            #[cfg(feature = "redis")]
            shared: None,
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
        policy::effective(headers, &self.s.targeted, self.name())
    }

    /// This cache's device token when it honours `Surrogate-Control` (the field is among the
    /// targeted fields): its name.
    pub(crate) fn surrogate_device(&self) -> Option<&str> {
        self.s
            .targeted
            .contains(&headers::SURROGATE_CONTROL)
            .then(|| self.name())
    }

    /// Header work every response sent downstream from a stored or forwarded one needs: the
    /// `Surrogate-Control` members this cache consumed are removed.
    pub(crate) fn outgoing(&self, headers: &mut HeaderMap) {
        if let Some(device) = self.surrogate_device() {
            headers::strip_surrogate_control(headers, device);
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
