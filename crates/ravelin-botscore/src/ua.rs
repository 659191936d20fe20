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
        info.malformed = raw.len() > MAX_UA_BYTES || is_malformed(bytes);
        info.mozilla = bytes.starts_with(b"Mozilla/");
        let (products, comment) = product_stats(bytes);
        info.products = products;
        info.comment = comment;
        info.no_version = !bytes.contains(&b'/');
        info.url = contains_ci(bytes, b"http://")
            || contains_ci(bytes, b"https://")
            || contains_ci(bytes, b"www.");

        let ios = find(bytes, b"iPhone").is_some()
            || find(bytes, b"iPad").is_some()
            || find(bytes, b"iPod").is_some();
        info.os = if ios {
            Some(Os::Ios)
        } else if find(bytes, b"Android").is_some() {
            Some(Os::Android)
        } else if find(bytes, b"Windows").is_some() {
            Some(Os::Windows)
        } else if find(bytes, b"CrOS").is_some() {
            Some(Os::ChromeOs)
        } else if find(bytes, b"Macintosh").is_some() || find(bytes, b"Mac OS X").is_some() {
            Some(Os::MacOs)
        } else if find(bytes, b"Linux").is_some() || find(bytes, b"X11").is_some() {
            Some(Os::Linux)
        } else {
            None
        };
        info.mobile = find(bytes, b"Mobile").is_some();
        if ios {
            info.ios_major = version_after(bytes, b"iPhone OS ")
                .or_else(|| version_after(bytes, b"CPU OS "))
                .map(|v| v.major);
        }

        let chrome = version_after(bytes, b"Chrome/");
        let crios = version_after(bytes, b"CriOS/");
        info.chrome_major = chrome.map(|v| v.major);
        let (family, version) = if let Some(v) = version_after(bytes, b"Edg/")
            .or_else(|| version_after(bytes, b"EdgA/"))
            .or_else(|| version_after(bytes, b"EdgiOS/"))
        {
            (Some(BrowserFamily::Edge), Some(v))
        } else if let Some(v) = version_after(bytes, b"OPR/") {
            (Some(BrowserFamily::Opera), Some(v))
        } else if let Some(v) = version_after(bytes, b"SamsungBrowser/") {
            (Some(BrowserFamily::Samsung), Some(v))
        } else if let Some(v) =
            version_after(bytes, b"Firefox/").or_else(|| version_after(bytes, b"FxiOS/"))
        {
            (Some(BrowserFamily::Firefox), Some(v))
        } else if let Some(v) = crios.or(chrome) {
            (Some(BrowserFamily::Chrome), Some(v))
        } else if find(bytes, b"Safari/").is_some() {
            (
                Some(BrowserFamily::Safari),
                version_after(bytes, b"Version/"),
            )
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
            || (chrome.is_none()
                && crios.is_none()
                && (find(bytes, b"Chrome/").is_some() || find(bytes, b"CriOS/").is_some()));
        info.os_engine_mismatch = (ios
            && (chrome.is_some() || find(bytes, b"AppleWebKit/537.36").is_some()))
            || (!ios && (crios.is_some() || find(bytes, b"FxiOS/").is_some()));
        info
    }
}

/// A dotted version: `major.minor.build.patch`, missing parts are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) major: u32,
    pub(crate) parts: [Option<u32>; 3],
}

/// Parses the version that follows `token` (e.g. `Chrome/` → `120.0.6099.109`).
pub(crate) fn version_after(bytes: &[u8], token: &[u8]) -> Option<Version> {
    let start = find(bytes, token)?.checked_add(token.len())?;
    let rest = bytes.get(start..)?;
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

fn is_malformed(bytes: &[u8]) -> bool {
    if bytes.first().is_some_and(u8::is_ascii_whitespace)
        || bytes.last().is_some_and(u8::is_ascii_whitespace)
    {
        return true;
    }
    let mut depth: i32 = 0;
    for &b in bytes {
        if !(b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
            return true;
        }
        match b {
            b'(' => depth = depth.saturating_add(1),
            b')' => {
                depth = depth.saturating_sub(1);
                if depth < 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    depth != 0
}

/// Counts `product/version` tokens outside parentheses and whether there is a comment.
fn product_stats(bytes: &[u8]) -> (u32, bool) {
    let mut depth = 0u32;
    let mut products = 0u32;
    let mut comment = false;
    let mut in_token = false;
    let mut token_has_slash = false;
    for &b in bytes {
        match b {
            b'(' => {
                if in_token && token_has_slash {
                    products = products.saturating_add(1);
                }
                in_token = false;
                depth = depth.saturating_add(1);
                comment = true;
            }
            b')' => depth = depth.saturating_sub(1),
            b' ' | b'\t' if depth == 0 => {
                if in_token && token_has_slash {
                    products = products.saturating_add(1);
                }
                in_token = false;
                token_has_slash = false;
            }
            _ if depth == 0 => {
                if !in_token {
                    in_token = true;
                    token_has_slash = false;
                }
                if b == b'/' {
                    token_has_slash = true;
                }
            }
            _ => {}
        }
    }
    if in_token && token_has_slash {
        products = products.saturating_add(1);
    }
    (products, comment)
}

/// Case-sensitive substring search.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// ASCII case-insensitive substring search; `needle` must already be lowercase.
pub(crate) fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    haystack.windows(needle.len()).any(|w| {
        w.first().is_some_and(|b| b.to_ascii_lowercase() == first) && w.eq_ignore_ascii_case(needle)
    })
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
