//! A caching front for any hyper service, with `ravelin-cache`: RFC 9111 shared caching, request
//! coalescing, stale-if-error, and `Cache-Status` on every response.
//!
//! ```text
//! cargo run --example hyper-cache
//! curl -i http://127.0.0.1:3001/time     # Cache-Status: ravelin; fwd=uri-miss; ttl=5; detail=storing
//! curl -i http://127.0.0.1:3001/time     # Cache-Status: ravelin; hit; ttl=…   (same body for 5 s)
//! ```

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use ravelin_cache::CacheLayer;
use tower::ServiceBuilder;

/// The origin: an expensive answer that may be reused for five seconds.
async fn origin(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = format!("{} at {now}\n", request.uri().path());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=5, stale-if-error=300"),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One layer for the process: every connection's service shares the store.
    let cache = CacheLayer::builder()
        .max_capacity_bytes(64 * 1024 * 1024)
        .max_object_bytes(1024 * 1024)
        .coalesce_timeout(Duration::from_secs(5))
        .build()?;
    let handle = cache.handle();
    let service = ServiceBuilder::new()
        .layer(cache)
        .service(tower::service_fn(origin));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let mut stats = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let service = TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                        eprintln!("connection error: {error}");
                    }
                });
            }
            _ = stats.tick() => println!("cache: {:?}", handle.stats()),
        }
    }
}
