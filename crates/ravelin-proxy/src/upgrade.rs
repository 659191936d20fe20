//! HTTP/1.1 protocol upgrades (WebSocket) passed through to the upstream.
//!
//! An upgrade request is an HTTP/1.1 `GET` without a body whose `Connection` lists `upgrade`
//! and which has one `Upgrade` field ([`requested`]). The [ingress stage](crate::ingress) and
//! [`Forward`](crate::Forward) keep exactly `Connection: upgrade` and that `Upgrade` on it (every
//! other hop-by-hop field still goes). When the upstream answers `101 Switching Protocols` with
//! one of the protocols asked for, both connections are taken over from hyper and a relay task
//! copies bytes both ways through fixed buffers until either side closes, an I/O error, or
//! nothing moved either way for the upstream's
//! [`upgrade_idle_timeout`](crate::UpstreamBuilder::upgrade_idle_timeout).
//!
//! Upgraded connections leave the server's connection accounting once they are handed over
//! (hyper ends the HTTP connection there), so they have a bound of their own: each upstream's
//! [`max_upgraded_connections`](crate::UpstreamBuilder::max_upgraded_connections), a
//! semaphore taken before the upstream is contacted (503 past it).
//!
//! Metrics: `ravelin_proxy_upgraded_connections{upstream}` (gauge, relays open),
//! `ravelin_proxy_upgraded_ended_total{upstream, reason}` (`closed`, `idle_timeout`, `error`,
//! `handover_failed`), `ravelin_proxy_upgrades_refused_total{upstream}` (503 past the bound).
//!
//! Not covered: upgrades over HTTP/2 (RFC 8441 extended CONNECT; the ingress stage and
//! [`Forward`](crate::Forward) refuse `CONNECT`), `h2c` (RFC 9113 §3.1 removed it; an
//! `Upgrade: h2c` is removed as any hop-by-hop field), and upgrades to an upstream configured
//! with [`http2`](crate::UpstreamBuilder::http2), which has no `Upgrade`: such requests go as
//! plain requests, without `Upgrade`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use pin_project::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The buffer of each direction of a relay: 8 KiB, so a relay holds at most 16 KiB.
const RELAY_BUFFER: usize = 8 * 1024;

/// The `Upgrade` value of an upgrade request, or `None` when the request is not one this proxy
/// passes through: HTTP/1.1, `GET`, no body (no `Transfer-Encoding`, `Content-Length` absent or
/// 0), `Connection` listing `upgrade`, exactly one `Upgrade` line that is a valid list naming
/// neither `h2c` nor nothing.
pub(crate) fn requested(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Option<HeaderValue> {
    if version != Version::HTTP_11 || method != Method::GET {
        return None;
    }
    // `Upgrade` first: most requests have none, and then one lookup decides (issue 13).
    let mut values = headers.get_all(header::UPGRADE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0")
    {
        return None;
    }
    // Read only when there is an `Upgrade` (collecting the options allocates).
    if !ravelin_http::connection_options(headers).contains(&header::UPGRADE) {
        return None;
    }
    let mut any = false;
    for protocol in ravelin_http::split_list(value.as_bytes()) {
        let name = protocol.split(|&b| b == b'/').next().unwrap_or(protocol);
        if name.is_empty() || !name.iter().all(|&b| ravelin_http::is_tchar(b)) {
            return None;
        }
        if name.eq_ignore_ascii_case(b"h2c") {
            return None;
        }
        any = true;
    }
    any.then(|| value.clone())
}

/// Puts `Connection: upgrade` and `Upgrade: protocols` back after hop-by-hop removal.
pub(crate) fn keep(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocols);
}

/// Whether a `101` response's `Upgrade` is one of the protocols `asked` (compared as tokens,
/// ASCII case-insensitive, protocol version included when given).
pub(crate) fn accepted(asked: &HeaderValue, response: &HeaderMap) -> Option<HeaderValue> {
    let mut values = response.get_all(header::UPGRADE).iter();
    let chosen = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let chosen_bytes = ravelin_http::trim_ows(chosen.as_bytes());
    ravelin_http::split_list(asked.as_bytes())
        .any(|protocol| protocol.eq_ignore_ascii_case(chosen_bytes))
        .then(|| chosen.clone())
}

// === impl Upgrades ===

/// One upstream's upgraded connections: their bound, idle timeout and metrics.
pub(crate) struct Upgrades {
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
    open: metrics::Gauge,
    refused: metrics::Counter,
    /// By [`End`].
    ended: [metrics::Counter; 4],
}

impl std::fmt::Debug for Upgrades {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrades")
            .field("available", &self.permits.available_permits())
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Upgrades {
    pub(crate) fn new(upstream: &Arc<str>, max: usize, idle_timeout: Duration) -> Self {
        let ended = |reason: &'static str| metrics::counter!("ravelin_proxy_upgraded_ended_total", "upstream" => Arc::clone(upstream), "reason" => reason);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            idle_timeout,
            open: metrics::gauge!("ravelin_proxy_upgraded_connections", "upstream" => Arc::clone(upstream)),
            refused: metrics::counter!("ravelin_proxy_upgrades_refused_total", "upstream" => Arc::clone(upstream)),
            ended: [
                ended(End::Closed.as_str()),
                ended(End::IdleTimeout.as_str()),
                ended(End::Error.as_str()),
                ended(End::HandoverFailed.as_str()),
            ],
        }
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// A slot for one upgraded connection, or `None` (counted) past the bound.
    pub(crate) fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok();
        if permit.is_none() {
            self.refused.increment(1);
        }
        permit
    }

    fn ended(&self, end: End) {
        if let Some(counter) = self.ended.get(end as usize) {
            counter.increment(1);
        }
    }

    /// Spawns the relay between the client's and the upstream's connections once hyper hands
    /// both over. The permit is held until the relay ends.
    pub(crate) fn spawn_relay(
        self: &Arc<Self>,
        upstream: Arc<str>,
        client: OnUpgrade,
        origin: OnUpgrade,
        (permit, hold): (OwnedSemaphorePermit, Option<crate::server::ConnectionHold>),
    ) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit;
            // The client connection's server slots (connection and per-address limits): the
            // relay is that connection, past its HTTP life.
            let _hold = hold;
            // The client's side resolves once the 101 is written to it (or fails when its
            // connection goes); the upstream's is already there. A client that does not take
            // its 101 within the idle timeout is treated as idle.
            let handover = tokio::time::timeout(this.idle_timeout, async {
                tokio::try_join!(client, origin)
            });
            let (client, origin) = match handover.await {
                Ok(Ok(both)) => both,
                Ok(Err(error)) => {
                    this.ended(End::HandoverFailed);
                    tracing::debug!(upstream = &*upstream, %error, "upgraded connection not handed over");
                    return;
                }
                Err(_elapsed) => {
                    this.ended(End::HandoverFailed);
                    tracing::debug!(
                        upstream = &*upstream,
                        "upgraded connection not handed over within the idle timeout"
                    );
                    return;
                }
            };
            this.open.increment(1.0);
            let (end, error) = relay(client, origin, this.idle_timeout).await;
            this.open.decrement(1.0);
            this.ended(end);
            tracing::debug!(
                upstream = &*upstream,
                reason = end.as_str(),
                error = error.as_ref().map(tracing::field::display),
                "upgraded connection ended"
            );
        });
    }
}

/// Why a relay ended (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Both sides closed (each direction reached end of stream).
    Closed = 0,
    /// Nothing moved either way for the idle timeout.
    IdleTimeout = 1,
    /// A read or write failed (a reset).
    Error = 2,
    /// hyper could not hand over one of the connections (the client left before the 101, or
    /// did not take it within the idle timeout).
    HandoverFailed = 3,
}

impl End {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::IdleTimeout => "idle_timeout",
            End::Error => "error",
            End::HandoverFailed => "handover_failed",
        }
    }
}

/// Copies bytes both ways until both directions end, one fails, or nothing moves for `idle`.
/// Both connections are closed (dropped) when it returns.
async fn relay(client: Upgraded, origin: Upgraded, idle: Duration) -> (End, Option<io::Error>) {
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Watched::new(TokioIo::new(client), started, Arc::clone(&last));
    let mut origin = Watched::new(TokioIo::new(origin), started, Arc::clone(&last));
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut origin,
        RELAY_BUFFER,
        RELAY_BUFFER,
    );
    tokio::pin!(copy);
    loop {
        let quiet_since = started + Duration::from_nanos(last.load(Ordering::Relaxed));
        let deadline = quiet_since + idle;
        tokio::select! {
            result = &mut copy => {
                return match result {
                    Ok(_) => (End::Closed, None),
                    Err(error) => (End::Error, Some(error)),
                };
            }
            () = tokio::time::sleep_until(deadline) => {
                // Bytes moved while asleep move the deadline: go round again.
                let quiet_since = started + Duration::from_nanos(last.load(Ordering::Relaxed));
                if Instant::now() >= quiet_since + idle {
                    return (End::IdleTimeout, None);
                }
            }
        }
    }
}

fn nanos_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// An I/O object that records when bytes last moved through it (read or written).
#[pin_project]
struct Watched<T> {
    #[pin]
    io: T,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Watched<T> {
    fn new(io: T, started: Instant, last: Arc<AtomicU64>) -> Self {
        Self { io, started, last }
    }
}

impl<T> Watched<T> {
    fn touch(started: Instant, last: &AtomicU64) {
        last.fetch_max(nanos_since(started), Ordering::Relaxed);
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.io.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            Self::touch(*this.started, this.last);
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            Self::touch(*this.started, this.last);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn only_bodiless_http11_gets_with_connection_upgrade_are_upgrades() {
        let ws = head(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(
            requested(&Method::GET, Version::HTTP_11, &ws).unwrap(),
            "websocket"
        );
        assert!(requested(&Method::POST, Version::HTTP_11, &ws).is_none());
        assert!(requested(&Method::GET, Version::HTTP_10, &ws).is_none());
        assert!(requested(&Method::GET, Version::HTTP_2, &ws).is_none());
        let cases: [&[(&str, &str)]; 7] = [
            &[("upgrade", "websocket")],
            &[("connection", "upgrade")],
            &[("connection", "upgrade"), ("upgrade", "h2c")],
            &[("connection", "upgrade"), ("upgrade", "websocket, H2C")],
            &[
                ("connection", "upgrade"),
                ("upgrade", "a"),
                ("upgrade", "b"),
            ],
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("content-length", "3"),
            ],
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("transfer-encoding", "chunked"),
            ],
        ];
        for case in cases {
            assert!(
                requested(&Method::GET, Version::HTTP_11, &head(case)).is_none(),
                "{case:?}"
            );
        }
        let empty_body = head(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("content-length", "0"),
        ]);
        assert!(requested(&Method::GET, Version::HTTP_11, &empty_body).is_some());
    }

    #[test]
    fn the_switch_must_be_to_a_protocol_asked_for() {
        let asked = HeaderValue::from_static("websocket, foo/2");
        assert!(accepted(&asked, &head(&[("upgrade", "WebSocket")])).is_some());
        assert!(accepted(&asked, &head(&[("upgrade", "foo/2")])).is_some());
        assert!(accepted(&asked, &head(&[("upgrade", "foo/3")])).is_none());
        assert!(accepted(&asked, &head(&[])).is_none());
        assert!(
            accepted(
                &asked,
                &head(&[("upgrade", "websocket"), ("upgrade", "foo/2")])
            )
            .is_none()
        );
    }

    #[test]
    fn keep_puts_back_exactly_connection_upgrade() {
        let mut headers = head(&[("connection", "x-a, upgrade"), ("upgrade", "websocket")]);
        crate::headers::remove_hop_by_hop(&mut headers);
        keep(&mut headers, HeaderValue::from_static("websocket"));
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers.len(), 2);
    }
}
