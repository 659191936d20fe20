//! `RedisStore` against a real `redis-server`, really started: two proxies share one quota, the
//! store survives Redis dying, stalling and coming back, and idle keys vanish.
#![cfg(feature = "redis")]
// Helpers outside `#[test]` functions may fail loudly too (clippy.toml only exempts the tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ravelin_ratelimit::redis::{FallbackStore, RedisStore};
use ravelin_ratelimit::{Check, Decision, MemoryStore, Quota, RateLimitStore, StoreError};
use ravelin_test_support::redis::{RedisServer, unique_prefix};

/// Generous for calls expected to succeed: the test machine is shared and busy.
const RELAXED: Duration = Duration::from_millis(500);
/// The bound for calls expected to fail, so the tests see the timeout path quickly.
const SHORT: Duration = Duration::from_millis(100);
/// How much longer than its timeout a failing call may take before the test calls it a hang.
const SLACK: Duration = Duration::from_secs(2);

fn store(server: &RedisServer, prefix: &str, timeout: Duration) -> RedisStore {
    RedisStore::builder(server.url())
        .key_prefix(prefix)
        .timeout(timeout)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap()
}

fn check<'a>(rule: &'a str, key: &'a [u8], quota: Quota, cost: u32) -> Check<'a> {
    Check {
        rule,
        key,
        quota,
        cost,
        enforce: true,
    }
}

async fn one(store: &impl RateLimitStore, c: Check<'_>) -> Result<Decision, StoreError> {
    store.check(&[c]).await.map(|mut d| d.remove(0))
}

/// Retries until the store answers, for up to 15 s: reconnecting is asynchronous.
async fn until_ok(store: &impl RateLimitStore, c: Check<'_>) -> Decision {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match one(store, c).await {
            Ok(d) => return d,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("store did not recover: {e}"),
        }
    }
}

/// Asserts that a call fails with a transport error, within its timeout plus slack.
async fn fails_promptly(store: &RedisStore, c: Check<'_>) -> StoreError {
    let started = Instant::now();
    let err = one(store, c).await.unwrap_err();
    assert!(
        started.elapsed() < store.timeout() + SLACK,
        "a failing call took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            StoreError::Unavailable { store: "redis", .. }
                | StoreError::Timeout { store: "redis", .. }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_share_one_quota() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("share");
    // Two stores, two connections: two proxies.
    let proxies = [
        store(&server, &prefix, RELAXED),
        store(&server, &prefix, RELAXED),
    ];
    // 50 an hour: nothing refills during the test, so exactly 50 may pass in total.
    let quota = Quota::per_hour(50).unwrap();
    let allowed = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let proxy = proxies[i % 2].clone();
        let allowed = Arc::clone(&allowed);
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                let d = one(&proxy, check("per-ip", b"203.0.113.9", quota, 1))
                    .await
                    .unwrap();
                if d.allowed {
                    allowed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(allowed.load(Ordering::Relaxed), 50);
    // Another key has its own quota.
    assert!(
        one(&proxies[1], check("per-ip", b"198.51.100.1", quota, 1))
            .await
            .unwrap()
            .allowed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_hold_the_rate_over_a_window() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("rate");
    let proxies = [
        store(&server, &prefix, RELAXED),
        store(&server, &prefix, RELAXED),
    ];
    // 50 a second, burst 5: over a window of L seconds GCRA allows 5 + 50 L, within one.
    let quota = Quota::per_second(50).unwrap().with_burst(5).unwrap();
    let mut conn = server.connection();
    let server_now = |conn: &mut redis::Connection| -> f64 {
        let (s, us): (u64, u64) = redis::cmd("TIME").query(conn).unwrap();
        s as f64 + us as f64 / 1e6
    };
    let first = server_now(&mut conn);
    let allowed = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let proxy = proxies[i % 2].clone();
        let allowed = Arc::clone(&allowed);
        tasks.push(tokio::spawn(async move {
            let end = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < end {
                if one(&proxy, check("api", b"key-1", quota, 1))
                    .await
                    .unwrap()
                    .allowed
                {
                    allowed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let window = server_now(&mut conn) - first;
    let allowed = f64::from(allowed.load(Ordering::Relaxed));
    let ideal = 5.0 + 50.0 * window;
    // The upper bound is GCRA's guarantee across both proxies. The lower one only shows that
    // limiting is not over-strict: four clients ask continuously, and a unit is lost only when no
    // request arrives for a whole burst (100 ms), which a very busy machine can still cause, so
    // it is kept loose.
    assert!(
        allowed <= ideal + 1.0,
        "allowed {allowed} over {window:.3} s, GCRA allows at most {ideal:.1}"
    );
    assert!(
        allowed >= ideal / 2.0,
        "allowed {allowed} over {window:.3} s, expected about {ideal:.1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_batches_follow_the_store_contract() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server, &unique_prefix("contract"), RELAXED);
    let quota = Quota::per_hour(10).unwrap();
    let t = quota.emission_interval();
    // Cost 3 three times: 7, 4, 1 left; then denied with 1 left and a wait of two intervals.
    for remaining in [7, 4, 1] {
        let d = one(&store, check("r", b"k", quota, 3)).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, remaining);
        assert_eq!(d.limit, 10);
    }
    let d = one(&store, check("r", b"k", quota, 3)).await.unwrap();
    assert!(!d.allowed);
    assert_eq!(d.remaining, 1);
    assert!(d.retry_after <= 2 * t && d.retry_after > 2 * t - Duration::from_secs(5));
    assert!(d.reset_after <= 9 * t && d.reset_after > 9 * t - Duration::from_secs(5));

    // A batch denied by one enforcing rule spends nothing from the others.
    let other = check("other", b"k", quota, 1);
    let key = store.key_of(&other);
    let decisions = store
        .check(&[other, check("r", b"k", quota, 3)])
        .await
        .unwrap();
    assert!(decisions[0].allowed && !decisions[1].allowed);
    // Reported as if written, but not written.
    assert_eq!(decisions[0].remaining, 9);
    let mut conn = server.connection();
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    assert!(!exists);

    // A shadow rule's denial blocks nothing.
    let shadow = Check {
        enforce: false,
        ..check("r", b"k", quota, 3)
    };
    let decisions = store.check(&[other, shadow]).await.unwrap();
    assert!(decisions[0].allowed && !decisions[1].allowed);
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    assert!(exists);

    // An empty batch needs no round trip.
    assert!(store.check(&[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keys_expire() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server, &unique_prefix("idle"), RELAXED);
    // One unit per 2 ms, burst 5: a spent bucket is full again 10 ms later.
    let quota = Quota::new(1, Duration::from_millis(2))
        .unwrap()
        .with_burst(5)
        .unwrap();
    let c = check("short", b"k", quota, 5);
    assert!(one(&store, c).await.unwrap().allowed);
    let key = store.key_of(&c);
    let mut conn = server.connection();
    // At most the 10 ms to refill plus rounding (or already gone: -2, on a slow machine).
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(pttl == -2 || (1..=12).contains(&pttl), "pttl {pttl}");
    let mut gone = false;
    for _ in 0..300 {
        let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
        if !exists {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "an idle key must expire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_is_reloaded_after_a_flush() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server, &unique_prefix("flush"), RELAXED);
    let quota = Quota::per_hour(10).unwrap();
    assert!(
        one(&store, check("r", b"k", quota, 1))
            .await
            .unwrap()
            .allowed
    );
    let mut conn = server.connection();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    // NOSCRIPT is answered by sending the source once; state is intact.
    assert_eq!(
        one(&store, check("r", b"k", quota, 1))
            .await
            .unwrap()
            .remaining,
        8
    );
    assert_eq!(
        one(&store, check("r", b"k", quota, 1))
            .await
            .unwrap()
            .remaining,
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_value_type_is_an_invalid_reply() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&server, &unique_prefix("foreign"), RELAXED);
    let c = check("r", b"k", Quota::per_hour(10).unwrap(), 1);
    let mut conn = server.connection();
    let _: () = redis::cmd("LPUSH")
        .arg(store.key_of(&c))
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let err = one(&store, c).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidReply { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted() {
    let Some(mut server) = RedisServer::spawn() else {
        return;
    };
    let store = store(&server, &unique_prefix("kill"), SHORT);
    let quota = Quota::per_hour(3).unwrap();
    let c = check("r", b"k", quota, 1);
    assert!(until_ok(&store, c).await.allowed);

    server.kill();
    // Every call fails (never hangs, never panics) while Redis is gone.
    for _ in 0..20 {
        fails_promptly(&store, c).await;
    }

    // Same port, empty server: limiting resumes without touching the store.
    server.restart();
    assert!(until_ok(&store, c).await.allowed);
    assert!(one(&store, c).await.unwrap().allowed);
    assert!(one(&store, c).await.unwrap().allowed);
    assert!(!one(&store, c).await.unwrap().allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_while_redis_is_down() {
    let Some(mut server) = RedisServer::spawn() else {
        return;
    };
    server.kill();
    // Building does not connect, so it neither blocks nor fails.
    let started = Instant::now();
    let store = store(&server, &unique_prefix("down"), SHORT);
    assert!(started.elapsed() < SLACK);
    let c = check("r", b"k", Quota::per_hour(3).unwrap(), 1);
    for _ in 0..5 {
        fails_promptly(&store, c).await;
    }
    assert!(store.ping().await.is_err());
    server.restart();
    assert!(until_ok(&store, c).await.allowed);
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_redis_hits_the_timeout() {
    let Some(server) = RedisServer::spawn() else {
        return;
    };
    let store = store(&server, &unique_prefix("stall"), SHORT);
    let c = check("r", b"k", Quota::per_hour(100).unwrap(), 1);
    until_ok(&store, c).await;

    // DEBUG SLEEP blocks the whole server, as a long command or a fork on a big dataset would.
    let mut conn = server.connection();
    let sleeper = std::thread::spawn(move || {
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("1.5")
            .query(&mut conn)
            .unwrap();
    });
    // Calls answer until the sleep has started, then queue behind it and time out.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let started = Instant::now();
        match one(&store, c).await {
            Ok(_) => {
                assert!(Instant::now() < deadline, "DEBUG SLEEP never started");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => {
                assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
                assert!(started.elapsed() < store.timeout() + SLACK);
                break;
            }
        }
    }
    sleeper.join().unwrap();
    until_ok(&store, c).await;

    // CLIENT PAUSE holds every client's commands without blocking the server.
    let mut conn = server.connection();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query(&mut conn)
        .unwrap();
    let err = fails_promptly(&store, c).await;
    assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut conn)
        .unwrap();
    until_ok(&store, c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_enforces_per_proxy_while_redis_is_down() {
    let Some(mut server) = RedisServer::spawn() else {
        return;
    };
    let redis = store(&server, &unique_prefix("fallback"), SHORT);
    let store = FallbackStore::new(redis, MemoryStore::new(1_000))
        .retry_interval(Duration::from_millis(200));
    let quota = Quota::per_hour(3).unwrap();
    let c = check("r", b"k", quota, 1);
    until_ok(&store, c).await;
    assert!(!store.is_degraded());

    server.kill();
    // The quota still holds, locally: the fallback's bucket is fresh, so 3 pass, then denials.
    let mut allowed = 0;
    for _ in 0..10 {
        if one(&store, c).await.unwrap().allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    assert!(store.is_degraded());

    // Back: within a retry interval the shared state answers again (one unit spent before).
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.is_degraded() {
        assert!(Instant::now() < deadline, "did not leave the fallback");
        let _ = one(&store, c).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restarted Redis is empty; whichever call probed it spent one unit there.
    let d = one(&store, c).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
}

/// A TCP relay in front of Redis whose existing connections can be frozen: bytes stop flowing
/// both ways but the sockets stay open, as when a host vanishes without a reset. Connections
/// opened after the freeze flow normally (the "failover" target).
struct Relay {
    addr: std::net::SocketAddr,
    opened: Arc<std::sync::atomic::AtomicU64>,
    frozen_below: Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    async fn start(target: String) -> Self {
        use std::sync::atomic::AtomicU64;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let (frozen, counter) = (Arc::clone(&frozen_below), Arc::clone(&opened));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = counter.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, id, Arc::clone(&frozen)));
                tokio::spawn(pipe(sr, cw, id, Arc::clone(&frozen)));
            }
        });
        Self {
            addr,
            opened,
            frozen_below,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Freezes every connection opened so far; later ones flow.
    fn freeze_existing(&self) {
        self.frozen_below
            .store(self.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    frozen_below: Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if id < frozen_below.load(Ordering::SeqCst) {
            // Silent from now on, sockets held open.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_replaced() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let target = server
        .url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let relay = Relay::start(target).await;
    let store = RedisStore::builder(relay.url())
        .key_prefix(unique_prefix("silent"))
        .timeout(SHORT)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .unwrap();
    let c = check("r", b"k", Quota::per_hour(100).unwrap(), 1);
    until_ok(&store, c).await;

    // The connection goes silent: calls time out rather than hang…
    relay.freeze_existing();
    for _ in 0..3 {
        let err = fails_promptly(&store, c).await;
        assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
    }
    // …and then the store opens a new connection by itself instead of waiting many minutes for
    // the kernel to give up on the old socket.
    assert!(until_ok(&store, c).await.allowed);
    assert_eq!(relay.opened.load(Ordering::SeqCst), 2);
}
