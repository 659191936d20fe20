//! One request's exchange with its upstream: the upstream's circuit, the response timeout over
//! every attempt, and retries of failed connection attempts within the retry budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::fmt;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;

use crate::forward::ClientBody;
use crate::health::{Admission, Health, HealthConfig, SharedClock};
use crate::pool::{Http1Pool, PoolError};
use crate::retry::{Replay, RetryBudget, RetryConfig};
use crate::upstream_tls::UpstreamConnector;

/// The pooled client of one upstream (per worker): this crate's HTTP/1.1 pool, or hyper-util's
/// client for an HTTP/2 upstream (one multiplexed connection).
#[derive(Debug)]
pub(crate) enum UpstreamClient {
    /// HTTP/1.1 (`http://` or `https://`): requests carry an origin-form target.
    Http1(Http1Pool),
    /// HTTP/2: requests carry the absolute URI (its authority becomes `:authority`).
    Http2(Box<Client<UpstreamConnector, ClientBody>>),
}

/// Why the last attempt of an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// Through the HTTP/1.1 pool.
    Pool(PoolError),
    /// Through hyper-util's client (HTTP/2).
    Client(hyper_util::client::legacy::Error),
}

impl ExchangeError {
    /// Whether no connection could be made (nothing was sent: a retry is safe).
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            Self::Pool(error) => matches!(error, PoolError::Connect(_)),
            Self::Client(error) => error.is_connect(),
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pool(error) => error.fmt(f),
            Self::Client(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ExchangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Pool(error) => error.source(),
            Self::Client(error) => error.source(),
        }
    }
}

/// How an exchange ended.
pub(crate) enum Sent {
    /// The upstream answered (any status).
    Response(Response<Incoming>),
    /// The last attempt failed (connect, protocol or I/O error).
    Failed(ExchangeError),
    /// No response head before the response timeout.
    TimedOut,
    /// The upstream's circuit is open: it was not contacted.
    Refused {
        /// When it may be tried again.
        retry_after: Duration,
    },
}

/// The upstream's health and retry state, shared by its requests.
pub(crate) struct Resilience {
    health: Health,
    retry: RetryConfig,
    budget: RetryBudget,
    retries: metrics::Counter,
    budget_exhausted: metrics::Counter,
}

impl std::fmt::Debug for Resilience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resilience")
            .field("health", &self.health)
            .field("retry", &self.retry)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Whether a response says the upstream itself is unwell (Envoy's gateway failures).
fn is_gateway_failure(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

impl Resilience {
    pub(crate) fn new(
        name: &Arc<str>,
        health: HealthConfig,
        retry: RetryConfig,
        clock: SharedClock,
    ) -> Self {
        Self {
            budget: RetryBudget::new(&retry, Arc::clone(&clock)),
            health: Health::new(name, health, clock),
            retry,
            retries: metrics::counter!("ravelin_proxy_upstream_retries_total", "upstream" => Arc::clone(name)),
            budget_exhausted: metrics::counter!("ravelin_proxy_upstream_retry_budget_exhausted_total", "upstream" => Arc::clone(name)),
        }
    }

    /// The retries a request may get (0 when retries are off).
    pub(crate) fn max_retries(&self) -> u32 {
        self.retry.max_retries
    }

    /// Sends `request`, and again after a failed connection attempt while the retry rules
    /// allow, all within `timeout` from now.
    ///
    /// A request may go again when `retryable` (bodiless and idempotent): through the HTTP/1.1
    /// pool the request itself comes back when no connection could be made; through the
    /// HTTP/2 client, which takes the request either way, from `replay`, the copy of its head
    /// the caller made before sending (`None` through the pool: no copy per request).
    ///
    /// `client_body_failed` is the flag of the request's watched body: a failure caused by the
    /// client's body says nothing about the upstream, so it is not held against its health.
    pub(crate) async fn send(
        &self,
        client: &UpstreamClient,
        request: Request<ClientBody>,
        retryable: bool,
        replay: Option<Replay>,
        timeout: Duration,
        client_body_failed: &AtomicBool,
    ) -> Sent {
        let deadline = tokio::time::Instant::now() + timeout;
        self.budget.deposit();
        let mut request = Some(request);
        let mut retries: u32 = 0;
        let mut last_error = None;
        loop {
            let ticket = match self.health.admit() {
                Admission::Pass(ticket) => ticket,
                // Re-opened by this request's own failed attempt: report that failure.
                Admission::Reject { retry_after } => {
                    return match last_error {
                        Some(error) => Sent::Failed(error),
                        None => Sent::Refused { retry_after },
                    };
                }
            };
            let attempt = match (request.take(), &replay) {
                (Some(request), _) => request,
                (None, Some(replay)) => replay.request(empty()),
                // Only a request that came back (or has a copy) loops.
                (None, None) => {
                    drop(ticket);
                    return last_error.map_or(Sent::TimedOut, Sent::Failed);
                }
            };
            let error = match client {
                UpstreamClient::Http1(pool) => {
                    match tokio::time::timeout_at(deadline, pool.send(attempt)).await {
                        Ok(Ok(response)) => {
                            ticket.record(is_gateway_failure(response.status()));
                            return Sent::Response(response);
                        }
                        Ok(Err(unsent)) => {
                            // Back only when it was never sent.
                            request = unsent.request;
                            ExchangeError::Pool(unsent.error)
                        }
                        Err(_elapsed) => {
                            ticket.record(true);
                            return Sent::TimedOut;
                        }
                    }
                }
                UpstreamClient::Http2(client) => {
                    match tokio::time::timeout_at(deadline, client.request(attempt)).await {
                        Ok(Ok(response)) => {
                            ticket.record(is_gateway_failure(response.status()));
                            return Sent::Response(response);
                        }
                        Ok(Err(error)) => ExchangeError::Client(error),
                        Err(_elapsed) => {
                            ticket.record(true);
                            return Sent::TimedOut;
                        }
                    }
                }
            };
            if client_body_failed.load(Ordering::Acquire) {
                drop(ticket);
                return Sent::Failed(error);
            }
            ticket.record(true);
            // Nothing was sent when the connection failed: a bodiless idempotent request may
            // go again, if the budget and the deadline allow.
            if !(error.is_connect() && retryable && retries < self.retry.max_retries) {
                return Sent::Failed(error);
            }
            let wait = self.retry.backoff(retries.saturating_add(1));
            if tokio::time::Instant::now() + wait >= deadline {
                return Sent::Failed(error);
            }
            if !self.budget.try_withdraw() {
                self.budget_exhausted.increment(1);
                return Sent::Failed(error);
            }
            retries = retries.saturating_add(1);
            self.retries.increment(1);
            tracing::debug!(retry = retries, wait = ?wait, %error, "connection failed; retrying");
            last_error = Some(error);
            tokio::time::sleep(wait).await;
        }
    }
}

/// The body of a replayed request: none.
fn empty() -> ClientBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}
