//! HTTP-date parsing and formatting (RFC 9110 §5.6.7).
//!
//! Recipients must accept all three historical formats (IMF-fixdate, rfc850-date, asctime-date).
//! Anything else is invalid: an invalid `Expires` means "already expired" (RFC 9111 §5.3), so the
//! parser is strict about structure — two-digit years in IMF form, dashes, missing commas, extra
//! spaces and zones other than GMT are all rejected — but, like most caches, it ignores the case of
//! day names, month names and `GMT`, which carries no ambiguity.
//!
//! Formatting is done here rather than with `httpdate`, whose formatter panics outside 1970–9999;
//! ours clamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The last second representable as a four-digit year: 9999-12-31T23:59:59Z.
const MAX_SECS: u64 = 253_402_300_799;

/// Parses an HTTP-date in any of the three formats of RFC 9110 §5.6.7.
pub(crate) fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim_matches(|c| c == ' ' || c == '\t');
    let (day, rest) = s.split_once([',', ' '])?;
    let sep = s.as_bytes().get(day.len()).copied()?;
    if sep == b',' {
        let rest = rest.strip_prefix(' ')?;
        if DAYS.iter().any(|d| d.eq_ignore_ascii_case(day)) {
            parse_imf(rest)
        } else if LONG_DAYS.iter().any(|d| d.eq_ignore_ascii_case(day)) {
            parse_rfc850(rest)
        } else {
            None
        }
    } else if DAYS.iter().any(|d| d.eq_ignore_ascii_case(day)) {
        parse_asctime(rest)
    } else {
        None
    }
}

/// `06 Nov 1994 08:49:37 GMT`
fn parse_imf(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let day = digits(b.get(0..2)?)?;
    expect(b, 2, b' ')?;
    let month = month(s.get(3..6)?)?;
    expect(b, 6, b' ')?;
    let year = digits(b.get(7..11)?)?;
    expect(b, 11, b' ')?;
    let (h, m, sec) = time_of_day(b.get(12..20)?)?;
    expect(b, 20, b' ')?;
    if !s.get(21..24)?.eq_ignore_ascii_case("GMT") {
        return None;
    }
    to_system_time(year, month, day, h, m, sec)
}

/// `06-Nov-94 08:49:37 GMT`
fn parse_rfc850(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 22 {
        return None;
    }
    let day = digits(b.get(0..2)?)?;
    expect(b, 2, b'-')?;
    let month = month(s.get(3..6)?)?;
    expect(b, 6, b'-')?;
    let yy = digits(b.get(7..9)?)?;
    expect(b, 9, b' ')?;
    let (h, m, sec) = time_of_day(b.get(10..18)?)?;
    expect(b, 18, b' ')?;
    if !s.get(19..22)?.eq_ignore_ascii_case("GMT") {
        return None;
    }
    // RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is in the past century.
    let this_year = year_of(SystemTime::now());
    let mut year = 2000 + yy;
    if year > this_year + 50 {
        year -= 100;
    }
    to_system_time(year, month, day, h, m, sec)
}

/// `Nov  6 08:49:37 1994`
fn parse_asctime(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 20 {
        return None;
    }
    let month = month(s.get(0..3)?)?;
    expect(b, 3, b' ')?;
    let day = match b.get(4..6)? {
        [b' ', d] => digits(&[*d])?,
        two => digits(two)?,
    };
    expect(b, 6, b' ')?;
    let (h, m, sec) = time_of_day(b.get(7..15)?)?;
    expect(b, 15, b' ')?;
    let year = digits(b.get(16..20)?)?;
    to_system_time(year, month, day, h, m, sec)
}

fn expect(b: &[u8], at: usize, c: u8) -> Option<()> {
    (b.get(at) == Some(&c)).then_some(())
}

fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
}

fn month(s: &str) -> Option<u64> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .and_then(|i| u64::try_from(i).ok())
        .map(|i| i + 1)
}

/// `08:49:37`
fn time_of_day(b: &[u8]) -> Option<(u64, u64, u64)> {
    if b.len() != 8 || b.get(2) != Some(&b':') || b.get(5) != Some(&b':') {
        return None;
    }
    let h = digits(b.get(0..2)?)?;
    let m = digits(b.get(3..5)?)?;
    let s = digits(b.get(6..8)?)?;
    // 60 is a leap second (RFC 9110 allows it in time-of-day).
    (h < 24 && m < 60 && s <= 60).then_some((h, m, s))
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's algorithm), for year >= 1.
fn days_from_civil(year: u64, month: u64, day: u64) -> i64 {
    let y = i64::try_from(year).unwrap_or(i64::MAX / 4) - i64::from(month <= 2);
    let m = i64::try_from(month).unwrap_or(1);
    let d = i64::try_from(day).unwrap_or(1);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn to_system_time(year: u64, month: u64, day: u64, h: u64, m: u64, s: u64) -> Option<SystemTime> {
    if !(1..=9999).contains(&year) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(i64::try_from(h * 3600 + m * 60 + s).ok()?)?;
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

fn year_of(t: SystemTime) -> u64 {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_from_days(secs / 86_400).0
}

/// (year, month, day) of the given day count since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        u64::try_from(y).unwrap_or(1970),
        u64::try_from(m).unwrap_or(1),
        u64::try_from(d).unwrap_or(1),
    )
}

/// Formats `t` as an IMF-fixdate, clamped to 1970-01-01 ..= 9999-12-31.
pub(crate) fn fmt_http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .min(MAX_SECS);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let wd = DAYS
        .get(usize::try_from((days + 3) % 7).unwrap_or(0))
        .copied()
        .unwrap_or("Mon");
    let mon = MONTHS
        .get(usize::try_from(m.saturating_sub(1)).unwrap_or(0))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{wd}, {d:02} {mon} {y:04} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rfc9110_5_6_7_three_formats_accepted() {
        let want = Some(at(784_111_777));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), want);
    }

    #[test]
    fn rfc9110_5_6_7_case_of_names_is_ignored() {
        let want = parse_http_date("Thu, 18 Aug 2050 02:01:18 GMT");
        assert!(want.is_some());
        assert_eq!(parse_http_date("THU, 18 Aug 2050 02:01:18 GMT"), want);
        assert_eq!(parse_http_date("Thu, 18 AUG 2050 02:01:18 GMT"), want);
        assert_eq!(parse_http_date("Thu, 18 Aug 2050 02:01:18 gMT"), want);
    }

    #[test]
    fn rfc9111_5_3_invalid_dates_are_rejected() {
        for bad in [
            "0",
            "",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 31 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 24:01:18 GMT",
            "Xyz, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 GMT extra",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formatting_clamps_instead_of_panicking() {
        assert_eq!(
            fmt_http_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(
            fmt_http_date(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    proptest! {
        #[test]
        fn format_matches_httpdate_and_round_trips(secs in 0u64..=MAX_SECS) {
            let t = at(secs);
            let ours = fmt_http_date(t);
            prop_assert_eq!(&ours, &httpdate::fmt_http_date(t));
            prop_assert_eq!(parse_http_date(&ours), Some(t));
            prop_assert_eq!(httpdate::parse_http_date(&ours).ok(), Some(t));
        }

        #[test]
        fn asctime_agrees_with_httpdate(secs in 0u64..=MAX_SECS) {
            let t = at(secs);
            let imf = fmt_http_date(t);
            // Build the asctime form from the IMF parts: "Sun, 06 Nov 1994 08:49:37 GMT".
            let wd = &imf[0..3];
            let day: u32 = imf[5..7].parse().unwrap();
            let mon = &imf[8..11];
            let year = &imf[12..16];
            let time = &imf[17..25];
            let asc = format!("{wd} {mon} {day:>2} {time} {year}");
            prop_assert_eq!(parse_http_date(&asc), Some(t));
            prop_assert_eq!(httpdate::parse_http_date(&asc).ok(), Some(t));
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse_http_date(&s);
        }
    }
}
