//! `RateLimitLayer` with its state in Redis (a `RateLimitGuard` in `ravelin-failsafe`'s
//! `GuardLayer`), over a real
//! `redis-server` killed and restarted under it: requests keep flowing (fail open), each delayed
//! at most by the store's timeout, the circuit breaker opens so a dead Redis stops costing
//! timeouts, and limiting resumes when Redis is back, without rebuilding anything.
#![cfg(feature = "redis")]
// Helpers outside `#[test]` functions may fail loudly too (clippy.toml only exempts the tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use ravelin_failsafe::{CircuitBreakerConfig, FailurePolicy, X_RAVELIN_SKIPPED};
use ravelin_ratelimit::redis::RedisStore;
use ravelin_ratelimit::{KeyPart, RateLimitLayer, Rule, Rules};
use ravelin_test_support::redis::{RedisServer, unique_prefix};
use tower::{Service, ServiceBuilder, ServiceExt};

const STORE_TIMEOUT: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_redis_fails_open_behind_the_breaker_and_limiting_resumes() {
    let Some(mut server) = RedisServer::spawn() else {
        return;
    };
    let store = RedisStore::builder(server.url())
        .key_prefix(unique_prefix("guard"))
        .timeout(STORE_TIMEOUT)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    // 5 an hour per `x-client`, state in Redis, behind the guard layer.
    let rules = Rules::new().rule(
        Rule::new("per-client", 5, Duration::from_secs(3600))
            .key(KeyPart::Header(HeaderName::from_static("x-client"))),
    );
    let layer = RateLimitLayer::builder(rules)
        .store(store)
        .policy(FailurePolicy::open().skip_header(X_RAVELIN_SKIPPED))
        // Longer than the store's own timeout, so the store's error is what the layer sees.
        .timeout(Duration::from_secs(1))
        .circuit_breaker(
            CircuitBreakerConfig::new()
                .consecutive_failures(5)
                .open_for(Duration::from_millis(500)),
        )
        .build()
        .unwrap();
    let handle = layer.handle();
    // The origin says whether the request reached it with the guard skipped.
    let mut service =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|request: Request<()>| async move {
                let skipped = request.headers().contains_key(X_RAVELIN_SKIPPED);
                let mut response = Response::new(Empty::<Bytes>::new());
                if skipped {
                    response
                        .headers_mut()
                        .insert("x-origin-saw-skip", http::HeaderValue::from_static("1"));
                }
                Ok::<_, Infallible>(response)
            });
    // Limiting works: 5 pass, then 429 (wait for the first connection before counting).
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(&mut service).await.1 {
        assert!(Instant::now() < deadline, "Redis never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(send(&mut service).await.0);
    }
    // The probe above spent one unit; 4 more pass, then 429s.
    assert_eq!(
        statuses,
        vec![
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );

    // Redis dies: every request still reaches the origin, marked as not checked, and none
    // waits much longer than the store's timeout. After 5 failures the breaker opens and
    // requests stop paying even that.
    server.kill();
    let mut slow = 0;
    for i in 0..40 {
        let (status, skipped, took) = send(&mut service).await;
        assert_eq!(status, StatusCode::OK, "request {i} while Redis is down");
        assert!(skipped, "request {i} should be marked as skipped");
        assert!(
            took < STORE_TIMEOUT + Duration::from_secs(2),
            "request {i} took {took:?}"
        );
        // Only a request that waited for the store's timer takes this long.
        if took >= STORE_TIMEOUT {
            slow += 1;
        }
    }
    assert!(handle.circuit_state().is_open());
    assert!(
        slow <= 10,
        "{slow} of 40 requests waited for the store; the breaker should have spared most"
    );

    // Redis returns (empty): limiting resumes through the same service, with no restart.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, _) = send(&mut service).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert!(Instant::now() < deadline, "limiting did not resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!handle.circuit_state().is_open());
}

/// Sends one request as client "alice": (status, whether the origin saw it skipped, duration).
async fn send<S, B>(service: &mut S) -> (StatusCode, bool, Duration)
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let request = Request::builder()
        .header("x-client", "alice")
        .body(())
        .unwrap();
    let started = Instant::now();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    (
        response.status(),
        response.headers().contains_key("x-origin-saw-skip"),
        started.elapsed(),
    )
}
