//! RFC 9110 §5.6.1 lists: members separated by commas, where a comma inside a quoted-string
//! (§5.6.4) does not separate. One splitter for every list the crates read (`Vary`,
//! `If-None-Match`, surrogate keys, `Forwarded` elements and their `;` parameters).
//!
//! ```
//! use ravelin_http::list::{split_list, split_quoted};
//!
//! let members: Vec<&[u8]> = split_list(br#"W/"a,b" , , "c\"d",e"#).collect();
//! assert_eq!(members, [&br#"W/"a,b""#[..], br#""c\"d""#, b"e"]);
//!
//! // The raw pieces, for grammars with their own delimiter and trimming rules.
//! let pairs: Vec<&[u8]> = split_quoted(br#"for="[2001:db8::1];x";proto=https"#, b';').collect();
//! assert_eq!(pairs, [&br#"for="[2001:db8::1];x""#[..], b"proto=https"]);
//! ```

/// Splits `value` at every `delimiter` byte outside a quoted-string, keeping each piece as it is
/// (untrimmed, empty pieces included): pieces joined with `delimiter` give `value` back.
///
/// Inside a quoted-string a backslash escapes the next byte (§5.6.4 `quoted-pair`); an
/// unterminated quoted-string runs to the end. Allocation-free.
pub fn split_quoted(value: &[u8], delimiter: u8) -> SplitQuoted<'_> {
    SplitQuoted {
        rest: Some(value),
        delimiter,
    }
}

/// The pieces of [`split_quoted`].
#[derive(Debug, Clone)]
pub struct SplitQuoted<'a> {
    rest: Option<&'a [u8]>,
    delimiter: u8,
}

impl<'a> Iterator for SplitQuoted<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in rest.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == self.delimiter && !quoted {
                self.rest = rest.get(i.saturating_add(1)..);
                return rest.get(..i);
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// The members of a comma-separated list field value: split at commas outside quoted-strings,
/// optional whitespace trimmed, empty members skipped (§5.6.1: a recipient ignores them).
/// Allocation-free: it runs on every `Vary` lookup.
pub fn split_list(value: &[u8]) -> ListMembers<'_> {
    ListMembers {
        pieces: split_quoted(value, b','),
    }
}

/// The members of [`split_list`].
#[derive(Debug, Clone)]
pub struct ListMembers<'a> {
    pieces: SplitQuoted<'a>,
}

impl<'a> Iterator for ListMembers<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.pieces.by_ref().map(trim_ows).find(|m| !m.is_empty())
    }
}

/// `bytes` without leading and trailing optional whitespace (§5.6.3 `OWS`: spaces and tabs).
pub fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(value: &str) -> Vec<&str> {
        split_list(value.as_bytes())
            .map(|m| std::str::from_utf8(m).unwrap())
            .collect()
    }

    #[test]
    fn commas_inside_quoted_strings_do_not_split() {
        assert_eq!(members(r#""a,b", c"#), [r#""a,b""#, "c"]);
        assert_eq!(members(r#"W/"x\",y", "z""#), [r#"W/"x\",y""#, r#""z""#]);
        assert_eq!(members(r#"a="\\", b"#), [r#"a="\\""#, "b"]);
        // Unterminated: the rest is one member.
        assert_eq!(members(r#"a, "b, c"#), ["a", r#""b, c"#]);
    }

    #[test]
    fn whitespace_and_empty_members() {
        assert_eq!(members(" a ,\t,b\t, ,"), ["a", "b"]);
        assert!(members("").is_empty());
        assert!(members(" , ,, ").is_empty());
        assert_eq!(trim_ows(b" \t x y \t"), b"x y");
        assert_eq!(trim_ows(b" \t "), b"");
    }

    #[test]
    fn split_quoted_keeps_pieces_as_they_are() {
        let pieces: Vec<&[u8]> = split_quoted(b"a;;\"b;c\" ;", b';').collect();
        assert_eq!(pieces, [&b"a"[..], b"", b"\"b;c\" ", b""]);
        assert_eq!(split_quoted(b"", b',').collect::<Vec<_>>(), [b""]);
        // A backslash outside quotes escapes nothing.
        let pieces: Vec<&[u8]> = split_quoted(b"a\\,b", b',').collect();
        assert_eq!(pieces, [&b"a\\"[..], b"b"]);
    }

    /// A list member as a sender writes it: a token, a quoted-string that may hold commas,
    /// quotes and backslashes (escaped), or a `name="quoted"` parameter.
    fn member() -> impl Strategy<Value = String> {
        let token = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,8}";
        let quoted = proptest::collection::vec(
            prop_oneof![
                "[ -!#-\\[\\]-~]".prop_map(|s: String| s),
                Just("\\\"".to_owned()),
                Just("\\\\".to_owned()),
                Just(",".to_owned()),
            ],
            0..6,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()));
        prop_oneof![
            token.prop_map(|s: String| s),
            quoted.clone(),
            (token, quoted).prop_map(|(n, q)| format!("{n}={q}")),
        ]
    }

    proptest! {
        /// Joining well-formed members with commas and optional whitespace, in any amount and
        /// with empty members between them, splits back into exactly those members.
        #[test]
        fn split_list_inverts_joining(
            list in proptest::collection::vec(member(), 0..8),
            ows in proptest::collection::vec("[ \t]{0,2}", 0..32),
            empties in proptest::collection::vec(0usize..3, 0..8),
        ) {
            let mut ows = ows.into_iter().cycle();
            let mut pad = || ows.next().unwrap_or_default();
            let mut value = String::new();
            for (i, m) in list.iter().enumerate() {
                for _ in 0..empties.get(i).copied().unwrap_or(0) {
                    value.push_str(&pad());
                    value.push(',');
                }
                value.push_str(&pad());
                value.push_str(m);
                value.push_str(&pad());
                value.push(',');
            }
            let got: Vec<&[u8]> = split_list(value.as_bytes()).collect();
            let want: Vec<&[u8]> = list.iter().map(|m| m.as_bytes()).collect();
            prop_assert_eq!(got, want, "{:?}", value);
        }

        /// For any bytes: the pieces join back to the input, and never panic.
        #[test]
        fn split_quoted_is_lossless(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            delimiter in prop_oneof![Just(b','), Just(b';'), any::<u8>()],
        ) {
            let pieces: Vec<&[u8]> = split_quoted(&bytes, delimiter).collect();
            prop_assert_eq!(pieces.join(&delimiter), bytes.clone());
            for m in split_list(&bytes) {
                prop_assert!(!m.is_empty());
                prop_assert_eq!(trim_ows(m), m);
            }
        }
    }
}
