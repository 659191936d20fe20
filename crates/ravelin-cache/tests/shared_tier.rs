//! The shared tier against a real `redis-server`, really started: a fill on one proxy is a hit
//! on another, TTLs and size bounds hold, untrusted values are misses, Redis dying costs a
//! timeout and then opens the breaker, purges by tag and key reach Redis, and their tombstones
//! refuse late write-throughs of fills that began before them.
#![cfg(feature = "redis")]
// Helpers outside `#[test]` functions may fail loudly too (clippy.toml only exempts the tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ravelin_cache::shared_tier::{
    BreakerState, Lookup, PutOutcome, SharedEntry, SharedTier, SharedTierConfig, Skip, Unavailable,
};
use ravelin_test_support::redis::{RedisServer, unique_prefix};

const TTL: Duration = Duration::from_secs(60);

fn config(server: &RedisServer, prefix: &str) -> SharedTierConfig {
    SharedTierConfig {
        prefix: prefix.to_string(),
        // Generous: the test machine is shared and busy.
        timeout: Duration::from_millis(500),
        ..SharedTierConfig::new(server.url())
    }
}

fn tier(cfg: &SharedTierConfig) -> SharedTier {
    SharedTier::new("test", cfg).unwrap()
}

fn entry(body: &'static [u8], tags: &[&str]) -> SharedEntry {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
    headers.insert(
        "date",
        HeaderValue::from_static("Mon, 07 Dec 2026 18:00:00 GMT"),
    );
    // Whole milliseconds: the encoding's resolution.
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let now = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap());
    let mut e = SharedEntry::new(
        StatusCode::OK,
        headers,
        Bytes::from_static(body),
        now - Duration::from_millis(30),
        now,
    );
    e.corrected_initial_age = Duration::from_secs(2);
    e.tags = tags.iter().map(|t| t.to_string()).collect();
    e
}

fn hit(lookup: Lookup) -> SharedEntry {
    match lookup {
        Lookup::Hit(e) => *e,
        other => panic!("expected a hit, got {other:?}"),
    }
}

/// Polls `f` until it holds, for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// In a module named as the feature, so `cargo test shared_tier` selects these tests.
mod shared_tier {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_on_one_proxy_is_a_hit_on_another() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = config(&server, &unique_prefix("shared-hit"));
        let (a, b) = (tier(&cfg), tier(&cfg));
        let key = b"https://example.com/a";
        assert_eq!(b.get(key).await, Lookup::Miss);
        let e = entry(b"hello from a", &["t1"]);
        assert_eq!(a.put(key, &e, TTL).await, PutOutcome::Written);
        let got = hit(b.get(key).await);
        assert_eq!(got, e);
        // The receiving cache recomputes the age: corrected_initial_age + resident time.
        assert!(got.current_age(SystemTime::now()) >= Duration::from_secs(2));
        let status = b.status();
        assert_eq!((status.hits, status.misses), (1, 1));
        assert_eq!(a.status().puts, 1);
        assert_eq!(status.breaker, BreakerState::Closed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_variant_is_served_only_to_requests_it_selects() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = config(&server, &unique_prefix("shared-vary"));
        let t = tier(&cfg);
        let mut e = entry(b"gzipped", &[]);
        e.vary = vec![(
            HeaderName::from_static("accept-encoding"),
            Some(Bytes::from_static(b"gzip")),
        )];
        assert_eq!(t.put(b"k", &e, TTL).await, PutOutcome::Written);
        let got = hit(t.get(b"k").await);
        let mut gzip = HeaderMap::new();
        gzip.insert("accept-encoding", HeaderValue::from_static("gzip"));
        let mut br = HeaderMap::new();
        br.insert("accept-encoding", HeaderValue::from_static("br"));
        assert!(got.selects(&gzip));
        assert!(!got.selects(&br));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ttl_is_honoured_and_capped() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let prefix = unique_prefix("shared-ttl");
        let cfg = SharedTierConfig {
            max_ttl: Duration::from_secs(30),
            ..config(&server, &prefix)
        };
        let t = tier(&cfg);
        assert_eq!(
            t.put(b"short", &entry(b"x", &["tag"]), Duration::from_millis(300))
                .await,
            PutOutcome::Written
        );
        assert_eq!(
            t.put(b"long", &entry(b"y", &[]), Duration::from_secs(3600))
                .await,
            PutOutcome::Written
        );
        assert_eq!(
            t.put(b"zero", &entry(b"z", &[]), Duration::ZERO).await,
            PutOutcome::Skipped(Skip::ZeroTtl)
        );
        let mut conn = server.connection();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}o:long"))
            .query(&mut conn)
            .unwrap();
        assert!(
            pttl > 0 && pttl <= 30_000,
            "the TTL is cut to max_ttl: {pttl}"
        );
        // Redis's own expiry removes the short one (and its tag index with it).
        hit(t.get(b"short").await);
        eventually("the short entry expires", || async {
            t.get(b"short").await == Lookup::Miss
        })
        .await;
        let index: bool = redis::cmd("EXISTS")
            .arg(format!("{prefix}t:tag"))
            .query(&mut conn)
            .unwrap();
        assert!(!index, "the tag index expires with its entries");
        hit(t.get(b"long").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_outside_the_size_bounds_are_not_written() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let prefix = unique_prefix("shared-size");
        let cfg = SharedTierConfig {
            max_object_bytes: 2048,
            min_object_bytes: 4,
            ..config(&server, &prefix)
        };
        let t = tier(&cfg);
        let big: &'static [u8] = Box::leak(vec![b'x'; 4096].into_boxed_slice());
        assert_eq!(
            t.put(b"big", &entry(big, &[]), TTL).await,
            PutOutcome::Skipped(Skip::TooLarge)
        );
        assert_eq!(
            t.put(b"tiny", &entry(b"abc", &[]), TTL).await,
            PutOutcome::Skipped(Skip::TooSmall)
        );
        let mut conn = server.connection();
        for key in ["big", "tiny"] {
            let exists: bool = redis::cmd("EXISTS")
                .arg(format!("{prefix}o:{key}"))
                .query(&mut conn)
                .unwrap();
            assert!(!exists, "{key} was written");
            assert_eq!(t.get(key.as_bytes()).await, Lookup::Miss);
        }
        assert_eq!(t.status().puts_skipped, 2);
        assert_eq!(t.status().puts, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn untrusted_values_are_misses() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let prefix = unique_prefix("shared-malformed");
        let cfg = SharedTierConfig {
            max_object_bytes: 4096,
            ..config(&server, &prefix)
        };
        let t = tier(&cfg);
        let valid = entry(b"ok", &[]).encode(b"k", 4096).unwrap();
        let mut wrong_version = valid.clone();
        wrong_version[4] = 9;
        let planted: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", b"not an entry at all".to_vec()),
            ("truncated", valid[..valid.len() - 1].to_vec()),
            ("version", wrong_version),
            // A valid entry copied under another key.
            ("moved", valid.clone()),
            // A huge value: only max_object_bytes + 1 bytes are read, and it is refused.
            ("huge", vec![b'R'; 1 << 20]),
        ];
        let mut conn = server.connection();
        for (key, value) in &planted {
            let _: () = redis::cmd("SET")
                .arg(format!("{prefix}o:{key}"))
                .arg(value.as_slice())
                .query(&mut conn)
                .unwrap();
        }
        // Another type under the key: Redis answers an error, the lookup goes on.
        let _: () = redis::cmd("SADD")
            .arg(format!("{prefix}o:a-set"))
            .arg("x")
            .query(&mut conn)
            .unwrap();
        for (key, _) in &planted {
            assert_eq!(t.get(key.as_bytes()).await, Lookup::Miss, "{key}");
        }
        assert_eq!(
            t.get(b"a-set").await,
            Lookup::Unavailable(Unavailable::Server)
        );
        let status = t.status();
        assert_eq!(status.misses, planted.len() as u64);
        assert_eq!(status.errors, planted.len() as u64 + 1);
        assert_eq!(status.breaker, BreakerState::Closed);
        // The valid value under its own key is a hit.
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}o:k"))
            .arg(valid.as_slice())
            .query(&mut conn)
            .unwrap();
        hit(t.get(b"k").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_killed_fails_open_opens_the_breaker_and_recovers() {
        let Some(mut server) = RedisServer::spawn() else {
            return;
        };
        let cfg = SharedTierConfig {
            timeout: Duration::from_millis(200),
            breaker_failures: 3,
            breaker_open_for: Duration::from_millis(500),
            ..config(&server, &unique_prefix("shared-kill"))
        };
        let t = tier(&cfg);
        assert_eq!(
            t.put(b"k", &entry(b"v", &[]), TTL).await,
            PutOutcome::Written
        );
        hit(t.get(b"k").await);

        server.kill();
        for i in 0..3 {
            match t.get(b"k").await {
                Lookup::Unavailable(Unavailable::Connection | Unavailable::Timeout) => {}
                other => panic!("call {i} with Redis dead: {other:?}"),
            }
        }
        assert_eq!(t.status().breaker, BreakerState::Open);
        let errors = t.status().errors;
        // Open: answered without touching Redis (no error counted, no connection tried).
        assert_eq!(
            t.get(b"k").await,
            Lookup::Unavailable(Unavailable::BreakerOpen)
        );
        assert!(matches!(
            t.put(b"k", &entry(b"v", &[]), TTL).await,
            PutOutcome::Unavailable(Unavailable::BreakerOpen)
        ));
        assert_eq!(t.status().errors, errors);
        assert_eq!(t.status().unavailable, 4);

        // Back: a probe closes the breaker (the restarted server is empty: a miss).
        server.restart();
        eventually("the breaker closes", || async {
            t.get(b"k").await == Lookup::Miss
        })
        .await;
        assert_eq!(t.status().breaker, BreakerState::Closed);
        assert!(t.status().breaker_opened >= 1);
        assert_eq!(
            t.put(b"k", &entry(b"v", &[]), TTL).await,
            PutOutcome::Written
        );
        hit(t.get(b"k").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_redis_is_a_timeout_not_a_wait() {
        let Some(server) = RedisServer::spawn() else {
            return;
        };
        let cfg = SharedTierConfig {
            timeout: Duration::from_millis(100),
            ..config(&server, &unique_prefix("shared-stall"))
        };
        let t = tier(&cfg);
        assert_eq!(
            t.put(b"k", &entry(b"v", &[]), TTL).await,
            PutOutcome::Written
        );
        // DEBUG SLEEP stalls the whole server (as a long script or a fork would).
        let mut conn = server.connection();
        let stall = std::thread::spawn(move || {
            let _: redis::RedisResult<()> =
                redis::cmd("DEBUG").arg("SLEEP").arg(2).query(&mut conn);
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(t.get(b"k").await, Lookup::Unavailable(Unavailable::Timeout));
        stall.join().unwrap();
        eventually("Redis answers again", || async {
            matches!(t.get(b"k").await, Lookup::Hit(_))
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purges_by_tag_and_key_reach_redis() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = config(&server, &unique_prefix("shared-purge"));
        let (a, b) = (tier(&cfg), tier(&cfg));
        for (key, tags) in [
            ("a", &["product-1", "all"][..]),
            ("b", &["all"][..]),
            ("c", &["product-2"][..]),
        ] {
            assert_eq!(
                a.put(key.as_bytes(), &entry(b"body", tags), TTL).await,
                PutOutcome::Written
            );
        }
        assert_eq!(b.purge_tag("all").await.unwrap(), 2);
        assert_eq!(a.get(b"a").await, Lookup::Miss);
        assert_eq!(a.get(b"b").await, Lookup::Miss);
        hit(a.get(b"c").await);
        assert_eq!(b.purge_tag("all").await.unwrap(), 0);
        assert!(b.purge_key(b"c").await.unwrap());
        assert!(!b.purge_key(b"c").await.unwrap());
        assert_eq!(a.get(b"c").await, Lookup::Miss);
    }

    /// An entry whose response arrived `ago` before now (whole milliseconds).
    fn received(ago: Duration, tags: &[&str]) -> SharedEntry {
        let mut e = entry(b"body", tags);
        e.response_time -= ago;
        e.request_time -= ago;
        e
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_of_a_fill_older_than_a_purge_of_its_key_is_refused() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = config(&server, &unique_prefix("shared-tomb-key"));
        let (a, b) = (tier(&cfg), tier(&cfg));
        // B's fill began before A's purge; its write-through lands after the delete.
        let late = received(Duration::from_millis(200), &[]);
        a.purge_key(b"k").await.unwrap();
        assert_eq!(
            b.put(b"k", &late, TTL).await,
            PutOutcome::Skipped(Skip::Purged)
        );
        assert_eq!(b.get(b"k").await, Lookup::Miss);
        assert_eq!(b.status().puts_skipped, 1);
        // Another key is not affected.
        assert_eq!(b.put(b"other", &late, TTL).await, PutOutcome::Written);
        // A fill received after the purge is written.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let fresh = received(Duration::ZERO, &[]);
        assert_eq!(b.put(b"k", &fresh, TTL).await, PutOutcome::Written);
        hit(a.get(b"k").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tag_purge_refuses_a_late_put_of_an_entry_with_that_tag() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = config(&server, &unique_prefix("shared-tomb-tag"));
        let (a, b) = (tier(&cfg), tier(&cfg));
        let late = received(Duration::from_millis(200), &["other", "product-1"]);
        assert_eq!(a.purge_tag("product-1").await.unwrap(), 0);
        assert_eq!(
            b.put(b"k", &late, TTL).await,
            PutOutcome::Skipped(Skip::Purged)
        );
        assert_eq!(b.get(b"k").await, Lookup::Miss);
        // Nothing of it was written: not the tag indexes either.
        assert_eq!(a.purge_tag("other").await.unwrap(), 0);
        // An entry without the tag is written; one received after the purge too.
        let untagged = received(Duration::from_millis(200), &["product-2"]);
        assert_eq!(b.put(b"u", &untagged, TTL).await, PutOutcome::Written);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let fresh = received(Duration::ZERO, &["product-1"]);
        assert_eq!(b.put(b"k", &fresh, TTL).await, PutOutcome::Written);
        hit(a.get(b"k").await);
        assert_eq!(a.purge_tag("product-1").await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tombstone_expires() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = SharedTierConfig {
            timeout: Duration::from_millis(200),
            tombstone_ttl: Duration::from_secs(1),
            ..config(&server, &unique_prefix("shared-tomb-ttl"))
        };
        let (a, b) = (tier(&cfg), tier(&cfg));
        let late = received(Duration::from_millis(500), &["t"]);
        a.purge_key(b"k").await.unwrap();
        a.purge_tag("t").await.unwrap();
        assert_eq!(
            b.put(b"k", &late, TTL).await,
            PutOutcome::Skipped(Skip::Purged)
        );
        // Past the tombstones' life the same (old) fill is written again.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert_eq!(b.put(b"k", &late, TTL).await, PutOutcome::Written);
        hit(a.get(b"k").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_tag_index_refuses_the_put() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = SharedTierConfig {
            max_keys_per_tag: 2,
            ..config(&server, &unique_prefix("shared-index"))
        };
        let t = tier(&cfg);
        for key in ["1", "2"] {
            assert_eq!(
                t.put(key.as_bytes(), &entry(b"x", &["t"]), TTL).await,
                PutOutcome::Written
            );
        }
        // Rewriting a key already indexed is fine; a third key is not written.
        assert_eq!(
            t.put(b"1", &entry(b"x", &["t"]), TTL).await,
            PutOutcome::Written
        );
        assert_eq!(
            t.put(b"3", &entry(b"x", &["t"]), TTL).await,
            PutOutcome::Skipped(Skip::TagIndexFull)
        );
        assert_eq!(t.get(b"3").await, Lookup::Miss);
        assert_eq!(t.purge_tag("t").await.unwrap(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn puts_past_the_bound_are_dropped() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = SharedTierConfig {
            max_puts_in_flight: 1,
            ..config(&server, &unique_prefix("shared-bound"))
        };
        let t = tier(&cfg);
        // On this one thread the first spawned put cannot run before the second is asked for.
        assert_eq!(
            t.spawn_put(b"1", &entry(b"x", &[]), TTL),
            PutOutcome::Spawned
        );
        assert_eq!(
            t.spawn_put(b"2", &entry(b"x", &[]), TTL),
            PutOutcome::Dropped
        );
        assert_eq!(t.status().puts_dropped, 1);
        eventually("the spawned put lands", || async {
            matches!(t.get(b"1").await, Lookup::Hit(_))
        })
        .await;
        assert_eq!(t.get(b"2").await, Lookup::Miss);
        assert_eq!(t.status().puts_in_flight, 0);
    }
}
