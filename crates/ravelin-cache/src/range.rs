//! Serving a single byte range from a stored complete response (RFC 9110 §14, RFC 9111 §3.4).
//!
//! Only one range per request is served; a request for several ranges gets the whole
//! representation, which a server is always allowed to send instead (§14.2).

use std::time::SystemTime;

use http::HeaderValue;

use crate::date::parse_http_date;
use crate::headers::EntityTag;

/// What to send for a request's `Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeOutcome {
    /// The whole representation (no `Range`, an unsupported one, or `If-Range` did not match).
    Full,
    /// Bytes `start..=end`.
    Partial(u64, u64),
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
}

/// Whether a miss for `range` may fetch the whole object to store it: only a single closed
/// byte range (`bytes=a-b`) whose last byte lies within `limit`. The edge then reads at most
/// `limit` bytes from the origin before the client has its range, however large the object
/// turns out to be (a larger one is not stored, and its body is dropped once the range is out).
/// A suffix (`bytes=-n`) or open-ended (`bytes=a-`) range, or one ending past `limit`, would
/// make one small request read a large object to its end: those go forward with their `Range`.
pub(crate) fn fill_is_bounded(range: Option<&HeaderValue>, limit: u64) -> bool {
    let Some(spec) = range
        .and_then(|r| r.to_str().ok())
        .map(str::trim)
        .and_then(|r| {
            r.get(..6)
                .filter(|u| u.eq_ignore_ascii_case("bytes="))
                .and(r.get(6..))
        })
    else {
        return false;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return false;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    !spec.contains(',')
        && matches!((num(first), num(last)), (Some(a), Some(b)) if a <= b && b < limit)
}

pub(crate) fn evaluate(
    range: Option<&HeaderValue>,
    if_range: Option<&HeaderValue>,
    len: u64,
    etag: Option<&EntityTag>,
    last_modified: Option<SystemTime>,
) -> RangeOutcome {
    let Some(range) = range.and_then(|r| r.to_str().ok()) else {
        return RangeOutcome::Full;
    };
    if let Some(cond) = if_range
        && !if_range_matches(cond, etag, last_modified)
    {
        return RangeOutcome::Full;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=").or_else(|| {
        range
            .trim()
            .get(..6)
            .filter(|u| u.eq_ignore_ascii_case("bytes="))
            .and_then(|_| range.trim().get(6..))
    }) else {
        return RangeOutcome::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeOutcome::Full;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            None => RangeOutcome::Full,
            Some(0) => RangeOutcome::Unsatisfiable,
            Some(_) if len == 0 => RangeOutcome::Unsatisfiable,
            Some(n) => RangeOutcome::Partial(len - n.min(len), len - 1),
        },
        (start, "") => match num(start) {
            None => RangeOutcome::Full,
            Some(s) if s >= len => RangeOutcome::Unsatisfiable,
            Some(s) => RangeOutcome::Partial(s, len - 1),
        },
        (start, end) => match (num(start), num(end)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= len {
                    RangeOutcome::Unsatisfiable
                } else {
                    RangeOutcome::Partial(s, e.min(len - 1))
                }
            }
            _ => RangeOutcome::Full,
        },
    }
}

/// RFC 9110 §13.1.5: an entity-tag must match strongly; a date must equal `Last-Modified`.
fn if_range_matches(
    cond: &HeaderValue,
    etag: Option<&EntityTag>,
    last_modified: Option<SystemTime>,
) -> bool {
    let bytes = cond.as_bytes();
    if bytes.starts_with(b"\"") || bytes.starts_with(b"W/") {
        match (EntityTag::parse(bytes), etag) {
            (Some(want), Some(have)) => {
                !want.weak && !have.weak && have.well_formed && want.opaque == have.opaque
            }
            _ => false,
        }
    } else {
        match (cond.to_str().ok().and_then(parse_http_date), last_modified) {
            (Some(want), Some(have)) => want == have,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(range: &str, len: u64) -> RangeOutcome {
        evaluate(
            Some(&HeaderValue::from_str(range).unwrap()),
            None,
            len,
            None,
            None,
        )
    }

    #[test]
    fn only_a_closed_range_within_the_bound_may_fill() {
        let fill = |r: &str| fill_is_bounded(Some(&HeaderValue::from_str(r).unwrap()), 1000);
        assert!(fill("bytes=0-9"));
        assert!(fill("BYTES= 10 - 999"));
        assert!(!fill("bytes=0-1000"), "its end is past the bound");
        assert!(!fill("bytes=-1"), "a suffix reads the object to its end");
        assert!(!fill("bytes=10-"), "open-ended");
        assert!(!fill("bytes=9-1"));
        assert!(!fill("bytes=0-1,5-6"));
        assert!(!fill("items=0-1"));
        assert!(!fill_is_bounded(None, 1000));
    }

    #[test]
    fn rfc9110_14_1_2_byte_ranges() {
        assert_eq!(eval("bytes=0-1", 11), RangeOutcome::Partial(0, 1));
        assert_eq!(eval("bytes=1-", 11), RangeOutcome::Partial(1, 10));
        assert_eq!(eval("bytes=-1", 11), RangeOutcome::Partial(10, 10));
        assert_eq!(eval("bytes=-50", 11), RangeOutcome::Partial(0, 10));
        assert_eq!(eval("bytes=5-100", 11), RangeOutcome::Partial(5, 10));
        assert_eq!(eval("bytes=11-", 11), RangeOutcome::Unsatisfiable);
        assert_eq!(eval("bytes=-0", 11), RangeOutcome::Unsatisfiable);
        assert_eq!(eval("bytes=0-1,3-4", 11), RangeOutcome::Full);
        assert_eq!(eval("items=0-1", 11), RangeOutcome::Full);
        assert_eq!(eval("bytes=3-1", 11), RangeOutcome::Full);
        assert_eq!(eval("bytes=a-", 11), RangeOutcome::Full);
    }

    #[test]
    fn rfc9110_13_1_5_if_range() {
        let strong = EntityTag::parse(b"\"v1\"").unwrap();
        let range = HeaderValue::from_static("bytes=0-1");
        let hit = HeaderValue::from_static("\"v1\"");
        let miss = HeaderValue::from_static("\"v2\"");
        assert_eq!(
            evaluate(Some(&range), Some(&hit), 10, Some(&strong), None),
            RangeOutcome::Partial(0, 1)
        );
        assert_eq!(
            evaluate(Some(&range), Some(&miss), 10, Some(&strong), None),
            RangeOutcome::Full
        );
        let weak = EntityTag::parse(b"W/\"v1\"").unwrap();
        assert_eq!(
            evaluate(Some(&range), Some(&hit), 10, Some(&weak), None),
            RangeOutcome::Full
        );
    }
}
