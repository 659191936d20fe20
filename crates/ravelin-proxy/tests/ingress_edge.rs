//! The ingress stage over real loopback sockets: client → Server → IngressLayer → Forward →
//! recording origin. Requests a normal client library would never send (absolute-form targets
//! with another Host, duplicate or missing Host, odd path spellings) go over a raw TcpStream.
//!
//! No assertion is on timing; every wait has a generous bound ([`BOUND`]).
// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use ravelin_proxy::{Forward, IngressConfig, Route, Routes, Server, ServerConfig, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use support::{BOUND, Proxy, Serving, TestBody, client, empty, h2_client};

// === a recording origin ===

/// What the origin received.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An origin that records every request head and answers `200 ok`.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Serves until dropped.
    _server: Serving,
}

impl Origin {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let service = tower::service_fn(move |request: Request<Incoming>| {
            let record = Arc::clone(&record);
            async move {
                let (parts, body) = request.into_parts();
                let _ = body.collect().await;
                record.lock().unwrap().push(Seen {
                    uri: parts.uri.to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                        .collect(),
                });
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
        let server = Serving::start(service, ServerConfig::default(), None).await;
        Self {
            addr: server.addr,
            seen,
            _server: server,
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

    fn last(&self) -> Seen {
        self.seen().pop().expect("the origin saw no request")
    }
}

// === the proxy under test ===

impl Proxy {
    fn refused(&self, reason: &str) -> f64 {
        self.metric(&format!(
            "ravelin_proxy_ingress_refused_total{{reason=\"{reason}\"}}"
        ))
    }

    async fn stop(self) {
        self.into_server().stop().await;
    }
}

fn upstream(origin: &Origin) -> Upstream {
    Upstream::builder("origin", origin.url()).build().unwrap()
}

fn preserving(origin: &Origin) -> Upstream {
    Upstream::builder("origin", origin.url())
        .preserve_host(true)
        .build()
        .unwrap()
}

/// Sends `head` (a complete request, `\r\n` line ends) on a fresh connection and reads the
/// whole answer (the proxy closes after it: every head here says `connection: close` or is
/// HTTP/1.0). Returns the status (of an HTTP/1.1 or HTTP/1.0 answer) and the raw text.
async fn raw(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A reset after the answer (the server closing with unread input) still leaves the
    // answer read.
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .expect("the proxy neither answered nor closed");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 answer: {text:?}"));
    (status, text)
}

async fn send(client: &Client<HttpConnector, TestBody>, request: Request<TestBody>) -> StatusCode {
    let response = tokio::time::timeout(BOUND, client.request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let _ = tokio::time::timeout(BOUND, response.into_body().collect())
        .await
        .unwrap();
    status
}

// === host ===

/// `GET http://victim.example/x` with `Host: evil.example`: the target's authority wins
/// (RFC 9112 §3.2.2) for routing, X-Forwarded-Host, Forwarded and — with preserve_host — the
/// one Host line the origin sees.
#[tokio::test]
async fn absolute_form_target_wins_over_a_different_host() {
    let victim = Origin::start().await;
    let evil = Origin::start().await;
    let proxy = Proxy::start(IngressConfig::new(), || {
        Routes::new([
            Route::new("victim", "/", preserving(&victim).into()).host("victim.example"),
            Route::new("evil", "/", preserving(&evil).into()).host("evil.example"),
        ])
    })
    .await;
    let (status, _) = raw(
        proxy.addr,
        "GET http://victim.example/x HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(evil.count(), 0, "routed by the Host line");
    let seen = victim.last();
    assert_eq!(seen.header("host"), ["victim.example"]);
    assert_eq!(seen.header("x-forwarded-host"), ["victim.example"]);
    assert_eq!(
        seen.header("forwarded"),
        ["for=127.0.0.1;proto=http;host=victim.example"]
    );
    assert_eq!(seen.uri, "/x");
    proxy.stop().await;
}

/// Without preserve_host the origin gets its own authority, and the client's host only in
/// X-Forwarded-Host — the target's, not the Host line's.
#[tokio::test]
async fn x_forwarded_host_is_the_target_host() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(IngressConfig::new(), || upstream(&origin)).await;
    let (status, _) = raw(
        proxy.addr,
        "GET http://Victim.Example.:80/x HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let seen = origin.last();
    assert_eq!(seen.header("host"), [origin.addr.to_string()]);
    assert_eq!(seen.header("x-forwarded-host"), ["victim.example"]);
    proxy.stop().await;
}

#[tokio::test]
async fn missing_or_duplicate_host_on_http11_is_400() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(IngressConfig::new(), || preserving(&origin)).await;
    let (status, text) = raw(proxy.addr, "GET /x HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("no Host"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{text}"
    );
    let (status, text) = raw(
        proxy.addr,
        "GET /x HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("more than one Host"), "{text}");
    assert_eq!(origin.count(), 0);
    assert_eq!(proxy.refused("missing_host"), 1.0);
    assert_eq!(proxy.refused("duplicate_host"), 1.0);
    // HTTP/1.0 may omit Host.
    let (status, _) = raw(proxy.addr, "GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

/// With preserve_host exactly one Host line goes upstream: the identity's authority.
#[tokio::test]
async fn preserve_host_sends_exactly_one_host() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(IngressConfig::new(), || preserving(&origin)).await;
    let (status, _) = raw(
        proxy.addr,
        "GET /x HTTP/1.1\r\nhost: Shop.Example:80\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(origin.last().header("host"), ["shop.example"]);
    proxy.stop().await;

    // Forward alone (no ingress) also sends one Host line, even for a duplicated one.
    let bare = Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default())
        .await
        .unwrap();
    let addr = bare.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(bare.serve(Forward::new(preserving(&origin)), async {
        let _ = stopped.await;
    }));
    let (status, _) = raw(
        addr,
        "GET http://victim.example/y HTTP/1.1\r\nhost: evil.example\r\nhost: other.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let seen = origin.last();
    assert_eq!(seen.header("host"), ["victim.example"]);
    assert_eq!(seen.header("x-forwarded-host"), ["victim.example"]);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn h2_authority_disagreeing_with_host_is_400() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(IngressConfig::new(), || upstream(&origin)).await;
    let client = h2_client();
    let mismatch = Request::get(proxy.url("/x"))
        .header("host", "evil.example")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client, mismatch).await, StatusCode::BAD_REQUEST);
    assert_eq!(proxy.refused("authority_mismatch"), 1.0);
    assert_eq!(origin.count(), 0);
    // The same authority in both is fine.
    let agreeing = Request::get(proxy.url("/x"))
        .header("host", proxy.addr.to_string())
        .body(empty())
        .unwrap();
    assert_eq!(send(&client, agreeing).await, StatusCode::OK);
    assert_eq!(
        origin.last().header("x-forwarded-host"),
        [proxy.addr.to_string()]
    );
    proxy.stop().await;
}

// === paths ===

/// A non-ASCII path has one canonical spelling, percent-encoded in uppercase hex: the raw
/// UTF-8 bytes (which HTTP/1.1 parsers accept) and either case of escapes route alike and are
/// forwarded alike, so a route or policy written one way cannot be walked around the other.
#[tokio::test]
async fn raw_and_encoded_non_ascii_paths_route_and_forward_alike() {
    let login = Origin::start().await;
    let other = Origin::start().await;
    let proxy = Proxy::start(IngressConfig::new(), || {
        Routes::new([
            Route::new("other", "/", upstream(&other).into()),
            Route::new("login", "/登录", upstream(&login).into()),
        ])
    })
    .await;
    for path in ["/登录/x", "/%E7%99%BB%E5%BD%95/x", "/%e7%99%bb%e5%bd%95/x"] {
        let before = login.count();
        let (status, text) = raw(
            proxy.addr,
            &format!("GET {path}?q=1 HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(login.count(), before + 1, "{path} did not reach its route");
        assert_eq!(login.last().uri, "/%E7%99%BB%E5%BD%95/x?q=1", "{path}");
    }
    assert_eq!(other.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn every_spelling_of_login_routes_to_login() {
    let login = Origin::start().await;
    let other = Origin::start().await;
    let proxy = Proxy::start(IngressConfig::new(), || {
        Routes::new([
            Route::new("other", "/", upstream(&other).into()),
            Route::new("login", "/login", upstream(&login).into()),
        ])
    })
    .await;
    for (path, forwarded) in [
        ("/login", "/login"),
        ("/LOGIN", "/LOGIN"),
        ("//login", "/login"),
        ("/./login", "/login"),
        ("/x/../login", "/login"),
        ("/%6cogin", "/login"),
        ("/login;a=b", "/login;a=b"),
    ] {
        let before = login.count();
        let (status, text) = raw(
            proxy.addr,
            &format!("GET {path}?q=1 HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(
            login.count(),
            before + 1,
            "{path} did not reach the login route"
        );
        // The origin serves the canonical path, the one the route matched.
        assert_eq!(login.last().uri, format!("{forwarded}?q=1"), "{path}");
    }
    assert_eq!(other.count(), 0);
    for path in ["/login%2f", "/a%5cb", "/x/..;/login"] {
        let (status, text) = raw(
            proxy.addr,
            &format!("GET {path} HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{path}: {text}");
    }
    assert_eq!(proxy.refused("invalid_path"), 3.0);
    assert_eq!(other.count(), 0);
    proxy.stop().await;
}

// === headers a client may not send ===

const SPOOFED: &[(&str, &str)] = &[
    ("forwarded", "for=203.0.113.7;proto=https"),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-real-ip", "203.0.113.7"),
    ("x-forwarded-prefix", "/admin"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-port", "443"),
    ("x-request-id", "chosen-by-client"),
    ("x-bot-score", "99"),
    ("x-bot-score-reasons", "trust me"),
    ("x-ravelin-skipped", "botscore"),
];

async fn send_spoofed(proxy: &Proxy) {
    let mut request = Request::get(proxy.url("/x"));
    for (name, value) in SPOOFED {
        request = request.header(*name, *value);
    }
    assert_eq!(
        send(&client(), request.body(empty()).unwrap()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn spoofed_forwarding_headers_are_removed_from_untrusted_peers() {
    let origin = Origin::start().await;
    // Trusts a network the test client is not in.
    let config = IngressConfig::new().trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    let proxy = Proxy::start(config, || upstream(&origin)).await;
    send_spoofed(&proxy).await;
    let seen = origin.last();
    for gone in [
        "x-real-ip",
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-request-id",
        "x-bot-score",
        "x-bot-score-reasons",
        "x-ravelin-skipped",
    ] {
        assert!(
            seen.header(gone).is_empty(),
            "{gone} reached the origin: {seen:?}"
        );
    }
    // Only what this proxy wrote.
    let host = proxy.addr.to_string();
    assert_eq!(
        seen.header("forwarded"),
        [format!("for=127.0.0.1;proto=http;host=\"{host}\"")]
    );
    assert_eq!(seen.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), ["http"]);
    proxy.stop().await;
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_kept() {
    let origin = Origin::start().await;
    let config = IngressConfig::new().trusted_proxies(["127.0.0.0/8".parse().unwrap()]);
    let proxy = Proxy::start(config, || upstream(&origin)).await;
    send_spoofed(&proxy).await;
    let seen = origin.last();
    let host = proxy.addr.to_string();
    assert_eq!(
        seen.header("forwarded"),
        [format!(
            "for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=\"{host}\""
        )]
    );
    assert_eq!(seen.header("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(seen.header("x-real-ip"), ["203.0.113.7"]);
    assert_eq!(seen.header("x-forwarded-prefix"), ["/admin"]);
    assert_eq!(seen.header("x-forwarded-port"), ["443"]);
    assert_eq!(seen.header("x-request-id"), ["chosen-by-client"]);
    // Edge-owned headers are never taken from anyone.
    for gone in ["x-bot-score", "x-bot-score-reasons", "x-ravelin-skipped"] {
        assert!(
            seen.header(gone).is_empty(),
            "{gone} reached the origin: {seen:?}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn connection_cannot_name_host_or_the_request_id() {
    let origin = Origin::start().await;
    let config = IngressConfig::new().trusted_proxies(["127.0.0.0/8".parse().unwrap()]);
    let proxy = Proxy::start(config, || preserving(&origin)).await;
    let (status, text) = raw(
        proxy.addr,
        "GET /x HTTP/1.1\r\nhost: shop.example\r\nconnection: host, x-request-id, x-private, close\r\n\
         x-request-id: abc\r\nx-private: 1\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let seen = origin.last();
    assert_eq!(seen.header("host"), ["shop.example"]);
    assert_eq!(seen.header("x-request-id"), ["abc"]);
    assert!(seen.header("x-private").is_empty());
    assert!(seen.header("connection").is_empty());
    proxy.stop().await;
}

// === methods and limits ===

#[tokio::test]
async fn connect_and_trace_are_refused() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(IngressConfig::new(), || upstream(&origin)).await;
    let (status, text) = raw(
        proxy.addr,
        "CONNECT victim.example:443 HTTP/1.1\r\nhost: victim.example:443\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 501, "{text}");
    let (status, text) = raw(
        proxy.addr,
        "TRACE / HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 501, "{text}");
    assert!(
        !text.contains("host: a.example"),
        "TRACE reflected the request: {text}"
    );
    assert_eq!(proxy.refused("method"), 2.0);
    assert_eq!(origin.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn header_count_limit_applies_to_http2() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(IngressConfig::new().max_headers(50), || upstream(&origin)).await;
    let client = h2_client();
    let mut request = Request::get(proxy.url("/x"));
    for i in 0..60 {
        request = request.header(format!("x-h{i}"), "v");
    }
    assert_eq!(
        send(&client, request.body(empty()).unwrap()).await,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(proxy.refused("too_many_headers"), 1.0);
    assert_eq!(origin.count(), 0);
    // Under the limit, the same connection serves.
    let mut request = Request::get(proxy.url("/x"));
    for i in 0..40 {
        request = request.header(format!("x-h{i}"), "v");
    }
    assert_eq!(
        send(&client, request.body(empty()).unwrap()).await,
        StatusCode::OK
    );
    proxy.stop().await;
}
