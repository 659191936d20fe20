//! The control plane as a trust boundary: one validation gate for `--check`, startup and
//! reload; bounds on every number; a supervised serve task; the admin token rotating on
//! reload; DNS-rebinding protection; the demo origin's outage switch out of the data plane.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use ravelin_edge::{ConfigSource, Overrides, check_config};
use ravelin_test_support::edge::{
    BOUND, GENEROUS_RATELIMIT, Harness, TOKEN, config, write_atomically,
};

/// Documents that parse but that building the modules (or the server) would refuse, with the
/// field the refusal must name. Each was accepted by `--check` and hot reload before the gate
/// built every module's configuration.
const UNAPPLIABLE: &[(&str, &str, &str)] = &[
    (
        "a bot route prefix without a leading /",
        "[[botscore.routes]]\nprefix = \"login\"\nblock_at_or_below = 30\n",
        "routes[0].prefix",
    ),
    (
        "a cache too small to hold anything",
        "[cache]\nmax_capacity_bytes = 0\n",
        "cache.max_capacity_bytes",
    ),
    (
        "a 64 GiB cache on a 24 GiB machine",
        "[cache]\nmax_capacity_bytes = 68719476736\n",
        "cache.max_capacity_bytes",
    ),
    (
        "max_connections past tokio's semaphore",
        "[server]\nmax_connections = 4611686018427387904\n",
        "max_connections",
    ),
    (
        "20 million header slots per request",
        "[server]\nmax_headers = 20000000\n",
        "max_headers",
    ),
    (
        "a circuit window the breaker clamps silently",
        "[ratelimit.guard.circuit]\nwindow = 100000\n",
        "ratelimit.guard.circuit",
    ),
    (
        "a route host with a port, which never matches",
        "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[routes]]\nhost = \"example.com:8080\"\nupstream = \"a\"\n",
        "routes[0].host",
    ),
    (
        "an hour-and-a-day upstream timeout",
        "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nresponse_timeout = \"25h\"\n",
        "response_timeout",
    ),
    (
        "a Redis store URL that is not one",
        "[ratelimit]\nstore = \"redis://[::1\"\n",
        "ratelimit.store",
    ),
    (
        "lower-case methods, which never match",
        "[[ratelimit.rules]]\nname = \"x\"\nlimit = 1\nwindow = \"1s\"\nmatch = { methods = [\"post\"] }\n",
        "match.methods[0]",
    ),
];

fn check_text(text: &str) -> Result<(), String> {
    check_config(ConfigSource::Text(text.to_owned()), &Overrides::default()).map(|_| ())
}

#[test]
fn check_refuses_every_document_that_cannot_be_applied() {
    // A comment-only document is refused (issue 15); the defaults with the demo asked for pass.
    check_text("# defaults\n").expect_err("a document with no settings");
    check_text("[demo]\nenabled = true\n").expect("the defaults pass");
    for (what, text, field) in UNAPPLIABLE {
        let error = check_text(text).expect_err(what);
        assert!(error.contains(field), "{what}: {error}");
    }
}

#[test]
fn a_remote_admin_address_needs_its_own_flag() {
    let remote = Overrides {
        admin: Some("0.0.0.0:0".parse().unwrap()),
        ..Overrides::default()
    };
    let defaults = || ConfigSource::Text("[demo]\nenabled = true\n".to_owned());
    let error = check_config(defaults(), &remote).unwrap_err();
    assert!(error.contains("admin.listen"), "{error}");
    let allowed = Overrides {
        admin_allow_remote: true,
        ..remote
    };
    check_config(defaults(), &allowed).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_that_cannot_be_applied_is_never_installed_and_rollback_works() {
    let good = format!("version = 3\n{}", config(GENEROUS_RATELIMIT));
    let harness = Harness::start(&good, None).await;
    let version = |status: serde_json::Value| status["configs"][0]["version"].clone();
    assert_eq!(version(harness.status().await), 3);

    for (what, bad, _) in UNAPPLIABLE {
        let text = format!("version = 4\n{}", config(bad));
        write_atomically(&harness.config_path, text.as_bytes());
        let reply = harness.admin_post("/config/reload").await;
        assert_eq!(reply.status, 422, "{what}: {}", reply.text());
        let status = harness.status().await;
        assert_eq!(version(status.clone()), 3, "{what}: {status:#}");
        assert!(status["apply_error"].is_null(), "{what}: {status:#}");
    }
    // Rolling back to the running version is not "stale": it is what runs.
    write_atomically(&harness.config_path, good.as_bytes());
    let reply = harness.admin_post("/config/reload").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(harness.get("/").await.status, 200);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_serve_task_fails_readiness_and_ends_the_process() {
    let mut harness = Harness::start(&config(GENEROUS_RATELIMIT), None).await;
    let ready = Request::get(harness.admin_url("/readyz"))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(harness.send(ready).await.unwrap().status, 200);

    harness.running().abort_serve_task();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let ready = Request::get(harness.admin_url("/readyz"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let reply = harness.send(ready).await.unwrap();
        if reply.status == 503 {
            assert!(reply.text().contains("listener"), "{}", reply.text());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "readyz stayed 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running = harness.running.take().unwrap();
    let outcome = tokio::time::timeout(BOUND, running.run_until(std::future::pending()))
        .await
        .expect("run_until returns once the serve task died");
    let reason = outcome.expect_err("a dead serve task is an error exit");
    assert!(reason.contains("listener"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_admin_token_replaces_the_old_one_on_reload() {
    let harness = Harness::start(&config(GENEROUS_RATELIMIT), None).await;
    let rotated = config(GENEROUS_RATELIMIT).replace(TOKEN, "rotated-token");
    write_atomically(&harness.config_path, rotated.as_bytes());

    let post = |token: &str| {
        Request::post(harness.admin_url("/modules/cache/kill"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    // The file watcher or this reload applies it, whichever comes first; the old token works
    // until then and never after.
    let _ = harness.admin_post("/config/reload").await;
    let deadline = tokio::time::Instant::now() + BOUND;
    while harness.send(post(TOKEN)).await.unwrap().status != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old token still works after the reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        harness.send(post("rotated-token")).await.unwrap().status,
        200
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_only_to_its_own_names() {
    let text = config(GENEROUS_RATELIMIT).replace(
        "[admin]\n",
        "[admin]\nallowed_hosts = [\"edge-admin.internal\"]\n",
    );
    let harness = Harness::start(&text, None).await;
    let get = |host: &str| {
        Request::get(harness.admin_url("/status"))
            .header("host", host)
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    // A page on attacker.example whose name now resolves to this address (DNS rebinding).
    let reply = harness.send(get("attacker.example:9901")).await.unwrap();
    assert_eq!(reply.status, 421, "{}", reply.text());
    for host in ["127.0.0.1", "localhost:9901", "edge-admin.internal"] {
        assert_eq!(harness.send(get(host)).await.unwrap().status, 200, "{host}");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_outage_switch_is_not_reachable_through_the_proxy() {
    let harness = Harness::start(&config(GENEROUS_RATELIMIT), None).await;
    let through_proxy = Request::post(harness.url("/_demo/outage?on=1"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let _ = harness.send(through_proxy).await.unwrap();
    assert_eq!(harness.get("/api/time").await.status, 200);

    let reply = harness.admin_post("/commands/demo-outage?on=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(harness.get("/api/time").await.status, 503);
    assert_eq!(
        harness
            .admin_post("/commands/demo-outage?on=0")
            .await
            .status,
        200
    );
    assert_eq!(harness.get("/api/time").await.status, 200);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_on_the_admin_port_cannot_lock_operators_out() {
    // 64 sockets that never send a byte take every admin slot (16 per address from four
    // addresses). Before: the admin server had no deadline before the first byte, so they held
    // the slots forever and /healthz never answered; now its 5 s head deadline frees them.
    let harness = Harness::start(&config(GENEROUS_RATELIMIT), None).await;
    let admin = harness.running().admin_addr;
    let mut silent = Vec::new();
    for host in 2..=5u8 {
        for _ in 0..16 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(std::net::SocketAddr::from(([127, 0, 0, host], 0)))
                .unwrap();
            silent.push(socket.connect(admin).await.unwrap());
        }
    }
    let health = Request::get(harness.admin_url("/healthz"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let reply = harness
        .send(health)
        .await
        .expect("an operator gets in within the bound");
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(silent);
    harness.stop().await;
}
