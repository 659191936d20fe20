//! The request path: request id → panic catching → rate limit → bot score → (extra guard) →
//! cache → forward, each guard in its failure policy.

use std::any::Any;
use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use ravelin_failsafe::{Guard, GuardBody, GuardError, RequestHead, Verdict};
use ravelin_proxy::{BoxError, Forward, IngressConfig, IngressLayer, SharedRoutes};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

/// The body every response of the assembled stack has.
pub(crate) type EdgeBody = UnsyncBoxBody<Bytes, BoxError>;

/// One assembled stack (or a slot of it), type-erased so slots compose whichever modules are on.
///
/// Shared, not boxed per clone: tower's `BoxCloneSyncService` allocates a new box for every
/// clone, and a request clones the stack it runs on (hyper calls through `&self`), so each boxed
/// slot cost an allocation per request on top of its future (issue 13). Here a clone is a
/// reference count; each call clones the concrete service inside (reference counts all the way
/// down) into the one boxed future it returns.
pub(crate) struct EdgeService<B>(Arc<dyn ErasedService<B>>);

impl<B> Clone for EdgeService<B> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// The future of an [`EdgeService`].
pub(crate) type EdgeFuture =
    Pin<Box<dyn Future<Output = Result<Response<EdgeBody>, Infallible>> + Send>>;

/// What an [`EdgeService`] erases: a service called through a shared reference.
pub(crate) trait ErasedService<B>: Send + Sync {
    fn call(&self, request: Request<B>) -> EdgeFuture;
}

impl<B> EdgeService<B> {
    /// A service that already answers with an [`EdgeFuture`], erased without a second box per
    /// request (the rollout observer and marker pass the inner future through as it is).
    pub(crate) fn from_erased(service: impl ErasedService<B> + 'static) -> Self {
        Self(Arc::new(service))
    }

    /// Calls the service through a shared reference.
    pub(crate) fn call_shared(&self, request: Request<B>) -> EdgeFuture {
        self.0.call(request)
    }
}

/// A concrete service with the function that makes its body an [`EdgeBody`].
struct Erased<S, ResB> {
    service: S,
    into: fn(ResB) -> EdgeBody,
}

impl<S, B, ResB> ErasedService<B> for Erased<S, ResB>
where
    S: Service<Request<B>, Response = Response<ResB>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResB: 'static,
{
    fn call(&self, request: Request<B>) -> EdgeFuture {
        let mut service = self.service.clone();
        let into = self.into;
        // Every layer of the stack is ready at once (they await their own capacity inside the
        // call), so the request is handed to `call` directly and only the inner future is
        // boxed: `oneshot` moved the request through its own state and an `async` block first,
        // copies that added up to a tenth of a request's instructions across the slots
        // (issue 13). A service that is not ready (none today) still gets `oneshot`; polling it
        // once with a no-op waker first is allowed, since every poll re-registers its waker.
        match service.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(())) => Box::pin(MapBody {
                inner: service.call(request),
                into,
            }),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Box::pin(async move {
                match service.oneshot(request).await {
                    Ok(response) => Ok(response.map(into)),
                    Err(never) => match never {},
                }
            }),
        }
    }
}

/// A slot's future: the inner service's, its body made an [`EdgeBody`].
#[pin_project::pin_project]
struct MapBody<F, ResB> {
    #[pin]
    inner: F,
    into: fn(ResB) -> EdgeBody,
}

impl<F, ResB> Future for MapBody<F, ResB>
where
    F: Future<Output = Result<Response<ResB>, Infallible>>,
{
    type Output = Result<Response<EdgeBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => Poll::Ready(Ok(response.map(*this.into))),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<B> Service<Request<B>> for EdgeService<B> {
    type Response = Response<EdgeBody>;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the inner service's: polled once when the request is handed to it, and
        // awaited inside the call's future (`oneshot`) if it was not ready (see `Erased`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.0.call(request)
    }
}

/// A boxed guard future.
pub(crate) type GuardFuture = Pin<Box<dyn Future<Output = Result<Verdict, GuardError>> + Send>>;

/// The request id header.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Erases a service's body and future types.
pub(crate) fn boxed<S, B, ResB>(service: S) -> EdgeService<B>
where
    S: Service<Request<B>, Response = Response<ResB>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
    B: Send + 'static,
{
    boxed_with(service, |body: ResB| {
        body.map_err(Into::into).boxed_unsync()
    })
}

/// Erases a service's future type and turns its body into an [`EdgeBody`] with `into`: a
/// module's slot passes the inner stack's body through as it is (see [`guard_body`]) instead
/// of boxing it once more per module (issue 13).
pub(crate) fn boxed_with<S, B, ResB>(service: S, into: fn(ResB) -> EdgeBody) -> EdgeService<B>
where
    S: Service<Request<B>, Response = Response<ResB>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    ResB: 'static,
    B: Send + 'static,
{
    EdgeService(Arc::new(Erased { service, into }))
}

/// A guard slot's body as an [`EdgeBody`]: the inner stack's body itself when the guard let the
/// request through, the guard's own answer boxed.
pub(crate) fn guard_body(body: GuardBody<EdgeBody>) -> EdgeBody {
    if !body.is_inner() {
        return body.boxed_unsync();
    }
    // `is_inner` held, so this is `Some`; the fallback (an empty body) is never taken.
    body.into_inner().unwrap_or_default()
}

// === impl BoxGuard ===

/// Object-safe view of a [`Guard`], so a slot can hold any guard (a test's panicking guard).
pub(crate) trait DynGuard: Send + Sync + 'static {
    /// [`Guard::name`].
    fn dyn_name(&self) -> Cow<'static, str>;

    /// [`Guard::check`], boxed.
    fn check_boxed(&self, head: &RequestHead<'_>) -> GuardFuture;

    /// [`Guard::owned_headers`].
    fn owned(&self) -> &[HeaderName];
}

impl<G: Guard> DynGuard for G {
    fn dyn_name(&self) -> Cow<'static, str> {
        self.name()
    }

    fn check_boxed(&self, head: &RequestHead<'_>) -> GuardFuture {
        Box::pin(self.check(head))
    }

    fn owned(&self) -> &[HeaderName] {
        self.owned_headers()
    }
}

/// A type-erased guard; it keeps the erased guard's name and owned headers.
#[derive(Clone)]
pub struct BoxGuard(Arc<dyn DynGuard>);

impl BoxGuard {
    /// Erases `guard`.
    pub fn new(guard: impl Guard) -> Self {
        Self(Arc::new(guard))
    }
}

impl std::fmt::Debug for BoxGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BoxGuard").field(&self.0.dyn_name()).finish()
    }
}

impl Guard for BoxGuard {
    type Future = GuardFuture;

    fn name(&self) -> Cow<'static, str> {
        self.0.dyn_name()
    }

    fn check(&self, head: &RequestHead<'_>) -> GuardFuture {
        self.0.check_boxed(head)
    }

    fn owned_headers(&self) -> &[HeaderName] {
        self.0.owned()
    }
}

// === request ids ===

/// Request ids `<boot>-<counter>`: unique per process run, cheap, and sortable in logs. An id
/// set by a trusted proxy in front is kept (SetRequestId does not overwrite); ingress removed
/// any other client's.
#[derive(Clone, Debug)]
pub(crate) struct CounterIds {
    boot: u32,
    next: Arc<AtomicU64>,
}

impl Default for CounterIds {
    fn default() -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        Self {
            boot,
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for CounterIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Written into a stack buffer (no `format!`): the value's one allocation is the
        // header value's own copy (issue 13).
        let mut buf = [0u8; ID_MAX];
        let len = write_id(&mut buf, self.boot, n);
        buf.get(..len)
            .and_then(|id| HeaderValue::from_bytes(id).ok())
            .map(RequestId::new)
    }
}

/// The longest id: 8 hex digits, `-`, 20 decimal digits (`u64::MAX`).
const ID_MAX: usize = 8 + 1 + 20;

/// Writes `{boot:08x}-{n}` into `buf` and returns its length.
fn write_id(buf: &mut [u8; ID_MAX], boot: u32, n: u64) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut len = 0;
    for shift in (0..8).rev() {
        let digit = HEX.get(((boot >> (shift * 4)) & 0xf) as usize).copied();
        if let (Some(slot), Some(digit)) = (buf.get_mut(len), digit) {
            *slot = digit;
        }
        len += 1;
    }
    if let Some(slot) = buf.get_mut(len) {
        *slot = b'-';
    }
    len += 1;
    // Decimal digits of `n`, most significant first.
    let mut digits = [0u8; 20];
    let mut count = 0;
    let mut rest = n;
    loop {
        if let Some(slot) = digits.get_mut(count) {
            *slot = b'0' + (rest % 10) as u8;
        }
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for digit in digits.iter().take(count).rev() {
        if let Some(slot) = buf.get_mut(len) {
            *slot = *digit;
        }
        len += 1;
    }
    len
}

// === panic answer ===

/// What a panic anywhere outside a guard turns into: a 500 for that request alone.
#[derive(Clone, Debug, Default)]
pub(crate) struct PanicAnswer;

impl tower_http::catch_panic::ResponseForPanic for PanicAnswer {
    type ResponseBody = Full<Bytes>;

    fn response_for_panic(&mut self, err: Box<dyn Any + Send + 'static>) -> Response<Full<Bytes>> {
        let message = err
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| err.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-text panic payload".to_owned());
        metrics::counter!("ravelin_edge_panics_total").increment(1);
        if let Some(permit) = PANIC_LOG.check() {
            let suppressed = permit.suppressed();
            tracing::error!(panic = %message, suppressed, "request handler panicked; answered 500");
        }
        ravelin_http::plain_text(
            StatusCode::INTERNAL_SERVER_ERROR,
            Full::new(Bytes::from_static(b"500 internal error\n")),
        )
    }
}

static PANIC_LOG: std::sync::LazyLock<ravelin_failsafe::LogLimiter> =
    std::sync::LazyLock::new(|| ravelin_failsafe::LogLimiter::per_second(5));

// === the stack ===

/// One module slot: given the inner stack, return the stack with the module on top.
pub(crate) type Slot<B> = Box<dyn FnOnce(EdgeService<B>) -> EdgeService<B> + Send>;

/// Assembles the stack around `Forward` from inner to outer: `slots` are applied in order (so
/// the first slot is the innermost: cache, then extra guard, bot score, rate limit), then
/// request ids, the ingress stage and, outermost, panic catching. Ingress runs before request
/// ids so that an untrusted client's `x-request-id` is gone before the edge sets its own.
pub(crate) fn assemble<B>(
    routes: SharedRoutes,
    ingress: IngressConfig,
    slots: Vec<Slot<B>>,
) -> EdgeService<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut service = boxed(Forward::new(routes));
    for slot in slots {
        service = slot(service);
    }
    let ids = CounterIds::default();
    let outer = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(PanicAnswer))
        .layer(IngressLayer::new(ingress))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, ids))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .service(service);
    boxed(outer)
}

/// Applies `layer` to the inner stack and erases the result: the usual slot body.
pub(crate) fn layered<L, B>(layer: L, inner: EdgeService<B>) -> EdgeService<B>
where
    L: Layer<EdgeService<B>>,
    L::Service: Service<Request<B>, Response = Response<GuardBody<EdgeBody>>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<Request<B>>>::Future: Send + 'static,
    B: Send + 'static,
{
    boxed_with(layer.layer(inner), guard_body)
}

// === impl EdgeHandler ===

/// The stack a main config's canary clients run on while its rollout lasts (issue 15).
pub(crate) struct CanaryStack<B> {
    /// The rollout it was built for: it serves that rollout's canary clients only (a newer
    /// candidate's are served the running stack until its own is built).
    pub(crate) rollout: u64,
    /// The stack.
    pub(crate) service: EdgeService<B>,
    /// The main config's store, which decides each client's cohort.
    pub(crate) store: ravelin_config::Store<crate::config::EdgeConfig>,
    /// How clients are keyed (the observer's own rule, so both agree on a client's cohort).
    pub(crate) rollouts: Arc<crate::rollout::Rollouts>,
}

impl<B> CanaryStack<B> {
    /// Whether `request`'s client is in the canary's share.
    fn serves(&self, request: &Request<B>) -> bool {
        self.rollouts
            .client_key(request)
            .and_then(|key| self.store.assignment(key))
            .is_some_and(|assignment| {
                assignment.cohort == ravelin_config::Cohort::Canary
                    && assignment.rollout_id() == self.rollout
            })
    }
}

/// Where a main config's canary stack is published (empty outside its rollouts).
pub(crate) type SharedCanary<B> = Arc<arc_swap::ArcSwapOption<CanaryStack<B>>>;

/// The service the server runs: takes the stack in force (swapped on reload) for each request,
/// or the canary's stack for a canary client of a main config's rollout, and counts answers by
/// class.
pub(crate) struct EdgeHandler<B> {
    current: Arc<arc_swap::ArcSwap<EdgeService<B>>>,
    canary: SharedCanary<B>,
    /// `ravelin_edge_responses_total` by class, registered once (no per-request label lookup).
    responses: Arc<[metrics::Counter; 5]>,
}

impl<B> Clone for EdgeHandler<B> {
    fn clone(&self) -> Self {
        Self {
            current: Arc::clone(&self.current),
            canary: Arc::clone(&self.canary),
            responses: Arc::clone(&self.responses),
        }
    }
}

impl<B> EdgeHandler<B> {
    /// Serves whatever stack `current` holds (and `canary`, to its clients).
    pub(crate) fn new(
        current: Arc<arc_swap::ArcSwap<EdgeService<B>>>,
        canary: SharedCanary<B>,
    ) -> Self {
        let class =
            |c: &'static str| metrics::counter!("ravelin_edge_responses_total", "class" => c);
        Self {
            current,
            canary,
            responses: Arc::new([
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ]),
        }
    }
}

impl<B: Send + Unpin + 'static> Service<Request<B>> for EdgeHandler<B> {
    type Response = Response<EdgeBody>;
    type Error = Infallible;
    type Future = Counted;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // A request holds the stack it started with; a reload swaps the pointer for the next
        // request, so no request ever sees half of two configurations.
        // Outside a main config's rollout: one pointer load.
        let canary = self.canary.load();
        let service = match canary.as_deref() {
            Some(canary) if canary.serves(&request) => canary.service.clone(),
            _ => EdgeService::clone(&self.current.load()),
        };
        // An `EdgeService` is always ready: called directly, without `oneshot`'s copy.
        Counted {
            inner: service.call_shared(request),
            responses: Arc::clone(&self.responses),
        }
    }
}

/// [`EdgeHandler`]'s future: the stack's answer, counted by class (a named future, so a
/// request costs no box for it; issue 13).
pub(crate) struct Counted {
    inner: EdgeFuture,
    responses: Arc<[metrics::Counter; 5]>,
}

impl Future for Counted {
    type Output = Result<Response<EdgeBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => return Poll::Pending,
        };
        let class = usize::from(response.status().as_u16() / 100)
            .saturating_sub(1)
            .min(4);
        if let Some(counter) = this.responses.get(class) {
            counter.increment(1);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that is not ready on its first poll: the slot falls back to `oneshot`, which
    /// polls it again with the task's waker, and calls it exactly once.
    #[derive(Clone)]
    struct NotReadyAtFirst {
        polls: Arc<std::sync::atomic::AtomicUsize>,
        calls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Service<Request<()>> for NotReadyAtFirst {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.polls.fetch_add(1, Ordering::SeqCst) == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
        }
    }

    #[tokio::test]
    async fn a_slot_not_ready_is_awaited_then_called_once() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let service = boxed(NotReadyAtFirst {
            polls: Arc::clone(&polls),
            calls: Arc::clone(&calls),
        });
        let response = service.call_shared(Request::new(())).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "the no-op poll, then oneshot's"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A ready service is called at once, with one poll.
        let response = service.call_shared(Request::new(())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn request_ids_are_formatted_as_before() {
        for (boot, n) in [
            (0u32, 0u64),
            (0xdead_beef, 1),
            (0x0000_00ff, 42),
            (u32::MAX, u64::MAX),
            (0x1234_5678, 1_000_000_007),
        ] {
            let mut buf = [0u8; ID_MAX];
            let len = write_id(&mut buf, boot, n);
            assert_eq!(&buf[..len], format!("{boot:08x}-{n}").as_bytes());
        }
        let mut ids = CounterIds::default();
        let request = Request::new(());
        let first = ids.make_request_id(&request).unwrap();
        let second = ids.make_request_id(&request).unwrap();
        let boot = format!("{:08x}", ids.boot);
        assert_eq!(first.header_value(), &format!("{boot}-1"));
        assert_eq!(second.header_value(), &format!("{boot}-2"));
    }
}
