//! The `botscore` binary end to end: check, score, train.
#![cfg(feature = "cli")]
// Helpers outside `#[test]` functions: a failed setup must stop the run loudly (clippy.toml's
// test exemptions only cover `#[test]` functions themselves).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_botscore"))
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A child that exits before reading (a rejected model, say) closes the pipe: the write then
    // fails with EPIPE. Its exit status and stderr, asserted by the caller, say why; the write error
    // would only hide that.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn model_file(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

fn rows(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"name": format!("t{i}"), "kind": "ua_token", "params": {"token": format!("tok{i}")}, "weight": -1.0}))
        .collect()
}

fn model(version: u64, features: Vec<Value>) -> Value {
    json!({"schema_version": 1, "model_version": version, "bias": 0.5, "features": features})
}

#[test]
fn check_accepts_the_shipped_model_with_a_summary() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/model/default.json");
    let out = run(&["check", shipped], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("OK "), "{stdout}");
    assert!(stdout.contains("(limit 256)"), "{stdout}");
    assert!(stdout.contains("sha256:"), "{stdout}");
}

#[test]
fn check_rejects_with_every_reason_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut features = rows(3);
    features.push(json!({"name": "t0", "kind": "ua_regex", "weight": 1.0}));
    features.push(json!({"name": "w", "kind": "ua_url", "weight": 5000.0}));
    let mut bad = model(1, features);
    bad["schema_version"] = json!(9);
    let path = model_file(dir.path(), "bad.json", &bad);
    let out = run(&["check", path.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for needle in [
        "REJECTED (invalid)",
        "schema_version: unsupported schema version 9",
        "features[3].name: duplicate feature name \"t0\" (first defined at features[0])",
        "features[3].kind: unknown feature kind \"ua_regex\"",
        "features[4].weight: value 5000 is outside",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn check_names_count_and_limit_for_the_incident_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut features = rows(150);
    features.extend(rows(150));
    let path = model_file(dir.path(), "doubled.json", &model(2, features));
    let out = run(&["check", path.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("features: 300 features exceeds limit 256"),
        "{stderr}"
    );
}

#[test]
fn check_rejects_empty_truncated_oversize_missing_and_stale_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::to_vec(&model(5, rows(2))).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.json", Vec::new(), "REJECTED (empty)"),
        (
            "truncated.json",
            good[..good.len() - 7].to_vec(),
            "REJECTED (parse)",
        ),
        ("big.json", vec![b' '; 300 * 1024], "REJECTED (too_large)"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = run(&["check", path.to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            text(&out.stderr).contains(expected),
            "{name}: {}",
            text(&out.stderr)
        );
    }
    let out = run(
        &["check", dir.path().join("nope.json").to_str().unwrap()],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("REJECTED (io)"));

    let previous = model_file(dir.path(), "published.json", &model(5, rows(2)));
    let older = model_file(dir.path(), "older.json", &model(4, rows(3)));
    let newer = model_file(dir.path(), "newer.json", &model(6, rows(3)));
    let out = run(
        &[
            "check",
            older.to_str().unwrap(),
            "--previous",
            previous.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("version 4 is stale: active version is 5"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        &[
            "check",
            newer.to_str().unwrap(),
            "--previous",
            previous.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        &["check", newer.to_str().unwrap(), "--max-features", "2"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("3 features exceeds limit 2"));
}

#[test]
fn score_writes_one_line_per_input_line_in_order() {
    let browser = json!({"method": "GET", "uri": "/", "version": "HTTP/2", "headers": [
        ["sec-ch-ua", "\"Chromium\";v=\"130\", \"Google Chrome\";v=\"130\", \"Not?A_Brand\";v=\"99\""],
        ["sec-ch-ua-mobile", "?0"], ["sec-ch-ua-platform", "\"Windows\""],
        ["user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"],
        ["accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"],
        ["sec-fetch-site", "none"], ["sec-fetch-mode", "navigate"], ["sec-fetch-dest", "document"],
        ["accept-encoding", "gzip, deflate, br, zstd"], ["accept-language", "en-US,en;q=0.9"]]});
    let curl = json!({"method": "GET", "uri": "/", "version": "HTTP/1.1", "headers": [["host", "x"], ["user-agent", "curl/8.5.0"], ["accept", "*/*"]]});
    let input = format!(
        "{browser}\n{curl}\n{{\"user_agent\": \"Googlebot/2.1 (+http://www.google.com/bot.html)\"}}\nnot json\n\n{{\"user_agent\": null}}\n{{\"headers\": [[\"bad name\", \"x\"]]}}\n{{\"useragent\": \"typo\"}}\n{}\n{{\"user_agent\": \"x\", \"headers\": []}}\n{{\"user_agent\": \"Mozilla/5.0\"}}",
        "x".repeat(1_100_000)
    );
    let out = run(&["score"], input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 11, "{lines:#?}");
    let score = |v: &Value| v["score"].as_u64().unwrap();
    assert!(score(&lines[0]) >= 70, "{}", lines[0]);
    assert!(score(&lines[1]) <= 5, "{}", lines[1]);
    assert!(score(&lines[2]) <= 29, "{}", lines[2]);
    assert_eq!(lines[0]["verified_bot"], json!(false));
    let reasons = lines[1]["reasons"].as_array().unwrap();
    assert!(!reasons.is_empty() && reasons.len() <= 5);
    assert!(reasons[0]["feature"].is_string() && reasons[0]["contribution"].is_number());
    for (i, needle) in [
        (3, "line 4: not a record"),
        (4, "line 5: empty line"),
        (6, "line 7: invalid header name"),
        (7, "line 8: not a record"),
        (8, "line 9: line exceeds"),
        (9, "line 10: give either"),
    ] {
        let error = lines[i]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("line {i}: {}", lines[i]));
        assert!(error.contains(needle), "{error}");
    }
    assert!(score(&lines[5]) <= 29, "no user agent at all: {}", lines[5]);
    assert!(lines[10]["score"].is_u64());
    // Keys come out in the documented order.
    let first = text(&out.stdout).lines().next().unwrap().to_owned();
    assert!(first.starts_with("{\"score\":"), "{first}");
}

#[test]
fn score_uses_a_model_file_and_verified_bots() {
    let dir = tempfile::tempdir().unwrap();
    let harsh = model_file(
        dir.path(),
        "m.json",
        &json!({"schema_version": 1, "model_version": 1, "bias": 10.0,
        "features": [{"name": "ua_token_bot", "kind": "ua_token", "params": {"token": "bot"}, "weight": -20.0}]}),
    );
    let verified = dir.path().join("verified.json");
    std::fs::write(
        &verified,
        r#"{"bots":[{"name":"ex","user_agent_token":"ExampleBot","ranges":["192.0.2.0/24"]}]}"#,
    )
    .unwrap();
    let input = concat!(
        r#"{"user_agent":"ExampleBot/1.0","peer":"192.0.2.1"}"#,
        "\n",
        r#"{"user_agent":"ExampleBot/1.0","peer":"203.0.113.9"}"#,
        "\n",
        r#"{"user_agent":"Mozilla/5.0"}"#,
        "\n",
        r#"{"user_agent":"x","peer":"not-an-ip"}"#,
        "\n",
    );
    let out = run(
        &[
            "score",
            "--model",
            harsh.to_str().unwrap(),
            "--verified",
            verified.to_str().unwrap(),
        ],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({"score": 1, "verified_bot": true, "reasons": [{"feature": "ua_token_bot", "contribution": -20.0}]})
    );
    assert_eq!(lines[1]["verified_bot"], json!(false));
    assert_eq!(lines[2]["score"], json!(99));
    assert!(lines[3]["error"].as_str().unwrap().contains("peer"));

    // An invalid model file is refused up front with the reasons.
    let bad = model_file(dir.path(), "bad.json", &model(1, vec![]));
    let out = run(
        &["score", "--model", bad.to_str().unwrap()],
        b"{\"user_agent\":\"x\"}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no features"));
}

/// A sample file: three browser heads for each tool head (`score`'s input format).
fn sample_file(dir: &Path, n: usize) -> PathBuf {
    let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let mut lines = String::new();
    for i in 0..n {
        let record = if i % 4 == 0 {
            json!({"version": "HTTP/1.1", "headers": [["user-agent", "curl/8.5.0"], ["accept", "*/*"]]})
        } else {
            json!({"version": "HTTP/2", "headers": [
                ["user-agent", chrome],
                ["accept", "text/html,application/xhtml+xml"],
                ["accept-language", "en-US,en;q=0.9"],
                ["sec-fetch-mode", "navigate"],
                ["sec-fetch-site", "none"],
                ["sec-fetch-dest", "document"],
                ["upgrade-insecure-requests", "1"]
            ]})
        };
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    let path = dir.join("sample.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

#[test]
fn check_with_a_sample_refuses_a_model_with_an_absurd_effect() {
    let dir = tempfile::tempdir().unwrap();
    let shipped: Value = serde_json::from_str(ravelin_botscore::BUILTIN_MODEL_JSON).unwrap();
    let mut absurd = shipped.clone();
    absurd["bias"] = json!(-1000.0);
    absurd["model_version"] = json!(2);
    let absurd = model_file(dir.path(), "absurd.json", &absurd);
    let sample = sample_file(dir.path(), 400);
    let sample = sample.to_str().unwrap();

    // Without a sample the file is well-formed: accepted (the gap scenario 11 is about).
    let out = run(&["check", absurd.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // With one, its effect against the published (here: built-in) model refuses it.
    let out = run(
        &["check", absurd.to_str().unwrap(), "--sample", sample],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("REJECTED (effect)"), "{stderr}");
    assert!(
        stderr.contains("75.0% of 400 sampled requests would newly be called automated"),
        "{stderr}"
    );

    // The shipped model against itself moves nothing.
    let same = model_file(dir.path(), "same.json", &shipped);
    let out = run(&["check", same.to_str().unwrap(), "--sample", sample], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("class changed 0 (0.0%)"),
        "{}",
        text(&out.stdout)
    );

    // Looser bounds are the operator's to set.
    let out = run(
        &[
            "check",
            absurd.to_str().unwrap(),
            "--sample",
            sample,
            "--max-bot-share",
            "0.9",
            "--max-class-change",
            "0.9",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A malformed sample line is an error, not a pass.
    std::fs::write(dir.path().join("bad.jsonl"), "{\"nope\": 1}\n").unwrap();
    let bad = dir.path().join("bad.jsonl");
    let out = run(
        &[
            "check",
            same.to_str().unwrap(),
            "--sample",
            bad.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("sample line 1"),
        "{}",
        text(&out.stderr)
    );
}

/// A file with `bias = +1000` lets every bot in: refused for the automated requests it would
/// call human even when the class-change bound is loosened.
///
/// There is no CLI test for a candidate refused for requests it cannot score: `check` loads
/// FILE through the same validation as the store, and a valid file scores every request (its
/// weights are bounded by `MAX_ABS_WEIGHT`, so the logit is finite). That bound is tested
/// through the library, with a model that was never prepared
/// (`effect::tests::a_candidate_that_cannot_score_counts_against_itself`).
#[test]
fn check_with_a_sample_refuses_a_model_that_lets_bots_in() {
    let dir = tempfile::tempdir().unwrap();
    let shipped: Value = serde_json::from_str(ravelin_botscore::BUILTIN_MODEL_JSON).unwrap();
    let mut lenient = shipped;
    lenient["bias"] = json!(1000.0);
    lenient["model_version"] = json!(2);
    let lenient = model_file(dir.path(), "lenient.json", &lenient);
    let lenient = lenient.to_str().unwrap();
    let sample = sample_file(dir.path(), 400);
    let sample = sample.to_str().unwrap();

    let out = run(
        &[
            "check",
            lenient,
            "--sample",
            sample,
            "--max-class-change",
            "0.9",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("REJECTED (effect)"), "{stderr}");
    assert!(
        stderr.contains(
            "100.0% of the 100 sampled requests called automated would newly be called human"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("change class"), "{stderr}");
    assert!(
        text(&out.stdout).contains("newly human 100 (100.0% of automated)"),
        "{}",
        text(&out.stdout)
    );

    // The operator can accept it, with both bounds loosened.
    let out = run(
        &[
            "check",
            lenient,
            "--sample",
            sample,
            "--max-class-change",
            "0.9",
            "--max-newly-human",
            "1",
            "--max-newly-unscored",
            "0",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_refuses_bounds_outside_0_to_1_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample_file(dir.path(), 10);
    let sample = sample.to_str().unwrap();
    let shipped = model_file(
        dir.path(),
        "same.json",
        &serde_json::from_str(ravelin_botscore::BUILTIN_MODEL_JSON).unwrap(),
    );
    let shipped = shipped.to_str().unwrap();
    for (flag, value, expected) in [
        (
            "--max-newly-human",
            "1.5",
            "--max-newly-human: value 1.5 is outside 0..=1",
        ),
        (
            "--max-newly-unscored",
            "-0.01",
            "--max-newly-unscored: value -0.01 is outside 0..=1",
        ),
        (
            "--max-bot-share",
            "NaN",
            "--max-bot-share: value NaN is not finite",
        ),
        (
            "--min-samples",
            "10001",
            "--min-samples: value 10001 is outside 0..=10000",
        ),
    ] {
        let arg = format!("{flag}={value}");
        let out = run(&["check", shipped, "--sample", sample, &arg], b"");
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
    }
}
