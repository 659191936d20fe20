//! The ingress trust boundary of the assembled edge proxy, over real sockets: one request
//! identity (host and path) shared by the origin's `Host`, `X-Forwarded-Host` and the cache key;
//! headers only the edge (or a trusted proxy) may set; refused methods, hosts, paths and header
//! counts; silent sockets; stalled origin bodies; malformed client bodies.
//!
//! Each test starts the proxy through `ravelin-edge` (`ravelin_test_support::edge::Harness`) in front of a
//! recording origin defined here, and states what the code before the fix did. Requests a
//! client library would never send go over a raw `TcpStream`; HTTP/2 ones over hyper's
//! low-level client, so `:authority` and `Host` can disagree. No assertion is on timing: every
//! wait is bounded by [`BOUND`], so a hang is a failure.

// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ravelin_test_support::edge as support;
use ravelin_test_support::edge::{BOUND, GENEROUS_RATELIMIT, Harness, config, eventually, metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

// === a recording origin ===

/// One request head as the origin received it: every header line, duplicates included.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value of `name`, one per line received.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of `name`; fails the test when there are several lines.
    fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name}: {all:?} in {self:#?}");
        all.first().copied()
    }
}

type OriginBody = UnsyncBoxBody<Bytes, Infallible>;

/// A hyper 1 origin on `127.0.0.1:0` that records every request head and answers by path:
///
/// - `/stall`: `Content-Length: 1000`, `Cache-Control: max-age=60`; while [`Origin::stall`] is
///   on, only the first 8 bytes are sent and the body then never advances; otherwise all 1000;
/// - paths starting with `/x` or `/public`: `Cache-Control: max-age=60`, body
///   `host=<Host lines received> n=<request number>`;
/// - anything else: the same body with `Cache-Control: no-store`.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stall: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Origin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stall = Arc::new(AtomicBool::new(true));
        let (record, stalling) = (Arc::clone(&seen), Arc::clone(&stall));
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (record, stalling) = (Arc::clone(&record), Arc::clone(&stalling));
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (record, stalling) = (Arc::clone(&record), Arc::clone(&stalling));
                    async move { Ok::<_, Infallible>(answer(request, &record, &stalling).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            stall,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The request heads received for `path` (the origin-form target, query included).
    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.uri == path).collect()
    }

    fn last(&self) -> Seen {
        self.seen().pop().expect("the origin saw no request")
    }

    fn stall(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }
}

async fn answer(
    request: Request<Incoming>,
    record: &Mutex<Vec<Seen>>,
    stalling: &AtomicBool,
) -> Response<OriginBody> {
    let (parts, body) = request.into_parts();
    let n = {
        let mut seen = record.lock().unwrap();
        seen.push(Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect(),
        });
        seen.len()
    };
    // A request body that fails (the malformed chunk test) is simply dropped.
    let _ = body.collect().await;
    let path = parts.uri.path();
    if path == "/stall" {
        let response = Response::builder()
            .header("content-length", "1000")
            .header("cache-control", "max-age=60");
        let body: OriginBody = if stalling.load(Ordering::SeqCst) {
            let first =
                futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"partial ")))]);
            StreamBody::new(first.chain(futures_util::stream::pending())).boxed_unsync()
        } else {
            Full::new(Bytes::from(vec![b'a'; 1000])).boxed_unsync()
        };
        return response.body(body).unwrap();
    }
    let host = parts
        .headers
        .get_all("host")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let cacheable = path.starts_with("/x") || path.starts_with("/public");
    Response::builder()
        .header(
            "cache-control",
            if cacheable { "max-age=60" } else { "no-store" },
        )
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(format!("host={host} n={n}"))).boxed_unsync())
        .unwrap()
}

// === the proxy in front of it ===

/// The e2e config with one upstream `name` at `origin`; `upstream` lines go into its
/// `[[upstreams]]` table, `extra` sections before it.
fn edge_config(origin: &Origin, name: &str, upstream: &str, extra: &str) -> String {
    config(&format!(
        "{GENEROUS_RATELIMIT}\n{extra}\n[[upstreams]]\nname = \"{name}\"\nurl = \"{}\"\n{upstream}\n",
        origin.url()
    ))
}

// === raw HTTP/1.1 and HTTP/2 clients ===

/// What a raw exchange got back: the status line's code (`None` when the proxy closed without
/// answering) and the whole text.
#[derive(Debug)]
struct RawAnswer {
    status: Option<u16>,
    text: String,
}

/// Sends `request` on a fresh connection (from `source`, when given) and reads until the proxy
/// closes. Every request here says `Connection: close` or is refused, so the proxy closes.
async fn raw_from(source: Option<IpAddr>, addr: SocketAddr, request: &str) -> RawAnswer {
    let stream = match source {
        Some(ip) => {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
            socket.connect(addr).await.unwrap()
        }
        None => TcpStream::connect(addr).await.unwrap(),
    };
    exchange(stream, request).await
}

async fn raw(addr: SocketAddr, request: &str) -> RawAnswer {
    raw_from(None, addr, request).await
}

async fn exchange(mut stream: TcpStream, request: &str) -> RawAnswer {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A reset after the answer (the proxy closing with unread input) still leaves it read.
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .expect("the proxy neither answered nor closed");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawAnswer { status, text }
}

/// One HTTP/2 (prior knowledge) connection to the proxy, whatever `:authority` the requests
/// name: hyper's low-level client connects where it is told, not where the URI points.
async fn h2_connect(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> (StatusCode, String) {
    let response = tokio::time::timeout(BOUND, sender.send_request(request))
        .await
        .expect("the proxy answers within the bound")
        .unwrap();
    let status = response.status();
    let body = tokio::time::timeout(BOUND, response.into_body().collect())
        .await
        .expect("the body ends within the bound")
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A response whose body may fail: `Err` when the request itself failed, and the body's own
/// result inside. A head or body that does not arrive within [`BOUND`] fails the test.
type Fetched = Result<(StatusCode, HeaderMap, Result<Bytes, String>), String>;

async fn fetch(client: Client<HttpConnector, Full<Bytes>>, url: String) -> Fetched {
    let request = Request::get(url).body(Full::default()).unwrap();
    let response = tokio::time::timeout(BOUND, client.request(request))
        .await
        .expect("the response head arrives within the bound")
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(BOUND, body.collect())
        .await
        .expect("the body ends (completes or fails) within the bound")
        .map(|collected| collected.to_bytes())
        .map_err(|e| e.to_string());
    Ok((parts.status, parts.headers, body))
}

fn fresh_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn cache_status(headers: &HeaderMap) -> String {
    headers
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn get_with_host(harness: &Harness, path: &str, host: &str) -> support::Reply {
    harness
        .send(
            Request::get(harness.url(path))
                .header("host", host)
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap()
}

// === 1. the cache key, the origin's Host and X-Forwarded-Host agree ===

/// `GET http://victim.example/x` with `Host: evil.example`: the target wins (RFC 9112 §3.2.2)
/// everywhere.
///
/// Before: the cache keyed on the URI (victim.example) while the forwarder read `Host` first,
/// so the origin was asked for evil.example (`Host: evil.example` with preserve_host,
/// `X-Forwarded-Host: evil.example` always) and evil's page was stored under victim's key and
/// served to every later victim.example visitor: one request poisoned the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_decides_origin_host_forwarded_host_and_cache_key() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(&origin, "poison", "preserve_host = true", ""),
        None,
    )
    .await;
    let addr = harness.running().proxy_addr;

    let poisoning = raw(
        addr,
        "GET http://victim.example/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(poisoning.status, Some(200), "{}", poisoning.text);
    assert!(
        poisoning.text.ends_with("host=victim.example n=1"),
        "{}",
        poisoning.text
    );
    let seen = origin.last();
    assert_eq!(seen.all("host"), ["victim.example"], "{seen:#?}");
    assert_eq!(seen.one("x-forwarded-host"), Some("victim.example"));
    let forwarded = seen.one("forwarded").unwrap_or_default();
    assert!(forwarded.contains("host=victim.example"), "{forwarded}");
    assert!(!forwarded.contains("evil"), "{forwarded}");

    // An ordinary visitor of victim.example gets victim's page, from the cache.
    let victim = get_with_host(&harness, "/x", "victim.example").await;
    assert_eq!(victim.status, 200);
    assert_eq!(victim.text(), "host=victim.example n=1");
    assert!(
        cache_status(&victim.headers).contains("hit"),
        "{:?}",
        victim.headers
    );
    assert_eq!(origin.count(), 1);

    // evil.example/x is another key: its own origin fetch, never victim's entry ...
    let evil = get_with_host(&harness, "/x", "evil.example").await;
    assert_eq!(evil.text(), "host=evil.example n=2");
    assert_eq!(origin.last().all("host"), ["evil.example"]);
    assert_eq!(origin.last().one("x-forwarded-host"), Some("evil.example"));
    // ... and once stored, evil's entry is served to evil only, victim's to victim only.
    let evil = get_with_host(&harness, "/x", "evil.example").await;
    assert_eq!(evil.text(), "host=evil.example n=2");
    let victim = get_with_host(&harness, "/x", "victim.example").await;
    assert_eq!(victim.text(), "host=victim.example n=1");
    assert_eq!(origin.count(), 2);
    harness.stop().await;
}

// === 2. HTTP/2: :authority and Host disagree ===

/// An HTTP/2 request for `:authority` victim.example with `host: evil.example` is malformed
/// (RFC 9113 §8.3.1): 400, and the origin is never contacted.
///
/// Before: HTTP/2 requests were not checked; the forwarder took `Host` (evil.example) for
/// `X-Forwarded-Host` while the cache keyed on `:authority`, the same poisoning as over
/// HTTP/1.1, answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_authority_disagreeing_with_host_is_400_and_never_forwarded() {
    let origin = Origin::start().await;
    let harness = Harness::start(&edge_config(&origin, "h2-authority", "", ""), None).await;
    let mut h2 = h2_connect(harness.running().proxy_addr).await;

    let request = Request::get("http://victim.example/x")
        .header("host", "evil.example")
        .body(Full::default())
        .unwrap();
    let (status, body) = h2_send(&mut h2, request).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(origin.count(), 0, "{:#?}", origin.seen());

    // The same connection, with agreeing names, is served: the 400 is about the request.
    let agreeing = Request::get("http://victim.example/x")
        .header("host", "victim.example")
        .body(Full::default())
        .unwrap();
    let (status, body) = h2_send(&mut h2, agreeing).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(origin.count(), 1);
    assert_eq!(
        origin.last().one("x-forwarded-host"),
        Some("victim.example")
    );
    harness.stop().await;
}

// === 3. HTTP/1.1 Host: missing or duplicated ===

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or with two `Host` lines, is a 400.
///
/// Before: hyper's server accepts both; the edge forwarded them (the first `Host` of two
/// became `X-Forwarded-Host` while other hops may read the second) and answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_host_or_with_two_hosts_is_400() {
    let origin = Origin::start().await;
    let harness = Harness::start(&edge_config(&origin, "host-lines", "", ""), None).await;
    let addr = harness.running().proxy_addr;

    let missing = raw(addr, "GET /x/missing HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(missing.status, Some(400), "{}", missing.text);
    let twice = raw(
        addr,
        "GET /x/twice HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(twice.status, Some(400), "{}", twice.text);
    assert_eq!(origin.count(), 0, "{:#?}", origin.seen());

    // One Host is served.
    let once = raw(
        addr,
        "GET /x/once HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(once.status, Some(200), "{}", once.text);
    harness.stop().await;
}

// === 4. preserve_host: exactly one Host, the effective authority ===

/// With `preserve_host = true` the origin receives exactly one `Host` line: the request's
/// effective authority (lowercased, default port dropped; an absolute-form target's authority
/// over `Host`).
///
/// Before: preserve_host passed the client's `Host` line through as written (`Shop.Example:80`,
/// and `other.example` for `GET http://shop.example/…`), so the origin served another host
/// than the edge routed and cached by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_host_sends_exactly_one_host_the_effective_authority() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(&origin, "preserve", "preserve_host = true", ""),
        None,
    )
    .await;
    let addr = harness.running().proxy_addr;

    let spelled = raw(
        addr,
        "GET /public/p4a HTTP/1.1\r\nHost: Shop.Example:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(spelled.status, Some(200), "{}", spelled.text);
    let seen = origin.seen_at("/public/p4a");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("host"), ["shop.example"], "{seen:#?}");

    let absolute = raw(
        addr,
        "GET http://shop.example/public/p4b HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(absolute.status, Some(200), "{}", absolute.text);
    let seen = origin.seen_at("/public/p4b");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("host"), ["shop.example"], "{seen:#?}");
    assert_eq!(seen[0].one("x-forwarded-host"), Some("shop.example"));

    // An ordinary client's Host (the proxy's own address) goes through as its one Host line.
    let reply = harness.get("/public/p4c").await;
    assert_eq!(reply.status, 200);
    let seen = origin.seen_at("/public/p4c");
    assert_eq!(
        seen[0].all("host"),
        [addr.to_string().as_str()],
        "{seen:#?}"
    );
    harness.stop().await;
}

// === 5. headers a client may not send ===

/// Every header a client might forge, each value marked so that a copy reaching the origin is
/// recognisable: `spoofed` in the text, or the address 203.0.113.66.
const SPOOFED: &[(&str, &str)] = &[
    ("forwarded", "for=203.0.113.66;host=spoofed.example"),
    ("x-forwarded-for", "203.0.113.66"),
    ("x-forwarded-host", "spoofed.example"),
    ("x-forwarded-proto", "spoofed"),
    ("x-forwarded-port", "6666"),
    ("x-forwarded-prefix", "/spoofed"),
    ("x-real-ip", "203.0.113.66"),
    ("x-request-id", "spoofed-id"),
    ("x-bot-score", "spoofed"),
    ("x-bot-score-reasons", "spoofed"),
    ("x-bot-verified", "spoofed"),
    ("x-ravelin-skipped", "spoofed"),
];

fn spoofed_request(path: &str, extra: &[(&str, &str)]) -> String {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: ravelin-e2e/1.0\r\n");
    for (name, value) in SPOOFED.iter().chain(extra) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    request
}

/// No header the origin received carries a client-chosen value.
fn assert_nothing_spoofed(seen: &Seen) {
    for (name, value) in &seen.headers {
        assert!(
            !value.contains("spoofed") && !value.contains("203.0.113.66") && value != "6666",
            "{name}: {value} reached the origin: {seen:#?}"
        );
    }
    for name in [
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-bot-score-reasons",
        "x-bot-verified",
        "x-ravelin-skipped",
    ] {
        assert_eq!(seen.one(name), None, "{name}: {seen:#?}");
    }
    // The edge's own values: its request id, and one Forwarded element for the real peer.
    let id = seen
        .one("x-request-id")
        .expect("the edge sets a request id");
    assert!(!id.is_empty());
    assert_eq!(
        seen.one("forwarded"),
        Some("for=127.0.0.1;proto=http;host=shop.example")
    );
    assert_eq!(seen.one("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.one("x-forwarded-host"), Some("shop.example"));
    assert_eq!(seen.one("x-forwarded-proto"), Some("http"));
}

/// With bot scoring off, a client's `x-bot-score` — under the default name and under the
/// configured `score_header` — and every forwarding header, its request id and the other owned
/// headers never reach the origin.
///
/// Before: only the bot module stripped score headers, so with `[botscore] enabled = false`
/// the client's `x-bot-score: spoofed` reached the origin as if the edge had scored it; and
/// `Forwarded`, `X-Real-IP`, `X-Forwarded-Prefix`/`-Port` and `x-request-id` from any client
/// were passed on (the edge appended to the forged `Forwarded` list and kept the forged id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn spoofed_headers_never_reach_the_origin_with_bot_scoring_off() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(
            &origin,
            "spoof-off",
            "",
            "[modules.botscore]\nenabled = false\n[botscore]\nscore_header = \"x-edge-score\"\n",
        ),
        None,
    )
    .await;
    let answer = raw(
        harness.running().proxy_addr,
        &spoofed_request("/spoof/off", &[("x-edge-score", "spoofed")]),
    )
    .await;
    assert_eq!(answer.status, Some(200), "{}", answer.text);
    let seen = origin.last();
    assert_nothing_spoofed(&seen);
    assert_eq!(seen.one("x-bot-score"), None, "scoring is off: {seen:#?}");
    assert_eq!(seen.one("x-edge-score"), None, "scoring is off: {seen:#?}");
    harness.stop().await;
}

/// With `score_header` renamed, neither the configured name nor the default `x-bot-score`
/// carries a client's value; the configured one carries the edge's score.
///
/// Before: the bot module stripped only the header it was configured to write, so after a
/// rename the client's `x-bot-score: spoofed` reached origins still reading the old name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_headers_never_reach_the_origin_with_a_renamed_score_header() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(
            &origin,
            "spoof-renamed",
            "",
            "[botscore]\nscore_header = \"x-edge-score\"\n",
        ),
        None,
    )
    .await;
    let answer = raw(
        harness.running().proxy_addr,
        &spoofed_request("/spoof/renamed", &[("x-edge-score", "spoofed")]),
    )
    .await;
    assert_eq!(answer.status, Some(200), "{}", answer.text);
    let seen = origin.last();
    assert_nothing_spoofed(&seen);
    assert_eq!(seen.one("x-bot-score"), None, "{seen:#?}");
    let score: u32 = seen
        .one("x-edge-score")
        .expect("the edge scores under the configured name")
        .parse()
        .unwrap();
    assert!((1..=99).contains(&score), "{score}");
    harness.stop().await;
}

/// From a trusted proxy (`[ingress] trusted_proxies = ["127.0.0.1/32"]`) `Forwarded`,
/// `X-Forwarded-For` and `x-request-id` are kept and the edge appends its element; the owned
/// headers are still removed. The same headers from 127.0.0.3, an untrusted peer of the same
/// proxy, are removed.
///
/// Before: there was no notion of a trusted peer: every client's forwarding headers and
/// request id were kept, so the 127.0.0.3 half of this test saw its forged values at the
/// origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn forwarding_headers_are_kept_from_a_trusted_proxy_only() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(
            &origin,
            "trusted",
            "",
            "[ingress]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        ),
        None,
    )
    .await;
    let addr = harness.running().proxy_addr;
    let request = "GET /trust/lb HTTP/1.1\r\nHost: shop.example\r\n\
                   Forwarded: for=192.0.2.1\r\nX-Forwarded-For: 192.0.2.1\r\n\
                   x-request-id: lb-chosen-id\r\nx-bot-score: spoofed\r\nConnection: close\r\n\r\n";

    let trusted = raw(addr, request).await;
    assert_eq!(trusted.status, Some(200), "{}", trusted.text);
    let seen = origin.last();
    assert_eq!(
        seen.one("forwarded"),
        Some("for=192.0.2.1, for=127.0.0.1;proto=http;host=shop.example"),
        "{seen:#?}"
    );
    assert_eq!(seen.one("x-forwarded-for"), Some("192.0.2.1, 127.0.0.1"));
    assert_eq!(seen.one("x-request-id"), Some("lb-chosen-id"));
    assert_ne!(
        seen.one("x-bot-score"),
        Some("spoofed"),
        "owned, even from a proxy"
    );

    let untrusted = raw_from(Some(Ipv4Addr::new(127, 0, 0, 3).into()), addr, request).await;
    assert_eq!(untrusted.status, Some(200), "{}", untrusted.text);
    let seen = origin.last();
    assert_eq!(
        seen.one("forwarded"),
        Some("for=127.0.0.3;proto=http;host=shop.example"),
        "{seen:#?}"
    );
    assert_eq!(seen.one("x-forwarded-for"), Some("127.0.0.3"));
    let id = seen.one("x-request-id").expect("the edge sets its own id");
    assert_ne!(id, "lb-chosen-id");
    assert_ne!(seen.one("x-bot-score"), Some("spoofed"));
    harness.stop().await;
}

/// The headers a proxy in front speaks for the modules — the rate limiter's own client-IP
/// header, the bot scorer's `fingerprint_header` — are that proxy's: kept from 127.0.0.1 (a
/// trusted proxy), removed from 127.0.0.3.
///
/// Before: only the fixed forwarding headers were removed; a client's `True-Client-IP` and
/// forged JA4 header reached the origin (which, behind such a proxy, believes them), and the
/// bot scorer took the forged JA4 as the terminator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_a_proxy_speaks_for_the_modules_are_kept_from_trusted_proxies_only() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(
            &origin,
            "trusted",
            "",
            "[ratelimit.client_ip]\nheader = \"True-Client-IP\"\n\
             [ingress]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
             [botscore]\nfingerprint_header = \"x-front-ja4\"\n",
        ),
        None,
    )
    .await;
    let addr = harness.running().proxy_addr;
    let request = "GET /trust/front HTTP/1.1\r\nHost: shop.example\r\n\
                   True-Client-IP: 192.0.2.1\r\n\
                   x-front-ja4: t13d1516h2_8daaf6152771_02713d6af862\r\nConnection: close\r\n\r\n";

    let trusted = raw(addr, request).await;
    assert_eq!(trusted.status, Some(200), "{}", trusted.text);
    let seen = origin.last();
    assert_eq!(seen.one("true-client-ip"), Some("192.0.2.1"), "{seen:#?}");
    assert_eq!(
        seen.one("x-front-ja4"),
        Some("t13d1516h2_8daaf6152771_02713d6af862")
    );

    let untrusted = raw_from(Some(Ipv4Addr::new(127, 0, 0, 3).into()), addr, request).await;
    assert_eq!(untrusted.status, Some(200), "{}", untrusted.text);
    let seen = origin.last();
    assert_eq!(seen.one("true-client-ip"), None, "{seen:#?}");
    assert_eq!(seen.one("x-front-ja4"), None);
    harness.stop().await;
}

/// `[ingress] trusted_proxies` takes effect with the reload that changes it, in both
/// directions: trusting 127.0.0.1 keeps its `Forwarded` at once, and un-trusting it strips the
/// header at once.
///
/// Before (and now, see the file docs): each reload installed the previous
/// document's ingress settings, so a proxy added to the list was trusted only from the next
/// reload on, and one removed from it (a compromised load balancer) stayed trusted until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn trusted_proxies_follow_each_reload_at_once() {
    let origin = Origin::start().await;
    let untrusting = edge_config(&origin, "trust-reload", "", "");
    let trusting = edge_config(
        &origin,
        "trust-reload",
        "",
        "[ingress]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    let harness = Harness::start(&untrusting, None).await;
    let addr = harness.running().proxy_addr;
    let forwarded = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: shop.example\r\nForwarded: for=192.0.2.1\r\nConnection: close\r\n\r\n"
        )
    };
    let untrusted_element = "for=127.0.0.1;proto=http;host=shop.example";
    let kept = "for=192.0.2.1, for=127.0.0.1;proto=http;host=shop.example";

    assert_eq!(raw(addr, &forwarded("/reload/0")).await.status, Some(200));
    assert_eq!(origin.last().one("forwarded"), Some(untrusted_element));

    for (generation, (text, expected)) in [(&trusting, kept), (&untrusting, untrusted_element)]
        .into_iter()
        .enumerate()
    {
        support::write_atomically(&harness.config_path, text.as_bytes());
        let reply = harness.admin_post("/config/reload").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let path = format!("/reload/{}", generation + 1);
        assert_eq!(raw(addr, &forwarded(&path)).await.status, Some(200));
        assert_eq!(
            origin.last().one("forwarded"),
            Some(expected),
            "after reload {}",
            generation + 1
        );
    }
    harness.stop().await;
}

// === 6. Connection cannot strip what the edge adds ===

/// `Connection: host, x-request-id` from the client: the origin still gets the client's host
/// (preserve_host) and the edge's request id, the same one the client is told.
///
/// Before: hop-by-hop removal honoured every token, so the edge removed `Host` (the origin got
/// the upstream's own address instead of shop.example) and the `x-request-id` it had just set
/// (the origin got none, breaking log correlation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_strip_host_or_the_request_id() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(&origin, "connection", "preserve_host = true", ""),
        None,
    )
    .await;
    let answer = raw(
        harness.running().proxy_addr,
        "GET /conn HTTP/1.1\r\nHost: shop.example\r\nx-request-id: spoofed-id\r\n\
         Connection: host, x-request-id, close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(200), "{}", answer.text);
    let seen = origin.last();
    assert_eq!(seen.all("host"), ["shop.example"], "{seen:#?}");
    assert_eq!(seen.one("x-forwarded-host"), Some("shop.example"));
    let id = seen
        .one("x-request-id")
        .expect("the edge's request id reaches the origin");
    assert_ne!(id, "spoofed-id");
    let echoed = answer
        .text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .map(str::trim);
    assert_eq!(echoed, Some(id), "{}", answer.text);
    harness.stop().await;
}

// === 7. CONNECT and TRACE ===

/// `CONNECT` and `TRACE` are answered 501 and never reach the origin.
///
/// Before: both were forwarded: the origin got a CONNECT it cannot make sense of, and a
/// `TRACE` carrying the client's cookie, which a TRACE-reflecting origin echoes to any script
/// (cross-site tracing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_trace_are_refused_before_the_origin() {
    let origin = Origin::start().await;
    let harness = Harness::start(&edge_config(&origin, "methods", "", ""), None).await;
    let addr = harness.running().proxy_addr;

    let connect = raw(
        addr,
        "CONNECT victim.example:443 HTTP/1.1\r\nHost: victim.example:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(connect.status, Some(501), "{}", connect.text);
    let trace = raw(
        addr,
        "TRACE /x/trace HTTP/1.1\r\nHost: shop.example\r\nCookie: session=secret\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(trace.status, Some(501), "{}", trace.text);
    assert!(!trace.text.contains("secret"), "{}", trace.text);
    assert_eq!(origin.count(), 0, "{:#?}", origin.seen());
    harness.stop().await;
}

// === 8. HTTP/2 header count ===

/// `[server] max_headers` holds for HTTP/2 too: more header fields is 431, never forwarded.
///
/// Before: the limit was hyper's HTTP/1.1 parser setting only; an HTTP/2 request with any
/// number of fields (within the byte limit) was forwarded and answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn h2_header_count_over_max_headers_is_431() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(&origin, "h2-headers", "", "[server]\nmax_headers = 20\n"),
        None,
    )
    .await;
    let mut h2 = h2_connect(harness.running().proxy_addr).await;
    let request = |fields: usize| {
        let mut builder = Request::get("http://shop.example/x/h2-headers");
        for i in 0..fields {
            builder = builder.header(format!("x-extra-{i}"), "v");
        }
        builder.body(Full::default()).unwrap()
    };
    let (status, body) = h2_send(&mut h2, request(30)).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(origin.count(), 0, "{:#?}", origin.seen());

    let (status, body) = h2_send(&mut h2, request(5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(origin.count(), 1);
    harness.stop().await;
}

/// An idle HTTP/2 connection is closed (GOAWAY, then the connection ends) after
/// `[server] idle_timeout`.
///
/// Before: HTTP/2 had no idle timeout at all: a connection that had sent one request (or
/// none) held its slot for as long as the client kept it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_is_closed() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(
            &origin,
            "h2-idle",
            "",
            "[server]\nidle_timeout = \"300ms\"\n",
        ),
        None,
    )
    .await;
    let stream = TcpStream::connect(harness.running().proxy_addr)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get("http://shop.example/x/h2-idle")
        .body(Full::default())
        .unwrap();
    let (status, body) = h2_send(&mut sender, request).await;
    assert_eq!(status, 200, "{body}");
    // Nothing more is sent: the proxy ends the connection by itself.
    let ended = tokio::time::timeout(BOUND, connection)
        .await
        .expect("the proxy closes an idle HTTP/2 connection");
    assert!(ended.is_ok(), "{ended:?}");
    harness.stop().await;
}

// === 9. silent sockets from many addresses ===

/// 20 silent sockets from 127.0.0.2..=127.0.0.6 (4 each: every per-IP budget and the whole
/// `max_connections` taken): the admin API still answers, the silent sockets are closed after
/// `request_head_timeout`, and a real client from 127.0.0.1 is then served.
///
/// Before: nothing bounded the time from accept to the first byte (hyper's header timeout
/// starts at the first byte), so 20 sockets that never sent a byte held every slot forever
/// and the real client waited in the backlog until the test's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_many_addresses_are_closed_and_operators_get_in() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(
            &origin,
            "silent",
            "",
            "[server]\nmax_connections = 20\nmax_connections_per_ip = 4\nrequest_head_timeout = \"300ms\"\n",
        ),
        None,
    )
    .await;
    let addr = harness.running().proxy_addr;
    let mut silent = Vec::new();
    for host in 2..=6u8 {
        for _ in 0..4 {
            let socket = TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::new(Ipv4Addr::new(127, 0, 0, host).into(), 0))
                .unwrap();
            silent.push(socket.connect(addr).await.unwrap());
        }
    }

    // The admin API is its own listener: the data plane's slots do not gate it. (The silent
    // sockets are usually still held at this point; the assertion does not depend on it.)
    let health = harness
        .send(
            Request::get(harness.admin_url("/healthz"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(health.status, 200, "{}", health.text());

    // Queued behind the silent sockets until their head deadline frees the slots.
    let reply = harness
        .send(
            Request::get(harness.url("/public/after-silence"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .expect("served within the bound once the silent sockets are closed");
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Every silent socket was closed by the proxy (EOF or reset), none left hanging.
    for mut socket in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(BOUND, socket.read(&mut byte))
            .await
            .expect("the proxy closes a silent socket");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    harness.stop().await;
}

// === 10. a stalled upstream body ===

/// The origin sends its head and 8 of 1000 bytes, then nothing: with `body_idle_timeout =
/// "300ms"` the client's body fails within the bound, a second client coalesced on the same
/// cacheable URL is released too, and nothing is cached (the next request goes to the origin,
/// which now answers in full, and that answer is cached).
///
/// Before: a response body had no idle limit: the client hung with its 8 bytes for as long as
/// the origin kept the socket open, and every follower coalesced on the URL hung behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upstream_body_releases_client_and_follower_and_is_not_cached() {
    let origin = Origin::start().await;
    let harness = Harness::start(
        &edge_config(&origin, "stall", "body_idle_timeout = \"300ms\"", ""),
        None,
    )
    .await;
    let url = harness.url("/stall");
    origin.stall(true);

    let first = tokio::spawn(fetch(fresh_client(), url.clone()));
    eventually("the origin is asked for /stall", || async {
        origin.count() >= 1
    })
    .await;
    let follower = tokio::spawn(fetch(fresh_client(), url.clone()));

    let (status, _, body) = first.await.unwrap().expect("the head was sent");
    assert_eq!(status, 200);
    let error = body.expect_err("a stalled body ends with an error, not a hang");
    assert!(!error.is_empty());
    // Released: an error at any stage, or a complete answer (never a hang, which `fetch`
    // turns into a failure).
    match follower.await.unwrap() {
        Ok((status, _, Ok(body))) => {
            assert_eq!(status, 200);
            assert_eq!(body.len(), 1000, "a complete body or an error");
        }
        Ok((_, _, Err(_))) | Err(_) => {}
    }
    let metrics = harness.metrics().await;
    assert!(
        metric(
            &metrics,
            "ravelin_proxy_upstream_errors_total",
            &["upstream=\"stall\"", "kind=\"body_idle_timeout\""]
        ) >= 1.0,
        "{metrics}"
    );

    // Nothing was stored: the next request goes to the origin.
    origin.stall(false);
    let before = origin.count();
    let (status, headers, body) = fetch(fresh_client(), url.clone()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.unwrap().len(), 1000);
    assert_eq!(origin.count(), before + 1, "a miss goes to the origin");
    assert!(!cache_status(&headers).contains("hit"), "{headers:?}");
    // The URL is cacheable: a complete answer is stored and served.
    let (_, headers, body) = fetch(fresh_client(), url).await.unwrap();
    assert_eq!(body.unwrap().len(), 1000);
    assert!(cache_status(&headers).contains("hit"), "{headers:?}");
    assert_eq!(origin.count(), before + 1);
    harness.stop().await;
}

// === 11. a malformed chunked request body ===

/// A client's chunked body with a garbage chunk size is the client's fault: the proxy answers
/// 400 (or closes), counts it in `ravelin_proxy_client_errors_total{kind="request_body"}`, and
/// `ravelin_proxy_upstream_errors_total` for the upstream stays 0.
///
/// Before: the failed upload failed the upstream exchange, which was answered 502 and counted
/// as an upstream `protocol` error: any client could page the origin's on-call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_request_body_is_a_client_error_not_an_upstream_error() {
    let origin = Origin::start().await;
    let harness = Harness::start(&edge_config(&origin, "chunked", "", ""), None).await;
    let answer = raw(
        harness.running().proxy_addr,
        "POST /upload HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\nZZ-not-a-size\r\n",
    )
    .await;
    assert!(
        matches!(answer.status, Some(400) | None),
        "400 or closed: {}",
        answer.text
    );
    if answer.status.is_none() {
        assert!(answer.text.is_empty(), "{}", answer.text);
    }
    let client_errors = |text: &str| {
        metric(
            text,
            "ravelin_proxy_client_errors_total",
            &["upstream=\"chunked\"", "kind=\"request_body\""],
        )
    };
    eventually("the client error is counted", || async {
        client_errors(&harness.metrics().await) == 1.0
    })
    .await;
    let metrics = harness.metrics().await;
    assert_eq!(client_errors(&metrics), 1.0, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "ravelin_proxy_upstream_errors_total",
            &["upstream=\"chunked\""]
        ),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "ravelin_proxy_upstream_responses_total",
            &["upstream=\"chunked\"", "class=\"5xx\""]
        ),
        0.0,
        "{metrics}"
    );
    harness.stop().await;
}

// === 12. path spellings ===

/// Spellings origins read differently (`%2f`, `%5c`, `..;`) are refused with 400 and never
/// reach the origin; dot segments and unreserved escapes are resolved, and the origin gets the
/// canonical path the policies matched.
///
/// Before: paths went to the origin as received: `/login%2f`, `/a%5cb` and `/x/..;/login`
/// (which Tomcat reads as `/login`) were served 200, and `/x/../%6cogin` reached the origin
/// verbatim while rate-limit and bot policies had matched it as `/login`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_path_spellings_are_refused_and_the_canonical_path_is_forwarded() {
    let origin = Origin::start().await;
    let harness = Harness::start(&edge_config(&origin, "paths", "", ""), None).await;
    let addr = harness.running().proxy_addr;
    for path in ["/login%2f", "/a%5cb", "/x/..;/login"] {
        let answer = raw(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(answer.status, Some(400), "{path}: {}", answer.text);
    }
    assert_eq!(origin.count(), 0, "{:#?}", origin.seen());

    let answer = raw(
        addr,
        "GET /x/../%6cogin HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(200), "{}", answer.text);
    let seen = origin.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].uri, "/login");
    harness.stop().await;
}
