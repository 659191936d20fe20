//! The accepting side: HTTP/1.1 and HTTP/2 on one port, with every limit explicit.
//!
//! Each connection runs under a small supervisor (`supervise`) that owns one timer and reads
//! a few atomics the request path maintains (`ConnState`). It closes connections that have not
//! delivered a first request head by `request_head_timeout` after accept, and connections with
//! no request in flight for `idle_timeout`: gracefully first (HTTP/2 `GOAWAY`, HTTP/1.1 close),
//! and for good if they are still open `CLOSE_GRACE` later with nothing in flight. A connection
//! whose socket has taken no byte for `send_timeout` while the server had bytes to write (a
//! client that stopped reading) is dropped without a graceful close (nothing more can be
//! written to it), within two `send_timeout`s of the stall's start.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use metrics::{Counter, Gauge};
use pin_project::pin_project;
use ravelin_http::{PeerAddr, TlsInfo, UnframedContent};
use ravelin_primitives::LogLimiter;
use ravelin_tls::acceptor::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tower::util::Oneshot;
use tower_service::Service;

use crate::error::ServerError;
use crate::forward::{BoxError, ClientScheme};
use crate::overload::OVERFLOW_LIFETIME;

/// The slot a connection is accepted into.
enum Slot {
    /// One of `max_connections`.
    Regular(tokio::sync::OwnedSemaphorePermit),
    /// Past `max_connections`: answered 503 (see [`ServerConfig::overflow_connections`]).
    Overflow(tokio::sync::OwnedSemaphorePermit),
}

/// How long a connection the server has asked to close (idle, head deadline, shutdown) may take
/// to finish on its own while it has no request in flight; then it is dropped. Graceful closing
/// of such a connection only has a `GOAWAY` or a pending write to flush, so a second is plenty,
/// and it stops a half-sent request head from holding the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// hyper's HTTP/1.1 field limit when none is set (`proto::h1::role::DEFAULT_MAX_HEADERS`), and
/// [`ServerConfig`]'s default: at this value the server leaves hyper's setting alone.
const HYPER_MAX_HEADERS: usize = 100;

/// The server's limits. Every one is a bound on memory or time a client can make the proxy
/// spend, and every one is itself bounded (the `*_LIMIT` constants), so no accepted value can
/// take down the machine by itself; [`ServerConfig::check`] enforces both.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    max_connections: usize,
    /// `None`: the default, 256 or `max_connections` if lower.
    max_connections_per_ip: Option<usize>,
    per_ip_ipv4_prefix_len: u8,
    per_ip_ipv6_prefix_len: u8,
    max_headers: usize,
    max_header_bytes: usize,
    header_read_timeout: Duration,
    request_head_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    max_concurrent_streams: u32,
    http2_keep_alive_interval: Duration,
    http2_keep_alive_timeout: Duration,
    keep_alive: bool,
    shutdown_timeout: Duration,
    overflow_connections: usize,
    retry_after: Duration,
    runtime: RuntimeModel,
    workers: usize,
}

/// How the server's connections are scheduled (issue 13).
///
/// - [`MultiThread`](Self::MultiThread) (the default): one accept loop on the caller's runtime;
///   with tokio's multi-threaded runtime, connection tasks are spread over its worker threads
///   by work stealing.
/// - [`PerCore`](Self::PerCore): nginx's and Envoy's worker model. `workers` threads, each with
///   its own current-thread tokio runtime and its own listening socket bound with
///   `SO_REUSEPORT` (Linux; elsewhere the workers share one listening socket), each accepting
///   and serving its own connections to the end, so a connection never changes threads. The
///   limits (`max_connections`, per-IP, overflow), metrics and graceful shutdown span all
///   workers.
///
/// The default is [`MultiThread`](Self::MultiThread): measured with `benches/load.sh` on the
/// project's 2-core machine (docs/performance.md, 2026-12-07), per-core serving cost the same
/// CPU per request with a higher p99 on cache hits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeModel {
    /// One accept loop on the caller's runtime (tokio's work-stealing scheduler in the binary).
    #[default]
    MultiThread,
    /// One current-thread runtime and one `SO_REUSEPORT` listener per worker thread.
    PerCore,
}

impl RuntimeModel {
    /// The name as configured (`"multi_thread"`, `"per_core"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MultiThread => "multi_thread",
            Self::PerCore => "per_core",
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: None,
            per_ip_ipv4_prefix_len: 32,
            per_ip_ipv6_prefix_len: 64,
            max_headers: HYPER_MAX_HEADERS,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_concurrent_streams: 100,
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(20),
            keep_alive: true,
            shutdown_timeout: Duration::from_secs(30),
            overflow_connections: 0,
            retry_after: Duration::from_secs(1),
            runtime: RuntimeModel::MultiThread,
            workers: 0,
        }
    }
}

// tokio's `Semaphore::new` panics above `MAX_PERMITS`; the bound keeps far below it.
const _: () = assert!(ServerConfig::MAX_CONNECTIONS_LIMIT <= Semaphore::MAX_PERMITS);

impl ServerConfig {
    /// The default `max_connections_per_ip` (when `max_connections` is at least this).
    pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
    /// The smallest header byte limit hyper accepts for HTTP/1.1 (its read buffer minimum).
    pub const MIN_HEADER_BYTES: usize = 8192;
    /// The largest `max_header_bytes`: 1 MiB, sixteen times the default. The HTTP/1.1 read buffer
    /// of every connection can grow this far, so it multiplies by `max_connections`.
    pub const MAX_HEADER_BYTES_LIMIT: usize = 1024 * 1024;
    /// The largest `max_connections`: 1,000,000. Far below tokio's `Semaphore::MAX_PERMITS`
    /// (whose excess panics), and about what a 24 GiB machine can hold in kernel socket buffers
    /// and per-connection state at small heads.
    pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
    /// The largest `max_headers`: 1024. hyper reserves `max_headers` slots of about 64 bytes
    /// (the parser's field slice and its index) on the heap for *every* HTTP/1.1 head it parses,
    /// however few fields the head has: 20,000,000 made one GET allocate 1.26 GB. 1024 costs
    /// 64 KiB per parse; browsers send 10 to 30 fields, and Apache and nginx-based proxies
    /// refuse beyond 100 by default.
    pub const MAX_HEADERS_LIMIT: usize = 1024;
    /// The largest `max_concurrent_streams`: 10,000 HTTP/2 requests in flight on one connection.
    pub const MAX_CONCURRENT_STREAMS_LIMIT: u32 = 10_000;
    /// The longest of every timeout except the shutdown one: one hour.
    pub const TIMEOUT_LIMIT: Duration = Duration::from_secs(3600);
    /// The longest `shutdown_timeout`: ten minutes (orchestrators kill long before that).
    pub const SHUTDOWN_TIMEOUT_LIMIT: Duration = Duration::from_secs(600);
    /// The most `overflow_connections`: each holds a descriptor for at most 2 s.
    pub const OVERFLOW_CONNECTIONS_LIMIT: usize = 10_000;
    /// The most `workers`: 256 threads, each with its own runtime and listening socket (far
    /// more than any core count the proxy is deployed on; more workers than cores only adds
    /// context switches).
    pub const MAX_WORKERS_LIMIT: usize = 256;

    /// The runtime model (default [`RuntimeModel::MultiThread`]).
    pub fn runtime(mut self, runtime: RuntimeModel) -> Self {
        self.runtime = runtime;
        self
    }

    /// Worker threads for [`RuntimeModel::PerCore`] (default 0 = the available parallelism;
    /// at most [`Self::MAX_WORKERS_LIMIT`]). Ignored by [`RuntimeModel::MultiThread`], whose
    /// threads are the caller's runtime's.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The worker threads [`RuntimeModel::PerCore`] starts: `workers`, or the available
    /// parallelism (at least 1) when it is 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }

    /// Open connections at once (default 10,000, at most [`Self::MAX_CONNECTIONS_LIMIT`]).
    /// When reached, new connections take the slot of an idle one or are answered 503 while
    /// [`overflow_connections`](Self::overflow_connections) allows, and otherwise wait in the
    /// kernel's backlog until one closes.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Connections accepted past `max_connections` (default 0, at most
    /// [`Self::OVERFLOW_CONNECTIONS_LIMIT`]). Each one first makes room, as nginx does when it
    /// runs out of connections: an open connection with nothing in flight (an idle keep-alive
    /// connection, or one that has not sent its first request) is closed, counted in
    /// `ravelin_proxy_connections_closed_total{reason="reclaimed"}`, and the new connection
    /// takes its slot. When there is none (every slot carries a request), its request gets
    /// `503 Service Unavailable` with [`retry_after`](Self::retry_after) and `Connection:
    /// close` (HTTP/2: `GOAWAY`) at once, without reaching the service, and the connection is
    /// closed after the answer or after 2 s. Counted in
    /// `ravelin_proxy_connections_rejected_total{reason="max_connections"}` and
    /// `ravelin_proxy_shed_total{reason="max_connections"}`.
    ///
    /// This is what Envoy does past a listener's connection limit (accept, then close) and
    /// nginx's `limit_conn` (503), made explicit for the client: a client told to retry later
    /// can go elsewhere, where one left in the backlog waits for a connection to end, however
    /// long that takes. With 0, connections past the limit wait in the backlog and nothing is
    /// reclaimed, which suits a proxy behind a load balancer that treats a slow accept as a
    /// signal.
    pub fn overflow_connections(mut self, max: usize) -> Self {
        self.overflow_connections = max;
        self
    }

    /// The `Retry-After` of the server's own 503 answers (default 1 s, 1 s to 1 h, whole
    /// seconds rounded up).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// [`overflow_connections`](Self::overflow_connections) and
    /// [`retry_after`](Self::retry_after) from an [`OverloadConfig`](crate::OverloadConfig),
    /// the section that also configures [`LoadShedLayer`](crate::LoadShedLayer).
    pub fn overload(self, overload: &crate::OverloadConfig) -> Self {
        self.overflow_connections(overload.overflow_connections)
            .retry_after(overload.retry_after)
    }

    /// Open connections from one client IP prefix (default 256, or `max_connections` if that
    /// is lower; `0` = no per-IP limit; otherwise at most `max_connections`). Connections over
    /// it are closed at once. The prefix is set by [`Self::per_ip_ipv4_prefix_len`] and
    /// [`Self::per_ip_ipv6_prefix_len`].
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.max_connections_per_ip = Some(max);
        self
    }

    /// The per-IP limit in force: the one set, or the default.
    fn per_ip_limit(&self) -> usize {
        self.max_connections_per_ip
            .unwrap_or(Self::DEFAULT_MAX_CONNECTIONS_PER_IP.min(self.max_connections))
    }

    /// The IPv4 prefix length that counts as one client for
    /// [`Self::max_connections_per_ip`] (default 32, one address; 1 to 32). IPv4-mapped IPv6
    /// addresses (`::ffff:a.b.c.d`) count as IPv4.
    pub fn per_ip_ipv4_prefix_len(mut self, len: u8) -> Self {
        self.per_ip_ipv4_prefix_len = len;
        self
    }

    /// The IPv6 prefix length that counts as one client for
    /// [`Self::max_connections_per_ip`] (default 64, the subnet one host is usually given, so
    /// rotating through its addresses does not multiply the budget; 1 to 128).
    pub fn per_ip_ipv6_prefix_len(mut self, len: u8) -> Self {
        self.per_ip_ipv6_prefix_len = len;
        self
    }

    /// Header fields per HTTP/1.1 request (default 100, 1 to [`Self::MAX_HEADERS_LIMIT`]);
    /// more is answered 431. The default is hyper's own, which costs nothing per request; any
    /// other value makes hyper prepare that many field slots for every head it parses (on the
    /// heap above 100), so raise it only for clients that need it.
    pub fn max_headers(mut self, max: usize) -> Self {
        self.max_headers = max;
        self
    }

    /// Bytes of request head (default 64 KiB, 8 KiB to 1 MiB): HTTP/1.1 read buffer and the
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max;
        self
    }

    /// Time allowed for an HTTP/1.1 request head (default 10 s, at most 1 h): the slowloris
    /// bound, enforced by hyper. hyper starts this clock when it begins waiting for a head: after
    /// protocol detection for the first request, and when the previous response is done on a
    /// keep-alive connection. So an HTTP/1.1 keep-alive connection must start and finish its next
    /// head within this time, and is closed earlier if `idle_timeout` is shorter.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Time from accept until the first complete request head, HTTP/1.1 or HTTP/2 (default
    /// 10 s, at most 1 h). A connection that has not delivered one by then is closed, so
    /// sockets that never send a byte, or only a TLS or HTTP/2 preface, do not hold a
    /// `max_connections` slot. Later requests are bounded by `idle_timeout` and, for HTTP/1.1,
    /// `header_read_timeout`.
    pub fn request_head_timeout(mut self, timeout: Duration) -> Self {
        self.request_head_timeout = timeout;
        self
    }

    /// How long a connection may have no request in flight before it is closed gracefully
    /// (default 60 s, at most 1 h; nginx's `keepalive_timeout` is 75 s). A request is in flight
    /// from its complete head until its response body has been sent (or dropped), so long
    /// streaming responses are never cut. HTTP/2 connections get `GOAWAY`.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long the connection's socket may take no byte while the server has bytes to write
    /// (default 60 s as nginx's `send_timeout`, at most 1 h): a client that stops reading a
    /// response (a zero TCP window) would otherwise hold its connection, its slots and the
    /// upstream response behind it for as long as it likes. The connection is then dropped,
    /// not closed gracefully (a close cannot be written either), between one and two
    /// `send_timeout`s after the socket stopped taking bytes; counted as
    /// `reason="send_timeout"`. An HTTP/2 stream the client stalls by flow control alone, its
    /// connection still taking bytes, is not covered (as with nginx).
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Concurrent HTTP/2 streams per connection (default 100, 1 to
    /// [`Self::MAX_CONCURRENT_STREAMS_LIMIT`]): the per-connection request bound.
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = max;
        self
    }

    /// Interval of HTTP/2 keep-alive pings (default 20 s, at most 1 h), so dead peers are found
    /// even while a stream waits.
    pub fn http2_keep_alive_interval(mut self, interval: Duration) -> Self {
        self.http2_keep_alive_interval = interval;
        self
    }

    /// How long an HTTP/2 keep-alive ping may go unanswered before the connection is closed
    /// (default 20 s, at most 1 h).
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.http2_keep_alive_timeout = timeout;
        self
    }

    /// HTTP/1.1 keep-alive (default on).
    pub fn keep_alive(mut self, enabled: bool) -> Self {
        self.keep_alive = enabled;
        self
    }

    /// How long shutdown waits for in-flight requests before closing what remains (default
    /// 30 s, at most 10 min; zero closes everything at once).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The shutdown deadline.
    pub fn shutdown_deadline(&self) -> Duration {
        self.shutdown_timeout
    }

    /// The checks [`Server::bind`] runs, for validating a configuration without binding.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming the first unusable field, its rule and the value given.
    pub fn check(&self) -> Result<(), ServerError> {
        within(
            "max_connections",
            self.max_connections,
            1,
            Self::MAX_CONNECTIONS_LIMIT,
        )?;
        if self.per_ip_limit() > self.max_connections {
            return Err(config_error(
                "max_connections_per_ip",
                format!(
                    "must be 0 (no per-IP limit) or at most max_connections ({}), got {}",
                    self.max_connections,
                    self.per_ip_limit()
                ),
            ));
        }
        within("per_ip_ipv4_prefix_len", self.per_ip_ipv4_prefix_len, 1, 32)?;
        within(
            "per_ip_ipv6_prefix_len",
            self.per_ip_ipv6_prefix_len,
            1,
            128,
        )?;
        within("max_headers", self.max_headers, 1, Self::MAX_HEADERS_LIMIT)?;
        if self.max_header_bytes < Self::MIN_HEADER_BYTES {
            return Err(config_error(
                "max_header_bytes",
                format!(
                    "must be at least 8192 (hyper's minimum), got {}",
                    self.max_header_bytes
                ),
            ));
        }
        within(
            "max_header_bytes",
            self.max_header_bytes,
            Self::MIN_HEADER_BYTES,
            Self::MAX_HEADER_BYTES_LIMIT,
        )?;
        within(
            "max_concurrent_streams",
            self.max_concurrent_streams,
            1,
            Self::MAX_CONCURRENT_STREAMS_LIMIT,
        )?;
        for (field, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("request_head_timeout", self.request_head_timeout),
            ("idle_timeout", self.idle_timeout),
            ("send_timeout", self.send_timeout),
            ("http2_keep_alive_interval", self.http2_keep_alive_interval),
            ("http2_keep_alive_timeout", self.http2_keep_alive_timeout),
        ] {
            if value.is_zero() || value > Self::TIMEOUT_LIMIT {
                return Err(config_error(
                    field,
                    format!(
                        "must be greater than zero and at most {:?}, got {value:?}",
                        Self::TIMEOUT_LIMIT
                    ),
                ));
            }
        }
        within(
            "overflow_connections",
            self.overflow_connections,
            0,
            Self::OVERFLOW_CONNECTIONS_LIMIT,
        )?;
        within("workers", self.workers, 0, Self::MAX_WORKERS_LIMIT)?;
        crate::overload::check_retry_after(self.retry_after)
            .map_err(|reason| config_error("retry_after", reason))?;
        if self.shutdown_timeout > Self::SHUTDOWN_TIMEOUT_LIMIT {
            return Err(config_error(
                "shutdown_timeout",
                format!(
                    "must be at most {:?}, got {:?}",
                    Self::SHUTDOWN_TIMEOUT_LIMIT,
                    self.shutdown_timeout
                ),
            ));
        }
        Ok(())
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            head: self.request_head_timeout,
            idle: self.idle_timeout,
            send: self.send_timeout,
            grace: CLOSE_GRACE,
        }
    }
}

/// Each message names the field, the rule and the value given, so the operator can fix the
/// config line without reading this code.
fn config_error(field: &'static str, reason: String) -> ServerError {
    ServerError::Config { field, reason }
}

fn within<T: PartialOrd + Display>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ServerError> {
    if value < min || value > max {
        return Err(config_error(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

/// An HTTP server on one listening socket: HTTP/1.1 and HTTP/2 (prior knowledge) on the same
/// port, connection limits, header limits, head and idle deadlines, and graceful shutdown.
///
/// Every request gets the [`PeerAddr`] extension before it reaches the service.
///
/// Metrics (handles registered once, when the server is created, so install the recorder
/// first): `ravelin_proxy_connections_total`, `ravelin_proxy_connections_active`,
/// `ravelin_proxy_connections_rejected_total{reason="per_ip_limit"|"max_connections"}`,
/// `ravelin_proxy_shed_total{reason="max_connections"}` (503s on connections past the limit,
/// see [`ServerConfig::overflow_connections`]) and
/// `ravelin_proxy_connections_closed_total{reason}`, where `reason` is one of `completed`,
/// `head_timeout`, `idle`, `header_read_timeout`, `keep_alive_timeout`, `reclaimed`,
/// `shutdown`, `shutdown_forced` and `error`. Every accepted connection ends in exactly one of them
/// (connections answered 503 past the limit are counted as rejected, not accepted).
#[derive(Debug)]
pub struct Server {
    listeners: Listeners,
    local: SocketAddr,
    config: ServerConfig,
    metrics: Arc<ConnMetrics>,
    /// Terminates TLS on every accepted connection when set (see [`Server::tls`]).
    tls: Option<TlsAcceptor>,
}

/// The listening sockets and, for [`RuntimeModel::PerCore`], the workers' runtimes.
#[derive(Debug)]
enum Listeners {
    /// [`RuntimeModel::MultiThread`]: one accept loop on the caller's runtime.
    One(TcpListener),
    /// [`RuntimeModel::PerCore`]: one listener (an `SO_REUSEPORT` socket of its own, or a
    /// clone of one shared socket) and one current-thread runtime per worker.
    Workers(Vec<Worker>),
}

#[derive(Debug)]
struct Worker {
    listener: std::net::TcpListener,
    runtime: tokio::runtime::Runtime,
}

/// What [`Server::serve`] did before it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSummary {
    /// Connections accepted over the server's life.
    pub connections: u64,
    /// Connections still open when the shutdown deadline passed, closed without draining.
    pub forced_closed: usize,
}

impl ServeSummary {
    fn add(self, other: Self) -> Self {
        Self {
            connections: self.connections.saturating_add(other.connections),
            forced_closed: self.forced_closed.saturating_add(other.forced_closed),
        }
    }
}

/// The state every accept loop of one server shares: with [`RuntimeModel::PerCore`], the
/// limits hold across workers because the workers hold the same semaphores and maps.
struct Shared {
    config: ServerConfig,
    tls: Option<TlsAcceptor>,
    metrics: Arc<ConnMetrics>,
    permits: Arc<Semaphore>,
    overflow_permits: Arc<Semaphore>,
    reclaimable: Reclaimable,
    per_ip: PerIp,
    accept_log: LogLimiter,
    reject_log: LogLimiter,
    conn_log: Arc<LogLimiter>,
}

impl Shared {
    fn new(config: ServerConfig, metrics: Arc<ConnMetrics>, tls: Option<TlsAcceptor>) -> Self {
        Self {
            tls,
            overflow_permits: Arc::new(Semaphore::new(config.overflow_connections)),
            // Connections that could be reclaimed for one past the limit: kept only when there
            // is overflow handling to use them.
            reclaimable: Reclaimable::new(config.overflow_connections > 0),
            permits: Arc::new(Semaphore::new(config.max_connections)),
            per_ip: PerIp::new(
                config.per_ip_limit(),
                config.per_ip_ipv4_prefix_len,
                config.per_ip_ipv6_prefix_len,
            ),
            accept_log: LogLimiter::per_second(5),
            reject_log: LogLimiter::per_second(5),
            conn_log: Arc::new(LogLimiter::per_second(5)),
            config,
            metrics,
        }
    }
}

impl Server {
    /// Binds `addr` with `config`: one listener, or with [`RuntimeModel::PerCore`] one per
    /// worker ([`ServerConfig::worker_count`]), all on the same address (after binding port
    /// 0, the others take the port the first one got).
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound, [`ServerError::Config`] for an
    /// unusable limit, [`ServerError::Workers`] when a worker's runtime cannot be built.
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> Result<Self, ServerError> {
        config.check()?;
        let bind_error = |source| ServerError::Bind { addr, source };
        match config.runtime {
            RuntimeModel::MultiThread => {
                let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
                Self::new(Listeners::One(listener), config)
            }
            RuntimeModel::PerCore => {
                let listeners = bind_workers(addr, config.worker_count()).map_err(bind_error)?;
                Self::with_workers(listeners, config)
            }
        }
    }

    /// Serves on an already bound listener. With [`RuntimeModel::PerCore`], the workers
    /// share it (each accepts from a clone of the socket).
    ///
    /// # Errors
    /// [`ServerError::Config`] for an unusable limit, [`ServerError::Workers`] when the
    /// socket cannot be shared or a worker's runtime cannot be built.
    pub fn from_listener(listener: TcpListener, config: ServerConfig) -> Result<Self, ServerError> {
        config.check()?;
        match config.runtime {
            RuntimeModel::MultiThread => Self::new(Listeners::One(listener), config),
            RuntimeModel::PerCore => {
                let shared = listener
                    .into_std()
                    .map_err(|source| ServerError::Workers { source })?;
                let listeners = clones(shared, config.worker_count())
                    .map_err(|source| ServerError::Workers { source })?;
                Self::with_workers(listeners, config)
            }
        }
    }

    fn with_workers(
        listeners: Vec<std::net::TcpListener>,
        config: ServerConfig,
    ) -> Result<Self, ServerError> {
        let workers = listeners
            .into_iter()
            .map(|listener| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(Worker { listener, runtime })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|source| ServerError::Workers { source })?;
        Self::new(Listeners::Workers(workers), config)
    }

    fn new(listeners: Listeners, config: ServerConfig) -> Result<Self, ServerError> {
        let local = match &listeners {
            Listeners::One(listener) => listener.local_addr(),
            Listeners::Workers(workers) => workers.first().map_or_else(
                || Err(std::io::Error::other("no worker listener")),
                |worker| worker.listener.local_addr(),
            ),
        }
        .map_err(|source| ServerError::Workers { source })?;
        Ok(Self {
            listeners,
            local,
            config,
            metrics: Arc::new(ConnMetrics::new()),
            tls: None,
        })
    }

    /// Terminates TLS on every connection this server accepts, with `acceptor`: the
    /// handshake runs in the connection's own task (holding its connection slot), bounded by
    /// the acceptor's handshake timeout and concurrent-handshake limit; HTTP/2 or HTTP/1.1 is
    /// then served as ALPN agreed. Every request of the connection carries the handshake's
    /// [`TlsInfo`] (SNI, ALPN, version, JA4) and [`ClientScheme`]`("https")` as extensions, so
    /// the ingress stage, `X-Forwarded-Proto` and cache keys see `https`.
    #[must_use]
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// The bound address (useful after binding port 0).
    ///
    /// # Errors
    /// Never today; kept fallible for callers written against a socket's `local_addr`.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// The threads accepting connections: 1 for [`RuntimeModel::MultiThread`] (the accept
    /// loop; connections run wherever the caller's runtime puts them), the worker count for
    /// [`RuntimeModel::PerCore`].
    pub fn accept_loops(&self) -> usize {
        match &self.listeners {
            Listeners::One(_) => 1,
            Listeners::Workers(workers) => workers.len(),
        }
    }

    /// Serves connections with `service` until `shutdown` completes, then stops accepting,
    /// lets in-flight requests finish (HTTP/1.1 connections close after their current response;
    /// HTTP/2 connections get GOAWAY), and returns when all are done or the shutdown deadline
    /// passes, whichever is first.
    ///
    /// With [`RuntimeModel::PerCore`], each worker thread serves its own listener with a clone
    /// of `service` on its own runtime; this future only waits for `shutdown`, tells every
    /// worker, and adds up their summaries. The workers' runtimes stay up until every worker
    /// has drained. Each worker has its own upstream connection pools, so a request and the
    /// upstream connection it uses are driven by the same thread (see `worker::PerWorker`). Dropping this
    /// future shuts the workers down as `shutdown` would. If a worker stops on its own (its
    /// thread could not start, or its accept loop panicked), the others are shut down and this
    /// returns early, as a single accept loop's task would end: the caller's supervision sees
    /// the server stop without having asked.
    pub async fn serve<S, B, F>(self, service: S, shutdown: F) -> ServeSummary
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        F: Future<Output = ()> + Send,
    {
        let Server {
            listeners,
            local,
            config,
            metrics,
            tls,
        } = self;
        let shared = Arc::new(Shared::new(config, metrics, tls));
        match listeners {
            Listeners::One(listener) => {
                accept_loop(false, listener, local, shared, service, shutdown).await
            }
            Listeners::Workers(workers) => {
                serve_workers(workers, local, shared, service, shutdown).await
            }
        }
    }
}

/// `n` listeners on `addr` with `SO_REUSEPORT`, so the kernel spreads new connections over
/// them (Linux); elsewhere one listener and `n - 1` clones of it. Returned as std sockets, to
/// be registered with each worker's own runtime.
fn bind_workers(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    #[cfg(target_os = "linux")]
    {
        let mut listeners = Vec::with_capacity(n);
        let mut at = addr;
        for _ in 0..n.max(1) {
            let socket = if at.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(at)?;
            let listener = socket.listen(LISTEN_BACKLOG)?;
            // Port 0: the other workers join the port the first one got.
            at = listener.local_addr()?;
            listeners.push(listener.into_std()?);
        }
        Ok(listeners)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        clones(listener, n)
    }
}

/// The backlog of each worker's listener (what tokio's `TcpListener::bind` uses).
#[cfg(target_os = "linux")]
const LISTEN_BACKLOG: u32 = 1024;

/// `listener` and `n - 1` clones of it: workers sharing one socket.
fn clones(
    listener: std::net::TcpListener,
    n: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(n.max(1));
    for _ in 1..n.max(1) {
        listeners.push(listener.try_clone()?);
    }
    listeners.push(listener);
    Ok(listeners)
}

/// Client resets, timeouts, failed handshakes and protocol errors are routine at an edge: logged
/// at debug level, rate-limited.
fn log_connection_error(
    conn_log: &LogLimiter,
    peer: SocketAddr,
    reason: CloseReason,
    error: Option<BoxError>,
) {
    let Some(error) = error else { return };
    if let Some(permit) = conn_log.check() {
        tracing::debug!(
            %peer,
            %error,
            reason = reason.as_str(),
            suppressed = permit.suppressed(),
            "connection ended with an error"
        );
    }
}

/// [`RuntimeModel::PerCore`]: starts one thread per worker, waits for `shutdown`, tells the
/// workers, and adds up what they did.
async fn serve_workers<S, B, F>(
    workers: Vec<Worker>,
    local: SocketAddr,
    shared: Arc<Shared>,
    service: S,
    shutdown: F,
) -> ServeSummary
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send,
{
    // `true` once shutdown is asked for; a dropped sender (this future dropped) counts too.
    let (stop, _) = watch::channel(false);
    // `true` once every worker has drained: until then each keeps its runtime running.
    let (release, _) = watch::channel(false);
    // Every worker reports once when its accept loop ends, a panic included (`WorkerEnd`).
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel::<Option<ServeSummary>>();
    // One report per worker, a thread that could not start included (its `WorkerEnd` is
    // dropped with the closure, which ends serving as a worker's panic would).
    let expected = workers.len();
    tracing::info!(addr = %local, workers = workers.len(), "per-core workers starting");
    for (index, Worker { listener, runtime }) in workers.into_iter().enumerate() {
        let mut end = WorkerEnd {
            tx: ended_tx.clone(),
            summary: None,
        };
        let stopping = stop.subscribe();
        let mut released = release.subscribe();
        let shared = Arc::clone(&shared);
        let service = service.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ravelin-worker-{index}"))
            .spawn(move || {
                // This worker's upstream pools (see `worker::PerWorker`).
                crate::worker::enter(index);
                runtime.block_on(async move {
                    let summary = match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            accept_loop(true, listener, local, shared, service, stopped(stopping)).await
                        }
                        Err(error) => {
                            tracing::error!(worker = index, %error, "worker cannot register its listener");
                            ServeSummary {
                                connections: 0,
                                forced_closed: 0,
                            }
                        }
                    };
                    end.summary = Some(summary);
                    drop(end);
                    // Keep driving this runtime's tasks (connections still finishing a
                    // response) until every worker has drained.
                    while !*released.borrow_and_update() {
                        if released.changed().await.is_err() {
                            break;
                        }
                    }
                });
            });
        match spawned {
            Ok(_) => {}
            Err(error) => {
                tracing::error!(worker = index, %error, "cannot start a worker thread");
            }
        }
    }
    drop(ended_tx);
    let mut summary = ServeSummary {
        connections: 0,
        forced_closed: 0,
    };
    let mut reported: usize = 0;
    if expected > 0 {
        // As with one accept loop, serving ends early if a worker stops on its own (a panic in
        // its accept loop): the caller learns it, as from any serve task that returns early.
        tokio::select! {
            () = shutdown => {}
            first = ended.recv() => {
                reported = 1;
                if let Some(Some(first)) = first {
                    summary = summary.add(first);
                }
                tracing::error!("a per-core worker stopped serving on its own; stopping the others");
            }
        }
    }
    stop.send_replace(true);
    while reported < expected {
        match ended.recv().await {
            Some(worker) => {
                reported = reported.saturating_add(1);
                if let Some(worker) = worker {
                    summary = summary.add(worker);
                }
            }
            None => break,
        }
    }
    release.send_replace(true);
    summary
}

/// Reports a worker's end to [`serve_workers`] when dropped: with its summary after a normal
/// end, with `None` when its thread unwinds.
struct WorkerEnd {
    tx: tokio::sync::mpsc::UnboundedSender<Option<ServeSummary>>,
    summary: Option<ServeSummary>,
}

impl Drop for WorkerEnd {
    fn drop(&mut self) {
        let _ = self.tx.send(self.summary.take());
    }
}

/// Completes when `stop` turns `true` or its sender is gone.
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// One accept loop: accepts from `listener` and serves each connection on the current
/// runtime until `shutdown`, then drains its own connections.
async fn accept_loop<S, B, F>(
    accept_first: bool,
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
    service: S,
    shutdown: F,
) -> ServeSummary
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()>,
{
    let config = &shared.config;
    let metrics = &shared.metrics;
    let permits = &shared.permits;
    let reclaimable = &shared.reclaimable;
    let per_ip = &shared.per_ip;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .keep_alive(config.keep_alive)
        .max_buf_size(config.max_header_bytes)
        .header_read_timeout(config.header_read_timeout);
    // hyper's own limit is the same 100 fields. Left unset, its parser keeps the field slots in
    // an uninitialised array on the stack; set, it writes every one of `max_headers` slots for
    // each head it parses (on the heap above 100): about 2,400 instructions a request at 100,
    // a twentieth of a cache hit (issue 13).
    if config.max_headers != HYPER_MAX_HEADERS {
        http1.max_headers(config.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(config.http2_keep_alive_interval)
        .keep_alive_timeout(config.http2_keep_alive_timeout);

    // Connections past the limit are answered by a builder of their own: no keep-alive,
    // one stream, and a head deadline within their short life.
    let mut overflow_builder = builder.clone();
    overflow_builder
        .http1()
        .keep_alive(false)
        .header_read_timeout(OVERFLOW_LIFETIME);
    overflow_builder.http2().max_concurrent_streams(1);
    let overflow_retry_after = crate::overload::retry_after_value(config.retry_after);
    let mut overflow_tasks = JoinSet::new();

    let timeouts = config.timeouts();
    let (stop, _) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut connections: u64 = 0;
    tokio::pin!(shutdown);
    tracing::info!(addr = %local, tls = shared.tls.is_some(), "listening");

    loop {
        let (slot, (stream, peer)) = if accept_first {
            // Workers accept first and then take a slot: a worker waiting for a slot before
            // accepting would hold one while its listener is quiet, and another worker's
            // connections would wait (or be answered 503) below the limit.
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = accept_one(&listener, &shared) => accepted,
            };
            let Some(accepted) = accepted else { continue };
            let slot = match Arc::clone(permits).try_acquire_owned() {
                Ok(permit) => Some(Slot::Regular(permit)),
                Err(_) => tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    slot = next_slot(&shared) => slot,
                },
            };
            // The semaphores are never closed; stop serving rather than spin if they are.
            let Some(slot) = slot else { break };
            (slot, accepted)
        } else {
            let slot = tokio::select! {
                biased;
                () = &mut shutdown => break,
                slot = next_slot(&shared) => slot,
            };
            let Some(slot) = slot else { break };
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = accept_one(&listener, &shared) => accepted,
            };
            let Some(accepted) = accepted else { continue };
            (slot, accepted)
        };
        // Reap finished connection tasks so the set stays bounded by open connections.
        while tasks.try_join_next().is_some() {}
        while overflow_tasks.try_join_next().is_some() {}
        let permit = match slot {
            Slot::Regular(permit) => permit,
            // A regular slot may have freed while this connection was being accepted.
            Slot::Overflow(overflow) => match Arc::clone(permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // As nginx does, first make room by closing a connection with nothing
                    // in flight; the slot it frees goes to this connection.
                    let freed = if reclaimable.reclaim_one() {
                        tokio::select! {
                            biased;
                            () = &mut shutdown => break,
                            permit = tokio::time::timeout(
                                RECLAIM_WAIT,
                                Arc::clone(permits).acquire_owned(),
                            ) => permit.ok().and_then(Result::ok),
                        }
                    } else {
                        None
                    };
                    if let Some(permit) = freed {
                        drop(overflow);
                        permit
                    } else {
                        metrics.rejected_max_connections.increment(1);
                        if shared.tls.is_some() {
                            // A TLS client cannot read a plaintext 503: closing at once is the
                            // honest answer (and costs no handshake while overloaded).
                            drop(overflow);
                            drop(stream);
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        let served = crate::overload::serve_overflow(
                            overflow_builder.clone(),
                            stream,
                            overflow_retry_after.clone(),
                            metrics.shed_connections.clone(),
                        );
                        overflow_tasks.spawn(async move {
                            let _slot = overflow;
                            served.await;
                        });
                        continue;
                    }
                }
            },
        };
        let Some(ip_slot) = per_ip.acquire(peer.ip()) else {
            metrics.rejected_per_ip.increment(1);
            if let Some(permit) = shared.reject_log.check() {
                tracing::debug!(
                    %peer,
                    limit = per_ip.limit,
                    suppressed = permit.suppressed(),
                    "per-IP connection limit reached; closing"
                );
            }
            drop(stream);
            continue;
        };
        connections = connections.saturating_add(1);
        let _ = stream.set_nodelay(true);
        metrics.accepted.increment(1);
        metrics.active.increment(1.0);
        // Shared with the connection's upgrade requests (`ConnectionHold`): a WebSocket relay
        // outlives the connection's task and keeps its connection and per-IP slots.
        let open = Arc::new(OpenConnection {
            _permit: permit,
            _ip_slot: ip_slot,
            active: metrics.active.clone(),
        });
        let stopping = stop.subscribe();
        let metrics = Arc::clone(metrics);
        let conn_log = Arc::clone(&shared.conn_log);
        let Some(acceptor) = shared.tls.clone() else {
            let state = Arc::new(ConnState::new());
            let registered = reclaimable.register(&state);
            let service = ConnService {
                inner: service.clone(),
                peer: PeerAddr(peer),
                state: Arc::clone(&state),
                tls: None,
                hold: Arc::clone(&open),
            };
            let io = WatchedIo::new(stream, Arc::clone(&state));
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            tasks.spawn(async move {
                // Dropped on every exit, the shutdown abort included: frees the slots.
                let _open = open;
                let reclaim = registered.as_ref().map(|r| &*r.entry);
                let (reason, error) =
                    supervise(connection, &state, timeouts, stopping, reclaim).await;
                drop(registered);
                metrics.closed(reason).increment(1);
                log_connection_error(&conn_log, peer, reason, error);
            });
            continue;
        };
        // The handshake runs in the connection's task, so a slow one never holds up accepting.
        // The connection's own clock (first-head deadline, idle time) and its registration as
        // reclaimable start once it is established: the handshake has its own deadline, and a
        // connection mid-handshake is not an idle one to close for room.
        let builder = builder.clone();
        let service = service.clone();
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            // Dropped on every exit, the shutdown abort included: frees the slots.
            let open = open;
            let (reason, error) = match acceptor.accept(stream).await {
                Ok(accepted) => {
                    let state = Arc::new(ConnState::new());
                    let registered = shared.reclaimable.register(&state);
                    let service = ConnService {
                        inner: service,
                        peer: PeerAddr(peer),
                        state: Arc::clone(&state),
                        tls: Some(accepted.info),
                        hold: Arc::clone(&open),
                    };
                    let io = WatchedIo::new(accepted.stream, Arc::clone(&state));
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned();
                    let reclaim = registered.as_ref().map(|r| &*r.entry);
                    let ended = supervise(connection, &state, timeouts, stopping, reclaim).await;
                    drop(registered);
                    ended
                }
                Err(error) => (CloseReason::Handshake, Some(BoxError::from(error))),
            };
            metrics.closed(reason).increment(1);
            log_connection_error(&conn_log, peer, reason, error);
        });
    }

    drop(listener);
    // Overflow connections only carry a 503: they are not drained.
    overflow_tasks.abort_all();
    while tasks.try_join_next().is_some() {}
    tracing::info!(
        addr = %local,
        open = tasks.len(),
        deadline = ?config.shutdown_timeout,
        "stopped accepting; draining in-flight requests"
    );
    stop.send_replace(true);
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!(
            open = tasks.len(),
            "shutdown deadline passed; closing remaining connections"
        );
        tasks.abort_all();
    }
    // Count what the abort really cut: a task that finished just before it was counted
    // under its own reason.
    let mut forced_closed: usize = 0;
    while let Some(joined) = tasks.join_next().await {
        if joined.is_err_and(|error| error.is_cancelled()) {
            forced_closed = forced_closed.saturating_add(1);
            metrics.closed(CloseReason::ShutdownForced).increment(1);
        }
    }
    ServeSummary {
        connections,
        forced_closed,
    }
}

/// The next connection slot: a regular one, or, only when every regular slot is taken, an
/// overflow one. `None` if a semaphore was closed (never).
async fn next_slot(shared: &Shared) -> Option<Slot> {
    tokio::select! {
        biased;
        permit = Arc::clone(&shared.permits).acquire_owned() => permit.ok().map(Slot::Regular),
        permit = Arc::clone(&shared.overflow_permits).acquire_owned(),
            if shared.config.overflow_connections > 0 => permit.ok().map(Slot::Overflow),
    }
}

/// Accepts one connection; `None` after a failed accept (logged, with a short back-off when
/// the process is out of descriptors or memory).
async fn accept_one(
    listener: &TcpListener,
    shared: &Shared,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(error) => {
            if let Some(permit) = shared.accept_log.check() {
                tracing::warn!(%error, suppressed = permit.suppressed(), "accept failed");
            }
            // Out of descriptors or memory: back off briefly instead of spinning.
            // Per-connection errors (reset before accept) retry at once.
            if is_resource_exhaustion(&error) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }
    }
}

fn is_resource_exhaustion(error: &std::io::Error) -> bool {
    // EMFILE (24), ENFILE (23), ENOBUFS (105), ENOMEM (12) on Linux.
    matches!(error.raw_os_error(), Some(23 | 24 | 105 | 12))
}

/// Completes on SIGTERM or SIGINT (Ctrl-C): the shutdown future for [`Server::serve`].
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
                }
                return;
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot install signal handlers; only Ctrl-C will stop the server");
            }
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        // No way to be told to stop: serve until the process is killed.
        std::future::pending::<()>().await;
    }
}

/// What one accepted connection holds until its task ends, however it ends.
/// A connection's place in the server's limits, as a request extension of its upgrade
/// requests: `Forward` hands it to the relay of an upgraded connection, so the relay counts
/// against `max_connections` and the per-address limit until it ends, as the connection did.
#[derive(Clone)]
pub(crate) struct ConnectionHold {
    _connection: Arc<OpenConnection>,
}

impl std::fmt::Debug for ConnectionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionHold")
    }
}

struct OpenConnection {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _ip_slot: IpSlot,
    active: Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.active.decrement(1.0);
    }
}

// === impl CloseReason ===

/// Why a connection ended: the `reason` label of `ravelin_proxy_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    /// Ended without an error and without the server asking: the client closed, or
    /// `Connection: close`, or keep-alive is off.
    Completed,
    /// No complete first request head by `request_head_timeout` after accept.
    HeadTimeout,
    /// No request in flight for `idle_timeout`.
    Idle,
    /// hyper's HTTP/1.1 `header_read_timeout`: a head too slow, or no next request on a
    /// keep-alive connection in time.
    HeaderReadTimeout,
    /// An HTTP/2 keep-alive ping went unanswered.
    KeepAliveTimeout,
    /// Closed with nothing in flight to make room for a connection past `max_connections`.
    Reclaimed,
    /// Drained at shutdown.
    Shutdown,
    /// Still open at the shutdown deadline, closed without draining.
    ShutdownForced,
    /// An I/O or protocol error: resets, malformed requests.
    Error,
    /// The TLS handshake did not complete (failed, timed out, or refused past the handshake
    /// bound); counted by outcome in `ravelin_tls_handshakes_total` too.
    Handshake,
    /// The socket took no byte for `send_timeout` while there were bytes to write: a client
    /// that stopped reading. Dropped, not closed gracefully.
    SendTimeout,
}

impl CloseReason {
    const ALL: [Self; 11] = [
        Self::Completed,
        Self::HeadTimeout,
        Self::Idle,
        Self::HeaderReadTimeout,
        Self::KeepAliveTimeout,
        Self::Reclaimed,
        Self::Shutdown,
        Self::ShutdownForced,
        Self::Error,
        Self::Handshake,
        Self::SendTimeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::HeadTimeout => "head_timeout",
            Self::Idle => "idle",
            Self::HeaderReadTimeout => "header_read_timeout",
            Self::KeepAliveTimeout => "keep_alive_timeout",
            Self::Reclaimed => "reclaimed",
            Self::Shutdown => "shutdown",
            Self::ShutdownForced => "shutdown_forced",
            Self::Error => "error",
            Self::Handshake => "tls_handshake",
            Self::SendTimeout => "send_timeout",
        }
    }
}

// === impl ConnMetrics ===

/// The server's metric handles, registered once per server and shared by its connections.
#[derive(Debug)]
struct ConnMetrics {
    accepted: Counter,
    active: Gauge,
    rejected_per_ip: Counter,
    /// Connections accepted past `max_connections` and answered 503.
    rejected_max_connections: Counter,
    /// Requests answered 503 on those connections.
    shed_connections: Counter,
    /// One per [`CloseReason`], in [`CloseReason::ALL`] order.
    closed: [Counter; CloseReason::ALL.len()],
}

impl ConnMetrics {
    fn new() -> Self {
        Self {
            accepted: metrics::counter!("ravelin_proxy_connections_total"),
            active: metrics::gauge!("ravelin_proxy_connections_active"),
            rejected_per_ip: metrics::counter!(
                "ravelin_proxy_connections_rejected_total",
                "reason" => "per_ip_limit"
            ),
            rejected_max_connections: metrics::counter!(
                "ravelin_proxy_connections_rejected_total",
                "reason" => "max_connections"
            ),
            shed_connections: metrics::counter!(
                "ravelin_proxy_shed_total",
                "reason" => "max_connections"
            ),
            closed: CloseReason::ALL.map(|reason| {
                metrics::counter!(
                    "ravelin_proxy_connections_closed_total",
                    "reason" => reason.as_str()
                )
            }),
        }
    }

    fn closed(&self, reason: CloseReason) -> &Counter {
        // `ALL` lists the reasons in declaration order (a unit test checks), and `closed` has
        // one handle per entry, so `get` always finds the reason's own handle.
        self.closed.get(reason as usize).unwrap_or(&self.accepted)
    }
}

// === impl ConnState ===

/// What the request path tells a connection's supervisor: plain atomics, touched once when a
/// request starts and once when its response body is dropped. No per-request timer.
struct ConnState {
    /// When the connection was accepted; every time below is measured from here.
    origin: Instant,
    /// A complete request head has arrived (the service was called).
    started: AtomicBool,
    /// The first request was HTTP/2 (labels a hyper timeout as a keep-alive ping timeout).
    http2: AtomicBool,
    /// Requests whose response body has not been dropped yet.
    in_flight: AtomicUsize,
    /// Milliseconds after `origin` at which the latest request ended.
    idle_since_ms: AtomicU64,
    /// One more than the milliseconds after `origin` at which the socket stopped taking
    /// writes; 0 while it takes them (see [`WatchedIo`]).
    write_stalled_ms: AtomicU64,
}

/// A consistent reading of a [`ConnState`] at `now` (time since accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    now: Duration,
    started: bool,
    in_flight: usize,
    idle_since: Duration,
    /// Since when the socket has taken no write, if it is refusing them now.
    write_stalled_since: Option<Duration>,
}

impl ConnState {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            started: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            write_stalled_ms: AtomicU64::new(0),
        }
    }

    /// Records whether the socket just refused a write (`Pending`) or took one.
    fn note_write(&self, refused: bool) {
        let stalled = self.write_stalled_ms.load(Ordering::Relaxed);
        if refused {
            if stalled == 0 {
                let since = millis(self.origin.elapsed()).saturating_add(1);
                self.write_stalled_ms.store(since, Ordering::Relaxed);
            }
        } else if stalled != 0 {
            self.write_stalled_ms.store(0, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Snapshot {
        let now = self.origin.elapsed();
        // Acquire pairs with the Release decrement in `InFlight::drop`: seeing the decrement
        // means seeing the `idle_since_ms` written before it.
        let in_flight = self.in_flight.load(Ordering::Acquire);
        Snapshot {
            now,
            started: self.started.load(Ordering::Relaxed),
            in_flight,
            idle_since: Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed)),
            write_stalled_since: match self.write_stalled_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(Duration::from_millis(ms.saturating_sub(1))),
            },
        }
    }
}

/// A connection's socket (TCP or TLS) that tells its [`ConnState`] when writes stop being
/// taken and when they are taken again: the supervisor's `send_timeout` reads it. One relaxed
/// atomic load per write; a clock read only when a write is refused.
#[pin_project]
struct WatchedIo<IO> {
    #[pin]
    io: IO,
    state: Arc<ConnState>,
}

impl<IO> WatchedIo<IO> {
    fn new(io: IO, state: Arc<ConnState>) -> Self {
        Self { io, state }
    }
}

impl<IO: tokio::io::AsyncRead> tokio::io::AsyncRead for WatchedIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite> tokio::io::AsyncWrite for WatchedIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write(cx, buf);
        this.state.note_write(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write_vectored(cx, bufs);
        this.state.note_write(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let polled = this.io.poll_flush(cx);
        this.state.note_write(polled.is_pending());
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let polled = this.io.poll_shutdown(cx);
        this.state.note_write(polled.is_pending());
        polled
    }
}

/// One request in flight on a connection, from its complete head until its response body is
/// dropped (sent, failed or abandoned).
struct InFlight(Arc<ConnState>);

impl InFlight {
    /// Called by hyper's `Service::call`, which hyper runs inside the connection future (for
    /// HTTP/2 too: only the response future is spawned). The supervisor polls that future, so a
    /// request can never start between the supervisor's reading of the state and its decision.
    fn start(state: &Arc<ConnState>, version: Version) -> Self {
        if !state.started.load(Ordering::Relaxed) {
            state
                .http2
                .store(version == Version::HTTP_2, Ordering::Relaxed);
            state.started.store(true, Ordering::Relaxed);
        }
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = millis(self.0.origin.elapsed());
        self.0.idle_since_ms.fetch_max(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

// === impl Timeouts ===

/// The connection deadlines, and the decision the supervisor takes when its timer fires.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    head: Duration,
    idle: Duration,
    send: Duration,
    grace: Duration,
}

/// What the supervisor does next. Times are since accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Check again at this time.
    WakeAt(Duration),
    /// Ask the connection to close gracefully.
    Close(CloseReason),
    /// Drop the connection: it was asked to close and has not, with nothing in flight.
    Drop,
    /// Drop the connection now, without a graceful close (which could not be written).
    Abort(CloseReason),
}

impl Timeouts {
    /// `closing_since`: when the connection was asked to close, if it was.
    fn step(&self, s: Snapshot, closing_since: Option<Duration>) -> Step {
        // The socket has refused writes since `stalled`: past `send`, drop it whatever else
        // holds (a request in flight, a graceful close under way); before, wake by then. A
        // socket taking writes is looked at again within `send` at the latest, so a stall that
        // begins meanwhile is seen within two `send`s of its start.
        let look_again = match s.write_stalled_since {
            Some(stalled) => {
                let abort_at = stalled.saturating_add(self.send);
                if s.now >= abort_at {
                    return Step::Abort(CloseReason::SendTimeout);
                }
                abort_at
            }
            None => s.now.saturating_add(self.send),
        };
        match self.step_writable(s, closing_since) {
            Step::WakeAt(when) => Step::WakeAt(when.min(look_again)),
            other => other,
        }
    }

    fn step_writable(&self, s: Snapshot, closing_since: Option<Duration>) -> Step {
        if let Some(since) = closing_since {
            let drop_at = since.saturating_add(self.grace);
            return match (s.in_flight, s.now >= drop_at) {
                (0, true) => Step::Drop,
                (0, false) => Step::WakeAt(drop_at),
                // Draining a request: look again later, never cut it.
                _ => Step::WakeAt(s.now.saturating_add(self.grace)),
            };
        }
        if !s.started {
            if s.now >= self.head {
                return Step::Close(CloseReason::HeadTimeout);
            }
            // Wake at least every idle period, so that once the first request has come and
            // gone, the idle deadline is noticed on time.
            return Step::WakeAt(self.head.min(s.now.saturating_add(self.idle)));
        }
        if s.in_flight > 0 {
            // The earliest it can go idle long enough is a full idle period from now.
            return Step::WakeAt(s.now.saturating_add(self.idle));
        }
        let idle_at = s.idle_since.saturating_add(self.idle);
        if s.now >= idle_at {
            Step::Close(CloseReason::Idle)
        } else {
            Step::WakeAt(idle_at)
        }
    }
}

// === supervise ===

enum Event {
    Done(Result<(), BoxError>),
    Stop,
    Tick,
    Reclaim,
}

/// Completes when the connection is asked to make room; never without a registry.
async fn reclaimed(reclaim: Option<&ReclaimEntry>) {
    match reclaim {
        Some(entry) => entry.reclaim.notified().await,
        None => std::future::pending().await,
    }
}

/// Drives one connection to its end, enforcing the head and idle deadlines and shutdown, and
/// says why it ended (and the error, if it is worth logging).
async fn supervise<C>(
    conn: C,
    state: &ConnState,
    timeouts: Timeouts,
    mut stopping: watch::Receiver<bool>,
    reclaim: Option<&ReclaimEntry>,
) -> (CloseReason, Option<BoxError>)
where
    C: GracefulConnection<Error = BoxError>,
{
    tokio::pin!(conn);
    let origin = state.origin;
    // Times are at most a few hours past accept (validated timeouts), so the addition cannot
    // overflow; were it to, waking at once only re-runs the decision.
    let at = |since_origin: Duration| origin.checked_add(since_origin).unwrap_or(origin);
    let first = match timeouts.step(state.snapshot(), None) {
        Step::WakeAt(when) => at(when),
        Step::Close(_) | Step::Drop | Step::Abort(_) => Instant::now(),
    };
    let timer = tokio::time::sleep_until(first);
    tokio::pin!(timer);
    let mut closing: Option<(CloseReason, Duration)> = None;
    let mut stop_seen = *stopping.borrow_and_update();
    if stop_seen {
        conn.as_mut().graceful_shutdown();
        closing = Some((CloseReason::Shutdown, Duration::ZERO));
    }
    loop {
        let event = tokio::select! {
            biased;
            result = &mut conn => Event::Done(result),
            // An error means the server is gone: stop as well.
            _ = stopping.changed(), if !stop_seen => Event::Stop,
            () = &mut timer => Event::Tick,
            () = reclaimed(reclaim), if closing.is_none() => Event::Reclaim,
        };
        match event {
            Event::Done(result) => return outcome(result, closing.map(|(r, _)| r), state),
            Event::Stop => {
                stop_seen = true;
                if closing.is_none() {
                    conn.as_mut().graceful_shutdown();
                    let now = origin.elapsed();
                    closing = Some((CloseReason::Shutdown, now));
                    timer.as_mut().reset(at(now.saturating_add(timeouts.grace)));
                }
            }
            Event::Reclaim => {
                // Only with nothing in flight. No request can start between this reading and
                // the shutdown: requests start inside `conn`, which this task polls.
                let snapshot = state.snapshot();
                if snapshot.in_flight == 0 {
                    conn.as_mut().graceful_shutdown();
                    closing = Some((CloseReason::Reclaimed, snapshot.now));
                    timer
                        .as_mut()
                        .reset(at(snapshot.now.saturating_add(timeouts.grace)));
                } else if let Some(entry) = reclaim {
                    // A request started meanwhile: not this one; it may be asked again later.
                    entry.asked.store(false, Ordering::Release);
                }
            }
            Event::Tick => {
                let snapshot = state.snapshot();
                match timeouts.step(snapshot, closing.map(|(_, since)| since)) {
                    Step::WakeAt(when) => timer.as_mut().reset(at(when)),
                    Step::Close(reason) => {
                        conn.as_mut().graceful_shutdown();
                        closing = Some((reason, snapshot.now));
                        timer
                            .as_mut()
                            .reset(at(snapshot.now.saturating_add(timeouts.grace)));
                    }
                    Step::Drop => {
                        // Returning drops the connection, which closes the socket.
                        let reason = closing.map_or(CloseReason::Error, |(r, _)| r);
                        return (reason, None);
                    }
                    Step::Abort(reason) => return (reason, None),
                }
            }
        }
    }
}

fn outcome(
    result: Result<(), BoxError>,
    closing: Option<CloseReason>,
    state: &ConnState,
) -> (CloseReason, Option<BoxError>) {
    if let Some(reason) = closing {
        // Asked to close: an error now (a cancelled protocol detection, a reset) is expected.
        return (reason, None);
    }
    match result {
        Ok(()) => (CloseReason::Completed, None),
        Err(error) => {
            let timeout = error
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout);
            let reason = match (timeout, state.http2.load(Ordering::Relaxed)) {
                (false, _) => CloseReason::Error,
                (true, true) => CloseReason::KeepAliveTimeout,
                (true, false) => CloseReason::HeaderReadTimeout,
            };
            (reason, Some(error))
        }
    }
}

// === impl Reclaimable ===

/// The longest a connection past the limit waits for the slot a reclaimed connection frees. A
/// reclaimed connection has nothing in flight, so it closes at once; the bound only matters
/// for a peer that will not let go (then it is dropped after `CLOSE_GRACE` anyway).
const RECLAIM_WAIT: Duration = Duration::from_secs(2);

/// How many registered connections one reclaim looks at, from a rotating cursor: enough to
/// find an idle one when a few percent are idle, bounded when none is (the cost of a sample,
/// as Redis's approximated LRU, instead of a scan of every connection).
const RECLAIM_SAMPLE: usize = 64;

/// The connections that could be closed to make room past `max_connections` (nginx's
/// "reusable" connections): every open connection is registered, and one with nothing in
/// flight — an idle keep-alive connection, or one that has not sent its first request yet — is
/// asked to close. Touched once per connection open and close, and per reclaim; never per
/// request.
struct Reclaimable {
    /// `None` when overflow handling is off: nothing is registered.
    inner: Option<Arc<Mutex<Registry>>>,
}

#[derive(Default)]
struct Registry {
    entries: Vec<Option<Arc<ReclaimEntry>>>,
    free: Vec<usize>,
    cursor: usize,
}

struct ReclaimEntry {
    state: Arc<ConnState>,
    reclaim: tokio::sync::Notify,
    /// Asked already: not picked twice.
    asked: AtomicBool,
}

/// A registered connection; unregisters when dropped.
struct Registered {
    entry: Arc<ReclaimEntry>,
    index: usize,
    registry: Arc<Mutex<Registry>>,
}

impl Reclaimable {
    fn new(enabled: bool) -> Self {
        Self {
            inner: enabled.then(|| Arc::new(Mutex::new(Registry::default()))),
        }
    }

    fn register(&self, state: &Arc<ConnState>) -> Option<Registered> {
        let registry = self.inner.as_ref()?;
        let entry = Arc::new(ReclaimEntry {
            state: Arc::clone(state),
            reclaim: tokio::sync::Notify::new(),
            asked: AtomicBool::new(false),
        });
        let mut r = registry.lock().unwrap_or_else(PoisonError::into_inner);
        let index = match r.free.pop() {
            Some(index) => {
                if let Some(slot) = r.entries.get_mut(index) {
                    *slot = Some(Arc::clone(&entry));
                }
                index
            }
            None => {
                r.entries.push(Some(Arc::clone(&entry)));
                r.entries.len().saturating_sub(1)
            }
        };
        Some(Registered {
            entry,
            index,
            registry: Arc::clone(registry),
        })
    }

    /// Asks one connection with nothing in flight to close; `false` when none was found among
    /// the sampled ones.
    fn reclaim_one(&self) -> bool {
        let Some(registry) = &self.inner else {
            return false;
        };
        let mut r = registry.lock().unwrap_or_else(PoisonError::into_inner);
        let len = r.entries.len();
        if len == 0 {
            return false;
        }
        let start = r.cursor % len;
        for step in 0..len.min(RECLAIM_SAMPLE) {
            let index = (start + step) % len;
            let Some(Some(entry)) = r.entries.get(index) else {
                continue;
            };
            if entry.state.in_flight.load(Ordering::Acquire) == 0
                && !entry.asked.swap(true, Ordering::AcqRel)
            {
                entry.reclaim.notify_one();
                r.cursor = index.wrapping_add(1);
                return true;
            }
        }
        r.cursor = start.wrapping_add(RECLAIM_SAMPLE);
        false
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut r = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = r.entries.get_mut(self.index) {
            *slot = None;
            r.free.push(self.index);
        }
    }
}

// === impl PerIp ===

/// Open connection counts by client prefix. Entries exist only for prefixes with open
/// connections, so the map is bounded by `max_connections`. A mutex is fine: it is touched once
/// per connection open and close, never per request.
#[derive(Clone)]
struct PerIp {
    limit: usize,
    ipv4_prefix_len: u8,
    ipv6_prefix_len: u8,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

struct IpSlot {
    key: IpAddr,
    counts: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl PerIp {
    fn new(limit: usize, ipv4_prefix_len: u8, ipv6_prefix_len: u8) -> Self {
        Self {
            limit,
            ipv4_prefix_len,
            ipv6_prefix_len,
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let key = ip_group(ip, self.ipv4_prefix_len, self.ipv6_prefix_len);
        if self.limit == 0 {
            return Some(IpSlot { key, counts: None });
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count = count.saturating_add(1);
        Some(IpSlot {
            key,
            counts: Some(Arc::clone(&self.counts)),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(counts) = &self.counts else { return };
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The per-IP budget an address counts against: the address with all but its first
/// `ipv4_prefix_len` or `ipv6_prefix_len` bits cleared. An IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 clients) counts as IPv4.
fn ip_group(ip: IpAddr, ipv4_prefix_len: u8, ipv6_prefix_len: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mask = prefix_mask_u32(ipv4_prefix_len);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = prefix_mask_u128(ipv6_prefix_len);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

fn prefix_mask_u32(len: u8) -> u32 {
    // len 0 → shift by 32 → None → empty mask; len ≥ 32 → shift by 0 → full mask.
    u32::MAX
        .checked_shl(32_u32.saturating_sub(u32::from(len)))
        .unwrap_or(0)
}

fn prefix_mask_u128(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128_u32.saturating_sub(u32::from(len)))
        .unwrap_or(0)
}

// === impl ConnService ===

/// The per-connection service hyper calls: sets the [`PeerAddr`] extension, and marks the
/// request in flight until its response body is dropped. Implements hyper's `Service` directly
/// (rather than through `TowerToHyperService`) so the start of a request is recorded inside
/// hyper's `call`, on the connection's own task; see [`InFlight::start`].
struct ConnService<S> {
    inner: S,
    peer: PeerAddr,
    state: Arc<ConnState>,
    /// The handshake of a TLS connection, set on each of its requests.
    tls: Option<TlsInfo>,
    /// The connection's slots, lent to its upgrade requests.
    hold: Arc<OpenConnection>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<Oneshot<S, Request<Incoming>>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        if let Some(tls) = &self.tls {
            request.extensions_mut().insert(tls.clone());
            request.extensions_mut().insert(ClientScheme("https"));
        }
        // Over HTTP/2 only the frames say whether a request has content; layers generic over
        // the body (the cache refuses to store a response to a GET with content) read this.
        if request.version() >= Version::HTTP_2
            && !request.body().is_end_stream()
            && !ravelin_http::headers_have_content(request.headers())
        {
            request.extensions_mut().insert(UnframedContent);
        }
        if request.headers().contains_key(http::header::UPGRADE) {
            request.extensions_mut().insert(ConnectionHold {
                _connection: Arc::clone(&self.hold),
            });
        }
        let in_flight = InFlight::start(&self.state, request.version());
        TrackedFuture {
            inner: self.inner.clone().oneshot(request),
            in_flight: Some(in_flight),
        }
    }
}

/// The response future: hands the in-flight mark to the response body.
#[pin_project]
struct TrackedFuture<F> {
    #[pin]
    inner: F,
    in_flight: Option<InFlight>,
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(result.map(|response| {
            response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            })
        }))
    }
}

/// A response body that keeps its request in flight until it is dropped.
#[pin_project]
struct TrackedBody<B> {
    #[pin]
    inner: B,
    _in_flight: Option<InFlight>,
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_returned() {
        let per_ip = PerIp::new(2, 32, 64);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = per_ip.acquire(ip).unwrap();
        let b = per_ip.acquire(ip).unwrap();
        assert!(per_ip.acquire(ip).is_none());
        drop(a);
        let c = per_ip.acquire(ip).unwrap();
        drop((b, c));
        assert!(per_ip.counts.lock().unwrap().is_empty());
    }

    #[test]
    fn config_checks_name_the_field() {
        let err = ServerConfig::default()
            .max_header_bytes(10)
            .check()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "server config: max_header_bytes must be at least 8192 (hyper's minimum), got 10"
        );
        let err = ServerConfig::default()
            .max_connections(0)
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("max_connections"), "{err}");
    }

    #[test]
    fn defaults_pass_and_per_ip_default_follows_a_small_max_connections() {
        ServerConfig::default().check().unwrap();
        let small = ServerConfig::default().max_connections(4);
        small.check().unwrap();
        assert_eq!(small.per_ip_limit(), 4);
        assert_eq!(ServerConfig::default().per_ip_limit(), 256);
        // Set explicitly, the rule holds.
        let err = small.max_connections_per_ip(5).check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "server config: max_connections_per_ip must be 0 (no per-IP limit) or at most \
             max_connections (4), got 5"
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_budget() {
        let a = ip("2001:db8:1:2:aaaa::1");
        let b = ip("2001:db8:1:2:ffff:ffff:ffff:ffff");
        let other = ip("2001:db8:1:3::1");
        assert_eq!(ip_group(a, 32, 64), ip("2001:db8:1:2::"));
        assert_eq!(ip_group(a, 32, 64), ip_group(b, 32, 64));
        assert_ne!(ip_group(a, 32, 64), ip_group(other, 32, 64));
        // /128 is one address each.
        assert_ne!(ip_group(a, 32, 128), ip_group(b, 32, 128));

        let per_ip = PerIp::new(1, 32, 64);
        let held = per_ip.acquire(a).unwrap();
        assert!(per_ip.acquire(b).is_none(), "same /64 got a second slot");
        let elsewhere = per_ip.acquire(other).unwrap();
        drop(held);
        let _again = per_ip.acquire(b).unwrap();
        drop(elsewhere);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let mapped = ip("::ffff:192.0.2.77");
        assert_eq!(ip_group(mapped, 32, 64), ip("192.0.2.77"));
        assert_eq!(ip_group(mapped, 24, 64), ip("192.0.2.0"));
        // Not folded into one /64 with every other IPv4 client.
        assert_ne!(
            ip_group(mapped, 32, 64),
            ip_group(ip("::ffff:198.51.100.1"), 32, 64)
        );
        let per_ip = PerIp::new(1, 32, 64);
        let _v4 = per_ip.acquire(ip("192.0.2.77")).unwrap();
        assert!(per_ip.acquire(mapped).is_none());
    }

    #[test]
    fn prefix_masks_cover_the_edges() {
        assert_eq!(prefix_mask_u32(32), u32::MAX);
        assert_eq!(prefix_mask_u32(24), 0xffff_ff00);
        assert_eq!(prefix_mask_u32(1), 0x8000_0000);
        assert_eq!(prefix_mask_u32(0), 0);
        assert_eq!(prefix_mask_u32(200), u32::MAX);
        assert_eq!(prefix_mask_u128(128), u128::MAX);
        assert_eq!(prefix_mask_u128(64), u128::MAX << 64);
        assert_eq!(prefix_mask_u128(0), 0);
        assert_eq!(ip_group(ip("10.1.2.3"), 1, 64), ip("0.0.0.0"));
    }

    proptest::proptest! {
        /// Against a bit-by-bit model: two addresses share a budget exactly when their first
        /// `len` bits are equal, and the key is the address with the other bits cleared.
        #[test]
        fn grouping_matches_a_bitwise_model(a: u128, b: u128, len in 1u8..=128, len4 in 1u8..=32) {
            let same_prefix = (0..u32::from(len)).all(|bit| (a >> (127 - bit)) & 1 == (b >> (127 - bit)) & 1);
            let ga = ip_group(IpAddr::V6(Ipv6Addr::from(a)), len4, len);
            let gb = ip_group(IpAddr::V6(Ipv6Addr::from(b)), len4, len);
            let mapped = |x: u128| Ipv6Addr::from(x).to_ipv4_mapped().is_some();
            if !mapped(a) && !mapped(b) {
                proptest::prop_assert_eq!(ga == gb, same_prefix);
                let IpAddr::V6(key) = ga else { panic!("v6 grouped as v4") };
                let key = u128::from(key);
                proptest::prop_assert_eq!(key & !prefix_mask_u128(len), 0);
                proptest::prop_assert_eq!(key, a & prefix_mask_u128(len));
            }
            let (a4, b4) = (a as u32, b as u32);
            let same4 = (0..u32::from(len4)).all(|bit| (a4 >> (31 - bit)) & 1 == (b4 >> (31 - bit)) & 1);
            let g4 = |x: u32| ip_group(IpAddr::V4(Ipv4Addr::from(x)), len4, len);
            proptest::prop_assert_eq!(g4(a4) == g4(b4), same4);
            // The mapped form of an IPv4 address groups exactly as the address itself.
            proptest::prop_assert_eq!(g4(a4), ip_group(IpAddr::V6(Ipv4Addr::from(a4).to_ipv6_mapped()), len4, len));
        }
    }

    #[test]
    fn close_reasons_are_listed_in_declaration_order() {
        for (index, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index, "{reason:?}");
        }
    }

    const T: Timeouts = Timeouts {
        head: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(60),
        grace: Duration::from_secs(1),
    };

    fn at(now: u64, started: bool, in_flight: usize, idle_since: u64) -> Snapshot {
        Snapshot {
            now: Duration::from_secs(now),
            started,
            in_flight,
            idle_since: Duration::from_secs(idle_since),
            write_stalled_since: None,
        }
    }

    fn stalled_since(mut snapshot: Snapshot, since: u64) -> Snapshot {
        snapshot.write_stalled_since = Some(Duration::from_secs(since));
        snapshot
    }

    #[test]
    fn a_socket_refusing_writes_for_send_timeout_is_dropped_whatever_is_in_flight() {
        let short_send = Timeouts {
            send: Duration::from_secs(5),
            ..T
        };
        // Wake within `send` whatever the state, so a stall is seen within two of them.
        assert_eq!(short_send.step(at(10, true, 1, 0), None), wake(15));
        assert_eq!(short_send.step(at(1, false, 0, 0), None), wake(6));
        assert_eq!(short_send.step(at(70, true, 0, 65), None), wake(75));
        // Stalled since 12 s: wake at 17 s, then drop.
        assert_eq!(
            short_send.step(stalled_since(at(13, true, 1, 0), 12), None),
            wake(17)
        );
        assert_eq!(
            short_send.step(stalled_since(at(17, true, 1, 0), 12), None),
            Step::Abort(CloseReason::SendTimeout)
        );
        // Also while closing gracefully with a request in flight (never cut otherwise).
        assert_eq!(
            short_send.step(
                stalled_since(at(30, true, 1, 0), 20),
                Some(Duration::from_secs(25))
            ),
            Step::Abort(CloseReason::SendTimeout)
        );
        // A stall shorter than `send` changes nothing but the wake time.
        assert_eq!(
            T.step(stalled_since(at(70, true, 0, 65), 69), None),
            wake(125)
        );
    }

    #[test]
    fn the_watched_socket_reports_refused_writes_until_one_is_taken() {
        let state = ConnState::new();
        assert_eq!(state.snapshot().write_stalled_since, None);
        state.note_write(true);
        let since = state.snapshot().write_stalled_since;
        assert!(since.is_some());
        // Later refusals keep the first time.
        state.note_write(true);
        assert_eq!(state.snapshot().write_stalled_since, since);
        state.note_write(false);
        assert_eq!(state.snapshot().write_stalled_since, None);
    }

    fn wake(secs: u64) -> Step {
        Step::WakeAt(Duration::from_secs(secs))
    }

    #[test]
    fn before_the_first_head_only_the_head_deadline_closes() {
        assert_eq!(T.step(at(0, false, 0, 0), None), wake(10));
        assert_eq!(T.step(at(9, false, 0, 0), None), wake(10));
        assert_eq!(
            T.step(at(10, false, 0, 0), None),
            Step::Close(CloseReason::HeadTimeout)
        );
        // An idle period shorter than the head deadline: wake each idle period, close at the
        // head deadline, never as idle.
        let short_idle = Timeouts {
            idle: Duration::from_secs(3),
            ..T
        };
        assert_eq!(short_idle.step(at(0, false, 0, 0), None), wake(3));
        assert_eq!(short_idle.step(at(9, false, 0, 0), None), wake(10));
        assert_eq!(
            short_idle.step(at(10, false, 0, 0), None),
            Step::Close(CloseReason::HeadTimeout)
        );
    }

    #[test]
    fn idle_counts_from_the_end_of_the_last_request() {
        // Busy: look again a full idle period later, whatever the head deadline.
        assert_eq!(T.step(at(10, true, 1, 0), None), wake(70));
        assert_eq!(T.step(at(500, true, 3, 400), None), wake(560));
        // Idle since 65 s: close at 125 s.
        assert_eq!(T.step(at(70, true, 0, 65), None), wake(125));
        assert_eq!(
            T.step(at(125, true, 0, 65), None),
            Step::Close(CloseReason::Idle)
        );
    }

    #[test]
    fn a_closing_connection_is_dropped_only_with_nothing_in_flight() {
        assert_eq!(
            T.step(at(20, true, 0, 0), Some(Duration::from_secs(20))),
            wake(21)
        );
        assert_eq!(
            T.step(at(21, true, 0, 0), Some(Duration::from_secs(20))),
            Step::Drop
        );
        // A request that raced the close is never cut.
        assert_eq!(
            T.step(at(30, true, 1, 0), Some(Duration::from_secs(20))),
            wake(31)
        );
    }

    #[test]
    fn in_flight_follows_the_response_body() {
        let state = Arc::new(ConnState::new());
        let first = InFlight::start(&state, Version::HTTP_11);
        let second = InFlight::start(&state, Version::HTTP_2);
        let snapshot = state.snapshot();
        assert!(snapshot.started);
        assert_eq!(snapshot.in_flight, 2);
        // The first request decides the protocol label.
        assert!(!state.http2.load(Ordering::Relaxed));
        drop(first);
        assert_eq!(state.snapshot().in_flight, 1);
        drop(second);
        assert_eq!(state.snapshot().in_flight, 0);
    }
}
