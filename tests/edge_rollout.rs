//! Fail small (issue 15): every new bot model is checked against recent traffic, tried on a
//! slice of clients, and promoted or rolled back on its own; new rate-limit rules are checked
//! against recent traffic; the promoted model survives a restart.
//!
//! Clients are told apart by `X-Forwarded-For` from a trusted loopback proxy, so one test
//! client plays many: the canary's cohort is a stable hash of the client address.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use ravelin_botscore::ScoreStatus;
use ravelin_edge::{BoxGuard, ExtraGuard, FailureMode, GuardConfig};
use ravelin_failsafe::{GuardError, GuardErrorKind, RequestHead, Verdict, guard_fn};
use ravelin_test_support::edge as support;
use ravelin_test_support::edge::{GENEROUS_RATELIMIT, Harness, Reply, config, feature_file};

/// Trusts the loopback test client's `X-Forwarded-For`, samples (nearly) every request, and lets a
/// small sample count as evidence.
const ROLLOUT_BASE: &str = r#"
[ingress]
trusted_proxies = ["127.0.0.1/32"]

[rollout]
samples_per_second = 10000

[rollout.bot_bounds]
min_samples = 30

[rollout.ratelimit_bounds]
min_samples = 30
"#;

/// One request through the proxy as the client `client` (an address behind the trusted proxy).
#[allow(clippy::unwrap_used)] // test helper: a panic is a failing test
async fn as_client(harness: &Harness, client: &str) -> Reply {
    harness
        .send(
            Request::get(harness.url("/echo"))
                .header("x-forwarded-for", client)
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap()
}

/// 64 distinct clients.
fn clients() -> Vec<String> {
    (0..64).map(|i| format!("198.51.100.{}", i + 1)).collect()
}

#[allow(clippy::unwrap_used)] // test helper: a panic is a failing test
fn bot_file(status: &serde_json::Value) -> serde_json::Value {
    status["feature_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "bot-features")
        .cloned()
        .unwrap()
}

/// Rounds of one request from every client — each reply checked by `check` — until the rollout
/// of the document `entry` picks from `/status` has ended (the controller ticks every second);
/// that document's entry then. Bounded: 60 rounds.
#[allow(clippy::panic, clippy::indexing_slicing)] // test helper: a panic is a failing test
async fn traffic_until_rollout_ends(
    harness: &Harness,
    entry: fn(&serde_json::Value) -> serde_json::Value,
    mut check: impl FnMut(&str, &Reply),
) -> serde_json::Value {
    for _ in 0..60 {
        for client in clients() {
            let reply = as_client(harness, &client).await;
            check(&client, &reply);
        }
        let document = entry(&harness.status().await);
        if document["rollout"].is_null() {
            return document;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the rollout did not end: {:#}",
        entry(&harness.status().await)
    )
}

async fn reload(harness: &Harness) -> serde_json::Value {
    let reply = harness.admin_post("/config/reload").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_calls_everyone_a_bot_never_serves_beyond_the_check() {
    let good = feature_file(1, 3, 3.0);
    let harness = Harness::start_with_files(
        &config(&format!(
            "{GENEROUS_RATELIMIT}\n{ROLLOUT_BASE}\n[botscore]\nfeature_file = \"{{dir}}/bot.json\"\nwatch_interval = \"0s\"\n"
        )),
        &[("bot.json", good.as_bytes())],
        None,
    )
    .await;
    for client in clients() {
        let reply = as_client(&harness, &client).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let before = as_client(&harness, "198.51.100.1")
        .await
        .echoed("x-bot-score");

    // Scenario 11: a well-formed file whose bias sends every score to 1.
    support::write_atomically(
        &harness.path("bot.json"),
        feature_file(2, 3, -1000.0).as_bytes(),
    );
    let report = reload(&harness).await;
    let refused = report["bot_feature_file"]["rejected"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        refused.contains("refused before activation")
            && refused.contains("would newly be called automated"),
        "{report:#}"
    );
    let status = harness.status().await;
    let file = bot_file(&status);
    assert_eq!(file["version"], 1, "{file:#}");
    assert_eq!(file["stage"], "promoted", "{file:#}");
    assert!(file["rollout"].is_null(), "never a canary: {file:#}");
    assert_eq!(file["last_rejection"]["kind"], "refused", "{file:#}");
    // Every client is still scored by the model in force.
    for client in clients() {
        let reply = as_client(&harness, &client).await;
        assert_eq!(reply.echoed("x-bot-score"), before, "{client}");
    }
    harness.stop().await;
}

/// A guard placed after bot scoring that fails on every request scored by model version 2:
/// a model that breaks only where it serves.
fn fails_on_model_2() -> ExtraGuard {
    ExtraGuard {
        guard: BoxGuard::new(guard_fn(
            "model-sensitive",
            |head: &RequestHead<'_>| -> Result<Verdict, GuardError> {
                match ScoreStatus::of(head.extensions) {
                    ScoreStatus::Scored(score) if score.model_version() == 2 => {
                        Err(GuardError::new(
                            GuardErrorKind::Internal,
                            Cow::Borrowed("model 2 breaks me"),
                        ))
                    }
                    _ => Ok(Verdict::allow()),
                }
            },
        )),
        policy: GuardConfig {
            failure_mode: FailureMode::Open,
            // Its failures are what the canary must see, not a circuit opened on them.
            circuit: ravelin_edge::CircuitConfig {
                disabled: true,
                ..ravelin_edge::CircuitConfig::default()
            },
            ..GuardConfig::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_breaks_on_the_canary_slice_is_rolled_back_while_the_baseline_serves() {
    let harness = Harness::start_with_files(
        &config(&format!(
            "{GENEROUS_RATELIMIT}\n{ROLLOUT_BASE}\n[botscore]\nfeature_file = \"{{dir}}/bot.json\"\nwatch_interval = \"0s\"\n\n[rollout.bot_features]\nshare = 0.5\nbake = \"10m\"\nmax_wait = \"20m\"\nmin_requests = 20\n"
        )),
        &[("bot.json", feature_file(1, 3, 3.0).as_bytes())],
        Some(fails_on_model_2()),
    )
    .await;
    for client in clients() {
        assert_eq!(as_client(&harness, &client).await.status, 200);
    }
    // A model the sample check passes (the same classes), which breaks a guard downstream.
    support::write_atomically(
        &harness.path("bot.json"),
        feature_file(2, 3, 2.9).as_bytes(),
    );
    let report = reload(&harness).await;
    assert_eq!(report["bot_feature_file"], "canary", "{report:#}");
    let status = harness.status().await;
    let rollout = &bot_file(&status)["rollout"];
    assert_eq!(rollout["version"], 2, "{status:#}");
    assert_eq!(rollout["share"], 0.5);

    // Traffic from every client until the controller rolls the canary back (it ticks every
    // second; the bake is ten minutes, so only the cohorts' comparison can end it now).
    let file = traffic_until_rollout_ends(&harness, bot_file, |_, reply| {
        assert_eq!(reply.status, 200, "fail-open: no client is refused");
        assert_eq!(
            reply.echoed("x-bot-score").len(),
            1,
            "every client is scored"
        );
    })
    .await;
    let last = &file["last_rollout"];
    assert_eq!(last["end"], "rolled_back", "{file:#}");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("guard failures, panics or timeouts")),
        "{file:#}"
    );
    assert!(
        last["canary"]["guard_failures"].as_u64() >= Some(20),
        "{file:#}"
    );
    assert_eq!(last["baseline"]["guard_failures"], 0, "{file:#}");
    assert!(last["baseline"]["requests"].as_u64() > Some(0), "{file:#}");
    assert_eq!(file["version"], 1, "the model in force never changed");
    assert_eq!(file["last_rejection"]["kind"], "rolled_back", "{file:#}");
    // After the rollback every client is served model 1: no guard fails any more.
    let failed = |text: &str| {
        support::metric(
            text,
            "ravelin_guard_decisions_total",
            &["model-sensitive", "failed_open"],
        )
    };
    let failed_before = failed(&harness.metrics().await);
    assert!(
        failed_before >= 20.0,
        "the failures were counted: {failed_before}"
    );
    for client in clients() {
        assert_eq!(as_client(&harness, &client).await.status, 200);
    }
    assert_eq!(
        failed(&harness.metrics().await),
        failed_before,
        "model 2 serves no one"
    );
    // The same file offered again is refused: it was tried and rolled back.
    let again = reload(&harness).await;
    assert!(
        again["bot_feature_file"]["rejected"]
            .as_str()
            .is_some_and(|r| r.contains("rolled back")),
        "{again:#}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_model_is_promoted_persisted_and_served_after_a_restart_with_a_bad_file() {
    let state = tempfile::tempdir().unwrap();
    let text = config(&format!(
        "{GENEROUS_RATELIMIT}\n{ROLLOUT_BASE}\n[botscore]\nfeature_file = \"{{dir}}/bot.json\"\nwatch_interval = \"0s\"\n\n[rollout.bot_features]\nshare = 0.5\nbake = \"1s\"\nmax_wait = \"1m\"\nmin_requests = 20\n"
    ))
    .replace(
        "[reload]\n",
        &format!("[reload]\nstate_dir = \"{}\"\n", state.path().display()),
    );
    let harness = Harness::start_with_files(
        &text,
        &[("bot.json", feature_file(1, 3, 3.0).as_bytes())],
        None,
    )
    .await;
    support::write_atomically(
        &harness.path("bot.json"),
        feature_file(2, 3, 2.9).as_bytes(),
    );
    assert_eq!(reload(&harness).await["bot_feature_file"], "canary");
    let file = traffic_until_rollout_ends(&harness, bot_file, |_, reply| {
        assert_eq!(reply.status, 200);
    })
    .await;
    assert_eq!(file["last_rollout"]["end"], "promoted", "{file:#}");
    assert_eq!(file["version"], 2, "{file:#}");
    let persisted = std::fs::read_to_string(state.path().join("bot-features.lkg")).unwrap();
    assert!(persisted.contains("\"model_version\": 2"), "{persisted}");
    harness.stop().await;

    // A restart whose feature file is broken serves the persisted, promoted model — not the
    // compiled-in one — and says so in /readyz.
    let restarted =
        Harness::start_with_files(&text, &[("bot.json", b"{ \"schema_version\": ")], None).await;
    let file = bot_file(&restarted.status().await);
    assert_eq!(file["version"], 2, "{file:#}");
    assert!(
        file["source"]
            .as_str()
            .is_some_and(|s| s.contains("bot-features.lkg")),
        "{file:#}"
    );
    assert_eq!(file["degraded"], true, "{file:#}");
    let ready = restarted
        .send(
            Request::get(restarted.admin_url("/readyz"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
    assert!(
        ready.text().contains("degraded") && ready.text().contains("bot-features"),
        "{}",
        ready.text()
    );
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_promotes_or_aborts_a_rollout_by_hand() {
    let harness = Harness::start_with_files(
        &config(&format!(
            "{GENEROUS_RATELIMIT}\n{ROLLOUT_BASE}\n[botscore]\nfeature_file = \"{{dir}}/bot.json\"\nwatch_interval = \"0s\"\n\n[rollout.bot_features]\nbake = \"1h\"\nmax_wait = \"2h\"\n"
        )),
        &[("bot.json", feature_file(1, 3, 3.0).as_bytes())],
        None,
    )
    .await;
    support::write_atomically(
        &harness.path("bot.json"),
        feature_file(2, 3, 2.9).as_bytes(),
    );
    assert_eq!(reload(&harness).await["bot_feature_file"], "canary");
    // Without the token: refused.
    let anonymous = harness
        .send(
            Request::post(harness.admin_url("/commands/rollout-promote?store=bot-features"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let unknown = harness
        .admin_post("/commands/rollout-promote?store=nope")
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.text());
    let promoted = harness
        .admin_post("/commands/rollout-promote?store=bot-features")
        .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    assert_eq!(promoted.json()["end"], "promoted_by_hand");
    assert_eq!(bot_file(&harness.status().await)["version"], 2);

    support::write_atomically(
        &harness.path("bot.json"),
        feature_file(3, 3, 2.8).as_bytes(),
    );
    assert_eq!(reload(&harness).await["bot_feature_file"], "canary");
    let aborted = harness
        .admin_post("/commands/rollout-abort?store=bot-features&reason=looks+wrong")
        .await;
    assert_eq!(aborted.status, 200, "{}", aborted.text());
    let file = bot_file(&harness.status().await);
    assert_eq!(file["version"], 2, "{file:#}");
    assert_eq!(file["last_rollout"]["end"], "aborted", "{file:#}");
    assert_eq!(
        file["last_rollout"]["reason"],
        "aborted by hand: looks wrong"
    );
    let nothing = harness
        .admin_post("/commands/rollout-abort?store=bot-features")
        .await;
    assert_eq!(nothing.status, 422, "no rollout left: {}", nothing.text());
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_rules_that_would_deny_most_recent_traffic_are_refused() {
    let rules = |limit: u32| {
        format!(
            "[ratelimit]\n[[ratelimit.rules]]\nname = \"per-ip\"\nlimit = {limit}\nwindow = \"1m\"\nkey = [\"client_ip\"]\n"
        )
    };
    let text = |limit: u32| config(&format!("{}\n{ROLLOUT_BASE}", rules(limit)));
    let harness = Harness::start(&text(1_000_000), None).await;
    // A few clients, many requests each: what a limit of 1 a minute would mostly deny.
    for round in 0..20 {
        for client in 0..5 {
            let reply = as_client(&harness, &format!("203.0.113.{}", client + 1)).await;
            assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
        }
    }
    support::write_atomically(&harness.config_path, text(1).as_bytes());
    let refused = harness.admin_post("/config/reload").await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    let status = harness.status().await;
    let main = status["configs"]
        .as_array()
        .and_then(|configs| configs.iter().find(|c| c["name"] == "edge-proxy"))
        .cloned()
        .unwrap_or_default();
    let reason = main["last_rejection"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("refused before activation")
            && reason.contains("candidate rules would deny"),
        "{status:#}"
    );
    assert_eq!(main["last_rejection"]["kind"], "refused");
    // The generous limit stays in force.
    for client in 0..5 {
        assert_eq!(
            as_client(&harness, &format!("203.0.113.{}", client + 1))
                .await
                .status,
            200
        );
    }
    // A rule that denies nobody more than before passes.
    support::write_atomically(&harness.config_path, text(500_000).as_bytes());
    let accepted = harness.admin_post("/config/reload").await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    harness.stop().await;
}

/// The main config with a canary: half of the clients, ten minutes of bake unless `bake` says
/// otherwise.
fn staged_config(bake: &str, extra: &str) -> String {
    config(&format!(
        "{GENEROUS_RATELIMIT}\n{ROLLOUT_BASE}\n[rollout.config]\nshare = 0.5\nbake = \"{bake}\"\nmax_wait = \"20m\"\nmin_requests = 20\n\n{extra}"
    ))
}

#[allow(clippy::unwrap_used)] // test helper: a panic is a failing test
fn main_config(status: &serde_json::Value) -> serde_json::Value {
    status["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "edge-proxy")
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_main_config_whose_origin_fails_its_canary_clients_is_rolled_back() {
    let harness = Harness::start(&staged_config("10m", ""), None).await;
    for client in clients() {
        assert_eq!(as_client(&harness, &client).await.status, 200);
    }
    // Well-formed, passes every check — and sends everything to an origin that is down.
    let broken = staged_config(
        "10m",
        "[[upstreams]]\nname = \"moved\"\nurl = \"http://127.0.0.1:9\"\nconnect_timeout = \"200ms\"\n",
    );
    support::write_atomically(&harness.config_path, broken.as_bytes());
    // The watcher may have taken it already: the reload then finds it unchanged.
    let report = reload(&harness).await;
    assert!(
        report["config"] == "canary" || report["config"] == "unchanged",
        "{report:#}"
    );
    assert_eq!(main_config(&harness.status().await)["stage"], "canary");

    let (mut served, mut failed) = (0, 0);
    let main = traffic_until_rollout_ends(&harness, main_config, |client, reply| {
        match reply.status.as_u16() {
            200 => served += 1,
            502..=504 => failed += 1,
            other => panic!("{client}: {other} {}", reply.text()),
        }
    })
    .await;
    let last = &main["last_rollout"];
    assert_eq!(last["end"], "rolled_back", "{main:#}");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("origin 5xx")),
        "{main:#}"
    );
    assert_eq!(last["baseline"]["origin_5xx"], 0, "{main:#}");
    // Only the canary's clients ever met the broken origin; the others kept being served.
    assert!(
        failed > 0 && served > 0,
        "both cohorts: {failed} failed, {served} served"
    );
    // Everyone is back on the config in force.
    for client in clients() {
        let reply = as_client(&harness, &client).await;
        assert_eq!(reply.status, 200, "{client}: {}", reply.text());
    }
    let main = main_config(&harness.status().await);
    assert_eq!(main["stage"], "promoted", "{main:#}");
    assert_eq!(main["last_rejection"]["kind"], "rolled_back", "{main:#}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_main_config_is_promoted_after_its_bake_and_applied_for_everyone() {
    let harness = Harness::start(&staged_config("1s", ""), None).await;
    // A change the demo origin serves identically: the sample rate of the checks.
    let candidate =
        staged_config("1s", "").replace("samples_per_second = 10000", "samples_per_second = 5000");
    support::write_atomically(&harness.config_path, candidate.as_bytes());
    let report = reload(&harness).await;
    assert!(
        report["config"] == "canary" || report["config"] == "unchanged",
        "{report:#}"
    );
    assert_eq!(main_config(&harness.status().await)["stage"], "canary");
    let main = traffic_until_rollout_ends(&harness, main_config, |_, reply| {
        assert_eq!(reply.status, 200);
    })
    .await;
    assert_eq!(main["last_rollout"]["end"], "promoted", "{main:#}");
    assert_eq!(main["stage"], "promoted", "{main:#}");
    assert_eq!(main["generation"], 1, "{main:#}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_main_config_whose_rules_refuse_its_canary_clients_is_rolled_back() {
    // The operator relies on the canary alone for rules ([rollout] ratelimit_check = false in
    // the config in force; a candidate cannot switch its own check off).
    let text = |limit: u32| {
        staged_config("10m", "")
        .replace(GENEROUS_RATELIMIT, &format!(
            "[ratelimit]\n[[ratelimit.rules]]\nname = \"per-ip\"\nlimit = {limit}\nwindow = \"1m\"\nkey = [\"client_ip\"]\n"
        ))
        .replace("samples_per_second = 10000\n", "samples_per_second = 10000\nratelimit_check = false\n")
    };
    let harness = Harness::start(&text(1_000_000), None).await;
    for client in clients() {
        assert_eq!(as_client(&harness, &client).await.status, 200);
    }
    // One request a minute per client: the canary's clients are refused from their second.
    support::write_atomically(&harness.config_path, text(1).as_bytes());
    let report = reload(&harness).await;
    assert!(
        report["config"] == "canary" || report["config"] == "unchanged",
        "{report:#}"
    );
    let main = traffic_until_rollout_ends(&harness, main_config, |client, reply| {
        assert!(
            reply.status == 200 || reply.status == 429,
            "{client}: {} {}",
            reply.status,
            reply.text()
        );
    })
    .await;
    let last = &main["last_rollout"];
    assert_eq!(last["end"], "rolled_back", "{main:#}");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("answered by the edge")),
        "{main:#}"
    );
    // The generous rules are in force for everyone again.
    for client in clients() {
        assert_eq!(as_client(&harness, &client).await.status, 200, "{client}");
    }
    harness.stop().await;
}
