//! The store's own guards (issue 15): the growth bound (failure scenario 2), no versionless
//! document after a versioned one (10), the rejection window a good file does not reset (9), and
//! the last known good persisted across restarts (8).

// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ravelin_config::{
    Format, Outcome, Rejection, Source, Store, StoreBuilder, Validate, Violations,
};
use ravelin_primitives::clock::ManualClock;
use serde::Deserialize;

/// A generated list, optionally versioned.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct List {
    #[serde(default)]
    version: Option<u64>,
    items: Vec<String>,
}

impl Validate for List {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        if self.items.is_empty() {
            v.push("items", "must not be empty");
        }
        v.into_result()
    }

    fn version(&self) -> Option<u64> {
        self.version
    }
}

/// A document of about `bytes` bytes: `items` of 100-character entries.
fn list(version: Option<u64>, bytes: usize) -> String {
    let items: Vec<String> = (0..bytes.div_ceil(104).max(1))
        .map(|i| format!("\"{i:0>100}\""))
        .collect();
    match version {
        Some(v) => format!(r#"{{"version":{v},"items":[{}]}}"#, items.join(",")),
        None => format!(r#"{{"items":[{}]}}"#, items.join(",")),
    }
}

fn builder() -> StoreBuilder<List> {
    Store::builder("generated list").format(Format::Json)
}

/// A file store over `file`, as a process would build it.
fn file_store(file: &Path, state: Option<&Path>) -> Result<Store<List>, Rejection> {
    let builder = builder().file(file);
    match state {
        Some(dir) => builder.state_dir(dir),
        None => builder,
    }
    .build()
}

/// Publishes `text` at `path` as a generator should: temporary file, then rename.
fn publish(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn gauge(snapshotter: &Snapshotter, name: &str, store: &str) -> Option<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, value)| {
            let labelled = key
                .key()
                .labels()
                .any(|l| l.key() == "name" && l.value() == store);
            match value {
                DebugValue::Gauge(g) if key.key().name() == name && labelled => Some(g.0),
                _ => None,
            }
        })
}

// === growth (scenario 2) ===

#[test]
fn a_file_ten_times_the_active_size_is_refused_and_the_old_document_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.json");
    let first = list(Some(1), 2_000);
    std::fs::write(&path, &first).unwrap();
    let store = file_store(&path, None).unwrap();
    let active = first.len() as u64;
    assert_eq!(store.load().meta().size, active);

    let grown = list(Some(2), 20_000);
    publish(&path, &grown);
    let rejection = store.reload().unwrap_err();
    assert_eq!(rejection.kind(), "growth");
    match &rejection {
        Rejection::Growth {
            size,
            active: was,
            limit,
            ..
        } => {
            assert_eq!(*size, grown.len() as u64);
            assert_eq!(*was, active);
            assert_eq!(*limit, active * 4);
        }
        other => panic!("{other:?}"),
    }
    let text = rejection.to_string();
    assert!(text.contains(&format!("{} bytes", grown.len())), "{text}");
    assert!(text.contains(&format!("({active} bytes active)")), "{text}");
    assert_eq!(store.current().version, Some(1));
    assert_eq!(store.last_rejection().unwrap().rejection, rejection);

    // Three times is growth within the bound: installed.
    publish(&path, &list(Some(3), 6_000));
    assert!(matches!(store.reload().unwrap(), Outcome::Installed { .. }));
    assert_eq!(store.current().version, Some(3));
}

#[test]
fn small_documents_grow_freely_and_the_bound_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.json");
    // Under the 1 KiB floor: ten times is fine.
    std::fs::write(&path, list(Some(1), 200)).unwrap();
    let store = file_store(&path, None).unwrap();
    publish(&path, &list(Some(2), 2_000));
    assert!(matches!(store.reload().unwrap(), Outcome::Installed { .. }));

    // Over it, with the bound off.
    let unbounded = builder().file(&path).max_growth(None).build().unwrap();
    publish(&path, &list(Some(3), 40_000));
    assert!(matches!(
        unbounded.reload().unwrap(),
        Outcome::Installed { .. }
    ));

    // A custom floor and factor.
    publish(&path, &list(Some(4), 300));
    let strict = builder()
        .file(&path)
        .growth_floor(100)
        .max_growth(Some(2.0))
        .build()
        .unwrap();
    publish(&path, &list(Some(5), 1_000));
    assert_eq!(strict.reload().unwrap_err().kind(), "growth");

    // Submitted documents are not bounded (the owner's own code or an API with its checks).
    assert!(matches!(
        strict
            .submit(list(Some(6), 5_000).as_bytes(), "api")
            .unwrap(),
        Outcome::Installed { .. }
    ));
}

#[test]
fn build_refuses_a_growth_factor_out_of_range() {
    for factor in [0.5, 0.0, -1.0, f64::NAN, f64::INFINITY, 2e6] {
        let err = builder()
            .initial_bytes(list(None, 10), "t")
            .max_growth(Some(factor))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("max_growth"), "{factor}: {err}");
    }
    for factor in [1.0, 4.0, 1e6] {
        builder()
            .initial_bytes(list(None, 10), "t")
            .max_growth(Some(factor))
            .build()
            .unwrap();
    }
}

// === versions (scenario 10) ===

#[test]
fn a_versionless_document_after_a_versioned_one_is_refused() {
    let store = builder()
        .initial_bytes(list(Some(8), 100), "boot")
        .build()
        .unwrap();
    let err = store.submit(list(None, 120).as_bytes(), "gen").unwrap_err();
    assert!(
        matches!(err, Rejection::Unversioned { active: 8, .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), "unversioned");
    assert!(
        err.to_string()
            .contains("has no version: active version is 8"),
        "{err}"
    );
    // Still refused: an older one (stale), as before.
    assert_eq!(
        store
            .submit(list(Some(5), 100).as_bytes(), "gen")
            .unwrap_err()
            .kind(),
        "stale"
    );
    assert_eq!(store.current().version, Some(8));
    store.submit(list(Some(9), 100).as_bytes(), "gen").unwrap();
    assert_eq!(store.current().version, Some(9));

    // Versionless documents among themselves are fine, and the switch turns the check off.
    let plain = builder()
        .initial_bytes(list(None, 100), "boot")
        .build()
        .unwrap();
    plain.submit(list(None, 120).as_bytes(), "gen").unwrap();
    let lax = builder()
        .initial_bytes(list(Some(8), 100), "boot")
        .refuse_versionless(false)
        .build()
        .unwrap();
    lax.submit(list(None, 120).as_bytes(), "gen").unwrap();
    assert_eq!(lax.current().version, None);
}

// === the rejection window (scenario 9) ===

#[test]
fn the_window_counts_good_and_bad_alternation_and_decays() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new();
        let store = Store::<List>::builder("flapping")
            .format(Format::Json)
            .initial_bytes(list(Some(1), 100), "boot")
            .clock(clock.clone())
            .build()
            .unwrap();
        let window = |store: &Store<List>| {
            gauge(
                &snapshotter,
                "ravelin_config_rejections_window",
                store.name(),
            )
        };
        assert_eq!(window(&store), Some(0.0));
        for round in 0..4u64 {
            clock.advance(Duration::from_secs(60));
            store.submit(br#"{"items":[]}"#, "gen").unwrap_err();
            clock.advance(Duration::from_secs(60));
            store
                .submit(list(Some(round + 2), 100).as_bytes(), "gen")
                .unwrap();
            // The good file resets the consecutive count, not the window.
            assert_eq!(store.consecutive_rejections(), 0);
            assert_eq!(store.status().rejections_window, round + 1);
            assert_eq!(window(&store), Some((round + 1) as f64));
        }
        // The alert (`> 2`) fires on the alternation alone.
        assert!(store.rejections_window() > 2);

        // The oldest rejection (at 1 min) leaves the window at 11 min; all have left at 18 min.
        clock.advance(Duration::from_secs(3 * 60) + Duration::from_millis(1));
        assert_eq!(store.status().rejections_window, 3);
        clock.advance(Duration::from_secs(10 * 60));
        assert_eq!(store.status().rejections_window, 0);
        assert_eq!(window(&store), Some(0.0));
        assert_eq!(store.status().total_rejections, 4);

        // Off: the gauge stays 0.
        let off = Store::<List>::builder("no window")
            .format(Format::Json)
            .initial_bytes(list(Some(1), 100), "boot")
            .rejection_window(None)
            .build()
            .unwrap();
        off.submit(b"{", "gen").unwrap_err();
        assert_eq!(off.status().rejections_window, 0);
    });
}

#[test]
fn the_window_is_bounded_and_a_watched_file_decays_through_polls() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.json");
        std::fs::write(&path, list(Some(1), 100)).unwrap();
        let store = builder().file(&path).clock(clock.clone()).build().unwrap();
        for i in 0..3000 {
            let _ = store.submit(format!("bad {i}").as_bytes(), "gen");
        }
        assert_eq!(store.status().rejections_window, 1024);
        assert_eq!(store.status().total_rejections, 3000);
        // Nothing changes on disk; the watcher's polls bring the gauge down as time passes.
        clock.advance(Duration::from_secs(601));
        assert!(store.poll().is_none());
        assert_eq!(
            gauge(
                &snapshotter,
                "ravelin_config_rejections_window",
                store.name()
            ),
            Some(0.0)
        );
    });
}

// === persisted last known good (scenario 8) ===

fn lkg(dir: &Path) -> PathBuf {
    dir.join("generated_list.lkg")
}

#[test]
fn a_restart_with_a_corrupt_file_starts_from_the_persisted_document() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = dir.path().join("list.json");
    std::fs::write(&path, list(Some(1), 100)).unwrap();
    {
        let store = file_store(&path, Some(&state)).unwrap();
        assert_eq!(store.persisted_path(), Some(lkg(&state).as_path()));
        assert!(lkg(&state).exists());
        publish(&path, &list(Some(2), 300));
        store.reload().unwrap();
        assert_eq!(store.status().persist_failures, 0);
    }
    // The generator is cut off halfway through, and the process restarts.
    let good = list(Some(2), 300);
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let restarted = file_store(&path, Some(&state)).unwrap();
    assert_eq!(restarted.current().version, Some(2));
    let status = restarted.status();
    assert_eq!(status.active.source, Source::Persisted(lkg(&state)));
    assert!(status.active.is_persisted());
    assert!(status.degraded());
    assert_eq!(status.last_rejection.unwrap().rejection.kind(), "parse");
    assert_eq!(
        status.active.source.to_string(),
        format!("persisted copy {}", lkg(&state).display())
    );

    // Without a state directory the same restart fails fast, as before.
    assert_eq!(file_store(&path, None).unwrap_err().kind(), "parse");

    // The persisted copy wins over a compiled-in default too.
    let with_default = builder()
        .file(&path)
        .state_dir(&state)
        .default_value(List {
            version: None,
            items: vec!["default".into()],
        })
        .build()
        .unwrap();
    assert!(with_default.load().meta().is_persisted());

    // A fixed file is installed as usual, and the store is no longer degraded.
    publish(&path, &list(Some(3), 300));
    restarted.reload().unwrap();
    assert!(!restarted.status().degraded());
    assert_eq!(restarted.load().meta().source, Source::File(path.clone()));
}

#[test]
fn a_restart_with_a_missing_file_or_a_file_equal_to_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.json");
    let good = list(Some(4), 300);
    std::fs::write(&path, &good).unwrap();
    drop(file_store(&path, Some(dir.path())).unwrap());

    std::fs::remove_file(&path).unwrap();
    let store = file_store(&path, Some(dir.path())).unwrap();
    assert!(store.load().meta().is_persisted());
    assert_eq!(store.last_rejection().unwrap().rejection.kind(), "io");

    // The source publishes exactly the persisted bytes again: installed from the file.
    publish(&path, &good);
    assert!(matches!(store.reload().unwrap(), Outcome::Installed { .. }));
    assert_eq!(store.load().meta().source, Source::File(path.clone()));
    assert!(!store.status().degraded());

    // A restart with the file equal to the copy is a plain start from the file.
    let again = file_store(&path, Some(dir.path())).unwrap();
    assert_eq!(again.load().meta().source, Source::File(path.clone()));
    assert!(again.last_rejection().is_none());
}

#[test]
fn at_startup_the_file_is_checked_against_the_persisted_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.json");
    std::fs::write(&path, list(Some(8), 2_000)).unwrap();
    drop(file_store(&path, Some(dir.path())).unwrap());

    for (text, kind) in [
        (list(Some(5), 2_000), "stale"),
        (list(None, 2_000), "unversioned"),
        (list(Some(9), 20_000), "growth"),
    ] {
        std::fs::write(&path, &text).unwrap();
        let store = file_store(&path, Some(dir.path())).unwrap();
        assert_eq!(store.current().version, Some(8), "{kind}");
        assert!(store.load().meta().is_persisted(), "{kind}");
        assert_eq!(
            store.last_rejection().unwrap().rejection.kind(),
            kind,
            "{kind}"
        );
    }
    // A newer file is installed over the copy and persisted in its place.
    std::fs::write(&path, list(Some(9), 2_000)).unwrap();
    let store = file_store(&path, Some(dir.path())).unwrap();
    assert_eq!(store.current().version, Some(9));
    assert!(!store.status().degraded());
}

#[test]
fn a_persisted_copy_that_no_longer_passes_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.json");
    std::fs::write(&path, list(Some(1), 300)).unwrap();
    drop(file_store(&path, Some(dir.path())).unwrap());
    std::fs::write(&path, "{").unwrap();

    // Bit rot: the digest no longer matches.
    let copy = std::fs::read(lkg(dir.path())).unwrap();
    let mut rotten = copy.clone();
    *rotten.last_mut().unwrap() ^= 0x20;
    std::fs::write(lkg(dir.path()), &rotten).unwrap();
    assert_eq!(
        file_store(&path, Some(dir.path())).unwrap_err().kind(),
        "parse"
    );

    // Truncated.
    std::fs::write(lkg(dir.path()), &copy[..copy.len() - 10]).unwrap();
    assert_eq!(
        file_store(&path, Some(dir.path())).unwrap_err().kind(),
        "parse"
    );

    // Whole, but past a smaller size cap.
    std::fs::write(lkg(dir.path()), &copy).unwrap();
    let capped = builder()
        .file(&path)
        .state_dir(dir.path())
        .max_bytes(100)
        .build();
    assert_eq!(capped.unwrap_err().kind(), "parse");

    // Whole, but refused by today's rules (a stricter store of the same name).
    let stricter = StoreBuilder::with_decoder("generated list", "strict", |_: &[u8]| {
        Err::<List, _>("nothing passes".to_owned())
    })
    .file(&path)
    .state_dir(dir.path())
    .build();
    assert_eq!(stricter.unwrap_err().kind(), "parse");

    // And the intact copy still serves.
    assert!(
        file_store(&path, Some(dir.path()))
            .unwrap()
            .load()
            .meta()
            .is_persisted()
    );
}

#[test]
fn persisting_is_atomic_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = builder()
        .initial_bytes(list(Some(1), 100), "boot")
        .state_dir(&state)
        .build()
        .unwrap();
    for version in 2..60 {
        let text = list(Some(version), 100 + version as usize * 10);
        store.submit(text.as_bytes(), "gen").unwrap();
        // Rejections are never persisted.
        let _ = store.submit(b"{", "gen");
        let mut names: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // The copy and the lock that keeps it to this process; nothing temporary.
        assert_eq!(
            names,
            ["generated_list.lkg", "generated_list.lkg.lock"],
            "version {version}"
        );
        let copy = std::fs::read(lkg(&state)).unwrap();
        assert!(copy.starts_with(b"ravelin-lkg 1\n"));
        assert!(copy.ends_with(text.as_bytes()), "version {version}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(lkg(&state)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_failure_to_persist_is_counted_never_fatal() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be: nothing can be written under it.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, "x").unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let store = builder()
            .initial_bytes(list(Some(1), 100), "boot")
            .state_dir(&blocked)
            .build()
            .unwrap();
        store.submit(list(Some(2), 100).as_bytes(), "gen").unwrap();
        assert_eq!(store.current().version, Some(2));
        assert_eq!(store.status().persist_failures, 2);
    });
    let failures = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, value)| {
            (key.key().name() == "ravelin_config_persist_failures_total").then_some(value)
        });
    assert_eq!(failures, Some(DebugValue::Counter(2)));
}

#[test]
fn a_read_only_state_dir_is_read_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.json");
    std::fs::write(&path, list(Some(1), 300)).unwrap();
    let dry = builder()
        .file(&path)
        .state_dir(dir.path())
        .persist(false)
        .build()
        .unwrap();
    assert!(!lkg(dir.path()).exists());
    drop(dry);
    drop(file_store(&path, Some(dir.path())).unwrap());
    let before = std::fs::read(lkg(dir.path())).unwrap();
    std::fs::write(&path, list(Some(2), 300)).unwrap();
    let dry = builder()
        .file(&path)
        .state_dir(dir.path())
        .persist(false)
        .build()
        .unwrap();
    assert_eq!(dry.current().version, Some(2));
    assert_eq!(std::fs::read(lkg(dir.path())).unwrap(), before);
}

#[test]
fn store_names_become_safe_file_names() {
    let dir = tempfile::tempdir().unwrap();
    for (name, file) in [
        ("edge-proxy", "edge-proxy.lkg"),
        ("bot features/../x", "bot_features_.._x.lkg"),
        (".hidden", "_.hidden.lkg"),
        ("", "_.lkg"),
    ] {
        let store = Store::<List>::builder(name)
            .format(Format::Json)
            .initial_bytes(list(None, 10), "t")
            .state_dir(dir.path())
            .build()
            .unwrap();
        assert_eq!(
            store.persisted_path(),
            Some(dir.path().join(file).as_path())
        );
        assert!(dir.path().join(file).exists(), "{name}");
    }
}

#[test]
fn a_state_directory_serves_one_process_and_is_shared_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = builder()
        .initial_bytes(list(Some(1), 10), "boot")
        .state_dir(&state)
        .build()
        .unwrap();
    // A second store of this process (a store rebuilt on reload) shares the lock.
    let second = builder()
        .initial_bytes(list(Some(1), 10), "boot")
        .state_dir(&state)
        .build()
        .unwrap();
    drop((first, second));

    // Another process holding the copy's lock (another open file description, as a second
    // proxy's would be): building is refused, with the reason and the holder's pid.
    let lock_path = state.join("generated_list.lkg.lock");
    std::fs::write(&lock_path, b"4242").unwrap();
    let other = std::fs::File::open(&lock_path).unwrap();
    other.try_lock().unwrap();
    let refused = builder()
        .initial_bytes(list(Some(1), 10), "boot")
        .state_dir(&state)
        .build()
        .unwrap_err();
    assert_eq!(refused.kind(), "io");
    let message = refused.to_string();
    assert!(
        message.contains("locked by another process (pid 4242)")
            && message.contains("its own state directory"),
        "{message}"
    );
    // A dry run (`--check`) reads the copy and takes no lock.
    assert!(
        builder()
            .initial_bytes(list(Some(1), 10), "boot")
            .state_dir(&state)
            .persist(false)
            .build()
            .is_ok()
    );
    drop(other);
    assert!(
        builder()
            .initial_bytes(list(Some(1), 10), "boot")
            .state_dir(&state)
            .build()
            .is_ok(),
        "the lock is free again once the other process lets go"
    );
}

#[test]
fn a_restart_puts_a_changed_file_through_its_canary_and_refuses_a_rolled_back_one() {
    use ravelin_config::{CohortKey, Observation, RolloutEnd, RolloutPolicy};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.json");
    let state = dir.path().join("state");
    let policy = RolloutPolicy {
        share: 0.5,
        min_requests: 5,
        ..RolloutPolicy::default()
    };
    let build = || {
        builder()
            .file(&path)
            .state_dir(&state)
            .rollout(policy.clone())
            .build()
            .unwrap()
    };
    std::fs::write(&path, list(Some(1), 100)).unwrap();
    let first = build();
    assert_eq!(first.current().version, Some(1));
    drop(first);

    // A changed file at restart: the persisted copy serves, the file is the canary.
    std::fs::write(&path, list(Some(2), 100)).unwrap();
    let restarted = build();
    assert_eq!(restarted.current().version, Some(1));
    assert_eq!(
        restarted.rollout_status().unwrap().candidate.version,
        Some(2)
    );
    // Its canary fails: rolled back, and remembered beside the copy.
    let mut canary = None;
    let mut baseline = None;
    for client in 0u32..1000 {
        let key = CohortKey::of(&client.to_be_bytes());
        match restarted.assignment(key).unwrap().cohort {
            ravelin_config::Cohort::Canary => canary = canary.or(Some(key)),
            ravelin_config::Cohort::Baseline => baseline = baseline.or(Some(key)),
        }
    }
    for _ in 0..10 {
        let failed = Observation {
            guard_failed: true,
            ..Observation::default()
        };
        restarted.observe(restarted.assignment(canary.unwrap()).unwrap(), &failed);
        restarted.observe(
            restarted.assignment(baseline.unwrap()).unwrap(),
            &Observation::default(),
        );
    }
    assert!(matches!(restarted.tick(), Some(RolloutEnd::RolledBack(_))));
    drop(restarted);

    // The same file at the next restart is refused: the copy serves, degraded, and says why.
    let again = build();
    assert_eq!(again.current().version, Some(1));
    assert!(!again.in_rollout());
    let status = again.status();
    assert!(status.degraded());
    assert_eq!(
        status.last_rejection.unwrap().rejection.kind(),
        "rolled_back"
    );
}
