//! Feature kinds: what each kind of feature-file row measures, how its parameters are checked, and
//! how it is evaluated against a request.
//!
//! Every feature is an indicator: it fires (value 1) or not (value 0), so a contribution is simply
//! the row's weight and an explanation reads "this fired, and it moved the score by this much".

use std::fmt;

use http::Version;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use ravelin_config::Violations;
use serde_json::{Map, Value};

use crate::request::RequestView;
use crate::ua::{BrowserFamily, MAX_UA_BYTES, UaInfo, contains_ci, find};

/// Longest string parameter (a token, a header value, a fingerprint prefix).
pub const MAX_PARAM_LEN: usize = 128;

/// The kinds of feature a feature file may use. A row with any other `kind` is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FeatureKind {
    /// No User-Agent header, or an empty one.
    UaMissing,
    /// The User-Agent has control characters, non-ASCII bytes, unbalanced parentheses, surrounding
    /// whitespace, or is longer than 1024 bytes.
    UaMalformed,
    /// The User-Agent's length in bytes is in `[min, max)`. Params: `min`, `max` (either may be
    /// omitted).
    UaLength,
    /// The User-Agent contains a URL (`http://`, `https://` or `www.`), as crawlers' contact
    /// links do.
    UaUrl,
    /// No product in the User-Agent carries a version (no `/` at all).
    UaNoVersion,
    /// The User-Agent contains `token`, ASCII case-insensitively. Params: `token`.
    UaToken,
    /// The User-Agent starts with `Mozilla/`.
    UaMozilla,
    /// The number of `product/version` tokens outside comments is in `[min, max)`. Params: `min`,
    /// `max`.
    UaProducts,
    /// The User-Agent has a parenthesised comment.
    UaComment,
    /// The User-Agent claims browser `family` (`chrome`, `edge`, `opera`, `samsung`, `firefox`,
    /// `safari`). Params: `family`.
    UaBrowser,
    /// The User-Agent claims browser `family` with a major version below `major`. Params:
    /// `family`, `major`.
    UaBrowserVersionBelow,
    /// The User-Agent's Chrome version is one Chrome never shipped (non-zero minor, a four-digit
    /// patch, a build number far from the major's).
    UaVersionImplausible,
    /// The User-Agent pairs an engine with an OS it cannot run on (Blink on iOS, `CriOS` off iOS).
    UaOsEngineMismatch,
    /// Only the User-Agent of this record is known (a UA-only record); acts as that mode's bias.
    HeadersUnknown,
    /// Header `header` is present. Params: `header`.
    HeaderPresent,
    /// The first value of `header` contains `value`, ASCII case-insensitively. Params: `header`,
    /// `value`.
    HeaderContains,
    /// The first value of `header` equals `value`, ASCII case-insensitively. Params: `header`,
    /// `value`.
    HeaderEquals,
    /// Headers `first` and `second` are both present and `first` arrived before `second`.
    /// Params: `first`, `second`.
    HeaderBefore,
    /// The number of distinct header names is in `[min, max)`. Params: `min`, `max`.
    HeaderCount,
    /// The User-Agent claims a Chromium browser that sends client hints (version 89 or later, not
    /// on iOS) but `sec-ch-ua` is absent.
    ChromiumWithoutClientHints,
    /// The User-Agent claims a browser that sends fetch metadata (Chromium 80+, Firefox 90+,
    /// Safari 17+, iOS 17+) but `sec-fetch-mode` is absent.
    BrowserWithoutFetchMetadata,
    /// Client hints contradict the User-Agent: `sec-ch-ua` from a non-Chromium UA, a Chromium brand
    /// version other than the UA's, or `sec-ch-ua-mobile` / `sec-ch-ua-platform` that disagree
    /// with it.
    ClientHintsMismatch,
    /// The request used HTTP version `version` (`HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`).
    /// Params: `version`.
    HttpVersion,
    /// A JA4 TLS fingerprint was supplied by the TLS terminator.
    Ja4Present,
    /// The JA4 fingerprint starts with `prefix` (e.g. `t13d`). Params: `prefix`.
    Ja4Prefix,
    /// The JA4 fingerprint's ALPN part (characters 9–10, e.g. `h2`, `h1`, `00`) equals `alpn`.
    /// Params: `alpn`.
    Ja4Alpn,
    /// The User-Agent claims browser `family`, the request carries a JA4 fingerprint, and that
    /// fingerprint's TLS *stack* is not the stack of any of the `ja4` fingerprints captured from
    /// that browser: a client that copies a browser's User-Agent and headers but not its TLS
    /// library. Params: `family`, `ja4` (an array of 1 to [`MAX_JA4_PER_ROW`] JA4 strings as the
    /// terminator computes them, e.g. `t13d1516h2_8daaf6152771_02713d6af862`).
    ///
    /// Two fingerprints have the same stack when JA4_a's TLS version (characters 2–3) and cipher
    /// count (5–6) and JA4_b, the hash of the sorted cipher suites, are equal. The rest varies
    /// for one browser and so is ignored: the protocol letter and ALPN (the transport and what
    /// the page asked for), the SNI letter and extension count (a URL with an IP address sends
    /// no SNI extension; browsers add extensions across versions) and JA4_c (it hashes the
    /// extensions: Chrome adds some in new versions; its random extension order is already
    /// sorted away by JA4). The cipher list is what a TLS library fixes and an HTTP client built
    /// on another library cannot change without replacing it.
    ///
    /// Never fires without a JA4 (plaintext, or a hello that could not be read), on a malformed
    /// one, for a family no row names (no evidence), or on iOS for a family other than Safari
    /// (every iOS browser uses Apple's TLS stack, so a `CriOS` client is not Chrome's stack).
    Ja4StackMismatch,
}

/// Most fingerprints one `ja4_stack_mismatch` row lists.
pub const MAX_JA4_PER_ROW: usize = 32;

impl FeatureKind {
    /// Every kind, in documentation order.
    pub const ALL: [FeatureKind; 27] = [
        FeatureKind::UaMissing,
        FeatureKind::UaMalformed,
        FeatureKind::UaLength,
        FeatureKind::UaUrl,
        FeatureKind::UaNoVersion,
        FeatureKind::UaToken,
        FeatureKind::UaMozilla,
        FeatureKind::UaProducts,
        FeatureKind::UaComment,
        FeatureKind::UaBrowser,
        FeatureKind::UaBrowserVersionBelow,
        FeatureKind::UaVersionImplausible,
        FeatureKind::UaOsEngineMismatch,
        FeatureKind::HeadersUnknown,
        FeatureKind::HeaderPresent,
        FeatureKind::HeaderContains,
        FeatureKind::HeaderEquals,
        FeatureKind::HeaderBefore,
        FeatureKind::HeaderCount,
        FeatureKind::ChromiumWithoutClientHints,
        FeatureKind::BrowserWithoutFetchMetadata,
        FeatureKind::ClientHintsMismatch,
        FeatureKind::HttpVersion,
        FeatureKind::Ja4Present,
        FeatureKind::Ja4Prefix,
        FeatureKind::Ja4Alpn,
        FeatureKind::Ja4StackMismatch,
    ];

    /// The name used in feature files.
    pub const fn as_str(self) -> &'static str {
        match self {
            FeatureKind::UaMissing => "ua_missing",
            FeatureKind::UaMalformed => "ua_malformed",
            FeatureKind::UaLength => "ua_length",
            FeatureKind::UaUrl => "ua_url",
            FeatureKind::UaNoVersion => "ua_no_version",
            FeatureKind::UaToken => "ua_token",
            FeatureKind::UaMozilla => "ua_mozilla",
            FeatureKind::UaProducts => "ua_products",
            FeatureKind::UaComment => "ua_comment",
            FeatureKind::UaBrowser => "ua_browser",
            FeatureKind::UaBrowserVersionBelow => "ua_browser_version_below",
            FeatureKind::UaVersionImplausible => "ua_version_implausible",
            FeatureKind::UaOsEngineMismatch => "ua_os_engine_mismatch",
            FeatureKind::HeadersUnknown => "headers_unknown",
            FeatureKind::HeaderPresent => "header_present",
            FeatureKind::HeaderContains => "header_contains",
            FeatureKind::HeaderEquals => "header_equals",
            FeatureKind::HeaderBefore => "header_before",
            FeatureKind::HeaderCount => "header_count",
            FeatureKind::ChromiumWithoutClientHints => "chromium_without_client_hints",
            FeatureKind::BrowserWithoutFetchMetadata => "browser_without_fetch_metadata",
            FeatureKind::ClientHintsMismatch => "client_hints_mismatch",
            FeatureKind::HttpVersion => "http_version",
            FeatureKind::Ja4Present => "ja4_present",
            FeatureKind::Ja4Prefix => "ja4_prefix",
            FeatureKind::Ja4Alpn => "ja4_alpn",
            FeatureKind::Ja4StackMismatch => "ja4_stack_mismatch",
        }
    }

    /// Parses a feature file's `kind`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The parameters this kind accepts (required and optional).
    pub const fn params(self) -> &'static [&'static str] {
        match self {
            FeatureKind::UaLength | FeatureKind::UaProducts | FeatureKind::HeaderCount => {
                &["min", "max"]
            }
            FeatureKind::UaToken => &["token"],
            FeatureKind::UaBrowser => &["family"],
            FeatureKind::UaBrowserVersionBelow => &["family", "major"],
            FeatureKind::HeaderPresent => &["header"],
            FeatureKind::HeaderContains | FeatureKind::HeaderEquals => &["header", "value"],
            FeatureKind::HeaderBefore => &["first", "second"],
            FeatureKind::HttpVersion => &["version"],
            FeatureKind::Ja4Prefix => &["prefix"],
            FeatureKind::Ja4Alpn => &["alpn"],
            FeatureKind::Ja4StackMismatch => &["family", "ja4"],
            _ => &[],
        }
    }

    /// Whether the kind reads only the User-Agent (and so fires in UA-only records).
    pub const fn is_user_agent_kind(self) -> bool {
        matches!(
            self,
            FeatureKind::UaMissing
                | FeatureKind::UaMalformed
                | FeatureKind::UaLength
                | FeatureKind::UaUrl
                | FeatureKind::UaNoVersion
                | FeatureKind::UaToken
                | FeatureKind::UaMozilla
                | FeatureKind::UaProducts
                | FeatureKind::UaComment
                | FeatureKind::UaBrowser
                | FeatureKind::UaBrowserVersionBelow
                | FeatureKind::UaVersionImplausible
                | FeatureKind::UaOsEngineMismatch
                | FeatureKind::HeadersUnknown
        )
    }

    /// `ua_missing, ua_malformed, ...`: for "unknown kind" messages.
    pub(crate) fn known_list() -> String {
        let mut out = String::new();
        for (i, kind) in Self::ALL.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(kind.as_str());
        }
        out
    }
}

impl fmt::Display for FeatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compiled test: parameters parsed, strings lowercased, header names interned.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    UaMissing,
    UaMalformed,
    UaLength {
        min: u64,
        max: u64,
    },
    UaUrl,
    UaNoVersion,
    /// The token, lowercased, and its slot in the model's [`TokenIndex`] (`u16::MAX`: none).
    UaToken(Box<[u8]>, u16),
    UaMozilla,
    UaProducts {
        min: u64,
        max: u64,
    },
    UaComment,
    UaBrowser(BrowserFamily),
    UaBrowserVersionBelow(BrowserFamily, u32),
    UaVersionImplausible,
    UaOsEngineMismatch,
    HeadersUnknown,
    HeaderPresent(HeaderName),
    HeaderContains(HeaderName, Box<[u8]>),
    HeaderEquals(HeaderName, Box<[u8]>),
    HeaderBefore(HeaderName, HeaderName),
    HeaderCount {
        min: u64,
        max: u64,
    },
    ChromiumWithoutClientHints,
    BrowserWithoutFetchMetadata,
    ClientHintsMismatch,
    HttpVersion(Version),
    Ja4Present,
    Ja4Prefix(Box<str>),
    Ja4Alpn(Box<str>),
    /// The family and the stacks captured from it (deduplicated, in file order).
    Ja4StackMismatch(BrowserFamily, Box<[Ja4Stack]>),
}

impl Test {
    /// Parses `params` for `kind`, recording every problem under `path` (`features[3]`).
    pub(crate) fn compile(
        kind: FeatureKind,
        params: &Map<String, Value>,
        path: &str,
        violations: &mut Violations,
    ) -> Option<Test> {
        let before = violations.total();
        for key in params.keys() {
            if !kind.params().contains(&key.as_str()) {
                let accepted = kind.params().join(", ");
                violations.push(
                    format!("{path}.params.{key}"),
                    if accepted.is_empty() {
                        format!("kind {kind} takes no parameters")
                    } else {
                        format!("unknown parameter for kind {kind}; it accepts: {accepted}")
                    },
                );
            }
        }
        let p = Params { params, path, kind };
        let test = match kind {
            FeatureKind::UaMissing => Some(Test::UaMissing),
            FeatureKind::UaMalformed => Some(Test::UaMalformed),
            FeatureKind::UaLength => p
                .range(violations)
                .map(|(min, max)| Test::UaLength { min, max }),
            FeatureKind::UaUrl => Some(Test::UaUrl),
            FeatureKind::UaNoVersion => Some(Test::UaNoVersion),
            FeatureKind::UaToken => p
                .lower_bytes("token", violations)
                .map(|t| Test::UaToken(t, u16::MAX)),
            FeatureKind::UaMozilla => Some(Test::UaMozilla),
            FeatureKind::UaProducts => p
                .range(violations)
                .map(|(min, max)| Test::UaProducts { min, max }),
            FeatureKind::UaComment => Some(Test::UaComment),
            FeatureKind::UaBrowser => p.family(violations).map(Test::UaBrowser),
            FeatureKind::UaBrowserVersionBelow => {
                let family = p.family(violations);
                let major = p.u64("major", violations).and_then(|m| {
                    let major = u32::try_from(m).ok().filter(|m| *m <= 10_000);
                    if major.is_none() {
                        violations.push(
                            format!("{path}.params.major"),
                            format!("{m} is not a browser major version (0..=10000)"),
                        );
                    }
                    major
                });
                family
                    .zip(major)
                    .map(|(f, m)| Test::UaBrowserVersionBelow(f, m))
            }
            FeatureKind::UaVersionImplausible => Some(Test::UaVersionImplausible),
            FeatureKind::UaOsEngineMismatch => Some(Test::UaOsEngineMismatch),
            FeatureKind::HeadersUnknown => Some(Test::HeadersUnknown),
            FeatureKind::HeaderPresent => p.header("header", violations).map(Test::HeaderPresent),
            FeatureKind::HeaderContains => {
                let header = p.header("header", violations);
                let value = p.lower_bytes("value", violations);
                header.zip(value).map(|(h, v)| Test::HeaderContains(h, v))
            }
            FeatureKind::HeaderEquals => {
                let header = p.header("header", violations);
                let value = p.lower_bytes("value", violations);
                header.zip(value).map(|(h, v)| Test::HeaderEquals(h, v))
            }
            FeatureKind::HeaderBefore => {
                let first = p.header("first", violations);
                let second = p.header("second", violations);
                match (first, second) {
                    (Some(a), Some(b)) if a == b => {
                        violations.push(
                            format!("{path}.params"),
                            format!("first and second are the same header {a:?}"),
                        );
                        None
                    }
                    (a, b) => a.zip(b).map(|(a, b)| Test::HeaderBefore(a, b)),
                }
            }
            FeatureKind::HeaderCount => p
                .range(violations)
                .map(|(min, max)| Test::HeaderCount { min, max }),
            FeatureKind::ChromiumWithoutClientHints => Some(Test::ChromiumWithoutClientHints),
            FeatureKind::BrowserWithoutFetchMetadata => Some(Test::BrowserWithoutFetchMetadata),
            FeatureKind::ClientHintsMismatch => Some(Test::ClientHintsMismatch),
            FeatureKind::HttpVersion => {
                let version = p.string("version", violations);
                version.and_then(|v| {
                    let parsed = match v {
                        "HTTP/0.9" => Some(Version::HTTP_09),
                        "HTTP/1.0" => Some(Version::HTTP_10),
                        "HTTP/1.1" => Some(Version::HTTP_11),
                        "HTTP/2" | "HTTP/2.0" => Some(Version::HTTP_2),
                        "HTTP/3" | "HTTP/3.0" => Some(Version::HTTP_3),
                        _ => None,
                    };
                    if parsed.is_none() {
                        violations.push(
                            format!("{path}.params.version"),
                            format!(
                                "{v:?} is not one of HTTP/0.9, HTTP/1.0, HTTP/1.1, HTTP/2, HTTP/3"
                            ),
                        );
                    }
                    parsed.map(Test::HttpVersion)
                })
            }
            FeatureKind::Ja4Present => Some(Test::Ja4Present),
            FeatureKind::Ja4Prefix => p
                .string("prefix", violations)
                .map(|s| Test::Ja4Prefix(s.into())),
            FeatureKind::Ja4Alpn => p.string("alpn", violations).and_then(|s| {
                if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    Some(Test::Ja4Alpn(s.into()))
                } else {
                    violations.push(
                        format!("{path}.params.alpn"),
                        format!("{s:?} is not a two-character JA4 ALPN code such as \"h2\""),
                    );
                    None
                }
            }),
            FeatureKind::Ja4StackMismatch => {
                let family = p.family(violations);
                let stacks = p.ja4_stacks("ja4", violations);
                family
                    .zip(stacks)
                    .map(|(f, s)| Test::Ja4StackMismatch(f, s))
            }
        };
        if violations.total() > before {
            None
        } else {
            test
        }
    }

    /// Whether this test needs the request's headers (and so never fires in UA-only records).
    pub(crate) fn needs_headers(&self) -> bool {
        !matches!(
            self,
            Test::UaMissing
                | Test::UaMalformed
                | Test::UaLength { .. }
                | Test::UaUrl
                | Test::UaNoVersion
                | Test::UaToken(..)
                | Test::UaMozilla
                | Test::UaProducts { .. }
                | Test::UaComment
                | Test::UaBrowser(_)
                | Test::UaBrowserVersionBelow(..)
                | Test::UaVersionImplausible
                | Test::UaOsEngineMismatch
                | Test::HeadersUnknown
        )
    }

    /// Evaluates the test. Never allocates.
    pub(crate) fn fires(&self, cx: &Context<'_>) -> bool {
        let ua = &cx.ua;
        let has_ua = cx.has_ua;
        match self {
            Test::UaMissing => !has_ua,
            Test::UaMalformed => has_ua && (ua.malformed || cx.ua_repeated),
            Test::UaLength { min, max } => has_ua && in_range(ua.len as u64, *min, *max),
            Test::UaUrl => ua.url,
            Test::UaNoVersion => has_ua && ua.no_version,
            Test::UaToken(token, slot) => {
                has_ua
                    && match cx.tokens {
                        Some(bits) if *slot != u16::MAX => bit(&bits, *slot),
                        _ => find(cx.ua_lower(), token).is_some(),
                    }
            }
            Test::UaMozilla => ua.mozilla,
            Test::UaProducts { min, max } => has_ua && in_range(u64::from(ua.products), *min, *max),
            Test::UaComment => ua.comment,
            Test::UaBrowser(family) => ua.family == Some(*family),
            Test::UaBrowserVersionBelow(family, major) => {
                ua.family == Some(*family) && ua.major.is_some_and(|m| m < *major)
            }
            Test::UaVersionImplausible => ua.version_implausible,
            Test::UaOsEngineMismatch => ua.os_engine_mismatch,
            Test::HeadersUnknown => cx.headers.is_none(),
            Test::HeaderPresent(name) => cx.first_value(name).is_some(),
            Test::HeaderContains(name, value) => cx
                .first_value(name)
                .is_some_and(|v| contains_ci(v.as_bytes(), value)),
            Test::HeaderEquals(name, value) => cx
                .first_value(name)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value)),
            Test::HeaderBefore(first, second) => cx.before(first, second),
            Test::HeaderCount { min, max } => cx
                .headers
                .is_some_and(|h| in_range(h.keys_len() as u64, *min, *max)),
            Test::ChromiumWithoutClientHints => {
                cx.headers.is_some()
                    && ua.chromium
                    && ua.chrome_major.is_some_and(|m| m >= 89)
                    && !cx.hints.present
            }
            Test::BrowserWithoutFetchMetadata => {
                cx.headers.is_some()
                    && cx.first_value(&SEC_FETCH_MODE).is_none()
                    && sends_fetch_metadata(ua)
            }
            Test::ClientHintsMismatch => cx.headers.is_some() && cx.hints.contradict(ua),
            Test::HttpVersion(version) => cx.headers.is_some() && cx.version == *version,
            Test::Ja4Present => cx.ja4.is_some(),
            Test::Ja4Prefix(prefix) => cx.ja4.is_some_and(|j| j.starts_with(&**prefix)),
            Test::Ja4Alpn(alpn) => cx
                .ja4
                .and_then(|j| j.get(8..10))
                .is_some_and(|a| a == &**alpn),
            Test::Ja4StackMismatch(family, stacks) => {
                ua.family == Some(*family)
                    && (ua.os != Some(crate::ua::Os::Ios) || *family == BrowserFamily::Safari)
                    && (cx.tls_without_ja4
                        || cx
                            .ja4
                            .and_then(Ja4Stack::of)
                            .is_some_and(|seen| !stacks.contains(&seen)))
            }
        }
    }
}

/// The parts of a JA4 fingerprint that identify the client's TLS stack (see
/// [`FeatureKind::Ja4StackMismatch`]): JA4_a's TLS version and cipher count, and JA4_b.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ja4Stack {
    version: [u8; 2],
    ciphers: [u8; 2],
    cipher_hash: [u8; 12],
}

impl Ja4Stack {
    /// The stack of a well-formed JA4 (`t13d1516h2_8daaf6152771_02713d6af862`: 10 characters of
    /// JA4_a, then two 12-hex-digit hashes); `None` for anything else.
    pub(crate) fn of(ja4: &str) -> Option<Self> {
        let b = ja4.as_bytes();
        let hex = |part: &[u8]| part.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let (a, rest) = (b.get(..10)?, b.get(10..)?);
        if rest.len() != 26 || rest.first() != Some(&b'_') || rest.get(13) != Some(&b'_') {
            return None;
        }
        let (cipher_hash, extension_hash) = (rest.get(1..13)?, rest.get(14..)?);
        let (version, ciphers) = (a.get(1..3)?, a.get(4..6)?);
        if !a.iter().all(u8::is_ascii_alphanumeric)
            || !ciphers.iter().all(u8::is_ascii_digit)
            || !hex(cipher_hash)
            || !hex(extension_hash)
        {
            return None;
        }
        Some(Self {
            version: version.try_into().ok()?,
            ciphers: ciphers.try_into().ok()?,
            cipher_hash: cipher_hash.try_into().ok()?,
        })
    }
}

// Interned once: looking a `&str` up in a `HeaderMap` parses and hashes it on every call.
const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
const SEC_CH_UA: HeaderName = HeaderName::from_static("sec-ch-ua");
const SEC_CH_UA_MOBILE: HeaderName = HeaderName::from_static("sec-ch-ua-mobile");
const SEC_CH_UA_PLATFORM: HeaderName = HeaderName::from_static("sec-ch-ua-platform");

/// Everything the tests read, computed once per request (on the stack: no allocation).
#[derive(Debug, Clone)]
pub(crate) struct Context<'a> {
    pub(crate) ua: UaInfo<'a>,
    /// The inspected User-Agent bytes, ASCII-lowercased once so token tests are plain searches.
    ua_lower: [u8; MAX_UA_BYTES],
    ua_lower_len: usize,
    /// Which of the model's `ua_token` tokens occur, from one [`TokenIndex::scan`].
    pub(crate) tokens: Option<TokenBits>,
    pub(crate) has_ua: bool,
    /// More than one User-Agent field: no browser sends that.
    pub(crate) ua_repeated: bool,
    pub(crate) headers: Option<&'a HeaderMap>,
    /// The request's fields in order, when it has few enough to list (see [`FieldList`]).
    fields: Option<FieldList<'a>>,
    pub(crate) version: Version,
    pub(crate) ja4: Option<&'a str>,
    pub(crate) tls_without_ja4: bool,
    pub(crate) hints: ClientHints<'a>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(view: &RequestView<'a>) -> Self {
        let raw = view.user_agent.unwrap_or_default();
        let ua = UaInfo::parse(raw);
        let mut ua_lower = [0u8; MAX_UA_BYTES];
        let ua_lower_len = ua.bytes.len().min(MAX_UA_BYTES);
        for (dst, src) in ua_lower.iter_mut().zip(ua.bytes) {
            *dst = src.to_ascii_lowercase();
        }
        Context {
            ua,
            ua_lower,
            ua_lower_len,
            tokens: None,
            has_ua: !raw.is_empty(),
            ua_repeated: view.user_agent_count > 1,
            headers: view.headers,
            fields: view.headers.and_then(FieldList::of),
            version: view.version,
            ja4: view.ja4,
            tls_without_ja4: view.tls_without_ja4,
            hints: view.headers.map(ClientHints::read).unwrap_or_default(),
        }
    }
}

/// One bit per token slot.
pub(crate) type TokenBits = [u64; 4];

/// Most `ua_token` rows a model can hold (one bit each in [`TokenBits`]).
pub(crate) const MAX_TOKENS: usize = 256;

fn bit(bits: &TokenBits, slot: u16) -> bool {
    bits.get(usize::from(slot / 64))
        .is_some_and(|word| word & (1u64 << (slot % 64)) != 0)
}

/// All `ua_token` tokens of a model, indexed by first byte, so one pass over the User-Agent finds
/// every token instead of one pass per token.
#[derive(Debug, Default)]
pub(crate) struct TokenIndex {
    /// For each first byte: `(slot, rest of the token)`.
    by_first: Vec<Vec<(u16, Box<[u8]>)>>,
    len: usize,
}

impl TokenIndex {
    /// Assigns slots to the model's token tests (in row order) and indexes them.
    pub(crate) fn build<'t>(tests: impl Iterator<Item = &'t mut Test>) -> TokenIndex {
        let mut by_first: Vec<Vec<(u16, Box<[u8]>)>> = vec![Vec::new(); 256];
        let mut len = 0usize;
        for test in tests {
            if let Test::UaToken(token, slot) = test {
                let (Some((&first, rest)), Ok(next)) = (token.split_first(), u16::try_from(len))
                else {
                    continue;
                };
                if len >= MAX_TOKENS {
                    continue;
                }
                *slot = next;
                if let Some(list) = by_first.get_mut(usize::from(first)) {
                    list.push((next, rest.into()));
                }
                len = len.saturating_add(1);
            }
        }
        TokenIndex { by_first, len }
    }

    /// Whether no token is indexed.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tokens occurring in `lower` (already lowercased).
    pub(crate) fn scan(&self, lower: &[u8]) -> TokenBits {
        let mut bits = [0u64; 4];
        for (i, &b) in lower.iter().enumerate() {
            let Some(candidates) = self.by_first.get(usize::from(b)) else {
                continue;
            };
            for (slot, rest) in candidates {
                let from = i.saturating_add(1);
                if lower.get(from..from.saturating_add(rest.len())) == Some(&**rest)
                    && let Some(word) = bits.get_mut(usize::from(slot / 64))
                {
                    *word |= 1u64 << (slot % 64);
                }
            }
        }
        bits
    }
}

impl Context<'_> {
    pub(crate) fn ua_lower(&self) -> &[u8] {
        self.ua_lower.get(..self.ua_lower_len).unwrap_or_default()
    }
}

/// The low-entropy client hints Chromium sends on every secure request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientHints<'a> {
    pub(crate) present: bool,
    /// The version of the `"Chromium"` brand in `sec-ch-ua`, if listed.
    pub(crate) chromium_major: Option<u32>,
    pub(crate) mobile: Option<bool>,
    /// `sec-ch-ua-platform` without its quotes.
    pub(crate) platform: Option<&'a [u8]>,
}

impl<'a> ClientHints<'a> {
    fn read(headers: &'a HeaderMap) -> Self {
        let Some(ua) = headers.get(&SEC_CH_UA) else {
            return ClientHints::default();
        };
        let bytes = ua.as_bytes();
        let chromium_major = find(bytes, b"\"Chromium\";v=\"").and_then(|at| {
            let rest = bytes.get(at.saturating_add(14)..)?;
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(rest.get(..digits)?).ok()?.parse().ok()
        });
        let mobile = headers
            .get(&SEC_CH_UA_MOBILE)
            .and_then(|v| match v.as_bytes() {
                b"?1" => Some(true),
                b"?0" => Some(false),
                _ => None,
            });
        let platform = headers.get(&SEC_CH_UA_PLATFORM).map(|v| {
            let b = v.as_bytes();
            b.strip_prefix(b"\"")
                .and_then(|b| b.strip_suffix(b"\""))
                .unwrap_or(b)
        });
        ClientHints {
            present: true,
            chromium_major,
            mobile,
            platform,
        }
    }

    fn contradict(&self, ua: &UaInfo<'_>) -> bool {
        if !self.present {
            return false;
        }
        if !ua.chromium {
            return true;
        }
        if self.chromium_major != ua.chrome_major {
            return true;
        }
        if let (Some(mobile), Some(os)) = (self.mobile, ua.os) {
            // Chromium reports ?1 for phones; Android tablets (no "Mobile" token) report ?0.
            let expected = ua.mobile && matches!(os, crate::ua::Os::Android);
            if mobile != expected {
                return true;
            }
        }
        if let (Some(platform), Some(os)) = (self.platform, ua.os)
            && platform != os.client_hint_platform().as_bytes()
        {
            return true;
        }
        false
    }
}

fn sends_fetch_metadata(ua: &UaInfo<'_>) -> bool {
    if let Some(ios) = ua.ios_major {
        return ua.family.is_some() && ios >= 17;
    }
    match ua.family {
        Some(
            BrowserFamily::Chrome
            | BrowserFamily::Edge
            | BrowserFamily::Opera
            | BrowserFamily::Samsung,
        ) => ua.chromium && ua.chrome_major.is_some_and(|m| m >= 80),
        Some(BrowserFamily::Firefox) => ua.major.is_some_and(|m| m >= 90),
        Some(BrowserFamily::Safari) => ua.major.is_some_and(|m| m >= 17),
        None => false,
    }
}

fn in_range(value: u64, min: u64, max: u64) -> bool {
    value >= min && value < max
}

impl<'a> Context<'a> {
    /// The first value of field `name`; `None` when absent or when the headers are unknown.
    fn first_value(&self, name: &HeaderName) -> Option<&'a HeaderValue> {
        match &self.fields {
            Some(fields) => fields.first_value(name),
            None => self.headers?.get(name),
        }
    }

    /// Whether field `first` comes before field `second`, both present.
    fn before(&self, first: &HeaderName, second: &HeaderName) -> bool {
        match (&self.fields, self.headers) {
            (Some(fields), _) => fields.before(first, second),
            (None, Some(headers)) => before(headers, first, second),
            (None, None) => false,
        }
    }
}

/// The most field names a [`FieldList`] holds; a request with more is read from its map.
const FIELD_LIST_CAP: usize = 32;

/// A request's field names with their first values, in order, listed once per request: a model
/// asks twenty-odd header questions of each request (presence, value, order), and comparing
/// names against a list of the ten or so a request carries costs a fraction of hashing each
/// name into the map (issue 13). Names compare by their standard-header tag or by bytes.
#[derive(Debug, Clone, Copy)]
struct FieldList<'a> {
    fields: [Option<(&'a HeaderName, &'a HeaderValue)>; FIELD_LIST_CAP],
    len: usize,
}

impl<'a> FieldList<'a> {
    /// The list of `headers`, or `None` when it has more than [`FIELD_LIST_CAP`] names.
    fn of(headers: &'a HeaderMap) -> Option<Self> {
        if headers.keys_len() > FIELD_LIST_CAP {
            return None;
        }
        let mut list = FieldList {
            fields: [None; FIELD_LIST_CAP],
            len: 0,
        };
        let mut last: Option<&HeaderName> = None;
        // A name's values come one after another, its first value first.
        for (name, value) in headers {
            if last.is_some_and(|last| std::ptr::eq(last, name)) {
                continue;
            }
            last = Some(name);
            let slot = list.fields.get_mut(list.len)?;
            *slot = Some((name, value));
            list.len += 1;
        }
        Some(list)
    }

    fn iter(&self) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + '_ {
        self.fields.iter().take(self.len).flatten().copied()
    }

    fn first_value(&self, name: &HeaderName) -> Option<&'a HeaderValue> {
        self.iter()
            .find(|(present, _)| *present == name)
            .map(|(_, value)| value)
    }

    fn before(&self, first: &HeaderName, second: &HeaderName) -> bool {
        for (name, _) in self.iter() {
            if name == first {
                return self.first_value(second).is_some();
            }
            if name == second {
                return false;
            }
        }
        false
    }
}

/// How far into the header list order features look: a request with hundreds of fields costs no
/// more than one with this many.
const ORDER_SCAN_LIMIT: usize = 128;

fn before(headers: &HeaderMap, first: &HeaderName, second: &HeaderName) -> bool {
    for key in headers.keys().take(ORDER_SCAN_LIMIT) {
        if key == first {
            return headers.contains_key(second);
        }
        if key == second {
            return false;
        }
    }
    false
}

struct Params<'p> {
    params: &'p Map<String, Value>,
    path: &'p str,
    kind: FeatureKind,
}

impl<'p> Params<'p> {
    fn string(&self, key: &str, violations: &mut Violations) -> Option<&'p str> {
        let field = format!("{}.params.{key}", self.path);
        match self.params.get(key) {
            None => {
                violations.push(
                    field,
                    format!("kind {} requires parameter {key:?}", self.kind),
                );
                None
            }
            Some(Value::String(s)) => {
                if s.is_empty()
                    || s.len() > MAX_PARAM_LEN
                    || !s.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
                {
                    violations.push(
                        field,
                        format!(
                            "must be 1..={MAX_PARAM_LEN} bytes of printable ASCII, got {} bytes",
                            s.len()
                        ),
                    );
                    None
                } else {
                    Some(s)
                }
            }
            Some(other) => {
                violations.push(field, format!("must be a string, got {}", type_name(other)));
                None
            }
        }
    }

    fn lower_bytes(&self, key: &str, violations: &mut Violations) -> Option<Box<[u8]>> {
        self.string(key, violations)
            .map(|s| s.to_ascii_lowercase().into_bytes().into_boxed_slice())
    }

    fn header(&self, key: &str, violations: &mut Violations) -> Option<HeaderName> {
        let s = self.string(key, violations)?;
        match HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                violations.push(
                    format!("{}.params.{key}", self.path),
                    format!("{s:?} is not a valid header name"),
                );
                None
            }
        }
    }

    fn family(&self, violations: &mut Violations) -> Option<BrowserFamily> {
        let s = self.string("family", violations)?;
        let family = BrowserFamily::from_name(s);
        if family.is_none() {
            let known: Vec<&str> = BrowserFamily::ALL.iter().map(|f| f.as_str()).collect();
            violations.push(
                format!("{}.params.family", self.path),
                format!("unknown browser family {s:?}; known: {}", known.join(", ")),
            );
        }
        family
    }

    /// A non-empty array of at most [`MAX_JA4_PER_ROW`] well-formed JA4 strings, as their stacks
    /// (duplicates dropped).
    fn ja4_stacks(&self, key: &str, violations: &mut Violations) -> Option<Box<[Ja4Stack]>> {
        let field = format!("{}.params.{key}", self.path);
        let items = match self.params.get(key) {
            None => {
                violations.push(
                    field,
                    format!("kind {} requires parameter {key:?}", self.kind),
                );
                return None;
            }
            Some(Value::Array(items)) if (1..=MAX_JA4_PER_ROW).contains(&items.len()) => items,
            Some(Value::Array(items)) => {
                violations.push(
                    field,
                    format!(
                        "must list 1..={MAX_JA4_PER_ROW} fingerprints, got {}",
                        items.len()
                    ),
                );
                return None;
            }
            Some(other) => {
                violations.push(
                    field,
                    format!("must be an array of JA4 strings, got {}", type_name(other)),
                );
                return None;
            }
        };
        let mut stacks: Vec<Ja4Stack> = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item.as_str().and_then(Ja4Stack::of) {
                Some(stack) => {
                    if !stacks.contains(&stack) {
                        stacks.push(stack);
                    }
                }
                None => {
                    ok = false;
                    let shown = match item.as_str() {
                        Some(s) if s.len() <= 64 => format!("{s:?}"),
                        Some(s) => format!("a string of {} bytes", s.len()),
                        None => type_name(item).to_owned(),
                    };
                    violations.push(
                        format!("{field}[{i}]"),
                        format!(
                            "{shown} is not a JA4 fingerprint such as \"t13d1516h2_8daaf6152771_02713d6af862\""
                        ),
                    );
                }
            }
        }
        ok.then(|| stacks.into_boxed_slice())
    }

    fn u64(&self, key: &str, violations: &mut Violations) -> Option<u64> {
        let field = format!("{}.params.{key}", self.path);
        match self.params.get(key) {
            None => {
                violations.push(
                    field,
                    format!("kind {} requires parameter {key:?}", self.kind),
                );
                None
            }
            Some(v) => {
                let n = v.as_u64();
                if n.is_none() {
                    violations.push(field, format!("must be a non-negative integer, got {v}"));
                }
                n
            }
        }
    }

    fn optional_u64(&self, key: &str, violations: &mut Violations) -> Option<Option<u64>> {
        if self.params.contains_key(key) {
            self.u64(key, violations).map(Some)
        } else {
            Some(None)
        }
    }

    /// `min` (default 0) and `max` (default unbounded), at least one given, `min < max`.
    fn range(&self, violations: &mut Violations) -> Option<(u64, u64)> {
        let min = self.optional_u64("min", violations)?;
        let max = self.optional_u64("max", violations)?;
        let field = format!("{}.params", self.path);
        match (min, max) {
            (None, None) => {
                violations.push(
                    field,
                    format!("kind {} requires \"min\", \"max\" or both", self.kind),
                );
                None
            }
            (min, max) => {
                let (min, max) = (min.unwrap_or(0), max.unwrap_or(u64::MAX));
                if min >= max {
                    violations.push(field, format!("min {min} must be less than max {max}"));
                    None
                } else {
                    Some((min, max))
                }
            }
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FeatureRow, Model, Thresholds};
    use proptest::prelude::*;

    fn compile(kind: FeatureKind, params: serde_json::Value) -> Test {
        let mut v = Violations::new();
        let map = params.as_object().cloned().unwrap_or_default();
        let test = Test::compile(kind, &map, "features[0]", &mut v);
        assert!(v.is_empty(), "{v}");
        test.unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn fires(test: &Test, version: Version, pairs: &[(&str, &str)]) -> bool {
        let map = headers(pairs);
        test.fires(&Context::new(&RequestView::new(version, &map)))
    }

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";

    /// Names for the field-list property: standard and custom, as the default model asks.
    const FIELD_NAMES: [&str; 8] = [
        "accept",
        "accept-encoding",
        "sec-ch-ua",
        "sec-fetch-mode",
        "cookie",
        "x-custom",
        "user-agent",
        "priority",
    ];

    proptest! {
        /// The header tests answer the same from the field list as from the map, duplicates,
        /// order and a request past the list's capacity included.
        #[test]
        fn field_list_answers_as_the_map(
            fields in proptest::collection::vec((0..FIELD_NAMES.len(), "[a-c]{0,2}"), 0..12),
            padding in 0usize..40,
            first in 0..FIELD_NAMES.len(),
            second in 0..FIELD_NAMES.len() - 1,
            value in "[a-c]{1,2}",
        ) {
            let mut map = HeaderMap::new();
            for (name, v) in &fields {
                map.append(
                    HeaderName::from_static(FIELD_NAMES[*name]),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            for i in 0..padding {
                map.append(
                    HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
            let view = RequestView::new(Version::HTTP_11, &map);
            let listed = Context::new(&view);
            prop_assert_eq!(listed.fields.is_some(), map.keys_len() <= FIELD_LIST_CAP);
            let mut from_map = Context::new(&view);
            from_map.fields = None;
            let (a, b) = (FIELD_NAMES[first], FIELD_NAMES[(first + 1 + second) % FIELD_NAMES.len()]);
            let tests = [
                compile(FeatureKind::HeaderPresent, serde_json::json!({"header": a})),
                compile(FeatureKind::HeaderContains, serde_json::json!({"header": a, "value": value.clone()})),
                compile(FeatureKind::HeaderEquals, serde_json::json!({"header": a, "value": value.clone()})),
                compile(FeatureKind::HeaderBefore, serde_json::json!({"first": a, "second": b})),
                Test::BrowserWithoutFetchMetadata,
            ];
            for test in &tests {
                prop_assert_eq!(test.fires(&listed), test.fires(&from_map), "{:?}", test);
            }
        }
    }

    #[test]
    fn every_kind_name_round_trips() {
        for kind in FeatureKind::ALL {
            assert_eq!(FeatureKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(FeatureKind::from_name("nope"), None);
    }

    #[test]
    fn header_kinds() {
        let present = compile(
            FeatureKind::HeaderPresent,
            serde_json::json!({"header": "Accept"}),
        );
        assert!(fires(&present, Version::HTTP_11, &[("accept", "*/*")]));
        assert!(!fires(&present, Version::HTTP_11, &[]));
        let equals = compile(
            FeatureKind::HeaderEquals,
            serde_json::json!({"header": "accept", "value": "*/*"}),
        );
        assert!(fires(&equals, Version::HTTP_11, &[("accept", "*/*")]));
        assert!(!fires(
            &equals,
            Version::HTTP_11,
            &[("accept", "text/html, */*")]
        ));
        let contains = compile(
            FeatureKind::HeaderContains,
            serde_json::json!({"header": "accept-encoding", "value": "BR"}),
        );
        assert!(fires(
            &contains,
            Version::HTTP_2,
            &[("accept-encoding", "gzip, br")]
        ));
        let before = compile(
            FeatureKind::HeaderBefore,
            serde_json::json!({"first": "user-agent", "second": "accept"}),
        );
        assert!(fires(
            &before,
            Version::HTTP_11,
            &[("user-agent", "x"), ("accept", "*/*")]
        ));
        assert!(!fires(
            &before,
            Version::HTTP_11,
            &[("accept", "*/*"), ("user-agent", "x")]
        ));
        assert!(!fires(&before, Version::HTTP_11, &[("user-agent", "x")]));
        let count = compile(FeatureKind::HeaderCount, serde_json::json!({"max": 2}));
        assert!(
            fires(&count, Version::HTTP_11, &[("a", "1"), ("a", "2")]),
            "counts names, not fields"
        );
        let version = compile(
            FeatureKind::HttpVersion,
            serde_json::json!({"version": "HTTP/2"}),
        );
        assert!(fires(&version, Version::HTTP_2, &[]));
        assert!(!fires(&version, Version::HTTP_11, &[]));
    }

    #[test]
    fn consistency_kinds() {
        let no_hints = Test::ChromiumWithoutClientHints;
        assert!(fires(&no_hints, Version::HTTP_2, &[("user-agent", CHROME)]));
        let hinted = [
            (
                "sec-ch-ua",
                "\"Chromium\";v=\"130\", \"Google Chrome\";v=\"130\", \"Not?A_Brand\";v=\"99\"",
            ),
            ("sec-ch-ua-mobile", "?0"),
            ("sec-ch-ua-platform", "\"Windows\""),
            ("user-agent", CHROME),
            ("sec-fetch-mode", "navigate"),
        ];
        assert!(!fires(&no_hints, Version::HTTP_2, &hinted));
        assert!(!fires(&Test::ClientHintsMismatch, Version::HTTP_2, &hinted));
        assert!(!fires(
            &Test::BrowserWithoutFetchMetadata,
            Version::HTTP_2,
            &hinted
        ));

        let mut wrong_platform = hinted;
        wrong_platform[2] = ("sec-ch-ua-platform", "\"Linux\"");
        assert!(fires(
            &Test::ClientHintsMismatch,
            Version::HTTP_2,
            &wrong_platform
        ));
        let mut wrong_version = hinted;
        wrong_version[0] = (
            "sec-ch-ua",
            "\"Chromium\";v=\"120\", \"HeadlessChrome\";v=\"120\"",
        );
        assert!(fires(
            &Test::ClientHintsMismatch,
            Version::HTTP_2,
            &wrong_version
        ));
        let mut mobile = hinted;
        mobile[1] = ("sec-ch-ua-mobile", "?1");
        assert!(fires(&Test::ClientHintsMismatch, Version::HTTP_2, &mobile));
        let firefox_with_hints = [
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
            ("sec-ch-ua", "\"Chromium\";v=\"128\""),
        ];
        assert!(fires(
            &Test::ClientHintsMismatch,
            Version::HTTP_2,
            &firefox_with_hints
        ));
        assert!(fires(
            &Test::BrowserWithoutFetchMetadata,
            Version::HTTP_2,
            &[("user-agent", CHROME)]
        ));
        // Old iOS Safari has no fetch metadata: not a mismatch.
        let old_ios = "Mozilla/5.0 (iPhone; CPU iPhone OS 15_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.0 Mobile/15E148 Safari/604.1";
        assert!(!fires(
            &Test::BrowserWithoutFetchMetadata,
            Version::HTTP_2,
            &[("user-agent", old_ios)]
        ));
    }

    #[test]
    fn ua_only_records_skip_header_kinds_and_fire_headers_unknown() {
        let model = Model::new(
            1,
            0.0,
            Thresholds::default(),
            vec![
                FeatureRow::new("unknown", FeatureKind::HeadersUnknown).weight(1.0),
                FeatureRow::new("no_accept", FeatureKind::HeaderCount)
                    .param("max", 1)
                    .weight(-5.0),
                FeatureRow::new("no_hints", FeatureKind::ChromiumWithoutClientHints).weight(-5.0),
            ],
        )
        .prepared()
        .unwrap();
        let s = model
            .score(&RequestView::user_agent_only(Some(CHROME)))
            .unwrap();
        assert_eq!(
            s.reasons().iter().map(|r| r.feature()).collect::<Vec<_>>(),
            vec!["unknown"]
        );
        let empty = HeaderMap::new();
        let s = model
            .score(&RequestView::new(Version::HTTP_11, &empty))
            .unwrap();
        assert_eq!(s.reasons().len(), 1, "no UA: only the count fires");
    }

    #[test]
    fn ja4_kinds() {
        let mut ext = http::Extensions::new();
        ext.insert(crate::TlsFingerprint::ja4(
            "t13d1516h2_8daaf6152771_02713d6af862",
        ));
        let map = HeaderMap::new();
        let method = http::Method::GET;
        let uri = http::Uri::from_static("/");
        let head = ravelin_failsafe::RequestHead {
            method: &method,
            uri: &uri,
            version: Version::HTTP_2,
            headers: &map,
            extensions: &ext,
            peer: None,
        };
        let cx = Context::new(&RequestView::from_head(&head, None));
        assert!(Test::Ja4Present.fires(&cx));
        assert!(compile(FeatureKind::Ja4Alpn, serde_json::json!({"alpn": "h2"})).fires(&cx));
        assert!(
            compile(
                FeatureKind::Ja4Prefix,
                serde_json::json!({"prefix": "t13d"})
            )
            .fires(&cx)
        );
        assert!(!compile(FeatureKind::Ja4Alpn, serde_json::json!({"alpn": "h1"})).fires(&cx));
    }

    // Fingerprints captured on this machine (data/ja4-clients.json): Chromium 156 with and
    // without SNI, curl 7.88.1 and Python 3 (both OpenSSL 3.0), Node 20.
    const CHROMIUM_SNI: &str = "t13d1517h2_8daaf6152771_cb7bf5808d99";
    const CHROMIUM_IP: &str = "t13i1516h2_8daaf6152771_cb7bf5808d99";
    const CURL: &str = "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6";
    const PYTHON: &str = "t13i181000_85036bcba153_d41ae481755e";

    fn stack_test() -> Test {
        compile(
            FeatureKind::Ja4StackMismatch,
            serde_json::json!({"family": "chrome", "ja4": [CHROMIUM_SNI]}),
        )
    }

    fn mismatch(test: &Test, ua: &str, ja4: Option<&str>) -> bool {
        let map = headers(&[("user-agent", ua)]);
        test.fires(&Context::new(
            &RequestView::new(Version::HTTP_2, &map).with_ja4(ja4),
        ))
    }

    #[test]
    fn ja4_stack_mismatch_fires_for_a_browser_ua_over_another_tls_stack() {
        let test = stack_test();
        let linux_chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        for ua in [CHROME, linux_chrome] {
            assert!(mismatch(&test, ua, Some(CURL)), "curl's stack under {ua}");
            assert!(
                mismatch(&test, ua, Some(PYTHON)),
                "Python's stack under {ua}"
            );
        }
        // Another TLS version or cipher count with Chrome's cipher hash is another stack too.
        assert!(mismatch(
            &test,
            CHROME,
            Some("t12d1516h2_8daaf6152771_cb7bf5808d99")
        ));
        assert!(mismatch(
            &test,
            CHROME,
            Some("t13d1416h2_8daaf6152771_cb7bf5808d99")
        ));
    }

    #[test]
    fn ja4_stack_mismatch_ignores_what_varies_within_one_browser() {
        let test = stack_test();
        // The captured JA4 itself; no SNI (an IP address in the URL: one extension fewer);
        // HTTP/1.1 ALPN; another version's extensions (JA4_c); QUIC's protocol letter.
        for ja4 in [
            CHROMIUM_SNI,
            CHROMIUM_IP,
            "t13d1516h1_8daaf6152771_02713d6af862",
            "q13d1517h3_8daaf6152771_e5627efa2ab1",
        ] {
            assert!(!mismatch(&test, CHROME, Some(ja4)), "{ja4}");
        }
    }

    #[test]
    fn ja4_stack_mismatch_needs_evidence() {
        let test = stack_test();
        // No JA4 (plaintext) or a malformed one: nothing to compare.
        assert!(!mismatch(&test, CHROME, None));
        for bad in [
            "",
            "t13d1516h2",
            "t13d1516h2_8daaf6152771",
            "t13d15x6h2_8daaf6152771_cb7bf5808d99",
            "t13d1516h2_8DAAF6152771_cb7bf5808d99",
            "t13d1516h2_8daaf6152771_cb7bf5808d99x",
        ] {
            assert!(!mismatch(&test, CHROME, Some(bad)), "{bad:?}");
        }
        // A family the row does not cover (Firefox, Safari, Edge), or no browser at all.
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0";
        for ua in [firefox, edge, "curl/7.88.1", "python-requests/2.32.3"] {
            assert!(!mismatch(&test, ua, Some(CURL)), "{ua}");
        }
        // Chrome on iOS is WebKit over Apple's TLS stack, not Chrome's.
        let crios = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/130.0.6723.90 Mobile/15E148 Safari/604.1";
        assert!(!mismatch(&test, crios, Some(CURL)));
        // Headless Chromium is read as Chrome (its `HeadlessChrome/` token is scored on its own):
        // its real stack does not fire, the same UA over curl's does.
        let headless = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";
        assert!(!mismatch(&test, headless, Some(CHROMIUM_IP)));
        assert!(mismatch(&test, headless, Some(CURL)));
    }

    #[test]
    fn ja4_stack_mismatch_fires_when_the_edge_could_not_read_a_browsers_hello() {
        // TLS terminated by the edge, but no JA4: a hello the parser refused (oversized or
        // malformed, which a browser never sends) is not the claimed browser's stack — a client
        // cannot switch the signal off by padding its hello.
        let test = stack_test();
        let map = headers(&[("user-agent", CHROME)]);
        let mut view = RequestView::new(Version::HTTP_2, &map);
        view.tls_without_ja4 = true;
        assert!(test.fires(&Context::new(&view)));
        // Plaintext (no TLS at all) is still no evidence.
        assert!(!mismatch(&test, CHROME, None));
    }

    #[test]
    fn ja4_stack_mismatch_params_are_checked() {
        let reasons = |params: serde_json::Value| {
            let mut v = Violations::new();
            let map = params.as_object().cloned().unwrap_or_default();
            assert!(
                Test::compile(FeatureKind::Ja4StackMismatch, &map, "features[0]", &mut v).is_none()
            );
            v.to_string()
        };
        let text = reasons(serde_json::json!({"family": "chrome"}));
        assert!(
            text.contains("features[0].params.ja4: kind ja4_stack_mismatch requires parameter"),
            "{text}"
        );
        let text = reasons(serde_json::json!({"family": "chrome", "ja4": []}));
        assert!(
            text.contains("must list 1..=32 fingerprints, got 0"),
            "{text}"
        );
        let text = reasons(serde_json::json!({"family": "chrome", "ja4": CURL}));
        assert!(
            text.contains("must be an array of JA4 strings, got a string"),
            "{text}"
        );
        let text = reasons(
            serde_json::json!({"family": "chrome", "ja4": [CURL, "t13d", 7, "x".repeat(5000)]}),
        );
        assert!(
            text.contains("features[0].params.ja4[1]: \"t13d\" is not a JA4 fingerprint"),
            "{text}"
        );
        assert!(
            text.contains("features[0].params.ja4[2]: a number is not"),
            "{text}"
        );
        assert!(
            text.contains("features[0].params.ja4[3]: a string of 5000 bytes is not"),
            "{text}"
        );
        assert!(
            !text.contains("xxxx"),
            "a hostile value is not echoed: {text}"
        );
        let text = reasons(serde_json::json!({"family": "netscape", "ja4": [CURL]}));
        assert!(
            text.contains("unknown browser family \"netscape\""),
            "{text}"
        );
        let too_many: Vec<&str> = std::iter::repeat_n(CURL, MAX_JA4_PER_ROW + 1).collect();
        let text = reasons(serde_json::json!({"family": "chrome", "ja4": too_many}));
        assert!(text.contains("got 33"), "{text}");
    }

    #[test]
    fn ja4_stack_of_matches_the_documented_positions() {
        let stack = Ja4Stack::of("t13d1516h2_8daaf6152771_02713d6af862").unwrap();
        assert_eq!(&stack.version, b"13");
        assert_eq!(&stack.ciphers, b"15");
        assert_eq!(&stack.cipher_hash, b"8daaf6152771");
    }

    proptest! {
        #[test]
        fn ja4_stack_of_never_panics(s in "\\PC{0,48}", t in "[tqd][0-9a-z]{2}[di][0-9]{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}") {
            let _ = Ja4Stack::of(&s);
            prop_assert!(Ja4Stack::of(&t).is_some(), "{}", t);
        }
    }

    /// A model with every kind, padded to the default limit: the bench's `max_features` model.
    pub(crate) fn every_kind_model() -> Model {
        crate::model::max_features_model()
    }

    fn arb_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        let names = prop::sample::select(vec![
            "user-agent",
            "accept",
            "accept-language",
            "accept-encoding",
            "sec-ch-ua",
            "sec-ch-ua-mobile",
            "sec-ch-ua-platform",
            "sec-fetch-mode",
            "sec-fetch-site",
            "host",
            "connection",
            "x-random",
        ])
        .prop_map(str::to_owned);
        let name = prop_oneof![names, "[a-z][a-z0-9-]{0,20}"];
        let value = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            Just(CHROME.as_bytes().to_vec()),
            Just(b"\"Chromium\";v=\"130\", \"Google Chrome\";v=\"1".to_vec()),
        ];
        proptest::collection::vec((name, value), 0..24)
    }

    fn to_map(pairs: &[(String, Vec<u8>)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_bytes(v),
            ) {
                map.append(n, v);
            }
        }
        map
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic_and_score_in_range(pairs in arb_headers(), v in 0u8..5) {
            let version = [Version::HTTP_09, Version::HTTP_10, Version::HTTP_11, Version::HTTP_2, Version::HTTP_3][usize::from(v)];
            let map = to_map(&pairs);
            for model in [Model::builtin().unwrap(), every_kind_model()] {
                let view = RequestView::new(version, &map).with_ja4(Some("t13d1516h2_x"));
                let a = model.score(&view).unwrap();
                let b = model.score(&view).unwrap();
                prop_assert!((1..=99).contains(&a.score().get()));
                prop_assert_eq!(&a, &b, "deterministic");
                prop_assert!(a.reasons().len() <= crate::MAX_REASONS);
            }
        }

        #[test]
        fn arbitrary_user_agents_score_in_range(ua in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let ua = String::from_utf8_lossy(&ua).into_owned();
            let model = Model::builtin().unwrap();
            let s = model.score(&RequestView::user_agent_only(Some(&ua))).unwrap();
            prop_assert!((1..=99).contains(&s.score().get()));
        }

        #[test]
        fn token_index_matches_naive_search(
            tokens in proptest::collection::vec("[a-c/]{1,4}", 1..40),
            hay in "[a-c/ ]{0,60}",
        ) {
            let mut tests: Vec<Test> = tokens.iter().map(|t| Test::UaToken(t.as_bytes().into(), u16::MAX)).collect();
            let index = TokenIndex::build(tests.iter_mut());
            let bits = index.scan(hay.as_bytes());
            for (test, token) in tests.iter().zip(&tokens) {
                let Test::UaToken(_, slot) = test else { panic!("not a token test") };
                prop_assert_eq!(bit(&bits, *slot), hay.contains(token.as_str()), "token {:?}", token);
            }
        }

        #[test]
        fn header_before_matches_reference(order in proptest::collection::vec(0usize..5, 0..8)) {
            let names = ["a", "b", "c", "d", "e"];
            let pairs: Vec<(String, Vec<u8>)> = order.iter().map(|i| (names[*i].to_owned(), b"v".to_vec())).collect();
            let map = to_map(&pairs);
            let keys: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
            for first in names {
                for second in names {
                    if first == second { continue; }
                    let reference = match (keys.iter().position(|k| *k == first), keys.iter().position(|k| *k == second)) {
                        (Some(a), Some(b)) => a < b,
                        _ => false,
                    };
                    let got = before(&map, &HeaderName::from_static(first), &HeaderName::from_static(second));
                    prop_assert_eq!(got, reference);
                }
            }
        }
    }
}
