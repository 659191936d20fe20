//! A single-pass, allocation-free reading of a User-Agent string.
//!
//! This is not a user-agent database: it extracts the handful of structural facts the feature
//! kinds need (which browser the string claims, its version, OS, whether the version numbers are
//! ones that browser ever shipped) and nothing else. Everything here works on bytes, so a UA that
//! is not UTF-8 is still read (and flagged malformed) instead of being an error.

/// Bytes of a User-Agent that are inspected; longer values are flagged malformed and only their
/// prefix is searched, which bounds the CPU a hostile header can cost.
pub(crate) const MAX_UA_BYTES: usize = 1024;

/// The browser a User-Agent claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrowserFamily {
    /// Google Chrome (desktop, Android, or `CriOS` on iOS).
    Chrome,
    /// Microsoft Edge (Chromium based).
    Edge,
    /// Opera (Chromium based).
    Opera,
    /// Samsung Internet (Chromium based).
    Samsung,
    /// Mozilla Firefox (`FxiOS` on iOS).
    Firefox,
    /// Apple Safari.
    Safari,
}

impl BrowserFamily {
    /// Every family, in the order the parser tries them.
    pub const ALL: [BrowserFamily; 6] = [
        BrowserFamily::Chrome,
        BrowserFamily::Edge,
        BrowserFamily::Opera,
        BrowserFamily::Samsung,
        BrowserFamily::Firefox,
        BrowserFamily::Safari,
    ];

    /// The lowercase name used in feature files.
    pub const fn as_str(self) -> &'static str {
        match self {
            BrowserFamily::Chrome => "chrome",
            BrowserFamily::Edge => "edge",
            BrowserFamily::Opera => "opera",
            BrowserFamily::Samsung => "samsung",
            BrowserFamily::Firefox => "firefox",
            BrowserFamily::Safari => "safari",
        }
    }

    /// Parses [`as_str`](Self::as_str) names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// The operating system a User-Agent claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Os {
    /// Microsoft Windows.
    Windows,
    /// macOS.
    MacOs,
    /// iOS or iPadOS (with a mobile UA).
    Ios,
    /// Android.
    Android,
    /// ChromeOS.
    ChromeOs,
    /// Other Linux.
    Linux,
}

impl Os {
    /// The value Chromium sends in `sec-ch-ua-platform` for this OS (without quotes).
    pub const fn client_hint_platform(self) -> &'static str {
        match self {
            Os::Windows => "Windows",
            Os::MacOs => "macOS",
            Os::Ios => "iOS",
            Os::Android => "Android",
            Os::ChromeOs => "Chrome OS",
            Os::Linux => "Linux",
        }
    }
}

/// What [`UaInfo::parse`] learned from one User-Agent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UaInfo<'a> {
    /// The inspected bytes (at most [`MAX_UA_BYTES`]).
    pub(crate) bytes: &'a [u8],
    /// Full length of the header value.
    pub(crate) len: usize,
    /// Control characters, non-ASCII bytes, unbalanced parentheses, surrounding whitespace, or
    /// longer than [`MAX_UA_BYTES`].
    pub(crate) malformed: bool,
    /// Starts with `Mozilla/`.
    pub(crate) mozilla: bool,
    /// Number of `product/version` tokens outside comments.
    pub(crate) products: u32,
    /// Has a parenthesised comment.
    pub(crate) comment: bool,
    /// Contains a URL (`http://`, `https://`, `www.`).
    pub(crate) url: bool,
    /// No `/` anywhere: no product carries a version.
    pub(crate) no_version: bool,
    pub(crate) family: Option<BrowserFamily>,
    /// Major version of [`family`](Self::family).
    pub(crate) major: Option<u32>,
    /// Major version of the `Chrome/` token, for Chromium-based families.
    pub(crate) chrome_major: Option<u32>,
    /// A Chromium engine that sends client hints (Chrome/Edge/Opera/Samsung, not on iOS).
    pub(crate) chromium: bool,
    pub(crate) os: Option<Os>,
    /// Contains the `Mobile` token.
    pub(crate) mobile: bool,
    /// Version numbers no release of the claimed browser ever had.
    pub(crate) version_implausible: bool,
    /// An engine that cannot run on the claimed OS (e.g. Blink on iOS).
    pub(crate) os_engine_mismatch: bool,
    /// Major iOS version (`iPhone OS 18_6` → 18), for WebKit feature checks.
    pub(crate) ios_major: Option<u32>,
}

impl<'a> UaInfo<'a> {
    /// Reads `raw` (the header value's bytes). Never allocates.
    pub(crate) fn parse(raw: &'a [u8]) -> Self {
        let bytes = raw.get(..MAX_UA_BYTES).unwrap_or(raw);
        let mut info = UaInfo {
            bytes,
            len: raw.len(),
            ..UaInfo::default()
        };
        let shape = shape(bytes);
        info.malformed = raw.len() > MAX_UA_BYTES || shape.malformed;
        info.mozilla = bytes.starts_with(b"Mozilla/");
        info.products = shape.products;
        info.comment = shape.comment;
        info.no_version = !shape.slash;
        info.url = has_url(bytes);

        // One pass over the words (split on space, `;`, `,`, parentheses): each `name/version`
        // or bare word is matched against the few names the features need.
        let t = Tokens::scan(bytes);
        let ios = t.ios;
        info.os = if ios {
            Some(Os::Ios)
        } else if t.android {
            Some(Os::Android)
        } else if t.windows {
            Some(Os::Windows)
        } else if t.chrome_os {
            Some(Os::ChromeOs)
        } else if t.mac {
            Some(Os::MacOs)
        } else if t.linux {
            Some(Os::Linux)
        } else {
            None
        };
        info.mobile = t.mobile;
        if ios {
            info.ios_major = t.ios_major;
        }
        let (chrome, crios) = (t.chrome.version(), t.crios.version());
        info.chrome_major = chrome.map(|v| v.major);
        let (family, version) = if let Some(v) = t.edge.version() {
            (Some(BrowserFamily::Edge), Some(v))
        } else if let Some(v) = t.opera.version() {
            (Some(BrowserFamily::Opera), Some(v))
        } else if let Some(v) = t.samsung.version() {
            (Some(BrowserFamily::Samsung), Some(v))
        } else if let Some(v) = t.firefox.version() {
            (Some(BrowserFamily::Firefox), Some(v))
        } else if let Some(v) = crios.or(chrome) {
            (Some(BrowserFamily::Chrome), Some(v))
        } else if t.safari {
            (Some(BrowserFamily::Safari), t.version.version())
        } else {
            (None, None)
        };
        info.family = family;
        info.major = version.map(|v| v.major);
        info.chromium = chrome.is_some()
            && !ios
            && matches!(
                family,
                Some(
                    BrowserFamily::Chrome
                        | BrowserFamily::Edge
                        | BrowserFamily::Opera
                        | BrowserFamily::Samsung
                )
            );
        // A `Chrome/` token without a number (`Chrome/W.X.Y.Z`) is a template, not a version.
        info.version_implausible = chrome
            .or(crios)
            .is_some_and(|v| !chrome_version_plausible(v))
            || (chrome.is_none() && crios.is_none() && (t.chrome.seen() || t.crios.seen()));
        info.os_engine_mismatch =
            (ios && (chrome.is_some() || t.blink_webkit)) || (!ios && (crios.is_some() || t.fxios));
        info
    }
}

/// A product token seen in the User-Agent: absent, present without a number, or its version.
#[derive(Debug, Clone, Copy, Default)]
enum Product {
    #[default]
    Absent,
    Unversioned,
    Versioned(Version),
}

impl Product {
    fn version(self) -> Option<Version> {
        match self {
            Product::Versioned(v) => Some(v),
            _ => None,
        }
    }

    fn seen(self) -> bool {
        !matches!(self, Product::Absent)
    }

    /// Keeps the first occurrence.
    fn set(&mut self, version: &[u8]) {
        if matches!(self, Product::Absent) {
            *self = parse_version(version).map_or(Product::Unversioned, Product::Versioned);
        }
    }
}

/// What one pass over the words found.
#[derive(Debug, Default)]
struct Tokens {
    ios: bool,
    android: bool,
    windows: bool,
    chrome_os: bool,
    mac: bool,
    linux: bool,
    mobile: bool,
    ios_major: Option<u32>,
    chrome: Product,
    crios: Product,
    edge: Product,
    opera: Product,
    samsung: Product,
    firefox: Product,
    fxios: bool,
    safari: bool,
    version: Product,
    /// `AppleWebKit/537.36`: Blink's frozen WebKit version, never sent by real WebKit.
    blink_webkit: bool,
}

impl Tokens {
    fn scan(bytes: &[u8]) -> Tokens {
        let mut t = Tokens::default();
        let mut previous: &[u8] = b"";
        let mut os_version_next = false;
        let words = bytes
            .split(|b| matches!(b, b' ' | b';' | b',' | b'(' | b')' | b'\t'))
            .filter(|w| !w.is_empty());
        for word in words {
            if std::mem::take(&mut os_version_next) {
                // `iPhone OS 18_6` / `CPU OS 17_0`: the version after "OS".
                t.ios_major = parse_version(word).map(|v| v.major);
            }
            let (name, version) = match word.iter().position(|b| *b == b'/') {
                Some(slash) => (
                    word.get(..slash).unwrap_or_default(),
                    word.get(slash.saturating_add(1)..),
                ),
                None => (word, None),
            };
            match (name, version) {
                (b"Chrome" | b"HeadlessChrome", Some(v)) => t.chrome.set(v),
                (b"CriOS", Some(v)) => t.crios.set(v),
                (b"Edg" | b"EdgA" | b"EdgiOS", Some(v)) => t.edge.set(v),
                (b"OPR", Some(v)) => t.opera.set(v),
                (b"SamsungBrowser", Some(v)) => t.samsung.set(v),
                (b"Firefox", Some(v)) => t.firefox.set(v),
                (b"FxiOS", Some(v)) => {
                    t.fxios = true;
                    t.firefox.set(v);
                }
                (b"Safari", Some(_)) => t.safari = true,
                (b"Version", Some(v)) => t.version.set(v),
                (b"AppleWebKit", Some(v)) => t.blink_webkit |= v.starts_with(b"537.36"),
                (b"Mobile", _) => t.mobile = true,
                (b"iPhone" | b"iPad" | b"iPod", None) => t.ios = true,
                (b"Android", None) => t.android = true,
                (b"Windows", None) => t.windows = true,
                (b"CrOS", None) => t.chrome_os = true,
                (b"Macintosh", None) => t.mac = true,
                (b"Linux" | b"X11", None) => t.linux = true,
                (b"OS", None) => {
                    os_version_next = matches!(previous, b"iPhone" | b"CPU");
                    if previous == b"Mac" {
                        t.mac = true;
                    }
                }
                _ => {}
            }
            previous = word;
        }
        t
    }
}

/// Parses `120.0.6099.109` (stops at the first byte that is neither a digit nor a dot; `_`
/// separates iOS versions and ends the major).
fn parse_version(rest: &[u8]) -> Option<Version> {
    let mut numbers = [None; 4];
    let mut slot = 0usize;
    let mut current: Option<u32> = None;
    for &b in rest {
        if b.is_ascii_digit() {
            let digit = u32::from(b - b'0');
            current = Some(
                current
                    .unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(digit),
            );
        } else if b == b'.' && current.is_some() && slot < 3 {
            if let Some(n) = numbers.get_mut(slot) {
                *n = current.take();
            }
            slot = slot.saturating_add(1);
        } else {
            break;
        }
    }
    if let Some(n) = numbers.get_mut(slot) {
        *n = current;
    }
    let [major, a, b, c] = numbers;
    Some(Version {
        major: major?,
        parts: [a, b, c],
    })
}

/// `http://`, `https://` (any case) or `www.` anywhere in the value.
fn has_url(bytes: &[u8]) -> bool {
    let mut from = 0usize;
    while let Some(offset) = bytes.get(from..).and_then(|b| find(b, b"://")) {
        let at = from.saturating_add(offset);
        let before = bytes.get(..at).unwrap_or_default();
        let ends_ci = |suffix: &[u8]| {
            before.len() >= suffix.len()
                && before
                    .get(before.len().saturating_sub(suffix.len())..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        };
        if ends_ci(b"http") || ends_ci(b"https") {
            return true;
        }
        from = at.saturating_add(3);
    }
    contains_ci(bytes, b"www.")
}

/// A dotted version: `major.minor.build.patch`, missing parts are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) major: u32,
    pub(crate) parts: [Option<u32>; 3],
}

/// Parses the version that follows `token` (e.g. `Chrome/` → `120.0.6099.109`).
#[cfg(test)]
pub(crate) fn version_after(bytes: &[u8], token: &[u8]) -> Option<Version> {
    let start = find(bytes, token)?.checked_add(token.len())?;
    parse_version(bytes.get(start..)?)
}

/// Whether a `Chrome/M.m.B.P` version is one Chrome could have shipped: minor is always 0, patch
/// numbers stay in the hundreds, and the build number grows with the major version (about 45
/// builds a major before 100, about 59 after). Reduced UAs (`M.0.0.0`) are plausible.
pub(crate) fn chrome_version_plausible(v: Version) -> bool {
    let [minor, build, patch] = v.parts;
    if v.major == 0 || v.major > 999 {
        return false;
    }
    if minor.is_some_and(|m| m != 0) {
        return false;
    }
    if patch.is_some_and(|p| p >= 1000) {
        return false;
    }
    match build {
        None | Some(0) => patch.is_none_or(|p| p == 0),
        Some(build) => {
            let major = i64::from(v.major);
            // Anchors: 53 → 2785, 100 → 4896, 153 → 8010 (and linear beyond).
            let expected = if major <= 100 {
                2785 + (major - 53) * 45
            } else {
                4896 + (major - 100) * 59
            };
            (i64::from(build) - expected).abs() <= 600
        }
    }
}

/// What one pass over the bytes tells about the string's shape.
#[derive(Debug, Default, PartialEq, Eq)]
struct Shape {
    malformed: bool,
    products: u32,
    comment: bool,
    slash: bool,
}

/// Malformation (control or non-ASCII bytes, unbalanced parentheses, surrounding whitespace),
/// the number of `product/version` tokens outside parentheses, comment and `/` presence, in one
/// pass.
fn shape(bytes: &[u8]) -> Shape {
    let mut s = Shape {
        malformed: bytes.first().is_some_and(u8::is_ascii_whitespace)
            || bytes.last().is_some_and(u8::is_ascii_whitespace),
        ..Shape::default()
    };
    let mut balance: i32 = 0;
    let mut depth = 0u32;
    let mut in_token = false;
    let mut token_has_slash = false;
    for &b in bytes {
        if !(b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
            s.malformed = true;
        }
        match b {
            b'(' => {
                if in_token && token_has_slash {
                    s.products = s.products.saturating_add(1);
                }
                in_token = false;
                depth = depth.saturating_add(1);
                balance = balance.saturating_add(1);
                s.comment = true;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                balance = balance.saturating_sub(1);
                if balance < 0 {
                    s.malformed = true;
                }
            }
            b' ' | b'\t' if depth == 0 => {
                if in_token && token_has_slash {
                    s.products = s.products.saturating_add(1);
                }
                in_token = false;
                token_has_slash = false;
            }
            _ => {
                if b == b'/' {
                    s.slash = true;
                }
                if depth == 0 {
                    if !in_token {
                        in_token = true;
                        token_has_slash = false;
                    }
                    if b == b'/' {
                        token_has_slash = true;
                    }
                }
            }
        }
    }
    if in_token && token_has_slash {
        s.products = s.products.saturating_add(1);
    }
    s.malformed |= balance != 0;
    s
}

/// Case-sensitive substring search: scan for the first byte, then compare the rest. Needles are
/// short tokens, so this beats comparing every window.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, rest)) = needle.split_first() else {
        return Some(0);
    };
    let mut from = 0usize;
    while let Some(offset) = haystack.get(from..)?.iter().position(|&b| b == first) {
        let at = from.saturating_add(offset);
        let tail = at.saturating_add(1);
        if haystack.get(tail..tail.saturating_add(rest.len())) == Some(rest) {
            return Some(at);
        }
        from = tail;
    }
    None
}

/// ASCII case-insensitive substring search; `needle` must already be lowercase.
pub(crate) fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut from = 0usize;
    while let Some(offset) = haystack
        .get(from..)
        .and_then(|h| h.iter().position(|b| b.to_ascii_lowercase() == first))
    {
        let at = from.saturating_add(offset);
        let tail = at.saturating_add(1);
        if haystack
            .get(tail..tail.saturating_add(rest.len()))
            .is_some_and(|w| w.eq_ignore_ascii_case(rest))
        {
            return true;
        }
        from = tail;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chrome_desktop() {
        let ua = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Safari/537.36";
        let info = UaInfo::parse(ua);
        assert_eq!(info.family, Some(BrowserFamily::Chrome));
        assert_eq!(info.major, Some(153));
        assert!(info.chromium);
        assert_eq!(info.os, Some(Os::Windows));
        assert!(!info.mobile);
        assert!(!info.malformed);
        assert!(!info.version_implausible);
        assert!(!info.os_engine_mismatch);
        assert_eq!(info.products, 4);
        assert!(info.comment && info.mozilla && !info.url);
    }

    #[test]
    fn edge_android_ios_firefox_safari() {
        let edge = UaInfo::parse(b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Safari/537.36 Edg/153.0.0.0");
        assert_eq!(edge.family, Some(BrowserFamily::Edge));
        assert_eq!(edge.chrome_major, Some(153));
        assert!(edge.chromium);

        let android = UaInfo::parse(b"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Mobile Safari/537.36");
        assert_eq!(android.os, Some(Os::Android));
        assert!(android.mobile && android.chromium);

        let crios = UaInfo::parse(b"Mozilla/5.0 (iPhone; CPU iPhone OS 26_6_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/143.0.7499.38 Mobile/15E148 Safari/604.1");
        assert_eq!(crios.family, Some(BrowserFamily::Chrome));
        assert_eq!(crios.os, Some(Os::Ios));
        assert!(
            !crios.chromium,
            "Chrome on iOS is WebKit and sends no client hints"
        );
        assert!(!crios.version_implausible);
        assert!(!crios.os_engine_mismatch);

        let firefox = UaInfo::parse(
            b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        );
        assert_eq!(firefox.family, Some(BrowserFamily::Firefox));
        assert_eq!(firefox.major, Some(128));
        assert_eq!(firefox.os, Some(Os::Linux));

        let safari = UaInfo::parse(b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.6 Safari/605.1.15");
        assert_eq!(safari.family, Some(BrowserFamily::Safari));
        assert_eq!(safari.major, Some(26));
        assert_eq!(safari.os, Some(Os::MacOs));
    }

    #[test]
    fn spoofed_versions_and_engines() {
        let fabricated = UaInfo::parse(b"Mozilla/5.0 (Linux; Android 6.0; Nexus 5 Build/MRA58N) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/44.0.8987.1805 Mobile Safari/537.36");
        assert!(fabricated.version_implausible);
        let blink_on_ios = UaInfo::parse(b"Mozilla/5.0 (iPhone; CPU iPhone OS 11_0 like Mac OS X) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/40.0.7022.1296 Mobile Safari/537.36");
        assert!(blink_on_ios.os_engine_mismatch);
        let template = UaInfo::parse(b"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/W.X.Y.Z Mobile Safari/537.36");
        assert!(template.version_implausible);
        assert!(chrome_version_plausible(
            version_after(b"Chrome/120.0.6099.109", b"Chrome/").unwrap()
        ));
        assert!(chrome_version_plausible(
            version_after(b"Chrome/53.0.2785.143", b"Chrome/").unwrap()
        ));
        assert!(!chrome_version_plausible(
            version_after(b"Chrome/120.1.6099.109", b"Chrome/").unwrap()
        ));
    }

    #[test]
    fn libraries_and_crawlers() {
        let curl = UaInfo::parse(b"curl/8.5.0");
        assert_eq!(curl.products, 1);
        assert!(!curl.mozilla && !curl.comment && curl.family.is_none());
        let bot = UaInfo::parse(
            b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        );
        assert!(bot.url && bot.comment);
        assert_eq!(bot.products, 1);
        assert!(UaInfo::parse(b"noorobot").no_version);
    }

    #[test]
    fn malformed() {
        assert!(UaInfo::parse(b"Mozilla/5.0 (Windows").malformed);
        assert!(UaInfo::parse(b" curl/8").malformed);
        assert!(UaInfo::parse(b"a\x01b").malformed);
        assert!(UaInfo::parse("caf\u{e9}/1".as_bytes()).malformed);
        assert!(UaInfo::parse(&[b'a'; MAX_UA_BYTES + 1]).malformed);
        assert!(!UaInfo::parse(b"Wget/1.21").malformed);
    }

    #[test]
    fn case_insensitive_search() {
        assert!(contains_ci(b"My-BOT/1.0", b"bot"));
        assert!(!contains_ci(b"My-BO", b"bot"));
        assert!(contains_ci(b"x", b""));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let info = UaInfo::parse(&bytes);
            prop_assert!(info.bytes.len() <= MAX_UA_BYTES);
            prop_assert_eq!(info.len, bytes.len());
        }

        #[test]
        fn find_matches_reference(hay in proptest::collection::vec(0u8..4, 0..40), needle in proptest::collection::vec(0u8..4, 0..4)) {
            let reference = if needle.is_empty() { Some(0) } else { hay.windows(needle.len()).position(|w| w == needle.as_slice()) };
            prop_assert_eq!(find(&hay, &needle), reference);
        }

        #[test]
        fn contains_ci_matches_lowercased_reference(hay in "[a-zA-Z/ ]{0,40}", needle in "[a-z/]{1,4}") {
            let expected = hay.to_ascii_lowercase().contains(&needle);
            prop_assert_eq!(contains_ci(hay.as_bytes(), needle.as_bytes()), expected);
        }

        #[test]
        fn version_after_roundtrip(a in 0u32..100_000, b in 0u32..100_000, c in 0u32..100_000, d in 0u32..100_000) {
            let s = format!("Chrome/{a}.{b}.{c}.{d} Safari");
            let v = version_after(s.as_bytes(), b"Chrome/").unwrap();
            prop_assert_eq!(v.major, a);
            prop_assert_eq!(v.parts, [Some(b), Some(c), Some(d)]);
        }
    }
}
