//! Cache directive parsing: `Cache-Control` (RFC 9111 §5.2, RFC 5861) and targeted fields such as
//! `CDN-Cache-Control` (RFC 9213, structured-field dictionaries per RFC 8941).
//!
//! Both parsers take untrusted input from the network. They are linear in the input, allocate only
//! for field-name lists (bounded by [`MAX_FIELD_NAMES`]), never panic, and stop reading after
//! [`MAX_DIRECTIVES`] members.
//!
//! `Cache-Control` follows the ABNF strictly where that matters for safety and the conformance
//! suites: `max-age =60` and `max-age= 60` are ignored (no whitespace is allowed around `=`), a
//! `max-age=100` inside a quoted extension value is not a directive, and a value that is not
//! `1*DIGIT` (negative, decimal, alphabetic, single-quoted) is ignored. Directive names are
//! case-insensitive, quoted values are accepted for every directive (RFC 9111 §5.2 asks recipients
//! to), and when a directive appears more than once the first valid occurrence wins (§4.2.1).

use http::HeaderValue;
use http::header::HeaderName;
use ravelin_http::trim_ows;

/// The most members read from one set of field lines; the rest are ignored.
pub const MAX_DIRECTIVES: usize = 64;
/// The most field names kept for a qualified `no-cache` or `private`.
pub const MAX_FIELD_NAMES: usize = 32;
/// Delta-seconds values are clamped to 2^31 (RFC 9111 §1.2.2).
pub const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// What a `no-cache` or `private` directive covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldScope {
    /// The unqualified form: the whole response.
    All,
    /// The qualified form (`no-cache="set-cookie"`): only the listed header fields.
    Fields(Vec<HeaderName>),
}

impl FieldScope {
    fn merge(&mut self, other: FieldScope) {
        match (self as &mut FieldScope, other) {
            (FieldScope::All, _) => {}
            (this, FieldScope::All) => *this = FieldScope::All,
            (FieldScope::Fields(have), FieldScope::Fields(more)) => {
                for name in more {
                    if !have.contains(&name) {
                        have.push(name);
                    }
                }
                // Dropping names past the cap would under-apply the directive; the whole
                // response is the safe reading.
                if have.len() > MAX_FIELD_NAMES {
                    *self = FieldScope::All;
                }
            }
        }
    }
}

/// Parsed cache directives, request or response (the two share most names).
///
/// Durations are whole seconds, clamped to [`MAX_DELTA_SECONDS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age` (RFC 9111 §5.2.1.1, §5.2.2.1).
    pub max_age: Option<u64>,
    /// `s-maxage` (§5.2.2.10).
    pub s_maxage: Option<u64>,
    /// `max-stale`; `Some(None)` when given without a value (any staleness) (§5.2.1.2).
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh` (§5.2.1.3).
    pub min_fresh: Option<u64>,
    /// `no-cache`, qualified or not (§5.2.1.4, §5.2.2.4).
    pub no_cache: Option<FieldScope>,
    /// `private`, qualified or not (§5.2.2.7).
    pub private: Option<FieldScope>,
    /// `no-store` (§5.2.1.5, §5.2.2.5).
    pub no_store: bool,
    /// `no-transform` (§5.2.1.6, §5.2.2.6).
    pub no_transform: bool,
    /// `only-if-cached` (§5.2.1.7).
    pub only_if_cached: bool,
    /// `must-revalidate` (§5.2.2.2).
    pub must_revalidate: bool,
    /// `must-understand` (§5.2.2.3).
    pub must_understand: bool,
    /// `proxy-revalidate` (§5.2.2.8).
    pub proxy_revalidate: bool,
    /// `public` (§5.2.2.9).
    pub public: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `stale-while-revalidate` (RFC 5861 §3).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861 §4).
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` field line of a message, in order.
    ///
    /// ```
    /// use http::HeaderValue;
    /// use ravelin_cache::directives::CacheControl;
    ///
    /// let v = HeaderValue::from_static(r#"ext="max-age=100", MAX-AGE=60, no-cache="set-cookie""#);
    /// let cc = CacheControl::parse([&v]);
    /// assert_eq!(cc.max_age, Some(60));
    /// assert!(cc.no_cache.is_some());
    /// ```
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        let mut cc = CacheControl::default();
        let mut budget = MAX_DIRECTIVES;
        for value in values {
            parse_line(value.as_bytes(), &mut budget, &mut |name, value| {
                cc.apply(name, value);
            });
            if budget == 0 {
                break;
            }
        }
        cc
    }

    /// Parses one field value (convenience for tests and tools).
    pub fn parse_str(s: &str) -> Self {
        let mut cc = CacheControl::default();
        let mut budget = MAX_DIRECTIVES;
        parse_line(s.as_bytes(), &mut budget, &mut |name, value| {
            cc.apply(name, value);
        });
        cc
    }

    /// Whether the response carries explicit freshness for a shared cache (§4.2.1: `s-maxage` or
    /// `max-age`; `Expires` is checked separately).
    pub fn has_explicit_lifetime(&self) -> bool {
        self.s_maxage.is_some() || self.max_age.is_some()
    }

    fn apply(&mut self, name: &[u8], value: Option<Value<'_>>) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("max-age") {
            set_first(&mut self.max_age, value.and_then(|v| delta_seconds(&v)));
        } else if is("s-maxage") {
            set_first(&mut self.s_maxage, value.and_then(|v| delta_seconds(&v)));
        } else if is("min-fresh") {
            set_first(&mut self.min_fresh, value.and_then(|v| delta_seconds(&v)));
        } else if is("stale-while-revalidate") {
            set_first(
                &mut self.stale_while_revalidate,
                value.and_then(|v| delta_seconds(&v)),
            );
        } else if is("stale-if-error") {
            set_first(
                &mut self.stale_if_error,
                value.and_then(|v| delta_seconds(&v)),
            );
        } else if is("max-stale") {
            if self.max_stale.is_none() {
                match value {
                    None => self.max_stale = Some(None),
                    Some(v) => {
                        if let Some(secs) = delta_seconds(&v) {
                            self.max_stale = Some(Some(secs));
                        }
                    }
                }
            }
        } else if is("no-cache") {
            merge_scope(&mut self.no_cache, scope(value));
        } else if is("private") {
            merge_scope(&mut self.private, scope(value));
        } else if is("no-store") {
            self.no_store = true;
        } else if is("no-transform") {
            self.no_transform = true;
        } else if is("only-if-cached") {
            self.only_if_cached = true;
        } else if is("must-revalidate") {
            self.must_revalidate = true;
        } else if is("must-understand") {
            self.must_understand = true;
        } else if is("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if is("public") {
            self.public = true;
        } else if is("immutable") {
            self.immutable = true;
        }
        // Unknown extensions are ignored (§5.2.3).
    }
}

fn set_first(slot: &mut Option<u64>, value: Option<u64>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn merge_scope(slot: &mut Option<FieldScope>, scope: FieldScope) {
    match slot {
        Some(have) => have.merge(scope),
        None => *slot = Some(scope),
    }
}

/// A directive argument: a token, or a quoted-string with its escapes still in place.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Token(&'a [u8]),
    Quoted(&'a [u8]),
}

impl Value<'_> {
    /// The argument with quoted-pair escapes removed.
    fn unescaped(&self) -> Vec<u8> {
        match self {
            Value::Token(t) => t.to_vec(),
            Value::Quoted(q) => {
                let mut out = Vec::with_capacity(q.len());
                let mut escaped = false;
                for &b in *q {
                    if !escaped && b == b'\\' {
                        escaped = true;
                    } else {
                        out.push(b);
                        escaped = false;
                    }
                }
                out
            }
        }
    }
}

/// `delta-seconds = 1*DIGIT`, clamped to 2^31; anything else is invalid.
fn delta_seconds(v: &Value<'_>) -> Option<u64> {
    let bytes = v.unescaped();
    parse_delta_seconds(&bytes)
}

/// `1*DIGIT` → seconds, saturating at [`MAX_DELTA_SECONDS`] (leading zeros allowed).
pub(crate) fn parse_delta_seconds(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in bytes {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
        if n > MAX_DELTA_SECONDS {
            return Some(MAX_DELTA_SECONDS);
        }
    }
    Some(n)
}

fn scope(value: Option<Value<'_>>) -> FieldScope {
    let Some(value) = value else {
        return FieldScope::All;
    };
    let raw = value.unescaped();
    match field_names(&raw) {
        // `no-cache=""` lists nothing, and a list past the cap cannot be applied in full: both
        // are read as the unqualified form, the safe reading.
        Some(names) if !names.is_empty() => FieldScope::Fields(names),
        _ => FieldScope::All,
    }
}

/// A comma-separated list of field names; invalid names (which can match no field) are skipped.
/// `None` when the list has more than [`MAX_FIELD_NAMES`] names.
pub(crate) fn field_names(raw: &[u8]) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for n in raw
        .split(|b| *b == b',')
        .map(trim_ows)
        .filter(|n| !n.is_empty())
    {
        if let Ok(name) = HeaderName::from_bytes(n) {
            if names.len() == MAX_FIELD_NAMES {
                return None;
            }
            names.push(name);
        }
    }
    Some(names)
}

pub(crate) use ravelin_http::is_tchar;

/// Walks one `#cache-directive` list, calling `f` for each well-formed member. A malformed member
/// is skipped up to the next comma outside a quoted string.
fn parse_line(s: &[u8], budget: &mut usize, f: &mut dyn FnMut(&[u8], Option<Value<'_>>)) {
    let mut i = 0;
    let len = s.len();
    while i < len && *budget > 0 {
        // Skip OWS and empty list elements.
        while i < len && matches!(s.get(i), Some(b' ' | b'\t' | b',')) {
            i += 1;
        }
        if i >= len {
            break;
        }
        *budget -= 1;
        let start = i;
        while i < len && s.get(i).copied().is_some_and(is_tchar) {
            i += 1;
        }
        let name = s.get(start..i).unwrap_or_default();
        let mut value = None;
        let mut ok = !name.is_empty();
        if ok && s.get(i) == Some(&b'=') {
            i += 1;
            match s.get(i) {
                Some(b'"') => {
                    i += 1;
                    let vstart = i;
                    let mut closed = false;
                    while i < len {
                        match s.get(i) {
                            Some(b'\\') => i += 2,
                            Some(b'"') => {
                                closed = true;
                                break;
                            }
                            _ => i += 1,
                        }
                    }
                    if closed {
                        value = Some(Value::Quoted(s.get(vstart..i).unwrap_or_default()));
                        i += 1;
                    } else {
                        ok = false;
                        i = len;
                    }
                }
                _ => {
                    let vstart = i;
                    while i < len && s.get(i).copied().is_some_and(is_tchar) {
                        i += 1;
                    }
                    if i == vstart {
                        ok = false;
                    } else {
                        value = Some(Value::Token(s.get(vstart..i).unwrap_or_default()));
                    }
                }
            }
        }
        // After a member: OWS, then a comma or the end.
        while i < len && matches!(s.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if i < len && s.get(i) != Some(&b',') {
            ok = false;
            skip_to_comma(s, &mut i);
        }
        if ok {
            f(name, value);
        }
    }
}

fn skip_to_comma(s: &[u8], i: &mut usize) {
    let mut quoted = false;
    while let Some(&b) = s.get(*i) {
        match b {
            b'\\' if quoted => *i += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => return,
            _ => {}
        }
        *i += 1;
    }
}

/// Whether a `Pragma` field lists `no-cache` (RFC 9111 §5.4). A `no-cache` inside an
/// extension's quoted-string (`x="a, no-cache"`) is not a member.
pub fn pragma_no_cache<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> bool {
    values.into_iter().any(|v| {
        ravelin_http::split_list(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"no-cache"))
    })
}

// === Surrogate-Control (W3C Edge Architecture 1.0) ===

/// Parses `Surrogate-Control` for the surrogate whose device token is `device` (W3C Edge
/// Architecture Specification 1.0 §2.2, as Fastly, Akamai and Varnish read it).
///
/// The field is a comma-separated list of `directive[;device-token]`. A member without a device
/// token is for every surrogate, one with tokens only for the devices named (compared without
/// case). The members for this cache are read with the `Cache-Control` grammar (case-insensitive
/// names, the same strictness about values), with two translations from the W3C note:
/// `max-age=N+M` (a freshness extension: `M` seconds of stale service when the origin cannot be
/// reached) becomes `max-age=N, stale-if-error=M`, and `no-store-remote` (for surrogates away
/// from the origin, which an edge is) becomes `no-store`. `content="…"` (ESI capabilities) is
/// not a caching directive and is ignored.
///
/// Returns `None` when no member for this cache says anything this cache implements (absent,
/// targeted at other devices, or only unknown or malformed directives): the field is then ignored
/// and `Cache-Control` applies, as with an invalid targeted field (RFC 9213 §2.1). At most
/// [`MAX_DIRECTIVES`] members are read.
///
/// ```
/// use http::HeaderValue;
/// use ravelin_cache::directives::parse_surrogate_control;
///
/// let v = HeaderValue::from_static("max-age=60+600;ravelin, no-store;other");
/// let sc = parse_surrogate_control([&v], "ravelin").unwrap();
/// assert_eq!((sc.max_age, sc.stale_if_error, sc.no_store), (Some(60), Some(600), false));
/// assert_eq!(parse_surrogate_control([&v], "other").map(|c| c.no_store), Some(true));
/// ```
pub fn parse_surrogate_control<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
    device: &str,
) -> Option<CacheControl> {
    let mut translated: Vec<u8> = Vec::new();
    let mut budget = MAX_DIRECTIVES;
    'lines: for value in values {
        for member in ravelin_http::split_list(value.as_bytes()) {
            if budget == 0 {
                break 'lines;
            }
            budget -= 1;
            let Some(directive) = surrogate_member_for(member, device) else {
                continue;
            };
            translate_surrogate_directive(directive, &mut translated);
        }
    }
    let value = HeaderValue::from_bytes(&translated).ok()?;
    let cc = CacheControl::parse([&value]);
    (cc != CacheControl::default()).then_some(cc)
}

/// The directive of a `Surrogate-Control` member when the member is for `device`: it names no
/// device token, or names `device` among its tokens.
pub(crate) fn surrogate_member_for<'a>(member: &'a [u8], device: &str) -> Option<&'a [u8]> {
    let mut pieces = ravelin_http::list::split_quoted(member, b';');
    let directive = trim_ows(pieces.next().unwrap_or_default());
    let mut targeted = false;
    for token in pieces.map(trim_ows).filter(|t| !t.is_empty()) {
        if token.eq_ignore_ascii_case(device.as_bytes()) {
            return Some(directive);
        }
        targeted = true;
    }
    (!targeted).then_some(directive)
}

/// Appends one `Surrogate-Control` directive to `out` in `Cache-Control` form.
fn translate_surrogate_directive(directive: &[u8], out: &mut Vec<u8>) {
    let (name, value) = match directive.iter().position(|b| *b == b'=') {
        Some(at) => (
            directive.get(..at).unwrap_or_default(),
            directive.get(at.saturating_add(1)..),
        ),
        None => (directive, None),
    };
    let mut push = |parts: &[&[u8]]| {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        for part in parts {
            out.extend_from_slice(part);
        }
    };
    if name.eq_ignore_ascii_case(b"no-store-remote") && value.is_none() {
        push(&[b"no-store"]);
    } else if name.eq_ignore_ascii_case(b"content") {
        // ESI capabilities, not a caching directive.
    } else if let (true, Some(value)) = (name.eq_ignore_ascii_case(b"max-age"), value)
        && let Some(plus) = value.iter().position(|b| *b == b'+')
    {
        let fresh = value.get(..plus).unwrap_or_default();
        let extension = value.get(plus.saturating_add(1)..).unwrap_or_default();
        push(&[b"max-age=", fresh]);
        push(&[b"stale-if-error=", extension]);
    } else {
        push(&[directive]);
    }
}

// === Targeted fields (RFC 9213) ===

/// Parses a targeted cache-control field such as `CDN-Cache-Control` (RFC 9213 §2).
///
/// The field is a structured-field dictionary (RFC 8941 §3.2). Returns `None` when the field is
/// absent, empty or fails to parse — or when a directive this cache implements has the wrong type
/// (`max-age="60"`) — in which case RFC 9213 §2.1 says to behave as if the field were not there.
pub fn parse_targeted<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Option<CacheControl> {
    let mut joined: Vec<u8> = Vec::new();
    for (n, v) in values.into_iter().enumerate() {
        if n > 0 {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    let dict = sf::parse_dictionary(&joined)?;
    if dict.is_empty() {
        return None;
    }
    let mut cc = CacheControl::default();
    for (key, item) in dict {
        let seconds = |item: &sf::BareItem| match item {
            sf::BareItem::Integer(n) if *n >= 0 => Some(
                u64::try_from(*n)
                    .unwrap_or(MAX_DELTA_SECONDS)
                    .min(MAX_DELTA_SECONDS),
            ),
            _ => None,
        };
        let flag = |item: &sf::Member| match item {
            sf::Member::Item(sf::BareItem::Boolean(b)) => Some(*b),
            _ => None,
        };
        match key.as_str() {
            "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error" | "min-fresh" => {
                let sf::Member::Item(bare) = &item else {
                    return None;
                };
                let secs = seconds(bare)?;
                let slot = match key.as_str() {
                    "max-age" => &mut cc.max_age,
                    "s-maxage" => &mut cc.s_maxage,
                    "stale-while-revalidate" => &mut cc.stale_while_revalidate,
                    "stale-if-error" => &mut cc.stale_if_error,
                    _ => &mut cc.min_fresh,
                };
                *slot = Some(secs);
            }
            "no-cache" | "private" => {
                let scope = match &item {
                    sf::Member::Item(sf::BareItem::Boolean(true)) => Some(FieldScope::All),
                    sf::Member::Item(sf::BareItem::Boolean(false)) => None,
                    sf::Member::Item(sf::BareItem::String(s)) => {
                        Some(match field_names(s.as_bytes()) {
                            Some(names) if !names.is_empty() => FieldScope::Fields(names),
                            _ => FieldScope::All,
                        })
                    }
                    sf::Member::InnerList(items) => {
                        let mut names = Vec::new();
                        for it in items {
                            match it {
                                sf::BareItem::String(s) | sf::BareItem::Token(s) => {
                                    names.extend(field_names(s.as_bytes()).unwrap_or_default());
                                }
                                _ => return None,
                            }
                        }
                        Some(if names.is_empty() || names.len() > MAX_FIELD_NAMES {
                            FieldScope::All
                        } else {
                            FieldScope::Fields(names)
                        })
                    }
                    _ => return None,
                };
                if key == "no-cache" {
                    cc.no_cache = scope;
                } else {
                    cc.private = scope;
                }
            }
            "no-store" | "must-revalidate" | "proxy-revalidate" | "public" | "immutable"
            | "must-understand" | "no-transform" => {
                let on = flag(&item)?;
                let slot = match key.as_str() {
                    "no-store" => &mut cc.no_store,
                    "must-revalidate" => &mut cc.must_revalidate,
                    "proxy-revalidate" => &mut cc.proxy_revalidate,
                    "public" => &mut cc.public,
                    "immutable" => &mut cc.immutable,
                    "must-understand" => &mut cc.must_understand,
                    _ => &mut cc.no_transform,
                };
                *slot = on;
            }
            _ => {}
        }
    }
    Some(cc)
}

/// A minimal RFC 8941 parser: dictionaries of items and inner lists (parameters are parsed and
/// discarded; no cache directive uses them).
pub(crate) mod sf {
    /// A dictionary member value.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) enum Member {
        Item(BareItem),
        InnerList(Vec<BareItem>),
    }

    /// RFC 8941 §3.3 bare items.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) enum BareItem {
        Integer(i64),
        Decimal(f64),
        String(String),
        Token(String),
        ByteSeq,
        Boolean(bool),
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }
        fn bump(&mut self) -> Option<u8> {
            let c = self.peek()?;
            self.i += 1;
            Some(c)
        }
        fn skip_sp(&mut self) {
            while self.peek() == Some(b' ') {
                self.i += 1;
            }
        }
        fn skip_ows(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t')) {
                self.i += 1;
            }
        }
        fn at_end(&self) -> bool {
            self.i >= self.s.len()
        }

        fn key(&mut self) -> Option<String> {
            let first = self.peek()?;
            if !(first.is_ascii_lowercase() || first == b'*') {
                return None;
            }
            let start = self.i;
            while let Some(c) = self.peek() {
                if c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'.' | b'*')
                {
                    self.i += 1;
                } else {
                    break;
                }
            }
            let k = self.s.get(start..self.i)?;
            Some(String::from_utf8_lossy(k).into_owned())
        }

        fn parameters(&mut self) -> Option<()> {
            while self.peek() == Some(b';') {
                self.i += 1;
                self.skip_sp();
                self.key()?;
                if self.peek() == Some(b'=') {
                    self.i += 1;
                    self.bare_item()?;
                }
            }
            Some(())
        }

        fn bare_item(&mut self) -> Option<BareItem> {
            match self.peek()? {
                b'-' | b'0'..=b'9' => self.number(),
                b'"' => self.string(),
                b':' => self.byte_seq(),
                b'?' => self.boolean(),
                c if c.is_ascii_alphabetic() || c == b'*' => self.token(),
                _ => None,
            }
        }

        fn number(&mut self) -> Option<BareItem> {
            let neg = if self.peek() == Some(b'-') {
                self.i += 1;
                true
            } else {
                false
            };
            let start = self.i;
            let mut dot: Option<usize> = None;
            while let Some(c) = self.peek() {
                if c.is_ascii_digit() {
                    self.i += 1;
                } else if c == b'.' && dot.is_none() {
                    if self.i - start > 12 {
                        return None;
                    }
                    dot = Some(self.i);
                    self.i += 1;
                } else {
                    break;
                }
                let len = self.i - start;
                if (dot.is_none() && len > 15) || (dot.is_some() && len > 16) {
                    return None;
                }
            }
            let text = std::str::from_utf8(self.s.get(start..self.i)?).ok()?;
            if text.is_empty() || !text.as_bytes().first()?.is_ascii_digit() {
                return None;
            }
            match dot {
                None => {
                    let n: i64 = text.parse().ok()?;
                    Some(BareItem::Integer(if neg { -n } else { n }))
                }
                Some(at) => {
                    let frac = self.i - at - 1;
                    if frac == 0 || frac > 3 {
                        return None;
                    }
                    let n: f64 = text.parse().ok()?;
                    Some(BareItem::Decimal(if neg { -n } else { n }))
                }
            }
        }

        fn string(&mut self) -> Option<BareItem> {
            self.bump()?; // opening quote
            let mut out = Vec::new();
            loop {
                match self.bump()? {
                    b'\\' => match self.bump()? {
                        c @ (b'"' | b'\\') => out.push(c),
                        _ => return None,
                    },
                    b'"' => return Some(BareItem::String(String::from_utf8(out).ok()?)),
                    c @ 0x20..=0x7e => out.push(c),
                    _ => return None,
                }
            }
        }

        fn token(&mut self) -> Option<BareItem> {
            let start = self.i;
            self.i += 1;
            while let Some(c) = self.peek() {
                if super::is_tchar(c) || c == b':' || c == b'/' {
                    self.i += 1;
                } else {
                    break;
                }
            }
            let t = self.s.get(start..self.i)?;
            Some(BareItem::Token(String::from_utf8_lossy(t).into_owned()))
        }

        fn byte_seq(&mut self) -> Option<BareItem> {
            self.bump()?;
            loop {
                match self.bump()? {
                    b':' => return Some(BareItem::ByteSeq),
                    c if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=') => {}
                    _ => return None,
                }
            }
        }

        fn boolean(&mut self) -> Option<BareItem> {
            self.bump()?;
            match self.bump()? {
                b'1' => Some(BareItem::Boolean(true)),
                b'0' => Some(BareItem::Boolean(false)),
                _ => None,
            }
        }

        fn inner_list(&mut self) -> Option<Vec<BareItem>> {
            self.bump()?; // '('
            let mut items = Vec::new();
            loop {
                self.skip_sp();
                if self.peek() == Some(b')') {
                    self.i += 1;
                    self.parameters()?;
                    return Some(items);
                }
                let item = self.bare_item()?;
                self.parameters()?;
                if items.len() < super::MAX_FIELD_NAMES {
                    items.push(item);
                }
                match self.peek()? {
                    b' ' | b')' => {}
                    _ => return None,
                }
            }
        }
    }

    /// RFC 8941 §4.2.2. Later duplicates overwrite earlier ones, as the RFC specifies.
    pub(crate) fn parse_dictionary(s: &[u8]) -> Option<Vec<(String, Member)>> {
        let mut p = Parser { s, i: 0 };
        let mut out: Vec<(String, Member)> = Vec::new();
        p.skip_sp();
        while !p.at_end() {
            let key = p.key()?;
            let member = if p.peek() == Some(b'=') {
                p.i += 1;
                if p.peek() == Some(b'(') {
                    Member::InnerList(p.inner_list()?)
                } else {
                    let item = p.bare_item()?;
                    p.parameters()?;
                    Member::Item(item)
                }
            } else {
                p.parameters()?;
                Member::Item(BareItem::Boolean(true))
            };
            if let Some(slot) = out.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = member;
            } else if out.len() < super::MAX_DIRECTIVES {
                out.push((key, member));
            }
            p.skip_ows();
            if p.at_end() {
                break;
            }
            if p.bump()? != b',' {
                return None;
            }
            p.skip_ows();
            if p.at_end() {
                return None; // trailing comma
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cc(s: &str) -> CacheControl {
        CacheControl::parse_str(s)
    }

    fn targeted(s: &str) -> Option<CacheControl> {
        let v = HeaderValue::from_str(s).unwrap();
        parse_targeted([&v])
    }

    #[test]
    fn rfc9111_5_2_names_are_case_insensitive() {
        assert_eq!(cc("MaX-aGe=3600").max_age, Some(3600));
        assert!(cc("No-StOrE").no_store);
        assert_eq!(cc("No-CaChE").no_cache, Some(FieldScope::All));
    }

    #[test]
    fn rfc9111_5_2_quoted_arguments_are_accepted() {
        assert_eq!(cc(r#"max-age="3600""#).max_age, Some(3600));
        assert_eq!(cc(r#"s-maxage="10", max-age=5"#).s_maxage, Some(10));
    }

    #[test]
    fn rfc9111_5_2_directive_inside_a_quoted_string_is_not_a_directive() {
        assert_eq!(cc(r#"extension="max-age=100", max-age=1"#).max_age, Some(1));
        assert_eq!(cc(r#"max-age=1, extension="max-age=100""#).max_age, Some(1));
        assert_eq!(
            cc(r#"extension="max-age=100, no-store""#),
            CacheControl::default()
        );
        assert!(cc(r#"ext="a\"b, no-store", public"#).public);
        assert!(!cc(r#"ext="a\"b, no-store", public"#).no_store);
    }

    #[test]
    fn rfc9111_1_2_2_invalid_delta_seconds_are_ignored() {
        for bad in [
            "max-age =100",
            "max-age= 100",
            "max-age=a100",
            "max-age=100a",
            "max-age=-100",
            "max-age='3600'",
            "max-age=3600.0",
            "max-age",
            "max-age=",
        ] {
            assert_eq!(cc(bad).max_age, None, "{bad}");
        }
        assert_eq!(cc("max-age=003600").max_age, Some(3600));
    }

    #[test]
    fn rfc9111_1_2_2_large_delta_seconds_clamp_to_2_pow_31() {
        assert_eq!(cc("max-age=2147483648").max_age, Some(MAX_DELTA_SECONDS));
        assert_eq!(cc("max-age=99999999999").max_age, Some(MAX_DELTA_SECONDS));
        assert_eq!(
            cc("max-age=999999999999999999999999999999").max_age,
            Some(MAX_DELTA_SECONDS)
        );
    }

    #[test]
    fn rfc9111_4_2_1_first_occurrence_wins() {
        assert_eq!(cc("max-age=1800, max-age=1").max_age, Some(1800));
        let a = HeaderValue::from_static("max-age=1");
        let b = HeaderValue::from_static("max-age=1800");
        assert_eq!(CacheControl::parse([&a, &b]).max_age, Some(1));
        // An invalid first occurrence does not hide a valid later one.
        assert_eq!(cc("max-age=x, max-age=7").max_age, Some(7));
    }

    #[test]
    fn rfc9111_5_2_2_4_qualified_no_cache_lists_field_names() {
        assert_eq!(
            cc(r#"no-cache="a, B""#).no_cache,
            Some(FieldScope::Fields(vec![
                HeaderName::from_static("a"),
                HeaderName::from_static("b")
            ]))
        );
        assert_eq!(
            cc("no-cache=set-cookie").no_cache,
            Some(FieldScope::Fields(vec![HeaderName::from_static(
                "set-cookie"
            )]))
        );
        // A later unqualified form widens it.
        assert_eq!(
            cc(r#"no-cache="a", no-cache"#).no_cache,
            Some(FieldScope::All)
        );
        assert!(cc(r#"private="x""#).private.is_some());
    }

    #[test]
    fn field_lists_past_the_cap_cover_the_whole_response() {
        let many = (0..40)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(
            cc(&format!("no-cache=\"{many}\"")).no_cache,
            Some(FieldScope::All)
        );
        assert_eq!(
            cc(&format!("private=\"{many}\"")).private,
            Some(FieldScope::All)
        );
    }

    #[test]
    fn rfc9111_5_2_1_request_directives() {
        let c = cc("max-stale, min-fresh=5, only-if-cached, no-cache");
        assert_eq!(c.max_stale, Some(None));
        assert_eq!(c.min_fresh, Some(5));
        assert!(c.only_if_cached);
        assert_eq!(cc("max-stale=30").max_stale, Some(Some(30)));
    }

    #[test]
    fn rfc5861_stale_directives() {
        let c = cc("max-age=0, stale-while-revalidate=3600, stale-if-error=60");
        assert_eq!(c.stale_while_revalidate, Some(3600));
        assert_eq!(c.stale_if_error, Some(60));
    }

    #[test]
    fn odd_spacing_and_empty_elements() {
        let c = cc(" ,, public ,\tmax-age=5 , ,must-revalidate,");
        assert!(c.public && c.must_revalidate);
        assert_eq!(c.max_age, Some(5));
    }

    #[test]
    fn rfc9111_5_4_pragma_no_cache() {
        let v = HeaderValue::from_static("foo, No-Cache");
        assert!(pragma_no_cache([&v]));
        let v = HeaderValue::from_static("unrecognised-extension");
        assert!(!pragma_no_cache([&v]));
        // Inside an extension's quoted-string, no-cache is not a member.
        let v = HeaderValue::from_static(r#"x="a, no-cache, b""#);
        assert!(!pragma_no_cache([&v]));
        let v = HeaderValue::from_static(r#"x="a, b", no-cache"#);
        assert!(pragma_no_cache([&v]));
    }

    #[test]
    fn w3c_edge_arch_surrogate_control_grammar() {
        let sc = |s: &str, device: &str| {
            let v = HeaderValue::from_str(s).unwrap();
            parse_surrogate_control([&v], device)
        };
        let c = sc("max-age=60+600", "ravelin").unwrap();
        assert_eq!((c.max_age, c.stale_if_error), (Some(60), Some(600)));
        let c = sc("MAX-AGE=60, Stale-While-Revalidate=5", "ravelin").unwrap();
        assert_eq!((c.max_age, c.stale_while_revalidate), (Some(60), Some(5)));
        assert!(sc("no-store-remote", "ravelin").unwrap().no_store);
        assert!(sc("no-store ; a ; Ravelin", "ravelin").unwrap().no_store);
        assert_eq!(sc("no-store;a", "ravelin"), None);
        assert_eq!(sc("content=\"ESI/1.0; x\"", "ravelin"), None);
        assert_eq!(
            sc("max-age =5, max-age= 5, max-age=-5, foo", "ravelin"),
            None
        );
        assert_eq!(sc("", "ravelin"), None);
        // The first valid max-age wins, as in Cache-Control.
        assert_eq!(
            sc("max-age=5, max-age=7", "ravelin").unwrap().max_age,
            Some(5)
        );
        let many = vec!["foo"; MAX_DIRECTIVES].join(", ") + ", max-age=5";
        assert_eq!(
            sc(&many, "ravelin"),
            None,
            "members past the budget are not read"
        );
    }

    #[test]
    fn rfc9213_2_1_targeted_field_is_a_dictionary() {
        let t = targeted("max-age=3600, must-revalidate").unwrap();
        assert_eq!(t.max_age, Some(3600));
        assert!(t.must_revalidate);
        assert_eq!(
            targeted("foobar, max-age=3600").unwrap().max_age,
            Some(3600)
        );
        assert_eq!(
            targeted("max-age=99999999999").unwrap().max_age,
            Some(MAX_DELTA_SECONDS)
        );
        assert!(targeted("no-store").unwrap().no_store);
        assert!(targeted("private").unwrap().private.is_some());
    }

    #[test]
    fn rfc9213_2_1_invalid_targeted_field_is_ignored() {
        assert_eq!(targeted("max-age=10000, &&&&&"), None);
        assert_eq!(targeted(r#"max-age="10000""#), None);
        assert_eq!(targeted("max-age =100"), None);
        assert_eq!(targeted("max-age= 100"), None);
        assert_eq!(targeted("MaX-aGe=3600"), None);
        assert_eq!(targeted(""), None);
        assert_eq!(targeted("max-age=5,"), None);
    }

    #[test]
    fn rfc8941_parameters_inner_lists_and_duplicates() {
        let t = targeted(r#"max-age=5;a=1, no-cache=("a" b), max-age=7"#).unwrap();
        assert_eq!(t.max_age, Some(7));
        assert_eq!(
            t.no_cache,
            Some(FieldScope::Fields(vec![
                HeaderName::from_static("a"),
                HeaderName::from_static("b")
            ]))
        );
        assert!(!targeted("no-store=?0").unwrap().no_store);
    }

    /// A reference model of `#cache-directive` for lists built from well-formed members.
    #[derive(Debug, Clone)]
    enum Gen {
        MaxAge(u64),
        SMaxage(u64),
        NoStore,
        Public,
        Ext(String, Option<String>),
    }

    fn gen_member() -> impl Strategy<Value = Gen> {
        prop_oneof![
            (0u64..5_000_000_000).prop_map(Gen::MaxAge),
            (0u64..100_000).prop_map(Gen::SMaxage),
            Just(Gen::NoStore),
            Just(Gen::Public),
            (
                "x-[a-z]{1,8}",
                proptest::option::of("[ -~&&[^\"\\\\]]{0,12}")
            )
                .prop_map(|(n, v)| Gen::Ext(n, v)),
        ]
    }

    fn render(m: &Gen, quote: bool, upper: bool) -> String {
        let name = |n: &str| {
            if upper {
                n.to_ascii_uppercase()
            } else {
                n.to_string()
            }
        };
        let val = |v: String| if quote { format!("\"{v}\"") } else { v };
        match m {
            Gen::MaxAge(n) => format!("{}={}", name("max-age"), val(n.to_string())),
            Gen::SMaxage(n) => format!("{}={}", name("s-maxage"), val(n.to_string())),
            Gen::NoStore => name("no-store"),
            Gen::Public => name("public"),
            Gen::Ext(n, None) => n.clone(),
            Gen::Ext(n, Some(v)) => format!("{n}=\"{v}\""),
        }
    }

    proptest! {
        #[test]
        fn parser_matches_reference_model(
            members in proptest::collection::vec(gen_member(), 0..12),
            quote in any::<bool>(),
            upper in any::<bool>(),
            sep in prop_oneof![Just(","), Just(", "), Just(" ,\t"), Just(",,")],
        ) {
            let text = members.iter().map(|m| render(m, quote, upper)).collect::<Vec<_>>().join(sep);
            let got = cc(&text);
            let first_max_age = members.iter().find_map(|m| match m { Gen::MaxAge(n) => Some(*n), _ => None });
            let first_s_maxage = members.iter().find_map(|m| match m { Gen::SMaxage(n) => Some(*n), _ => None });
            prop_assert_eq!(got.max_age, first_max_age.map(|n| n.min(MAX_DELTA_SECONDS)));
            prop_assert_eq!(got.s_maxage, first_s_maxage.map(|n| n.min(MAX_DELTA_SECONDS)));
            prop_assert_eq!(got.no_store, members.iter().any(|m| matches!(m, Gen::NoStore)));
            prop_assert_eq!(got.public, members.iter().any(|m| matches!(m, Gen::Public)));
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                let _ = CacheControl::parse([&v]);
                let _ = parse_targeted([&v]);
                let _ = parse_surrogate_control([&v], "ravelin");
                let _ = pragma_no_cache([&v]);
            }
        }

        #[test]
        fn sf_integers_round_trip(n in 0i64..999_999_999_999_999) {
            let t = targeted(&format!("max-age={n}")).unwrap();
            prop_assert_eq!(t.max_age, Some((n as u64).min(MAX_DELTA_SECONDS)));
        }
    }
}
