//! Warm restarts: a snapshot written by one cache and read by a new one (`CacheHandle::
//! save_snapshot` / `load_snapshot`): what is kept, what is refused, what is recomputed.
// Test code: helpers outside #[test] functions may panic too (a panic is a failed test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, Origin, Reply};
use ravelin_cache::warm::{SnapshotError, SnapshotLimits};

fn limits(max_entries: usize) -> SnapshotLimits {
    SnapshotLimits {
        max_entries,
        max_bytes: 1 << 20,
    }
}

fn origin() -> Origin {
    Origin::new(|seen| {
        let path = seen.uri.path().to_string();
        let cc = if path.starts_with("/short") {
            "max-age=10"
        } else if path.starts_with("/private") {
            "private, max-age=600"
        } else {
            "max-age=600"
        };
        Reply::ok(&[("cache-control", cc)], "body").with("x-path", path)
    })
}

#[tokio::test]
async fn a_new_cache_serves_what_the_old_one_saved_without_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.snapshot");
    let a = Harness::new(origin());
    for p in ["/a", "/b", "/c"] {
        assert!(!a.get(p).await.hit());
    }
    let saved = a.handle.save_snapshot(&path, limits(100)).unwrap();
    assert_eq!(saved.entries, 3);

    let b = Harness::new(origin());
    b.advance(5);
    let loaded = b.handle.load_snapshot(&path, limits(100)).unwrap();
    assert_eq!(loaded.entries, 3);
    assert_eq!(loaded.skipped, 0);
    for p in ["/a", "/b", "/c"] {
        let got = b.get(p).await;
        assert!(got.hit(), "{p}: {}", got.cache_status());
        assert_eq!(got.header("x-path"), Some(p));
        // The age is recomputed from the stored times: five seconds resident.
        assert_eq!(got.header("age"), Some("5"));
    }
    assert_eq!(b.origin.calls(), 0);
}

#[tokio::test]
async fn entries_stale_at_reload_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let a = Harness::new(origin());
    a.get("/short").await;
    a.get("/long").await;
    a.handle.save_snapshot(&path, limits(100)).unwrap();

    let b = Harness::new(origin());
    b.advance(30);
    let loaded = b.handle.load_snapshot(&path, limits(100)).unwrap();
    assert_eq!((loaded.entries, loaded.skipped), (1, 1));
    assert!(b.get("/long").await.hit());
    assert!(!b.get("/short").await.hit());
    assert_eq!(b.origin.calls(), 1);
}

#[tokio::test]
async fn stale_entries_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let a = Harness::new(origin());
    a.get("/short").await;
    a.get("/long").await;
    a.advance(30);
    let saved = a.handle.save_snapshot(&path, limits(100)).unwrap();
    assert_eq!((saved.entries, saved.skipped), (1, 1));
}

#[tokio::test]
async fn the_most_recently_used_entries_are_kept_within_the_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let a = Harness::new(origin());
    for p in ["/1", "/2", "/3", "/4", "/5"] {
        a.get(p).await;
        a.advance(1);
    }
    // /1 and /3 are used last.
    assert!(a.get("/1").await.hit());
    a.advance(1);
    assert!(a.get("/3").await.hit());
    let saved = a.handle.save_snapshot(&path, limits(2)).unwrap();
    assert_eq!((saved.entries, saved.skipped), (2, 3));

    let b = Harness::new(origin());
    b.advance(10);
    b.handle.load_snapshot(&path, limits(2)).unwrap();
    assert!(b.get("/1").await.hit());
    assert!(b.get("/3").await.hit());
    assert!(!b.get("/5").await.hit());

    // A reader with a smaller bound than the writer's refuses the file whole.
    let c = Harness::new(origin());
    let e = c.handle.load_snapshot(&path, limits(1)).unwrap_err();
    assert_eq!(e.as_str(), "oversized");
    assert_eq!(c.handle.stats().entries, 0);

    // The byte bound: room for two of these equal-sized entries (less one byte) keeps two,
    // and the written total never passes it.
    let one = a.handle.save_snapshot(&path, limits(1)).unwrap().bytes;
    let bound = SnapshotLimits {
        max_entries: 100,
        max_bytes: 3 * one - 1,
    };
    let saved = a.handle.save_snapshot(&path, bound).unwrap();
    assert_eq!((saved.entries, saved.skipped), (2, 3));
    assert!(saved.bytes <= bound.max_bytes);
    assert_eq!(
        std::fs::read(&path).unwrap().len() as u64,
        saved.bytes + 23 + 21 + 32
    );
    // Nothing of this size fits in 64 bytes.
    let tiny = SnapshotLimits {
        max_entries: 100,
        max_bytes: 64,
    };
    let saved = a.handle.save_snapshot(&path, tiny).unwrap();
    assert_eq!(saved.entries, 0);
}

#[tokio::test]
async fn a_corrupt_file_is_ignored_whole_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let a = Harness::new(origin());
    a.get("/a").await;
    a.get("/b").await;
    a.handle.save_snapshot(&path, limits(100)).unwrap();
    let good = std::fs::read(&path).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 10].to_vec()),
        ("checksum", {
            let mut b = good.clone();
            let i = b.len() / 2;
            b[i] ^= 0x20;
            b
        }),
        ("unknown-version", {
            let mut b = good.clone();
            b[ravelin_cache::warm::SNAPSHOT_MAGIC.len()] = 9;
            b
        }),
        ("bad-magic", b"{\"not\": \"a snapshot\"}".to_vec()),
    ];
    for (reason, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let b = Harness::new(origin());
        let e = b.handle.load_snapshot(&path, limits(100)).unwrap_err();
        assert_eq!(e.as_str(), reason, "{e}");
        assert_eq!(b.handle.stats().entries, 0, "{reason}: nothing stored");
    }
    std::fs::remove_file(&path).unwrap();
    let b = Harness::new(origin());
    assert!(matches!(
        b.handle.load_snapshot(&path, limits(100)),
        Err(SnapshotError::Missing)
    ));
}

#[tokio::test]
async fn local_rules_apply_again_at_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    // The writer replays cookies; the reader (the default) does not store such a response.
    let cookies = || {
        Origin::new(|seen| {
            let r = Reply::ok(&[("cache-control", "max-age=600")], "body");
            if seen.uri.path() == "/cookie" {
                r.with("set-cookie", "session=1")
            } else {
                r
            }
        })
    };
    let replay = ravelin_cache::CacheConfig {
        set_cookie: ravelin_cache::SetCookie::Replay,
        ..Default::default()
    };
    let a = Harness::with(cookies(), |b| b.config(replay));
    a.get("/cookie").await;
    a.get("/plain").await;
    assert!(a.get("/cookie").await.hit());
    let saved = a.handle.save_snapshot(&path, limits(100)).unwrap();
    assert_eq!(saved.entries, 2);
    let b = Harness::new(cookies());
    let loaded = b.handle.load_snapshot(&path, limits(100)).unwrap();
    assert_eq!((loaded.entries, loaded.skipped), (1, 1));
    assert!(b.get("/plain").await.hit());
    let got = b.get("/cookie").await;
    assert!(!got.hit());
}

#[tokio::test]
async fn variants_come_back_as_variants() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let o = Origin::new(|seen| {
        let lang = seen
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        Reply::ok(
            &[
                ("cache-control", "max-age=600"),
                ("vary", "accept-language"),
            ],
            "v",
        )
        .with("x-lang", lang)
    });
    let a = Harness::new(o.clone());
    a.request("GET", "/v", &[("accept-language", "en")]).await;
    a.request("GET", "/v", &[("accept-language", "fr")]).await;
    let saved = a.handle.save_snapshot(&path, limits(100)).unwrap();
    assert_eq!(saved.entries, 2);
    let b = Harness::new(o);
    b.handle.load_snapshot(&path, limits(100)).unwrap();
    let fr = b.request("GET", "/v", &[("accept-language", "fr")]).await;
    assert!(fr.hit());
    assert_eq!(fr.header("x-lang"), Some("fr"));
    let en = b.request("GET", "/v", &[("accept-language", "en")]).await;
    assert!(en.hit());
    assert_eq!(en.header("x-lang"), Some("en"));
    assert!(
        !b.request("GET", "/v", &[("accept-language", "de")])
            .await
            .hit()
    );
}
