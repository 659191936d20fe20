//! The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-10) and `Retry-After`.
//!
//! Both fields are RFC 8941 structured-field lists of strings with integer parameters:
//!
//! ```text
//! RateLimit-Policy: "per-ip";q=100;w=60, "per-key";q=1000;w=3600
//! RateLimit: "per-ip";r=42;t=1, "per-key";r=999
//! ```
//!
//! `q` is the quota per window `w` (seconds). `r` is what remains now; `t` is the number of
//! seconds, rounded up, until more quota becomes available (draft-10's meaning, which suits
//! GCRA: one unit comes back every emission interval), omitted when the bucket is full. A 429
//! also carries `Retry-After`: the longest wait any denying rule needs for this request's cost,
//! which is never earlier than its `t`.

use std::time::Duration;

use http::HeaderValue;
use http::header::HeaderName;

use crate::gcra::{Decision, Quota};

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up: telling a client to come back before its quota returns only earns
/// it another 429.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// Time until the next unit comes back, or `None` when the bucket is full (nothing will).
pub fn next_unit_after(quota: &Quota, decision: &Decision) -> Option<Duration> {
    let debt = u64::try_from(decision.reset_after.as_nanos()).unwrap_or(u64::MAX);
    if debt == 0 {
        return None;
    }
    let t = quota.emission_interval_nanos();
    // Units return each time the debt crosses a multiple of T on its way down.
    let partial = debt.checked_rem(t).unwrap_or(0);
    Some(Duration::from_nanos(if partial == 0 { t } else { partial }))
}

/// One `RateLimit` list member: `"name";r=42;t=12`.
pub fn ratelimit_item(out: &mut String, name: &str, quota: &Quota, decision: &Decision) {
    // Written piece by piece rather than with `write!`: this runs on every request a rule
    // applies to, and the formatting machinery was most of its cost (issue 13).
    out.push('"');
    out.push_str(name);
    out.push_str("\";r=");
    ravelin_http::push_decimal(out, u64::from(decision.remaining));
    if let Some(after) = next_unit_after(quota, decision) {
        out.push_str(";t=");
        ravelin_http::push_decimal(out, ceil_secs(after));
    }
}

/// Joins list members into a field value. Names are validated to be token characters, so the
/// value is always a valid header value; an invalid one is dropped rather than sent.
pub(crate) fn list_value(items: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(items).ok()
}

/// `Retry-After` for a denied decision: at least one second.
pub(crate) fn retry_after_secs(decision: &Decision) -> u64 {
    ceil_secs(decision.retry_after).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(limit: u32, secs: u64) -> Quota {
        Quota::new(limit, Duration::from_secs(secs)).unwrap()
    }

    #[test]
    fn items_follow_the_draft_syntax() {
        let q = quota(100, 60); // T = 600 ms
        let fresh = q.decide(0, 0, 1).decision;
        let mut out = String::new();
        ratelimit_item(&mut out, "per-ip", &q, &fresh);
        // 99 left; the spent unit is back in 600 ms, rounded up to 1 s.
        assert_eq!(out, r#""per-ip";r=99;t=1"#);

        let full = q.decide(0, 10, 0).decision;
        out.clear();
        ratelimit_item(&mut out, "per-ip", &q, &full);
        assert_eq!(out, r#""per-ip";r=100"#);
    }

    #[test]
    fn t_counts_to_the_next_unit_and_retry_after_covers_the_cost() {
        let q = quota(1, 10); // one unit per 10 s
        let spent = q.decide(0, 0, 1).decision;
        assert_eq!(next_unit_after(&q, &spent), Some(Duration::from_secs(10)));
        let denied = q.decide(10_000_000_000, 3_000_000_000, 1).decision;
        assert!(!denied.allowed);
        assert_eq!(next_unit_after(&q, &denied), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_secs(&denied), 7);

        let q = quota(10, 10).with_burst(3).unwrap(); // T = 1 s
        let tat = 3_000_000_000 + 500_000_000; // 3.5 s of debt at now = 0.5 s
        let denied = q.decide(tat, 500_000_000, 2).decision;
        assert!(!denied.allowed);
        // One unit is back in 1 s (t = 1) but two are needed: Retry-After 2 ≥ t.
        assert_eq!(ceil_secs(next_unit_after(&q, &denied).unwrap()), 1);
        assert_eq!(retry_after_secs(&denied), 2);
    }

    #[test]
    fn rounding_is_up_and_never_zero_for_a_denial() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        let q = quota(1000, 1);
        let denied = Decision {
            allowed: false,
            limit: 1000,
            remaining: 0,
            reset_after: Duration::from_secs(1),
            retry_after: Duration::from_micros(1),
        };
        let _ = q;
        assert_eq!(retry_after_secs(&denied), 1);
    }
}
