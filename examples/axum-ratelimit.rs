//! Per-IP and per-API-key rate limits on an axum service, with `ravelin-ratelimit`.
//!
//! ```text
//! cargo run --example axum-ratelimit
//! curl -i http://127.0.0.1:3000/                       # RateLimit headers; the 11th request in a minute is a 429
//! curl -i -H 'x-api-key: demo' http://127.0.0.1:3000/api/items
//! ```
//!
//! The only wiring is `PeerAddrLayer::new()` (ravelin-ratelimit's `axum` feature), which copies
//! the client address axum records with `into_make_service_with_connect_info::<SocketAddr>()`
//! into the `PeerAddr` extension `client_ip` rules key by. Leave it out and every request is
//! answered 500 with a message saying to add it.
//!
//! The guard runs in `ravelin-failsafe`'s `GuardLayer`: it fails open (a broken limiter lets
//! requests through, marked, rather than failing them), has a time budget, contains panics, and
//! has a kill switch.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ravelin_config::Switchboard;
use ravelin_ratelimit::{KeyPart, PeerAddrLayer, RateLimitLayer, ResponseTemplate, Rule, Rules};
use tower::ServiceBuilder;

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
        // A JSON 429 for API clients (Retry-After and the RateLimit fields are still added).
        .denied_response(
            ResponseTemplate::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "{\"error\":\"rate_limited\"}\n",
            )
            .content_type("application/json"),
        )
        .build()?;

    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/api/items", get(|| async { "[]\n" }))
        .layer(
            ServiceBuilder::new()
                // Outermost, so the guard sees the peer address.
                .layer(PeerAddrLayer::new())
                .layer(limit),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
