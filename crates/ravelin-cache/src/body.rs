//! [`CacheBody`]: the response body of the cache layer.
//!
//! A body is one of: bytes from the store; the origin's body passed through; the origin's body
//! recorded into the store while it streams to the client ("tee"); or another request's fetch,
//! followed as it arrives (request coalescing).
//!
//! Recording is bounded: at most the object limit is buffered, and a body that grows past it (or
//! past its declared `Content-Length`) stops being recorded and keeps streaming uncached.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use crate::error::{BodyError, BoxError};
use crate::fill::{Fill, Leader};

/// The body of every response that went through the cache layer.
#[pin_project]
pub struct CacheBody<B> {
    #[pin]
    kind: Kind<B>,
}

#[pin_project(project = KindProj)]
enum Kind<B> {
    Full(Option<Bytes>),
    Pass(#[pin] B),
    Record(Recording<B>),
    Follow(Follower),
    Slice(Slice<B>),
}

impl<B> CacheBody<B> {
    /// A body of stored bytes (empty bytes give an empty body).
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// The origin's body, passed through untouched.
    pub fn pass(body: B) -> Self {
        Self {
            kind: Kind::Pass(body),
        }
    }

    /// Whether this is the origin's body passed through untouched (neither served from nor
    /// recorded into the cache).
    pub fn is_pass(&self) -> bool {
        matches!(self.kind, Kind::Pass(_))
    }

    /// The origin's body, if this is one passed through ([`is_pass`](Self::is_pass)): a caller
    /// that erases body types keeps the origin body as it is instead of wrapping it once more.
    /// Its frames and errors are the ones [`BodyError::Origin`](crate::BodyError::Origin)
    /// would carry.
    pub fn into_pass(self) -> Option<B> {
        match self.kind {
            Kind::Pass(body) => Some(body),
            _ => None,
        }
    }

    pub(crate) fn record(body: B, recorder: Recorder, on_abandon: Option<Resume<B>>) -> Self {
        Self {
            kind: Kind::Record(Recording {
                body: Some(Box::pin(body)),
                recorder,
                on_abandon,
            }),
        }
    }

    pub(crate) fn follow(fill: Arc<Fill>, len: Option<u64>) -> Self {
        Self {
            kind: Kind::Follow(Follower { fill, next: 0, len }),
        }
    }

    /// Bytes `skip..skip + len` of `inner` (a client's range cut from a whole body as it
    /// streams). Dropping it drops `inner`: a recording then finishes in the background only if
    /// its recorder says so ([`Recorder::fill_whole`]).
    pub(crate) fn slice(inner: Self, skip: u64, len: u64) -> Self {
        Self {
            kind: Kind::Slice(Slice {
                inner: Box::pin(inner),
                skip,
                remaining: len,
            }),
        }
    }

    /// Whether this body is being recorded into the store (it must be read to the end to be
    /// stored).
    pub(crate) fn is_recording(&self) -> bool {
        match &self.kind {
            Kind::Record(r) => !r.recorder.finished,
            Kind::Slice(s) => s.inner.is_recording(),
            _ => false,
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Pass(body) => body.poll_frame(cx).map_err(BodyError::origin),
            KindProj::Record(rec) => rec.poll_frame(cx),
            KindProj::Follow(f) => match f.fill.poll_chunk(f.next, cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    f.next += 1;
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(Some(Err(()))) => Poll::Ready(Some(Err(BodyError::SharedFetchFailed))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            KindProj::Slice(s) => s.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(d) => d.is_none(),
            Kind::Pass(b) => b.is_end_stream(),
            // A recording must see the end of the stream to store the body, so it never claims
            // to be finished before it has been polled to the end.
            Kind::Record(r) => r.body.is_none(),
            Kind::Follow(_) => false,
            Kind::Slice(s) => s.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Pass(b) => b.size_hint(),
            Kind::Record(r) => r
                .body
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
            Kind::Follow(f) => f.len.map_or_else(SizeHint::default, SizeHint::with_exact),
            Kind::Slice(s) => SizeHint::with_exact(s.remaining),
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full(_) => "full",
            Kind::Pass(_) => "pass",
            Kind::Record(_) => "record",
            Kind::Follow(_) => "follow",
            Kind::Slice(_) => "slice",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B> Default for CacheBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

// === Follower ===

struct Follower {
    fill: Arc<Fill>,
    next: usize,
    len: Option<u64>,
}

// === Slice ===

struct Slice<B> {
    inner: Pin<Box<CacheBody<B>>>,
    /// Bytes still to drop before the range starts.
    skip: u64,
    /// Bytes of the range still to send.
    remaining: u64,
}

impl<B: Body<Data = Bytes, Error: Into<BoxError>>> Slice<B> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> PollFrame {
        loop {
            if self.remaining == 0 {
                // The range is out; the rest of the body is not the client's.
                return Poll::Ready(None);
            }
            let frame = match self.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                other => return other,
            };
            // Trailers belong to the whole body, not to a part of it.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let n = data.len() as u64;
            if self.skip >= n {
                self.skip -= n;
                continue;
            }
            let start = usize::try_from(self.skip).unwrap_or(usize::MAX);
            self.skip = 0;
            let take = usize::try_from((n - start as u64).min(self.remaining)).unwrap_or(0);
            self.remaining -= take as u64;
            if take == 0 {
                continue;
            }
            return Poll::Ready(Some(Ok(Frame::data(data.slice(start..start + take)))));
        }
    }
}

// === Recording ===

/// Finishes a recording whose client went away while others still follow it: called with the
/// rest of the origin body, it drives it to the end in the background.
pub(crate) type Resume<B> = Box<dyn FnOnce(Pin<Box<B>>, Recorder) + Send>;

struct Recording<B> {
    body: Option<Pin<Box<B>>>,
    recorder: Recorder,
    on_abandon: Option<Resume<B>>,
}

type PollFrame = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

impl<B: Body<Data = Bytes, Error: Into<BoxError>>> Recording<B> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> PollFrame {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.recorder.on_data(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.recorder.abandon();
                self.body = None;
                Poll::Ready(Some(Err(BodyError::origin(e))))
            }
            Poll::Ready(None) => {
                self.recorder.on_end();
                self.body = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<B> Drop for Recording<B> {
    fn drop(&mut self) {
        if self.recorder.finished {
            return;
        }
        match (self.body.take(), self.on_abandon.take()) {
            (Some(body), Some(resume)) if self.recorder.worth_resuming() => {
                let recorder = std::mem::replace(&mut self.recorder, Recorder::finished());
                resume(body, recorder);
            }
            _ => self.recorder.abandon(),
        }
    }
}

/// Drives the rest of a recording to its end, bounded by `limit`.
pub(crate) async fn drain<B: Body<Data = Bytes, Error: Into<BoxError>>>(
    body: Pin<Box<B>>,
    recorder: Recorder,
    limit: Duration,
) {
    let mut rec = Recording {
        body: Some(body),
        recorder,
        on_abandon: None,
    };
    let drive = std::future::poll_fn(|cx| {
        loop {
            match rec.poll_frame(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    });
    // On timeout the recording is dropped unfinished, which fails the fill.
    let _ = tokio::time::timeout(limit, drive).await;
}

/// The bytes buffered by all recordings in progress, against `max_recording_bytes`: the tee
/// holds a body until it is complete, so without this bound memory would grow with the number
/// of concurrent misses times the object limit.
#[derive(Debug)]
pub(crate) struct RecordingBudget {
    used: AtomicU64,
    limit: u64,
}

impl RecordingBudget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            limit,
        })
    }

    /// Reserves `n` bytes; `false` (and nothing reserved) when that would pass the limit.
    pub(crate) fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Returns `n` reserved bytes.
    pub(crate) fn give(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }

    /// Bytes reserved now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Collects a body into the store while it streams, mirroring chunks into a shared fill.
pub(crate) struct Recorder {
    buf: Vec<Bytes>,
    len: u64,
    limit: u64,
    expected: Option<u64>,
    leader: Option<Leader>,
    streaming: bool,
    commit: Option<Box<dyn FnOnce(Bytes) + Send>>,
    finished: bool,
    budget: Option<Arc<RecordingBudget>>,
    /// Bytes reserved in `budget` (up front for a known length, else as chunks arrive).
    held: u64,
    /// A range fill: the whole (known, bounded) body is wanted even when its client leaves.
    whole: bool,
}

impl Recorder {
    /// `commit` receives the complete body; `leader`, when streaming, receives each chunk.
    /// `held` bytes were already reserved in `budget` by the caller; more are taken as the body
    /// grows past them, and all are returned when the recording ends, however it ends.
    pub(crate) fn new(
        limit: u64,
        expected: Option<u64>,
        leader: Option<Leader>,
        streaming: bool,
        commit: Box<dyn FnOnce(Bytes) + Send>,
        budget: Option<(Arc<RecordingBudget>, u64)>,
    ) -> Self {
        let (budget, held) = match budget {
            Some((b, held)) => (Some(b), held),
            None => (None, 0),
        };
        Self {
            buf: Vec::new(),
            len: 0,
            limit,
            expected,
            leader,
            streaming,
            commit: Some(commit),
            finished: false,
            budget,
            held,
            whole: false,
        }
    }

    /// Marks a range fill: when its client has its range (or leaves), the rest of the body is
    /// still read in the background, within `background_timeout`, so that the object is stored.
    /// Only a known length is finished this way.
    pub(crate) fn fill_whole(mut self) -> Self {
        self.whole = true;
        self
    }

    fn finished() -> Self {
        Self {
            buf: Vec::new(),
            len: 0,
            limit: 0,
            expected: None,
            leader: None,
            streaming: false,
            commit: None,
            finished: true,
            budget: None,
            held: 0,
            whole: false,
        }
    }

    /// Returns the reserved bytes to the budget.
    fn release(&mut self) {
        if let Some(b) = &self.budget {
            b.give(self.held);
        }
        self.held = 0;
    }

    /// A client left mid-body: finish the fetch only if others are streaming it or it is a
    /// range fill (a known, bounded length either way).
    fn worth_resuming(&self) -> bool {
        self.expected.is_some()
            && (self.whole
                || (self.streaming && self.leader.as_ref().is_some_and(Leader::has_followers)))
    }

    fn on_data(&mut self, data: &Bytes) {
        if self.finished || data.is_empty() {
            return;
        }
        self.len = self.len.saturating_add(data.len() as u64);
        if self.len > self.limit || self.expected.is_some_and(|e| self.len > e) {
            self.abandon();
            return;
        }
        if self.len > self.held
            && let Some(b) = &self.budget
        {
            if !b.take(self.len - self.held) {
                // Too much is being recorded at once: this body streams on unrecorded.
                self.abandon();
                return;
            }
            self.held = self.len;
        }
        self.buf.push(data.clone());
        let complete = self.expected == Some(self.len);
        if self.streaming
            && let Some(leader) = &self.leader
        {
            leader.push(data.clone());
        }
        // With a known length the body is complete at its last byte: store it now rather than
        // wait for an end-of-stream poll that a server which counted the bytes may never make.
        if complete {
            self.on_end();
        }
    }

    fn on_end(&mut self) {
        if self.finished {
            return;
        }
        if self.expected.is_some_and(|e| e != self.len) {
            self.abandon();
            return;
        }
        self.finished = true;
        self.release();
        let body = match self.buf.len() {
            0 => Bytes::new(),
            1 => self.buf.pop().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(usize::try_from(self.len).unwrap_or(0));
                for chunk in self.buf.drain(..) {
                    all.extend_from_slice(&chunk);
                }
                all.freeze()
            }
        };
        if let Some(commit) = self.commit.take() {
            commit(body);
        }
        if let Some(leader) = self.leader.take() {
            leader.complete();
        }
    }

    /// Stops recording; the body keeps streaming to its client.
    fn abandon(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.release();
        self.buf = Vec::new();
        self.commit = None;
        if let Some(leader) = self.leader.take() {
            leader.fail();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // A recording dropped unfinished (its task timed out, its client left) returns its
        // reservation; the leader's own drop fails the fill.
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Mutex;

    type Slot = Arc<Mutex<Option<Bytes>>>;
    type Commit = Box<dyn FnOnce(Bytes) + Send>;
    type Frames = futures_util::stream::Iter<
        std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
    >;

    fn collecting() -> (Slot, Commit) {
        let slot = Arc::new(Mutex::new(None));
        let s = slot.clone();
        (slot, Box::new(move |b| *s.lock().unwrap() = Some(b)))
    }

    fn chunks(parts: &[&'static str]) -> http_body_util::StreamBody<Frames> {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_recorded_body_streams_and_is_committed_whole() {
        let (slot, commit) = collecting();
        let body = CacheBody::record(
            chunks(&["hel", "lo"]),
            Recorder::new(100, Some(5), None, false, commit, None),
            None,
        );
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(out, "hello");
        assert_eq!(slot.lock().unwrap().as_deref(), Some(&b"hello"[..]));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_streams_through_unrecorded() {
        let (slot, commit) = collecting();
        let body = CacheBody::record(
            chunks(&["abc", "def", "ghi"]),
            Recorder::new(5, None, None, false, commit, None),
            None,
        );
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(out, "abcdefghi");
        assert!(slot.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_shorter_than_its_content_length_is_not_stored() {
        let (slot, commit) = collecting();
        let body = CacheBody::record(
            chunks(&["abc"]),
            Recorder::new(100, Some(10), None, false, commit, None),
            None,
        );
        let _ = body.collect().await.unwrap();
        assert!(slot.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_dropped_recording_is_not_stored() {
        let (slot, commit) = collecting();
        let body = CacheBody::record(
            chunks(&["abc"]),
            Recorder::new(100, Some(3), None, false, commit, None),
            None,
        );
        drop(body);
        assert!(slot.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn recordings_share_one_byte_budget_and_always_return_it() {
        let budget = RecordingBudget::new(8);
        // Unknown length: reserved as it arrives; over the budget it streams on unrecorded.
        let (slot, commit) = collecting();
        let body = CacheBody::record(
            chunks(&["abcd", "efgh", "ij"]),
            Recorder::new(100, None, None, false, commit, Some((budget.clone(), 0))),
            None,
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdefghij");
        assert!(slot.lock().unwrap().is_none());
        assert_eq!(budget.used(), 0);
        // Within it: stored, and returned.
        let (slot, commit) = collecting();
        let body = CacheBody::record(
            chunks(&["abcd", "efgh"]),
            Recorder::new(100, None, None, false, commit, Some((budget.clone(), 0))),
            None,
        );
        let _ = body.collect().await.unwrap();
        assert_eq!(slot.lock().unwrap().as_deref(), Some(&b"abcdefgh"[..]));
        assert_eq!(budget.used(), 0);
        // Reserved up front and dropped half way: returned.
        assert!(budget.take(6));
        let (_, commit) = collecting();
        let mut body = Box::pin(CacheBody::record(
            chunks(&["abc", "def"]),
            Recorder::new(100, Some(6), None, false, commit, Some((budget.clone(), 6))),
            None,
        ));
        assert!(!budget.take(3), "6 of 8 are held");
        let _ = body.frame().await;
        drop(body);
        assert_eq!(budget.used(), 0);
    }
}
