//! Empty or vanished lists against the assembled proxy (issue 15, scenarios 4, 5, 24) and the
//! kill switches per rate-limit rule and per bot route (scenario 13), over real sockets.
//!
//! - Startup with a config naming no upstream and not asking for the demo origin fails, naming
//!   `[demo] enabled`.
//! - On reload, a file cut short before `[[upstreams]]`, a comment-only file, `upstreams = []`,
//!   an emptied upstream list with the demo asked for, `rules = []` and vanished
//!   `[[ratelimit.rules]]` are each refused with the reason in `/status`, and the origin in force
//!   keeps answering (the edge never starts its demo origin).
//! - A killed rule stops limiting while the other still limits; a killed bot route stops
//!   challenging; flipping under traffic answers no 5xx.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use ravelin_edge::{EdgeOptions, Overrides, StartError, start};
use ravelin_test_support::edge::{Harness, Reply, config, eventually, write_atomically};

/// An origin of its own (a demo-origin instance on a loopback port, configured as an upstream):
/// while it answers, the edge's own demo origin must never start.
async fn origin() -> ravelin_proxy::demo::DemoHandle {
    ravelin_proxy::demo::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The upstream section naming `url`, with a route to it.
fn upstream(url: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"origin\"\nurl = \"{url}\"\n[[routes]]\nupstream = \"origin\"\n"
    )
}

/// Two rules keyed by a header each, one request per minute: a request with `x-alpha` meets
/// only `alpha`, one with `x-beta` only `beta`.
const RULES: &str = "[ratelimit]\n\
    [[ratelimit.rules]]\nname = \"alpha\"\nlimit = 1\nwindow = \"60s\"\nkey = [\"header:x-alpha\"]\n\
    [[ratelimit.rules]]\nname = \"beta\"\nlimit = 1\nwindow = \"60s\"\nkey = [\"header:x-beta\"]\n";

/// GET `/echo` through the edge with `header: value`.
async fn get_with(harness: &Harness, header: &str, value: &str) -> Reply {
    harness
        .send(
            Request::get(harness.url("/echo"))
                .header("user-agent", "ravelin-e2e/1.0")
                .header(header, value)
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap()
}

/// The edge forwards to `origin`, not to a demo origin of its own.
async fn serves_the_origin(harness: &Harness) {
    let reply = harness.get("/echo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        harness.running().edge.demo_url().await.is_none(),
        "the edge started its demo origin"
    );
    let applied = harness.running().edge.applied().await.unwrap();
    assert_eq!(applied.upstreams.len(), 1, "the upstream in force changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_without_an_upstream_or_the_demo_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("no-upstream.toml", "[server]\nlisten = \"127.0.0.1:0\"\n"),
        ("comment-only.toml", "# generated: nothing today\n"),
        ("empty-list.toml", "upstreams = []\n"),
    ] {
        let path = dir.path().join(name);
        write_atomically(&path, text.as_bytes());
        let started = start(EdgeOptions {
            config_path: Some(path),
            overrides: Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                admin: Some("127.0.0.1:0".parse().unwrap()),
                ..Overrides::default()
            },
            ..EdgeOptions::default()
        })
        .await;
        match started {
            Err(StartError::Config(reason)) => {
                assert!(reason.contains("[demo] enabled"), "{name}: {reason}");
            }
            Err(other) => panic!("{name}: refused for another reason: {other}"),
            Ok(running) => {
                running.shutdown().await;
                panic!("{name}: started without an upstream or the demo asked for");
            }
        }
    }
    // Asking for it is enough.
    let path = dir.path().join("demo.toml");
    write_atomically(&path, b"[demo]\nenabled = true\n");
    let running = start(EdgeOptions {
        config_path: Some(path),
        overrides: Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            admin: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        },
        ..EdgeOptions::default()
    })
    .await
    .unwrap();
    assert!(running.edge.demo_url().await.is_some());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_or_vanished_lists_are_refused_on_reload_and_the_origin_keeps_serving() {
    let origin = origin().await;
    let good_body = format!("{}\n{RULES}", upstream(&origin.url()));
    // `config` asks for the demo origin; the documents below are written as a generator or a
    // truncated copy would leave them, each on its own.
    let good = config(&good_body);
    let harness = Harness::start(&good, None).await;
    serves_the_origin(&harness).await;

    let admin = "[admin]\ntoken = \"e2e-token\"\n[reload]\nwatch_interval = \"50ms\"\n";
    let upstreams_only = format!(
        "{admin}{}",
        "[[upstreams]]\nname = \"origin\"\nurl = \"URL\"\n[[routes]]\nupstream = \"origin\"\n"
            .replace("URL", &origin.url())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        // Cut short at the section boundary before [[upstreams]].
        (
            "truncated before [[upstreams]]",
            admin.to_owned(),
            "no [[upstreams]]",
        ),
        (
            "comment-only",
            "# generated: no entries today\n".to_owned(),
            "no settings",
        ),
        (
            "upstreams = []",
            "upstreams = []\n".to_owned(),
            "no settings",
        ),
        (
            "upstreams emptied, demo asked for",
            format!("{admin}[demo]\nenabled = true\n{RULES}"),
            "upstreams: the document in force has 1 upstreams",
        ),
        (
            "rules = []",
            format!("{upstreams_only}[ratelimit]\nrules = []\n"),
            "ratelimit.rules: the document in force has 2 rate-limit rules",
        ),
        (
            "[[ratelimit.rules]] gone",
            upstreams_only.clone(),
            "[[ratelimit.rules]] is gone",
        ),
    ];
    for (i, (what, text, reason)) in cases.iter().enumerate() {
        write_atomically(&harness.config_path, text.as_bytes());
        let needle = reason.to_string();
        eventually(&format!("{what}: refused in /status"), || {
            let needle = needle.clone();
            let harness = &harness;
            async move { harness.status().await.to_string().contains(&needle) }
        })
        .await;
        serves_the_origin(&harness).await;
        // The rules in force still limit: the second alpha request in the minute is refused.
        let key = format!("k-{i}");
        assert_eq!(
            get_with(&harness, "x-alpha", &key).await.status,
            200,
            "{what}"
        );
        assert_eq!(
            get_with(&harness, "x-alpha", &key).await.status,
            429,
            "{what}"
        );
    }

    // With `[lists] allow_empty = true` the same document is applied.
    let allowed = format!("{upstreams_only}[ratelimit]\nrules = []\n[lists]\nallow_empty = true\n");
    write_atomically(&harness.config_path, allowed.as_bytes());
    eventually("allow_empty applies the emptied rules", || async {
        let status = harness.status().await;
        status["apply_error"].is_null()
            && harness
                .running()
                .edge
                .applied()
                .await
                .is_some_and(|c| c.ratelimit.rules.is_empty())
    })
    .await;
    serves_the_origin(&harness).await;
    harness.stop().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rule_stops_limiting_while_the_others_still_limit() {
    let origin = origin().await;
    let text = config(&format!(
        "{}\n{RULES}[[ratelimit.rules]]\nname = \"gamma\"\nlimit = 1\nwindow = \"60s\"\n\
         key = [\"header:x-gamma\"]\nkilled = true\n",
        upstream(&origin.url())
    ));
    let harness = Harness::start(&text, None).await;
    let status = harness.status().await;
    let switches = &status["kill_switches"];
    assert_eq!(switches["ratelimit.rule.alpha"], false, "{status:#}");
    assert_eq!(switches["ratelimit.rule.gamma"], true, "{status:#}");

    // Killed from the file: never limits.
    for _ in 0..5 {
        assert_eq!(get_with(&harness, "x-gamma", "g").await.status, 200);
    }
    // Killed through the admin API: alpha stops limiting, beta still limits.
    let reply = harness
        .admin_post("/modules/ratelimit.rule.alpha/kill")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for _ in 0..5 {
        assert_eq!(get_with(&harness, "x-alpha", "a").await.status, 200);
    }
    assert_eq!(get_with(&harness, "x-beta", "b").await.status, 200);
    assert_eq!(get_with(&harness, "x-beta", "b").await.status, 429);
    let status = harness.status().await;
    assert_eq!(
        status["kill_switches"]["ratelimit.rule.alpha"], true,
        "{status:#}"
    );
    let ratelimit = status["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ratelimit")
        .unwrap();
    assert_eq!(
        ratelimit["detail"]["killed_rules"],
        serde_json::json!(["alpha", "gamma"]),
        "{status:#}"
    );

    // An unrelated reload keeps the operator's flip.
    let reloaded = format!("version = 2\n{text}");
    write_atomically(&harness.config_path, reloaded.as_bytes());
    eventually("the unrelated reload is applied", || async {
        harness
            .running()
            .edge
            .applied()
            .await
            .is_some_and(|c| c.version == Some(2))
    })
    .await;
    assert!(
        harness
            .running()
            .edge
            .switchboard()
            .is_engaged("ratelimit.rule.alpha")
            .unwrap()
    );
    // Revived: alpha limits again (a fresh key: the killed requests were not counted).
    harness
        .admin_post("/modules/ratelimit.rule.alpha/revive")
        .await;
    assert_eq!(get_with(&harness, "x-alpha", "fresh").await.status, 200);
    assert_eq!(get_with(&harness, "x-alpha", "fresh").await.status, 429);

    // Flipping rapidly under traffic: no 5xx, no lost answer.
    let flipper = {
        let board = harness.running().edge.switchboard().clone();
        tokio::spawn(async move {
            for i in 0..200 {
                board
                    .set("ratelimit.rule.beta", i % 2 == 0, "test")
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    for i in 0..100 {
        let reply = get_with(&harness, "x-beta", &format!("load-{}", i % 7)).await;
        assert!(
            reply.status == 200 || reply.status == 429,
            "{}: {}",
            reply.status,
            reply.text()
        );
    }
    flipper.await.unwrap();
    harness.stop().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_bot_route_stops_challenging() {
    let origin = origin().await;
    let text = config(&format!(
        "{}\n[[botscore.routes]]\nprefix = \"/echo\"\nname = \"echo\"\nchallenge_at_or_below = 99\n\
         [[botscore.routes]]\nprefix = \"/\"\nchallenge_at_or_below = 99\nkilled = true\n",
        upstream(&origin.url())
    ));
    let harness = Harness::start(&text, None).await;
    let status = harness.status().await;
    assert_eq!(
        status["kill_switches"]["botscore.route.echo"], false,
        "{status:#}"
    );
    assert_eq!(
        status["kill_switches"]["botscore.route.1"], true,
        "{status:#}"
    );
    // Every score is at or below 99: the live route challenges, the killed one (`/`) does not.
    assert_eq!(harness.get("/echo").await.status, 403);
    assert_eq!(harness.get("/").await.status, 200);

    let reply = harness
        .admin_post("/modules/botscore.route.echo/kill")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = harness.get("/echo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The default route decides: annotate, so the origin receives a score.
    assert_eq!(reply.echoed("x-bot-score").len(), 1, "{}", reply.text());

    harness
        .admin_post("/modules/botscore.route.echo/revive")
        .await;
    assert_eq!(harness.get("/echo").await.status, 403);

    // The file releases the `/` route: its value changed, so it is applied.
    write_atomically(
        &harness.config_path,
        text.replace("killed = true", "killed = false").as_bytes(),
    );
    eventually("the released route challenges", || async {
        harness.get("/").await.status == 403
    })
    .await;
    harness.stop().await;
    origin.shutdown().await;
}
