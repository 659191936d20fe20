//! A request path with raw UTF-8 (which httparse and `http` accept) and the same path
//! percent-encoded get one request identity: the same canonical path, forwarded and keyed, and
//! the same match path, so a `PathPrefix` written in either spelling covers both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::Request;
use http::uri::Scheme;
use ravelin_http::{IdentityOptions, MatchPath, PathPrefix, RequestIdentity};

const RAW: &str = "/登录";
const ENCODED: &str = "/%E7%99%BB%E5%BD%95";

fn identity(target: &str, fold_case: bool) -> (http::request::Parts, RequestIdentity) {
    let (parts, ()) = Request::get(target)
        .header("host", "a.example")
        .body(())
        .unwrap()
        .into_parts();
    let id =
        RequestIdentity::from_parts(&parts, Scheme::HTTP, &IdentityOptions { fold_case }).unwrap();
    (parts, id)
}

#[test]
fn http_accepts_the_raw_spelling() {
    let uri: http::Uri = "/登录?q=1".parse().unwrap();
    assert_eq!(uri.path().as_bytes(), b"/\xE7\x99\xBB\xE5\xBD\x95");
}

#[test]
fn both_spellings_have_one_identity() {
    for fold_case in [true, false] {
        let (raw_parts, raw) = identity(&format!("{RAW}/x?q=1"), fold_case);
        let (encoded_parts, encoded) = identity(&format!("{ENCODED}/x?q=1"), fold_case);
        assert_eq!(raw.canonical_path(), format!("{ENCODED}/x"));
        assert_eq!(raw, encoded);
        // The rebuilt targets (what is forwarded) are the same, valid RFC 3986, ASCII only.
        let from_raw = raw.target_of(&raw_parts.uri).unwrap();
        let from_encoded = encoded.target_of(&encoded_parts.uri).unwrap();
        assert_eq!(from_raw, from_encoded);
        assert_eq!(
            from_raw.to_string(),
            format!("http://a.example{ENCODED}/x?q=1")
        );
        assert_eq!(from_raw.path(), raw.canonical_path());
    }
}

#[test]
fn a_prefix_in_either_spelling_covers_both_requests() {
    for configured in [RAW, ENCODED] {
        let prefix = PathPrefix::new(configured).unwrap();
        for target in [
            RAW,
            ENCODED,
            "/登录/a",
            "/%e7%99%bb%e5%bd%95/a",
            "//./登录;x=1",
        ] {
            for fold_case in [true, false] {
                let (mut parts, id) = identity(target, fold_case);
                assert!(prefix.matches(id.match_path()), "{configured} vs {target}");
                // Without an ingress stage (no identity): the lenient normalization agrees.
                assert!(prefix.matches(&MatchPath::of(&parts.uri, &parts.extensions)));
                parts.extensions.insert(id);
                assert!(prefix.matches(&MatchPath::of(&parts.uri, &parts.extensions)));
            }
        }
        let (_, other) = identity("/登", true);
        assert!(!prefix.matches(other.match_path()));
    }
}
