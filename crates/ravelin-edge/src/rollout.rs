//! Rollouts at the edge (issue 15): the sample of recent request heads the pre-activation
//! checks score, the client's [`CohortKey`], and the observer that files every request's
//! outcome with the cohort of each rollout in progress.
//!
//! Two slots of the stack take part. The **observer** is the outermost module slot (inside the
//! ingress stage, so forwarding headers are already normalized): it samples one request head in
//! `samples_per_second` at most, and while a rollout runs it sets the request's [`CohortKey`] (the client
//! address as the rate limiter resolves it) and a [`Probe`]. The **marker** sits under every
//! guard: a request that reaches it passed them all, and the [`Skipped`] guards it carries say
//! which failed, panicked or timed out. When the answer comes back, the observer files one
//! [`Observation`] with each rollout: answered by the edge (the marker never saw it), origin
//! 5xx (it did, and the answer is a 5xx), and the guards' failures.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use arc_swap::ArcSwap;
use http::Request;
use ravelin_botscore::RequestView;
use ravelin_botscore::effect::{RequestSample, SampledRequest};
use ravelin_config::{CohortKey, Observation};
use ravelin_failsafe::{RequestHead, SkipReason, Skipped};
use ravelin_primitives::clock::{Clock, MonotonicClock};
use ravelin_ratelimit::ClientIpResolver;

use crate::modules::Followed;
use crate::stack::{EdgeFuture, EdgeService, ErasedService};

/// The sample's defaults: 2,000 heads, at most 20 a second.
pub(crate) const DEFAULT_SAMPLE_CAPACITY: usize = 2_000;
/// See [`DEFAULT_SAMPLE_CAPACITY`].
pub(crate) const DEFAULT_SAMPLES_PER_SECOND: u32 = 20;
/// The most `samples_per_second` accepted.
pub(crate) const MAX_SAMPLES_PER_SECOND: u32 = 10_000;

/// The edge's rollout state, shared by the stack's slots, the modules' checks and the admin API.
pub(crate) struct Rollouts {
    /// Recent request heads as the bot scorer reads them.
    pub(crate) bot_sample: Arc<RequestSample>,
    /// Recent request heads as the rate limiter reads them.
    pub(crate) head_sample: Arc<ravelin_ratelimit::effect::HeadSample>,
    /// Nanoseconds between two samples (0: none are taken). Sampling by time bounds its cost
    /// whatever the traffic: one sample copies a head (a few hundred allocations with the rate
    /// limiter's digests), which at one request in N would weigh on every request.
    interval: AtomicU64,
    /// When the next sample may be taken, on `clock`.
    next_at: AtomicU64,
    /// Requests seen, and the count at each sample kept (oldest first, as many as the sample
    /// holds): over the sample's own span, requests per sample is the "one in N" the rate-limit
    /// estimate scales by.
    seen: AtomicU64,
    marks: std::sync::Mutex<std::collections::VecDeque<u64>>,
    capacity: usize,
    /// The documents that can be rolled out (the bot feature file), as last installed.
    stores: ArcSwap<Vec<Arc<dyn Followed>>>,
    /// How the client address is resolved (the ingress stage's trusted proxies).
    resolver: ArcSwap<ClientIpResolver>,
    /// The sampled heads' arrival times, as the rate limiter's estimate reads them.
    clock: MonotonicClock,
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts")
            .field("bot_sample", &self.bot_sample.len())
            .finish_non_exhaustive()
    }
}

impl Rollouts {
    /// Keeps the last `capacity` heads, sampled at most `per_second` times a second (0:
    /// none).
    pub(crate) fn new(capacity: usize, per_second: u32) -> Self {
        Self {
            bot_sample: Arc::new(RequestSample::new(capacity, 1)),
            head_sample: Arc::new(ravelin_ratelimit::effect::HeadSample::new(capacity, 1)),
            interval: AtomicU64::new(interval(per_second)),
            next_at: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            marks: std::sync::Mutex::new(std::collections::VecDeque::new()),
            capacity: capacity.clamp(1, ravelin_botscore::effect::MAX_SAMPLE_CAPACITY),
            stores: ArcSwap::from_pointee(Vec::new()),
            resolver: ArcSwap::from_pointee(ClientIpResolver::default()),
            clock: MonotonicClock::new(),
        }
    }

    /// The documents that can be rolled out, after a stack change.
    pub(crate) fn set_stores(&self, stores: Vec<Arc<dyn Followed>>) {
        self.stores.store(Arc::new(stores));
    }

    /// The documents that can be rolled out.
    pub(crate) fn stores(&self) -> Arc<Vec<Arc<dyn Followed>>> {
        self.stores.load_full()
    }

    /// The client address resolution (from `[ingress] trusted_proxies`).
    pub(crate) fn set_resolver(&self, resolver: ClientIpResolver) {
        self.resolver.store(Arc::new(resolver));
    }

    /// The sampling rate (from `[rollout] samples_per_second`).
    pub(crate) fn set_rate(&self, per_second: u32) {
        self.interval.store(interval(per_second), Ordering::Relaxed);
    }

    /// About one request in this many was sampled over the span of the sample kept: requests
    /// seen since its oldest head, per head kept (at least 1).
    pub(crate) fn every(&self) -> u64 {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let (Some(&oldest), kept) = (marks.front(), marks.len() as u64) else {
            return 1;
        };
        let seen = self.seen.load(Ordering::Relaxed).saturating_sub(oldest);
        (seen / kept.max(1)).max(1)
    }

    /// Advances every rollout in progress (promote or roll back when due).
    pub(crate) fn tick(&self) {
        for store in self.stores.load().iter() {
            store.tick();
        }
    }

    /// The client's cohort key: its address as the rate limiter resolves it behind the
    /// trusted proxies; `None` without one (such a client stays on the active documents).
    pub(crate) fn client_key<B>(&self, request: &Request<B>) -> Option<CohortKey> {
        self.client(request).map(CohortKey::of_ip)
    }

    fn client<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        self.resolver.load().resolve(
            request
                .extensions()
                .get::<ravelin_http::PeerAddr>()
                .map(|p| p.0),
            request.headers(),
        )
    }

    /// Whether this request is one of the sampled ones: a relaxed increment, a clock read and a
    /// load; one request per interval wins the exchange.
    fn sampled(&self) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed);
        let interval = self.interval.load(Ordering::Relaxed);
        if interval == 0 {
            return false;
        }
        let now = self.clock.now().as_u64();
        let next = self.next_at.load(Ordering::Relaxed);
        if now < next {
            return false;
        }
        let won = self
            .next_at
            .compare_exchange(
                next,
                now.saturating_add(interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
        if won {
            let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
            if marks.len() >= self.capacity {
                marks.pop_front();
            }
            marks.push_back(self.seen.load(Ordering::Relaxed));
        }
        won
    }

    fn sample<B>(&self, request: &Request<B>, client: Option<IpAddr>) {
        let head = RequestHead::from_request(request);
        let view = RequestView::from_head(&head, None).with_peer(client);
        if let Some(sampled) = SampledRequest::of(&view) {
            self.bot_sample.push(sampled);
        }
        let at = self.clock.now();
        if let Some(sampled) =
            ravelin_ratelimit::effect::SampledHead::from_request(request, client, at)
        {
            self.head_sample.push(sampled);
        }
    }
}

/// Nanoseconds between samples at `per_second` (0: never).
fn interval(per_second: u32) -> u64 {
    if per_second == 0 {
        0
    } else {
        1_000_000_000 / u64::from(per_second)
    }
}

/// What the marker saw of one request, read by the observer when its answer comes back.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    passed_guards: AtomicBool,
    guard_failed: AtomicBool,
    panicked: AtomicBool,
    timed_out: AtomicBool,
}

impl Probe {
    fn observation(&self, status: http::StatusCode) -> Observation {
        let passed = self.passed_guards.load(Ordering::Relaxed);
        Observation {
            guard_failed: self.guard_failed.load(Ordering::Relaxed),
            panicked: self.panicked.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            answered_by_edge: !passed,
            origin_5xx: passed && status.is_server_error(),
        }
    }
}

/// The observer slot: samples heads, keys clients, files outcomes. Outside a rollout it
/// passes the inner future through as it is (no allocation of its own).
pub(crate) fn observer<B: Send + 'static>(
    rollouts: Arc<Rollouts>,
    inner: EdgeService<B>,
) -> EdgeService<B> {
    EdgeService::from_erased(Observer { rollouts, inner })
}

/// The marker slot: a request that reaches it passed every guard. It passes the inner future
/// through as it is.
pub(crate) fn marker<B: Send + 'static>(inner: EdgeService<B>) -> EdgeService<B> {
    EdgeService::from_erased(Marker { inner })
}

struct Observer<B> {
    rollouts: Arc<Rollouts>,
    inner: EdgeService<B>,
}

impl<B> Clone for Observer<B> {
    fn clone(&self) -> Self {
        Self {
            rollouts: Arc::clone(&self.rollouts),
            inner: self.inner.clone(),
        }
    }
}

impl<B: Send + 'static> ErasedService<B> for Observer<B> {
    fn call(&self, mut request: Request<B>) -> EdgeFuture {
        let rollouts = &*self.rollouts;
        let sampled = rollouts.sampled();
        let stores = rollouts.stores.load();
        let rolling = stores.iter().any(|store| store.in_rollout());
        if !sampled && !rolling {
            // The common case: one atomic increment and one pointer load.
            return self.inner.call_shared(request);
        }
        let client = rollouts.client(&request);
        if sampled {
            rollouts.sample(&request, client);
        }
        if !rolling {
            return self.inner.call_shared(request);
        }
        let Some(client) = client else {
            // No address to key the client by: it is served the active documents and not
            // counted in either cohort.
            return self.inner.call_shared(request);
        };
        let key = CohortKey::of_ip(client);
        let probe = Arc::new(Probe::default());
        request.extensions_mut().insert(key);
        request.extensions_mut().insert(Arc::clone(&probe));
        let assignments: Vec<_> = stores
            .iter()
            .filter_map(|store| store.assignment(key).map(|a| (Arc::clone(store), a)))
            .collect();
        let future = self.inner.call_shared(request);
        Box::pin(async move {
            let response = future.await?;
            let observation = probe.observation(response.status());
            for (store, assignment) in &assignments {
                store.observe(*assignment, &observation);
            }
            Ok(response)
        })
    }
}

struct Marker<B> {
    inner: EdgeService<B>,
}

impl<B> Clone for Marker<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Send + 'static> ErasedService<B> for Marker<B> {
    fn call(&self, request: Request<B>) -> EdgeFuture {
        if let Some(probe) = request.extensions().get::<Arc<Probe>>() {
            probe.passed_guards.store(true, Ordering::Relaxed);
            if let Some(skipped) = request.extensions().get::<Skipped>() {
                for (_, reason) in skipped.iter() {
                    let flag = match reason {
                        SkipReason::Failed => &probe.guard_failed,
                        SkipReason::Panicked => &probe.panicked,
                        SkipReason::TimedOut => &probe.timed_out,
                        SkipReason::CircuitOpen | SkipReason::Killed => continue,
                    };
                    flag.store(true, Ordering::Relaxed);
                }
            }
        }
        self.inner.call_shared(request)
    }
}
