//! The layer in a real hyper stack over loopback sockets: client → caching proxy → origin.
// Test code: helpers outside #[test] functions may panic too (a panic is a failed test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use ravelin_cache::CacheLayer;
use tokio::net::TcpListener;
use tower::{Layer, service_fn};

/// Serves `svc` on a free loopback port until the test ends.
async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An origin that answers every path with a 1 MiB body after a short delay, counting requests.
async fn origin(calls: Arc<AtomicUsize>) -> SocketAddr {
    serve(service_fn(move |req: Request<Incoming>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let body = Bytes::from(vec![b'x'; 1 << 20]);
            let cc = if req.uri().path() == "/private" {
                "private"
            } else {
                "max-age=300"
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", cc)
                    .header("etag", "\"v1\"")
                    .body(Full::new(body))
                    .unwrap(),
            )
        }
    }))
    .await
}

/// The caching proxy: the cache layer in front of a hyper client to the origin.
async fn proxy(origin: SocketAddr) -> (SocketAddr, ravelin_cache::CacheHandle) {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let forward = service_fn(move |mut req: Request<Incoming>| {
        let client = client.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            *req.uri_mut() = format!("http://{origin}{path}").parse().unwrap();
            client.request(req).await
        }
    });
    let layer = CacheLayer::builder()
        .max_object_bytes(4 << 20)
        .build()
        .unwrap();
    let handle = layer.handle();
    (serve(layer.layer(forward)).await, handle)
}

async fn get(addr: SocketAddr, path: &str) -> (http::response::Parts, Bytes) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(
            Request::get(format!("http://{addr}{path}"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_over_sockets() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (proxy, handle) = proxy(origin(calls.clone()).await).await;

    let (miss, body) = get(proxy, "/big").await;
    assert_eq!(body.len(), 1 << 20);
    // The 1 MiB body streams to the client while it is recorded: the head cannot know it will
    // be stored, so it does not say so (the hit below shows it was).
    assert_eq!(
        miss.headers["cache-status"],
        "ravelin; fwd=uri-miss; ttl=300; detail=storing"
    );

    let (hit, body) = get(proxy, "/big").await;
    assert_eq!(body.len(), 1 << 20);
    assert!(
        hit.headers["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("ravelin; hit")
    );
    assert_eq!(hit.headers["content-length"], "1048576");
    assert!(hit.headers.contains_key("age"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.stats().hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_share_one_origin_fetch_over_sockets() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (proxy, handle) = proxy(origin(calls.clone()).await).await;
    let clients: Vec<_> = (0..50)
        .map(|_| tokio::spawn(get(proxy, "/shared")))
        .collect();
    for c in clients {
        let (_, body) = c.await.unwrap();
        assert_eq!(body.len(), 1 << 20);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.stats().coalesced, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_responses_are_fetched_per_client_over_sockets() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (proxy, _) = proxy(origin(calls.clone()).await).await;
    let clients: Vec<_> = (0..5)
        .map(|_| tokio::spawn(get(proxy, "/private")))
        .collect();
    for c in clients {
        let (parts, _) = c.await.unwrap();
        assert!(
            parts.headers["cache-status"]
                .to_str()
                .unwrap()
                .contains("detail=private")
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}
