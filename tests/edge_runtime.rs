//! The edge with `[server] runtime = "per_core"` (issue 13): every request is served by a worker
//! thread of its own, and what the workers share — the hot-swapped stack, the cache, the
//! graceful drain — behaves as with the default runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;

use ravelin_test_support::edge as support;
use ravelin_test_support::edge::{GENEROUS_RATELIMIT, Harness, config};

const PER_CORE: &str = "[server]\nruntime = \"per_core\"\nworkers = 2\n";

fn cache_status(reply: &support::Reply) -> String {
    reply
        .headers
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// This process's threads named as per-core workers (`ravelin-worker-<n>`, which the kernel
/// truncates to 15 bytes).
#[cfg(target_os = "linux")]
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|task| {
            let comm = task.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|name| name.starts_with("ravelin-worker"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_workers_serve_share_the_stack_reload_and_drain() {
    let harness =
        Arc::new(Harness::start(&config(&format!("{PER_CORE}{GENEROUS_RATELIMIT}")), None).await);
    // Many concurrent requests through both workers, all answered.
    let mut clients = Vec::new();
    for _ in 0..64 {
        let harness = Arc::clone(&harness);
        clients.push(tokio::spawn(async move {
            harness.get("/api/time").await.status
        }));
    }
    for client in clients {
        assert_eq!(client.await.unwrap(), 200);
    }
    // They were served by two worker threads of this process (started by then: requests were
    // answered).
    #[cfg(target_os = "linux")]
    assert_eq!(worker_threads(), 2);
    // One cache for every worker: stored once, then a hit whichever worker answers.
    let first = harness.get("/assets/style.css").await;
    assert_eq!(first.status, 200);
    let mut hits = 0;
    for _ in 0..8 {
        let reply = harness.get("/assets/style.css").await;
        assert_eq!(reply.status, 200);
        if cache_status(&reply).contains("hit") {
            hits += 1;
        }
    }
    assert_eq!(hits, 8, "every later request is a hit");

    // A reload swaps the stack every worker serves with: the cache switched off.
    let text = config(&format!(
        "{PER_CORE}{GENEROUS_RATELIMIT}\n[modules.cache]\nenabled = false\n"
    ));
    support::write_atomically(&harness.config_path, text.as_bytes());
    let reply = harness.admin_post("/config/reload").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for _ in 0..8 {
        let reply = harness.get("/assets/style.css").await;
        assert_eq!(reply.status, 200);
        assert_eq!(cache_status(&reply), "", "no cache after the reload");
    }

    // A runtime change is a restart setting, and an out-of-range worker count is refused.
    support::write_atomically(
        &harness.config_path,
        config("[server]\nruntime = \"per_core\"\nworkers = 100000\n").as_bytes(),
    );
    let reply = harness.admin_post("/config/reload").await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("server.workers"), "{}", reply.text());
    assert_eq!(harness.get("/api/time").await.status, 200);

    Arc::into_inner(harness)
        .expect("no other holder")
        .stop()
        .await;
}
