//! Per-IP and per-API-key rate limits on an axum service, with `ravelin-ratelimit`.
//!
//! ```text
//! cargo run --example axum-ratelimit
//! curl -i http://127.0.0.1:3000/                       # RateLimit headers; the 11th request in a minute is a 429
//! curl -i -H 'x-api-key: demo' http://127.0.0.1:3000/api/items
//! ```
//!
//! The guard runs in `ravelin-failsafe`'s `GuardLayer`: it fails open (a broken limiter lets
//! requests through, marked, rather than failing them), has a time budget, contains panics, and
//! has a kill switch.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use ravelin_config::Switchboard;
use ravelin_failsafe::PeerAddr;
use ravelin_ratelimit::{KeyPart, RateLimitLayer, Rule, Rules};

/// Guards key clients by `PeerAddr`; axum knows the peer as `ConnectInfo`, so copy it over.
async fn peer_addr(request: Request, next: Next) -> Response {
    let mut request = request;
    if let Some(ConnectInfo(addr)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    {
        request.extensions_mut().insert(PeerAddr(addr));
    }
    next.run(request).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rules = Rules::new()
        // 10 requests a minute per client IP (IPv6 clients grouped per /64).
        .rule(Rule::new("per-ip", 10, Duration::from_secs(60)).key(KeyPart::ClientIp))
        // 1000 an hour per API key, with bursts of 100; requests without the header are not counted.
        .rule(
            Rule::new("per-api-key", 1000, Duration::from_secs(3600))
                .burst(100)
                .key(KeyPart::Header(http::HeaderName::from_static("x-api-key"))),
        );
    let switchboard = Switchboard::new();
    let limit = RateLimitLayer::builder(rules)
        .timeout(Duration::from_millis(20))
        // The kill switch named "ratelimit", the name the guard gives itself.
        .switchboard(&switchboard)
        .build()?;

    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/api/items", get(|| async { "[]\n" }))
        .layer(limit)
        // Outermost, so the guard sees the peer address.
        .layer(middleware::from_fn(peer_addr));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
