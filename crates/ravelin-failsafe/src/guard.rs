//! The guard abstraction: a module that looks at a request head and allows it or answers it.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version};
use ravelin_http::PeerAddr;

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

    /// The guard's name: who it is, everywhere. [`GuardLayer`](crate::GuardLayer) reads it once,
    /// when it is built, and derives from it the `guard` label of the metrics, the `guard` field
    /// of the logs, the kill switch it looks up in a
    /// [`Switchboard`](crate::Switchboard), its entry in the [`Skipped`] extension and
    /// its key in the skip header. Callers never retype it.
    ///
    /// Use a short stable token that is also a structured-field key (RFC 8941 §3.2: a lowercase
    /// letter or `*`, then lowercase letters, digits, `_`, `-`, `.`, `*`), such as
    /// `"ratelimit"` or `"botscore"`; a layer whose policy has a skip header refuses any other
    /// name ([`ConfigError::Name`](crate::ConfigError::Name)). Give each guard of one stack its
    /// own name.
    ///
    /// A `Cow` so that a guard known at compile time answers `Cow::Borrowed("ratelimit")` (and a
    /// skipped request records it without allocating), while a guard named at run time (a
    /// type-erased guard, [`guard_fn`]) can carry its own `String`.
    fn name(&self) -> Cow<'static, str>;

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

    fn name(&self) -> Cow<'static, str> {
        (**self).name()
    }

    fn check(&self, head: &RequestHead<'_>) -> Self::Future {
        (**self).check(head)
    }

    fn owned_headers(&self) -> &[HeaderName] {
        (**self).owned_headers()
    }
}

/// A guard named `name` built from a synchronous closure, for small checks and tests.
///
/// ```
/// use ravelin_failsafe::{Guard, Verdict, guard_fn};
///
/// let guard = guard_fn("noop", |_head| Ok(Verdict::allow()));
/// assert_eq!(guard.name(), "noop");
/// ```
pub fn guard_fn<F>(name: impl Into<Cow<'static, str>>, f: F) -> GuardFn<F>
where
    F: Fn(&RequestHead<'_>) -> Result<Verdict, GuardError> + Send + Sync + 'static,
{
    GuardFn {
        name: name.into(),
        f,
    }
}

/// See [`guard_fn`].
#[derive(Clone)]
pub struct GuardFn<F> {
    name: Cow<'static, str>,
    f: F,
}

impl<F> std::fmt::Debug for GuardFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardFn")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F> Guard for GuardFn<F>
where
    F: Fn(&RequestHead<'_>) -> Result<Verdict, GuardError> + Send + Sync + 'static,
{
    type Future = std::future::Ready<Result<Verdict, GuardError>>;

    fn name(&self) -> Cow<'static, str> {
        self.name.clone()
    }

    fn check(&self, head: &RequestHead<'_>) -> Self::Future {
        std::future::ready((self.f)(head))
    }
}

/// Which guards were skipped for this request, and why: set as a request extension by
/// [`GuardLayer`](crate::GuardLayer) when a guard fails open or is killed. Downstream code checks
/// it instead of guessing from a missing value.
///
/// It is also what the skip header carries to the origin: every guard layer whose
/// [`FailurePolicy`](crate::FailurePolicy) has a [`skip_header`](crate::FailurePolicy::skip_header)
/// records its entry as marked for that header and (re)writes the header as **one** field,
/// rendered from every entry marked for it (see [`header_value`](Self::header_value) for the
/// syntax). So two skipped guards give `x-ravelin-skipped: ratelimit=timed_out, botscore=killed`,
/// not one field line per guard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    entries: Vec<SkipEntry>,
}

/// One skipped guard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SkipEntry {
    guard: Cow<'static, str>,
    reason: SkipReason,
    /// The skip header this entry is shown in, if its layer has one.
    marker: Option<HeaderName>,
}

impl Skipped {
    /// Records that `guard` was skipped for `reason` (in the extension only: no skip header
    /// shows it).
    pub fn push(&mut self, guard: Cow<'static, str>, reason: SkipReason) {
        self.push_marked(guard, reason, None);
    }

    /// Records that `guard` was skipped for `reason`, shown in `marker` when given.
    pub(crate) fn push_marked(
        &mut self,
        guard: Cow<'static, str>,
        reason: SkipReason,
        marker: Option<&HeaderName>,
    ) {
        self.entries.push(SkipEntry {
            guard,
            reason,
            marker: marker.cloned(),
        });
    }

    /// Whether `guard` was skipped, and why.
    pub fn reason(&self, guard: &str) -> Option<SkipReason> {
        self.entries
            .iter()
            .find(|entry| entry.guard == guard)
            .map(|entry| entry.reason)
    }

    /// Every skipped guard and its reason.
    pub fn iter(&self) -> impl Iterator<Item = (&str, SkipReason)> {
        self.entries.iter().map(|e| (e.guard.as_ref(), e.reason))
    }

    /// Whether no guard was skipped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many guards were skipped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every entry rendered as one header value: an RFC 8941 structured-field **dictionary**
    /// from guard name to [`SkipReason::as_str`] as a token, in the order the guards were
    /// skipped (outermost layer first):
    ///
    /// ```text
    /// ratelimit=timed_out, botscore=killed
    /// ```
    ///
    /// An origin can parse it with any structured-field parser, or split on `,` and `=`. A name
    /// that is not a dictionary key (RFC 8941 §3.2; [`Guard::name`] says which are) is left out,
    /// and a name recorded twice keeps its first place and reason. `None` when nothing is left.
    ///
    /// ```
    /// use ravelin_failsafe::{SkipReason, Skipped};
    ///
    /// let mut skipped = Skipped::default();
    /// skipped.push("ratelimit".into(), SkipReason::TimedOut);
    /// skipped.push("botscore".into(), SkipReason::Killed);
    /// assert_eq!(skipped.header_value().unwrap(), "ratelimit=timed_out, botscore=killed");
    /// ```
    pub fn header_value(&self) -> Option<HeaderValue> {
        self.render(|_| true)
    }

    /// The value of skip header `marker`: the entries marked for it, rendered as
    /// [`header_value`](Self::header_value) renders all of them.
    pub(crate) fn marker_value(&self, marker: &HeaderName) -> Option<HeaderValue> {
        self.render(|entry| entry.marker.as_ref() == Some(marker))
    }

    fn render(&self, include: impl Fn(&SkipEntry) -> bool) -> Option<HeaderValue> {
        let mut value = String::new();
        let mut seen: Vec<&str> = Vec::new();
        for entry in self.entries.iter().filter(|e| include(e)) {
            let name = entry.guard.as_ref();
            if !is_structured_key(name) || seen.contains(&name) {
                continue;
            }
            seen.push(name);
            if !value.is_empty() {
                value.push_str(", ");
            }
            value.push_str(name);
            value.push('=');
            value.push_str(entry.reason.as_str());
        }
        // Only key characters, `=`, `,`, spaces and token characters: always a valid value.
        HeaderValue::from_str(&value).ok().filter(|v| !v.is_empty())
    }
}

/// Whether `name` is an RFC 8941 dictionary key: `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" /
/// "-" / "." / "*" )`. Every guard name shown in a skip header must be one.
pub(crate) fn is_structured_key(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        })
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
