//! The shared cache tier over real sockets: two edge proxies in front of one origin that counts
//! its requests, sharing a real `redis-server` started by the test (`[cache.shared_tier]` and
//! `[cache.purge_bus]`, issue 16). A fill on proxy A is a shared-tier hit on proxy B with one
//! origin request; Redis killed mid-run costs no 5xx (both proxies serve from their local caches
//! and the origin); a purge on A removes the entry from the shared tier before B hears of it, so
//! B's next miss goes to the origin, not to Redis.
//!
//! Without `redis-server` the tests print `skipped` and pass, unless `CI=true`.

// Test helpers (the origin, requests, status readers): a panic is a failing test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicUsize, Ordering};

use ravelin_test_support::edge::{
    self as support, GENEROUS_RATELIMIT, Harness, Reply, cache_status, config, eventually, is_hit,
    purge,
};
use ravelin_test_support::redis::{RedisServer, unique_prefix};
use serde_json::Value;

/// The host both proxies serve (so both compute the same cache keys).
const HOST: &str = "shop.test";

/// The origin every proxy of a test forwards to.
type Origin = ravelin_test_support::origin::TaggedOrigin;

/// An edge proxy in front of `origin`, with the shared tier `prefix` and the purge bus `prefix`
/// on `redis_url`.
async fn edge(origin: &Origin, redis_url: &str, prefix: &str, instance: &str) -> Harness {
    let toml = config(&format!(
        "{GENEROUS_RATELIMIT}\n[[upstreams]]\nname = \"origin\"\nurl = \"{origin}\"\n\n[cache]\n\
         [cache.shared_tier]\nredis_url = \"{redis_url}\"\nprefix = \"{prefix}:\"\n\
         timeout = \"200ms\"\n\
         [cache.purge_bus]\nredis_url = \"{redis_url}\"\nstream = \"{prefix}:purge\"\n\
         timeout = \"100ms\"\nblock = \"200ms\"\ninstance = \"{instance}\"\n",
        origin = origin.url()
    ));
    Harness::start(&toml, None).await
}

/// GET `path` on `HOST` through `proxy`.
async fn get(proxy: &Harness, path: &str) -> Reply {
    support::get_on(proxy, HOST, path).await
}

/// The cache module's `/status` detail.
async fn detail(proxy: &Harness) -> Value {
    support::module_detail(proxy, "cache").await
}

fn is_shared_hit(reply: &Reply) -> bool {
    let cs = cache_status(reply);
    cs.contains("; hit") && cs.contains("detail=shared")
}

/// Until A's fill of `path` is written to Redis (puts are in the background).
async fn written(proxy: &Harness, puts: u64) {
    eventually("the fill is written to the shared tier", || async {
        detail(proxy).await["shared_tier"]["puts"].as_u64() >= Some(puts)
    })
    .await;
}

/// (a) A fill on A is a shared-tier hit on B, with one origin request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_on_one_proxy_is_a_shared_hit_on_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("edge-shared-hit");
    let origin = Origin::spawn().await;
    let a = edge(&origin, redis.url(), &prefix, "edge-a").await;
    let b = edge(&origin, redis.url(), &prefix, "edge-b").await;

    let fill = get(&a, "/p").await;
    assert_eq!(fill.status, 200, "{}", fill.text());
    assert_eq!(fill.text(), "/p #0");
    written(&a, 1).await;

    let shared = get(&b, "/p").await;
    assert_eq!(shared.status, 200);
    assert_eq!(shared.text(), "/p #0", "A's copy");
    assert!(is_shared_hit(&shared), "{}", cache_status(&shared));
    assert_eq!(origin.gets("/p"), 1, "one origin request for both proxies");

    // B now holds it locally.
    let local = get(&b, "/p").await;
    assert!(
        is_hit(&local) && !is_shared_hit(&local),
        "{}",
        cache_status(&local)
    );
    assert_eq!(origin.gets("/p"), 1);

    let db = detail(&b).await;
    assert_eq!(db["shared_hits"], 1, "{db}");
    assert_eq!(db["shared_tier"]["hits"], 1, "{db}");
    assert_eq!(db["shared_tier"]["breaker"], "closed", "{db}");
    let metrics = b.metrics().await;
    for name in [
        "ravelin_cache_shared_hits_total",
        "ravelin_cache_shared_tier_hits_total",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }
    a.stop().await;
    b.stop().await;
}

/// (b) Redis killed mid-run: no 5xx; both proxies keep serving from their local caches and the
/// origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_costs_no_5xx() {
    let Some(mut redis) = RedisServer::spawn() else {
        return;
    };
    let prefix = unique_prefix("edge-shared-kill");
    let origin = Origin::spawn().await;
    let a = edge(&origin, redis.url(), &prefix, "edge-a").await;
    let b = edge(&origin, redis.url(), &prefix, "edge-b").await;
    assert_eq!(get(&a, "/before").await.status, 200);
    written(&a, 1).await;
    assert!(is_shared_hit(&get(&b, "/before").await));

    redis.kill();
    for round in 0..5 {
        for proxy in [&a, &b] {
            let old = get(proxy, "/before").await;
            assert_eq!(old.status, 200, "round {round}: {}", old.text());
            assert!(is_hit(&old), "round {round}: local copies still serve");
            let new = get(proxy, &format!("/after-{round}")).await;
            assert_eq!(new.status, 200, "round {round}: {}", new.text());
            assert!(!is_shared_hit(&new), "round {round}");
        }
    }
    for round in 0..5 {
        // Each proxy fetched each new path once, then held it.
        assert_eq!(origin.gets(&format!("/after-{round}")), 2);
        for proxy in [&a, &b] {
            assert!(is_hit(&get(proxy, &format!("/after-{round}")).await));
        }
    }
    assert_eq!(origin.gets("/before"), 1);
    let db = detail(&b).await;
    assert!(
        db["shared_tier"]["unavailable"].as_u64().unwrap() >= 1,
        "{db}"
    );
    drop(redis);
    a.stop().await;
    b.stop().await;
}

/// (c) A purge on A deletes the entry from the shared tier before B applies it: B's next local
/// miss goes to the origin, not to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_proxy_removes_the_entry_from_the_shared_tier() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("edge-shared-purge");
    let origin = Origin::spawn().await;
    let a = edge(&origin, redis.url(), &prefix, "edge-a").await;
    let b = edge(&origin, redis.url(), &prefix, "edge-b").await;
    eventually("both proxies connect to the purge bus", || async {
        detail(&a).await["purge_bus"]["connected"] == true
            && detail(&b).await["purge_bus"]["connected"] == true
    })
    .await;

    for (i, (path, query)) in [
        ("/by-url", format!("url=http://{HOST}/by-url")),
        ("/by-tag", "tag=t-by-tag".to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(get(&a, path).await.status, 200);
        written(&a, i as u64 + 1).await;
        assert!(is_shared_hit(&get(&b, path).await), "{path}");
        assert_eq!(origin.gets(path), 1, "{path}: B's copy came from Redis");

        let answer = purge(&a, &query).await;
        assert_eq!(answer["purged"], 1, "{answer}");
        // A is not asked again here: its refill would write the path back to Redis.
        // B applies the purge from the bus; the tier was purged before it was published, so
        // B's next miss goes to the origin (a shared hit would keep this loop waiting).
        eventually("the purge reaches B", || async {
            !is_hit(&get(&b, path).await)
        })
        .await;
        assert_eq!(origin.gets(path), 2, "{path}: B's miss went to the origin");
        let db = detail(&b).await;
        assert_eq!(db["shared_hits"], i as u64 + 1, "{db}");
    }
    a.stop().await;
    b.stop().await;
}

/// Redis paused mid-run (`CLIENT PAUSE`: every command held, connections open): each miss waits
/// at most the tier's timeout and goes to the origin; no 5xx, local hits unaffected; the tier
/// serves again once the pause ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_mid_run_costs_no_5xx() {
    let Some(redis) = RedisServer::spawn() else {
        return;
    };
    let prefix = unique_prefix("edge-shared-pause");
    let origin = Origin::spawn().await;
    let a = edge(&origin, redis.url(), &prefix, "edge-a").await;
    let b = edge(&origin, redis.url(), &prefix, "edge-b").await;
    assert_eq!(get(&a, "/before").await.status, 200);
    written(&a, 1).await;
    assert!(is_shared_hit(&get(&b, "/before").await));

    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2_000)
        .arg("ALL")
        .query(&mut redis.connection())
        .unwrap();
    for round in 0..3 {
        for proxy in [&a, &b] {
            let old = get(proxy, "/before").await;
            assert_eq!(old.status, 200, "round {round}: {}", old.text());
            assert!(is_hit(&old), "round {round}: local copies still serve");
            let new = get(proxy, &format!("/paused-{round}")).await;
            assert_eq!(new.status, 200, "round {round}: {}", new.text());
            assert!(!is_shared_hit(&new), "round {round}");
        }
    }
    let db = detail(&b).await;
    assert!(
        db["shared_tier"]["unavailable"].as_u64().unwrap() >= 1,
        "the paused tier was skipped: {db}"
    );
    // After the pause the tier answers again: a fill on A is a shared hit on B.
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut redis.connection())
        .unwrap();
    let attempt = AtomicUsize::new(0);
    eventually("the tier serves again", || async {
        let path = format!("/after-{}", attempt.fetch_add(1, Ordering::Relaxed));
        assert_eq!(get(&a, &path).await.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        is_shared_hit(&get(&b, &path).await)
    })
    .await;
    a.stop().await;
    b.stop().await;
}
