//! Field names more than one crate writes or reads, defined once.

use http::HeaderName;

/// `x-ravelin-skipped`: the request header a guard's failure policy usually marks a fail-open
/// pass with — one field naming every skipped guard and why (`ratelimit=timed_out,
/// botscore=killed`, an RFC 8941 dictionary), so the origin can tell "not checked" from
/// "checked and allowed". `ravelin-failsafe` writes it (and re-exports this constant); the
/// ingress stage of `ravelin-proxy` removes client copies, since only the edge may set it.
pub const X_RAVELIN_SKIPPED: HeaderName = HeaderName::from_static("x-ravelin-skipped");

/// Appends `n` in decimal to a field value being built, without the formatting machinery: for
/// the numbers the edge writes on every request (a `Cache-Status` TTL, a `RateLimit`
/// item, a port), where `write!` cost more than the rest of the value.
///
/// ```
/// let mut value = String::from("max-age=");
/// ravelin_http::push_decimal(&mut value, 3600);
/// assert_eq!(value, "max-age=3600");
/// ```
pub fn push_decimal(out: &mut String, n: u64) {
    // Digits from the right into a stack buffer, then one append.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = n;
    while let Some(slot) = start.checked_sub(1).and_then(|i| digits.get_mut(i)) {
        // `rest % 10` is a single digit.
        *slot = b'0' + (rest % 10) as u8;
        start -= 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if let Some(Ok(text)) = digits.get(start..).map(std::str::from_utf8) {
        out.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn decimals_are_display(n in proptest::prelude::any::<u64>()) {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            proptest::prop_assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn edges() {
        for n in [0, 9, 10, u64::MAX] {
            let mut out = String::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }
}
