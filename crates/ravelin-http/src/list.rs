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
//!
//! A quoted-string that is never closed runs to the end of the value, commas and all: a list
//! that ends inside one is malformed, and a reader that trusts some of its members (the hops of
//! a `Forwarded` chain) must not believe what it would read there. [`SplitQuoted::unterminated`]
//! and [`has_unterminated_quote`] tell; [`quotes_well_formed`] checks that every quote of a
//! member's `;` parameters is a whole, closed value.
//!
//! ```
//! use ravelin_http::list::{has_unterminated_quote, quotes_well_formed, split_quoted};
//!
//! // A client wrote `for=9.9.9.9;x="`, a proxy appended `, for=203.0.113.7` to the same line.
//! let value = br#"for=9.9.9.9;x=", for=203.0.113.7"#;
//! let mut elements = split_quoted(value, b',');
//! assert_eq!(elements.next(), Some(&value[..]));
//! assert!(elements.unterminated());
//! assert!(has_unterminated_quote(value));
//! assert!(!quotes_well_formed(value));
//! assert!(quotes_well_formed(br#"for="[2001:db8::1]:80";proto=https"#));
//! // Unquoted values are not judged: their boundaries can be believed.
//! assert!(quotes_well_formed(b"for=2001:db8::1;host=a.example:8080;secure"));
//! ```

/// Splits `value` at every `delimiter` byte outside a quoted-string, keeping each piece as it is
/// (untrimmed, empty pieces included): pieces joined with `delimiter` give `value` back.
///
/// Inside a quoted-string a backslash escapes the next byte (§5.6.4 `quoted-pair`); an
/// unterminated quoted-string runs to the end of `value` and so ends the last piece, which
/// [`SplitQuoted::unterminated`] then reports: the pieces are the same either way, and a caller
/// that must not read a malformed value asks. Allocation-free.
pub fn split_quoted(value: &[u8], delimiter: u8) -> SplitQuoted<'_> {
    SplitQuoted {
        rest: Some(value),
        delimiter,
        unterminated: false,
    }
}

/// The pieces of [`split_quoted`].
#[derive(Debug, Clone)]
pub struct SplitQuoted<'a> {
    rest: Option<&'a [u8]>,
    delimiter: u8,
    unterminated: bool,
}

impl SplitQuoted<'_> {
    /// Whether the last piece returned so far ends inside a quoted-string that was never closed
    /// (or in the middle of its `quoted-pair`): the value is malformed, and that piece swallowed
    /// every delimiter after the opening quote. Only the last piece of a value can; `false`
    /// before it has been returned.
    pub fn unterminated(&self) -> bool {
        self.unterminated
    }
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
        // A quoted-pair is only read inside quotes, so `escaped` implies `quoted`.
        self.unterminated = quoted;
        Some(rest)
    }
}

/// Whether `value` ends inside a quoted-string that was never closed (see
/// [`SplitQuoted::unterminated`]). Escapes are read as [`split_quoted`] reads them: a backslash
/// escapes only within quotes.
pub fn has_unterminated_quote(value: &[u8]) -> bool {
    // Quoting is tracked across pieces whatever the delimiter; `"` itself never splits (it
    // opens or closes a quoted-string first), so this is one pass and one piece.
    let mut pieces = split_quoted(value, b'"');
    pieces.by_ref().for_each(drop);
    pieces.unterminated()
}

/// Whether `bytes` is exactly one §5.6.4 `quoted-string`: `"`, `qdtext` and `quoted-pair`s, and
/// the closing `"` as the last byte (`obs-text`, bytes from 0x80, is allowed as the grammar
/// allows it).
pub fn is_quoted_string(bytes: &[u8]) -> bool {
    let Some(inner) = bytes.strip_prefix(b"\"") else {
        return false;
    };
    // `qdtext` and the escaped byte of a `quoted-pair` are the same set, but for `"` and `\`,
    // which only a quoted-pair carries.
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    let mut escaped = false;
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        if escaped {
            if !text(b) {
                return false;
            }
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            // The closing quote must end it.
            return bytes.next().is_none();
        } else if !text(b) {
            return false;
        }
    }
    false
}

/// Whether every `"` in `member` (`;`-separated `name=value` parameters, as an RFC 7239 §4
/// `forwarded-element`) belongs to a quoted-string that is a parameter's whole value: opened
/// right after its `=` (optional whitespace around it allowed), closed (§5.6.4), and followed by
/// nothing before the next `;`. Pieces without a quote are not judged: where every quote is a
/// whole value, the member's boundaries can be believed whatever else its grammar gets wrong
/// (senders write `for=2001:db8::1` or `host=a.example:8080` unquoted, or a `;secure` flag),
/// while a stray or unclosed quote may have swallowed the delimiters after it.
pub fn quotes_well_formed(member: &[u8]) -> bool {
    let mut pairs = split_quoted(member, b';');
    let mut well_formed = true;
    for pair in pairs.by_ref() {
        if !pair.contains(&b'"') {
            continue;
        }
        let pair = trim_ows(pair);
        let whole_value = pair.iter().position(|&b| b == b'=').is_some_and(|eq| {
            let (name, value) = (pair.get(..eq), pair.get(eq.saturating_add(1)..));
            name.is_some_and(|name| !name.contains(&b'"'))
                && value.is_some_and(|value| is_quoted_string(trim_ows(value)))
        });
        well_formed &= whole_value;
    }
    well_formed && !pairs.unterminated()
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
    fn unterminated_quotes_are_reported() {
        // The attack value: a client's open quote swallows the element a proxy appended.
        let value = br#"for=9.9.9.9;x=", for=203.0.113.7"#;
        let mut pieces = split_quoted(value, b',');
        assert!(!pieces.unterminated(), "nothing returned yet");
        assert_eq!(pieces.next(), Some(&value[..]));
        assert!(pieces.unterminated());
        assert_eq!(pieces.next(), None);
        assert!(pieces.unterminated());
        assert!(has_unterminated_quote(value));
        // Only the last piece can be the unterminated one.
        let mut pieces = split_quoted(br#"a, "b, c"#, b',');
        assert_eq!(pieces.next(), Some(&b"a"[..]));
        assert!(!pieces.unterminated());
        assert_eq!(pieces.next(), Some(&br#" "b, c"#[..]));
        assert!(pieces.unterminated());
        // A backslash escaping the closing quote leaves it open; one outside quotes does not.
        assert!(has_unterminated_quote(br#"a="b\""#));
        assert!(has_unterminated_quote(br#"a="b\"#));
        assert!(!has_unterminated_quote(br#"a="b\\""#));
        assert!(!has_unterminated_quote(br#"a\, b"#));
        for balanced in [&b""[..], b"a, b", br#""", "a,b""#, br#"x="\"", y"#] {
            assert!(!has_unterminated_quote(balanced));
            let mut pieces = split_quoted(balanced, b',');
            pieces.by_ref().for_each(drop);
            assert!(!pieces.unterminated());
        }
    }

    #[test]
    fn quoted_strings_and_parameters() {
        for ok in [
            &br#""""#[..],
            br#""a""#,
            br#""a\"b""#,
            b"\"\t \x80\"",
            br#""\\""#,
        ] {
            assert!(is_quoted_string(ok), "{:?}", ok);
        }
        for bad in [
            &b""[..],
            b"a",
            br#"""#,
            br#""a"#,
            br#""a\""#,
            br#""a"b""#,
            br#""a""#.as_slice().strip_suffix(b"\"").unwrap_or_default(),
            b"\"\x01\"",
            b"\"\x7f\"",
            b"\"a\\\x00\"",
        ] {
            assert!(!is_quoted_string(bad), "{:?}", bad);
        }
        for ok in [
            &b""[..],
            b"for=192.0.2.1",
            br#"for="[2001:db8::1]:80";proto=https;by=_x"#,
            br#"for="a;b,c";host="x\"y""#,
            b"for=1.2.3.4 ; proto=http;",
            br#"for = "1.2.3.4""#,
            b";;",
            b" ",
            // No quote: not judged (common sender output, boundaries believable).
            b"for=1.2.3.4;secure",
            b"for = 1.2.3.4",
            b"for=[2001:db8::1]",
            b"for=2001:db8::1;host=a.example:8080",
            b"=x",
            b"for=",
            b"for=a=b",
        ] {
            assert!(quotes_well_formed(ok), "{:?}", ok);
        }
        for bad in [
            &br#"for=9.9.9.9;x=""#[..],
            br#"for=9.9.9.9;x=", for=203.0.113.7"#,
            br#"for="a"b"#,
            br#"for="a""b""#,
            br#"for=a"b""#,
            br#"x"y=1;for=1.2.3.4"#,
            br#""for"=1.2.3.4"#,
            br#""1.2.3.4""#,
        ] {
            assert!(!quotes_well_formed(bad), "{:?}", bad);
        }
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

        /// Well-formed members never read as unterminated, in any piece, and the quotes of their
        /// `name=value` parameters are well formed.
        #[test]
        fn well_formed_lists_are_terminated(list in proptest::collection::vec(member(), 0..8)) {
            let value = list.join(", ");
            prop_assert!(!has_unterminated_quote(value.as_bytes()), "{:?}", value);
            let mut pieces = split_quoted(value.as_bytes(), b',');
            while pieces.next().is_some() {
                prop_assert!(!pieces.unterminated(), "{:?}", value);
            }
            for m in &list {
                // `name="quoted"` (a token has no `=`, a bare quoted-string starts with `"`).
                if !m.starts_with('"') && m.contains('=') {
                    prop_assert!(quotes_well_formed(m.as_bytes()), "{:?}", m);
                }
            }
        }

        /// A value with an open quote (well-formed members, then `"` and anything without a
        /// quote or backslash) is reported, its last piece holds everything after the quote,
        /// and that piece's quotes are not well formed.
        #[test]
        fn an_open_quote_is_reported(
            list in proptest::collection::vec(member(), 0..4),
            tail in "[^\"\\\\]{0,20}",
        ) {
            let value = format!("{}\"{tail}", list.join(", "));
            prop_assert!(has_unterminated_quote(value.as_bytes()), "{:?}", value);
            let mut pieces = split_quoted(value.as_bytes(), b',');
            let mut last = None;
            for piece in pieces.by_ref() {
                last = Some(piece);
            }
            prop_assert!(pieces.unterminated());
            let last = last.unwrap_or_default();
            prop_assert!(last.ends_with(format!("\"{tail}").as_bytes()), "{:?}", value);
            prop_assert!(!quotes_well_formed(last));
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
