//! The GCRA Lua script, driven by raw commands against a real `redis-server`: its batch decisions
//! match a reference model built on `Quota::decide` exactly (fed the server's clock, read back
//! from each reply), batches write all or nothing, garbage in a key never grants more than an
//! absent key would, and keys expire once their bucket is full again.
#![cfg(feature = "redis")]
// Helpers outside `#[test]` functions may fail loudly too (clippy.toml only exempts the tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ravelin_ratelimit::Quota;
use ravelin_test_support::redis::{RedisServer, unique_prefix};
use redis::Value;

const SCRIPT: &str = include_str!("../src/redis/gcra.lua");

/// One script argument set: T × cost and T × burst in nanoseconds, and the enforce flag.
#[derive(Debug, Clone, Copy)]
struct Arg {
    inc: u64,
    tol: u64,
    enforce: bool,
}

impl Arg {
    fn of(quota: Quota, cost: u32, enforce: bool) -> Self {
        let tol = quota.tolerance_nanos();
        let inc = quota
            .emission_interval_nanos()
            .saturating_mul(u64::from(cost))
            .min(tol + 1);
        Self { inc, tol, enforce }
    }
}

/// (allowed, TAT − now in ns) per check, and the server's now in ns.
type Reply = (u64, Vec<(bool, u64)>);

fn eval(conn: &mut redis::Connection, keys: &[&str], args: &[Arg]) -> redis::RedisResult<Reply> {
    let script = redis::Script::new(SCRIPT);
    let mut invocation = script.prepare_invoke();
    for key in keys {
        invocation.key(*key);
    }
    for a in args {
        invocation
            .arg(a.inc / 1000)
            .arg(a.inc % 1000)
            .arg(a.tol / 1000)
            .arg(a.tol % 1000)
            .arg(u8::from(a.enforce));
    }
    let reply: Value = invocation.invoke(conn)?;
    let Value::Array(items) = reply else {
        panic!("script returned {reply:?}")
    };
    let ints: Vec<i64> = items
        .iter()
        .map(|v| match v {
            Value::Int(i) => *i,
            other => panic!("script returned {other:?}"),
        })
        .collect();
    assert_eq!(ints.len(), 1 + 3 * keys.len(), "reply {ints:?}");
    let now = ints[0] as u64 * 1000;
    let checks = ints[1..]
        .chunks(3)
        .map(|c| {
            assert!(c[0] == 0 || c[0] == 1);
            assert!((0..1000).contains(&c[2]));
            (c[0] == 1, c[1] as u64 * 1000 + c[2] as u64)
        })
        .collect();
    Ok((now, checks))
}

fn one(conn: &mut redis::Connection, key: &str, arg: Arg) -> redis::RedisResult<(bool, u64)> {
    eval(conn, &[key], &[arg]).map(|(_, checks)| checks[0])
}

fn server() -> Option<(RedisServer, redis::Connection)> {
    let server = RedisServer::start()?;
    let conn = server.connection();
    Some((server, conn))
}

fn get(conn: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).unwrap()
}

/// One unit a minute, burst 3: nothing refills while a test runs.
fn slow() -> Quota {
    Quota::per_minute(1).unwrap().with_burst(3).unwrap()
}

#[test]
fn burst_then_deny() {
    let Some((_server, mut conn)) = server() else {
        return;
    };
    let key = format!("{}k", unique_prefix("burst"));
    let t = 60_000_000_000u64;
    for i in 0..3 {
        let (allowed, ahead) = one(&mut conn, &key, Arg::of(slow(), 1, true)).unwrap();
        assert!(allowed, "request {i}");
        // Before each call the TAT is i intervals ahead of now, less the time since.
        assert!(
            ahead <= i * t && ahead + 1_000_000_000 > i * t,
            "request {i}: {ahead}"
        );
    }
    let (allowed, ahead) = one(&mut conn, &key, Arg::of(slow(), 1, true)).unwrap();
    assert!(!allowed);
    assert!(ahead > 2 * t);
    // A denial writes nothing, and a cost above the burst is never allowed.
    let before = get(&mut conn, &key);
    assert!(!one(&mut conn, &key, Arg::of(slow(), 4, true)).unwrap().0);
    assert!(
        !one(&mut conn, &key, Arg::of(slow(), u32::MAX, true))
            .unwrap()
            .0
    );
    assert_eq!(before, get(&mut conn, &key));
}

#[test]
fn stored_value_is_exact_nanoseconds_and_ttl_is_time_to_full() {
    let Some((_server, mut conn)) = server() else {
        return;
    };
    let key = format!("{}k", unique_prefix("ttl"));
    // T = 1 s + 7 ns: the nanoseconds must survive the script's (µs, ns) arithmetic.
    let quota = Quota::new(1, Duration::from_nanos(1_000_000_007))
        .unwrap()
        .with_burst(10)
        .unwrap();
    let (now, checks) = eval(&mut conn, &[&key], &[Arg::of(quota, 7, true)]).unwrap();
    assert_eq!(checks, vec![(true, 0)]);
    let stored = get(&mut conn, &key).unwrap();
    assert!(stored.bytes().all(|b| b.is_ascii_digit()), "{stored}");
    assert_eq!(stored.parse::<u64>().unwrap(), now + 7 * 1_000_000_007);
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(pttl > 5_000 && pttl <= 7_002, "pttl {pttl}");
}

#[test]
fn idle_keys_expire() {
    let Some((_server, mut conn)) = server() else {
        return;
    };
    let key = format!("{}k", unique_prefix("expire"));
    // 1 ms per unit, burst 5: the bucket is full again 5 ms after the last request.
    let quota = Quota::new(1, Duration::from_millis(1))
        .unwrap()
        .with_burst(5)
        .unwrap();
    assert!(one(&mut conn, &key, Arg::of(quota, 5, true)).unwrap().0);
    let mut gone = false;
    for _ in 0..300 {
        let exists: i64 = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
        if exists == 0 {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gone, "an idle key must expire once its bucket is full");
}

#[test]
fn zero_cost_reads_without_writing() {
    let Some((_server, mut conn)) = server() else {
        return;
    };
    let key = format!("{}k", unique_prefix("peek"));
    assert_eq!(
        one(&mut conn, &key, Arg::of(slow(), 0, true)).unwrap(),
        (true, 0)
    );
    assert_eq!(get(&mut conn, &key), None);
    // On an empty bucket a zero cost is still allowed (it asks for nothing).
    for _ in 0..3 {
        one(&mut conn, &key, Arg::of(slow(), 1, true)).unwrap();
    }
    let before = get(&mut conn, &key);
    assert!(one(&mut conn, &key, Arg::of(slow(), 0, true)).unwrap().0);
    assert_eq!(before, get(&mut conn, &key));
}

#[test]
fn batch_is_all_or_nothing() {
    let Some((_server, mut conn)) = server() else {
        return;
    };
    let p = unique_prefix("batch");
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    // Exhaust b.
    for _ in 0..3 {
        one(&mut conn, &b, Arg::of(slow(), 1, true)).unwrap();
    }
    // a would be allowed, b (enforcing) is denied: nothing is written, a stays absent.
    let (_, checks) = eval(
        &mut conn,
        &[&a, &b],
        &[Arg::of(slow(), 1, true), Arg::of(slow(), 1, true)],
    )
    .unwrap();
    assert_eq!((checks[0].0, checks[1].0), (true, false));
    assert_eq!(get(&mut conn, &a), None);

    // b is now a shadow rule: its denial blocks nothing, so a and c are written.
    let (_, checks) = eval(
        &mut conn,
        &[&a, &b, &c],
        &[
            Arg::of(slow(), 1, true),
            Arg::of(slow(), 1, false),
            Arg::of(slow(), 2, false),
        ],
    )
    .unwrap();
    assert_eq!(
        checks.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![true, false, true]
    );
    assert!(get(&mut conn, &a).is_some());
    assert!(get(&mut conn, &c).is_some());
}

#[test]
fn garbage_in_a_key_grants_no_more_than_an_absent_key() {
    let Some((_server, mut conn)) = server() else {
        return;
    };
    let prefix = unique_prefix("garbage");
    let t = 60_000_000_000u64;
    // Not a decimal integer of nanoseconds: the same as a missing key, then overwritten.
    let junk = [
        "garbage",
        "",
        "nan",
        "-inf",
        "12abc",
        "0x10",
        "1e300",
        "-1760000000000000000",
        " 1760000000000000000",
        "17600000000000000000000",
        "0",
    ];
    for (i, junk) in junk.iter().enumerate() {
        let key = format!("{prefix}{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(*junk)
            .query(&mut conn)
            .unwrap();
        assert_eq!(
            one(&mut conn, &key, Arg::of(slow(), 1, true)).unwrap(),
            (true, 0),
            "junk {junk:?}"
        );
        let stored = get(&mut conn, &key).unwrap();
        assert!(stored.len() == 19 && stored.bytes().all(|b| b.is_ascii_digit()));
    }
    // Far in the future (a clock that stepped back, or a hostile writer): an empty bucket, so
    // denied, but never a lockout longer than one full refill.
    for (i, future) in ["9999999999999999999", "8000000000000000000"]
        .iter()
        .enumerate()
    {
        let key = format!("{prefix}f{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(*future)
            .query(&mut conn)
            .unwrap();
        assert_eq!(
            one(&mut conn, &key, Arg::of(slow(), 1, true)).unwrap(),
            (false, 3 * t),
            "future {future:?}"
        );
    }
    // A key of another type is an error reply: not a crash, not an allow.
    let key = format!("{prefix}hash");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("f")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let err = one(&mut conn, &key, Arg::of(slow(), 1, true)).unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"), "{err}");
}

#[test]
fn bad_arguments_are_error_replies() {
    let Some((_server, mut conn)) = server() else {
        return;
    };
    let key = format!("{}k", unique_prefix("args"));
    let script = redis::Script::new(SCRIPT);
    let cases: [&[&str]; 6] = [
        &[],
        &["1", "0", "1", "0"],
        &["1", "0", "1", "0", "2"],
        &["1", "1000", "1", "0", "1"],
        &["-1", "0", "1", "0", "1"],
        &["x", "0", "1.5", "0", "1"],
    ];
    for args in cases {
        let mut invocation = script.key(&key);
        for a in args {
            invocation.arg(*a);
        }
        let err = invocation.invoke::<Value>(&mut conn).unwrap_err();
        assert!(err.to_string().contains("ravelin gcra"), "{args:?}: {err}");
    }
}

/// The reference: `RateLimitStore::check` semantics over `Quota::decide`, with a map of TATs.
#[derive(Debug, Default)]
struct Model {
    tats: HashMap<usize, u64>,
}

impl Model {
    fn batch(&mut self, now: u64, checks: &[(usize, Quota, u32, bool)]) -> Vec<(bool, u64)> {
        let before: Vec<u64> = checks
            .iter()
            .map(|c| self.tats.get(&c.0).copied().unwrap_or(0))
            .collect();
        let evaluations: Vec<_> = checks
            .iter()
            .zip(&before)
            .map(|(&(_, quota, cost, _), &tat)| quota.decide(tat, now, cost))
            .collect();
        let commit = checks
            .iter()
            .zip(&evaluations)
            .all(|(c, e)| !c.3 || e.decision.allowed);
        if commit {
            for (c, e) in checks.iter().zip(&evaluations) {
                if let Some(tat) = e.new_tat {
                    self.tats.insert(c.0, tat);
                }
            }
        }
        evaluations
            .iter()
            .zip(&before)
            .map(|(e, &tat)| (e.decision.allowed, tat.max(now) - now))
            .collect()
    }
}

#[test]
fn batches_match_the_reference_model() {
    let Some((_server, conn)) = server() else {
        return;
    };
    let prefix = unique_prefix("model");
    // proptest's runner takes an `Fn`: share the connection and case counter through cells.
    let conn = std::cell::RefCell::new(conn);
    let case = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    // Emission intervals from 1 ns to 2 ms, rarely whole microseconds, so real time between calls
    // refills buckets partially and the (µs, ns) arithmetic is exercised.
    let quota = (1u64..2_000_000, 1u32..6).prop_map(|(t, burst)| {
        Quota::new(1, Duration::from_nanos(t))
            .unwrap()
            .with_burst(burst)
            .unwrap()
    });
    let batch = prop::collection::vec((0usize..4, 0u32..5, any::<bool>()), 1..4);
    let strategy = (
        prop::collection::vec(quota, 4),
        prop::collection::vec(batch, 1..40),
    );
    runner
        .run(&strategy, |(quotas, batches)| {
            case.set(case.get() + 1);
            let case = case.get();
            let mut model = Model::default();
            for batch in batches {
                // Distinct keys within a batch, as callers guarantee.
                let mut seen = [false; 4];
                let checks: Vec<(usize, Quota, u32, bool)> = batch
                    .into_iter()
                    .filter(|(k, _, _)| !std::mem::replace(&mut seen[*k], true))
                    .map(|(k, cost, enforce)| (k, quotas[k], cost, enforce))
                    .collect();
                let keys: Vec<String> = checks
                    .iter()
                    .map(|c| format!("{prefix}{case}:{}", c.0))
                    .collect();
                let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                let args: Vec<Arg> = checks
                    .iter()
                    .map(|&(_, q, cost, enforce)| Arg::of(q, cost, enforce))
                    .collect();
                let (now, got) = eval(&mut conn.borrow_mut(), &key_refs, &args).unwrap();
                let expected = model.batch(now, &checks);
                prop_assert_eq!(got, expected, "checks {:?}", checks);
            }
            Ok(())
        })
        .unwrap();
}
