//! Forwarding requests to an upstream over hyper-util's pooled client.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::upgrade::OnUpgrade;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ravelin_http::PeerAddr;
use ravelin_http::{CloseDelimited, RequestIdentity, canonical_path};
use ravelin_primitives::LogLimiter;
use ravelin_primitives::clock::{Clock, MonotonicClock, Nanos};
use ravelin_primitives::{Validate, Violations};
use tower_service::Service;

use crate::body::{ForwardBody, IdleWatch, WatchedBody};
use crate::dns::{Addresses, ConnectorResolver, DnsConfig, NameResolver, SystemResolver};
use crate::error::UpstreamError;
use crate::exchange::{Resilience, Sent, UpstreamClient};
use crate::headers;
use crate::health::{HealthConfig, SharedClock};
use crate::pool::Http1Pool;
use crate::retry::{Replay, RetryConfig};
use crate::upgrade::{self, Upgrades};
use crate::upstream_tls::{ConnectTimeout, Prepared, TlsSettings};
use crate::worker::PerWorker;

/// A boxed error, as hyper and tower use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type the upstream client sends: any body, boxed once per request so one
/// pooled client serves every body type the layers above produce.
pub(crate) type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// The scheme the client used to reach this proxy, as a request extension. Absent means
/// `http` (the server in this crate speaks plain HTTP; a TLS terminator in front sets this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientScheme(pub &'static str);

impl ClientScheme {
    /// The scheme as an [`http::uri::Scheme`]: `https` (any case) is HTTPS, anything else HTTP.
    pub fn to_scheme(self) -> Scheme {
        if self.0.eq_ignore_ascii_case("https") {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// The scheme of a request: its `ClientScheme` extension's, or `http` without one.
    pub fn of(extensions: &http::Extensions) -> Scheme {
        extensions
            .get::<ClientScheme>()
            .map_or(Scheme::HTTP, |s| s.to_scheme())
    }
}

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
    /// `Host` for an HTTP/1 request that does not keep the client's: the authority as the
    /// client library would write it (the port only when it is not the scheme's default),
    /// made once here instead of formatted per request by the pool (issue 13).
    host_header: Option<HeaderValue>,
    connect_timeout: Duration,
    response_timeout: Duration,
    client: PerWorker<UpstreamClient>,
    /// The circuit, the retry budget and their settings.
    resilience: Resilience,
    /// The resolved addresses when the URL names a host (not an IP address).
    addresses: Option<Arc<Addresses>>,
    metrics: UpstreamMetrics,
    /// The body idle timeout and what it reports to, shared by every response body.
    body_watch: Arc<IdleWatch>,
    /// Upgraded (WebSocket) connections: their bound, idle timeout and metrics; `None` when
    /// upgrades are not passed through (`max_upgraded_connections(0)`, or an HTTP/2 upstream).
    upgrades: Option<Arc<Upgrades>>,
}

/// Metric handles registered once per upstream: the request path then only bumps atomics,
/// instead of building label sets and looking them up per request.
struct UpstreamMetrics {
    duration: metrics::Histogram,
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    responses: [metrics::Counter; 5],
    /// By failure: connect, protocol, timeout.
    errors: [metrics::Counter; 3],
    /// Request bodies that failed on the client's side (malformed chunk, reset mid-upload).
    client_body_errors: metrics::Counter,
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
            client_body_errors: metrics::counter!("ravelin_proxy_client_errors_total", "upstream" => Arc::clone(name), "kind" => "request_body"),
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
            .field("body_idle_timeout", &self.inner.body_watch.timeout)
            .finish()
    }
}

impl Upstream {
    /// Starts building an upstream called `name` (used in logs and metric labels) at `url`
    /// (`http://host[:port]` or `https://host[:port]`, with an optional base path; see
    /// [`UpstreamBuilder::ca_file`] for what an `https` upstream verifies).
    pub fn builder(name: impl Into<String>, url: impl Into<String>) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.into(),
            url: url.into(),
            http2: false,
            preserve_host: false,
            connect_timeout: UpstreamBuilder::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: UpstreamBuilder::DEFAULT_RESPONSE_TIMEOUT,
            body_idle_timeout: UpstreamBuilder::DEFAULT_BODY_IDLE_TIMEOUT,
            pool_idle_timeout: UpstreamBuilder::DEFAULT_POOL_IDLE_TIMEOUT,
            max_idle_per_host: UpstreamBuilder::DEFAULT_MAX_IDLE_PER_HOST,
            upgrade_idle_timeout: UpstreamBuilder::DEFAULT_UPGRADE_IDLE_TIMEOUT,
            max_upgraded_connections: UpstreamBuilder::DEFAULT_MAX_UPGRADED_CONNECTIONS,
            health: HealthConfig::default(),
            retry: RetryConfig::default(),
            dns: DnsConfig::default(),
            resolver: None,
            clock: None,
            tls: TlsSettings::default(),
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

    /// Whether requests go out as HTTP/2 (`h2c` with prior knowledge, or `h2` by ALPN over TLS).
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

    /// The time allowed between two frames of a response body.
    pub fn body_idle_timeout(&self) -> Duration {
        self.inner.body_watch.timeout
    }

    /// The idle timeout of upgraded (WebSocket) connections, or `None` when upgrades are not
    /// passed through to this upstream (`max_upgraded_connections(0)`, or HTTP/2).
    pub fn upgrade_idle_timeout(&self) -> Option<Duration> {
        self.inner.upgrades.as_ref().map(|u| u.idle_timeout())
    }

    /// Whether the client's `Host` (the request identity's authority) is sent upstream.
    pub fn preserves_host(&self) -> bool {
        self.inner.preserve_host
    }

    /// The last good addresses of the upstream's host name: `None` for an IP address, or
    /// before the first lookup succeeded.
    pub fn resolved_addresses(&self) -> Option<Vec<std::net::SocketAddr>> {
        self.inner
            .addresses
            .as_ref()
            .and_then(|a| a.current())
            .map(|set| set.as_ref().clone())
    }

    /// The upstream URI for a request path (already canonical) and query.
    fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let base = self.inner.base_path.as_str();
        let mut text = String::with_capacity(
            base.len()
                .saturating_add(path.len())
                .saturating_add(query.map_or(0, |q| q.len().saturating_add(1))),
        );
        text.push_str(base);
        text.push_str(path);
        if let Some(query) = query {
            text.push('?');
            text.push_str(query);
        }
        let path_and_query = PathAndQuery::try_from(text)?;
        if !self.inner.http2 {
            // HTTP/1.1 goes through this crate's pool, which writes the target as given: the
            // origin form (RFC 9112 §3.2.1), its authority in `Host`.
            return Ok(Uri::from(path_and_query));
        }
        // HTTP/2: the authority becomes `:authority`.
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
    body_idle_timeout: Duration,
    pool_idle_timeout: Duration,
    max_idle_per_host: usize,
    upgrade_idle_timeout: Duration,
    max_upgraded_connections: usize,
    health: HealthConfig,
    retry: RetryConfig,
    dns: DnsConfig,
    resolver: Option<Arc<dyn NameResolver>>,
    clock: Option<SharedClock>,
    tls: TlsSettings,
}

impl UpstreamBuilder {
    /// Default connect timeout: 1 s. A healthy origin on a LAN connects in well under a
    /// millisecond; a longer wait only ties up the client.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default response timeout (request sent → response head): 30 s, nginx's
    /// `proxy_read_timeout` is 60 s between reads; 30 s for the whole head is more useful.
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default body idle timeout (between two frames of a response body): 60 s, nginx's
    /// `proxy_read_timeout`.
    pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default idle time of a pooled connection before it is closed: 90 s.
    pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
    /// Default bound on idle pooled connections per upstream: 64.
    pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 64;
    /// Default idle timeout of an upgraded (WebSocket) connection: 60 s without a byte either
    /// way, nginx's `proxy_read_timeout` (which also closes idle WebSockets).
    pub const DEFAULT_UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default bound on upgraded connections open at once to one upstream: 1,000.
    pub const DEFAULT_MAX_UPGRADED_CONNECTIONS: usize = 1_000;
    /// The most upgraded connections per upstream: 10,000 (the server's default connection
    /// limit; each one holds two descriptors and 16 KiB of buffers).
    pub const MAX_UPGRADED_CONNECTIONS: usize = 10_000;
    /// The longest any of the timeouts may be: 1 h. Longer is a configuration mistake (a unit
    /// slip), and would let one stalled peer hold a connection for the better part of a day.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
    /// The most idle pooled connections per upstream: 10,000 (the server's default connection
    /// limit; more would hold descriptors no one uses).
    pub const MAX_IDLE_PER_HOST: usize = 10_000;

    /// Speak HTTP/2 to the upstream instead of HTTP/1.1: with prior knowledge (`h2c`) over
    /// `http://`, by ALPN (`h2`, and nothing else offered) over `https://`. HTTP/2 upstreams
    /// get protocol upgrades (WebSocket) as plain requests: HTTP/2 has no `Upgrade`.
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// Send the client's host upstream instead of the upstream's own authority (HTTP/1.1
    /// only; HTTP/2 upstreams always get the upstream authority). Default off, as nginx; the
    /// client's host is in `X-Forwarded-Host` either way.
    ///
    /// The host sent is the request's effective authority — the
    /// [`RequestIdentity`](ravelin_http::RequestIdentity)'s when the ingress stage ran, else the
    /// absolute-form target's authority, else the first `Host` — as exactly one `Host` line.
    pub fn preserve_host(mut self, enabled: bool) -> Self {
        self.preserve_host = enabled;
        self
    }

    /// The time allowed to establish a connection — the TCP connect and, for `https://`, the
    /// TLS handshake (default 1 s, at most 1 h). Exceeding it is a 502 (`kind="connect"`),
    /// retried like any failed connect.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The time allowed from sending the request to receiving the response head (default 30 s,
    /// at most 1 h). Exceeding it is a 504. Bodies stream afterwards under
    /// [`body_idle_timeout`](Self::body_idle_timeout) instead.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The time allowed between two frames of the upstream's response body (default 60 s, like
    /// nginx's `proxy_read_timeout`; more than zero, at most 1 h). When it passes, the body
    /// ends with [`ForwardBodyError::IdleTimeout`](crate::ForwardBodyError::IdleTimeout): the
    /// client's response is cut off (it already has its head, so no status can be sent), a
    /// cache filling from it sees the error, and
    /// `ravelin_proxy_upstream_errors_total{kind="body_idle_timeout"}` counts it. A stalled
    /// upstream can no longer pin a client connection forever.
    pub fn body_idle_timeout(mut self, timeout: Duration) -> Self {
        self.body_idle_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s, at most 1 h; zero keeps none).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per upstream (default 64, at most 10,000; zero
    /// disables pooling): the pool's bound.
    pub fn max_idle_per_host(mut self, max: usize) -> Self {
        self.max_idle_per_host = max;
        self
    }

    /// How long an upgraded (WebSocket) connection may stay silent — no byte either way —
    /// before the proxy closes both sides (default 60 s; more than zero, at most 1 h). Ended
    /// relays are counted in `ravelin_proxy_upgraded_ended_total{reason="idle_timeout"}`.
    /// Applications that keep quiet connections open send pings more often than this.
    pub fn upgrade_idle_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_idle_timeout = timeout;
        self
    }

    /// How many upgraded (WebSocket) connections to this upstream may be open at once
    /// (default 1,000, at most 10,000). Past it an upgrade request is answered `503` without
    /// contacting the upstream. Upgraded connections leave the server's `max_connections`
    /// accounting once handed over, so this is their bound. Zero turns pass-through off:
    /// upgrade requests are then forwarded as plain requests, without `Upgrade`.
    pub fn max_upgraded_connections(mut self, max: usize) -> Self {
        self.max_upgraded_connections = max;
        self
    }

    /// When the upstream counts as failing and how it is probed again (default
    /// [`HealthConfig::default`]: open after 5 gateway failures in a row, probe after 5 s to
    /// 60 s, jittered). While its circuit is open, requests are answered 503 with
    /// `Retry-After` without contacting it. See [`HealthConfig`].
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    /// How requests whose connection attempt failed are retried (default
    /// [`RetryConfig::default`]: once, for bodiless idempotent requests, within a budget of
    /// 10 % of requests plus 3 per second). See [`RetryConfig`].
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// How a host name in the URL is kept resolved (default: refreshed every 30 s, last good
    /// set kept). See [`DnsConfig`].
    pub fn dns(mut self, dns: DnsConfig) -> Self {
        self.dns = dns;
        self
    }

    /// Resolves the URL's host name with `resolver` instead of the system resolver.
    pub fn resolver(mut self, resolver: impl NameResolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// Trusts only the CA certificates in the PEM file `path` for this `https://` upstream,
    /// instead of the public roots (the Mozilla set compiled in through `webpki-roots`). Use
    /// it for origins with certificates from a private CA: the public roots are then not
    /// trusted for this upstream at all, so no public CA can vouch for it.
    ///
    /// Without it, an `https://` upstream's certificate must chain to a public root and name
    /// the URL's host (or [`tls_server_name`](Self::tls_server_name)); verification cannot be
    /// turned off. A failed verification is a 502, counted as
    /// `ravelin_proxy_upstream_errors_total{kind="connect"}`. The file is read by
    /// [`build`](Self::build) (and [`check`](Self::check)): unreadable, empty or invalid is an
    /// [`UpstreamError::Tls`]. A TLS setting on an `http://` upstream is refused too.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Presents the certificate chain in the PEM file `path` (leaf first) to the upstream
    /// (mutual TLS); [`client_key_file`](Self::client_key_file) must be set too.
    pub fn client_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.client_cert_file = Some(path.into());
        self
    }

    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of
    /// [`client_cert_file`](Self::client_cert_file); it must match the certificate.
    pub fn client_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.client_key_file = Some(path.into());
        self
    }

    /// The name the upstream's certificate must carry and the SNI sent, instead of the URL's
    /// host: for an upstream addressed by IP address, or by a name its certificate does not
    /// list (a DNS name or an IP address).
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls.server_name = Some(name.into());
        self
    }

    /// Reads time for the circuit, the retry budget and DNS refreshes from `clock` (default
    /// [`MonotonicClock`](ravelin_primitives::clock::MonotonicClock)); tests pass a
    /// [`ManualClock`](ravelin_primitives::clock::ManualClock).
    pub fn clock(mut self, clock: impl Clock<Instant = Nanos>) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Checks the settings without building a client: for config validation.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn check(&self) -> Result<(), UpstreamError> {
        let (scheme, _, _) = self.parse()?;
        self.tls
            .prepare(&self.name, scheme == Scheme::HTTPS)
            .map(|_| ())
    }

    /// The health, retry and DNS settings' violations, under their section names.
    fn check_policies(&self) -> Result<(), UpstreamError> {
        let mut violations = Violations::new();
        for (section, result) in [
            ("health", self.health.validate()),
            ("retry", self.retry.validate()),
            ("dns", self.dns.validate()),
        ] {
            if let Err(v) = result {
                violations.merge_under(section, v);
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(UpstreamError::Policy {
                name: self.name.clone(),
                violations,
            })
        }
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
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(invalid(format!(
                "scheme {scheme} is not supported: write http:// or https://"
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
            ("body_idle_timeout", self.body_idle_timeout),
            ("upgrade_idle_timeout", self.upgrade_idle_timeout),
        ] {
            if value.is_zero() {
                return Err(UpstreamError::ZeroTimeout {
                    name: self.name.clone(),
                    field,
                });
            }
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("body_idle_timeout", self.body_idle_timeout),
            ("pool_idle_timeout", self.pool_idle_timeout),
            ("upgrade_idle_timeout", self.upgrade_idle_timeout),
        ] {
            if value > Self::MAX_TIMEOUT {
                return Err(UpstreamError::TooLarge {
                    name: self.name.clone(),
                    field,
                    limit: format!("{:?}", Self::MAX_TIMEOUT),
                    value: format!("{value:?}"),
                });
            }
        }
        if self.max_idle_per_host > Self::MAX_IDLE_PER_HOST {
            return Err(UpstreamError::TooLarge {
                name: self.name.clone(),
                field: "max_idle_per_host",
                limit: Self::MAX_IDLE_PER_HOST.to_string(),
                value: self.max_idle_per_host.to_string(),
            });
        }
        if self.max_upgraded_connections > Self::MAX_UPGRADED_CONNECTIONS {
            return Err(UpstreamError::TooLarge {
                name: self.name.clone(),
                field: "max_upgraded_connections",
                limit: Self::MAX_UPGRADED_CONNECTIONS.to_string(),
                value: self.max_upgraded_connections.to_string(),
            });
        }
        self.check_policies()?;
        Ok((scheme, authority, base_path))
    }

    /// Validates the URL and builds the pooled client.
    ///
    /// # Errors
    /// [`UpstreamError`] when the URL is not `http(s)://host[:port][/base]`, a timeout is zero,
    /// a setting is above its upper bound, or a TLS setting is unusable (a file that cannot be
    /// read or parsed; see [`ca_file`](Self::ca_file)).
    pub fn build(self) -> Result<Upstream, UpstreamError> {
        let (scheme, authority, base_path) = self.parse()?;
        let https = scheme == Scheme::HTTPS;
        let tls = self.tls.prepare(&self.name, https)?;
        let name: Arc<str> = self.name.into();
        let clock: SharedClock = self
            .clock
            .unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        // An IP address is connected to as written; a name is resolved, last good set kept.
        let host = authority.host();
        let addresses = (host.parse::<std::net::IpAddr>().is_err()
            && !(host.starts_with('[') && host.ends_with(']')))
        .then(|| {
            let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
            let resolver = self.resolver.unwrap_or_else(|| Arc::new(SystemResolver));
            Arc::new(Addresses::new(
                &name,
                host,
                port,
                self.dns.clone(),
                resolver,
                Arc::clone(&clock),
            ))
        });
        let mut connector =
            HttpConnector::new_with_resolver(ConnectorResolver::new(addresses.clone()));
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(true);
        // The TLS connector below is what sees the scheme.
        connector.enforce_http(false);
        let connector = ConnectTimeout::new(
            https_connector(connector, tls, self.http2),
            self.connect_timeout,
        );
        // One pool per per-core worker (connections driven on the worker that uses them), one
        // shared pool everywhere else.
        let client = if self.http2 {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(self.pool_idle_timeout)
                .pool_max_idle_per_host(self.max_idle_per_host)
                .http2_only(true);
            PerWorker::new(move || {
                UpstreamClient::Http2(Box::new(builder.build(connector.clone())))
            })
        } else {
            let target = Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .map_err(|error| UpstreamError::InvalidUrl {
                    name: name.to_string(),
                    url: self.url.clone(),
                    reason: error.to_string(),
                })?;
            let (max_idle, idle_timeout) = (self.max_idle_per_host, self.pool_idle_timeout);
            PerWorker::new(move || {
                UpstreamClient::Http1(Http1Pool::new(
                    connector.clone(),
                    target.clone(),
                    max_idle,
                    idle_timeout,
                ))
            })
        };
        let resilience = Resilience::new(&name, self.health, self.retry, clock);
        let body_watch = Arc::new(IdleWatch {
            upstream: Arc::clone(&name),
            timeout: self.body_idle_timeout,
            timeouts: metrics::counter!("ravelin_proxy_upstream_errors_total", "upstream" => Arc::clone(&name), "kind" => "body_idle_timeout"),
            log: LogLimiter::per_second(10),
        });
        let upgrades = (!self.http2 && self.max_upgraded_connections > 0).then(|| {
            Arc::new(Upgrades::new(
                &name,
                self.max_upgraded_connections,
                self.upgrade_idle_timeout,
            ))
        });
        let host_header = upstream_host_header(&scheme, &authority);
        Ok(Upstream {
            inner: Arc::new(UpstreamInner {
                host_header,
                metrics: UpstreamMetrics::new(&name),
                upgrades,
                body_watch,
                name,
                scheme,
                authority,
                base_path,
                http2: self.http2,
                preserve_host: self.preserve_host,
                connect_timeout: self.connect_timeout,
                response_timeout: self.response_timeout,
                client,
                resilience,
                addresses,
            }),
        })
    }
}

/// The `Host` an HTTP/1 request to `authority` carries when the client's is not kept: the host,
/// and the port when it is not `scheme`'s default (what hyper-util's client writes when the
/// field is absent).
fn upstream_host_header(scheme: &Scheme, authority: &Authority) -> Option<HeaderValue> {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    match authority.port_u16() {
        Some(port) if port != default_port => {
            HeaderValue::from_str(&format!("{}:{port}", authority.host())).ok()
        }
        _ => HeaderValue::from_str(authority.host()).ok(),
    }
}

/// Wraps the plain connector (resolver, connect timeout) in the TLS one (which passes
/// `http://` connections through untouched).
fn https_connector(
    connector: HttpConnector<ConnectorResolver>,
    tls: Prepared,
    http2: bool,
) -> HttpsConnector<HttpConnector<ConnectorResolver>> {
    let Prepared {
        config,
        server_name,
    } = tls;
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let builder = match server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    if http2 {
        builder.enable_http2().wrap_connector(connector)
    } else {
        builder.enable_http1().wrap_connector(connector)
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
///   named in `Connection`, never `Host`); `Via` is appended both ways; `Forwarded` and
///   `X-Forwarded-For`/`-Proto`/`-Host` are set on the request (see
///   [`headers::add_forwarded`]);
/// - the host is the request's [`RequestIdentity`] authority when the
///   [ingress stage](crate::ingress) set one (else an absolute-form target's authority, else
///   `Host`): it is what `X-Forwarded-Host` carries and, with
///   [`preserve_host`](UpstreamBuilder::preserve_host), the one `Host` line sent upstream;
/// - the path sent upstream is the canonical path (see [`ravelin_http::canonical_path`]);
/// - bodies stream in both directions, frame by frame, never buffered; the response body is
///   cut off when the upstream sends nothing for
///   [`body_idle_timeout`](UpstreamBuilder::body_idle_timeout); a response framed by
///   connection close carries the [`CloseDelimited`] extension (a cache must not store it);
/// - every method is passed through unchanged except `CONNECT`, answered 501 (no tunnels);
/// - an HTTP/1.1 upgrade request (WebSocket) keeps `Connection: upgrade` and its `Upgrade`;
///   when the upstream answers `101` with a protocol asked for, both connections are taken
///   over and relayed under the upstream's
///   [`upgrade_idle_timeout`](UpstreamBuilder::upgrade_idle_timeout) and
///   [`max_upgraded_connections`](UpstreamBuilder::max_upgraded_connections) (503 past it);
///   the client connection must come from a server that serves upgrades, as
///   [`Server`](crate::Server) does;
/// - `https://` upstreams are reached over TLS with the certificate verified (see
///   [`UpstreamBuilder::ca_file`]);
/// - failures are answers, not errors: 502 when the upstream cannot be reached or breaks the
///   protocol, 504 when the response head does not arrive in time, 503 with `Retry-After`
///   while the upstream's circuit is open (see [`HealthConfig`]), 404 when no route matches,
///   400 when the client's request body fails (a malformed chunk; counted in
///   `ravelin_proxy_client_errors_total`, not as an upstream error). The error type is
///   [`Infallible`];
/// - a bodiless idempotent request whose connection attempt failed is sent again, within the
///   upstream's retry budget (see [`RetryConfig`]); an upstream URL naming a host is resolved
///   with a last good address set (see [`DnsConfig`]).
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
        if parts.method == Method::CONNECT {
            // A CONNECT asks for a tunnel, which this proxy does not build; forwarding it
            // would hand the origin a request it cannot make sense of.
            return local_response(
                StatusCode::NOT_IMPLEMENTED,
                "501 Not Implemented: this proxy does not tunnel (CONNECT)\n",
            );
        }
        let Some(target) = self.resolve.resolve(&parts) else {
            metrics::counter!("ravelin_proxy_no_route_total").increment(1);
            return local_response(
                StatusCode::NOT_FOUND,
                "404 Not Found: no route for this host and path\n",
            );
        };
        let upstream = &target.upstream.inner;
        let identity = parts.extensions.get::<RequestIdentity>();
        let Some(path) = forwarded_path(parts.uri.path(), identity) else {
            return local_response(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: invalid request path\n",
            );
        };
        let uri = match target.upstream.uri_for(&path, parts.uri.query()) {
            Ok(uri) => uri,
            Err(_) => {
                return local_response(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: invalid target\n",
                );
            }
        };
        drop(path);

        let received_version = parts.version;
        let method = parts.method.clone();
        // The authority the client asked for, decided once: the identity's when the ingress
        // stage ran; else an absolute-form target's authority wins over `Host` (RFC 9112
        // §3.2.2), else the first `Host`. X-Forwarded-Host, Forwarded and preserve_host all
        // use it, so they cannot disagree with routing and the cache.
        let original_host = match identity {
            Some(identity) => identity.host_header(),
            None => parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .or_else(|| parts.headers.get(header::HOST).cloned()),
        };
        let scheme = match identity {
            Some(identity) => identity.scheme().clone(),
            None => ClientScheme::of(&parts.extensions),
        };
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
        // An upgrade (WebSocket) goes on as one only when this upstream passes upgrades
        // through and the client's connection can be taken over: the server's `OnUpgrade`,
        // taken out of the request here, before the request becomes the upstream's.
        let upgrade = match (
            &upstream.upgrades,
            upgrade::requested(&method, received_version, &parts.headers),
        ) {
            (Some(upgrades), Some(protocols)) => match parts.extensions.remove::<OnUpgrade>() {
                Some(on_client) => match upgrades.try_acquire() {
                    Some(permit) => {
                        let hold = parts.extensions.remove::<crate::server::ConnectionHold>();
                        Some((upgrades, protocols, on_client, (permit, hold)))
                    }
                    None => {
                        return local_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "503 Service Unavailable: too many upgraded connections to this upstream\n",
                        );
                    }
                },
                None => None,
            },
            _ => None,
        };
        let headers = &mut parts.headers;
        headers::remove_hop_by_hop(headers);
        if let Some((_, protocols, _, _)) = &upgrade {
            upgrade::keep(headers, protocols.clone());
        }
        headers::add_forwarded(headers, peer, scheme.as_str(), original_host.as_ref());
        headers::append_via(headers, received_version, &self.via);
        match original_host {
            // Exactly one Host line: `insert` replaces every line the client sent.
            Some(host) if upstream.preserve_host && !upstream.http2 => {
                headers.insert(header::HOST, host);
            }
            // HTTP/2 carries the authority in :authority (from the URI).
            _ if upstream.http2 => {
                headers.remove(header::HOST);
            }
            // HTTP/1.1: the upstream's own authority, made once (the client would otherwise
            // format it from the URI for every request).
            _ => match &upstream.host_header {
                Some(host) => {
                    headers.insert(header::HOST, host.clone());
                }
                None => {
                    headers.remove(header::HOST);
                }
            },
        }
        parts.uri = uri;
        parts.version = if upstream.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        // A bodiless idempotent request may go again if the connection cannot be made (see
        // `retry`). Through the HTTP/1.1 pool it comes back unsent for that; the HTTP/2 client
        // takes it either way, so it keeps a copy of its head.
        let retryable = body.is_end_stream() && crate::retry::is_idempotent(&parts.method);
        let replay = if upstream.http2 {
            Replay::of(
                &parts,
                body.is_end_stream(),
                upstream.resilience.max_retries(),
            )
        } else {
            None
        };
        // Watch the client's body: when it fails (a malformed chunk, a reset mid-upload) the
        // upstream exchange fails too, and that is the client's fault, not the upstream's.
        let (body, client_body_failed) = WatchedBody::new(body);
        let body: ClientBody = body.boxed_unsync();
        let outgoing = Request::from_parts(parts, body);

        let timeout = target.response_timeout.unwrap_or(upstream.response_timeout);
        let started = Instant::now();
        let sent = upstream
            .resilience
            .send(
                upstream.client.get(),
                outgoing,
                retryable,
                replay,
                timeout,
                &client_body_failed,
            )
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        let failure = match sent {
            Sent::Response(mut response) => {
                if let Some((upgrades, protocols, on_client, permit)) = upgrade {
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        upstream.metrics.duration.record(elapsed);
                        if let Some(counter) = upstream.metrics.response(response.status()) {
                            counter.increment(1);
                        }
                        let Some(chosen) = upgrade::accepted(&protocols, response.headers()) else {
                            // A switch to something not asked for cannot be relayed safely.
                            if let Some(permit) = self.log.check() {
                                tracing::warn!(
                                    upstream = &*upstream.name,
                                    kind = Failure::Protocol.as_str(),
                                    suppressed = permit.suppressed(),
                                    "upstream switched to a protocol the client did not ask for"
                                );
                            }
                            if let Some(counter) = upstream.metrics.error(Failure::Protocol) {
                                counter.increment(1);
                            }
                            return local_response(
                                Failure::Protocol.status(),
                                Failure::Protocol.body(),
                            );
                        };
                        let on_origin = hyper::upgrade::on(&mut response);
                        upgrades.spawn_relay(
                            Arc::clone(&upstream.name),
                            on_client,
                            on_origin,
                            permit,
                        );
                        let (mut parts, _) = response.into_parts();
                        headers::remove_hop_by_hop(&mut parts.headers);
                        upgrade::keep(&mut parts.headers, chosen);
                        headers::append_via(&mut parts.headers, parts.version, &self.via);
                        parts.version = received_version;
                        return Response::from_parts(parts, ForwardBody::empty());
                    }
                    // Any other answer is an ordinary response; the slot and the client's
                    // upgrade handle are let go.
                    drop((permit, on_client));
                } else if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    // A switch nobody asked for (and that HTTP/2 cannot carry, RFC 9113 §8.6):
                    // the upstream broke the protocol.
                    if let Some(permit) = self.log.check() {
                        tracing::warn!(
                            upstream = &*upstream.name,
                            kind = Failure::Protocol.as_str(),
                            suppressed = permit.suppressed(),
                            "upstream answered 101 to a request that asked for no upgrade"
                        );
                    }
                    if let Some(counter) = upstream.metrics.error(Failure::Protocol) {
                        counter.increment(1);
                    }
                    return local_response(Failure::Protocol.status(), Failure::Protocol.body());
                }
                let (mut parts, body) = response.into_parts();
                // Before hop-by-hop removal takes Transfer-Encoding away.
                let close_delimited = is_close_delimited(&parts, &body, &method);
                headers::remove_hop_by_hop(&mut parts.headers);
                headers::append_via(&mut parts.headers, parts.version, &self.via);
                if close_delimited {
                    parts.extensions.insert(CloseDelimited);
                }
                // The response is re-framed by our own connection to the client.
                parts.version = received_version;
                upstream.metrics.duration.record(elapsed);
                if let Some(counter) = upstream.metrics.response(parts.status) {
                    counter.increment(1);
                }
                return Response::from_parts(
                    parts,
                    ForwardBody::upstream(body, Arc::clone(&upstream.body_watch)),
                );
            }
            _ if client_body_failed.load(Ordering::Acquire) => {
                upstream.metrics.client_body_errors.increment(1);
                tracing::debug!(
                    upstream = &*upstream.name,
                    "the client's request body failed; answered 400"
                );
                // If the client is gone this answer goes nowhere, which is fine.
                return local_response(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: the request body could not be read\n",
                );
            }
            // The upstream's circuit is open: it was not contacted (counted by its health).
            Sent::Refused { retry_after } => {
                return upstream_unavailable(retry_after);
            }
            Sent::Failed(error) => {
                let failure = if error.is_connect() {
                    Failure::Connect
                } else {
                    Failure::Protocol
                };
                self.log_failure(&upstream.name, failure, Some(&error));
                failure
            }
            Sent::TimedOut => {
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
        error: Option<&crate::exchange::ExchangeError>,
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

/// The path sent upstream: the canonical form of the request's path (RFC 3986 normalization:
/// unreserved escapes decoded, dot segments removed, slashes merged), so the origin serves
/// exactly the path routing and policies matched.
///
/// With a [`RequestIdentity`] (the ingress stage ran) a path the strict normalization refuses
/// cannot normally arrive — ingress refused it — and is refused here too (`None`, a 400) if a
/// later layer rewrote the URI into one. Without an identity such a path is forwarded as
/// received: policies that ran matched it leniently (reading the ambiguity towards matching),
/// and refusing is the ingress stage's decision, not this service's.
fn forwarded_path<'a>(raw: &'a str, identity: Option<&RequestIdentity>) -> Option<Cow<'a, str>> {
    match identity {
        // The common case: ingress already rewrote the URI to the canonical path.
        Some(identity) if identity.canonical_path() == raw => Some(Cow::Borrowed(raw)),
        Some(_) => canonical_path(raw).ok().map(Cow::Owned),
        None => Some(canonical_path(raw).map_or(Cow::Borrowed(raw), Cow::Owned)),
    }
}

/// Whether an upstream response's body ends at connection close (RFC 9112 §6.3 rule 8): an
/// HTTP/1.x response with a body and neither `Content-Length` nor chunked as the final
/// transfer coding. hyper's client exposes no framing flag, so this reads the response head
/// as received (before hop-by-hop removal) and the body's size hint.
fn is_close_delimited(
    parts: &http::response::Parts,
    body: &hyper::body::Incoming,
    method: &Method,
) -> bool {
    if !matches!(parts.version, Version::HTTP_10 | Version::HTTP_11)
        || *method == Method::HEAD
        || body.is_end_stream()
        || body.size_hint().exact().is_some()
        || parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        return false;
    }
    let final_coding_is_chunked = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
    !final_coding_is_chunked
}

/// The answer while an upstream's circuit is open: 503 with the cooldown left as `Retry-After`.
fn upstream_unavailable(retry_after: Duration) -> Response<ForwardBody> {
    let mut response = local_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: the upstream is failing; it is given another try shortly\n",
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        crate::overload::retry_after_value(retry_after),
    );
    response
}

/// A short plain-text answer written by the proxy itself (`no-store`: an error page written by
/// the proxy must never be cached over good content).
pub(crate) fn local_response(status: StatusCode, body: &'static str) -> Response<ForwardBody> {
    ravelin_http::plain_text(
        status,
        ForwardBody::local(Bytes::from_static(body.as_bytes())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> UpstreamBuilder {
        Upstream::builder("web", "http://127.0.0.1:3000")
    }

    #[test]
    fn every_numeric_setting_has_an_upper_bound_named_in_the_error() {
        let hour = UpstreamBuilder::MAX_TIMEOUT;
        let over = hour + Duration::from_secs(1);
        assert!(
            builder()
                .connect_timeout(hour)
                .response_timeout(hour)
                .body_idle_timeout(hour)
                .pool_idle_timeout(hour)
                .max_idle_per_host(UpstreamBuilder::MAX_IDLE_PER_HOST)
                .check()
                .is_ok()
        );
        let cases: [(UpstreamBuilder, &str); 5] = [
            (builder().connect_timeout(over), "connect_timeout"),
            (builder().response_timeout(over), "response_timeout"),
            (builder().body_idle_timeout(over), "body_idle_timeout"),
            (builder().pool_idle_timeout(over), "pool_idle_timeout"),
            (builder().max_idle_per_host(10_001), "max_idle_per_host"),
        ];
        for (builder, field) in cases {
            let error = builder.check().unwrap_err();
            assert!(
                matches!(&error, UpstreamError::TooLarge { field: f, .. } if *f == field),
                "{error}"
            );
            let message = error.to_string();
            assert!(message.contains(field), "{message}");
            assert!(message.contains("must be at most"), "{message}");
        }
        assert_eq!(
            builder()
                .body_idle_timeout(over)
                .check()
                .unwrap_err()
                .to_string(),
            "upstream \"web\": body_idle_timeout must be at most 3600s, got 3601s"
        );
        assert_eq!(
            builder()
                .max_idle_per_host(20_000)
                .check()
                .unwrap_err()
                .to_string(),
            "upstream \"web\": max_idle_per_host must be at most 10000, got 20000"
        );
        assert!(matches!(
            builder().body_idle_timeout(Duration::ZERO).check(),
            Err(UpstreamError::ZeroTimeout {
                field: "body_idle_timeout",
                ..
            })
        ));
        // Zero idle pooling is allowed: it means no pooling.
        assert!(
            builder()
                .pool_idle_timeout(Duration::ZERO)
                .max_idle_per_host(0)
                .check()
                .is_ok()
        );
    }

    #[test]
    fn defaults_are_documented_values() {
        let upstream = builder().build().unwrap();
        assert_eq!(upstream.connect_timeout(), Duration::from_secs(1));
        assert_eq!(upstream.response_timeout(), Duration::from_secs(30));
        assert_eq!(upstream.body_idle_timeout(), Duration::from_secs(60));
        assert!(!upstream.preserves_host());
    }

    #[test]
    fn forwarded_path_is_canonical() {
        assert_eq!(forwarded_path("/x/../a//b", None).unwrap(), "/a/b");
        // Without an identity an ambiguous path goes as received: refusing is ingress's call.
        assert_eq!(forwarded_path("/a%2fb", None).unwrap(), "/a%2fb");
        let (parts, ()) = Request::get("/a/./b")
            .header("host", "a.example")
            .body(())
            .unwrap()
            .into_parts();
        let identity = RequestIdentity::from_parts(
            &parts,
            Scheme::HTTP,
            &ravelin_http::IdentityOptions::default(),
        )
        .unwrap();
        assert!(matches!(
            forwarded_path("/a/b", Some(&identity)),
            Some(Cow::Borrowed("/a/b"))
        ));
        assert_eq!(forwarded_path("/c/../d", Some(&identity)).unwrap(), "/d");
        // A later layer rewrote the URI into a refused spelling: 400.
        assert!(forwarded_path("/a%2fb", Some(&identity)).is_none());
    }

    #[test]
    fn upstream_host_is_written_as_the_client_library_would() {
        let host = |scheme: Scheme, authority: &str| {
            upstream_host_header(&scheme, &authority.parse().unwrap())
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(host(Scheme::HTTP, "origin.internal"), "origin.internal");
        assert_eq!(host(Scheme::HTTP, "origin.internal:80"), "origin.internal");
        assert_eq!(host(Scheme::HTTP, "10.0.0.1:8080"), "10.0.0.1:8080");
        assert_eq!(
            host(Scheme::HTTPS, "origin.internal:443"),
            "origin.internal"
        );
        assert_eq!(
            host(Scheme::HTTPS, "origin.internal:80"),
            "origin.internal:80"
        );
        assert_eq!(host(Scheme::HTTP, "[::1]:8080"), "[::1]:8080");
    }

    #[test]
    fn upstream_uri_keeps_base_path_and_query() {
        let upstream = Upstream::builder("web", "http://127.0.0.1:3000/base/")
            .build()
            .unwrap();
        assert_eq!(
            upstream.uri_for("/x", Some("a=1")).unwrap().to_string(),
            "/base/x?a=1"
        );
        assert_eq!(upstream.uri_for("/", None).unwrap().to_string(), "/base/");
        let upstream = Upstream::builder("grpc", "http://127.0.0.1:3000/base/")
            .http2(true)
            .build()
            .unwrap();
        assert_eq!(
            upstream.uri_for("/x", Some("a=1")).unwrap().to_string(),
            "http://127.0.0.1:3000/base/x?a=1"
        );
    }

    #[test]
    fn client_scheme_maps_to_a_uri_scheme() {
        assert_eq!(ClientScheme("https").to_scheme(), Scheme::HTTPS);
        assert_eq!(ClientScheme("HTTPS").to_scheme(), Scheme::HTTPS);
        assert_eq!(ClientScheme("http").to_scheme(), Scheme::HTTP);
        assert_eq!(ClientScheme::of(&http::Extensions::new()), Scheme::HTTP);
    }
}
