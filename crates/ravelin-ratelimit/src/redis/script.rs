//! The GCRA script: key names, argument encoding, and the (untrusted) reply parser.

use std::borrow::Cow;

use ::redis::Value;

use crate::gcra::{Decision, Quota};
use crate::store::{Check, StoreError};

/// The Lua source, evaluated by `EVALSHA` (and `EVAL` when the server has not cached it).
pub(crate) const SOURCE: &str = include_str!("gcra.lua");

/// The store name in errors and metric labels.
pub(crate) const STORE: &str = "redis";

/// Nanoseconds per microsecond: the script keeps instants as (µs, ns rest) pairs.
const NANOS_PER_MICRO: u64 = 1_000;

/// What the reply parser needs to know about each check of a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) quota: Quota,
    pub(crate) cost: u32,
}

impl Spec {
    pub(crate) fn of(check: &Check<'_>) -> Self {
        Self {
            quota: check.quota,
            cost: check.cost,
        }
    }
}

/// Appends the Redis key of `check` to `out`:
/// `<prefix><rule length>:<rule>:<emission interval ns>:<burst>:<key bytes>`.
///
/// Injective over (rule, quota, key): the rule is length-prefixed, the two numbers contain no `:`,
/// and the key runs to the end. State is per (rule, emission interval, burst, key), so a rule whose
/// quota changes starts afresh, as in the in-memory store.
pub(crate) fn write_key(out: &mut Vec<u8>, prefix: &[u8], check: &Check<'_>) {
    use std::io::Write as _;
    out.extend_from_slice(prefix);
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{}:{}:{}:{}:",
        check.rule.len(),
        check.rule,
        check.quota.emission_interval_nanos(),
        check.quota.burst()
    );
    out.extend_from_slice(check.key);
}

/// The five script arguments of `check`: increment and tolerance as (µs, ns) pairs, and the
/// enforce flag.
pub(crate) fn args(check: &Check<'_>) -> [u64; 5] {
    let quota = &check.quota;
    let tolerance = quota.tolerance_nanos();
    // Any increment beyond the tolerance is denied; capping it keeps the script's doubles exact
    // whatever the cost.
    let increment = quota
        .emission_interval_nanos()
        .saturating_mul(u64::from(check.cost))
        .min(tolerance.saturating_add(1));
    [
        increment / NANOS_PER_MICRO,
        increment % NANOS_PER_MICRO,
        tolerance / NANOS_PER_MICRO,
        tolerance % NANOS_PER_MICRO,
        u64::from(check.enforce),
    ]
}

fn invalid(message: impl Into<Cow<'static, str>>) -> StoreError {
    StoreError::InvalidReply {
        store: STORE,
        message: message.into(),
    }
}

fn int(value: &Value, what: &str) -> Result<i64, StoreError> {
    match value {
        Value::Int(i) => Ok(*i),
        other => Err(invalid(format!(
            "{what} is {} instead of an integer",
            kind(other)
        ))),
    }
}

/// A value's type without its content: replies may be large or carry other tenants' data.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) => "a bulk string",
        Value::Array(_) => "an array",
        Value::SimpleString(_) => "a simple string",
        Value::Okay => "OK",
        Value::Map(_) => "a map",
        Value::Attribute { .. } => "an attribute",
        Value::Set(_) => "a set",
        Value::Double(_) => "a double",
        Value::Boolean(_) => "a boolean",
        Value::VerbatimString { .. } => "a verbatim string",
        Value::BigNumber(_) => "a big number",
        Value::Push { .. } => "a push",
        Value::ServerError(_) => "an error",
        _ => "an unknown type",
    }
}

/// Turns the script's reply into one decision per check, recomputing each with
/// [`Quota::decide`] so that the Redis store and the in-memory store answer identically.
///
/// The reply is untrusted: anything but `[now_us, (allowed, tat_us - now_us, tat_ns) × n]` with
/// values in range, and agreeing with the local recomputation, is an [`StoreError::InvalidReply`].
pub(crate) fn parse_reply(reply: &Value, specs: &[Spec]) -> Result<Vec<Decision>, StoreError> {
    let Value::Array(items) = reply else {
        return Err(invalid(format!(
            "the script returned {} instead of an array",
            kind(reply)
        )));
    };
    let expected = specs.len().checked_mul(3).and_then(|n| n.checked_add(1));
    if Some(items.len()) != expected {
        return Err(invalid(format!(
            "the script returned {} values for {} checks; is another program using the key prefix?",
            items.len(),
            specs.len()
        )));
    }
    let (first, rest) = items
        .split_first()
        .ok_or_else(|| invalid("the script returned an empty array"))?;
    let now_us = u64::try_from(int(first, "the server time")?)
        .map_err(|_| invalid("the server time is negative"))?;
    let now = now_us
        .checked_mul(NANOS_PER_MICRO)
        .ok_or_else(|| invalid(format!("the server time {now_us} µs is out of range")))?;

    let mut decisions = Vec::with_capacity(specs.len());
    for (spec, triple) in specs.iter().zip(rest.chunks_exact(3)) {
        let [allowed, ahead_us, tat_ns] = triple else {
            return Err(invalid("the script returned a short triple"));
        };
        let allowed = match int(allowed, "a decision")? {
            0 => false,
            1 => true,
            other => return Err(invalid(format!("a decision is {other}, not 0 or 1"))),
        };
        let ahead_us = int(ahead_us, "a TAT")?;
        let tat_ns = int(tat_ns, "a TAT")?;
        let tolerance = spec.quota.tolerance_nanos();
        let ahead = u64::try_from(ahead_us)
            .ok()
            .and_then(|us| us.checked_mul(NANOS_PER_MICRO))
            .zip(
                u64::try_from(tat_ns)
                    .ok()
                    .filter(|&ns| ns < NANOS_PER_MICRO),
            )
            .and_then(|(us, ns)| us.checked_add(ns))
            .filter(|&ahead| ahead <= tolerance)
            .ok_or_else(|| {
                invalid(format!(
                    "a TAT of now + {ahead_us} µs + {tat_ns} ns is outside 0..={tolerance} ns"
                ))
            })?;
        let tat = now
            .checked_add(ahead)
            .ok_or_else(|| invalid("a TAT overflows"))?;
        let evaluation = spec.quota.decide(tat, now, spec.cost);
        if evaluation.decision.allowed != allowed {
            return Err(invalid(
                "the script's decision disagrees with this crate's GCRA; is another version of the script loaded?",
            ));
        }
        decisions.push(evaluation.decision);
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn quota() -> Quota {
        Quota::per_minute(60).unwrap().with_burst(10).unwrap()
    }

    fn check<'a>(rule: &'a str, key: &'a [u8], cost: u32) -> Check<'a> {
        Check {
            rule,
            key,
            quota: quota(),
            cost,
            enforce: true,
        }
    }

    fn key(prefix: &str, check: &Check<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        write_key(&mut out, prefix.as_bytes(), check);
        out
    }

    const NOW_US: i64 = 1_760_000_000_123_456;

    #[test]
    fn key_layout() {
        let k = key("ravelin:rl:", &check("per-ip", b"10.0.0.1", 1));
        assert_eq!(k, b"ravelin:rl:6:per-ip:1000000000:10:10.0.0.1");
    }

    #[test]
    fn keys_are_injective() {
        // Without the length prefix these two would collide.
        let a = key("p:", &check("a:1", b"x", 1));
        let b = key("p:", &check("a", b"1:x", 1));
        assert_ne!(a, b);
        let other_quota = Check {
            quota: Quota::per_minute(60).unwrap(),
            ..check("a", b"x", 1)
        };
        assert_ne!(key("p:", &check("a", b"x", 1)), key("p:", &other_quota));
    }

    #[test]
    fn args_split_and_cap() {
        // T = 1 s, τ = 10 s.
        assert_eq!(args(&check("r", b"k", 3)), [3_000_000, 0, 10_000_000, 0, 1]);
        // A cost far beyond the burst is capped just past the tolerance.
        assert_eq!(
            args(&check("r", b"k", u32::MAX)),
            [10_000_000, 1, 10_000_000, 0, 1]
        );
        let fine = Quota::new(3, Duration::from_nanos(1_000_001)).unwrap();
        let c = Check {
            quota: fine,
            enforce: false,
            ..check("r", b"k", 2)
        };
        // T = 333_333 ns, τ = 999_999 ns.
        assert_eq!(args(&c), [666, 666, 999, 999, 0]);
    }

    #[test]
    fn parses_a_good_reply() {
        let specs = [
            Spec {
                quota: quota(),
                cost: 1,
            },
            Spec {
                quota: quota(),
                cost: 5,
            },
        ];
        // First check: fresh key. Second: 7 s ahead, cost 5 s: 12 s > 10 s, denied.
        let reply = Value::Array(vec![
            Value::Int(NOW_US),
            Value::Int(1),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(7_000_000),
            Value::Int(0),
        ]);
        let decisions = parse_reply(&reply, &specs).unwrap();
        assert!(decisions[0].allowed);
        assert_eq!(decisions[0].remaining, 9);
        assert!(!decisions[1].allowed);
        assert_eq!(decisions[1].remaining, 3);
        assert_eq!(decisions[1].retry_after, Duration::from_secs(2));
        assert_eq!(decisions[1].reset_after, Duration::from_secs(7));
    }

    #[test]
    fn rejects_garbage() {
        let specs = [Spec {
            quota: quota(),
            cost: 1,
        }];
        let bad = [
            Value::Nil,
            Value::Okay,
            Value::Int(1),
            Value::BulkString(b"1".to_vec()),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(NOW_US)]),
            // Too many values.
            Value::Array(vec![Value::Int(NOW_US); 7]),
            // Strings where integers belong.
            Value::Array(vec![
                Value::BulkString(b"1760000000123456".to_vec()),
                Value::Int(1),
                Value::Int(0),
                Value::Int(0),
            ]),
            // Negative time, time overflowing nanoseconds.
            Value::Array(vec![
                Value::Int(-1),
                Value::Int(1),
                Value::Int(0),
                Value::Int(0),
            ]),
            Value::Array(vec![
                Value::Int(i64::MAX),
                Value::Int(1),
                Value::Int(0),
                Value::Int(0),
            ]),
            // A decision that is not 0 or 1.
            Value::Array(vec![
                Value::Int(NOW_US),
                Value::Int(2),
                Value::Int(0),
                Value::Int(0),
            ]),
            // A TAT behind now, beyond the tolerance, a nanosecond rest of 1000.
            Value::Array(vec![
                Value::Int(NOW_US),
                Value::Int(1),
                Value::Int(-1),
                Value::Int(0),
            ]),
            Value::Array(vec![
                Value::Int(NOW_US),
                Value::Int(1),
                Value::Int(10_000_001),
                Value::Int(0),
            ]),
            Value::Array(vec![
                Value::Int(NOW_US),
                Value::Int(1),
                Value::Int(0),
                Value::Int(1000),
            ]),
            Value::Array(vec![
                Value::Int(NOW_US),
                Value::Int(1),
                Value::Int(i64::MAX),
                Value::Int(i64::MAX),
            ]),
            // Says allowed where GCRA denies (9.5 s ahead + 1 s > 10 s).
            Value::Array(vec![
                Value::Int(NOW_US),
                Value::Int(1),
                Value::Int(9_500_000),
                Value::Int(0),
            ]),
            // Says denied where GCRA allows.
            Value::Array(vec![
                Value::Int(NOW_US),
                Value::Int(0),
                Value::Int(0),
                Value::Int(0),
            ]),
            Value::Array(vec![
                Value::Int(NOW_US),
                Value::Int(1),
                Value::Nil,
                Value::Int(0),
            ]),
            Value::Array(vec![
                Value::Int(NOW_US),
                Value::Double(1.0),
                Value::Int(0),
                Value::Int(0),
            ]),
        ];
        for reply in bad {
            let err = parse_reply(&reply, &specs).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidReply { store: "redis", .. }),
                "{reply:?} gave {err}"
            );
            assert!(!err.is_retryable());
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            Just(Value::Okay),
            any::<i64>().prop_map(Value::Int),
            (-2i64..3).prop_map(Value::Int),
            (NOW_US - 2..NOW_US + 2).prop_map(Value::Int),
            (0i64..20_000_000).prop_map(Value::Int),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::BulkString),
            any::<f64>().prop_map(Value::Double),
            any::<bool>().prop_map(Value::Boolean),
            "[a-z]{0,4}".prop_map(Value::SimpleString),
        ];
        leaf.prop_recursive(3, 24, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Set),
                prop::collection::vec((inner.clone(), inner), 0..3).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        /// Any reply at all yields decisions or an error, never a panic; and decisions only come
        /// with the right count, each consistent with GCRA.
        #[test]
        fn any_reply_is_decisions_or_an_error(reply in arb_value(), costs in prop::collection::vec(0u32..12, 1..3)) {
            let specs: Vec<Spec> = costs.iter().map(|&cost| Spec { quota: quota(), cost }).collect();
            if let Ok(decisions) = parse_reply(&reply, &specs) {
                prop_assert_eq!(decisions.len(), specs.len());
                for d in decisions {
                    prop_assert!(d.remaining <= 10);
                    prop_assert!(d.reset_after <= Duration::from_secs(10));
                }
            }
        }

        /// Well-formed replies in range always parse, and agree with `Quota::decide`.
        #[test]
        fn well_formed_replies_parse(ahead in 0u64..=10_000_000_000, cost in 0u32..12) {
            let q = quota();
            let now = NOW_US as u64 * 1000;
            let expected = q.decide(now + ahead, now, cost).decision;
            let reply = Value::Array(vec![
                Value::Int(NOW_US),
                Value::Int(i64::from(expected.allowed)),
                Value::Int((ahead / 1000) as i64),
                Value::Int((ahead % 1000) as i64),
            ]);
            let decisions = parse_reply(&reply, &[Spec { quota: q, cost }]).unwrap();
            prop_assert_eq!(decisions, vec![expected]);
        }
    }
}
