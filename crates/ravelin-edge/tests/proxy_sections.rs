//! The proxy's own config sections reach the running edge (issue 12, with issue 13's types):
//! `[overload]` is ravelin-proxy's `OverloadConfig` and sheds requests past `max_requests`;
//! `[upstreams.health]` is its `HealthConfig` and opens the upstream's circuit.

use std::time::Duration;

use ravelin_test_support::edge::{GENEROUS_RATELIMIT, Harness, config};

#[tokio::test]
async fn overload_sheds_past_max_requests_with_its_retry_after() {
    let harness = Harness::start(
        &config(&format!(
            "{GENEROUS_RATELIMIT}\n[overload]\nmax_requests = 1\nretry_after = \"7s\"\n"
        )),
        None,
    )
    .await;
    // One request in flight at the demo origin's /slow; the next one is answered at once.
    let (slow, shed) = tokio::join!(harness.get("/slow?ms=1500"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        harness.get("/").await
    });
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_eq!(shed.status, 503, "{}", shed.text());
    assert_eq!(shed.headers["retry-after"], "7");
    // With nothing in flight, requests are served again.
    assert_eq!(harness.get("/").await.status, 200);
    harness.stop().await;
}

#[tokio::test]
async fn upstream_health_opens_the_circuit_after_its_failures() {
    // Nothing listens on port 1: every connection attempt is refused (a gateway failure).
    let harness = Harness::start(
        &config(&format!(
            "{GENEROUS_RATELIMIT}\n[[upstreams]]\nname = \"gone\"\nurl = \"http://127.0.0.1:1\"\n\
             [upstreams.health]\nconsecutive_failures = 2\nopen_for = \"30s\"\n\
             [upstreams.retry]\nmax_retries = 0\n"
        )),
        None,
    )
    .await;
    for _ in 0..2 {
        let reply = harness.get("/").await;
        assert_eq!(reply.status, 502, "{}", reply.text());
    }
    // The circuit is open: answered without a connection, with the cooldown left (open_for
    // plus a random share of up to half of it).
    let reply = harness.get("/").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=45).contains(&retry_after), "{retry_after}");
    harness.stop().await;
}
