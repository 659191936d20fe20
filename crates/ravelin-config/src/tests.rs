//! Unit tests for the store: every rejection, last-known-good, flapping, concurrency, staleness.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    Digest, Document, Format, Outcome, Rejection, Source, Store, StoreBuilder, Validate, Violations,
};

/// A miniature feature file, shaped like the one behind the 2025-11-18 outage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Features {
    schema_version: u32,
    version: u64,
    features: Vec<Feature>,
    #[serde(skip)]
    total_weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Feature {
    name: String,
    weight: f64,
}

const MAX_FEATURES: usize = 4;

impl Validate for Features {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        v.check_range("schema_version", self.schema_version, 1..=2);
        if v.check_count("features", "entries", self.features.len(), MAX_FEATURES) {
            let mut seen = std::collections::HashSet::new();
            for (i, f) in self.features.iter().enumerate() {
                if !seen.insert(f.name.as_str()) {
                    v.push(
                        format!("features[{i}].name"),
                        format!("duplicate feature name {:?}", f.name),
                    );
                }
                v.check_finite(&format!("features[{i}].weight"), f.weight);
            }
        }
        v.into_result()
    }

    fn version(&self) -> Option<u64> {
        Some(self.version)
    }

    fn prepare(&mut self) {
        self.total_weight = self.features.iter().map(|f| f.weight).sum();
    }
}

fn doc(version: u64, names: &[&str]) -> String {
    let features: Vec<String> = names
        .iter()
        .map(|n| format!(r#"{{"name":"{n}","weight":0.5}}"#))
        .collect();
    format!(
        r#"{{"schema_version":1,"version":{version},"features":[{}]}}"#,
        features.join(",")
    )
}

fn store_with(bytes: &str) -> Store<Features> {
    Store::builder("bot features")
        .format(Format::Json)
        .max_bytes(4096)
        .initial_bytes(bytes.as_bytes().to_vec(), "test")
        .build()
        .unwrap()
}

fn active_version(store: &Store<Features>) -> u64 {
    store.current().version
}

#[test]
fn valid_document_is_installed_and_prepared() {
    let store = store_with(&doc(1, &["ua_len", "has_accept"]));
    let snap = store.load();
    assert_eq!(snap.version, 1);
    assert_eq!(snap.total_weight, 1.0);
    assert_eq!(snap.meta().version, Some(1));
    assert_eq!(snap.meta().generation, 0);
    assert_eq!(snap.meta().source, Source::Api("test".into()));
}

/// `Store::current` returns ravelin's own guard (issue 17): it reads the active snapshot, and
/// `into_arc` keeps that snapshot across a reload, as `load` would.
#[test]
fn current_reads_the_active_snapshot_and_into_arc_outlives_a_reload() {
    let store = store_with(&doc(1, &["ua_len"]));
    let current: crate::Current<Features> = store.current();
    assert_eq!(current.version, 1);
    assert_eq!(current.meta().version, Some(1));
    assert!(
        format!("{current:?}").starts_with("Current(Snapshot {"),
        "{current:?}"
    );
    let kept = current.into_arc();
    assert!(Arc::ptr_eq(&kept, &store.load()));

    store
        .submit(doc(2, &["ua_len"]).as_bytes(), "next")
        .unwrap();
    assert_eq!(store.current().version, 2);
    assert_eq!(kept.version, 1, "the owned snapshot is the one read");
}

#[test]
fn duplicated_rows_past_the_limit_are_rejected_and_last_good_stays() {
    // The 2025-11-18 shape: the same rows twice, past the preallocated limit.
    let store = store_with(&doc(1, &["a", "b", "c"]));
    let doubled = doc(2, &["a", "b", "c", "a", "b", "c"]);
    let err = store.submit(doubled.as_bytes(), "generator").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("6 entries exceeds limit 4"), "{text}");
    assert!(text.contains("bot features"), "{text}");
    assert_eq!(active_version(&store), 1);
    assert_eq!(store.consecutive_rejections(), 1);
    assert_eq!(store.last_rejection().unwrap().rejection, err);
}

#[test]
fn duplicate_names_under_the_limit_name_the_index() {
    let store = store_with(&doc(1, &["a"]));
    let err = store
        .submit(doc(2, &["a", "b", "a"]).as_bytes(), "t")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"features[2].name: duplicate feature name "a""#),
        "{err}"
    );
}

#[test]
fn non_finite_weight_names_the_field() {
    let store = store_with(&doc(1, &["a"]));
    // JSON has no NaN literal; a huge exponent overflows to infinity in serde_json's f64 parse.
    let bad = r#"{"schema_version":1,"version":2,"features":[{"name":"a","weight":1e999}]}"#;
    let err = store.submit(bad.as_bytes(), "t").unwrap_err();
    assert!(matches!(
        err,
        Rejection::Parse { .. } | Rejection::Invalid { .. }
    ));
    assert_eq!(active_version(&store), 1);
}

#[test]
fn unsupported_schema_version_is_rejected() {
    let store = store_with(&doc(1, &["a"]));
    let bad = r#"{"schema_version":3,"version":2,"features":[]}"#;
    let err = store.submit(bad.as_bytes(), "t").unwrap_err();
    assert!(
        err.to_string()
            .contains("schema_version: value 3 is outside 1..=2"),
        "{err}"
    );
}

#[test]
fn oversized_document_is_rejected_before_parsing() {
    let store = store_with(&doc(1, &["a"]));
    let huge = vec![b'{'; 5000];
    let err = store.submit(&huge, "t").unwrap_err();
    assert_eq!(err.kind(), "too_large");
    assert!(
        err.to_string()
            .contains("5000 bytes exceeds the size limit of 4096 bytes"),
        "{err}"
    );
}

#[test]
fn empty_and_whitespace_documents_are_rejected() {
    let store = store_with(&doc(1, &["a"]));
    for bytes in [&b""[..], b"  \n\t "] {
        let err = store.submit(bytes, "t").unwrap_err();
        assert_eq!(err.kind(), "empty");
    }
    assert_eq!(active_version(&store), 1);
}

#[test]
fn truncated_and_wrong_type_documents_are_parse_errors() {
    let store = store_with(&doc(1, &["a"]));
    let full = doc(2, &["a", "b"]);
    let truncated = &full[..full.len() / 2];
    assert_eq!(
        store.submit(truncated.as_bytes(), "t").unwrap_err().kind(),
        "parse"
    );
    let wrong_type = r#"{"schema_version":"one","version":2,"features":[]}"#;
    let err = store.submit(wrong_type.as_bytes(), "t").unwrap_err();
    assert_eq!(err.kind(), "parse");
    assert!(err.to_string().contains("json parse error"), "{err}");
    let unknown_field = r#"{"schema_version":1,"version":2,"features":[],"extra":1}"#;
    let err = store.submit(unknown_field.as_bytes(), "t").unwrap_err();
    assert!(err.to_string().contains("extra"), "{err}");
}

#[test]
fn older_or_equal_version_with_other_content_is_stale() {
    let store = store_with(&doc(5, &["a"]));
    let err = store.submit(doc(4, &["a"]).as_bytes(), "t").unwrap_err();
    assert!(
        matches!(
            err,
            Rejection::Stale {
                candidate: 4,
                active: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("publish a version greater than 5"));
    let err = store.submit(doc(5, &["b"]).as_bytes(), "t").unwrap_err();
    assert_eq!(err.kind(), "stale");
    assert_eq!(
        store.submit(doc(6, &["b"]).as_bytes(), "t").unwrap(),
        Outcome::Installed {
            version: Some(6),
            digest: crate::Digest::of(doc(6, &["b"]).as_bytes())
        }
    );
}

#[test]
fn identical_bytes_are_unchanged_and_reset_consecutive_rejections() {
    let good = doc(1, &["a"]);
    let store = store_with(&good);
    store.submit(b"nope", "t").unwrap_err();
    assert_eq!(store.consecutive_rejections(), 1);
    assert_eq!(
        store.submit(good.as_bytes(), "t").unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(store.consecutive_rejections(), 0);
    assert_eq!(store.status().total_rejections, 1);
}

#[test]
fn fail_fast_startup_returns_the_rejection() {
    let err = Store::<Features>::builder("main config")
        .format(Format::Json)
        .initial_bytes(b"{".to_vec(), "boot")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), "parse");
    let err = Store::<Features>::builder("main config")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), "empty");
}

#[test]
fn default_startup_serves_the_default_and_reports_why() {
    let default = Features {
        schema_version: 1,
        version: 0,
        features: vec![],
        total_weight: 0.0,
    };
    let store = Store::builder("bot features")
        .format(Format::Json)
        .initial_bytes(doc(9, &["a", "a"]).into_bytes(), "boot")
        .default_value(default)
        .build()
        .unwrap();
    assert!(store.load().meta().is_default());
    assert_eq!(store.status().consecutive_rejections, 1);
    assert_eq!(store.last_rejection().unwrap().rejection.kind(), "invalid");
    // Any valid document replaces the default, whatever its version.
    store.submit(doc(1, &["a"]).as_bytes(), "t").unwrap();
    assert_eq!(active_version(&store), 1);
    assert!(!store.load().meta().is_default());
}

#[test]
fn file_source_reload_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.json");
    std::fs::write(&path, doc(1, &["a"])).unwrap();
    let store: Store<Features> = Store::builder("bot features")
        .format(Format::Json)
        .file(&path)
        .build()
        .unwrap();
    assert_eq!(store.load().meta().source, Source::File(path.clone()));
    assert_eq!(store.reload().unwrap(), Outcome::Unchanged);

    // Replace atomically, the way generators should publish.
    let tmp = dir.path().join("features.json.tmp");
    std::fs::write(&tmp, doc(2, &["a", "b"])).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert!(matches!(
        store.reload().unwrap(),
        Outcome::Installed {
            version: Some(2),
            ..
        }
    ));

    std::fs::remove_file(&path).unwrap();
    let err = store.reload().unwrap_err();
    assert_eq!(err.kind(), "io");
    assert!(err.to_string().contains("features.json"), "{err}");
    assert_eq!(active_version(&store), 2);
}

#[test]
fn oversized_file_is_rejected_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![b' '; 10 * 1024 * 1024]).unwrap();
    let err = Store::<Features>::builder("bot features")
        .format(Format::Json)
        .max_bytes(4096)
        .file(&path)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Rejection::TooLarge {
                size: 10485760,
                limit: 4096,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn toml_documents_parse_and_report_their_field() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Proxy {
        listen: String,
        workers: u32,
    }
    impl Validate for Proxy {
        fn validate(&self) -> Result<(), Violations> {
            let mut v = Violations::new();
            v.check_range("workers", self.workers, 1..=64);
            if self.listen.is_empty() {
                v.push("listen", "must not be blank");
            }
            v.into_result()
        }
    }
    let store: Store<Proxy> = Store::builder("proxy config")
        .initial_bytes(&b"listen = \"127.0.0.1:8080\"\nworkers = 2\n"[..], "boot")
        .build()
        .unwrap();
    assert_eq!(store.current().workers, 2);
    let err = store
        .submit(b"listen = \"\"\nworkers = 0\n", "admin")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("workers: value 0 is outside 1..=64"),
        "{text}"
    );
    assert!(text.contains("listen: must not be blank"), "{text}");
    let err = store
        .submit(b"listen = \"x\"\nworkers = 2\nwokers = 3\n", "admin")
        .unwrap_err();
    assert!(err.to_string().contains("wokers"), "{err}");
}

#[test]
fn violations_are_capped_but_counted() {
    let mut v = Violations::new();
    for i in 0..1000 {
        v.push(format!("rows[{i}]"), "bad");
    }
    assert_eq!(v.total(), 1000);
    assert_eq!(v.iter().count(), Violations::MAX_KEPT);
    assert!(v.to_string().ends_with("and 968 more"));
}

#[test]
fn violations_merge_under_a_section_and_keep_their_count() {
    let mut inner = Violations::new();
    inner.push("routes[0].prefix", "\"login\" must start with /");
    inner.push("", "the document as a whole");
    for i in 0..40 {
        inner.push(format!("rows[{i}]"), "bad");
    }
    let mut outer = Violations::one("listen", "bad address");
    outer.merge_under("botscore", inner.clone());
    assert_eq!(outer.total(), 43);
    let paths: Vec<&str> = outer.iter().map(|v| v.path.as_str()).take(3).collect();
    assert_eq!(paths, ["listen", "botscore.routes[0].prefix", "botscore"]);
    let mut flat = Violations::new();
    flat.merge(inner);
    assert_eq!(flat.total(), 42);
    assert_eq!(flat.iter().next().unwrap().path, "routes[0].prefix");
}

/// Counts log events so the flapping test can bound them.
#[derive(Clone, Default)]
struct CountingLayer(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountingLayer {
    fn on_event(
        &self,
        _event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn flapping_generator_keeps_last_good_with_bounded_logs() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let lines = CountingLayer::default();
    let subscriber = tracing_subscriber::registry().with(lines.clone());
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || {
            let good = doc(7, &["a", "b", "c"]);
            let bad = doc(8, &["a", "b", "c", "a", "b", "c"]);
            let store = store_with(&good);
            let before = lines.0.load(Ordering::Relaxed);
            for i in 0..1000 {
                let candidate = if i % 2 == 0 { &bad } else { &good };
                let _ = store.submit(candidate.as_bytes(), "generator");
                assert_eq!(active_version(&store), 7, "iteration {i}");
            }
            let logged = lines.0.load(Ordering::Relaxed) - before;
            assert!(logged <= 2, "{logged} log lines for one bad digest");
            assert_eq!(store.status().total_rejections, 500);
        });
    });
    let rejected = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, value)| {
            let labels: Vec<_> = key.key().labels().map(|l| l.value().to_owned()).collect();
            (key.key().name() == "ravelin_config_reloads_total"
                && labels.contains(&"rejected".to_owned()))
            .then_some(value)
        });
    assert_eq!(
        rejected,
        Some(metrics_util::debugging::DebugValue::Counter(500))
    );
}

#[test]
fn readers_during_reloads_see_whole_documents() {
    // Every valid document here has `version` features, so a torn read would show a mismatch.
    let store = store_with(&doc(1, &["f0"]));
    std::thread::scope(|s| {
        for _ in 0..3 {
            let store = store.clone();
            s.spawn(move || {
                for _ in 0..20_000 {
                    let snap = store.current();
                    assert_eq!(snap.features.len() as u64, snap.version);
                    assert_eq!(snap.meta().version, Some(snap.version));
                }
            });
        }
        let writer = store.clone();
        s.spawn(move || {
            for version in 2..=4u64 {
                let names: Vec<String> = (0..version).map(|i| format!("f{i}")).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                writer.submit(doc(version, &refs).as_bytes(), "t").unwrap();
                let _ = writer.submit(b"garbage", "t");
            }
        });
    });
    assert_eq!(active_version(&store), 4);
}

/// A store reading `f.json` (version 1) in a fresh temporary directory.
fn file_store() -> (tempfile::TempDir, std::path::PathBuf, Store<Features>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.json");
    std::fs::write(&path, doc(1, &["a"])).unwrap();
    let store = Store::builder("bot features")
        .format(Format::Json)
        .file(&path)
        .build()
        .unwrap();
    (dir, path, store)
}

#[tokio::test(start_paused = true)]
async fn watcher_installs_changes_and_ignores_unchanged_files() {
    let (_dir, path, store) = file_store();
    let mut installs = store.subscribe();
    let _watch = store.watch(Duration::from_millis(50));
    std::fs::write(&path, doc(2, &["a", "b"])).unwrap();
    tokio::time::timeout(Duration::from_secs(30), installs.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active_version(&store), 2);
    std::fs::write(&path, "{ truncated").unwrap();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if store.status().total_rejections > 0 {
            break;
        }
    }
    assert_eq!(store.status().total_rejections, 1);
    // The same bad bytes, polled again and again, are not parsed or counted again.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.status().total_rejections, 1);
    assert_eq!(active_version(&store), 2);
}

/// The reason `/status` would show: the last rejection's kind and message.
fn shown_reason(store: &Store<Features>) -> Option<(&'static str, String)> {
    store
        .status()
        .last_rejection
        .map(|r| (r.rejection.kind(), r.rejection.to_string()))
}

#[test]
fn a_deleted_file_is_reported_missing_not_with_an_old_reason() {
    // The file was rejected at startup (the store serves its default), then deleted.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.json");
    std::fs::write(&path, doc(1, &["a", "a"])).unwrap();
    let store = Store::builder("bot features")
        .format(Format::Json)
        .file(&path)
        .default_value(Features {
            schema_version: 1,
            version: 0,
            features: vec![],
            total_weight: 0.0,
        })
        .build()
        .unwrap();
    assert_eq!(shown_reason(&store).unwrap().0, "invalid");
    // Polling the same bad file again neither re-parses nor re-counts it.
    store.poll_file();
    assert_eq!(store.status().total_rejections, 1);

    std::fs::remove_file(&path).unwrap();
    store.poll_file();
    let (kind, reason) = shown_reason(&store).unwrap();
    assert_eq!(kind, "io", "{reason}");
    assert!(reason.contains("the file is missing"), "{reason}");
    assert!(reason.contains("f.json"), "{reason}");
    assert_eq!(store.status().total_rejections, 2);
    // Still missing: counted once per change of state, not per poll.
    for _ in 0..5 {
        store.poll_file();
    }
    assert_eq!(store.status().total_rejections, 2);
    assert!(store.load().meta().is_default(), "the default still serves");

    // A good file replaces the reason: nothing is wrong any more.
    std::fs::write(&path, doc(2, &["a"])).unwrap();
    store.poll_file();
    assert_eq!(active_version(&store), 2);
    assert!(shown_reason(&store).is_none());
    assert_eq!(store.status().consecutive_rejections, 0);
    assert_eq!(store.status().total_rejections, 2);
}

#[test]
fn a_file_deleted_after_another_unreadable_state_says_missing() {
    // Serving version 1; the file grows past the cap (unreadable), then is deleted.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.json");
    std::fs::write(&path, doc(1, &["a"])).unwrap();
    let store: Store<Features> = Store::builder("bot features")
        .format(Format::Json)
        .max_bytes(4096)
        .file(&path)
        .build()
        .unwrap();
    std::fs::write(&path, vec![b' '; 5000]).unwrap();
    store.poll_file();
    assert_eq!(shown_reason(&store).unwrap().0, "too_large");
    store.poll_file();
    assert_eq!(
        store.status().total_rejections,
        1,
        "same state, counted once"
    );

    std::fs::remove_file(&path).unwrap();
    store.poll_file();
    let (kind, reason) = shown_reason(&store).unwrap();
    assert_eq!(kind, "io", "{reason}");
    assert!(reason.contains("the file is missing"), "{reason}");
    assert_eq!(store.status().total_rejections, 2);
    assert_eq!(
        active_version(&store),
        1,
        "the last good document still serves"
    );

    // An explicit reload of the missing file answers (and counts) once; the watcher does not
    // count the same state again.
    assert_eq!(store.reload().unwrap_err().kind(), "io");
    assert_eq!(store.status().total_rejections, 3);
    store.poll_file();
    assert_eq!(store.status().total_rejections, 3);

    // Back, unchanged: nothing new is wrong, but nothing was installed either.
    std::fs::write(&path, doc(1, &["a"])).unwrap();
    assert_eq!(store.reload().unwrap(), Outcome::Unchanged);
    assert_eq!(store.status().consecutive_rejections, 0);
    // A newer good file: installed, and the reason is cleared.
    std::fs::write(&path, doc(3, &["a", "b"])).unwrap();
    store.poll_file();
    assert_eq!(active_version(&store), 3);
    assert!(shown_reason(&store).is_none());
}

#[tokio::test(start_paused = true)]
async fn watcher_reports_a_deleted_file_then_clears_on_a_good_one() {
    let (_dir, path, store) = file_store();
    let _watch = store.watch(Duration::from_millis(50));
    let settle = |store: Store<Features>, done: fn(&Store<Features>) -> bool| async move {
        for _ in 0..100 {
            if done(&store) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the watcher did not get there: {:?}", store.status());
    };
    std::fs::write(&path, doc(2, &["a", "a"])).unwrap();
    settle(store.clone(), |s| s.status().total_rejections == 1).await;
    assert_eq!(shown_reason(&store).unwrap().0, "invalid");

    std::fs::remove_file(&path).unwrap();
    settle(store.clone(), |s| s.status().total_rejections == 2).await;
    let (kind, reason) = shown_reason(&store).unwrap();
    assert_eq!(kind, "io");
    assert!(reason.contains("the file is missing"), "{reason}");
    assert_eq!(active_version(&store), 1);

    std::fs::write(&path, doc(3, &["a"])).unwrap();
    settle(store.clone(), |s| s.current().version == 3).await;
    assert!(shown_reason(&store).is_none());
    assert_eq!(store.status().total_rejections, 2);
}

#[test]
fn an_install_clears_the_reason_of_earlier_rejections() {
    let store = store_with(&doc(1, &["a"]));
    store.submit(b"nope", "t").unwrap_err();
    assert_eq!(shown_reason(&store).unwrap().0, "parse");
    store.submit(doc(2, &["a"]).as_bytes(), "t").unwrap();
    assert!(store.last_rejection().is_none());
    assert!(store.status().last_rejection.is_none());
    assert_eq!(store.status().total_rejections, 1, "history stays counted");
}

#[tokio::test]
async fn reload_async_runs_off_the_runtime_threads() {
    let (_dir, path, store) = file_store();
    std::fs::write(&path, doc(3, &["a"])).unwrap();
    assert!(matches!(
        store.reload_async().await.unwrap(),
        Outcome::Installed {
            version: Some(3),
            ..
        }
    ));
}

/// A document serde does not read: `version` on the first line, then one `key=value` a line.
/// `prepared` proves the store ran [`Document::prepare`] after the custom decoder.
#[derive(Debug)]
struct Pairs {
    version: u64,
    pairs: Vec<(String, String)>,
    prepared: bool,
}

impl Document for Pairs {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        for (i, (key, _)) in self.pairs.iter().enumerate() {
            if key.is_empty() {
                v.push(format!("pairs[{i}].key"), "is empty");
            }
        }
        v.into_result()
    }

    fn version(&self) -> Option<u64> {
        Some(self.version)
    }

    fn prepare(&mut self) {
        self.prepared = true;
    }
}

/// Decodes [`Pairs`]; `max_pairs` is context a plain `fn` could not carry.
fn pairs_decoder(max_pairs: usize) -> impl Fn(&[u8]) -> Result<Pairs, String> + Send + Sync {
    move |bytes| {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        let mut lines = text.lines();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix("version "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("line 1: expected `version N`")?;
        let pairs = lines
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| match l.split_once('=') {
                Some((k, v)) => Ok((k.trim().to_owned(), v.trim().to_owned())),
                None => Err(format!("line {}: no '='", i + 2)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if pairs.len() > max_pairs {
            return Err(format!("{} pairs exceeds {max_pairs}", pairs.len()));
        }
        Ok(Pairs {
            version,
            pairs,
            prepared: false,
        })
    }
}

fn pairs_store(first: &str) -> Store<Pairs> {
    StoreBuilder::with_decoder("pairs", "pairs", pairs_decoder(3))
        .max_bytes(256)
        .initial_bytes(first.as_bytes().to_vec(), "test")
        .build()
        .unwrap()
}

#[test]
fn a_custom_decoder_goes_through_every_stage() {
    let store = pairs_store("version 1\na=1\n");
    assert!(store.current().prepared);
    assert_eq!(store.current().pairs, [("a".to_owned(), "1".to_owned())]);

    // The decoder's error is a parse rejection under the custom format's name.
    let err = store.submit(b"version 2\na=1\nb", "t").unwrap_err();
    assert!(
        matches!(
            &err,
            Rejection::Parse {
                format: Format::Custom("pairs"),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "pairs (api:t): pairs parse error: line 3: no '='"
    );
    // The decoder's context applies.
    let err = store
        .submit(b"version 2\na=1\nb=2\nc=3\nd=4", "t")
        .unwrap_err();
    assert!(err.to_string().contains("4 pairs exceeds 3"), "{err}");
    // Then validation, the version check and the size cap, as for serde documents.
    let err = store.submit(b"version 2\n=1", "t").unwrap_err();
    assert_eq!(err.kind(), "invalid");
    assert!(err.to_string().contains("pairs[0].key: is empty"), "{err}");
    let err = store.submit(b"version 1\nb=1", "t").unwrap_err();
    assert_eq!(err.kind(), "stale");
    let err = store.submit(&[b'x'; 300], "t").unwrap_err();
    assert_eq!(err.kind(), "too_large");
    assert_eq!(store.submit(b"   \n", "t").unwrap_err().kind(), "empty");
    assert_eq!(store.current().version, 1, "the last good document stays");
    assert_eq!(store.status().consecutive_rejections, 6);

    assert!(matches!(
        store.submit(b"version 2\nb=2", "t").unwrap(),
        Outcome::Installed {
            version: Some(2),
            ..
        }
    ));
    assert!(store.current().prepared);
    assert_eq!(
        store.submit(b"version 2\nb=2", "t").unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn a_custom_format_without_a_decoder_is_refused_not_guessed() {
    let err = Store::<Features>::builder("bot features")
        .format(Format::Custom("pem"))
        .initial_bytes(doc(1, &["a"]).into_bytes(), "t")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), "parse");
    assert!(
        err.to_string().contains("no decoder for format \"pem\""),
        "{err}"
    );
}

/// A store of `Pairs` read from `head` (the version line) and `body` (the pairs).
fn two_file_store() -> (tempfile::TempDir, [std::path::PathBuf; 2], Store<Pairs>) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head.txt");
    let body = dir.path().join("body.txt");
    std::fs::write(&head, "version 1\n").unwrap();
    std::fs::write(&body, "a=1\n").unwrap();
    let store = StoreBuilder::with_decoder("pairs", "pairs", pairs_decoder(3))
        .max_bytes(64)
        .files([&head, &body])
        .build()
        .unwrap();
    (dir, [head, body], store)
}

#[test]
fn several_files_are_read_as_one_document_in_order() {
    let (_dir, [head, body], store) = two_file_store();
    assert_eq!(store.paths(), [head.clone(), body.clone()]);
    assert_eq!(store.path(), Some(head.as_path()));
    let snapshot = store.load();
    assert_eq!(snapshot.version, 1);
    assert_eq!(snapshot.pairs, [("a".to_owned(), "1".to_owned())]);
    let source = Source::Files(vec![head.clone(), body.clone()]);
    assert_eq!(snapshot.meta().source, source);
    assert_eq!(snapshot.meta().digest, Digest::of(b"version 1\na=1\n"));
    assert_eq!(
        source.to_string(),
        format!("{} + {}", head.display(), body.display())
    );
    assert_eq!(store.reload().unwrap(), Outcome::Unchanged);

    // A change in the second file alone is a change of the document.
    std::fs::write(&head, "version 2\n").unwrap();
    std::fs::write(&body, "a=1\nb=2\n").unwrap();
    assert!(matches!(
        store.reload().unwrap(),
        Outcome::Installed {
            version: Some(2),
            ..
        }
    ));
    std::fs::write(&head, "version 3\n").unwrap();
    std::fs::write(&body, "a=1\nb\n").unwrap();
    let err = store.reload().unwrap_err();
    assert_eq!(err.origin(), &source, "a parse error names every file");
    assert!(err.to_string().contains("line 3: no '='"), "{err}");
    assert_eq!(store.current().version, 2);
}

#[test]
fn an_unreadable_or_oversized_file_of_several_is_named_alone() {
    let (_dir, [head, body], store) = two_file_store();
    std::fs::remove_file(&body).unwrap();
    let err = store.reload().unwrap_err();
    assert_eq!(err.kind(), "io");
    assert_eq!(err.origin(), &Source::File(body.clone()));
    assert!(err.to_string().contains("the file is missing"), "{err}");
    assert_eq!(store.current().version, 1);

    // The cap is the document's: 10 bytes of head leave 54 for the body.
    std::fs::write(&head, "version 2\n").unwrap();
    std::fs::write(&body, "x=".repeat(30)).unwrap();
    let err = store.reload().unwrap_err();
    assert!(
        matches!(&err, Rejection::TooLarge { size: 70, limit: 64, origin, .. } if *origin == Source::File(body.clone())),
        "{err:?}"
    );
    std::fs::write(&head, "x".repeat(100)).unwrap();
    let err = store.reload().unwrap_err();
    assert_eq!(err.origin(), &Source::File(head.clone()));
    assert_eq!(store.current().version, 1);
    assert_eq!(store.status().consecutive_rejections, 3);
}

#[test]
fn poll_offers_only_what_changed() {
    let (_dir, [head, body], store) = two_file_store();
    assert!(
        store.poll().is_none(),
        "what startup read is not offered again"
    );
    std::fs::write(&body, "a=1\nb\n").unwrap();
    assert_eq!(store.poll().unwrap().unwrap_err().kind(), "parse");
    assert!(
        store.poll().is_none(),
        "the same bad bytes are not parsed or counted again"
    );
    assert_eq!(store.status().consecutive_rejections, 1);
    std::fs::remove_file(&body).unwrap();
    assert_eq!(store.poll().unwrap().unwrap_err().kind(), "io");
    assert!(
        store.poll().is_none(),
        "the same unreadable state is reported once"
    );
    std::fs::write(&head, "version 2\n").unwrap();
    std::fs::write(&body, "a=2\n").unwrap();
    assert!(matches!(
        store.poll(),
        Some(Ok(Outcome::Installed {
            version: Some(2),
            ..
        }))
    ));
    assert!(store.poll().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_watcher_sees_a_change_in_any_of_the_files() {
    let (_dir, [head, body], store) = two_file_store();
    let mut installs = store.subscribe();
    let _watch = store.watch(Duration::from_millis(50));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store.status().active.generation,
        0,
        "unchanged files are not reinstalled"
    );
    std::fs::write(&head, "version 2\n").unwrap();
    tokio::time::timeout(Duration::from_secs(30), installs.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.current().version, 2);
    std::fs::write(&head, "version 3\n").unwrap();
    std::fs::write(&body, "a=1\nc=3\n").unwrap();
    tokio::time::timeout(Duration::from_secs(30), installs.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.current().version, 3);
    assert_eq!(store.current().pairs.len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_install(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let store = store_with(&doc(1, &["a"]));
        let before = store.load();
        match store.submit(&bytes, "fuzz") {
            Ok(Outcome::Installed { .. }) => {
                // Only a document that really is valid may be installed.
                let parsed: Features = serde_json::from_slice(&bytes).unwrap();
                prop_assert!(Validate::validate(&parsed).is_ok());
            }
            Ok(_) => prop_assert!(Arc::ptr_eq(&before, &store.load())),
            Err(_) => prop_assert!(Arc::ptr_eq(&before, &store.load())),
        }
    }

    #[test]
    fn arbitrary_toml_text_never_panics(text in "\\PC{0,300}") {
        #[derive(Debug, Deserialize)]
        struct Any { #[allow(dead_code)] a: Option<u32> }
        impl Validate for Any { fn validate(&self) -> Result<(), Violations> { Ok(()) } }
        let _ = Store::<Any>::builder("t").initial_bytes(text.into_bytes(), "p").build();
    }

    #[test]
    fn valid_documents_round_trip(
        version in 2u64..1_000_000,
        names in proptest::collection::btree_set("[a-z_]{1,12}", 0..=MAX_FEATURES),
        weights in proptest::collection::vec(-1e6f64..1e6, MAX_FEATURES),
    ) {
        let features: Vec<Feature> = names.into_iter().zip(weights).map(|(name, weight)| Feature { name, weight }).collect();
        let original = Features { schema_version: 2, version, features, total_weight: 0.0 };
        let bytes = serde_json::to_vec(&original).unwrap();
        let store = store_with(&doc(1, &["a"]));
        let outcome = store.submit(&bytes, "roundtrip").unwrap();
        prop_assert!(matches!(outcome, Outcome::Installed { .. }), "{:?}", outcome);
        let snap = store.load();
        prop_assert_eq!(&snap.features, &original.features);
        prop_assert_eq!(snap.version, version);
        let again = serde_json::to_vec(snap.value()).unwrap();
        prop_assert_eq!(store.submit(&again, "roundtrip").unwrap(), Outcome::Unchanged);
    }
}

// === rollout: pre-activation check, canary, promotion, rollback ===

mod rollout {
    use std::time::Duration;

    use ravelin_primitives::clock::{ManualClock, Nanos};

    use super::{Features, doc};
    use crate::{
        Cohort, CohortKey, Format, Observation, Outcome, Rejection, RolloutEnd, RolloutPolicy,
        Store,
    };

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            share: 0.5,
            bake: Duration::from_secs(60),
            max_wait: Duration::from_secs(600),
            min_requests: 20,
            ..RolloutPolicy::default()
        }
    }

    fn staged(clock: &ManualClock<Nanos>) -> Store<Features> {
        Store::builder("staged")
            .format(Format::Json)
            .initial_bytes(doc(1, &["a"]).into_bytes(), "test")
            .clock(clock.clone())
            .rollout(policy())
            .build()
            .unwrap()
    }

    /// A client key of each cohort of the rollout in progress.
    fn keys(store: &Store<Features>) -> (CohortKey, CohortKey) {
        let mut canary = None;
        let mut baseline = None;
        for client in 0u32..1000 {
            let key = CohortKey::of(&client.to_be_bytes());
            match store.assignment(key).unwrap().cohort {
                Cohort::Canary => canary = canary.or(Some(key)),
                Cohort::Baseline => baseline = baseline.or(Some(key)),
            }
        }
        (canary.unwrap(), baseline.unwrap())
    }

    fn serve(store: &Store<Features>, key: CohortKey, n: usize, observation: Observation) {
        for _ in 0..n {
            let (_, assignment) = store.load_for(key);
            store.observe(assignment.unwrap(), &observation);
        }
    }

    #[test]
    fn a_candidate_serves_its_share_then_is_promoted_after_the_bake() {
        let clock = ManualClock::new();
        let store = staged(&clock);
        let outcome = store.submit(doc(2, &["a", "b"]).as_bytes(), "t").unwrap();
        assert!(matches!(
            outcome,
            Outcome::Canary {
                version: Some(2),
                ..
            }
        ));
        assert_eq!(store.current().version, 1, "not active before promotion");
        let (canary, baseline) = keys(&store);
        assert_eq!(store.load_for(canary).0.version, 2);
        assert_eq!(store.load_for(baseline).0.version, 1);
        serve(&store, canary, 30, Observation::default());
        serve(&store, baseline, 30, Observation::default());
        assert_eq!(store.tick(), None, "within bounds but not baked");
        clock.advance(Duration::from_secs(61));
        assert_eq!(store.tick(), Some(RolloutEnd::Promoted));
        assert_eq!(store.current().version, 2);
        assert!(!store.in_rollout());
        assert_eq!(store.load_for(baseline).0.version, 2);
        let status = store.status();
        assert!(status.rollout.is_none());
        let last = status.last_rollout.unwrap();
        assert_eq!(last.end, RolloutEnd::Promoted);
        assert_eq!(last.canary.requests, 30);
    }

    #[test]
    fn a_canary_that_fails_is_rolled_back_before_the_bake_and_refused_when_offered_again() {
        let clock = ManualClock::new();
        let store = staged(&clock);
        store.submit(doc(2, &["a", "b"]).as_bytes(), "t").unwrap();
        let (canary, baseline) = keys(&store);
        let failed = Observation {
            guard_failed: true,
            ..Observation::default()
        };
        serve(&store, canary, 25, failed);
        serve(&store, baseline, 100, Observation::default());
        let Some(RolloutEnd::RolledBack(reason)) = store.tick() else {
            panic!("a canary failing every request is rolled back")
        };
        assert!(reason.contains("guard failures"), "{reason}");
        assert_eq!(store.current().version, 1);
        assert_eq!(store.load_for(canary).0.version, 1, "the canary is gone");
        let status = store.status();
        assert_eq!(status.consecutive_rejections, 1);
        assert!(matches!(
            status.last_rejection.unwrap().rejection,
            Rejection::RolledBack { .. }
        ));
        let again = store
            .submit(doc(2, &["a", "b"]).as_bytes(), "t")
            .unwrap_err();
        assert_eq!(again.kind(), "rolled_back");
        assert!(again.to_string().contains("guard failures"), "{again}");
        // A corrected version is tried afresh.
        assert!(matches!(
            store.submit(doc(3, &["a", "c"]).as_bytes(), "t").unwrap(),
            Outcome::Canary { .. }
        ));
    }

    #[test]
    fn too_little_traffic_promotes_on_time_and_by_hand_or_abort_end_it_at_once() {
        let clock = ManualClock::new();
        let store = staged(&clock);
        store.submit(doc(2, &["a", "b"]).as_bytes(), "t").unwrap();
        clock.advance(Duration::from_secs(120));
        assert_eq!(store.tick(), None, "baked, but no evidence yet");
        clock.advance(Duration::from_secs(600));
        assert_eq!(store.tick(), Some(RolloutEnd::PromotedOnTime));
        assert_eq!(store.current().version, 2);

        store.submit(doc(3, &["a"]).as_bytes(), "t").unwrap();
        assert_eq!(store.promote(), Ok(RolloutEnd::PromotedByHand));
        assert_eq!(store.current().version, 3);
        assert!(store.promote().is_err(), "nothing left to promote");

        store.submit(doc(4, &["a", "d"]).as_bytes(), "t").unwrap();
        assert!(matches!(
            store.abort("operator"),
            Ok(RolloutEnd::Aborted(_))
        ));
        assert_eq!(store.current().version, 3);
    }

    #[test]
    fn a_newer_candidate_supersedes_the_canary_and_an_observation_of_the_old_one_is_ignored() {
        let clock = ManualClock::new();
        let store = staged(&clock);
        store.submit(doc(2, &["a", "b"]).as_bytes(), "t").unwrap();
        let (canary, _) = keys(&store);
        let (_, old) = store.load_for(canary);
        store.submit(doc(3, &["a", "c"]).as_bytes(), "t").unwrap();
        store.observe(
            old.unwrap(),
            &Observation {
                panicked: true,
                ..Observation::default()
            },
        );
        let status = store.status();
        assert_eq!(status.last_rollout.unwrap().end, RolloutEnd::Superseded);
        let rollout = status.rollout.unwrap();
        assert_eq!(rollout.candidate.version, Some(3));
        assert_eq!(rollout.canary.requests + rollout.baseline.requests, 0);
        // The same bytes as the canary are unchanged, not a new rollout.
        assert_eq!(
            store.submit(doc(3, &["a", "c"]).as_bytes(), "t").unwrap(),
            Outcome::Unchanged
        );
    }

    #[test]
    fn a_source_reverted_to_the_active_document_ends_the_canary() {
        let clock = ManualClock::new();
        let store = staged(&clock);
        store.submit(doc(2, &["a", "b"]).as_bytes(), "t").unwrap();
        assert!(store.in_rollout());
        // The operator puts the previous file back.
        assert_eq!(
            store.submit(doc(1, &["a"]).as_bytes(), "t").unwrap(),
            Outcome::Unchanged
        );
        assert!(!store.in_rollout(), "never promoted later");
        assert_eq!(
            store.status().last_rollout.unwrap().end,
            RolloutEnd::Superseded
        );
        clock.advance(Duration::from_secs(3600));
        assert_eq!(store.tick(), None);
        assert_eq!(store.current().version, 1);
    }

    #[test]
    fn a_candidate_older_than_the_canary_is_stale_and_an_abort_names_its_rollout() {
        let clock = ManualClock::new();
        let store = staged(&clock);
        store.submit(doc(8, &["a", "b"]).as_bytes(), "t").unwrap();
        let older = store
            .submit(doc(7, &["a", "c"]).as_bytes(), "t")
            .unwrap_err();
        assert_eq!(older.kind(), "stale");
        assert_eq!(store.rollout_status().unwrap().candidate.version, Some(8));
        let first = store.rollout_id().unwrap();
        store.submit(doc(9, &["a", "d"]).as_bytes(), "t").unwrap();
        // An owner that failed on the superseded candidate cannot end the newer one.
        assert!(store.abort_rollout(first, "its stack failed").is_err());
        assert_eq!(store.rollout_status().unwrap().candidate.version, Some(9));
        let current = store.rollout_id().unwrap();
        assert!(matches!(
            store.abort_rollout(current, "its stack failed"),
            Ok(RolloutEnd::RolledBack(_))
        ));
        assert_eq!(store.current().version, 1);
    }

    #[test]
    fn the_pre_activation_check_refuses_before_any_client_sees_the_candidate() {
        let store: Store<Features> = Store::builder("checked")
            .format(Format::Json)
            .initial_bytes(doc(1, &["a", "b"]).into_bytes(), "test")
            .check(|active: &Features, candidate: &Features| {
                if candidate.features.len() < active.features.len() {
                    Err(format!(
                        "{} features would drop to {}",
                        active.features.len(),
                        candidate.features.len()
                    ))
                } else {
                    Ok(())
                }
            })
            .build()
            .unwrap();
        let refused = store.submit(doc(2, &["a"]).as_bytes(), "t").unwrap_err();
        assert_eq!(refused.kind(), "refused");
        assert_eq!(
            refused.to_string(),
            "checked (api:t): refused before activation: 2 features would drop to 1"
        );
        assert_eq!(store.current().version, 1);
        assert!(matches!(
            store
                .submit(doc(2, &["a", "b", "c"]).as_bytes(), "t")
                .unwrap(),
            Outcome::Installed { .. }
        ));
    }

    #[test]
    fn an_immediate_policy_installs_at_once_and_an_invalid_one_is_refused() {
        let clock = ManualClock::new();
        let store = staged(&clock);
        store.set_rollout(Some(RolloutPolicy::immediate())).unwrap();
        assert!(matches!(
            store.submit(doc(2, &["a"]).as_bytes(), "t").unwrap(),
            Outcome::Installed { .. }
        ));
        let bad = RolloutPolicy {
            share: 0.0,
            ..RolloutPolicy::default()
        };
        assert!(store.set_rollout(Some(bad.clone())).is_err());
        let built = Store::<Features>::builder("x")
            .format(Format::Json)
            .initial_bytes(doc(1, &["a"]).into_bytes(), "t")
            .rollout(bad)
            .build();
        assert!(built.is_err());
    }
}
