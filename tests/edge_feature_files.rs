//! Bad bot feature files against the assembled proxy: each is rejected with its reason, shown in
//! `/status` and `/metrics`, and the model in force does not change.

use ravelin_test_support::edge as support;
use ravelin_test_support::edge::{
    GENEROUS_RATELIMIT, Harness, config, doubled, feature_file, metric,
};

/// A good file installs for every client at once: these tests are about rejections; staging a
/// good file through a canary is `edge_rollout.rs`'s.
const INSTALL_AT_ONCE: &str = "[rollout.bot_features]\ncanary = false\n";

/// The bot score the origin received for one request through the proxy.
#[allow(clippy::unwrap_used)] // test helper: a panic is a failing test
async fn score(harness: &Harness) -> String {
    let reply = harness.get("/echo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let scores = reply.echoed("x-bot-score");
    assert_eq!(
        scores.len(),
        1,
        "exactly one score header reaches the origin: {scores:?}"
    );
    scores.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_feature_file_is_rejected_and_the_model_stays() {
    // 150 features in force: doubling them (the 18 November file) passes the 256-feature limit
    // while the file only doubles in size, under the store's growth bound (4x).
    let good = feature_file(5, 150, 3.0);
    let text = config(&format!(
        "{GENEROUS_RATELIMIT}\n{INSTALL_AT_ONCE}\n[botscore]\nfeature_file = \"{{dir}}/bot.json\"\nwatch_interval = \"0s\"\n"
    ));
    let harness = Harness::start_with_files(&text, &[("bot.json", good.as_bytes())], None).await;
    let status = harness.status().await;
    let active = &status["feature_files"][0];
    assert_eq!(active["version"], 5, "{status:#}");
    let digest = active["digest"].clone();
    let expected = score(&harness).await;

    let huge_weight = good.replacen("\"weight\": -0.5", "\"weight\": 1e300", 1);
    assert_ne!(huge_weight, good);
    let nan_weight = good.replacen("\"weight\": -0.5", "\"weight\": NaN", 1);
    let wrong_schema = good.replacen(
        &format!("\"schema_version\": {}", ravelin_botscore::SCHEMA_VERSION),
        "\"schema_version\": 99",
        1,
    );
    assert_ne!(wrong_schema, good);
    let wrong_types = good.replacen("\"bias\": 3.0", "\"bias\": \"high\"", 1);
    assert_ne!(wrong_types, good);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("empty", Vec::new(), "empty", "empty"),
        (
            "truncated",
            good.as_bytes()[..good.len() / 2].to_vec(),
            "parse",
            "parse error",
        ),
        (
            "not json",
            b"features: [f1, f2]\n".to_vec(),
            "parse",
            "parse error",
        ),
        (
            "10 MB",
            vec![b' '; 10 * 1024 * 1024],
            "too_large",
            "exceeds the size limit",
        ),
        ("huge weight", huge_weight.into_bytes(), "invalid", "weight"),
        (
            "NaN weight",
            nan_weight.into_bytes(),
            "parse",
            "parse error",
        ),
        (
            "wrong schema",
            wrong_schema.into_bytes(),
            "invalid",
            "schema",
        ),
        (
            "wrong types",
            wrong_types.into_bytes(),
            "parse",
            "invalid type",
        ),
        (
            "doubled rows (18 November)",
            doubled(&good).into_bytes(),
            "invalid",
            "256",
        ),
        (
            "six times the size (scenario 2)",
            format!("{good}{}", " ".repeat(good.len() * 5)).into_bytes(),
            "growth",
            "growth limit",
        ),
        (
            "older version",
            feature_file(4, 60, -3.0).into_bytes(),
            "stale",
            "version 4",
        ),
    ];
    for (name, bytes, kind, reason) in &cases {
        support::write_atomically(&harness.path("bot.json"), bytes);
        let reply = harness.admin_post("/config/reload").await;
        assert_eq!(
            reply.status,
            200,
            "{name}: the main config is fine: {}",
            reply.text()
        );
        let report = reply.json();
        let rejected = report["bot_feature_file"]["rejected"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            rejected.contains(reason),
            "{name}: reload report {report:#} should name {reason:?}"
        );

        let status = harness.status().await;
        let files = &status["feature_files"][0];
        assert_eq!(files["version"], 5, "{name}: model unchanged");
        assert_eq!(files["digest"], digest, "{name}: model unchanged");
        assert_eq!(files["last_rejection"]["kind"], *kind, "{name}: {files:#}");
        assert!(
            files["last_rejection"]["reason"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{name}: {files:#}"
        );
        assert_eq!(
            score(&harness).await,
            expected,
            "{name}: requests still scored by model 5"
        );
    }

    let metrics = harness.metrics().await;
    for kind in ["empty", "parse", "too_large", "invalid", "stale", "growth"] {
        let n = metric(
            &metrics,
            "ravelin_config_rejections_total",
            &["bot-features", &format!("reason=\"{kind}\"")],
        );
        assert!(
            n >= 1.0,
            "rejections of kind {kind} are counted in /metrics:\n{metrics}"
        );
    }

    // A valid newer file is still accepted afterwards.
    support::write_atomically(
        &harness.path("bot.json"),
        feature_file(6, 60, -3.0).as_bytes(),
    );
    let reply = harness.admin_post("/config/reload").await;
    assert_eq!(
        reply.json()["bot_feature_file"],
        "installed",
        "{}",
        reply.text()
    );
    assert_ne!(
        score(&harness).await,
        expected,
        "model 6 scores differently"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_feature_file_is_reported_as_missing_not_by_an_old_reason() {
    // Before: after a rejected file, deleting the file changed nothing in /status: the watcher
    // only recorded a problem when none was on record, so the old parse error stayed as the
    // reason while the real state (no file at all) went unreported.
    let good = feature_file(5, 60, 3.0);
    let text = config(&format!(
        "{GENEROUS_RATELIMIT}\n{INSTALL_AT_ONCE}\n[botscore]\nfeature_file = \"{{dir}}/bot.json\"\nwatch_interval = \"20ms\"\n"
    ));
    let harness = Harness::start_with_files(&text, &[("bot.json", good.as_bytes())], None).await;
    let path = harness.path("bot.json");
    let reason = |status: &serde_json::Value| {
        status["feature_files"][0]["last_rejection"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    support::write_atomically(&path, b"{ not json");
    support::eventually("the bad file is rejected", || async {
        reason(&harness.status().await).contains("parse")
    })
    .await;

    std::fs::remove_file(&path).unwrap();
    support::eventually("the deleted file is reported as missing", || async {
        reason(&harness.status().await).contains("missing")
    })
    .await;
    let status = harness.status().await;
    assert_eq!(
        status["feature_files"][0]["version"], 5,
        "the last good model serves: {status:#}"
    );
    assert_eq!(harness.get("/").await.status, 200);

    // A good file again clears the reason.
    support::write_atomically(&path, feature_file(6, 60, 3.0).as_bytes());
    support::eventually("the good file is installed", || async {
        harness.status().await["feature_files"][0]["version"] == 6
    })
    .await;
    let status = harness.status().await;
    assert!(
        status["feature_files"][0]["last_rejection"].is_null(),
        "{status:#}"
    );
    harness.stop().await;
}
