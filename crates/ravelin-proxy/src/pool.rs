//! The HTTP/1.1 connection pool of one upstream (per worker): hyper's connection API under a
//! pool of this crate's own.
//!
//! hyper-util's general-purpose client spawned one task per HTTP/1 request to watch for the
//! connection to go idle, hashed a pool key per checkout and per return, and took the request
//! away before it knew whether a connection could be made — so every retryable request carried
//! a copy of its head in case the connection failed (issue 13 measured about 10,000
//! instructions per forwarded request in it). This pool:
//!
//! - gives a connection back as soon as its response head is in, as *pending* (its body may
//!   still stream); each checkout looks at a few pending connections, the most recently given
//!   back first, and moves those whose response has ended to the *idle* stack (one still
//!   streaming moves out of the way; the sweep looks at all of them): no task per request, and
//!   constant work per request however many long responses are in flight;
//! - takes the most recently idle connection (the one least likely to meet the upstream's own
//!   keep-alive timeout, as hyper-util does); one its peer closed or that sat idle past the idle
//!   timeout is let go, and past `max_idle` idle connections the one idle longest goes;
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

/// How many pending connections (given back with their response head) one checkout looks at
/// to move the finished ones to the idle stack: constant work per request however many long
/// responses are in flight; the sweep looks at all of them.
const PROMOTE_PER_CHECKOUT: usize = 8;

/// One pooled connection: its sender, and since when it has been idle (for a pending one:
/// when its response head came in).
struct Pooled {
    sender: SendRequest<ClientBody>,
    since: Instant,
}

struct State {
    /// Ready connections, the most recently idle last (taken first: the one least likely to
    /// meet the upstream's own keep-alive timeout). At most `max_idle`.
    idle: VecDeque<Pooled>,
    /// Connections given back with their response head, the body perhaps still streaming; the
    /// most recently given back last, long-streaming ones drift to the front. Bounded by
    /// [`MAX_POOLED_CONNECTIONS`].
    pending: VecDeque<Pooled>,
    /// Whether the idle sweep task runs (cleared by the task when it ends, however it ends).
    sweeping: bool,
}

impl State {
    /// Moves pending connections whose response has ended to the idle stack, looking at up to
    /// `limit` of them, the most recently given back first (a short response given back a
    /// moment ago has usually ended; one still streaming goes to the front, out of the way of
    /// the next ones). Closed ones are let go.
    fn promote(&mut self, limit: usize, max_idle: usize, now: Instant) {
        for _ in 0..limit.min(self.pending.len()) {
            let Some(pooled) = self.pending.pop_back() else {
                return;
            };
            if pooled.sender.is_closed() {
                continue;
            }
            if pooled.sender.is_ready() {
                self.idle.push_back(Pooled {
                    sender: pooled.sender,
                    since: now,
                });
                // Past `max_idle`, the connection idle longest goes.
                while self.idle.len() > max_idle {
                    self.idle.pop_front();
                }
            } else {
                self.pending.push_front(pooled);
            }
        }
    }
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
    /// The pool's state. A panic while it was held (none of its users can panic) left it
    /// consistent: every change is one `VecDeque` operation.
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
                    idle: VecDeque::new(),
                    pending: VecDeque::new(),
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

    /// The most recently idle connection ready for a request; closed and expired ones are
    /// let go on the way.
    fn checkout(&self) -> Option<SendRequest<ClientBody>> {
        let now = Instant::now();
        let mut state = self.inner.lock();
        state.promote(PROMOTE_PER_CHECKOUT, self.inner.max_idle, now);
        while let Some(pooled) = state.idle.pop_back() {
            if pooled.sender.is_closed()
                || now.saturating_duration_since(pooled.since) >= self.inner.idle_timeout
            {
                // Closed by its peer, or idle past the timeout: closed by dropping its sender.
                continue;
            }
            if pooled.sender.is_ready() {
                return Some(pooled.sender);
            }
            // Not ready after all (cannot happen for an idle HTTP/1.1 connection): back to
            // the pending ones rather than lost.
            state.pending.push_back(pooled);
        }
        None
    }

    /// Gives `sender` back, its response head received: pending until that response's body
    /// has ended. Let go when the pool keeps no connections or is full.
    fn checkin(&self, sender: SendRequest<ClientBody>) {
        if self.inner.max_idle == 0 || sender.is_closed() {
            return;
        }
        let mut state = self.inner.lock();
        if state.pending.len() >= MAX_POOLED_CONNECTIONS {
            // Full: first let go of the connections that have closed since (rare, O(n)).
            state.pending.retain(|pooled| !pooled.sender.is_closed());
            if state.pending.len() >= MAX_POOLED_CONNECTIONS {
                return;
            }
        }
        state.pending.push_back(Pooled {
            sender,
            since: Instant::now(),
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

/// Closes connections idle past `idle_timeout` and moves finished pending ones to the idle
/// stack, every `idle_timeout` (at least a second), until the pool is gone. However the task
/// ends (the pool dropped, or its runtime shut down), the pool's `sweeping` flag is cleared so
/// the next return starts a new one.
fn spawn_sweep(pool: Weak<Inner>, idle_timeout: Duration) {
    /// Clears `sweeping` when the task's future is dropped.
    struct Running(Weak<Inner>);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(pool) = self.0.upgrade() {
                pool.lock().sweeping = false;
            }
        }
    }
    let period = idle_timeout.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let running = Running(pool);
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(pool) = running.0.upgrade() else {
                return;
            };
            let now = Instant::now();
            let mut state = pool.lock();
            let pending = state.pending.len();
            state.promote(pending, pool.max_idle, now);
            state.idle.retain(|pooled| {
                !pooled.sender.is_closed()
                    && now.saturating_duration_since(pooled.since) < pool.idle_timeout
            });
        }
    });
}
