//! Forwarding requests to an upstream over hyper-util's pooled client.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ravelin_failsafe::{LogLimiter, PeerAddr};
use tower_service::Service;

use crate::body::ForwardBody;
use crate::error::UpstreamError;
use crate::headers;

/// A boxed error, as hyper and tower use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type the upstream client sends: any body, boxed once per request so one
/// pooled client serves every body type the layers above produce.
type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// The scheme the client used to reach this proxy, as a request extension. Absent means
/// `http` (the server in this crate speaks plain HTTP; a TLS terminator in front sets this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientScheme(pub &'static str);

// === impl Upstream ===

/// One upstream origin: its base URL, the pooled client that reaches it, and its timeouts.
/// Cheap to clone (shared behind an `Arc`); clones share the connection pool.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<UpstreamInner>,
}

struct UpstreamInner {
    name: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    /// A path prefix put before every request path (`""` for none, never a trailing `/`).
    base_path: String,
    http2: bool,
    preserve_host: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
    client: Client<HttpConnector, ClientBody>,
    metrics: UpstreamMetrics,
}

/// Metric handles registered once per upstream: the request path then only bumps atomics,
/// instead of building label sets and looking them up per request.
struct UpstreamMetrics {
    duration: metrics::Histogram,
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    responses: [metrics::Counter; 5],
    /// By failure: connect, protocol, timeout.
    errors: [metrics::Counter; 3],
}

impl UpstreamMetrics {
    fn new(name: &Arc<str>) -> Self {
        let response = |class: &'static str| metrics::counter!("ravelin_proxy_upstream_responses_total", "upstream" => Arc::clone(name), "class" => class);
        let error = |kind: &'static str| metrics::counter!("ravelin_proxy_upstream_errors_total", "upstream" => Arc::clone(name), "kind" => kind);
        Self {
            duration: metrics::histogram!("ravelin_proxy_upstream_duration_seconds", "upstream" => Arc::clone(name)),
            responses: [
                response("1xx"),
                response("2xx"),
                response("3xx"),
                response("4xx"),
                response("5xx"),
            ],
            errors: [error("connect"), error("protocol"), error("timeout")],
        }
    }

    fn response(&self, status: StatusCode) -> Option<&metrics::Counter> {
        let class = usize::from(status.as_u16() / 100).saturating_sub(1).min(4);
        self.responses.get(class)
    }

    fn error(&self, failure: Failure) -> Option<&metrics::Counter> {
        self.errors.get(match failure {
            Failure::Connect => 0,
            Failure::Protocol => 1,
            Failure::Timeout => 2,
        })
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.inner.name)
            .field("url", &self.url())
            .field("http2", &self.inner.http2)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("response_timeout", &self.inner.response_timeout)
            .finish()
    }
}

impl Upstream {
    /// Starts building an upstream called `name` (used in logs and metric labels) at `url`
    /// (`http://host:port` with an optional base path).
    pub fn builder(name: impl Into<String>, url: impl Into<String>) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.into(),
            url: url.into(),
            http2: false,
            preserve_host: false,
            connect_timeout: UpstreamBuilder::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: UpstreamBuilder::DEFAULT_RESPONSE_TIMEOUT,
            pool_idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 64,
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The base URL, as configured (normalised).
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.inner.scheme, self.inner.authority, self.inner.base_path
        )
    }

    /// Whether requests go out as HTTP/2 (prior knowledge, `h2c`).
    pub fn is_http2(&self) -> bool {
        self.inner.http2
    }

    /// The time allowed to establish a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }

    /// The time allowed from sending the request until the response head arrives.
    pub fn response_timeout(&self) -> Duration {
        self.inner.response_timeout
    }

    fn uri_for(&self, original: &Uri) -> Result<Uri, http::Error> {
        let path = original.path_and_query().map_or("/", PathAndQuery::as_str);
        let path_and_query = if self.inner.base_path.is_empty() {
            PathAndQuery::try_from(path)?
        } else {
            PathAndQuery::try_from(format!("{}{}", self.inner.base_path, path))?
        };
        Uri::builder()
            .scheme(self.inner.scheme.clone())
            .authority(self.inner.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// Builds an [`Upstream`].
#[derive(Debug, Clone)]
pub struct UpstreamBuilder {
    name: String,
    url: String,
    http2: bool,
    preserve_host: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
    pool_idle_timeout: Duration,
    max_idle_per_host: usize,
}

impl UpstreamBuilder {
    /// Default connect timeout: 1 s. A healthy origin on a LAN connects in well under a
    /// millisecond; a longer wait only ties up the client.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default response timeout (request sent → response head): 30 s, nginx's
    /// `proxy_read_timeout` is 60 s between reads; 30 s for the whole head is more useful.
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

    /// Speak HTTP/2 to the upstream with prior knowledge (`h2c`) instead of HTTP/1.1.
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// Send the client's `Host` upstream instead of the upstream's own authority (HTTP/1.1
    /// only; HTTP/2 upstreams always get the upstream authority). Default off, as nginx; the
    /// client's host is in `X-Forwarded-Host` either way.
    pub fn preserve_host(mut self, enabled: bool) -> Self {
        self.preserve_host = enabled;
        self
    }

    /// The time allowed to establish a TCP connection (default 1 s). Exceeding it is a 502.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The time allowed from sending the request to receiving the response head (default 30 s).
    /// Exceeding it is a 504. Bodies stream afterwards without this limit.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per upstream (default 64): the pool's bound.
    pub fn max_idle_per_host(mut self, max: usize) -> Self {
        self.max_idle_per_host = max;
        self
    }

    /// Checks the settings without building a client: for config validation.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn check(&self) -> Result<(), UpstreamError> {
        self.parse().map(|_| ())
    }

    fn parse(&self) -> Result<(Scheme, Authority, String), UpstreamError> {
        let invalid = |reason: String| UpstreamError::InvalidUrl {
            name: self.name.clone(),
            url: self.url.clone(),
            reason,
        };
        let uri: Uri = self.url.parse().map_err(|e| invalid(format!("{e}")))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| invalid("missing scheme; write http://host:port".into()))?;
        if scheme != Scheme::HTTP {
            return Err(invalid(format!(
                "scheme {scheme} is not supported: upstreams are plain http (terminate TLS in front)"
            )));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("missing host".into()))?;
        if uri.query().is_some() {
            return Err(invalid(
                "a query string is not allowed in an upstream URL".into(),
            ));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if value.is_zero() {
                return Err(UpstreamError::ZeroTimeout {
                    name: self.name.clone(),
                    field,
                });
            }
        }
        Ok((scheme, authority, base_path))
    }

    /// Validates the URL and builds the pooled client.
    ///
    /// # Errors
    /// [`UpstreamError`] when the URL is not `http://host[:port][/base]`, or a timeout is zero.
    pub fn build(self) -> Result<Upstream, UpstreamError> {
        let (scheme, authority, base_path) = self.parse()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.max_idle_per_host)
            .http2_only(self.http2)
            .build(connector);
        let name: Arc<str> = self.name.into();
        Ok(Upstream {
            inner: Arc::new(UpstreamInner {
                metrics: UpstreamMetrics::new(&name),
                name,
                scheme,
                authority,
                base_path,
                http2: self.http2,
                preserve_host: self.preserve_host,
                connect_timeout: self.connect_timeout,
                response_timeout: self.response_timeout,
                client,
            }),
        })
    }
}

// === impl Target ===

/// Where one request goes: an upstream, with per-route overrides.
#[derive(Debug, Clone)]
pub struct Target {
    /// The upstream.
    pub upstream: Upstream,
    /// Overrides the upstream's response timeout for this request.
    pub response_timeout: Option<Duration>,
}

impl From<Upstream> for Target {
    fn from(upstream: Upstream) -> Self {
        Self {
            upstream,
            response_timeout: None,
        }
    }
}

/// Picks the [`Target`] of a request. Implemented by [`Upstream`] (everything to one place),
/// [`Routes`](crate::Routes), and closures over the request head.
pub trait Resolve: Send + Sync + 'static {
    /// The target for this request head, or `None` when no route matches (answered 404).
    fn resolve(&self, head: &http::request::Parts) -> Option<Target>;
}

impl Resolve for Upstream {
    fn resolve(&self, _: &http::request::Parts) -> Option<Target> {
        Some(Target::from(self.clone()))
    }
}

impl Resolve for Target {
    fn resolve(&self, _: &http::request::Parts) -> Option<Target> {
        Some(self.clone())
    }
}

impl<F> Resolve for F
where
    F: Fn(&http::request::Parts) -> Option<Target> + Send + Sync + 'static,
{
    fn resolve(&self, head: &http::request::Parts) -> Option<Target> {
        self(head)
    }
}

// === impl Forward ===

/// The innermost service of a proxy: sends each request to its upstream and streams the
/// response back.
///
/// - hop-by-hop fields are removed in both directions (RFC 9110 §7.6.1, including the fields
///   named in `Connection`); `Via` is appended both ways; `X-Forwarded-For`/`-Proto`/`-Host`
///   are set on the request (see [`headers::add_forwarded`]);
/// - bodies stream in both directions, frame by frame, never buffered;
/// - every method is passed through unchanged;
/// - failures are answers, not errors: 502 when the upstream cannot be reached or breaks the
///   protocol, 504 when the response head does not arrive in time, 404 when no route matches.
///   The error type is [`Infallible`].
///
/// The peer address comes from the [`PeerAddr`] extension that [`Server`](crate::Server) sets.
pub struct Forward<R = Upstream> {
    inner: Arc<ForwardInner<R>>,
}

struct ForwardInner<R> {
    resolve: R,
    via: String,
    log: LogLimiter,
}

impl<R> Clone for Forward<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R> fmt::Debug for Forward<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("via", &self.inner.via)
            .finish_non_exhaustive()
    }
}

impl<R: Resolve> Forward<R> {
    /// Forwards every request to the target `resolve` picks.
    pub fn new(resolve: R) -> Self {
        Self::with_via(resolve, "ravelin")
    }

    /// As [`new`](Self::new), with the `Via` pseudonym `via` (default `ravelin`).
    pub fn with_via(resolve: R, via: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(ForwardInner {
                resolve,
                via: via.into(),
                log: LogLimiter::per_second(10),
            }),
        }
    }

    /// The resolver.
    pub fn resolver(&self) -> &R {
        &self.inner.resolve
    }
}

impl<R, B> Service<Request<B>> for Forward<R>
where
    R: Resolve,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ForwardBody>;
    type Error = Infallible;
    // One boxed future per request: the forwarding path does a network round trip, so the
    // allocation is noise, and it keeps the type nameable for users.
    type Future = Pin<Box<dyn Future<Output = Result<Response<ForwardBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pooled client is always ready; connection limits live in the pool and the server.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { Ok(inner.forward(request).await) })
    }
}

/// The kind of upstream failure, for metric labels and the answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Protocol,
    Timeout,
}

impl Failure {
    const fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Protocol => "protocol",
            Failure::Timeout => "timeout",
        }
    }

    const fn status(self) -> StatusCode {
        match self {
            Failure::Connect | Failure::Protocol => StatusCode::BAD_GATEWAY,
            Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    const fn body(self) -> &'static str {
        match self {
            Failure::Connect => "502 Bad Gateway: the upstream could not be reached\n",
            Failure::Protocol => "502 Bad Gateway: the upstream sent an invalid response\n",
            Failure::Timeout => "504 Gateway Timeout: the upstream did not answer in time\n",
        }
    }
}

impl<R: Resolve> ForwardInner<R> {
    async fn forward<B>(&self, request: Request<B>) -> Response<ForwardBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        let Some(target) = self.resolve.resolve(&parts) else {
            metrics::counter!("ravelin_proxy_no_route_total").increment(1);
            return local_response(
                StatusCode::NOT_FOUND,
                "404 Not Found: no route for this host and path\n",
            );
        };
        let upstream = &target.upstream.inner;
        let uri = match target.upstream.uri_for(&parts.uri) {
            Ok(uri) => uri,
            Err(_) => {
                return local_response(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: invalid target\n",
                );
            }
        };

        let received_version = parts.version;
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let scheme = parts
            .extensions
            .get::<ClientScheme>()
            .map_or("http", |s| s.0);
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
        let headers = &mut parts.headers;
        headers::remove_hop_by_hop(headers);
        headers::add_forwarded(headers, peer, scheme, original_host.as_ref());
        headers::append_via(headers, received_version, &self.via);
        if upstream.http2 || !upstream.preserve_host {
            // HTTP/2 carries the authority in :authority (from the URI); for HTTP/1.1 the client
            // fills Host from the URI when it is absent.
            headers.remove(header::HOST);
        }
        parts.uri = uri;
        parts.version = if upstream.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let body: ClientBody = body.map_err(Into::into).boxed_unsync();
        let outgoing = Request::from_parts(parts, body);

        let timeout = target.response_timeout.unwrap_or(upstream.response_timeout);
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, upstream.client.request(outgoing)).await;
        let elapsed = started.elapsed().as_secs_f64();
        let failure = match result {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                headers::remove_hop_by_hop(&mut parts.headers);
                headers::append_via(&mut parts.headers, parts.version, &self.via);
                // The response is re-framed by our own connection to the client.
                parts.version = received_version;
                upstream.metrics.duration.record(elapsed);
                if let Some(counter) = upstream.metrics.response(parts.status) {
                    counter.increment(1);
                }
                return Response::from_parts(parts, ForwardBody::upstream(body));
            }
            Ok(Err(error)) => {
                let failure = if error.is_connect() {
                    Failure::Connect
                } else {
                    Failure::Protocol
                };
                self.log_failure(&upstream.name, failure, Some(&error));
                failure
            }
            Err(_elapsed) => {
                self.log_failure(&upstream.name, Failure::Timeout, None);
                Failure::Timeout
            }
        };
        if let Some(counter) = upstream.metrics.error(failure) {
            counter.increment(1);
        }
        local_response(failure.status(), failure.body())
    }

    fn log_failure(
        &self,
        upstream: &str,
        failure: Failure,
        error: Option<&hyper_util::client::legacy::Error>,
    ) {
        if let Some(permit) = self.log.check() {
            // The source chain says what broke (refused, reset, parse error).
            let cause = error.map(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                text
            });
            tracing::warn!(
                upstream,
                kind = failure.as_str(),
                cause = cause.as_deref().unwrap_or("response head timed out"),
                suppressed = permit.suppressed(),
                "upstream request failed"
            );
        }
    }
}

/// A short plain-text answer written by the proxy itself.
pub(crate) fn local_response(status: StatusCode, body: &'static str) -> Response<ForwardBody> {
    let mut response = Response::new(ForwardBody::local(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // An error page written by the proxy must never be cached over good content.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
