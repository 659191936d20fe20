//! The main config's store guards in the assembled proxy (issue 15): `[reload] state_dir` lets a
//! restart with a broken config start from the persisted last good one, degraded and saying so;
//! `--check` judges a file as that restart would; `[reload] max_growth` refuses a config many
//! times the size of the one in force.

// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use ravelin_edge::config::ReloadSection;
use ravelin_edge::{ConfigSource, EdgeConfig, Overrides, check_config};
use ravelin_test_support::edge::{Harness, config, eventually, write_atomically};

/// A test config whose `[reload]` table persists to `state` (`extra` is appended after it).
fn persisted_config(state: &Path, extra: &str) -> String {
    config(&format!("state_dir = \"{}\"\n{extra}", state.display()))
}

/// The main config's `/status` entry.
async fn main_config(harness: &Harness) -> serde_json::Value {
    let status = harness.status().await;
    status["configs"]
        .as_array()
        .and_then(|configs| configs.iter().find(|c| c["name"] == "edge-proxy"))
        .cloned()
        .unwrap_or_else(|| panic!("no edge-proxy config in {status:#}"))
}

#[test]
fn reload_settings_are_read_from_a_file_the_store_would_reject() {
    // Valid TOML, invalid document: the [reload] table alone is read.
    let peeked = ReloadSection::peek(
        b"[server]\nlisten = 'not an address'\n[reload]\nstate_dir = '/var/lib/r'\nmax_growth = 8\n",
    );
    assert_eq!(peeked.state_dir.as_deref(), Some(Path::new("/var/lib/r")));
    assert_eq!(peeked.max_growth, 8.0);
    // Not TOML at all (cut short): the [reload] lines as far as they go.
    let peeked = ReloadSection::peek(
        b"[reload] # persisted\nstate_dir = \"/var/lib/r\" # here\nmax_growth = 2.5\n[[upstreams]]\nname = \"a\nurl =",
    );
    assert_eq!(peeked.state_dir.as_deref(), Some(Path::new("/var/lib/r")));
    assert_eq!(peeked.max_growth, 2.5);
    // Keys of other tables, values out of range and relative paths are not taken.
    let peeked = ReloadSection::peek(
        b"state_dir = '/elsewhere'\n[reload]\nstate_dir = 'relative'\nmax_growth = 0.5\n[x\n",
    );
    assert_eq!(peeked, ReloadSection::default());
    assert_eq!(ReloadSection::peek(b"\xff\xfe"), ReloadSection::default());
    assert_eq!(
        ReloadSection::peek(b"[reload]\nmax_growth = 0\n").max_growth,
        0.0
    );
}

#[test]
fn the_command_line_state_dir_wins_over_the_file() {
    // The file is generated input; the directory the process writes to is the operator's.
    let flags = Overrides {
        state_dir: Some(PathBuf::from("/var/lib/ravelin")),
        ..Overrides::default()
    };
    let peeked =
        ReloadSection::peek(b"[reload]\nstate_dir = '/tmp/elsewhere'\n").overridden(&flags);
    assert_eq!(
        peeked.state_dir.as_deref(),
        Some(Path::new("/var/lib/ravelin"))
    );
    let applied = flags.apply(&EdgeConfig::default());
    assert_eq!(
        applied.reload.state_dir.as_deref(),
        Some(Path::new("/var/lib/ravelin"))
    );
    // Without the flag, the file's.
    let peeked = ReloadSection::peek(b"[reload]\nstate_dir = '/tmp/elsewhere'\n")
        .overridden(&Overrides::default());
    assert_eq!(
        peeked.state_dir.as_deref(),
        Some(Path::new("/tmp/elsewhere"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_broken_config_starts_from_the_persisted_one() {
    let state = tempfile::tempdir().unwrap();
    let good = persisted_config(state.path(), "");
    let first = Harness::start(&good, None).await;
    let active = main_config(&first).await;
    assert_eq!(active["source"], first.config_path.display().to_string());
    let copy = state.path().join("edge-proxy.lkg");
    assert!(copy.exists());
    first.stop().await;

    // The file is cut short (not TOML any more), and the proxy restarts.
    let broken = format!("{good}\n[[upstreams]]\nname = \"cut");
    let restarted = Harness::start(&broken, None).await;
    let active = main_config(&restarted).await;
    assert_eq!(
        active["source"],
        format!("persisted copy {}", copy.display()),
        "{active:#}"
    );
    assert_eq!(active["last_rejection"]["kind"], "parse", "{active:#}");
    assert_eq!(active["degraded"], true, "{active:#}");
    assert_eq!(restarted.get("/").await.status, 200);
    // Ready (it serves the last good config), and degraded, saying why (scenario 8).
    let ready = restarted
        .send(
            http::Request::get(restarted.admin_url("/readyz"))
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
    let text = ready.text();
    assert!(
        text.starts_with("ready, degraded: edge-proxy serves persisted copy"),
        "{text}"
    );

    // The file is fixed: the watcher installs it and the proxy is no longer degraded.
    write_atomically(
        &restarted.config_path,
        format!("{good}\n# fixed\n").as_bytes(),
    );
    let path = restarted.config_path.display().to_string();
    eventually("the fixed file is installed", || async {
        main_config(&restarted).await["source"] == path
    })
    .await;
    assert!(main_config(&restarted).await["last_rejection"].is_null());
    let ready = restarted
        .send(
            http::Request::get(restarted.admin_url("/readyz"))
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ready.text(), "ready\n");
    restarted.stop().await;
}

#[test]
fn check_judges_a_file_as_a_restart_would_and_writes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    let good = persisted_config(state.path(), "");
    std::fs::write(&path, format!("version = 5\n{good}")).unwrap();
    check_config(ConfigSource::File(path.clone()), &Overrides::default()).unwrap();
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);

    // With a persisted copy at version 5 (as a running proxy leaves it)...
    persist(state.path(), &format!("version = 5\n{good}"));
    // ...a broken file is refused, not passed on the copy's strength;
    std::fs::write(&path, format!("{good}\n[x")).unwrap();
    let err = check_config(ConfigSource::File(path.clone()), &Overrides::default()).unwrap_err();
    assert!(err.contains("parse error"), "{err}");
    // an older version too, and one without a version.
    std::fs::write(&path, format!("version = 4\n{good}")).unwrap();
    let err = check_config(ConfigSource::File(path.clone()), &Overrides::default()).unwrap_err();
    assert!(err.contains("version 4 is stale"), "{err}");
    std::fs::write(&path, &good).unwrap();
    let err = check_config(ConfigSource::File(path.clone()), &Overrides::default()).unwrap_err();
    assert!(err.contains("has no version"), "{err}");
    std::fs::write(&path, format!("version = 6\n{good}")).unwrap();
    check_config(ConfigSource::File(path), &Overrides::default()).unwrap();
}

/// Persists `text` in `state` as a running proxy would have (a store of the same name).
fn persist(state: &Path, text: &str) {
    ravelin_config::Store::<EdgeConfig>::builder("edge-proxy")
        .initial_bytes(text.as_bytes().to_vec(), "running proxy")
        .state_dir(state)
        .build()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_ten_times_the_size_of_the_one_in_force_is_refused() {
    let padding = "# padding\n".repeat(150);
    let good = config(&padding);
    let harness = Harness::start(&good, None).await;
    let grown = config(&padding.repeat(10));
    write_atomically(&harness.config_path, grown.as_bytes());
    eventually("the grown file is refused", || async {
        main_config(&harness).await["last_rejection"]["kind"] == "growth"
    })
    .await;
    let active = main_config(&harness).await;
    let reason = active["last_rejection"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{} bytes", grown.len())),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("({} bytes active)", good.len())),
        "{reason}"
    );
    assert_eq!(harness.get("/").await.status, 200);
    harness.stop().await;
}
