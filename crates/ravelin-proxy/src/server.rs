//! The accepting side: HTTP/1.1 and HTTP/2 on one port, with every limit explicit.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ravelin_failsafe::{LogLimiter, PeerAddr};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower_service::Service;

use crate::error::ServerError;
use crate::forward::BoxError;

/// The server's limits. Every one is a bound on memory or time a client can make the proxy
/// spend.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    max_connections: usize,
    max_connections_per_ip: usize,
    max_headers: usize,
    max_header_bytes: usize,
    header_read_timeout: Duration,
    max_concurrent_streams: u32,
    keep_alive: bool,
    shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 100,
            keep_alive: true,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    /// The smallest header byte limit hyper accepts for HTTP/1.1 (its read buffer minimum).
    pub const MIN_HEADER_BYTES: usize = 8192;

    /// Open connections at once (default 10,000). When reached, the server stops accepting
    /// until one closes: new clients wait in the kernel's backlog instead of being served badly.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Open connections from one client IP (default 256; `0` = no per-IP limit). Connections
    /// over it are closed at once.
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.max_connections_per_ip = max;
        self
    }

    /// Header fields per HTTP/1.1 request (default 100); more is answered 431.
    pub fn max_headers(mut self, max: usize) -> Self {
        self.max_headers = max;
        self
    }

    /// Bytes of request head (default 64 KiB, minimum 8 KiB): HTTP/1.1 read buffer and the
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max;
        self
    }

    /// Time allowed for a client to send a complete HTTP/1.1 request head (default 10 s):
    /// the slowloris bound.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Concurrent HTTP/2 streams per connection (default 100): the per-connection request bound.
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = max;
        self
    }

    /// HTTP/1.1 keep-alive (default on).
    pub fn keep_alive(mut self, enabled: bool) -> Self {
        self.keep_alive = enabled;
        self
    }

    /// How long shutdown waits for in-flight requests before closing what remains (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The shutdown deadline.
    pub fn shutdown_deadline(&self) -> Duration {
        self.shutdown_timeout
    }

    fn check(&self) -> Result<(), ServerError> {
        // Each message names the field, the rule and the value given, so the operator can fix
        // the config line without reading this code.
        let bad = |field, reason: &str, value: &dyn std::fmt::Display| {
            Err(ServerError::Config {
                field,
                reason: format!("{reason}, got {value}"),
            })
        };
        if self.max_connections == 0 {
            return bad(
                "max_connections",
                "must be at least 1",
                &self.max_connections,
            );
        }
        if self.max_headers == 0 {
            return bad("max_headers", "must be at least 1", &self.max_headers);
        }
        if self.max_header_bytes < Self::MIN_HEADER_BYTES {
            return bad(
                "max_header_bytes",
                "must be at least 8192 (hyper's minimum)",
                &self.max_header_bytes,
            );
        }
        if u32::try_from(self.max_header_bytes).is_err() {
            return bad(
                "max_header_bytes",
                "must fit in 32 bits (at most 4294967295)",
                &self.max_header_bytes,
            );
        }
        if self.max_concurrent_streams == 0 {
            return bad(
                "max_concurrent_streams",
                "must be at least 1",
                &self.max_concurrent_streams,
            );
        }
        if self.header_read_timeout.is_zero() {
            return bad("header_read_timeout", "must be greater than zero", &"0s");
        }
        Ok(())
    }
}

/// An HTTP server on one listening socket: HTTP/1.1 and HTTP/2 (prior knowledge) on the same
/// port, connection limits, header limits, and graceful shutdown.
///
/// Every request gets the [`PeerAddr`] extension before it reaches the service.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
}

/// What [`Server::serve`] did before it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSummary {
    /// Connections accepted over the server's life.
    pub connections: u64,
    /// Connections still open when the shutdown deadline passed, closed without draining.
    pub forced_closed: usize,
}

impl Server {
    /// Binds `addr` with `config`.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound, [`ServerError::Config`] for an
    /// unusable limit.
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> Result<Self, ServerError> {
        config.check()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self { listener, config })
    }

    /// Serves on an already bound listener.
    ///
    /// # Errors
    /// [`ServerError::Config`] for an unusable limit.
    pub fn from_listener(listener: TcpListener, config: ServerConfig) -> Result<Self, ServerError> {
        config.check()?;
        Ok(Self { listener, config })
    }

    /// The bound address (useful after binding port 0).
    ///
    /// # Errors
    /// The socket's error, if it has one.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections with `service` until `shutdown` completes, then stops accepting,
    /// lets in-flight requests finish (HTTP/1.1 connections close after their current response;
    /// HTTP/2 connections get GOAWAY), and returns when all are done or the shutdown deadline
    /// passes, whichever is first.
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
        let Server { listener, config } = self;
        let local = listener.local_addr().ok();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(config.keep_alive)
            .max_headers(config.max_headers)
            .max_buf_size(config.max_header_bytes)
            .header_read_timeout(config.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.max_concurrent_streams)
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));

        let permits = Arc::new(Semaphore::new(config.max_connections));
        let per_ip = PerIp::new(config.max_connections_per_ip);
        let graceful = GracefulShutdown::new();
        let mut tasks = JoinSet::new();
        let accept_log = LogLimiter::per_second(5);
        let mut connections: u64 = 0;
        tokio::pin!(shutdown);
        tracing::info!(addr = ?local, "listening");

        loop {
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    // The semaphore is never closed; stop serving rather than spin if it is.
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        if let Some(permit) = accept_log.check() {
                            tracing::warn!(%error, suppressed = permit.suppressed(), "accept failed");
                        }
                        // Out of descriptors or memory: back off briefly instead of spinning.
                        // Per-connection errors (reset before accept) retry at once.
                        if is_resource_exhaustion(&error) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        continue;
                    }
                },
            };
            // Reap finished connection tasks so the set stays bounded by open connections.
            while tasks.try_join_next().is_some() {}
            let Some(ip_slot) = per_ip.acquire(peer.ip()) else {
                metrics::counter!("ravelin_proxy_connections_rejected_total", "reason" => "per_ip_limit").increment(1);
                drop(stream);
                continue;
            };
            connections = connections.saturating_add(1);
            let _ = stream.set_nodelay(true);
            metrics::counter!("ravelin_proxy_connections_total").increment(1);
            metrics::gauge!("ravelin_proxy_connections_active").increment(1.0);
            let service = TowerToHyperService::new(WithPeer {
                inner: service.clone(),
                peer: PeerAddr(peer),
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tasks.spawn(async move {
                if let Err(error) = connection.await {
                    // Client resets, timeouts and protocol errors are routine at an edge.
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
                metrics::gauge!("ravelin_proxy_connections_active").decrement(1.0);
                drop(ip_slot);
                drop(permit);
            });
        }

        drop(listener);
        tracing::info!(
            addr = ?local,
            open = graceful.count(),
            deadline = ?config.shutdown_timeout,
            "stopped accepting; draining in-flight requests"
        );
        let drained = tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
            .await
            .is_ok();
        let forced_closed = if drained {
            0
        } else {
            let open = tasks.len();
            tracing::warn!(
                open,
                "shutdown deadline passed; closing remaining connections"
            );
            tasks.abort_all();
            open
        };
        while tasks.join_next().await.is_some() {}
        ServeSummary {
            connections,
            forced_closed,
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

// === impl PerIp ===

/// Open connection counts by client IP. Entries exist only for IPs with open connections, so
/// the map is bounded by `max_connections`. A mutex is fine: it is touched once per connection
/// open and close, never per request.
#[derive(Clone)]
struct PerIp {
    limit: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

struct IpSlot {
    ip: IpAddr,
    counts: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl PerIp {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        if self.limit == 0 {
            return Some(IpSlot { ip, counts: None });
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count = count.saturating_add(1);
        Some(IpSlot {
            ip,
            counts: Some(Arc::clone(&self.counts)),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(counts) = &self.counts else { return };
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

// === impl WithPeer ===

/// Sets the [`PeerAddr`] extension on every request of one connection.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: PeerAddr,
}

impl<S, B> Service<Request<B>> for WithPeer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        request.extensions_mut().insert(self.peer);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_returned() {
        let per_ip = PerIp::new(2);
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
}
