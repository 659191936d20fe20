//! Arbitrary request targets and `Host` values through ravelin-http: path normalization (strict
//! and lenient), the match path, path prefixes and the request identity. Never a panic, and the
//! invariants the policies rely on hold for every accepted input: strict normalization is
//! idempotent and agrees with the lenient one, raw non-ASCII and its percent-encoding normalize
//! alike, a prefix matches its own path, and the folded match path does not depend on ASCII
//! case.
#![no_main]

use http::uri::Scheme;
use libfuzzer_sys::fuzz_target;
use ravelin_http::{
    IdentityOptions, MatchPath, PathPrefix, RequestIdentity, canonical_path,
    canonical_path_lenient, match_path,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (target, host) = text.split_once('\n').unwrap_or((&text, "example.com"));

    let lenient = canonical_path_lenient(target);
    assert!(lenient.starts_with('/'));
    // Raw non-ASCII is percent-encoded, so the raw and the encoded spelling are one path.
    assert!(lenient.is_ascii(), "{lenient:?}");
    let encoded: String = target
        .bytes()
        .map(|b| {
            if b.is_ascii() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    assert_eq!(
        canonical_path_lenient(&encoded),
        lenient,
        "{target:?} and {encoded:?} normalize differently"
    );
    assert_eq!(
        canonical_path(&encoded).ok(),
        canonical_path(target).ok(),
        "{target:?} and {encoded:?} normalize differently"
    );
    if let Ok(strict) = canonical_path(target) {
        assert_eq!(
            strict, lenient,
            "strict and lenient disagree on an accepted path"
        );
        assert_eq!(
            canonical_path(&strict).as_ref(),
            Ok(&strict),
            "not idempotent"
        );
        assert!(!strict.contains("//"));
    }
    let matched = match_path(&lenient, true);
    assert!(matched.as_str().starts_with('/'));
    assert!(!matched.as_str().contains("//"), "{matched}");
    assert_eq!(
        match_path(&lenient, false).as_str().to_ascii_lowercase(),
        matched.as_str(),
        "folding is more than ASCII lower-casing"
    );
    // `/LOGIN` cannot walk around a policy for `/login`: the same target in another ASCII case
    // (letters and escapes alike) has the same folded match path.
    let upper = target.to_ascii_uppercase();
    assert_eq!(
        match_path(&canonical_path_lenient(&upper), true),
        matched,
        "{target:?} and {upper:?} match differently"
    );
    if let Ok(prefix) = PathPrefix::new(target) {
        // A prefix always covers the path it was written as.
        let own = match_path(&canonical_path_lenient(target), true);
        assert!(prefix.matches(&own), "{target:?} does not match itself");
    }

    for version in [
        http::Version::HTTP_11,
        http::Version::HTTP_2,
        http::Version::HTTP_10,
    ] {
        let Ok(request) = http::Request::get(target)
            .version(version)
            .header("host", host)
            .body(())
        else {
            continue;
        };
        let (mut parts, ()) = request.into_parts();
        if let Ok(identity) =
            RequestIdentity::from_parts(&parts, Scheme::HTTP, &IdentityOptions::default())
        {
            let rebuilt = identity
                .target(parts.uri.query())
                .expect("an accepted identity always rebuilds a valid target");
            assert_eq!(rebuilt.path(), identity.canonical_path());
            parts.extensions.insert(identity);
            let _ = MatchPath::of(&parts.uri, &parts.extensions);
        }
    }
});
