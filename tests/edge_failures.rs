//! Module and dependency failures against the assembled proxy.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use std::time::Duration;

use ravelin_edge::{BoxGuard, ExtraGuard, FailureMode, GuardConfig};
use ravelin_failsafe::{GuardError, RequestHead, Verdict, guard_fn};
use ravelin_test_support::edge as support;
use ravelin_test_support::edge::{GENEROUS_RATELIMIT, Harness, Reply, config, metric};

/// A module with a bug: it panics on every request.
#[allow(clippy::panic)] // the bug under test
fn panicking(mode: FailureMode) -> ExtraGuard {
    ExtraGuard {
        guard: BoxGuard::new(guard_fn(
            "panicky",
            |_: &RequestHead<'_>| -> Result<Verdict, GuardError> {
                panic!("index out of bounds: the len is 200 but the index is 200")
            },
        )),
        policy: GuardConfig {
            failure_mode: mode,
            timeout: Duration::from_millis(100),
            failure_status: 503,
            failure_body: Some("checks unavailable (e2e)\n".into()),
            ..GuardConfig::default()
        },
    }
}

#[allow(clippy::unwrap_used, clippy::panic)] // test helper: a panic is a failing test
fn module<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("module {name} in {status:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_module_fails_open_without_5xx_and_its_circuit_opens() {
    let harness = Harness::start(
        &config(GENEROUS_RATELIMIT),
        Some(panicking(FailureMode::Open)),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let report = support::load(
        &harness,
        "/echo",
        4,
        400,
        Duration::from_secs(60),
        stop,
        |reply: &Reply| {
            if reply.status != 200 {
                return Err(format!("status {}", reply.status));
            }
            // One field naming the module and why: it panicked, or its circuit is open.
            let skipped = reply.echoed("x-ravelin-skipped");
            if !skipped
                .iter()
                .any(|v| v.contains("panicky=panicked") || v.contains("panicky=circuit_open"))
            {
                return Err(format!(
                    "origin was not told the module was skipped: {skipped:?}"
                ));
            }
            Ok(())
        },
    )
    .await;
    assert!(report.first_errors.is_empty(), "{:?}", report.first_errors);
    assert_eq!(report.count_5xx(), 0, "{report:?}");
    assert_eq!(report.total(), 400);

    let status = harness.status().await;
    let circuit = module(&status, "panicky")["circuit"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        circuit.contains("open"),
        "the breaker opened after repeated panics: {circuit}"
    );
    // The process is up and still serving.
    assert_eq!(harness.get("/api/time").await.status, 200);
    let metrics = harness.metrics().await;
    assert!(
        metric(
            &metrics,
            "ravelin_guard_decisions_total",
            &["panicky", "panicked"]
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "ravelin_guard_decisions_total",
            &["panicky", "circuit_open"]
        ) >= 1.0,
        "{metrics}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_module_fails_closed_with_the_configured_response() {
    let harness = Harness::start(
        &config(GENEROUS_RATELIMIT),
        Some(panicking(FailureMode::Closed)),
    )
    .await;
    for _ in 0..50 {
        let reply = harness.get("/echo").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.text(), "checks unavailable (e2e)\n");
    }
    let health = harness
        .send(
            http::Request::get(harness.admin_url("/healthz"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(health.status, 200, "the process stays up");
    // Killing the broken module restores service: the kill path is a tested code path too.
    assert_eq!(
        harness.admin_post("/modules/panicky/kill").await.status,
        200
    );
    assert_eq!(harness.get("/echo").await.status, 200);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_flipped_100_times_under_load() {
    let harness = Arc::new(Harness::start(&config(GENEROUS_RATELIMIT), None).await);
    let load =
        support::BackgroundLoad::start(&harness, 4, Duration::from_secs(60), |reply: &Reply| {
            if reply.status != 200 {
                return Err(format!("status {}: {}", reply.status, reply.text()));
            }
            // Whole state, never torn: scored, or skipped because killed; not both, not neither.
            let scored = reply.echoed("x-bot-score").len() == 1;
            let skipped = reply
                .echoed("x-ravelin-skipped")
                .iter()
                .any(|v| v.contains("botscore=killed"));
            if scored == skipped {
                return Err(format!("scored={scored} skipped={skipped}"));
            }
            Ok(())
        });
    for i in 0..100 {
        let action = if i % 2 == 0 { "kill" } else { "revive" };
        let reply = harness
            .admin_post(&format!("/modules/botscore/{action}"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = load.finish().await;
    assert!(report.first_errors.is_empty(), "{:?}", report.first_errors);
    assert_eq!(report.non_2xx(), 0, "{report:?}");
    assert!(report.total() > 0);
    let status = harness.status().await;
    assert_eq!(status["kill_switches"]["botscore"], false, "ended revived");
    Arc::try_unwrap(harness).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_answers_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = config(&format!(
        "{GENEROUS_RATELIMIT}\n[[upstreams]]\nname = \"down\"\nurl = \"http://{dead}\"\nconnect_timeout = \"500ms\"\n"
    ));
    let harness = Harness::start(&text, None).await;
    // BOUND turns a hang into a failure; a refused loopback connect answers at once.
    let reply = harness.get("/api/time").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("could not be reached"));
    let metrics = harness.metrics().await;
    assert!(
        metric(
            &metrics,
            "ravelin_proxy_upstream_errors_total",
            &["down", "kind=\"connect\""]
        ) >= 1.0,
        "{metrics}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_under_load_fails_no_request() {
    let harness = Arc::new(Harness::start(&config(GENEROUS_RATELIMIT), None).await);
    let load =
        support::BackgroundLoad::start(&harness, 4, Duration::from_secs(60), |reply: &Reply| {
            if reply.status == 200 {
                Ok(())
            } else {
                Err(format!("status {}: {}", reply.status, reply.text()))
            }
        });
    for i in 0..20u32 {
        // Each generation changes the modules' policies and limits; even ones are also reloaded
        // through the admin API, odd ones only by the file watcher.
        let text = config(&format!(
            "{GENEROUS_RATELIMIT}\n[botscore.guard]\ntimeout = \"{}ms\"\n[botscore]\n{}\n[cache]\nmax_capacity_bytes = {}\n",
            10 + i,
            if i % 2 == 0 {
                "reasons_header = \"x-bot-score-reasons\""
            } else {
                ""
            },
            64 * 1024 * 1024 + u64::from(i)
        ));
        support::write_atomically(&harness.config_path, text.as_bytes());
        if i % 2 == 0 {
            let reply = harness.admin_post("/config/reload").await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last generation is reloaded by the watcher alone: wait until it is in force (on a
    // busy machine 100 ms may not be enough), so the invalid file below is refused against it.
    support::eventually("the last good generation is in force", || {
        let harness = Arc::clone(&harness);
        async move { module(&harness.status().await, "botscore")["timeout_ms"] == 29 }
    })
    .await;
    // An invalid file in the middle of it all is refused and changes nothing.
    support::write_atomically(&harness.config_path, b"[server]\nmax_conections = 1\n");
    let reply = harness.admin_post("/config/reload").await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("max_conections"), "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = load.finish().await;
    assert!(report.first_errors.is_empty(), "{:?}", report.first_errors);
    assert_eq!(report.non_2xx(), 0, "{report:?}");

    let status = harness.status().await;
    let main = &status["configs"][0];
    assert!(main["generation"].as_u64().unwrap() >= 10, "{main:#}");
    assert_eq!(main["last_rejection"]["kind"], "parse", "{main:#}");
    assert_eq!(
        module(&status, "botscore")["timeout_ms"],
        29,
        "the last good config is in force"
    );
    Arc::try_unwrap(harness).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_with_a_stale_entry_serves_the_stale_copy() {
    let origin = ravelin_proxy::demo::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = config(&format!(
        "{GENEROUS_RATELIMIT}\n[[upstreams]]\nname = \"origin\"\nurl = \"{}\"\nconnect_timeout = \"500ms\"\n",
        origin.url()
    ));
    let harness = Harness::start(&text, None).await;
    // /stale: max-age=2, stale-if-error=600.
    let fresh = harness.get("/stale").await;
    assert_eq!(fresh.status, 200);
    let status = fresh
        .headers
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned());
    // The head leaves before the body is in hand, so the miss says storage is pending
    // (`detail=storing`), never `stored`; the hit below proves it was stored.
    assert!(
        status
            .as_deref()
            .is_some_and(|s| s.contains("fwd=uri-miss") && !s.contains("stored")),
        "{status:?}"
    );
    let hit = harness.get("/stale").await;
    assert_eq!(hit.body, fresh.body, "served from cache while fresh");
    let hit_status = hit
        .headers
        .get("cache-status")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        hit_status.contains("hit"),
        "the second request must be a hit, got {hit_status:?}. (If every response says `stored` but \
         the next is a miss: hyper's server drops a Content-Length body after its last byte without \
         polling it to the end, so the cache must commit when it has seen Content-Length bytes.)"
    );

    // The origin goes away entirely; the entry goes stale.
    origin.shutdown().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stale = harness.get("/stale").await;
    assert_eq!(
        stale.status,
        200,
        "the stale copy, not the 502: {} {:?}",
        stale.text(),
        stale.headers
    );
    assert_eq!(stale.body, fresh.body);
    let status = stale
        .headers
        .get("cache-status")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(status.contains("ravelin"), "{status}");
    // Without a stored copy, the same outage is a 502.
    assert_eq!(harness.get("/api/time").await.status, 502);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_headers() {
    let text = config(
        "[ratelimit]\n[[ratelimit.rules]]\nname = \"per-ip\"\nlimit = 5\nwindow = \"60s\"\nkey = [\"client_ip\"]\n",
    );
    let harness = Harness::start(&text, None).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let reply = harness.get("/api/time").await;
        statuses.push(reply.status.as_u16());
        if reply.status == 429 {
            assert!(
                reply.headers.contains_key("retry-after"),
                "{:?}",
                reply.headers
            );
            let ratelimit = reply.headers.get("ratelimit").unwrap().to_str().unwrap();
            assert!(ratelimit.starts_with("\"per-ip\";r=0"), "{ratelimit}");
        } else {
            assert!(
                reply.headers.contains_key("ratelimit-policy"),
                "{:?}",
                reply.headers
            );
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // Kill switch: the module is off, requests pass.
    assert_eq!(
        harness.admin_post("/modules/ratelimit/kill").await.status,
        200
    );
    assert_eq!(harness.get("/api/time").await.status, 200);
    harness.stop().await;
}

/// The rate limiter on a real Redis: quota enforced through the proxy; Redis killed mid-run: no
/// 5xx, requests keep flowing (local fallback under the open policy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_on_redis_survives_redis_dying() {
    let Some(mut redis) = ravelin_test_support::redis::RedisServer::spawn() else {
        return;
    };
    let text = config(&format!(
        "[ratelimit]\nstore = \"{}\"\nredis_timeout = \"100ms\"\n[ratelimit.guard]\ntimeout = \"200ms\"\n\
         [[ratelimit.rules]]\nname = \"per-ip\"\nlimit = 5\nwindow = \"60s\"\nkey = [\"client_ip\"]\n",
        redis.url()
    ));
    let harness = Harness::start(&text, None).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(harness.get("/api/time").await.status.as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429],
        "one quota, held in Redis"
    );
    let status = harness.status().await;
    let detail = &module(&status, "ratelimit")["detail"];
    assert!(
        detail["store"].as_str().unwrap().starts_with("redis"),
        "{detail}"
    );

    redis.kill();
    for _ in 0..30 {
        let reply = harness.get("/api/time").await;
        assert!(
            reply.status == 200 || reply.status == 429,
            "no 5xx with Redis down: {}",
            reply.status
        );
    }
    assert_eq!(
        harness.get("/healthz_not_here").await.status.as_u16() / 100,
        4,
        "still serving"
    );
    harness.stop().await;
}
