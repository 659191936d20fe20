//! The HTTP/1.1 connection pool of one upstream (per worker): hyper's connection API under a
//! pool of this crate's own.
//!
//! hyper-util's general-purpose client spawned one task per HTTP/1 request to watch for the
//! connection to go idle, hashed a pool key per checkout and per return, and took the request
//! away before it knew whether a connection could be made — so every retryable request carried
//! a copy of its head in case the connection failed (issue 13 measured ~8k instructions per
//! forwarded request in it). This pool:
//!
//! - keeps one queue of connections, oldest first: a checkout takes the first that is ready
//!   for a request (a connection whose previous response is still streaming is passed over,
//!   one whose peer closed it or that sat idle past the idle timeout is let go);
//! - returns a connection to the queue as soon as its response head is in (it is picked again
//!   once hyper reports it ready, after that response's body ended): no task per request;
//! - connects *before* it takes the request, so a failed connection gives the request back
//!   untouched for a retry, and a request sent on a reused connection that its peer had closed
//!   in the meantime (hyper returns it unsent) goes again on another connection, as
//!   hyper-util's client does;
//! - closes idle connections past the idle timeout from a sweep task (one per pool, holding
//!   only a weak reference), so an upstream that gets no traffic is not held open.
//!
//! HTTP/2 upstreams keep hyper-util's client: one multiplexed connection, where none of the
//! above costs per request.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use tokio::time::Instant;
use tower_service::Service;

use crate::forward::ClientBody;
use crate::upstream_tls::UpstreamConnector;

/// The most connections one pool keeps, busy and idle together (the idle ones are further
/// bounded by the upstream's `max_idle_per_host`): a bound on sockets held per upstream and
/// worker, whatever the concurrency.
pub(crate) const MAX_POOLED_CONNECTIONS: usize = 10_000;

/// How many times a request that a reused connection handed back unsent (its peer had closed
/// it) goes again on another one before the error is reported.
const MAX_STALE_RETRIES: usize = 3;

/// Why an exchange through the pool failed.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// No connection could be made (refused, unreachable, DNS, TLS, the connect timeout).
    Connect(crate::forward::BoxError),
    /// The exchange on an established connection failed (reset, closed early, a response
    /// hyper could not parse).
    Exchange(hyper::Error),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(_) => f.write_str("connection to the upstream failed"),
            Self::Exchange(_) => f.write_str("exchange with the upstream failed"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(error) => Some(error.as_ref()),
            Self::Exchange(error) => Some(error),
        }
    }
}

/// A failed exchange, with the request when it was never sent (a connection failure).
pub(crate) struct Unsent {
    pub(crate) error: PoolError,
    pub(crate) request: Option<Request<ClientBody>>,
}

/// One pooled connection: its sender, and when it was last handed a request.
struct Pooled {
    sender: SendRequest<ClientBody>,
    used: Instant,
}

impl Pooled {
    /// Whether to let it go: its peer closed it, or it has been idle past `idle_timeout`
    /// (busy ones, a response still streaming, are kept).
    fn expired(&self, now: Instant, idle_timeout: Duration) -> bool {
        self.sender.is_closed()
            || (self.sender.is_ready() && now.saturating_duration_since(self.used) >= idle_timeout)
    }
}

struct State {
    /// Oldest first; bounded by [`MAX_POOLED_CONNECTIONS`].
    connections: VecDeque<Pooled>,
    /// Whether the idle sweep task runs.
    sweeping: bool,
}

struct Inner {
    connector: UpstreamConnector,
    /// `scheme://authority` of the upstream: what the connector is asked for.
    target: Uri,
    max_idle: usize,
    idle_timeout: Duration,
    state: Mutex<State>,
}

impl Inner {
    /// The queue. A panic while it was held (none of its users can panic) left it consistent:
    /// every change is one `VecDeque` operation.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An upstream's HTTP/1.1 connections on one worker.
#[derive(Clone)]
pub(crate) struct Http1Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Pool")
            .field("target", &self.inner.target)
            .field("max_idle", &self.inner.max_idle)
            .field("idle_timeout", &self.inner.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Http1Pool {
    /// A pool connecting to `target` (`scheme://authority/`) through `connector`, keeping at
    /// most `max_idle` idle connections (0: none, every request on a new connection), each
    /// for at most `idle_timeout`.
    pub(crate) fn new(
        connector: UpstreamConnector,
        target: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                connector,
                target,
                max_idle: max_idle.min(MAX_POOLED_CONNECTIONS),
                idle_timeout,
                state: Mutex::new(State {
                    connections: VecDeque::new(),
                    sweeping: false,
                }),
            }),
        }
    }

    /// Sends `request` (origin-form target, HTTP/1.1) on a pooled connection or a new one.
    pub(crate) async fn send(
        &self,
        mut request: Request<ClientBody>,
    ) -> Result<Response<Incoming>, Unsent> {
        let mut stale = 0;
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                None => match self.connect().await {
                    Ok(sender) => (sender, false),
                    Err(error) => {
                        return Err(Unsent {
                            error,
                            request: Some(request),
                        });
                    }
                },
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(sender);
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: the connection was closed under it. Another one.
                    Some(unsent) if reused && stale < MAX_STALE_RETRIES => {
                        stale += 1;
                        request = unsent;
                    }
                    unsent => {
                        return Err(Unsent {
                            error: PoolError::Exchange(failed.into_error()),
                            request: unsent,
                        });
                    }
                },
            }
        }
    }

    /// The oldest connection ready for a request; closed and expired ones are let go on the
    /// way, busy ones (a response still streaming) stay queued.
    fn checkout(&self) -> Option<SendRequest<ClientBody>> {
        let now = Instant::now();
        let mut state = self.inner.lock();
        let mut remaining = state.connections.len();
        while remaining > 0 {
            remaining -= 1;
            let pooled = state.connections.pop_front()?;
            if pooled.sender.is_closed() {
                continue;
            }
            if pooled.sender.is_ready() {
                if now.saturating_duration_since(pooled.used) >= self.inner.idle_timeout {
                    // Idle past the timeout: closed by dropping its sender.
                    continue;
                }
                return Some(pooled.sender);
            }
            state.connections.push_back(pooled);
        }
        None
    }

    /// Queues `sender` again, its response head received (it becomes ready once that
    /// response's body has ended); let go when the pool keeps no connections or is full.
    fn checkin(&self, sender: SendRequest<ClientBody>) {
        if self.inner.max_idle == 0 || sender.is_closed() {
            return;
        }
        let mut state = self.inner.lock();
        if state.connections.len() >= MAX_POOLED_CONNECTIONS {
            return;
        }
        // Bound the idle ones: past `max_idle` ready connections, the oldest go (only checked
        // when the queue could hold that many, so not on every return).
        if state.connections.len() >= self.inner.max_idle {
            let mut ready = 0;
            state.connections.retain(|pooled| {
                if pooled.sender.is_closed() {
                    return false;
                }
                if pooled.sender.is_ready() {
                    ready += 1;
                    return ready < self.inner.max_idle;
                }
                true
            });
        }
        state.connections.push_back(Pooled {
            sender,
            used: Instant::now(),
        });
        if !state.sweeping {
            state.sweeping = true;
            spawn_sweep(Arc::downgrade(&self.inner), self.inner.idle_timeout);
        }
    }

    /// A new connection: connected (TLS included) under the connect timeout, its protocol
    /// task spawned on this worker.
    async fn connect(&self) -> Result<SendRequest<ClientBody>, PoolError> {
        let mut connector = self.inner.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(PoolError::Connect)?;
        let io = connector
            .call(self.inner.target.clone())
            .await
            .map_err(PoolError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(PoolError::Exchange)?;
        tokio::spawn(async move {
            // Upgrades stay possible (a WebSocket relayed through `hyper::upgrade::on`). An
            // error here ends this connection only; the request that saw it reports it.
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Closes connections idle past `idle_timeout`, every `idle_timeout` (at least a second),
/// until the pool is gone.
fn spawn_sweep(pool: Weak<Inner>, idle_timeout: Duration) {
    let period = idle_timeout.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            let now = Instant::now();
            let mut state = pool.lock();
            state
                .connections
                .retain(|pooled| !pooled.expired(now, pool.idle_timeout));
        }
    });
}
