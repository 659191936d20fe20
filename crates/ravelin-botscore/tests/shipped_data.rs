//! The trainer on the repository's training data (`data/`, described in `data/README.md`).
//!
//! The data are third-party files under their own licenses (MIT, BSD-2-Clause) and stay out of
//! the published crate (`exclude` in `Cargo.toml`, with this file and `tests/ja4.rs`); the crate
//! ships the model trained from them. Every test that reads `data/` lives here or in
//! `tests/ja4.rs`, so the tests shipped in the package run without it.
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
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ravelin_botscore::dataset::{Dataset, UaSource};
use serde_json::Value;

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_botscore"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A child that exits before reading closes the pipe: its exit status and stderr say why.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn loads_the_shipped_data_with_whole_crawler_entries_on_one_side() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let data = Dataset::load(&dir, 20251118, 0.25).unwrap();
    let count = |s: UaSource| data.samples.iter().filter(|x| x.source == s).count();
    assert_eq!(count(UaSource::Browser), 236);
    assert_eq!(count(UaSource::Spoofed), 452);
    assert_eq!(count(UaSource::Crawler), 1562);
    let mut sides = std::collections::HashMap::new();
    for s in &data.samples {
        let side = sides.entry(s.group.clone()).or_insert(s.held_out);
        assert_eq!(*side, s.held_out, "group {} split across sides", s.group);
    }
    assert!(data.held_out().count() > 300);
}

#[test]
fn train_writes_a_model_that_check_accepts_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data");
    let out_a = dir.path().join("a.json");
    let out_b = dir.path().join("b.json");
    let holdout = dir.path().join("holdout.jsonl");
    let report = dir.path().join("report.json");
    let args = |out: &Path| {
        vec![
            "train".to_owned(),
            "--data".into(),
            data.into(),
            "-o".into(),
            out.to_str().unwrap().into(),
            "--epochs".into(),
            "60".into(),
            "--l2".into(),
            "0.001".into(),
            "--model-version".into(),
            "42".into(),
        ]
    };
    let mut first = args(&out_a);
    first.extend([
        "--holdout-out".into(),
        holdout.to_str().unwrap().into(),
        "--report-json".into(),
        report.to_str().unwrap().into(),
    ]);
    let out = run(&first.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "precision",
        "recall",
        "ROC AUC",
        "recall at 1% FPR",
        "UA-only",
        "Full synthetic requests",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in {stdout}");
    }
    let out = run(&["check", out_a.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("model_version:  42"));
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(report["ua_only"]["roc_auc"].as_f64().unwrap() > 0.5);
    let held: Vec<Value> = std::fs::read_to_string(&holdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(held.len() > 300);
    assert!(
        held.iter()
            .all(|h| h["score"].is_u64() && h["source"].is_string())
    );

    let second = args(&out_b);
    let out = run(&second.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&out_a).unwrap(),
        std::fs::read(&out_b).unwrap(),
        "same seed, same model"
    );

    let out = run(
        &[
            "train",
            "--data",
            dir.path().to_str().unwrap(),
            "-o",
            out_b.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("crawlers.train.json"));
}
