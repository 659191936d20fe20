//! The guard end to end: keys, trusted proxies, headers, multi-rule atomicity, shadow mode,
//! reload, and failure through `GuardLayer`.

// Test helpers are test code: they may unwrap and index (clippy.toml allows this inside
// #[test] functions only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use ravelin_config::{Format, Store};
use ravelin_failsafe::{Guard, PeerAddr, RequestHead, SkipReason, Skipped, Verdict};
use ravelin_ratelimit::{
    BuildError, Check, Decision, KeyPart, MISSING_PEER_BODY, ManualClock, MemoryStore, MissingPeer,
    RateLimitGuard, RateLimitLayer, RateLimitStore, ResponseHeaders, ResponseTemplate, Rule, Rules,
    StoreError,
};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn request(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
    request_to("GET", "/", peer, headers)
}

fn request_to(method: &str, path: &str, peer: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(()).unwrap();
    if !peer.is_empty() {
        request
            .extensions_mut()
            .insert(PeerAddr(SocketAddr::new(peer.parse().unwrap(), 40000)));
    }
    request
}

/// Runs the guard directly and returns (status, headers) of the verdict: 200 for Allow.
async fn decide<S: RateLimitStore>(
    guard: &RateLimitGuard<S>,
    request: &Request<()>,
) -> (StatusCode, http::HeaderMap) {
    match guard
        .check(&RequestHead::from_request(request))
        .await
        .unwrap()
    {
        Verdict::Allow(allow) => {
            let (_, response_headers, _) = allow.into_parts();
            (StatusCode::OK, response_headers)
        }
        Verdict::Respond(response) => (response.status(), response.headers().clone()),
    }
}

fn guard(rules: Rules, clock: &ManualClock) -> RateLimitGuard<MemoryStore<ManualClock>> {
    RateLimitGuard::new(rules)
        .unwrap()
        .with_store(MemoryStore::with_clock(10_000, clock.clone()))
}

fn per_ip(limit: u32) -> Rule {
    Rule::new("per-ip", limit, Duration::from_secs(60)).key(KeyPart::ClientIp)
}

#[tokio::test]
async fn spoofed_forwarded_for_from_untrusted_peer_is_ignored() {
    let clock = ManualClock::new();
    let g = guard(
        Rules::new().trusted_proxies(["10.0.0.0/8"]).rule(per_ip(2)),
        &clock,
    );
    // A client rotating forged X-Forwarded-For values is still one client.
    for (i, forged) in ["1.1.1.1", "2.2.2.2", "3.3.3.3"].iter().enumerate() {
        let (status, _) =
            decide(&g, &request("198.51.100.7", &[("x-forwarded-for", forged)])).await;
        assert_eq!(status == StatusCode::OK, i < 2, "request {i}");
    }
    // Through the trusted proxy, the forwarded client is keyed, and forged entries to its left
    // are not.
    for (i, chain) in [
        "6.6.6.1, 203.0.113.9",
        "6.6.6.2, 203.0.113.9",
        "6.6.6.3, 203.0.113.9",
    ]
    .iter()
    .enumerate()
    {
        let (status, _) = decide(&g, &request("10.0.0.1", &[("x-forwarded-for", chain)])).await;
        assert_eq!(status == StatusCode::OK, i < 2, "request {i}");
    }
    // A different real client through the proxy has its own quota.
    let (status, _) = decide(
        &g,
        &request("10.0.0.1", &[("x-forwarded-for", "203.0.113.10")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn headers_on_allowed_and_denied_responses() {
    let clock = ManualClock::new();
    let g = guard(
        Rules::new()
            .rule(per_ip(2))
            .rule(Rule::new("global", 1000, Duration::from_secs(1))),
        &clock,
    );
    let r = request("192.0.2.1", &[]);
    let (status, h) = decide(&g, &r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h["ratelimit-policy"],
        r#""per-ip";q=2;w=60, "global";q=1000;w=1"#
    );
    assert_eq!(h["ratelimit"], r#""per-ip";r=1;t=30, "global";r=999;t=1"#);
    let (_, h) = decide(&g, &r).await;
    assert_eq!(h["ratelimit"], r#""per-ip";r=0;t=30, "global";r=998;t=1"#);
    clock.advance(Duration::from_secs(10));
    let (status, h) = decide(&g, &r).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // 20 s until one unit of per-ip comes back.
    assert_eq!(h["retry-after"], "20");
    assert_eq!(h["ratelimit"], r#""per-ip";r=0;t=20, "global";r=999;t=1"#);
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    // Every member is an sf-string with integer parameters.
    for member in h["ratelimit"].to_str().unwrap().split(", ") {
        let mut params = member.split(';');
        let name = params.next().unwrap();
        assert!(name.starts_with('"') && name.ends_with('"'), "{member}");
        for param in params {
            let (key, value) = param.split_once('=').unwrap();
            assert!(matches!(key, "r" | "t"), "{member}");
            assert!(value.parse::<u64>().is_ok(), "{member}");
        }
    }
}

#[tokio::test]
async fn response_header_modes() {
    let clock = ManualClock::new();
    let denied_only = guard(
        Rules::new()
            .rule(per_ip(1))
            .response_headers(ResponseHeaders::Denied),
        &clock,
    );
    let r = request("192.0.2.1", &[]);
    let (_, h) = decide(&denied_only, &r).await;
    assert!(h.is_empty());
    let (status, h) = decide(&denied_only, &r).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key("ratelimit"));

    let never = guard(
        Rules::new()
            .rule(per_ip(1))
            .response_headers(ResponseHeaders::Never),
        &clock,
    );
    let (_, h) = decide(&never, &r).await;
    assert!(h.is_empty());
    let (status, h) = decide(&never, &r).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!h.contains_key("ratelimit"));
    assert_eq!(h["retry-after"], "60");
}

#[tokio::test]
async fn a_denied_request_spends_nothing_from_other_rules() {
    let clock = ManualClock::new();
    let api_key = KeyPart::Header(HeaderName::from_static("x-api-key"));
    let g = guard(
        Rules::new()
            .rule(per_ip(100))
            .rule(Rule::new("per-key", 2, Duration::from_secs(60)).key(api_key)),
        &clock,
    );
    let with_key = request("192.0.2.1", &[("x-api-key", "k1")]);
    for _ in 0..2 {
        assert_eq!(decide(&g, &with_key).await.0, StatusCode::OK);
    }
    for _ in 0..50 {
        let (status, h) = decide(&g, &with_key).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        // per-ip still shows 98 left (2 spent), as if the denied requests never happened.
        assert!(
            h["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with(r#""per-ip";r=97;"#),
            "{h:?}"
        );
    }
    // A request without an API key skips the per-key rule and sees per-ip untouched.
    let (status, h) = decide(&g, &request("192.0.2.1", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["ratelimit"], r#""per-ip";r=97;t=1"#);
    assert_eq!(h["ratelimit-policy"], r#""per-ip";q=100;w=60"#);
}

#[tokio::test]
async fn shadow_rules_never_block_or_advertise() {
    let clock = ManualClock::new();
    let g = guard(
        Rules::new().rule(per_ip(100)).rule(
            Rule::new("tight", 1, Duration::from_secs(60))
                .key(KeyPart::ClientIp)
                .shadow(),
        ),
        &clock,
    );
    let r = request("192.0.2.1", &[]);
    for _ in 0..10 {
        let (status, h) = decide(&g, &r).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["ratelimit-policy"], r#""per-ip";q=100;w=60"#);
    }
}

#[tokio::test]
async fn matches_and_key_parts() {
    let clock = ManualClock::new();
    let g = guard(
        Rules::new().rule(
            Rule::new("login", 1, Duration::from_secs(60))
                .key(KeyPart::ClientIp)
                .key(KeyPart::Path)
                .method(http::Method::POST)
                .path_prefix("/login"),
        ),
        &clock,
    );
    let post = |path| request_to("POST", path, "192.0.2.1", &[]);
    assert_eq!(decide(&g, &post("/login")).await.0, StatusCode::OK);
    assert_eq!(
        decide(&g, &post("/login")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another path under the prefix is another key; other paths and methods are not limited.
    assert_eq!(decide(&g, &post("/login/sso")).await.0, StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(decide(&g, &post("/home")).await.0, StatusCode::OK);
        let get = request_to("GET", "/login", "192.0.2.1", &[]);
        let (status, h) = decide(&g, &get).await;
        assert_eq!(status, StatusCode::OK);
        assert!(h.is_empty());
    }
}

#[tokio::test]
async fn path_spellings_cannot_walk_around_a_prefix_rule() {
    // One unit for all of /login: every spelling an origin may route to /login spends it.
    let spellings = [
        "/LOGIN",
        "//login",
        "/./login",
        "/x/../login",
        "/%6cogin",
        "/login;a=b",
        "/Login/sso",
    ];
    for spelling in spellings {
        let clock = ManualClock::new();
        let g = guard(
            Rules::new().rule(Rule::new("login", 1, Duration::from_secs(60)).path_prefix("/login")),
            &clock,
        );
        let get = |path| request_to("GET", path, "192.0.2.1", &[]);
        assert_eq!(decide(&g, &get("/login")).await.0, StatusCode::OK);
        assert_eq!(
            decide(&g, &get(spelling)).await.0,
            StatusCode::TOO_MANY_REQUESTS,
            "{spelling} is under /login"
        );
        // Segment-aligned: a longer name is another path.
        assert_eq!(decide(&g, &get("/loginx")).await.0, StatusCode::OK);
        assert_eq!(decide(&g, &get("/")).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn path_and_host_keys_are_normalized() {
    let clock = ManualClock::new();
    let g = guard(
        Rules::new()
            .rule(Rule::new("per-path", 1, Duration::from_secs(60)).key(KeyPart::Path))
            .rule(Rule::new("per-host", 2, Duration::from_secs(60)).key(KeyPart::Host)),
        &clock,
    );
    let get = |path, host| request_to("GET", path, "192.0.2.1", &[("host", host)]);
    assert_eq!(
        decide(&g, &get("/login", "a.example")).await.0,
        StatusCode::OK
    );
    // /LOGIN is /login: the same bucket, already spent.
    assert_eq!(
        decide(&g, &get("/LOGIN", "b.example")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A.EXAMPLE is a.example: its second unit, then nothing (another path, so per-path allows).
    assert_eq!(
        decide(&g, &get("/other", "A.EXAMPLE")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        decide(&g, &get("/third", "a.Example")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_ingress_identity_decides_the_path() {
    // When the ingress stage set a RequestIdentity, its match path is the one compared.
    let clock = ManualClock::new();
    let g = guard(
        Rules::new().rule(Rule::new("admin", 1, Duration::from_secs(60)).path_prefix("/admin")),
        &clock,
    );
    let identified = |uri: &str| {
        let (mut parts, ()) = Request::get(uri)
            .header("host", "edge.example")
            .body(())
            .unwrap()
            .into_parts();
        let identity = ravelin_http::RequestIdentity::from_parts(
            &parts,
            http::uri::Scheme::HTTP,
            &ravelin_http::IdentityOptions::default(),
        )
        .unwrap();
        parts.extensions.insert(identity);
        Request::from_parts(parts, ())
    };
    assert_eq!(
        decide(&g, &identified("/ADMIN/users")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        decide(&g, &identified("/public/../admin")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn ipv6_clients_are_grouped_by_prefix() {
    let clock = ManualClock::new();
    let g = guard(Rules::new().rule(per_ip(2)), &clock);
    assert_eq!(
        decide(&g, &request("2001:db8:1:2::1", &[])).await.0,
        StatusCode::OK
    );
    assert_eq!(
        decide(&g, &request("2001:db8:1:2::ffff", &[])).await.0,
        StatusCode::OK
    );
    // Same /64: limited.
    assert_eq!(
        decide(&g, &request("2001:db8:1:2:abcd::9", &[])).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another /64: its own quota.
    assert_eq!(
        decide(&g, &request("2001:db8:1:3::1", &[])).await.0,
        StatusCode::OK
    );
}

/// The body of a verdict's response, when the guard answered.
async fn answer<S: RateLimitStore>(
    guard: &RateLimitGuard<S>,
    request: &Request<()>,
) -> Option<(StatusCode, String)> {
    match guard
        .check(&RequestHead::from_request(request))
        .await
        .unwrap()
    {
        Verdict::Respond(response) => Some((
            response.status(),
            String::from_utf8(response.body().to_vec()).unwrap(),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn no_peer_address_is_refused_by_default_naming_the_fix() {
    let clock = ManualClock::new();
    let g = guard(Rules::new().rule(per_ip(1)), &clock);
    for _ in 0..3 {
        let (status, body) = answer(&g, &request("", &[])).await.unwrap();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, MISSING_PEER_BODY);
        assert!(body.contains("PeerAddrLayer"), "{body}");
    }
    // A request with an address is limited as usual.
    assert_eq!(
        decide(&g, &request("192.0.2.1", &[])).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn no_peer_address_skips_client_ip_rules_when_asked() {
    let clock = ManualClock::new();
    for g in [
        guard(
            Rules::new().rule(per_ip(1)).missing_peer(MissingPeer::Skip),
            &clock,
        ),
        // The guard's setting wins over the document's.
        guard(Rules::new().rule(per_ip(1)), &clock).missing_peer(MissingPeer::Skip),
    ] {
        for _ in 0..5 {
            let (status, h) = decide(&g, &request("", &[])).await;
            assert_eq!(status, StatusCode::OK);
            assert!(h.is_empty());
        }
    }
}

#[tokio::test]
async fn a_shadow_rule_never_refuses_a_request_without_an_address() {
    let clock = ManualClock::new();
    let g = guard(Rules::new().rule(per_ip(1).shadow()), &clock);
    for _ in 0..3 {
        assert_eq!(decide(&g, &request("", &[])).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_missing_header_still_skips_its_rule() {
    let clock = ManualClock::new();
    let api_key = KeyPart::Header(HeaderName::from_static("x-api-key"));
    // Keyed by address and API key: with an address but no key, the rule does not apply.
    let g = guard(Rules::new().rule(per_ip(1).key(api_key)), &clock);
    for _ in 0..3 {
        assert_eq!(
            decide(&g, &request("192.0.2.1", &[])).await.0,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn the_denied_response_is_configurable_and_keeps_the_ratelimit_fields() {
    let clock = ManualClock::new();
    let template =
        ResponseTemplate::new(StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"slow down\"}")
            .content_type("application/json");
    for g in [
        guard(
            Rules::new()
                .rule(per_ip(1))
                .denied_response(template.clone()),
            &clock,
        ),
        guard(Rules::new().rule(per_ip(1)), &clock)
            .denied_response(&template)
            .unwrap(),
    ] {
        let r = request("192.0.2.9", &[]);
        assert_eq!(decide(&g, &r).await.0, StatusCode::OK);
        let (status, headers) = decide(&g, &r).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["retry-after"], "60");
        assert_eq!(headers["ratelimit"], r#""per-ip";r=0;t=60"#);
        assert_eq!(headers["ratelimit-policy"], r#""per-ip";q=1;w=60"#);
        assert_eq!(answer(&g, &r).await.unwrap().1, "{\"error\":\"slow down\"}");
        clock.advance(Duration::from_secs(60));
    }
    let refused = guard(Rules::new().rule(per_ip(1)), &clock)
        .denied_response(&ResponseTemplate::new(StatusCode::OK, "fine"))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("denied_response.status: 200 is not a 4xx or 5xx status"),
        "{refused}"
    );
}

#[tokio::test]
async fn long_keys_are_hashed_and_stay_distinct() {
    let clock = ManualClock::new();
    let api_key = KeyPart::Header(HeaderName::from_static("x-api-key"));
    let g = guard(
        Rules::new().rule(Rule::new("per-key", 1, Duration::from_secs(60)).key(api_key)),
        &clock,
    );
    let long_a = "a".repeat(4000);
    let mut long_b = long_a.clone();
    long_b.push('b');
    assert_eq!(
        decide(&g, &request("192.0.2.1", &[("x-api-key", &long_a)]))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        decide(&g, &request("192.0.2.1", &[("x-api-key", &long_b)]))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        decide(&g, &request("192.0.2.1", &[("x-api-key", &long_a)]))
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

const V1: &str = r#"
version = 1
[[rules]]
name = "per-ip"
limit = 3
window = "1m"
key = ["client_ip"]
"#;

#[tokio::test]
async fn reload_keeps_state_of_unchanged_rules() {
    let clock = ManualClock::new();
    let config: Store<Rules> = Store::builder("ratelimit")
        .format(Format::Toml)
        .initial_bytes(V1, "test")
        .build()
        .unwrap();
    let g = RateLimitGuard::reloadable(config.clone())
        .with_store(MemoryStore::with_clock(1000, clock.clone()));
    let r = request("192.0.2.1", &[]);
    for _ in 0..3 {
        assert_eq!(decide(&g, &r).await.0, StatusCode::OK);
    }
    assert_eq!(decide(&g, &r).await.0, StatusCode::TOO_MANY_REQUESTS);

    // v2 adds a rule; per-ip is unchanged and stays exhausted.
    let v2 = V1.replace("version = 1", "version = 2")
        + "[[rules]]\nname = \"global\"\nlimit = 100\nwindow = \"1m\"\n";
    config.submit(v2.as_bytes(), "test").unwrap();
    let (status, h) = decide(&g, &r).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(h["ratelimit-policy"].to_str().unwrap().contains("global"));

    // A rejected document (limit 0) changes nothing.
    let bad = V1
        .replace("version = 1", "version = 3")
        .replace("limit = 3", "limit = 0");
    assert!(config.submit(bad.as_bytes(), "test").is_err());
    assert_eq!(decide(&g, &r).await.0, StatusCode::TOO_MANY_REQUESTS);

    // Changing per-ip's quota starts it afresh.
    let v4 = V1
        .replace("version = 1", "version = 4")
        .replace("limit = 3", "limit = 5");
    config.submit(v4.as_bytes(), "test").unwrap();
    let (status, h) = decide(&g, &r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["ratelimit"], r#""per-ip";r=4;t=12"#);
}

/// A store that always fails, to exercise the failure policy.
#[derive(Clone, Default)]
struct Broken(Arc<AtomicUsize>);

impl RateLimitStore for Broken {
    type Future = std::future::Ready<Result<Vec<Decision>, StoreError>>;

    fn check(&self, _checks: &[Check<'_>]) -> Self::Future {
        self.0.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Err(StoreError::Timeout {
            store: "broken",
            timeout: Duration::from_millis(20),
        }))
    }
}

async fn hello(request: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    let skipped = request
        .extensions()
        .get::<Skipped>()
        .and_then(|s| s.reason("ratelimit"))
        .map_or("", SkipReason::as_str);
    Ok(Response::new(Full::new(Bytes::from(skipped.to_owned()))))
}

#[tokio::test]
async fn layer_fails_open_when_the_store_fails() {
    let broken = Broken::default();
    let layer = RateLimitLayer::builder(Rules::new().rule(per_ip(1)))
        .store(broken.clone())
        .build()
        .unwrap();
    assert_eq!(layer.handle().name(), "ratelimit");
    let mut service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(hello));
    for _ in 0..3 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request("192.0.2.1", &[]))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "failed");
    }
    assert!(broken.0.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn layer_answers_429_through_the_service() {
    let layer = RateLimitLayer::new(Rules::new().rule(per_ip(1))).unwrap();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(hello));
    let first = service
        .clone()
        .oneshot(request("192.0.2.1", &[]))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit"], r#""per-ip";r=0;t=60"#);
    let second = service
        .clone()
        .oneshot(request("192.0.2.1", &[]))
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["retry-after"], "60");
}

#[tokio::test]
async fn invalid_rules_or_guard_settings_are_refused_by_the_layer() {
    let broken_rule = Rules::new().rule(Rule::new("bad name!", 0, Duration::from_secs(60)));
    let error = RateLimitLayer::new(broken_rule.clone()).unwrap_err();
    assert!(error.to_string().contains("rules[0].limit"), "{error}");
    let error = RateLimitLayer::builder(broken_rule).build().unwrap_err();
    assert!(matches!(error, BuildError::Rules(_)), "{error}");

    let error = RateLimitLayer::builder(Rules::new().rule(per_ip(1)))
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::Guard(_)), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("rate-limit guard: guard timeout 0ns"),
        "{error}"
    );
}

#[tokio::test]
async fn a_killed_limiter_is_skipped_by_name() {
    let switchboard = ravelin_config::Switchboard::new();
    let layer = RateLimitLayer::builder(Rules::new().rule(per_ip(1)))
        .switchboard(&switchboard)
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(hello));
    switchboard
        .set(ravelin_ratelimit::GUARD_NAME, true, "test")
        .unwrap();
    for _ in 0..3 {
        let response = service
            .clone()
            .oneshot(request("192.0.2.1", &[]))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "killed: not limited");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "killed");
    }
}

#[tokio::test]
async fn decisions_are_counted_per_rule_and_action() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ManualClock::new();
    // Handles are bound when the rules are compiled, so compile under the recorder.
    let g = metrics::with_local_recorder(&recorder, || {
        guard(
            Rules::new()
                .rule(per_ip(2))
                .rule(
                    Rule::new("tight", 1, Duration::from_secs(60))
                        .key(KeyPart::ClientIp)
                        .shadow(),
                )
                .missing_peer(MissingPeer::Skip),
            &clock,
        )
    });
    let r = request("192.0.2.1", &[]);
    for _ in 0..3 {
        decide(&g, &r).await;
    }
    decide(&g, &request("", &[])).await;
    let mut counts = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let DebugValue::Counter(n) = value else {
            continue;
        };
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        counts.insert(format!("{} {}", key.key().name(), labels.join(",")), n);
    }
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    assert_eq!(
        get("ravelin_ratelimit_decisions_total rule=per-ip,action=enforce,outcome=allowed"),
        2
    );
    // The third request was denied by per-ip, so nothing was charged: tight (shadow) allowed the
    // first, denied the second, and the third was decided (denied) without being charged.
    assert_eq!(
        get("ravelin_ratelimit_decisions_total rule=per-ip,action=enforce,outcome=denied"),
        1
    );
    assert_eq!(
        get("ravelin_ratelimit_decisions_total rule=tight,action=shadow,outcome=allowed"),
        1
    );
    assert_eq!(
        get("ravelin_ratelimit_decisions_total rule=tight,action=shadow,outcome=denied"),
        2
    );
    assert_eq!(
        get("ravelin_ratelimit_decisions_total rule=per-ip,action=enforce,outcome=skipped"),
        1
    );
    // The request without an address, met by both rules.
    assert_eq!(get("ravelin_ratelimit_missing_peer_total rule=per-ip"), 1);
    assert_eq!(get("ravelin_ratelimit_missing_peer_total rule=tight"), 1);
}

#[tokio::test]
async fn a_refused_request_without_an_address_is_counted_not_skipped() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ManualClock::new();
    let g = metrics::with_local_recorder(&recorder, || guard(Rules::new().rule(per_ip(2)), &clock));
    assert!(answer(&g, &request("", &[])).await.is_some());
    let counters: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) if n > 0 => Some((key.key().name().to_owned(), n)),
            _ => None,
        })
        .collect();
    assert_eq!(
        counters,
        vec![("ravelin_ratelimit_missing_peer_total".to_owned(), 1)]
    );
}
