//! Warm restarts over real sockets (`[cache.warm_restart]`, issue 16): an edge proxy fills its
//! cache from a counting origin and is shut down gracefully; a new proxy on the same config
//! starts with the snapshot and answers the same URL as a hit without asking the origin. A
//! corrupt snapshot makes the proxy start cold and say why in `/status`, never fail.

// Test helpers (the origin, requests, status readers): a panic is a failing test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use ravelin_test_support::edge::{
    self as support, GENEROUS_RATELIMIT, Harness, Reply, config, is_hit,
};
use serde_json::Value;

/// The origin every proxy of a test forwards to.
type Origin = ravelin_test_support::origin::TaggedOrigin;

fn edge_config(origin: &Origin, snapshot: &Path) -> String {
    config(&format!(
        "{GENEROUS_RATELIMIT}\n[[upstreams]]\nname = \"origin\"\nurl = \"http://{}\"\n\n\
         [cache]\n\n[cache.warm_restart]\npath = \"{}\"\nmax_entries = 100\n",
        origin.addr(),
        snapshot.display()
    ))
}

async fn get(proxy: &Harness, path: &str) -> Reply {
    support::get_on(proxy, "shop.test", path).await
}

/// `modules[cache].detail.warm_restart` of `/status`.
async fn warm_status(proxy: &Harness) -> Value {
    support::module_detail(proxy, "cache").await["warm_restart"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_serves_the_saved_entry_as_a_hit_without_the_origin() {
    let origin = Origin::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cache.snapshot");
    let cfg = edge_config(&origin, &snapshot);

    let first = Harness::start(&cfg, None).await;
    assert_eq!(warm_status(&first).await["start"], "cold");
    assert_eq!(warm_status(&first).await["reason"], "missing");
    let miss = get(&first, "/product/7").await;
    assert_eq!(miss.status, 200);
    assert!(!is_hit(&miss));
    let hit = get(&first, "/product/7").await;
    assert!(is_hit(&hit), "{:?}", hit.headers);
    assert_eq!(origin.gets("/product/7"), 1);
    first.stop().await;
    assert!(snapshot.exists(), "the snapshot is written at shutdown");

    let second = Harness::start(&cfg, None).await;
    let warm = warm_status(&second).await;
    assert_eq!(warm["start"], "warm", "{warm}");
    assert_eq!(warm["loaded"], 1, "{warm}");
    let reply = get(&second, "/product/7").await;
    assert_eq!(reply.status, 200);
    assert!(is_hit(&reply), "{:?}", reply.headers);
    assert_eq!(
        reply.text(),
        "/product/7 #0",
        "the body saved from the first fetch"
    );
    assert_eq!(origin.gets("/product/7"), 1, "no new origin request");
    // Anything else still goes to the origin.
    assert!(!is_hit(&get(&second, "/product/8").await));
    assert_eq!(origin.gets("/product/8"), 1);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_means_a_cold_start_that_says_so() {
    let origin = Origin::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cache.snapshot");
    let cfg = edge_config(&origin, &snapshot);

    let first = Harness::start(&cfg, None).await;
    get(&first, "/a").await;
    first.stop().await;
    // Cut the file short, as a crash mid-copy would.
    let bytes = std::fs::read(&snapshot).unwrap();
    std::fs::write(&snapshot, &bytes[..bytes.len() / 2]).unwrap();

    let second = Harness::start(&cfg, None).await;
    let warm = warm_status(&second).await;
    assert_eq!(warm["start"], "cold", "{warm}");
    assert_eq!(warm["reason"], "truncated", "{warm}");
    let reply = get(&second, "/a").await;
    assert_eq!(reply.status, 200);
    assert!(!is_hit(&reply));
    assert_eq!(origin.gets("/a"), 2);
    second.stop().await;

    // Garbage in place of the file: the same.
    std::fs::write(&snapshot, b"not a snapshot at all").unwrap();
    let third = Harness::start(&cfg, None).await;
    assert_eq!(warm_status(&third).await["reason"], "bad-magic");
    assert_eq!(get(&third, "/a").await.status, 200);
    third.stop().await;
}

/// A reload that switches the cache off saves the snapshot on its own thread without waiting
/// for it (the reload used to hold the control task up to `save_timeout`): the edge keeps
/// serving without the cache, and the snapshot still appears, complete: a proxy started on it
/// later is warm. (That the reload does not wait is not asserted: no timing assertions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switching_the_cache_off_still_writes_a_complete_snapshot() {
    let origin = Origin::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cache.snapshot");
    let cfg = edge_config(&origin, &snapshot);

    let proxy = Harness::start(&cfg, None).await;
    get(&proxy, "/product/1").await;
    assert!(is_hit(&get(&proxy, "/product/1").await));
    assert!(!snapshot.exists());

    support::write_atomically(
        &proxy.config_path,
        format!("{cfg}\n[modules.cache]\nenabled = false\n").as_bytes(),
    );
    let reload = proxy.admin_post("/config/reload").await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert!(
        proxy.status().await["modules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["name"] != "cache"),
        "the cache is off"
    );
    let served = get(&proxy, "/product/1").await;
    assert_eq!(served.status, 200);
    assert!(!is_hit(&served), "no cache, no hit");
    support::eventually("the snapshot is written", || {
        let exists = snapshot.exists();
        async move { exists }
    })
    .await;
    proxy.stop().await;

    let restarted = Harness::start(&cfg, None).await;
    let warm = warm_status(&restarted).await;
    assert_eq!(warm["start"], "warm", "{warm}");
    assert!(is_hit(&get(&restarted, "/product/1").await));
    restarted.stop().await;
}

/// Switched off and at once on again: the cache that comes back reads the snapshot its switching
/// off wrote, not an older one (or none), however far that background save had got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_switched_off_and_on_again_reads_the_snapshot_its_switching_off_wrote() {
    let origin = Origin::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cache.snapshot");
    let cfg = edge_config(&origin, &snapshot);

    let proxy = Harness::start(&cfg, None).await;
    assert_eq!(warm_status(&proxy).await["reason"], "missing");
    get(&proxy, "/product/2").await;
    support::write_atomically(
        &proxy.config_path,
        format!("{cfg}\n[modules.cache]\nenabled = false\n").as_bytes(),
    );
    assert_eq!(proxy.admin_post("/config/reload").await.status, 200);
    support::write_atomically(&proxy.config_path, cfg.as_bytes());
    assert_eq!(proxy.admin_post("/config/reload").await.status, 200);
    let warm = warm_status(&proxy).await;
    assert_eq!(warm["start"], "warm", "{warm}");
    assert_eq!(warm["loaded"], 1, "{warm}");
    assert!(is_hit(&get(&proxy, "/product/2").await));
    assert_eq!(origin.gets("/product/2"), 1);
    proxy.stop().await;
}
