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

/// What the registry holds for a key.
enum Slot {
    /// A fetch in flight.
    Fill(Arc<Fill>),
    /// The last fetch was not storable: requests until `until` go alone.
    Pass { until: Instant },
}

/// The registry of fills and hit-for-pass marks, bounded by `max` together.
pub(crate) struct Fills {
    map: Mutex<HashMap<u64, Slot, foldhash::fast::RandomState>>,
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
            map: Mutex::new(HashMap::default()),
            max,
        })
    }

    pub(crate) fn join(self: &Arc<Self>, key: u64) -> Join {
        let now = Instant::now();
        let mut map = self.map.lock();
        match map.get(&key) {
            Some(Slot::Fill(fill)) => return Join::Follow(fill.clone()),
            Some(Slot::Pass { until }) if now < *until => return Join::Pass,
            // An expired mark is replaced by the fill below.
            Some(Slot::Pass { .. }) => {}
            None => {
                if map.len() >= self.max {
                    // Make room from expired marks before giving up; a full map of live fills
                    // and marks sends the request alone.
                    map.retain(|_, slot| !matches!(slot, Slot::Pass { until } if now >= *until));
                    if map.len() >= self.max {
                        return Join::Full;
                    }
                }
            }
        }
        let fill = Arc::new(Fill::new());
        map.insert(key, Slot::Fill(fill.clone()));
        Join::Lead(Leader {
            fills: self.clone(),
            key,
            fill,
            done: false,
        })
    }

    /// Whether a fill for `key` is in flight (background revalidation runs once per key).
    pub(crate) fn in_flight(&self, key: u64) -> bool {
        matches!(self.map.lock().get(&key), Some(Slot::Fill(_)))
    }

    /// Removes `fill` from `key`, or with `pass`, leaves a hit-for-pass mark in its place.
    fn forget(&self, key: u64, fill: &Arc<Fill>, pass: bool) {
        let mut map = self.map.lock();
        if matches!(map.get(&key), Some(Slot::Fill(f)) if Arc::ptr_eq(f, fill)) {
            if pass {
                let until = Instant::now() + HIT_FOR_PASS;
                map.insert(key, Slot::Pass { until });
            } else {
                map.remove(&key);
            }
        }
    }

    /// Fills in flight (hit-for-pass marks not counted).
    pub(crate) fn len(&self) -> usize {
        self.map
            .lock()
            .values()
            .filter(|slot| matches!(slot, Slot::Fill(_)))
            .count()
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

    /// The response may not be shared.
    pub(crate) fn uncacheable(self) {
        self.finish(Phase::Uncacheable);
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
    async fn expired_marks_make_room_in_a_full_registry() {
        let fills = Fills::new(2);
        for key in [1, 2] {
            let Join::Lead(leader) = fills.join(key) else {
                panic!("leads")
            };
            leader.uncacheable();
        }
        assert!(
            matches!(fills.join(9), Join::Full),
            "two live marks fill it"
        );
        tokio::time::advance(HIT_FOR_PASS).await;
        assert!(matches!(fills.join(9), Join::Lead(_)));
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
