//! Path normalization: one spelling per resource, so that a policy written for `/login` cannot be
//! walked around with `/LOGIN`, `//login`, `/./login`, `/x/../login`, `/%6cogin` or `/login;a=b`.
//!
//! Two forms come out of a request path:
//!
//! - the **canonical path** ([`canonical_path`]): percent-escapes of unreserved characters decoded
//!   (RFC 3986 §6.2.2.2), the other escapes' hex digits upper-cased (§6.2.2.1), dot segments
//!   removed (§5.2.4) and runs of `/` merged. Raw bytes outside ASCII (which httparse and `http`
//!   accept) are percent-encoded with upper-case hex (§2.1), the form an escaped one keeps, so
//!   `/登录` and `/%E7%99%BB%E5%BD%95` are one path. Decoding unreserved characters and removing
//!   dot segments do not change what the path names (§6.2.2); merging slashes is what nginx
//!   (`merge_slashes on`) and Envoy (`merge_slashes`) do. The edge forwards this form, so the origin
//!   serves exactly the path the policies matched.
//! - the **match path** ([`match_path`]): the canonical path with each segment's `;parameters`
//!   cut off (Tomcat, Jetty and Spring ignore them when routing), the remaining printable-ASCII
//!   escapes decoded, and, optionally, ASCII case folded (Express, IIS and others route without
//!   regard to case). Policies (rate-limit `match`, bot routes, [`PathPrefix`](crate::PathPrefix))
//!   compare this form only; it is never sent anywhere.
//!
//! What the strict form refuses, because origins disagree on what it means: an encoded `/`
//! (`%2F`) or `\` (`%5C`), a raw `\`, encoded control characters, malformed escapes, and dot
//! segments that carry parameters (`..;x`, which Tomcat reads as `..`). The lenient form (for
//! embedders who run no ingress stage) never fails: it reads each of those the way that makes a
//! policy match more, never less.

use std::fmt::Write as _;

/// Why a path was refused by the strict normalization. Each is answered `400 Bad Request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/` (only origin-form and absolute-form targets are served).
    #[error("the request path must start with /")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-escape at byte {at} of the path")]
    InvalidEscape {
        /// Byte offset of the `%`.
        at: usize,
    },
    /// `%2F` or `%5C`: some origins decode it into a separator before routing, others do not.
    #[error("the path encodes a separator ({escape}); origins disagree on what it means")]
    EncodedSeparator {
        /// The escape as received, upper-cased.
        escape: &'static str,
    },
    /// A raw `\`, which Windows servers and some frameworks read as `/`.
    #[error("the path contains a backslash, which some origins read as /")]
    Backslash,
    /// An escape decoding to a control character (`%00`–`%1F`, `%7F`).
    #[error("the path encodes a control character (%{byte:02X})")]
    EncodedControl {
        /// The decoded byte.
        byte: u8,
    },
    /// A dot segment with parameters (`..;x`, `.;x`), which some origins read as a dot segment.
    #[error("the path has a dot segment with parameters ({segment:?}); origins disagree on it")]
    AmbiguousDotSegment {
        /// The segment, truncated to 32 bytes.
        segment: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    Lenient,
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the escape starting at `bytes[i]` (a `%`), if well formed.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    let hi = hex_value(*bytes.get(i.checked_add(1)?)?)?;
    let lo = hex_value(*bytes.get(i.checked_add(2)?)?)?;
    Some(hi << 4 | lo)
}

fn push_escape(out: &mut String, byte: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "%{byte:02X}");
}

/// The strict canonical form of `raw` (a request path without its query).
///
/// # Errors
/// [`PathError`] for a spelling origins disagree on; see the [module docs](self).
pub fn canonical_path(raw: &str) -> Result<String, PathError> {
    canonical(raw, Mode::Strict)
}

/// The canonical form of `raw`, never failing: malformed escapes are kept as they are, `%2F`,
/// `%5C` and `\` are read as `/`, encoded control characters stay encoded, and `..;x` is read as
/// `..`. For matching requests that did not pass the strict ingress check.
pub fn canonical_path_lenient(raw: &str) -> String {
    canonical(raw, Mode::Lenient).unwrap_or_else(|_| String::from("/"))
}

fn canonical(raw: &str, mode: Mode) -> Result<String, PathError> {
    // Most paths are their own canonical form; they are recognised in one scan and copied,
    // without the decoding pass and the segment stack (issue 13).
    if is_plain(raw) {
        return Ok(raw.to_owned());
    }
    canonical_general(raw, mode)
}

/// Whether `raw` is already canonical: absolute; only unreserved characters, `/`, and the
/// sub-delimiters, `:` and `@` other than `;` (no escape, no backslash, nothing outside
/// ASCII, which the general algorithm percent-encodes); no empty segment but a trailing one;
/// no dot segment. Its canonical form is itself in both modes (the property test
/// `plain_paths_are_their_own_canonical_form` checks this against the general algorithm).
fn is_plain(raw: &str) -> bool {
    if !raw.starts_with('/') || !raw.bytes().all(is_plain_byte) {
        return false;
    }
    let mut segments = raw.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

const fn is_plain_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'/' | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

fn canonical_general(raw: &str, mode: Mode) -> Result<String, PathError> {
    let strict = mode == Mode::Strict;
    if !raw.starts_with('/') && !raw.is_empty() && strict {
        return Err(PathError::NotAbsolute);
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len().saturating_add(1));
    if !raw.starts_with('/') {
        decoded.push('/');
    }
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => match escape_at(bytes, i) {
                Some(byte) => {
                    i = i.saturating_add(3);
                    if is_unreserved(byte) {
                        decoded.push(char::from(byte));
                    } else if byte == b'/' || byte == b'\\' {
                        if strict {
                            return Err(PathError::EncodedSeparator {
                                escape: if byte == b'/' { "%2F" } else { "%5C" },
                            });
                        }
                        decoded.push('/');
                    } else if byte < 0x20 || byte == 0x7f {
                        if strict {
                            return Err(PathError::EncodedControl { byte });
                        }
                        push_escape(&mut decoded, byte);
                    } else {
                        push_escape(&mut decoded, byte);
                    }
                    continue;
                }
                None if strict => return Err(PathError::InvalidEscape { at: i }),
                None => decoded.push('%'),
            },
            b'\\' if strict => return Err(PathError::Backslash),
            b'\\' => decoded.push('/'),
            // A raw byte outside ASCII (httparse and `http` accept them) is written as the
            // escape an already-encoded one keeps, so `/登录` and `/%E7%99%BB%E5%BD%95` are one
            // path, and the forwarded form is valid RFC 3986.
            0x80.. => push_escape(&mut decoded, b),
            _ => decoded.push(char::from(b)),
        }
        i = i.saturating_add(1);
    }
    remove_dot_segments(&decoded, mode)
}

/// RFC 3986 §5.2.4 over `/`-separated segments, merging empty segments (`//`), keeping one
/// trailing `/` when the input ended on a separator or a dot segment.
fn remove_dot_segments(path: &str, mode: Mode) -> Result<String, PathError> {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in path.split('/').skip(1) {
        let bare = segment.split(';').next().unwrap_or_default();
        let is_dot = matches!(bare, "." | "..");
        if is_dot && bare.len() != segment.len() && mode == Mode::Strict {
            let mut shown = segment.to_owned();
            shown.truncate(shown.floor_char_boundary_compat(32));
            return Err(PathError::AmbiguousDotSegment { segment: shown });
        }
        match bare {
            "" if segment.is_empty() => trailing = true,
            "." => trailing = true,
            ".." => {
                stack.pop();
                trailing = true;
            }
            _ => {
                stack.push(segment);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &stack {
        out.push('/');
        out.push_str(segment);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `str::floor_char_boundary` is not stable on the project's minimum Rust version.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for String {
    fn floor_char_boundary_compat(&self, index: usize) -> usize {
        if index >= self.len() {
            return self.len();
        }
        (0..=index)
            .rev()
            .find(|&i| self.is_char_boundary(i))
            .unwrap_or(0)
    }
}

/// The path policies compare: see the [module docs](self). Built by [`match_path`], or taken
/// from the request's [`RequestIdentity`](crate::RequestIdentity) with [`MatchPath::of`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MatchPath {
    path: String,
    case_folded: bool,
}

impl MatchPath {
    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// Whether ASCII case was folded (then prefixes compare their folded form).
    pub fn is_case_folded(&self) -> bool {
        self.case_folded
    }

    /// The match path of a request: the one its [`RequestIdentity`](crate::RequestIdentity)
    /// extension carries (set by the ingress stage), or else computed from the URI with the
    /// lenient normalization and case folding. A module calls this instead of reading
    /// `uri.path()`, so it matches the same path whether or not an ingress stage ran.
    pub fn of<'a>(
        uri: &http::Uri,
        extensions: &'a http::Extensions,
    ) -> std::borrow::Cow<'a, MatchPath> {
        match extensions.get::<crate::RequestIdentity>() {
            Some(identity) => std::borrow::Cow::Borrowed(identity.match_path()),
            None => std::borrow::Cow::Owned(match_path(&canonical_path_lenient(uri.path()), true)),
        }
    }
}

impl std::fmt::Display for MatchPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
}

/// The match path of a canonical path: segment parameters cut, printable-ASCII escapes other
/// than `%2F`, `%5C` and `%25` decoded, empty segments merged, and ASCII case folded when
/// `fold_case`. Bytes outside ASCII stay (or, passed raw, become) upper-case escapes, as in the
/// canonical path; folding lower-cases their hex digits, never the characters they encode.
pub fn match_path(canonical: &str, fold_case: bool) -> MatchPath {
    // Without escapes, parameters or empty inner segments the match path is the path itself
    // (case folded): copied, not rebuilt segment by segment (issue 13).
    if canonical.starts_with('/')
        && canonical.is_ascii()
        && !canonical.contains("//")
        && !canonical.bytes().any(|b| b == b'%' || b == b';')
    {
        let mut path = canonical.to_owned();
        if fold_case {
            path.make_ascii_lowercase();
        }
        return MatchPath {
            path,
            case_folded: fold_case,
        };
    }
    match_path_general(canonical, fold_case)
}

fn match_path_general(canonical: &str, fold_case: bool) -> MatchPath {
    let mut out = String::with_capacity(canonical.len());
    let mut trailing = false;
    for segment in canonical.split('/').skip(1) {
        let bare = segment.split(';').next().unwrap_or_default();
        if bare.is_empty() {
            trailing = true;
            continue;
        }
        trailing = false;
        out.push('/');
        let bytes = bare.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%'
                && let Some(byte) = escape_at(bytes, i)
                && (0x21..0x7f).contains(&byte)
                && !matches!(byte, b'/' | b'\\' | b'%')
            {
                out.push(char::from(byte));
                i = i.saturating_add(3);
                continue;
            }
            if b.is_ascii() {
                out.push(char::from(b));
            } else {
                push_escape(&mut out, b);
            }
            i = i.saturating_add(1);
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    if fold_case {
        out.make_ascii_lowercase();
    }
    MatchPath {
        path: out,
        case_folded: fold_case,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon(raw: &str) -> String {
        canonical_path(raw).unwrap()
    }

    fn matched(raw: &str) -> String {
        match_path(&canon(raw), true).as_str().to_owned()
    }

    #[test]
    fn spellings_of_login_all_match_login() {
        for raw in [
            "/login",
            "/LOGIN",
            "//login",
            "/./login",
            "/x/../login",
            "/%6cogin",
            "/%6Cogin",
            "/login;a=b",
            "/login;jsessionid=1",
            "///./x/./../login",
            "/../login",
        ] {
            assert_eq!(matched(raw), "/login", "{raw}");
        }
        assert_eq!(matched("/login/"), "/login/");
        assert_eq!(matched("/login/."), "/login/");
    }

    #[test]
    fn canonical_keeps_case_params_and_reserved_escapes() {
        assert_eq!(canon("/A/b;c=d/%7e%41"), "/A/b;c=d/~A");
        assert_eq!(canon("/a%3fb"), "/a%3Fb");
        assert_eq!(canon("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(canon(""), "/");
        assert_eq!(canon("/"), "/");
        assert_eq!(canon("/a/b/.."), "/a/");
        assert_eq!(canon("/a//b//"), "/a/b/");
        assert_eq!(canon("/é"), "/%C3%A9");
    }

    /// The raw UTF-8 spelling of a path and its percent-encoded spelling are one path: the
    /// canonical form encodes every byte outside ASCII as an upper-case escape.
    #[test]
    fn raw_and_encoded_non_ascii_are_one_path() {
        const RAW: &str = "/登录";
        const ENCODED: &str = "/%E7%99%BB%E5%BD%95";
        assert_eq!(RAW.as_bytes(), b"/\xE7\x99\xBB\xE5\xBD\x95");
        for spelling in [
            RAW,
            ENCODED,
            "/%e7%99%bb%e5%bd%95",
            "/登%E5%BD%95",
            "//./登录",
        ] {
            assert_eq!(canon(spelling), ENCODED, "{spelling}");
            assert_eq!(canonical_path_lenient(spelling), ENCODED, "{spelling}");
            for fold in [false, true] {
                assert_eq!(
                    match_path(&canon(spelling), fold),
                    match_path(&canon(ENCODED), fold),
                    "{spelling}"
                );
            }
        }
        assert_eq!(matched(RAW), "/%e7%99%bb%e5%bd%95");
        assert_eq!(match_path(&canon(RAW), false).as_str(), ENCODED);
        assert_eq!(canon("/登录/x/../y;a=b"), "/%E7%99%BB%E5%BD%95/y;a=b");
        assert_eq!(matched("/登录;jsessionid=1"), matched(ENCODED));
        // Non-ASCII is never a plain path, and the shortcut leaves it to the general algorithm.
        assert!(!is_plain(RAW));
        // A match path handed raw non-ASCII (not canonical) still meets the encoded one.
        assert_eq!(match_path(RAW, false), match_path(ENCODED, false));
        assert_eq!(match_path(RAW, true), match_path(ENCODED, true));
    }

    #[test]
    fn a_prefix_in_either_spelling_matches_both() {
        for configured in ["/登录", "/%E7%99%BB%E5%BD%95", "/%e7%99%bb%e5%bd%95"] {
            let prefix = crate::PathPrefix::new(configured).unwrap();
            assert_eq!(prefix.normalized(), "/%E7%99%BB%E5%BD%95", "{configured}");
            for request in [
                "/登录",
                "/%E7%99%BB%E5%BD%95",
                "/登录/x",
                "/%E7%99%BB%E5%BD%95/x",
            ] {
                for fold in [false, true] {
                    let path = match_path(&canon(request), fold);
                    assert!(prefix.matches(&path), "{configured} vs {request} ({fold})");
                }
            }
            assert!(!prefix.matches(&match_path(&canon("/登"), true)));
            assert!(!prefix.matches(&match_path(&canon("/登录x"), true)));
        }
        // From the lenient normalization (no ingress stage) too.
        let prefix = crate::PathPrefix::new("/登录").unwrap();
        let lenient = match_path(&canonical_path_lenient("/%E7%99%BB%E5%BD%95\\x"), true);
        assert!(prefix.matches(&lenient));
    }

    #[test]
    fn case_folding_folds_only_ascii() {
        // `É` (C3 89) and `é` (C3 A9) stay different paths; only the hex digits fold.
        assert_ne!(matched("/É"), matched("/é"));
        assert_eq!(matched("/É"), "/%c3%89");
        assert_eq!(matched("/%C3%A9"), matched("/é"));
        assert_eq!(matched("/CAFÉ"), "/caf%c3%89");
        assert_eq!(match_path(&canon("/CAFÉ"), false).as_str(), "/CAF%C3%89");
        let prefix = crate::PathPrefix::new("/É").unwrap();
        assert!(prefix.matches(&match_path(&canon("/%c3%89"), true)));
        assert!(!prefix.matches(&match_path(&canon("/é"), true)));
    }

    #[test]
    fn lenient_escapes_non_ascii_next_to_malformed_escapes() {
        assert_eq!(canonical_path_lenient("/%é"), "/%%C3%A9");
        assert_eq!(canonical_path_lenient("/%Eé"), "/%E%C3%A9");
        assert_eq!(canonical_path_lenient("/%%C3%A9"), "/%%C3%A9");
        assert_eq!(canonical_path_lenient("登录"), "/%E7%99%BB%E5%BD%95");
        assert_eq!(
            canonical_path("/%é"),
            Err(PathError::InvalidEscape { at: 1 })
        );
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        assert_eq!(
            canonical_path("/login%2f"),
            Err(PathError::EncodedSeparator { escape: "%2F" })
        );
        assert_eq!(
            canonical_path("/a%5Cb"),
            Err(PathError::EncodedSeparator { escape: "%5C" })
        );
        assert_eq!(canonical_path("/a\\b"), Err(PathError::Backslash));
        assert_eq!(
            canonical_path("/a%00"),
            Err(PathError::EncodedControl { byte: 0 })
        );
        assert_eq!(
            canonical_path("/a%zz"),
            Err(PathError::InvalidEscape { at: 2 })
        );
        assert_eq!(
            canonical_path("/a%4"),
            Err(PathError::InvalidEscape { at: 2 })
        );
        assert!(matches!(
            canonical_path("/admin/..;/login"),
            Err(PathError::AmbiguousDotSegment { .. })
        ));
        assert_eq!(canonical_path("login"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn lenient_reads_ambiguity_towards_matching() {
        assert_eq!(canonical_path_lenient("/login%2f"), "/login/");
        assert_eq!(canonical_path_lenient("/x%5C..%5Clogin"), "/login");
        assert_eq!(canonical_path_lenient("/admin/..;/login"), "/login");
        assert_eq!(canonical_path_lenient("/a%zz"), "/a%zz");
        assert_eq!(canonical_path_lenient("login"), "/login");
    }

    #[test]
    fn match_path_decodes_reserved_but_not_separators() {
        assert_eq!(matched("/%40admin"), "/@admin");
        assert_eq!(matched("/a%3Bb"), "/a;b");
        assert_eq!(matched("/a%25b"), "/a%25b");
        assert_eq!(match_path("/A", false).as_str(), "/A");
        assert_eq!(matched("/;x/login"), "/login");
    }

    proptest! {
        /// The shortcut for paths already canonical agrees with the general algorithm in both
        /// modes, for path-like and for arbitrary text.
        #[test]
        fn plain_paths_are_their_own_canonical_form(
            raw in prop_oneof![
                "/[a-zA-Z0-9./;%~_!$&'()*+,=:@\\\\éÉß€登录\u{80}\u{7FF}\u{FFFF}\u{10FFFF}-]{0,40}",
                "(/[a-z.éÉ登]{0,3}){0,6}/?",
                "\\PC{0,40}",
            ],
        ) {
            if is_plain(&raw) {
                prop_assert_eq!(canonical_general(&raw, Mode::Strict), Ok(raw.clone()));
                prop_assert_eq!(canonical_general(&raw, Mode::Lenient), Ok(raw.clone()));
            }
            prop_assert_eq!(canonical(&raw, Mode::Strict), canonical_general(&raw, Mode::Strict));
            prop_assert_eq!(canonical(&raw, Mode::Lenient), canonical_general(&raw, Mode::Lenient));
        }

        /// The copied match path is the one built segment by segment.
        #[test]
        fn match_path_shortcut_agrees(
            raw in prop_oneof![
                "/[a-zA-Z0-9./;%~_éÉß€登录\u{80}\u{10FFFF}-]{0,40}",
                "(/[a-zA-Z.;%0-9éÉ登]{0,3}){0,6}/?",
                "\\PC{0,40}",
            ],
            fold in any::<bool>(),
        ) {
            prop_assert_eq!(match_path(&raw, fold), match_path_general(&raw, fold));
        }
    }

    proptest! {
        #[test]
        fn canonical_is_idempotent(
            raw in "/[a-zA-Z0-9./;%~_éÉß€登录\u{80}\u{7FF}\u{FFFF}\u{10FFFF}-]{0,40}",
        ) {
            if let Ok(once) = canonical_path(&raw) {
                prop_assert_eq!(canonical_path(&once), Ok(once.clone()));
                prop_assert!(once.is_ascii());
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"));
                prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
            }
        }

        #[test]
        fn lenient_never_fails_and_agrees_with_strict(raw in "\\PC{0,60}") {
            let lenient = canonical_path_lenient(&raw);
            prop_assert!(lenient.starts_with('/'));
            if let Ok(strict) = canonical_path(&raw) {
                prop_assert_eq!(strict, lenient);
            }
        }

        /// Percent-encoding the bytes outside ASCII (in either hex case) changes neither the
        /// canonical path nor the match path: the raw and the encoded spelling are one path.
        #[test]
        fn raw_and_encoded_non_ascii_agree(
            raw in prop_oneof![
                "/[a-zA-Z0-9./;%~_éÉß€登录\u{80}\u{10FFFF}-]{0,40}",
                "\\PC{0,40}",
            ],
            lower in any::<bool>(),
            fold in any::<bool>(),
        ) {
            let mut encoded = String::with_capacity(raw.len() * 3);
            for b in raw.bytes() {
                match (b.is_ascii(), lower) {
                    (true, _) => encoded.push(char::from(b)),
                    (false, false) => encoded.push_str(&format!("%{b:02X}")),
                    (false, true) => encoded.push_str(&format!("%{b:02x}")),
                }
            }
            let lenient = canonical_path_lenient(&raw);
            prop_assert!(lenient.is_ascii());
            prop_assert_eq!(&lenient, &canonical_path_lenient(&encoded));
            prop_assert_eq!(canonical_path(&raw).ok(), canonical_path(&encoded).ok());
            prop_assert_eq!(canonical_path(&raw).is_ok(), canonical_path(&encoded).is_ok());
            prop_assert_eq!(
                match_path(&lenient, fold),
                match_path(&canonical_path_lenient(&encoded), fold)
            );
        }

        #[test]
        fn match_path_is_well_formed(raw in "\\PC{0,60}") {
            let path = match_path(&canonical_path_lenient(&raw), true);
            prop_assert!(path.as_str().starts_with('/'));
            prop_assert!(!path.as_str().contains("//"));
            prop_assert!(!path.as_str().bytes().any(|b| b.is_ascii_uppercase()));
        }

        #[test]
        fn escaping_an_unreserved_char_never_changes_the_match(
            path in "/[a-z]{1,8}(/[a-z]{1,8}){0,3}",
            index in 0usize..40,
        ) {
            let bytes = path.as_bytes();
            let i = index % bytes.len();
            let b = bytes[i];
            prop_assume!(b != b'/');
            let escaped = format!("{}%{:02X}{}", &path[..i], b, &path[i + 1..]);
            prop_assert_eq!(matched(&escaped), matched(&path));
        }
    }
}
