//! The guard in a tower stack: forged headers, verified bots, actions, shadow mode, failure
//! semantics (unscored, never a default score) and hot reload.
// Helpers outside `#[test]` functions: a failed setup must stop the run loudly (clippy.toml's
// test exemptions only cover `#[test]` functions themselves).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use ravelin_botscore::{
    Action, BotDecision, BotGuard, BotScore, BotScoreLayer, DEFAULT_REASONS_HEADER, Model,
    ResponseTemplate, Route, ScoreStatus, Scorer, Unscored, VerifiedBots,
};
use ravelin_config::{Format, KillSwitch, Store};
use ravelin_failsafe::{Guard, PeerAddr, RequestHead, SkipReason, Verdict};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";

/// What the origin saw.
#[derive(Debug, Clone)]
struct Seen {
    score_header: Option<String>,
    reasons_header: Option<String>,
    verified_header: Option<String>,
    status: Option<Result<u8, Unscored>>,
    verified: Option<bool>,
    decision: Option<BotDecision>,
}

fn seen(request: &Request<()>) -> Seen {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let status = match ScoreStatus::of(request.extensions()) {
        ScoreStatus::Scored(s) => Some(Ok(s.score().get())),
        ScoreStatus::Unscored(why) => Some(Err(why)),
    };
    Seen {
        score_header: header("x-bot-score"),
        reasons_header: header("x-bot-score-reasons"),
        verified_header: header("x-bot-verified"),
        status,
        verified: request
            .extensions()
            .get::<BotScore>()
            .map(BotScore::verified_bot),
        decision: request.extensions().get::<BotDecision>().copied(),
    }
}

/// Runs `request` through `layer` in front of an origin that reports what it saw (as JSON in
/// the response extensions).
async fn run(layer: BotScoreLayer, request: Request<()>) -> (StatusCode, Option<Seen>, Bytes) {
    let origin = service_fn(|request: Request<()>| async move {
        let mut response = Response::new(http_body_util::Full::new(Bytes::from_static(b"origin")));
        response.extensions_mut().insert(seen(&request));
        Ok::<_, Infallible>(response)
    });
    let mut service = ServiceBuilder::new().layer(layer).service(origin);
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let status = response.status();
    let seen = response.extensions().get::<Seen>().cloned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, seen, body)
}

fn browser_request(path: &str) -> Request<()> {
    Request::builder()
        .uri(path)
        .version(http::Version::HTTP_2)
        .header("sec-ch-ua", "\"Chromium\";v=\"130\", \"Google Chrome\";v=\"130\", \"Not?A_Brand\";v=\"99\"")
        .header("sec-ch-ua-mobile", "?0")
        .header("sec-ch-ua-platform", "\"Windows\"")
        .header("upgrade-insecure-requests", "1")
        .header("user-agent", CHROME)
        .header("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8")
        .header("sec-fetch-site", "none")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-user", "?1")
        .header("sec-fetch-dest", "document")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("accept-language", "en-US,en;q=0.9")
        .header("priority", "u=0, i")
        .body(())
        .unwrap()
}

fn curl_request(path: &str) -> Request<()> {
    Request::builder()
        .uri(path)
        .header("host", "example.com")
        .header("user-agent", "curl/8.5.0")
        .header("accept", "*/*")
        .body(())
        .unwrap()
}

fn guard() -> ravelin_botscore::BotGuardBuilder {
    BotGuard::builder(Scorer::builtin().unwrap())
}

#[tokio::test]
async fn browsers_score_high_and_curl_low_with_headers_forwarded() {
    let layer = BotScoreLayer::new(
        guard()
            .reasons_header(Some(DEFAULT_REASONS_HEADER))
            .build()
            .unwrap(),
    );
    let (status, seen, _) = run(layer.clone(), browser_request("/")).await;
    let seen = seen.unwrap();
    assert_eq!(status, 200);
    let score = seen.status.unwrap().unwrap();
    assert!(score >= 70, "browser scored {score}");
    assert_eq!(
        seen.score_header.as_deref(),
        Some(score.to_string().as_str())
    );
    assert!(seen.reasons_header.is_some());
    assert_eq!(seen.decision.unwrap().action, Action::Annotate);

    let (_, seen, _) = run(layer, curl_request("/")).await;
    let seen = seen.unwrap();
    let score = seen.status.unwrap().unwrap();
    assert!(score <= 5, "curl scored {score}");
    let reasons = seen.reasons_header.unwrap();
    assert!(reasons.contains('='), "{reasons}");
}

#[tokio::test]
async fn forged_score_headers_are_stripped() {
    // Even on a route that forwards nothing, and for a request that is then not scored, the
    // client's own x-bot-score never reaches the origin.
    let layer = BotScoreLayer::new(
        guard()
            .reasons_header(Some(DEFAULT_REASONS_HEADER))
            .route(Route::allow("/quiet"))
            .build()
            .unwrap(),
    );
    let forge = |mut r: Request<()>| {
        r.headers_mut().insert("x-bot-score", "99".parse().unwrap());
        r.headers_mut().append("x-bot-score", "98".parse().unwrap());
        r.headers_mut()
            .insert("x-bot-score-reasons", "trust_me=+99".parse().unwrap());
        r.headers_mut()
            .insert("x-bot-verified", "1".parse().unwrap());
        r
    };
    let (_, seen, _) = run(layer.clone(), forge(curl_request("/"))).await;
    let seen = seen.unwrap();
    assert_ne!(seen.score_header.as_deref(), Some("99"));
    assert!(!seen.reasons_header.unwrap().contains("trust_me"));
    assert_eq!(seen.verified_header, None);

    let (_, seen, _) = run(layer, forge(curl_request("/quiet"))).await;
    let seen = seen.unwrap();
    assert_eq!(seen.score_header, None);
    assert_eq!(seen.reasons_header, None);
    assert_eq!(seen.verified_header, None);
    assert_eq!(seen.decision.unwrap().action, Action::Allow);
}

#[tokio::test]
async fn failure_yields_unscored_never_a_default_score() {
    // A model that skipped validation refuses to score: the guard errors, the layer fails open.
    let unprepared: Model = serde_json::from_str(ravelin_botscore::BUILTIN_MODEL_JSON).unwrap();
    let layer = BotScoreLayer::new(
        BotGuard::builder(Scorer::from_model(unprepared))
            .route(Route::annotate("/").block_at_or_below(99))
            .build()
            .unwrap(),
    );
    let mut forged = curl_request("/");
    forged
        .headers_mut()
        .insert("x-bot-score", "99".parse().unwrap());
    let (status, seen, body) = run(layer, forged).await;
    let seen = seen.unwrap();
    assert_eq!(
        status, 200,
        "a block-everything rule does not fire on an unscored request"
    );
    assert_eq!(&body[..], b"origin");
    assert_eq!(
        seen.status,
        Some(Err(Unscored::Skipped(SkipReason::Failed)))
    );
    assert_eq!(
        seen.score_header, None,
        "no score header, and not the forged one"
    );
    assert!(seen.decision.is_none());
}

#[tokio::test]
async fn every_spelling_of_a_routed_path_meets_the_route() {
    // Block everything under /login: the route must see what the origin would serve as /login.
    let layer = BotScoreLayer::new(
        guard()
            .route(Route::annotate("/login").block_at_or_below(99))
            .build()
            .unwrap(),
    );
    for spelling in [
        "/login",
        "/LOGIN",
        "//login",
        "/./login",
        "/x/../login",
        "/%6cogin",
        "/login;a=b",
        "/login;jsessionid=1/x",
    ] {
        let (status, _, _) = run(layer.clone(), browser_request(spelling)).await;
        assert_eq!(status, 403, "{spelling}");
    }
    for elsewhere in ["/loginx", "/", "/api/login"] {
        let (status, _, _) = run(layer.clone(), browser_request(elsewhere)).await;
        assert_eq!(status, 200, "{elsewhere}");
    }
}

#[test]
fn a_route_prefix_without_a_leading_slash_is_refused() {
    let routes = [Route::annotate("/ok"), Route::annotate("login")];
    let err = ravelin_botscore::validate_routes(&routes)
        .unwrap_err()
        .to_string();
    assert_eq!(err, r#"routes[1].prefix: "login" must start with /"#);
    let built = guard().routes(routes).build().unwrap_err().to_string();
    assert!(built.contains(&err), "{built}");
}

#[tokio::test]
async fn kill_switch_leaves_requests_unscored() {
    let switchboard = ravelin_config::Switchboard::new();
    let layer = BotScoreLayer::builder(
        guard()
            .route(Route::annotate("/").block_at_or_below(99))
            .build()
            .unwrap(),
    )
    .switchboard(&switchboard)
    .build()
    .unwrap();
    // The switch is the guard's, by the name the guard gives itself.
    let switch = switchboard.switch(ravelin_botscore::GUARD_NAME);
    let (status, _, _) = run(layer.clone(), curl_request("/")).await;
    assert_eq!(status, 403);
    switch.engage("test");
    let (status, seen, _) = run(layer.clone(), curl_request("/")).await;
    assert_eq!(status, 200);
    assert_eq!(
        seen.unwrap().status,
        Some(Err(Unscored::Skipped(SkipReason::Killed)))
    );
    switch.disengage("test");
    let (status, _, _) = run(layer, curl_request("/")).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn challenge_block_allow_per_route_with_custom_responses() {
    let layer = BotScoreLayer::new(
        guard()
            .route(
                Route::annotate("/login")
                    .challenge_at_or_below(29)
                    .challenge_response(
                        ResponseTemplate::new(StatusCode::TOO_MANY_REQUESTS, "<p>prove it</p>")
                            .content_type("text/html; charset=utf-8"),
                    ),
            )
            .route(Route::annotate("/admin").block_at_or_below(29))
            .route(Route::allow("/healthz"))
            .build()
            .unwrap(),
    );
    let (status, _, body) = run(layer.clone(), curl_request("/login")).await;
    assert_eq!(status, 429);
    assert_eq!(&body[..], b"<p>prove it</p>");
    let (status, _, body) = run(layer.clone(), curl_request("/admin/users")).await;
    assert_eq!(status, 403);
    assert_eq!(&body[..], b"Forbidden\n");
    let (status, seen, _) = run(layer.clone(), curl_request("/healthz")).await;
    assert_eq!(status, 200);
    assert_eq!(seen.unwrap().score_header, None);
    // Browsers pass the same routes.
    for path in ["/login", "/admin", "/healthz", "/other"] {
        let (status, _, _) = run(layer.clone(), browser_request(path)).await;
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn shadow_mode_only_records_the_decision() {
    let layer = BotScoreLayer::new(
        guard()
            .route(Route::annotate("/").block_at_or_below(29).shadow())
            .build()
            .unwrap(),
    );
    let (status, seen, _) = run(layer, curl_request("/search")).await;
    assert_eq!(status, 200);
    let seen = seen.unwrap();
    assert_eq!(
        seen.decision,
        Some(BotDecision {
            action: Action::Block,
            shadow: true
        })
    );
    assert!(seen.score_header.is_some(), "shadow still annotates");
}

#[tokio::test]
async fn verified_bots_need_token_and_range_and_bypass_thresholds() {
    let bots = VerifiedBots::new().bot(
        "examplebot",
        "ExampleBot",
        ["192.0.2.0/24".parse().unwrap()],
    );
    let layer = BotScoreLayer::new(
        guard()
            .verified_bots(bots)
            .route(Route::annotate("/").block_at_or_below(29))
            .build()
            .unwrap(),
    );
    let request = |peer: &str| {
        let mut r = Request::builder()
            .uri("/")
            .header(
                "user-agent",
                "Mozilla/5.0 (compatible; ExampleBot/2.1; +https://example.com/bot)",
            )
            .header("accept", "*/*")
            .body(())
            .unwrap();
        r.extensions_mut()
            .insert(PeerAddr(SocketAddr::new(peer.parse().unwrap(), 4711)));
        r
    };
    let (status, seen, _) = run(layer.clone(), request("192.0.2.10")).await;
    assert_eq!(status, 200);
    let seen = seen.unwrap();
    assert_eq!(seen.verified, Some(true));
    assert_eq!(seen.verified_header.as_deref(), Some("1"));
    assert!(
        seen.status.unwrap().unwrap() <= 29,
        "still scored as automated"
    );
    // Same UA from elsewhere: not verified, blocked.
    let (status, _, _) = run(layer, request("198.51.100.7")).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn hot_reload_swaps_models_and_rejects_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("botscore.json");
    let store: Store<Model> = ravelin_botscore::model_store(&path).unwrap();
    assert!(store.current().meta().is_default());
    let layer = BotScoreLayer::new(
        BotGuard::builder(Scorer::from_store(store.clone()))
            .build()
            .unwrap(),
    );
    let score_of = |seen: Option<Seen>| seen.unwrap().status.unwrap().unwrap();
    let builtin = score_of(run(layer.clone(), browser_request("/")).await.1);
    assert!(builtin > 50);

    // A model that calls everyone a bot (bias -10, one feature that never fires here).
    let harsh = r#"{"schema_version":1,"model_version":5,"bias":-10,
        "features":[{"name":"ua_missing","kind":"ua_missing","weight":0}]}"#;
    std::fs::write(&path, harsh).unwrap();
    store.reload().unwrap();
    assert_eq!(
        score_of(run(layer.clone(), browser_request("/")).await.1),
        1
    );

    // A broken file: rejected, the harsh model stays.
    std::fs::write(&path, &harsh[..40]).unwrap();
    assert!(store.reload().is_err());
    assert_eq!(
        score_of(run(layer.clone(), browser_request("/")).await.1),
        1
    );
    // An older version: rejected as stale.
    std::fs::write(
        &path,
        harsh.replace("\"model_version\":5", "\"model_version\":4"),
    )
    .unwrap();
    assert_eq!(store.reload().unwrap_err().kind(), "stale");
    assert_eq!(store.status().consecutive_rejections, 2);
}

#[tokio::test]
async fn guard_can_be_used_directly() {
    let guard = guard().build().unwrap();
    let request = curl_request("/");
    let head = RequestHead::from_request(&request);
    let Verdict::Allow(allow) = guard.check(&head).await.unwrap() else {
        panic!("annotate route should allow");
    };
    let (headers, _, extensions) = allow.into_parts();
    let score = extensions.get::<BotScore>().unwrap();
    assert_eq!(headers["x-bot-score"], score.score().to_string());
    let (evaluated, decision) = guard.evaluate(&head).unwrap();
    assert_eq!(&evaluated, score);
    assert_eq!(decision.action, Action::Annotate);
}

#[test]
fn store_of_models_uses_json_and_the_default_cap() {
    // The builder the proxy would use when it owns the store itself.
    let store = Store::<Model>::builder("botscore")
        .format(Format::Json)
        .max_bytes(ravelin_botscore::DEFAULT_MAX_FILE_BYTES)
        .initial_bytes(ravelin_botscore::BUILTIN_MODEL_JSON, "builtin")
        .build()
        .unwrap();
    assert!(store.current().is_prepared());
}

/// A plain `GuardLayer<BotGuard>` (no `BotScoreLayer`, no edge) removes forged score headers
/// itself: the guard declares them as its own. Before, only `BotScoreLayer` or the edge's own
/// strip did, so a generic wrapper that was killed or failed open let a client hand the origin
/// `x-bot-score: 99`.
#[tokio::test]
async fn a_forged_score_is_stripped_whatever_layer_wraps_the_guard() {
    let origin = service_fn(|request: Request<()>| async move {
        let mut response = Response::new(http_body_util::Full::new(Bytes::from_static(b"origin")));
        response.extensions_mut().insert(seen(&request));
        Ok::<_, Infallible>(response)
    });
    let forged = || {
        let mut request = curl_request("/");
        for (name, value) in [
            ("x-bot-score", "99"),
            ("x-bot-score-reasons", "trust me"),
            ("x-bot-verified", "true"),
        ] {
            request
                .headers_mut()
                .insert(name, http::HeaderValue::from_static(value));
        }
        request
    };
    let bot_guard = guard()
        .reasons_header(Some(DEFAULT_REASONS_HEADER))
        .build()
        .unwrap();

    // Scoring: the guard's own values replace the forged ones.
    let layer = ravelin_failsafe::GuardLayer::new(bot_guard.clone());
    let mut service = ServiceBuilder::new().layer(layer).service(origin);
    let response = service.ready().await.unwrap().call(forged()).await.unwrap();
    let seen = response.extensions().get::<Seen>().cloned().unwrap();
    assert_ne!(seen.score_header.as_deref(), Some("99"), "{seen:?}");
    assert_ne!(seen.reasons_header.as_deref(), Some("trust me"), "{seen:?}");
    assert_eq!(seen.verified_header, None, "{seen:?}");

    // Killed: the guard never runs, and nothing forged reaches the origin either.
    let switch = KillSwitch::standalone("botscore");
    switch.set(true, "test");
    let layer = ravelin_failsafe::GuardLayer::builder(bot_guard)
        .kill_switch(switch)
        .build()
        .unwrap();
    let mut service = ServiceBuilder::new().layer(layer).service(origin);
    let response = service.ready().await.unwrap().call(forged()).await.unwrap();
    let seen = response.extensions().get::<Seen>().cloned().unwrap();
    assert_eq!(seen.score_header, None, "{seen:?}");
    assert_eq!(seen.reasons_header, None, "{seen:?}");
    assert_eq!(seen.verified_header, None, "{seen:?}");
}
