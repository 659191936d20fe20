//! One request's exchange with its upstream: the upstream's circuit, the response timeout over
//! every attempt, and retries of failed connection attempts within the retry budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::dns::ConnectorResolver;
use crate::forward::ClientBody;
use crate::health::{Admission, Health, HealthConfig, SharedClock};
use crate::retry::{Replay, RetryBudget, RetryConfig};
use crate::upstream_tls::ConnectTimeout;

/// The pooled client of one upstream: TLS (for `https://` upstreams) over the plain connector
/// with the upstream's resolver, the whole setup under the upstream's connect timeout.
pub(crate) type UpstreamClient =
    Client<ConnectTimeout<HttpsConnector<HttpConnector<ConnectorResolver>>>, ClientBody>;

/// How an exchange ended.
pub(crate) enum Sent {
    /// The upstream answered (any status).
    Response(Response<Incoming>),
    /// The last attempt failed (connect, protocol or I/O error).
    Failed(hyper_util::client::legacy::Error),
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

    /// Sends `request`, and again from `replay` after a failed connection attempt while the
    /// retry rules allow, all within `timeout` from now.
    ///
    /// `client_body_failed` is the flag of the request's watched body: a failure caused by the
    /// client's body says nothing about the upstream, so it is not held against its health.
    pub(crate) async fn send(
        &self,
        client: &UpstreamClient,
        request: Request<ClientBody>,
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
                // Only a replayable request loops; without a copy there is nothing to send.
                (None, None) => {
                    drop(ticket);
                    return last_error.map_or(Sent::TimedOut, Sent::Failed);
                }
            };
            let error = match tokio::time::timeout_at(deadline, client.request(attempt)).await {
                Ok(Ok(response)) => {
                    ticket.record(is_gateway_failure(response.status()));
                    return Sent::Response(response);
                }
                Err(_elapsed) => {
                    ticket.record(true);
                    return Sent::TimedOut;
                }
                Ok(Err(error)) => error,
            };
            if client_body_failed.load(Ordering::Acquire) {
                drop(ticket);
                return Sent::Failed(error);
            }
            ticket.record(true);
            // Nothing was sent when the connection failed: a bodiless idempotent request may
            // go again, if the budget and the deadline allow.
            if !(error.is_connect() && replay.is_some() && retries < self.retry.max_retries) {
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
