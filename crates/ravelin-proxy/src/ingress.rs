//! The ingress stage: the first thing a request meets at the edge. It decides once which host
//! and which path the request is for (its [`RequestIdentity`]), makes the request agree with
//! that answer, and removes what a client may not say, so that routing, the cache key,
//! `X-Forwarded-Host`, `Host` upstream and every policy module read the same host and path.
//!
//! Use it as a function ([`admit`], [`admit_parts`]) in any server, or as the tower layer
//! [`IngressLayer`], outermost in the stack (before request ids, rate limits, bot scoring, the
//! cache and [`Forward`](crate::Forward)).
//!
//! # What [`admit`] does, in order
//!
//! 1. **Refuses `CONNECT` and `TRACE`** with `501 Not Implemented` (RFC 9110 §15.6.2: the
//!    server does not support the method for any resource). The edge builds no tunnels, and
//!    `TRACE` would reflect the request — cookies and credentials included — back to a script
//!    (cross-site tracing). 501 rather than 405 because 405 must carry an `Allow` listing the
//!    resource's methods (§15.5.6), which only the origin knows.
//! 2. **Counts header field lines** (every line, duplicates included; not HTTP/2
//!    pseudo-headers): more than [`max_headers`](IngressConfig::max_headers) is answered `431`,
//!    for every HTTP version — hyper bounds the count for HTTP/1.1 only.
//! 3. **Removes hop-by-hop fields** ([`headers::remove_hop_by_hop_except`]) including those
//!    named in `Connection` — but `Connection` may never name `Host`, the edge-owned headers,
//!    the forwarding headers or the request-id header: those tokens are ignored, so a client
//!    cannot strip what a later stage adds or relies on (`Connection: host, x-request-id`).
//!    An upgrade request (HTTP/1.1 `GET` without a body, `Connection` listing `upgrade`, one
//!    `Upgrade` other than `h2c`) keeps exactly `Connection: upgrade` and its `Upgrade`, so
//!    [`Forward`](crate::Forward) can pass a WebSocket through; every other field named in
//!    `Connection` still goes.
//! 4. **Decides the identity** with [`RequestIdentity::from_parts`] (scheme from the
//!    [`ClientScheme`] extension, `http` without one). `400 Bad Request` for:
//!    - an HTTP/1.1 request without `Host`, or with more than one (RFC 9112 §3.2: "A server
//!      MUST respond with a 400 … to any HTTP/1.1 request message that lacks a Host header
//!      field and to any request message that contains more than one Host header field line
//!      or a Host header field with an invalid field value");
//!    - an HTTP/2 request whose `Host` names another authority than `:authority` (RFC 9113
//!      §8.3.1: such a request is malformed), or with neither;
//!    - a path spelled in a way origins disagree on (`%2F`, `%5C`, `\`, `..;x`, encoded
//!      control characters, malformed escapes; see [`ravelin_http::canonical_path`]);
//!    - an `OPTIONS *` (asterisk-form) request, whose target is not a path.
//! 5. **Makes the request agree with the identity.** An absolute-form target's authority wins
//!    over `Host` (RFC 9112 §3.2.2: "the proxy MUST ignore the received Host header field …
//!    and instead replace it with the host information of the request-target"): the request
//!    then carries exactly one `Host`, the identity's authority (for every version that has
//!    one; HTTP/1.0 without a host gets none), and its URI becomes the identity's
//!    [`target`](RequestIdentity::target) — absolute form, canonical path, query unchanged.
//! 6. **Strips headers a client may not send**: the [owned headers](IngressConfig::owned_header)
//!    always; the [`FORWARDING_HEADERS`](headers::FORWARDING_HEADERS) (`Forwarded`,
//!    `X-Forwarded-For`/`-Host`/`-Proto`/`-Port`/`-Prefix`, `X-Real-IP`), the
//!    [proxy headers](IngressConfig::proxy_header) and the request-id header unless the peer (the [`PeerAddr`] extension) is a
//!    [trusted proxy](IngressConfig::trusted_proxies). A request without `PeerAddr` is from
//!    an untrusted peer.
//!    With a [JA4 header](IngressConfig::ja4_header), the edge's own value is then set from
//!    the connection's [`TlsInfo`](ravelin_http::TlsInfo) (on TLS connections whose ClientHello
//!    was fingerprinted).
//! 7. **Inserts the [`RequestIdentity`]** as a request extension, which
//!    [`MatchPath::of`](ravelin_http::MatchPath::of),
//!    [`effective_host`](ravelin_http::effective_host), [`Routes`](crate::Routes) and
//!    [`Forward`](crate::Forward) read.
//!
//! A refusal is a [`Refusal`]: a status, a short reason (the response body) and a kind for
//! metric labels. The layer answers it itself with a small `text/plain`,
//! `Cache-Control: no-store` response and counts it in
//! `ravelin_proxy_ingress_refused_total{reason=<kind>}`.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use ipnet::IpNet;
use pin_project::pin_project;
use ravelin_http::{IdentityError, IdentityOptions, PeerAddr, RequestIdentity};
use ravelin_primitives::LogLimiter;
use tower_layer::Layer;
use tower_service::Service;

use crate::forward::ClientScheme;
use crate::headers;

/// The bot score header a bot-scoring stage adds (ravelin-botscore's default).
pub const X_BOT_SCORE: HeaderName = HeaderName::from_static("x-bot-score");
/// The bot score explanation header (ravelin-botscore's default when enabled).
pub const X_BOT_SCORE_REASONS: HeaderName = HeaderName::from_static("x-bot-score-reasons");
/// The default request-id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Original-URL`: the URL before a rewriting proxy in front changed it (IIS URL Rewrite).
pub const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
/// `X-Rewrite-URL`: as [`X_ORIGINAL_URL`], under the name some rewriters use.
pub const X_REWRITE_URL: HeaderName = HeaderName::from_static("x-rewrite-url");

// === impl IngressConfig ===

/// What the ingress stage enforces. Build with [`IngressConfig::new`] and the setters:
///
/// | Setting | Default |
/// |---|---|
/// | [`fold_case`](Self::fold_case) | `true` (policies on `/login` also cover `/LOGIN`) |
/// | [`owned_header`](Self::owned_header) | `x-ravelin-skipped`, `x-bot-score`, `x-bot-score-reasons`, `x-original-url`, `x-rewrite-url` |
/// | [`trusted_proxies`](Self::trusted_proxies) | none: every peer is a client |
/// | [`proxy_header`](Self::proxy_header) | none beyond `Forwarded`, `X-Forwarded-*`, `X-Real-IP` |
/// | [`request_id_header`](Self::request_id_header) | `x-request-id` |
/// | [`max_headers`](Self::max_headers) | 100 (as [`ServerConfig`](crate::ServerConfig)) |
/// | [`ja4_header`](Self::ja4_header) | none: no JA4 forwarded |
#[derive(Debug, Clone)]
pub struct IngressConfig {
    identity: IdentityOptions,
    owned: Vec<HeaderName>,
    /// Where the connection's JA4 goes (an owned header too).
    ja4_header: Option<HeaderName>,
    /// Fields only trusted proxies may send, beyond [`headers::FORWARDING_HEADERS`].
    proxy_only: Vec<HeaderName>,
    trusted: Vec<IpNet>,
    request_id: HeaderName,
    max_headers: usize,
    /// Names `Connection` may not name: owned, forwarding and request-id headers. Rebuilt by
    /// the setters so the request path does no allocation for it.
    protected: Vec<HeaderName>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl IngressConfig {
    /// The default limit on header field lines: 100.
    pub const DEFAULT_MAX_HEADERS: usize = 100;
    /// The largest accepted [`max_headers`](Self::max_headers): 10,000.
    pub const MAX_HEADERS_LIMIT: usize = 10_000;

    /// The defaults (see the [type docs](Self)).
    pub fn new() -> Self {
        let mut config = Self {
            identity: IdentityOptions::default(),
            // `X-Original-URL` / `X-Rewrite-URL`: what a rewriting proxy says the URL was. IIS's
            // URL Rewrite and frameworks that honour them (Symfony before 5, Zend) route by them,
            // so a client's own would reach a path the edge's policies never saw under the one
            // they keyed; CDNs pass them through, so they are removed from trusted proxies too.
            owned: vec![
                ravelin_http::X_RAVELIN_SKIPPED,
                X_BOT_SCORE,
                X_BOT_SCORE_REASONS,
                X_ORIGINAL_URL,
                X_REWRITE_URL,
            ],
            ja4_header: None,
            proxy_only: Vec::new(),
            trusted: Vec::new(),
            request_id: X_REQUEST_ID,
            max_headers: Self::DEFAULT_MAX_HEADERS,
            protected: Vec::new(),
        };
        config.rebuild();
        config
    }

    /// Fold ASCII case in the match path (default `true`; passed to [`IdentityOptions`]).
    pub fn fold_case(mut self, enabled: bool) -> Self {
        self.identity.fold_case = enabled;
        self
    }

    /// Adds a header only the edge may set: it is removed from every client request (even a
    /// trusted proxy's) and `Connection` cannot name it. Add the headers your modules write
    /// for the origin to trust (a custom score or verdict header).
    pub fn owned_header(mut self, name: HeaderName) -> Self {
        if !self.owned.contains(&name) {
            self.owned.push(name);
        }
        self.rebuild();
        self
    }

    /// The peers (by the [`PeerAddr`] extension) whose forwarding headers and request id are
    /// kept: the load balancers or CDNs in front of the edge. Replaces the list; the default
    /// is empty, so every peer's `Forwarded`, `X-Forwarded-*`, `X-Real-IP` and request id are
    /// removed. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`) match IPv4 networks. The list is
    /// scanned per request: keep it to the networks you run.
    pub fn trusted_proxies(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted = networks.into_iter().collect();
        self
    }

    /// Adds a header only a [trusted proxy](Self::trusted_proxies) may send, as the forwarding
    /// headers: kept from trusted proxies, removed from every other peer, and `Connection`
    /// cannot name it. For what the proxy in front tells the next hop and something behind
    /// believes: a client-IP header of its own (`True-Client-IP`, `CF-Connecting-IP`), the TLS
    /// fingerprint a terminator in front computed.
    pub fn proxy_header(mut self, name: HeaderName) -> Self {
        if !self.proxy_only.contains(&name) {
            self.proxy_only.push(name);
        }
        self.rebuild();
        self
    }

    /// The headers added with [`proxy_header`](Self::proxy_header) (none by default). An
    /// [owned header](Self::owned_header) of the same name is removed from every peer.
    pub fn proxy_headers(&self) -> &[HeaderName] {
        &self.proxy_only
    }

    /// The request-id header (default `x-request-id`): kept from trusted proxies, removed from
    /// everyone else so that a later stage generates a fresh id.
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        self.request_id = name;
        self.rebuild();
        self
    }

    /// The most header field lines a request may have (default 100, between 1 and 10,000; see
    /// [`check`](Self::check)); more is answered `431` for every HTTP version.
    pub fn max_headers(mut self, max: usize) -> Self {
        self.max_headers = max;
        self
    }

    /// Checks the settings, for config validation. An unchecked config still works: a
    /// `max_headers` of 0 refuses every request.
    ///
    /// # Errors
    /// [`IngressConfigError`] naming the field, its limit and the value given.
    pub fn check(&self) -> Result<(), IngressConfigError> {
        if self.max_headers == 0 || self.max_headers > Self::MAX_HEADERS_LIMIT {
            return Err(IngressConfigError::MaxHeaders {
                value: self.max_headers,
            });
        }
        Ok(())
    }

    /// The identity options.
    pub fn identity_options(&self) -> &IdentityOptions {
        &self.identity
    }

    /// The owned headers.
    pub fn owned_headers(&self) -> &[HeaderName] {
        &self.owned
    }

    /// The trusted proxy networks.
    pub fn trusted_networks(&self) -> &[IpNet] {
        &self.trusted
    }

    /// The request-id header.
    pub fn request_id(&self) -> &HeaderName {
        &self.request_id
    }

    /// The header line limit.
    pub fn header_limit(&self) -> usize {
        self.max_headers
    }

    /// Forwards the client's JA4 fingerprint in `name`: an [owned header](Self::owned_header)
    /// (a client's own is removed and `Connection` cannot name it), set to the JA4 of the
    /// connection's [`TlsInfo`](ravelin_http::TlsInfo) when there is one. Set here, after the
    /// client's fields are dealt with, so nothing the client sends can remove or replace it.
    pub fn ja4_header(mut self, name: HeaderName) -> Self {
        self.ja4_header = Some(name.clone());
        self.owned_header(name)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    fn rebuild(&mut self) {
        let mut protected = self.owned.clone();
        protected.extend(headers::FORWARDING_HEADERS.iter().cloned());
        protected.extend(self.proxy_only.iter().cloned());
        protected.push(self.request_id.clone());
        self.protected = protected;
    }
}

/// An [`IngressConfig`] setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngressConfigError {
    /// `max_headers` is 0 or above 10,000.
    #[error("ingress: max_headers must be between 1 and 10000, got {value}")]
    MaxHeaders {
        /// The value given.
        value: usize,
    },
}

// === impl Refusal ===

/// Why a request was refused at ingress; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalKind {
    /// `CONNECT` or `TRACE` (501).
    Method,
    /// More header field lines than allowed (431).
    TooManyHeaders,
    /// No `Host` (400).
    MissingHost,
    /// More than one `Host` line (400).
    DuplicateHost,
    /// A `Host` or target authority that is not a valid host (400).
    InvalidHost,
    /// HTTP/2 `Host` disagreeing with `:authority` (400).
    AuthorityMismatch,
    /// A refused path spelling, or a target that is not a path (400).
    InvalidPath,
    /// A target the identity could not be rebuilt into (400).
    InvalidTarget,
}

impl RefusalKind {
    const ALL: [RefusalKind; 8] = [
        Self::Method,
        Self::TooManyHeaders,
        Self::MissingHost,
        Self::DuplicateHost,
        Self::InvalidHost,
        Self::AuthorityMismatch,
        Self::InvalidPath,
        Self::InvalidTarget,
    ];

    /// The metric label: `method`, `too_many_headers`, `missing_host`, `duplicate_host`,
    /// `invalid_host`, `authority_mismatch`, `invalid_path`, `invalid_target`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::TooManyHeaders => "too_many_headers",
            Self::MissingHost => "missing_host",
            Self::DuplicateHost => "duplicate_host",
            Self::InvalidHost => "invalid_host",
            Self::AuthorityMismatch => "authority_mismatch",
            Self::InvalidPath => "invalid_path",
            Self::InvalidTarget => "invalid_target",
        }
    }

    /// The status it is answered with.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::Method => StatusCode::NOT_IMPLEMENTED,
            Self::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Method => 0,
            Self::TooManyHeaders => 1,
            Self::MissingHost => 2,
            Self::DuplicateHost => 3,
            Self::InvalidHost => 4,
            Self::AuthorityMismatch => 5,
            Self::InvalidPath => 6,
            Self::InvalidTarget => 7,
        }
    }
}

/// A request the ingress stage refused: its [status](Self::status), a short
/// [reason](Self::reason) safe to send to the client (it never echoes request content), a
/// [kind](Self::kind) for metric labels, and the full detail for logs (`Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    kind: RefusalKind,
    reason: &'static str,
    detail: String,
}

impl Refusal {
    fn new(kind: RefusalKind, reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            reason,
            detail: detail.into(),
        }
    }

    fn identity(error: &IdentityError) -> Self {
        let (kind, reason) = match error {
            IdentityError::MissingHost => (RefusalKind::MissingHost, "the request has no Host"),
            IdentityError::DuplicateHost { .. } => (
                RefusalKind::DuplicateHost,
                "the request has more than one Host",
            ),
            IdentityError::InvalidHost { .. } => (
                RefusalKind::InvalidHost,
                "the request's host is not a valid host name",
            ),
            IdentityError::AuthorityMismatch { .. } => (
                RefusalKind::AuthorityMismatch,
                "Host disagrees with :authority",
            ),
            IdentityError::Path(_) => (
                RefusalKind::InvalidPath,
                "the request path is spelled in a way servers disagree on",
            ),
            _ => (RefusalKind::InvalidTarget, "the request target is invalid"),
        };
        Self::new(kind, reason, error.to_string())
    }

    /// The status to answer with (400, 431 or 501).
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// A short reason, the body of the answer.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The kind.
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// The kind as a metric label ([`RefusalKind::as_str`]).
    pub fn as_str(&self) -> &'static str {
        self.kind.as_str()
    }

    /// The answer: `<status>: <reason>` as `text/plain`, `Cache-Control: no-store` (a refusal
    /// must never be cached over good content), `X-Content-Type-Options: nosniff`.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = format!(
            "{} {}: {}\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("Refused"),
            self.reason
        );
        ravelin_http::plain_text(status, Full::new(Bytes::from(body)))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status(), self.as_str(), self.detail)
    }
}

impl std::error::Error for Refusal {}

// === admit ===

/// Runs the ingress stage on `request` (see the [module docs](self) for what, and in which
/// order). On `Ok` the request agrees with its [`RequestIdentity`] extension; on `Err` it may
/// have been partly changed and should be answered with [`Refusal::response`], not served.
///
/// # Errors
/// [`Refusal`] for a request that is refused.
pub fn admit<B>(request: &mut Request<B>, config: &IngressConfig) -> Result<(), Refusal> {
    // `RequestIdentity` reads `Parts`; move the head into one and back (moves, no copies).
    let mut parts = Request::new(()).into_parts().0;
    swap_head(&mut parts, request);
    let result = admit_parts(&mut parts, config);
    swap_head(&mut parts, request);
    result
}

fn swap_head<B>(parts: &mut Parts, request: &mut Request<B>) {
    std::mem::swap(&mut parts.method, request.method_mut());
    std::mem::swap(&mut parts.uri, request.uri_mut());
    std::mem::swap(&mut parts.version, request.version_mut());
    std::mem::swap(&mut parts.headers, request.headers_mut());
    std::mem::swap(&mut parts.extensions, request.extensions_mut());
}

/// [`admit`] on a request head.
///
/// # Errors
/// [`Refusal`] for a request that is refused.
pub fn admit_parts(parts: &mut Parts, config: &IngressConfig) -> Result<(), Refusal> {
    // 1. Methods the edge does not serve.
    if parts.method == Method::CONNECT || parts.method == Method::TRACE {
        return Err(Refusal::new(
            RefusalKind::Method,
            "this proxy does not serve CONNECT or TRACE",
            format!("method {}", parts.method),
        ));
    }
    // 2. Header lines, duplicates included.
    let count = parts.headers.len();
    if count > config.max_headers {
        return Err(Refusal::new(
            RefusalKind::TooManyHeaders,
            "too many header fields",
            format!(
                "{count} header field lines exceed the limit of {}",
                config.max_headers
            ),
        ));
    }
    // 3. Hop-by-hop fields; Connection cannot name what later stages rely on. An upgrade
    // (WebSocket) request keeps exactly `Connection: upgrade` and its `Upgrade`, so the guards
    // see it as one and `Forward` can pass it through.
    let upgrade = crate::upgrade::requested(&parts.method, parts.version, &parts.headers);
    headers::remove_hop_by_hop_except(&mut parts.headers, &config.protected);
    if let Some(protocols) = upgrade {
        crate::upgrade::keep(&mut parts.headers, protocols);
    }
    // 4. The identity.
    let scheme = ClientScheme::of(&parts.extensions);
    let identity = RequestIdentity::from_parts(parts, scheme, &config.identity)
        .map_err(|e| Refusal::identity(&e))?;
    // 5. One Host, an absolute target with the canonical path.
    parts.uri = identity.target_of(&parts.uri).map_err(|e| {
        Refusal::new(
            RefusalKind::InvalidTarget,
            "the request target is invalid",
            e.to_string(),
        )
    })?;
    // `Host` is rewritten only when it differs from the identity's authority (there is at
    // most one line: the identity refused duplicates).
    let agrees = parts
        .headers
        .get(header::HOST)
        .is_some_and(|host| identity.host_header_agrees(host));
    if !agrees {
        match identity.host_header() {
            Some(host) => {
                parts.headers.insert(header::HOST, host);
            }
            None => {
                parts.headers.remove(header::HOST);
            }
        }
    }
    // 6. What a client may not say: the owned headers always, the forwarding headers and the
    // request id unless a trusted proxy sent them. One pass over the names present, compared
    // without hashing, instead of a hash and a probe per listed name (issue 13).
    let trusted = parts
        .extensions
        .get::<PeerAddr>()
        .is_some_and(|peer| config.is_trusted(peer.0.ip()));
    let mut strip: Vec<HeaderName> = Vec::new();
    for name in parts.headers.keys() {
        if config.owned.contains(name)
            || (!trusted
                && (headers::FORWARDING_HEADERS.contains(name)
                    || *name == config.request_id
                    || config.proxy_only.contains(name)))
        {
            strip.push(name.clone());
        }
    }
    for name in strip {
        parts.headers.remove(name);
    }
    if let Some(name) = &config.ja4_header {
        let ja4 = ravelin_http::TlsInfo::of(&parts.extensions)
            .and_then(|tls| tls.ja4.as_deref())
            .and_then(|ja4| HeaderValue::from_str(ja4).ok());
        if let Some(ja4) = ja4 {
            parts.headers.insert(name.clone(), ja4);
        }
    }
    // 7. Every later stage reads the same answer.
    parts.extensions.insert(identity);
    Ok(())
}

// === impl IngressLayer ===

/// Applies the ingress stage to every request; refusals are answered by the layer itself
/// (see [`Refusal::response`]) and counted in
/// `ravelin_proxy_ingress_refused_total{reason}`. Put it outermost.
///
/// ```
/// use std::time::Duration;
/// use ravelin_proxy::{Forward, IngressConfig, IngressLayer, Upstream};
/// use tower::ServiceBuilder;
///
/// # fn build() -> Result<(), ravelin_proxy::UpstreamError> {
/// let upstream = Upstream::builder("origin", "http://127.0.0.1:3000")
///     .body_idle_timeout(Duration::from_secs(30))
///     .build()?;
/// let ingress = IngressConfig::new()
///     .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
///     .max_headers(64);
/// let service = ServiceBuilder::new()
///     .layer(IngressLayer::new(ingress))
///     .service(Forward::new(upstream));
/// # let _: &ravelin_proxy::Ingress<Forward> = &service;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct IngressLayer {
    shared: Arc<Shared>,
}

struct Shared {
    config: IngressConfig,
    /// One handle per [`RefusalKind`], registered once.
    refused: [metrics::Counter; RefusalKind::ALL.len()],
    log: LogLimiter,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl IngressLayer {
    /// A layer enforcing `config`. Metric handles are registered here: install the metrics
    /// recorder first.
    pub fn new(config: IngressConfig) -> Self {
        let refused = RefusalKind::ALL.map(|kind| {
            metrics::counter!("ravelin_proxy_ingress_refused_total", "reason" => kind.as_str())
        });
        Self {
            shared: Arc::new(Shared {
                config,
                refused,
                log: LogLimiter::per_second(5),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &IngressConfig {
        &self.shared.config
    }
}

impl<S> Layer<S> for IngressLayer {
    type Service = Ingress<S>;

    fn layer(&self, inner: S) -> Ingress<S> {
        Ingress {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

// === impl Ingress ===

/// The ingress service; see [`IngressLayer`].
#[derive(Debug, Clone)]
pub struct Ingress<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Ingress<S> {
    /// Wraps `inner` with the ingress stage.
    pub fn new(inner: S, config: IngressConfig) -> Self {
        IngressLayer::new(config).layer(inner)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Ingress<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<IngressBody<ResB>>;
    type Error = S::Error;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Nothing to wait for here; the inner service's readiness is the stack's.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        match admit_parts(&mut parts, &self.shared.config) {
            Ok(()) => {
                future::ResponseFuture::inner(self.inner.call(Request::from_parts(parts, body)))
            }
            Err(refusal) => {
                if let Some(counter) = self.shared.refused.get(refusal.kind.index()) {
                    counter.increment(1);
                }
                if let Some(permit) = self.shared.log.check() {
                    let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0);
                    tracing::debug!(
                        ?peer,
                        reason = refusal.as_str(),
                        detail = %refusal,
                        suppressed = permit.suppressed(),
                        "request refused at ingress"
                    );
                }
                future::ResponseFuture::refused(refusal.response())
            }
        }
    }
}

// === impl IngressBody ===

/// The response body of [`Ingress`]: the inner service's body, or the refusal's text.
#[pin_project]
#[derive(Debug)]
pub struct IngressBody<B> {
    #[pin]
    kind: BodyKind<B>,
}

#[pin_project(project = BodyKindProj)]
#[derive(Debug)]
enum BodyKind<B> {
    Inner(#[pin] B),
    Refused(#[pin] Full<Bytes>),
}

impl<B> IngressBody<B> {
    /// Whether this is a refusal written by the ingress stage.
    pub fn is_refusal(&self) -> bool {
        matches!(self.kind, BodyKind::Refused(_))
    }
}

impl<B> Body for IngressBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            BodyKindProj::Inner(body) => body.poll_frame(cx),
            BodyKindProj::Refused(body) => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner(body) => body.is_end_stream(),
            BodyKind::Refused(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner(body) => body.size_hint(),
            BodyKind::Refused(body) => body.size_hint(),
        }
    }
}

/// The future of [`Ingress`].
pub mod future {
    use super::*;

    /// Resolves to the inner service's response, or at once to a refusal.
    #[pin_project]
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }

    #[pin_project(project = StateProj)]
    #[derive(Debug)]
    enum State<F> {
        Inner(#[pin] F),
        /// `None` once returned.
        Refused(Option<Response<Full<Bytes>>>),
    }

    impl<F> ResponseFuture<F> {
        pub(super) fn inner(future: F) -> Self {
            Self {
                state: State::Inner(future),
            }
        }

        pub(super) fn refused(response: Response<Full<Bytes>>) -> Self {
            Self {
                state: State::Refused(Some(response)),
            }
        }
    }

    impl<F, B, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>>,
    {
        type Output = Result<Response<IngressBody<B>>, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project().state.project() {
                StateProj::Inner(future) => future.poll(cx).map(|result| {
                    result.map(|response| {
                        response.map(|body| IngressBody {
                            kind: BodyKind::Inner(body),
                        })
                    })
                }),
                StateProj::Refused(response) => match response.take() {
                    Some(response) => Poll::Ready(Ok(response.map(|body| IngressBody {
                        kind: BodyKind::Refused(body),
                    }))),
                    None => polled_after_completion(),
                },
            }
        }
    }
}

/// The future was polled again after it completed.
#[cold]
#[expect(
    clippy::unreachable,
    reason = "polling a future after it completed is a caller bug; `Future::poll` allows a panic there, and a panic is loud where a never-woken `Pending` would hang the caller silently"
)]
fn polled_after_completion() -> ! {
    unreachable!("IngressLayer's ResponseFuture polled after completion")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;
    use http::header::HeaderValue;
    use std::net::SocketAddr;

    fn request(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(uri).version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn from(mut request: Request<()>, peer: &str) -> Request<()> {
        request
            .extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
        request
    }

    #[test]
    fn absolute_form_wins_and_the_request_agrees() {
        let mut r = request(
            Version::HTTP_11,
            "http://Victim.Example/x/../LOGIN;a=b?q=1",
            &[("host", "evil.example")],
        );
        admit(&mut r, &IngressConfig::new()).unwrap();
        assert_eq!(r.uri().to_string(), "http://victim.example/LOGIN;a=b?q=1");
        assert_eq!(
            r.headers().get_all("host").iter().collect::<Vec<_>>(),
            ["victim.example"]
        );
        let identity = r.extensions().get::<RequestIdentity>().unwrap();
        assert_eq!(identity.host(), Some("victim.example"));
        assert_eq!(identity.match_path().as_str(), "/login");
    }

    #[test]
    fn refusals_have_status_kind_and_reason() {
        let config = IngressConfig::new();
        let cases: [(Request<()>, StatusCode, &str); 6] = [
            (
                Request::builder()
                    .method("CONNECT")
                    .uri("a.example:443")
                    .body(())
                    .unwrap(),
                StatusCode::NOT_IMPLEMENTED,
                "method",
            ),
            (
                Request::builder()
                    .method("TRACE")
                    .uri("/")
                    .header("host", "a")
                    .body(())
                    .unwrap(),
                StatusCode::NOT_IMPLEMENTED,
                "method",
            ),
            (
                request(Version::HTTP_11, "/", &[]),
                StatusCode::BAD_REQUEST,
                "missing_host",
            ),
            (
                request(Version::HTTP_11, "/", &[("host", "a"), ("host", "b")]),
                StatusCode::BAD_REQUEST,
                "duplicate_host",
            ),
            (
                request(
                    Version::HTTP_2,
                    "http://a.example/",
                    &[("host", "b.example")],
                ),
                StatusCode::BAD_REQUEST,
                "authority_mismatch",
            ),
            (
                request(Version::HTTP_11, "/login%2f", &[("host", "a")]),
                StatusCode::BAD_REQUEST,
                "invalid_path",
            ),
        ];
        for (mut r, status, kind) in cases {
            let refusal = admit(&mut r, &config).unwrap_err();
            assert_eq!(refusal.status(), status, "{refusal}");
            assert_eq!(refusal.as_str(), kind, "{refusal}");
            let response = refusal.response();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()["cache-control"], "no-store");
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
            );
        }
        let mut many = request(Version::HTTP_2, "http://a.example/", &[]);
        for i in 0..5 {
            many.headers_mut().insert(
                HeaderName::try_from(format!("x-{i}")).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let refusal = admit(&mut many, &IngressConfig::new().max_headers(4)).unwrap_err();
        assert_eq!(
            refusal.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert!(admit(&mut many, &IngressConfig::new().max_headers(5)).is_ok());
    }

    #[test]
    fn spoofable_headers_depend_on_the_peer() {
        let spoofed = [
            ("host", "a.example"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-real-ip", "1.2.3.4"),
            ("x-request-id", "chosen"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-bot-score", "99"),
            ("x-bot-score-reasons", "none"),
            ("x-ravelin-skipped", "botscore"),
            ("x-kept", "yes"),
        ];
        let config = IngressConfig::new().trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
        let names = |r: &Request<()>| {
            let mut names: Vec<String> = r.headers().keys().map(|k| k.to_string()).collect();
            names.sort();
            names
        };

        let mut untrusted = from(request(Version::HTTP_11, "/", &spoofed), "203.0.113.9:1234");
        admit(&mut untrusted, &config).unwrap();
        assert_eq!(names(&untrusted), ["host", "x-kept"]);

        let mut no_peer = request(Version::HTTP_11, "/", &spoofed);
        admit(&mut no_peer, &config).unwrap();
        assert_eq!(names(&no_peer), ["host", "x-kept"]);

        // A trusted proxy's forwarding headers and request id are kept; owned ones never.
        for peer in ["10.1.2.3:1234", "[::ffff:10.1.2.3]:1234"] {
            let mut trusted = from(request(Version::HTTP_11, "/", &spoofed), peer);
            admit(&mut trusted, &config).unwrap();
            assert_eq!(
                names(&trusted),
                [
                    "forwarded",
                    "host",
                    "x-forwarded-for",
                    "x-forwarded-host",
                    "x-forwarded-port",
                    "x-forwarded-prefix",
                    "x-forwarded-proto",
                    "x-kept",
                    "x-real-ip",
                    "x-request-id",
                ],
                "{peer}"
            );
        }

        let custom = IngressConfig::new()
            .owned_header(HeaderName::from_static("x-verdict"))
            .request_id_header(HeaderName::from_static("x-trace"))
            .proxy_header(HeaderName::from_static("true-client-ip"))
            .trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
        let fields = [
            ("host", "a"),
            ("x-verdict", "ok"),
            ("x-trace", "t"),
            ("x-request-id", "kept"),
            ("true-client-ip", "1.2.3.4"),
        ];
        let mut r = from(request(Version::HTTP_11, "/", &fields), "203.0.113.9:1234");
        admit(&mut r, &custom).unwrap();
        assert_eq!(names(&r), ["host", "x-request-id"]);
        // A proxy header is a trusted proxy's to send, and `Connection` cannot remove it.
        let mut r = from(
            request(
                Version::HTTP_11,
                "/",
                &[
                    ("host", "a"),
                    ("true-client-ip", "1.2.3.4"),
                    ("connection", "true-client-ip"),
                ],
            ),
            "10.1.2.3:1234",
        );
        admit(&mut r, &custom).unwrap();
        assert_eq!(r.headers()["true-client-ip"], "1.2.3.4");
    }

    #[test]
    fn the_ja4_header_is_the_edges_and_connection_cannot_remove_it() {
        let config = IngressConfig::new().ja4_header(HeaderName::from_static("x-ja4"));
        let mut r = request(
            Version::HTTP_11,
            "/",
            &[
                ("host", "a.example"),
                ("x-ja4", "forged"),
                ("connection", "x-ja4"),
            ],
        );
        r.extensions_mut().insert(ravelin_http::TlsInfo {
            ja4: Some("t13d1516h2_8daaf6152771_02713d6af862".into()),
            ..ravelin_http::TlsInfo::default()
        });
        admit(&mut r, &config).unwrap();
        assert_eq!(r.headers()["x-ja4"], "t13d1516h2_8daaf6152771_02713d6af862");
        // Plaintext: a client's own is removed, none is set.
        let mut plain = request(
            Version::HTTP_11,
            "/",
            &[("host", "a.example"), ("x-ja4", "forged")],
        );
        admit(&mut plain, &config).unwrap();
        assert!(plain.headers().get("x-ja4").is_none());
    }

    #[test]
    fn connection_cannot_remove_protected_fields() {
        let config = IngressConfig::new().trusted_proxies(["127.0.0.0/8".parse().unwrap()]);
        let mut r = from(
            request(
                Version::HTTP_11,
                "/",
                &[
                    ("host", "a.example"),
                    (
                        "connection",
                        "host, x-request-id, x-forwarded-for, x-private",
                    ),
                    ("x-request-id", "abc"),
                    ("x-forwarded-for", "192.0.2.1"),
                    ("x-private", "1"),
                ],
            ),
            "127.0.0.1:1",
        );
        admit(&mut r, &config).unwrap();
        assert_eq!(r.headers()["host"], "a.example");
        assert_eq!(r.headers()["x-request-id"], "abc");
        assert_eq!(r.headers()["x-forwarded-for"], "192.0.2.1");
        assert!(r.headers().get("x-private").is_none());
        assert!(r.headers().get("connection").is_none());
    }

    #[test]
    fn http10_without_host_stays_origin_form() {
        let mut r = request(Version::HTTP_10, "/a/./b", &[]);
        admit(&mut r, &IngressConfig::new()).unwrap();
        assert_eq!(r.uri().to_string(), "/a/b");
        assert!(r.headers().get("host").is_none());
    }

    /// `Host` is left as sent when it already is the identity's authority, and rewritten to it
    /// otherwise (case, a trailing dot, a default or zero-padded port).
    #[test]
    fn host_is_rewritten_only_when_it_disagrees() {
        for (sent, forwarded) in [
            ("a.example:8080", "a.example:8080"),
            ("A.example:8080", "a.example:8080"),
            ("a.example.:08080", "a.example:8080"),
            ("a.example:80", "a.example"),
            ("[::A]", "[::a]"),
        ] {
            let mut r = request(Version::HTTP_11, "/x?q=1", &[("host", sent)]);
            admit(&mut r, &IngressConfig::new()).unwrap();
            assert_eq!(r.headers()["host"], forwarded, "{sent}");
            assert_eq!(r.headers().get_all("host").iter().count(), 1);
            assert_eq!(r.uri().to_string(), format!("http://{forwarded}/x?q=1"));
        }
    }

    #[test]
    fn https_identity_from_client_scheme() {
        let mut r = request(Version::HTTP_11, "/", &[("host", "a.example:443")]);
        r.extensions_mut().insert(ClientScheme("https"));
        admit(&mut r, &IngressConfig::new()).unwrap();
        assert_eq!(r.uri().to_string(), "https://a.example/");
        assert_eq!(r.headers()["host"], "a.example");
    }

    #[test]
    fn config_check_names_field_and_value() {
        assert!(IngressConfig::new().check().is_ok());
        assert_eq!(
            IngressConfig::new()
                .max_headers(0)
                .check()
                .unwrap_err()
                .to_string(),
            "ingress: max_headers must be between 1 and 10000, got 0"
        );
        assert!(IngressConfig::new().max_headers(10_001).check().is_err());
    }
}
