//! Policies cannot be walked around: every spelling of a protected path meets the same rate-limit
//! rule and bot route, route hosts match however the client spells the host, and a module's
//! time budget holds even for a guard that does its work synchronously.
//!
//! Each test runs the assembled proxy (`ravelin_test_support::edge::Harness`) in front of the demo origin, which,
//! like nginx, Express or Tomcat, serves `/login` for `/LOGIN` too: what matters is that the
//! edge's policies see what the origin serves.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use ravelin_edge::{BoxGuard, CircuitConfig, ExtraGuard, FailureMode, GuardConfig};
use ravelin_failsafe::{GuardError, RequestHead, Verdict, guard_fn};
use ravelin_test_support::edge::{GENEROUS_RATELIMIT, Harness, Reply, config};

/// The spellings of `/login` that skipped both modules before the request identity: case,
/// doubled slashes, dot segments, an escaped unreserved character, path parameters.
const SPELLINGS: &[&str] = &[
    "/LOGIN",
    "//login",
    "/./login",
    "/x/../login",
    "/%6cogin",
    "/login;a=b",
    "/Login/",
    "/login/./",
];

#[allow(clippy::unwrap_used)] // test helper: a failed request is a failing test
async fn get_with_host(harness: &Harness, path: &str, host: &str) -> Reply {
    let request = Request::get(harness.url(path))
        .header("host", host)
        .header("user-agent", "ravelin-e2e/1.0")
        .body(Full::<Bytes>::default())
        .unwrap();
    harness.send(request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_limited_path_spends_the_same_quota() {
    // One bucket for /login, one request per minute. Before: `/LOGIN`, `//login`, `/./login`,
    // `/x/../login` and `/%6cogin` did not start with "/login" textually and were never limited.
    let text = config(
        r#"
[ratelimit]
[[ratelimit.rules]]
name = "login"
limit = 1
window = "60s"
burst = 1
key = []
match = { path_prefix = "/login" }
"#,
    );
    let harness = Harness::start(&text, None).await;
    assert_ne!(harness.get("/login").await.status, 429);
    for spelling in SPELLINGS {
        let reply = harness.get(spelling).await;
        assert_eq!(reply.status, 429, "{spelling}: {}", reply.text());
    }
    // Not under the prefix (segment-aligned): never limited by this rule.
    for other in ["/loginx", "/api/time", "/"] {
        assert_ne!(harness.get(other).await.status, 429, "{other}");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_bot_route_meets_the_route() {
    // A route that blocks every scored request: whatever the score, /login answers 403. Before:
    // the spellings above, and `/login;a=b` (which the route compared raw), reached the origin.
    let text = config(&format!(
        r#"{GENEROUS_RATELIMIT}
[[botscore.routes]]
prefix = "/login"
block_at_or_below = 99
"#
    ));
    let harness = Harness::start(&text, None).await;
    assert_eq!(harness.get("/login").await.status, 403);
    for spelling in SPELLINGS {
        let reply = harness.get(spelling).await;
        assert_eq!(reply.status, 403, "{spelling}: {}", reply.text());
    }
    // Spellings origins disagree on are refused before any module runs.
    for ambiguous in ["/login%2f", "/login%2F", "/x/..;/login", "/login%5c"] {
        let reply = harness.get(ambiguous).await;
        assert_eq!(reply.status, 400, "{ambiguous}: {}", reply.text());
    }
    assert_eq!(harness.get("/api/time").await.status, 200);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_hosts_match_however_the_client_spells_the_host() {
    // Two upstreams (both demo origins) told apart by their request counters.
    let shop = ravelin_proxy::demo::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let other = ravelin_proxy::demo::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // The route is written with a trailing dot and mixed case; clients send every variant.
    // Before: a route host was compared to the raw `Host` minus its port, so a trailing dot on
    // either side never matched.
    let text = config(&format!(
        r#"{GENEROUS_RATELIMIT}
[[upstreams]]
name = "shop"
url = "{}"
[[upstreams]]
name = "other"
url = "{}"
[[routes]]
host = "Shop.Example."
upstream = "shop"
[[routes]]
upstream = "other"
"#,
        shop.url(),
        other.url()
    ));
    let harness = Harness::start(&text, None).await;
    for host in [
        "shop.example",
        "SHOP.example",
        "shop.example.",
        "shop.example:80",
    ] {
        let before = shop.origin().requests();
        let reply = get_with_host(&harness, "/api/time", host).await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.text());
        assert_eq!(
            shop.origin().requests(),
            before + 1,
            "{host} went elsewhere"
        );
    }
    let before = other.origin().requests();
    assert_eq!(
        get_with_host(&harness, "/api/time", "elsewhere.example")
            .await
            .status,
        200
    );
    assert_eq!(other.origin().requests(), before + 1);
    harness.stop().await;
    shop.shutdown().await;
    other.shutdown().await;
}

/// A guard that does its (too slow) work before returning a ready verdict: nothing can preempt
/// it, but its verdict must not be believed after the budget.
fn slow_synchronous_guard(mode: FailureMode) -> ExtraGuard {
    ExtraGuard {
        guard: BoxGuard::new(guard_fn(
            "slowsync",
            |_: &RequestHead<'_>| -> Result<Verdict, GuardError> {
                std::thread::sleep(Duration::from_millis(60));
                Ok(Verdict::allow())
            },
        )),
        policy: GuardConfig {
            failure_mode: mode,
            timeout: Duration::from_millis(5),
            failure_status: 503,
            failure_body: Some("slow guard (e2e)\n".into()),
            circuit: CircuitConfig {
                disabled: true,
                ..CircuitConfig::default()
            },
            ..GuardConfig::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_guard_over_its_budget_meets_its_failure_policy() {
    // Before: the timeout only raced the guard's future, which a synchronous guard returns
    // already complete, so a 60 ms check under a 5 ms budget "passed" every time.
    let harness = Harness::start(
        &config(GENEROUS_RATELIMIT),
        Some(slow_synchronous_guard(FailureMode::Closed)),
    )
    .await;
    let reply = harness.get("/api/time").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("slow guard"), "{}", reply.text());
    harness.stop().await;

    let harness = Harness::start(
        &config(GENEROUS_RATELIMIT),
        Some(slow_synchronous_guard(FailureMode::Open)),
    )
    .await;
    let reply = harness.get("/echo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.echoed("x-ravelin-skipped"),
        ["slowsync=timed_out"],
        "{}",
        reply.text()
    );
    harness.stop().await;
}
