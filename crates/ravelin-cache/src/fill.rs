//! Request coalescing: concurrent misses for one key share one origin fetch (a "fill").
//!
//! The first request becomes the leader and registers a [`Fill`]; later ones follow it. When the
//! leader's response turns out storable and its length is known and within the object limit, the
//! leader publishes the response head and followers stream the body from the fill as it arrives.
//! Otherwise followers wait for the outcome: on `Complete` they read the stored copy, on anything
//! else (uncacheable response, failure, the leader dropped) they go to the origin themselves —
//! a response that is not storable is never shared, as it may be private to the first client.
//!
//! A follower never hangs: the leader handle marks the fill failed when dropped unfinished, every
//! wait has a deadline, and the map of fills is bounded.
//!
//! **Hit-for-pass.** When a leader's response turns out not storable, its key is remembered as
//! uncacheable for [`HIT_FOR_PASS`] (Varnish's "hit-for-miss" object): the next requests for it go
//! to the origin at once, side by side, instead of queueing behind a leader only to be sent to
//! the origin one after the other when it answers (issue 13: on an uncacheable URL that queue
//! cost more than the rest of the cache layer). Only coalescing is skipped: a response that is
//! storable again is stored as always, which ends the pass at the next fill.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::entry::StoredResponse;

/// How a fill ended, or how far it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the origin's response head.
    Pending,
    /// The head is published and the body is arriving.
    Streaming,
    /// The response is stored; followers read it from the store (or finish streaming).
    Complete,
    /// The origin failed and the leader served a stale copy (stale-if-error); followers may too.
    ServedStale,
    /// The response must not be shared.
    Uncacheable,
    /// The fetch failed or was abandoned.
    Failed,
}

struct State {
    phase: Phase,
    head: Option<Arc<StoredResponse>>,
    chunks: Vec<Bytes>,
    wakers: Vec<Waker>,
}

/// One in-flight fetch shared by a leader and its followers.
pub(crate) struct Fill {
    state: Mutex<State>,
}

impl Fill {
    fn new() -> Self {
        Self {
            state: Mutex::new(State {
                phase: Phase::Pending,
                head: None,
                chunks: Vec::new(),
                wakers: Vec::new(),
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let wakers = {
            let mut s = self.state.lock();
            f(&mut s);
            std::mem::take(&mut s.wakers)
        };
        // Wake outside the lock.
        for w in wakers {
            w.wake();
        }
    }

    fn register(s: &mut State, cx: &Context<'_>) {
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
        }
    }

    /// Waits until the head is published or the fill ends.
    pub(crate) async fn outcome(&self) -> (Phase, Option<Arc<StoredResponse>>) {
        poll_fn(|cx| {
            let mut s = self.state.lock();
            match s.phase {
                Phase::Pending => {
                    Self::register(&mut s, cx);
                    Poll::Pending
                }
                phase => Poll::Ready((phase, s.head.clone())),
            }
        })
        .await
    }

    /// The next body chunk for a follower at position `next`: `Ready(Some(Ok))` a chunk,
    /// `Ready(None)` the end, `Ready(Some(Err(())))` the fetch failed.
    pub(crate) fn poll_chunk(
        &self,
        next: usize,
        cx: &Context<'_>,
    ) -> Poll<Option<Result<Bytes, ()>>> {
        let mut s = self.state.lock();
        if let Some(chunk) = s.chunks.get(next) {
            return Poll::Ready(Some(Ok(chunk.clone())));
        }
        match s.phase {
            Phase::Complete => Poll::Ready(None),
            Phase::Streaming | Phase::Pending => {
                Self::register(&mut s, cx);
                Poll::Pending
            }
            Phase::Failed | Phase::Uncacheable | Phase::ServedStale => Poll::Ready(Some(Err(()))),
        }
    }
}

/// How long a key whose response was not storable skips coalescing (see the module docs).
pub(crate) const HIT_FOR_PASS: Duration = Duration::from_secs(30);

/// The registry's state: the fills in flight, and the hit-for-pass marks beside them (each
/// map bounded by `max`, so marks never take the room of fills).
#[derive(Default)]
struct Registry {
    fills: HashMap<u64, Arc<Fill>, foldhash::fast::RandomState>,
    /// Key → until when it skips coalescing.
    marks: HashMap<u64, Instant, foldhash::fast::RandomState>,
    /// When expired marks were last swept (at most once per [`MARK_SWEEP`]).
    swept: Option<Instant>,
}

/// The least time between two sweeps of expired marks: a sweep walks every mark, so it is
/// rationed to keep each request's work constant.
const MARK_SWEEP: Duration = Duration::from_secs(1);

/// The registry of fills in flight and hit-for-pass marks, each bounded by `max`.
pub(crate) struct Fills {
    map: Mutex<Registry>,
    max: usize,
}

/// What a request becomes when it asks to coalesce.
pub(crate) enum Join {
    /// It fetches; others follow.
    Lead(Leader),
    /// Someone else is fetching.
    Follow(Arc<Fill>),
    /// Too many fills in flight: go alone.
    Full,
    /// The key's last response was not storable (hit-for-pass): go alone.
    Pass,
}

impl Fills {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            map: Mutex::new(Registry::default()),
            max,
        })
    }

    pub(crate) fn join(self: &Arc<Self>, key: u64) -> Join {
        let mut registry = self.map.lock();
        if let Some(fill) = registry.fills.get(&key) {
            return Join::Follow(fill.clone());
        }
        if let Some(until) = registry.marks.get(&key).copied() {
            if Instant::now() < until {
                return Join::Pass;
            }
            registry.marks.remove(&key);
        }
        if registry.fills.len() >= self.max {
            return Join::Full;
        }
        let fill = Arc::new(Fill::new());
        registry.fills.insert(key, fill.clone());
        Join::Lead(Leader {
            fills: self.clone(),
            key,
            fill,
            done: false,
        })
    }

    /// Whether `key` carries an unexpired hit-for-pass mark (its last response was not
    /// storable): a range miss then goes forward with its `Range` instead of fetching it whole.
    pub(crate) fn marked(&self, key: u64) -> bool {
        self.map
            .lock()
            .marks
            .get(&key)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Whether a fill for `key` is in flight (background revalidation runs once per key).
    pub(crate) fn in_flight(&self, key: u64) -> bool {
        self.map.lock().fills.contains_key(&key)
    }

    /// Removes `fill` from `key` and, with `pass`, leaves a hit-for-pass mark. A full set of
    /// marks is swept of expired ones at most once per [`MARK_SWEEP`]; when still full, no mark
    /// is left (marks only save work; fills never wait for room).
    fn forget(&self, key: u64, fill: &Arc<Fill>, pass: bool) {
        let mut registry = self.map.lock();
        if !registry
            .fills
            .get(&key)
            .is_some_and(|f| Arc::ptr_eq(f, fill))
        {
            return;
        }
        registry.fills.remove(&key);
        if !pass {
            return;
        }
        let now = Instant::now();
        if registry.marks.len() >= self.max
            && registry
                .swept
                .is_none_or(|at| now.saturating_duration_since(at) >= MARK_SWEEP)
        {
            registry.marks.retain(|_, until| now < *until);
            registry.swept = Some(now);
        }
        if registry.marks.len() < self.max || registry.marks.contains_key(&key) {
            registry.marks.insert(key, now + HIT_FOR_PASS);
        }
    }

    /// Fills in flight (hit-for-pass marks not counted).
    pub(crate) fn len(&self) -> usize {
        self.map.lock().fills.len()
    }
}

/// The leader's side of a fill. Dropping it unfinished fails the fill.
pub(crate) struct Leader {
    fills: Arc<Fills>,
    key: u64,
    fill: Arc<Fill>,
    done: bool,
}

impl Leader {
    /// Publishes the head of a storable response whose body followers may stream.
    pub(crate) fn stream(&self, head: Arc<StoredResponse>) {
        self.fill.update(|s| {
            s.head = Some(head);
            s.phase = Phase::Streaming;
        });
    }

    /// Appends a body chunk (only after [`stream`](Self::stream)).
    pub(crate) fn push(&self, chunk: Bytes) {
        self.fill.update(|s| s.chunks.push(chunk));
    }

    /// Whether anyone follows this fill.
    pub(crate) fn has_followers(&self) -> bool {
        Arc::strong_count(&self.fill) > 2
    }

    fn finish(mut self, phase: Phase) {
        self.done = true;
        self.fills
            .forget(self.key, &self.fill, phase == Phase::Uncacheable);
        self.fill.update(|s| s.phase = phase);
    }

    /// The response is stored.
    pub(crate) fn complete(self) {
        self.finish(Phase::Complete);
    }

    /// The leader served a stale copy because the origin failed.
    pub(crate) fn served_stale(self) {
        self.finish(Phase::ServedStale);
    }

    /// The response may not be shared, and says so of itself (`no-store`, `private`, …): the
    /// key is remembered for [`HIT_FOR_PASS`].
    pub(crate) fn uncacheable(self) {
        self.finish(Phase::Uncacheable);
    }

    /// The response may not be shared this time, for a reason of this request or this moment
    /// (its `Authorization`, a range, an error, the recording budget): followers go alone, and
    /// no hit-for-pass mark is left — one client's request must not switch coalescing off for
    /// everyone.
    pub(crate) fn not_shared(mut self) {
        self.done = true;
        self.fills.forget(self.key, &self.fill, false);
        self.fill.update(|s| s.phase = Phase::Uncacheable);
    }

    /// The fetch failed.
    pub(crate) fn fail(self) {
        self.finish(Phase::Failed);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.done {
            self.fills.forget(self.key, &self.fill, false);
            self.fill.update(|s| s.phase = Phase::Failed);
        }
    }
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader").field("key", &self.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_see_the_outcome_and_the_map_empties() {
        let fills = Fills::new(8);
        let Join::Lead(leader) = fills.join(1) else {
            panic!("first is leader")
        };
        let Join::Follow(f) = fills.join(1) else {
            panic!("second follows")
        };
        assert!(leader.has_followers());
        let waiter = tokio::spawn(async move { f.outcome().await.0 });
        tokio::task::yield_now().await;
        leader.uncacheable();
        assert_eq!(waiter.await.unwrap(), Phase::Uncacheable);
        assert_eq!(fills.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_uncacheable_response_sends_the_next_requests_alone_for_a_while() {
        let fills = Fills::new(8);
        let Join::Lead(leader) = fills.join(3) else {
            panic!("first is leader")
        };
        leader.uncacheable();
        // Hit-for-pass: no leader to queue behind, no fill in flight.
        assert!(matches!(fills.join(3), Join::Pass));
        assert!(matches!(fills.join(3), Join::Pass));
        assert!(!fills.in_flight(3));
        assert_eq!(fills.len(), 0);
        // Other keys coalesce as before.
        assert!(matches!(fills.join(4), Join::Lead(_)));
        tokio::time::advance(HIT_FOR_PASS).await;
        // The mark has expired: the next request leads a fill again.
        let Join::Lead(again) = fills.join(3) else {
            panic!("leads after the pass expired")
        };
        again.complete();
        assert!(
            matches!(fills.join(3), Join::Lead(_)),
            "a stored response leaves no mark"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_not_shared_for_this_request_leaves_no_mark() {
        let fills = Fills::new(8);
        let Join::Lead(leader) = fills.join(5) else {
            panic!("leads")
        };
        let Join::Follow(follower) = fills.join(5) else {
            panic!("follows")
        };
        leader.not_shared();
        assert_eq!(follower.outcome().await.0, Phase::Uncacheable);
        assert!(
            matches!(fills.join(5), Join::Lead(_)),
            "coalescing stays on"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn marks_never_take_the_room_of_fills_and_are_bounded() {
        let fills = Fills::new(2);
        for key in [1, 2, 3] {
            let Join::Lead(leader) = fills.join(key) else {
                panic!("leads")
            };
            leader.uncacheable();
        }
        // Two marks at most (the third was not kept), and fills still have all their room.
        assert_eq!(fills.map.lock().marks.len(), 2);
        let Join::Lead(three) = fills.join(3) else {
            panic!("no mark for 3: it leads")
        };
        let Join::Lead(nine) = fills.join(9) else {
            panic!("leads")
        };
        assert!(
            matches!(fills.join(10), Join::Full),
            "two fills in flight fill it"
        );
        drop((three, nine));
        // Expired marks are swept when a new one needs the room.
        tokio::time::advance(HIT_FOR_PASS).await;
        let Join::Lead(eleven) = fills.join(11) else {
            panic!("leads")
        };
        eleven.uncacheable();
        assert!(matches!(fills.join(11), Join::Pass));
        assert_eq!(fills.map.lock().marks.len(), 1);
    }

    #[tokio::test]
    async fn a_dropped_leader_fails_its_followers() {
        let fills = Fills::new(8);
        let Join::Lead(leader) = fills.join(7) else {
            panic!()
        };
        let Join::Follow(f) = fills.join(7) else {
            panic!()
        };
        let waiter = tokio::spawn(async move { f.outcome().await.0 });
        drop(leader);
        assert_eq!(waiter.await.unwrap(), Phase::Failed);
        assert!(!fills.in_flight(7));
    }

    #[test]
    fn the_registry_is_bounded() {
        let fills = Fills::new(1);
        let _a = match fills.join(1) {
            Join::Lead(l) => l,
            _ => panic!(),
        };
        assert!(matches!(fills.join(2), Join::Full));
    }
}
