//! The README's axum app over real sockets (issue 17): per-IP limiting with no glue but
//! `PeerAddrLayer`, and the same app without the layer refused on its first request with the
//! message that says what to add. Also the plain-hyper path (`PeerAddrLayer::fixed`) and a
//! custom denial answered over the wire.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderName;
use http_body_util::Full;
use ravelin_ratelimit::{
    KeyPart, MISSING_PEER_BODY, PeerAddrLayer, RateLimitLayer, ResponseTemplate, Rule, Rules,
    RulesError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

// The README's app, character for character between the markers (checked below).
// README-APP-START
fn app() -> Result<Router, RulesError> {
    let rules = Rules::new()
        // Behind a load balancer in 10.0.0.0/8: believe its X-Forwarded-For, and nobody else's.
        .trusted_proxies(["10.0.0.0/8"])
        // 100 requests a minute per client address (IPv6 clients per /64).
        .rule(Rule::new("per-ip", 100, Duration::from_secs(60)).key(KeyPart::ClientIp))
        // 1000 an hour per API key, at most 100 at once; requests without a key skip this rule.
        .rule(
            Rule::new("per-api-key", 1000, Duration::from_secs(3600))
                .burst(100)
                .key(KeyPart::Header(HeaderName::from_static("x-api-key"))),
        );
    Ok(Router::new().route("/", get(|| async { "hello" })).layer(
        ServiceBuilder::new()
            // The client's address, from the connection axum accepted.
            .layer(PeerAddrLayer::new())
            .layer(RateLimitLayer::new(rules)?),
    ))
}
// README-APP-END

/// The README's app without the peer layer: what an application forgetting it builds.
fn app_without_peer_layer() -> Router {
    let rules = Rules::new()
        .trusted_proxies(["10.0.0.0/8"])
        .rule(Rule::new("per-ip", 100, Duration::from_secs(60)).key(KeyPart::ClientIp))
        .rule(
            Rule::new("per-api-key", 1000, Duration::from_secs(3600))
                .burst(100)
                .key(KeyPart::Header(HeaderName::from_static("x-api-key"))),
        );
    Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(ServiceBuilder::new().layer(RateLimitLayer::new(rules).unwrap()))
}

/// Serves `app` as the README says (`into_make_service_with_connect_info::<SocketAddr>()`) on
/// an ephemeral loopback port.
async fn serve_with_connect_info(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// One HTTP/1.1 request on a new connection: (status, headers as lowercase lines, body).
async fn get_once(addr: SocketAddr) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn the_readme_app_limits_per_ip_with_no_glue() {
    let addr = serve_with_connect_info(app().unwrap()).await;
    for n in 1..=100 {
        let (status, head, body) = get_once(addr).await;
        assert_eq!(status, 200, "request {n}: {head}");
        assert_eq!(body, "hello");
        assert!(
            head.contains(&format!("ratelimit: \"per-ip\";r={};", 100 - n)),
            "request {n}: {head}"
        );
    }
    let (status, head, body) = get_once(addr).await;
    assert_eq!(status, 429, "the 101st request from 127.0.0.1: {head}");
    assert!(head.contains("retry-after: "), "{head}");
    assert_eq!(body, "too many requests\n");
}

#[tokio::test]
async fn without_the_peer_layer_the_first_request_says_what_to_add() {
    let addr = serve_with_connect_info(app_without_peer_layer()).await;
    let (status, head, body) = get_once(addr).await;
    assert_eq!(status, 500, "{head}");
    assert_eq!(body, MISSING_PEER_BODY);
    assert!(
        body.contains("add ravelin_http::PeerAddrLayer")
            && body.contains("into_make_service_with_connect_info::<SocketAddr>()"),
        "{body}"
    );
    assert!(head.contains("content-type: text/plain"), "{head}");
}

#[tokio::test]
async fn served_without_connect_info_the_first_request_says_what_to_add() {
    // The layer is there, but `into_make_service()` records no address for it to read.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app().unwrap().into_make_service())
            .await
            .unwrap();
    });
    let (status, head, body) = get_once(addr).await;
    assert_eq!(status, 500, "{head}");
    assert_eq!(body, MISSING_PEER_BODY);
}

/// The README's app code is this file's `app()`, so the test above is about what users copy.
#[test]
fn the_readme_shows_this_app() {
    let readme = include_str!("../README.md");
    let this = include_str!("axum_socket.rs");
    let from = |text: &'static str, start: &str, end: &str| -> &'static str {
        let at = text
            .find(start)
            .unwrap_or_else(|| panic!("{start:?} not found"));
        let rest = &text[at..];
        &rest[..rest
            .find(end)
            .unwrap_or_else(|| panic!("{end:?} not found"))]
    };
    let shown = from(readme, "fn app()", "\n}\n");
    let tested = from(this, "fn app()", "\n}\n");
    assert_eq!(shown, tested, "README's app() and this test's differ");
    assert!(readme.contains("app()?.into_make_service_with_connect_info::<SocketAddr>()"));
    assert!(readme.contains(r#"features = ["axum"]"#));
}

/// A plain hyper accept loop: each connection's service is built with the accepted address.
async fn serve_hyper(layer: RateLimitLayer) -> SocketAddr {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let service = ServiceBuilder::new()
                .layer(PeerAddrLayer::fixed(peer))
                .layer(layer.clone())
                .service_fn(|_request: http::Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                        b"hello",
                    ))))
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_plain_hyper_server_sets_the_accepted_address_with_fixed() {
    let rules =
        Rules::new().rule(Rule::new("per-ip", 3, Duration::from_secs(60)).key(KeyPart::ClientIp));
    let addr = serve_hyper(RateLimitLayer::new(rules).unwrap()).await;
    for _ in 0..3 {
        assert_eq!(get_once(addr).await.0, 200);
    }
    let (status, head, _) = get_once(addr).await;
    assert_eq!(status, 429, "{head}");
}

#[tokio::test]
async fn a_custom_denial_goes_over_the_wire_with_the_ratelimit_fields() {
    let rules =
        Rules::new().rule(Rule::new("per-ip", 1, Duration::from_secs(60)).key(KeyPart::ClientIp));
    let layer = RateLimitLayer::builder(rules)
        .denied_response(
            ResponseTemplate::new(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"rate_limited"}"#,
            )
            .content_type("application/json"),
        )
        .build()
        .unwrap();
    let addr = serve_hyper(layer).await;
    assert_eq!(get_once(addr).await.0, 200);
    let (status, head, body) = get_once(addr).await;
    assert_eq!(status, 503, "{head}");
    assert_eq!(body, r#"{"error":"rate_limited"}"#);
    for field in [
        "content-type: application/json",
        "retry-after: 60",
        "ratelimit: \"per-ip\";r=0;t=60",
        "ratelimit-policy: \"per-ip\";q=1;w=60",
        "cache-control: no-store",
    ] {
        assert!(head.contains(field), "{field} missing from {head}");
    }
}
