//! WebSocket pass-through over real loopback sockets: echo origin ← Forward ← guard ← Ingress ←
//! Server ← tungstenite client.
// tungstenite's handshake callback type has a large `Err` variant; it is not ours to box.
#![allow(clippy::result_large_err)]
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
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use ravelin_proxy::{Forward, ForwardBody, Ingress, IngressConfig, ServerConfig, Upstream, demo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use support::{BOUND, Serving, metric};

type Ws = WebSocketStream<TcpStream>;

/// An origin that accepts WebSockets and echoes every data message; the request heads it saw
/// are kept.
struct EchoOrigin {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<HeaderMap>>>,
}

impl EchoOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let record = |request: &WsRequest, response: WsResponse| {
                        seen.lock().unwrap().push(request.headers().clone());
                        Ok(response)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await
                    else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_text() || message.is_binary() {
                            if ws.send(message).await.is_err() {
                                return;
                            }
                        } else if message.is_close() {
                            let _ = ws.close(None).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<HeaderMap> {
        self.heads.lock().unwrap().clone()
    }
}

/// The proxy: the ingress stage, then a guard that records every request head it sees and
/// answers 403 to `x-deny`, then `Forward`.
struct Proxy {
    addr: SocketAddr,
    guard_saw: Arc<Mutex<Vec<HeaderMap>>>,
    recorder: Arc<PrometheusRecorder>,
    server: Serving,
}

impl Proxy {
    /// Server → Ingress → guard → Forward(upstream built from `builder` under this test's
    /// metrics recorder).
    async fn start(builder: ravelin_proxy::UpstreamBuilder) -> Self {
        Self::start_with(builder, ServerConfig::default()).await
    }

    /// [`start`](Self::start) with the server's limits.
    async fn start_with(builder: ravelin_proxy::UpstreamBuilder, config: ServerConfig) -> Self {
        let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
        let upstream = metrics::with_local_recorder(&*recorder, || builder.build().unwrap());
        let forward = Forward::new(upstream);
        let guard_saw = Arc::new(Mutex::new(Vec::new()));
        let saw = Arc::clone(&guard_saw);
        let guard = tower::service_fn(move |request: Request<_>| {
            let mut forward = forward.clone();
            let saw = Arc::clone(&saw);
            async move {
                saw.lock().unwrap().push(request.headers().clone());
                if request.headers().contains_key("x-deny") {
                    let mut denied = Response::new(ForwardBody::local("denied\n"));
                    *denied.status_mut() = StatusCode::FORBIDDEN;
                    return Ok::<_, Infallible>(denied);
                }
                tower::Service::call(&mut forward, request).await
            }
        });
        let service = Ingress::new(guard, IngressConfig::new());
        let server = Serving::start(service, config, None).await;
        Self {
            addr: server.addr,
            guard_saw,
            recorder,
            server,
        }
    }

    /// The value of one metric series (name and labels as rendered), 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        metric(&self.recorder, series)
    }

    /// Waits (bounded in count, not timed) until `series` reads `value`.
    async fn metric_reaches(&self, series: &str, value: f64) {
        for _ in 0..1000 {
            if self.metric(series) == value {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{series} never reached {value}: {}", self.metric(series));
    }

    fn ws_request(&self, path: &str) -> http::Request<()> {
        format!("ws://{}{path}", self.addr)
            .into_client_request()
            .unwrap()
    }

    /// Opens a WebSocket through the proxy; `Err` is the handshake's failure (an HTTP answer
    /// other than 101 comes as `WsError::Http`).
    async fn connect(&self, request: http::Request<()>) -> Result<Ws, WsError> {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        tokio::time::timeout(BOUND, tokio_tungstenite::client_async(request, stream))
            .await
            .unwrap()
            .map(|(ws, _)| ws)
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn upstream(url: &str) -> ravelin_proxy::UpstreamBuilder {
    Upstream::builder("origin", url)
}

/// The status of a refused handshake.
fn refused_status(result: Result<Ws, WsError>) -> StatusCode {
    match result {
        Err(WsError::Http(response)) => response.status(),
        Err(other) => panic!("expected an HTTP answer, got {other}"),
        Ok(_) => panic!("expected the handshake to be refused"),
    }
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(BOUND, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn text_and_binary_messages_are_echoed_through_the_proxy() {
    let origin = EchoOrigin::start().await;
    let proxy = Proxy::start(upstream(&origin.url())).await;
    let mut request = proxy.ws_request("/chat?room=1");
    request
        .headers_mut()
        .insert("x-private", "secret".parse().unwrap());
    // A field named in Connection goes; `upgrade` stays.
    request
        .headers_mut()
        .insert("connection", "Upgrade, x-private".parse().unwrap());
    let mut ws = proxy.connect(request).await.unwrap();
    for i in 0..5 {
        let text = Message::text(format!("hello {i}"));
        ws.send(text.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, text);
        let binary = Message::binary(vec![i; 1000 * usize::from(i + 1)]);
        ws.send(binary.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, binary);
    }
    ws.close(None).await.unwrap();

    let heads = origin.heads();
    assert_eq!(heads.len(), 1);
    let head = &heads[0];
    assert_eq!(head["upgrade"], "websocket");
    assert_eq!(head["connection"], "upgrade");
    assert!(head.contains_key("sec-websocket-key"));
    assert!(!head.contains_key("x-private"));
    assert!(head["via"].to_str().unwrap().contains("ravelin"));
    // The guard saw the upgrade request, as an upgrade request.
    let saw = proxy.guard_saw.lock().unwrap().clone();
    assert_eq!(saw.len(), 1);
    assert_eq!(saw[0]["upgrade"], "websocket");
    assert_eq!(saw[0]["connection"], "upgrade");
    proxy.stop().await;
}

#[tokio::test]
async fn a_relay_keeps_its_connections_place_in_the_per_address_limit() {
    let origin = EchoOrigin::start().await;
    let proxy = Proxy::start_with(
        upstream(&origin.url()),
        ServerConfig::default().max_connections_per_ip(1),
    )
    .await;
    let mut ws = proxy.connect(proxy.ws_request("/one")).await.unwrap();
    ws.send(Message::text("up")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("up"));
    // The upgraded connection left hyper, but its relay still holds the address's only slot:
    // a second connection from the same address is closed at accept.
    assert!(proxy.connect(proxy.ws_request("/two")).await.is_err());
    // Once the relay ends, the slot is free again.
    ws.close(None).await.unwrap();
    drop(ws);
    proxy
        .metric_reaches(
            "ravelin_proxy_upgraded_connections{upstream=\"origin\"}",
            0.0,
        )
        .await;
    let mut again = None;
    for _ in 0..200 {
        if let Ok(ws) = proxy.connect(proxy.ws_request("/three")).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut ws = again.expect("the slot comes back when the relay ends");
    ws.send(Message::text("again")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("again"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_guard_denies_the_upgrade_without_contacting_the_upstream() {
    let origin = EchoOrigin::start().await;
    let proxy = Proxy::start(upstream(&origin.url())).await;
    let mut request = proxy.ws_request("/chat");
    request.headers_mut().insert("x-deny", "1".parse().unwrap());
    assert_eq!(
        refused_status(proxy.connect(request).await),
        StatusCode::FORBIDDEN
    );
    assert_eq!(proxy.guard_saw.lock().unwrap().len(), 1);
    assert!(origin.heads().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn an_idle_relay_is_closed() {
    let origin = EchoOrigin::start().await;
    let proxy =
        Proxy::start(upstream(&origin.url()).upgrade_idle_timeout(Duration::from_millis(200)))
            .await;
    let mut ws = proxy.connect(proxy.ws_request("/idle")).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("ping"));
    // Silence: the proxy closes both sides (no close frame: the connection just ends).
    let ended = tokio::time::timeout(BOUND, ws.next()).await.unwrap();
    assert!(
        !matches!(ended, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{ended:?}"
    );
    proxy
        .metric_reaches(
            "ravelin_proxy_upgraded_ended_total{upstream=\"origin\",reason=\"idle_timeout\"}",
            1.0,
        )
        .await;
    proxy
        .metric_reaches(
            "ravelin_proxy_upgraded_connections{upstream=\"origin\"}",
            0.0,
        )
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn upgrades_past_the_bound_are_answered_503() {
    let origin = EchoOrigin::start().await;
    let proxy = Proxy::start(upstream(&origin.url()).max_upgraded_connections(1)).await;
    let mut first = proxy.connect(proxy.ws_request("/a")).await.unwrap();
    first.send(Message::text("one")).await.unwrap();
    assert_eq!(next(&mut first).await, Message::text("one"));
    assert_eq!(
        refused_status(proxy.connect(proxy.ws_request("/b")).await),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Only the first reached the origin.
    assert_eq!(origin.heads().len(), 1);
    assert_eq!(
        proxy.metric("ravelin_proxy_upgrades_refused_total{upstream=\"origin\"}"),
        1.0
    );
    assert_eq!(
        proxy.metric("ravelin_proxy_upgraded_connections{upstream=\"origin\"}"),
        1.0
    );
    // Once the first relay ends, its slot is free again.
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    drop(first);
    let mut tries = 0;
    let mut again = loop {
        tries += 1;
        assert!(tries < 500, "the slot was never released");
        match proxy.connect(proxy.ws_request("/c")).await {
            Ok(ws) => break ws,
            Err(WsError::Http(r)) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("{other}"),
        }
    };
    again.send(Message::binary(vec![7; 3])).await.unwrap();
    assert_eq!(next(&mut again).await, Message::binary(vec![7; 3]));
    proxy.stop().await;
}

#[tokio::test]
async fn an_upstream_answering_200_to_an_upgrade_is_passed_through() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = Proxy::start(upstream(&origin.url())).await;
    assert_eq!(
        refused_status(proxy.connect(proxy.ws_request("/echo")).await),
        StatusCode::OK
    );
    proxy.stop().await;
}

#[tokio::test]
async fn requests_that_are_not_upgrades_lose_upgrade() {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = Proxy::start(upstream(&origin.url())).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let cases = [
        // Upgrade without Connection: upgrade.
        ("GET", vec![("upgrade", "websocket")]),
        // An upgrade with a body is not passed through.
        (
            "POST",
            vec![("connection", "upgrade"), ("upgrade", "websocket")],
        ),
        // h2c is never passed through.
        ("GET", vec![("connection", "upgrade"), ("upgrade", "h2c")]),
    ];
    for (method, headers) in cases {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}/echo", proxy.addr));
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let body = if method == "POST" { "x" } else { "" };
        let response = tokio::time::timeout(
            BOUND,
            client.request(request.body(Full::new(Bytes::from(body))).unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method} {headers:?}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echo: Value = serde_json::from_slice(&body).unwrap();
        let names: Vec<&str> = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[0].as_str().unwrap())
            .collect();
        assert!(
            !names.contains(&"upgrade"),
            "{method} {headers:?}: {names:?}"
        );
        assert!(
            !names.contains(&"connection"),
            "{method} {headers:?}: {names:?}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_http2_upstream_gets_upgrades_as_plain_requests() {
    // The origin does not matter here beyond answering: demo speaks both protocols.
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = Proxy::start(upstream(&origin.url()).http2(true)).await;
    assert_eq!(
        refused_status(proxy.connect(proxy.ws_request("/echo")).await),
        StatusCode::OK
    );
    proxy.stop().await;
}

/// The whole edge (ingress, request ids, rate limit, bot score, cache, Forward) in front of the
/// echo origin: every module runs on the upgrade request, the socket is relayed, and a module's
/// refusal is answered without the origin being contacted.
#[tokio::test]
async fn through_the_edge_every_module_runs_on_the_upgrade() {
    use ravelin_test_support::edge::{Harness, config};
    let origin = EchoOrigin::start().await;
    // One upgrade per client address per hour: the second is the rate limiter's.
    let text = config(&format!(
        "[[upstreams]]\nname = \"origin\"\nurl = \"{}\"\n\
         [ratelimit]\n[[ratelimit.rules]]\nname = \"per-ip\"\nlimit = 1\nwindow = \"1h\"\nkey = [\"client_ip\"]\n",
        origin.url()
    ));
    let harness = Harness::start(&text, None).await;
    let addr = harness.running().proxy_addr;
    let connect = |path: &str| {
        let request = format!("ws://{addr}{path}").into_client_request().unwrap();
        async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            tokio::time::timeout(BOUND, tokio_tungstenite::client_async(request, stream))
                .await
                .unwrap()
                .map(|(ws, _)| ws)
        }
    };
    let mut ws = connect("/live").await.unwrap();
    for i in 0..3u8 {
        let message = Message::binary(vec![i; 64]);
        ws.send(message.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, message);
    }
    let heads = origin.heads();
    assert_eq!(heads.len(), 1);
    // The stages in front of Forward ran: the edge's request id and the bot score reached the
    // origin with the upgrade intact.
    assert!(heads[0].contains_key("x-request-id"), "{:?}", heads[0]);
    assert_eq!(heads[0]["upgrade"], "websocket");
    assert_eq!(heads[0]["connection"], "upgrade");
    assert_eq!(
        refused_status(connect("/again").await),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(origin.heads().len(), 1);
    ws.close(None).await.unwrap();
    drop(ws);
    harness.stop().await;
}

/// An origin that switches to a protocol the client did not ask for: a 502, nothing relayed.
#[tokio::test]
async fn a_switch_to_another_protocol_is_a_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the head, then answer 101 to `other`.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: other\r\n\r\n",
                    )
                    .await;
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    let proxy = Proxy::start(upstream(&format!("http://{origin}"))).await;
    assert_eq!(
        refused_status(proxy.connect(proxy.ws_request("/x")).await),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        proxy.metric("ravelin_proxy_upstream_errors_total{upstream=\"origin\",kind=\"protocol\"}"),
        1.0
    );
    assert_eq!(
        proxy.metric("ravelin_proxy_upgraded_connections{upstream=\"origin\"}"),
        0.0
    );
    proxy.stop().await;
}
