//! The guard abstraction: a module that looks at a request head and allows it or answers it.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version};

/// The client's socket address, set as a request extension by the server that accepted the
/// connection (`ravelin-proxy` does; in axum, copy `ConnectInfo<SocketAddr>` into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// What a guard may look at: the request head, never the body.
///
/// Because a guard cannot consume the body or call the inner service, skipping it (failing open) is
/// always safe: the request continues exactly as if the guard were absent.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target.
    pub uri: &'a Uri,
    /// The HTTP version the client spoke.
    pub version: Version,
    /// The request's header fields.
    pub headers: &'a HeaderMap,
    /// The request's extensions (e.g. a TLS fingerprint set by the terminator).
    pub extensions: &'a Extensions,
    /// The client's address, from the [`PeerAddr`] extension when present.
    pub peer: Option<SocketAddr>,
}

impl<'a> RequestHead<'a> {
    /// Borrows the head of `request`.
    pub fn from_request<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            version: request.version(),
            headers: request.headers(),
            extensions: request.extensions(),
            peer: request.extensions().get::<PeerAddr>().map(|p| p.0),
        }
    }

    /// Borrows the head from already split parts.
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            extensions: &parts.extensions,
            peer: parts.extensions.get::<PeerAddr>().map(|p| p.0),
        }
    }
}

/// A guard's answer for one request.
#[derive(Debug)]
pub enum Verdict {
    /// Let the request through, with optional annotations.
    Allow(Allow),
    /// Answer the request here (e.g. 429, 403); the inner service is not called.
    Respond(Response<Bytes>),
}

impl Verdict {
    /// Allow with no annotations.
    pub fn allow() -> Self {
        Verdict::Allow(Allow::new())
    }

    /// A short stable name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allow(_) => "allowed",
            Verdict::Respond(_) => "responded",
        }
    }
}

/// Annotations of an allowed request: headers for the forwarded request, headers for the response,
/// and request extensions. Empty annotations allocate nothing, and a plain `Allow` is one pointer
/// wide, so the allow path moves no large values around.
#[derive(Debug, Default)]
pub struct Allow {
    annotations: Option<Box<Annotations>>,
}

/// The annotations proper, boxed on first use.
#[derive(Debug, Default)]
pub(crate) struct Annotations {
    request_headers: HeaderMap,
    pub(crate) response_headers: HeaderMap,
    extensions: Extensions,
}

impl Allow {
    /// No annotations.
    pub fn new() -> Self {
        Self::default()
    }

    fn annotations(&mut self) -> &mut Annotations {
        self.annotations.get_or_insert_with(Box::default)
    }

    /// Adds a header to the request forwarded to the inner service (replacing one of that name).
    pub fn request_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.annotations().request_headers.insert(name, value);
        self
    }

    /// Adds a header to the response returned to the client (appended to the inner service's).
    pub fn response_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.annotations().response_headers.append(name, value);
        self
    }

    /// Sets a request extension, e.g. a score that later layers read.
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.annotations().extensions.insert(value);
        self
    }

    /// Headers for the forwarded request.
    pub fn request_headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.annotations().request_headers
    }

    /// Headers for the response.
    pub fn response_headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.annotations().response_headers
    }

    /// Extensions for the forwarded request.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.annotations().extensions
    }

    /// Whether there are no annotations at all.
    pub fn is_empty(&self) -> bool {
        self.annotations.as_ref().is_none_or(|a| {
            a.request_headers.is_empty() && a.response_headers.is_empty() && a.extensions.is_empty()
        })
    }

    /// Splits into (request headers, response headers, extensions).
    pub fn into_parts(self) -> (HeaderMap, HeaderMap, Extensions) {
        match self.annotations {
            Some(a) => (a.request_headers, a.response_headers, a.extensions),
            None => Default::default(),
        }
    }

    /// Applies the request-side annotations to `request` and returns the response headers to add
    /// later.
    pub fn apply_to_request<B>(self, request: &mut Request<B>) -> HeaderMap {
        self.apply(request)
            .map(|a| a.response_headers)
            .unwrap_or_default()
    }

    /// Applies the request side; returns the box that still holds the response headers, if
    /// there are any (so the response future keeps one pointer, not a header map).
    #[inline]
    pub(crate) fn apply<B>(self, request: &mut Request<B>) -> Option<Box<Annotations>> {
        self.annotations.and_then(|a| a.apply(request))
    }
}

impl Annotations {
    /// See [`Allow::apply`].
    fn apply<B>(mut self: Box<Self>, request: &mut Request<B>) -> Option<Box<Self>> {
        let annotations = &mut self;
        let request_headers = std::mem::take(&mut annotations.request_headers);
        if !request_headers.is_empty() {
            let headers = request.headers_mut();
            for (name, value) in request_headers {
                if let Some(name) = name {
                    headers.insert(name, value);
                }
            }
        }
        let extensions = std::mem::take(&mut annotations.extensions);
        request.extensions_mut().extend(extensions);
        (!self.response_headers.is_empty()).then_some(self)
    }
}

/// Where a guard failure came from, after pingora's `ErrorSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardErrorKind {
    /// A dependency (Redis, a remote scorer) failed or answered garbage.
    Dependency,
    /// The guard's configuration or model is unusable.
    Config,
    /// A bug or broken invariant inside the guard.
    Internal,
}

impl GuardErrorKind {
    /// A short stable name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            GuardErrorKind::Dependency => "dependency",
            GuardErrorKind::Config => "config",
            GuardErrorKind::Internal => "internal",
        }
    }
}

/// A guard could not reach a verdict. The failure policy decides what happens to the request; a
/// failed guard never contributes a verdict or annotations of its own.
#[derive(Debug, thiserror::Error)]
#[error("{kind} failure: {message}", kind = .kind.as_str())]
pub struct GuardError {
    kind: GuardErrorKind,
    message: Cow<'static, str>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl GuardError {
    /// A failure of `kind` described by `message`.
    pub fn new(kind: GuardErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A dependency failure caused by `source`.
    pub fn dependency(
        message: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind: GuardErrorKind::Dependency,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Where the failure came from.
    pub fn kind(&self) -> GuardErrorKind {
        self.kind
    }

    /// The description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A request-inspecting module: rate limiting, bot scoring, WAF-like checks.
///
/// `check` sees the request head and returns a future of the [`Verdict`]. Synchronous guards return
/// [`std::future::Ready`]; guards that await a store (Redis) return their own future. The future
/// must own what it needs (`'static`), so the request can be moved on while it runs.
///
/// Wrap a guard in [`GuardLayer`](crate::GuardLayer) to give it a failure policy, a timeout, panic
/// containment, a circuit breaker and a kill switch.
///
/// # Failing
///
/// Return `Err(GuardError)` when the guard cannot decide (a store is down, the model is not
/// loaded): never a made-up verdict. A bot scorer without a model must not answer "score 0";
/// the layer's [`FailurePolicy`](crate::FailurePolicy) decides what happens, and a request that
/// goes on without the guard is marked [`Skipped`], so downstream code sees "unscored", not a
/// score. Only a successful `Allow` can annotate the request.
///
/// # Panic tolerance
///
/// A panic in `check` or in a poll of the future is caught and contained to that request: the
/// future is dropped and never polled again, and the failure policy applies. The guard value
/// itself (`&self`) lives on and serves other requests, so any state it shares across requests
/// must stay usable after a panic at any point:
///
/// - use atomics, or locks whose poisoning you handle (`lock().unwrap_or_else(PoisonError::into_inner)`,
///   or `parking_lot`, which does not poison), and keep each update's invariants intact at every
///   point where code might panic;
/// - do not hold a guard-wide "in progress" flag across a point that might panic.
///
/// This is what makes the layer's `AssertUnwindSafe` sound. Containment needs the default
/// `panic = "unwind"`; with `panic = "abort"` any panic ends the process.
///
/// # Timeouts
///
/// The layer's timeout is a budget measured from the moment the layer calls `check`, and it
/// holds for every guard, synchronous or not:
///
/// - while the future is `Pending`, a timer interrupts it when the budget runs out (the future
///   is dropped);
/// - work done without returning `Pending` (inside `check`, or inside a poll) cannot be
///   preempted: no thread can be. When such work ends after the budget, its answer (verdict or
///   error) is **discarded**, and the request gets the failure policy, counted as `timed_out`,
///   exactly as if the timer had fired.
///
/// So a slow synchronous guard costs its request the time it took, never a late verdict. Do the
/// expensive part of an asynchronous guard behind an await point, and keep synchronous guards
/// cheap.
pub trait Guard: Send + Sync + 'static {
    /// The future of the verdict.
    type Future: Future<Output = Result<Verdict, GuardError>> + Send + 'static;

    /// Inspects `head` and decides.
    fn check(&self, head: &RequestHead<'_>) -> Self::Future;

    /// The request headers this guard owns: the ones it sets towards the inner service (a bot
    /// score, say), which the inner service is meant to trust. [`GuardLayer`](crate::GuardLayer)
    /// removes client-sent copies of them from every request before anything else happens —
    /// also when the guard is killed, fails open, panics or has its circuit open — so a client
    /// can never supply its own value, whatever stack wraps the guard. Default: none.
    fn owned_headers(&self) -> &[HeaderName] {
        &[]
    }
}

impl<G: Guard + ?Sized> Guard for std::sync::Arc<G> {
    type Future = G::Future;

    fn check(&self, head: &RequestHead<'_>) -> Self::Future {
        (**self).check(head)
    }

    fn owned_headers(&self) -> &[HeaderName] {
        (**self).owned_headers()
    }
}

/// A guard built from a synchronous closure, for small checks and tests.
pub fn guard_fn<F>(f: F) -> GuardFn<F>
where
    F: Fn(&RequestHead<'_>) -> Result<Verdict, GuardError> + Send + Sync + 'static,
{
    GuardFn { f }
}

/// See [`guard_fn`].
#[derive(Clone)]
pub struct GuardFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for GuardFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardFn").finish_non_exhaustive()
    }
}

impl<F> Guard for GuardFn<F>
where
    F: Fn(&RequestHead<'_>) -> Result<Verdict, GuardError> + Send + Sync + 'static,
{
    type Future = std::future::Ready<Result<Verdict, GuardError>>;

    fn check(&self, head: &RequestHead<'_>) -> Self::Future {
        std::future::ready((self.f)(head))
    }
}

/// Which guards were skipped for this request, and why: set as a request extension by
/// [`GuardLayer`](crate::GuardLayer) when a guard fails open or is killed. Downstream code checks
/// it instead of guessing from a missing value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    entries: Vec<(Cow<'static, str>, SkipReason)>,
}

impl Skipped {
    /// Records that `guard` was skipped for `reason`.
    pub fn push(&mut self, guard: Cow<'static, str>, reason: SkipReason) {
        self.entries.push((guard, reason));
    }

    /// Whether `guard` was skipped, and why.
    pub fn reason(&self, guard: &str) -> Option<SkipReason> {
        self.entries
            .iter()
            .find(|(name, _)| name == guard)
            .map(|(_, reason)| *reason)
    }

    /// Every skipped guard and its reason.
    pub fn iter(&self) -> impl Iterator<Item = (&str, SkipReason)> {
        self.entries.iter().map(|(n, r)| (n.as_ref(), *r))
    }

    /// Whether no guard was skipped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many guards were skipped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Why a guard was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The guard returned an error and its policy is fail-open.
    Failed,
    /// The guard panicked and its policy is fail-open.
    Panicked,
    /// The guard exceeded its timeout and its policy is fail-open.
    TimedOut,
    /// The guard's circuit breaker is open and its policy is fail-open.
    CircuitOpen,
    /// The guard's kill switch is engaged: the module is off.
    Killed,
}

impl SkipReason {
    /// A short stable name, for headers, logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::Failed => "failed",
            SkipReason::Panicked => "panicked",
            SkipReason::TimedOut => "timed_out",
            SkipReason::CircuitOpen => "circuit_open",
            SkipReason::Killed => "killed",
        }
    }
}
