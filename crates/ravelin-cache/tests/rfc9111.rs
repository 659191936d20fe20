//! One test per rule of RFC 9111 (and the RFCs it leans on), named after its section.
//! The scenarios follow the public HTTP cache test suite (cache-tests.fyi) where it has one.
// Test code: helpers outside #[test] functions may panic too (a panic is a failed test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, Origin, Reply};
use http::Request;
use ravelin_cache::SetCookie;

// === §3 Storing responses ===

#[tokio::test]
async fn s3_no_store_response_is_not_stored() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=10000, no-store")],
        "x",
    )));
    h.get("/a").await;
    let second = h.get("/a").await;
    assert!(!second.hit());
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn s3_no_store_is_case_insensitive() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "No-StOrE")],
        "x",
    )));
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn s3_private_is_not_stored_by_a_shared_cache() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "private, max-age=3600")],
        "x",
    )));
    let first = h.get("/a").await;
    assert!(
        first.cache_status().contains("detail=private"),
        "{}",
        first.cache_status()
    );
    h.get("/a").await;
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn s3_status_codes_with_explicit_freshness_are_stored() {
    for status in [
        200u16, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 504, 599,
    ] {
        let h = Harness::new(Origin::fixed(Reply::status(
            status,
            &[("cache-control", "max-age=100000")],
            "",
        )));
        let first = h.get("/a").await;
        assert_eq!(first.status.as_u16(), status);
        let second = h.get("/a").await;
        assert!(second.hit(), "{status}: {}", second.cache_status());
        assert_eq!(second.status.as_u16(), status);
        assert_eq!(h.origin.calls(), 1, "{status}");
    }
}

#[tokio::test]
async fn s3_status_codes_not_heuristically_cacheable_are_not_stored_without_freshness() {
    for status in [201u16, 202, 403, 502, 503, 504, 599] {
        let h = Harness::new(Origin::new(move |_| {
            Reply::status(status, &[], "")
                .with("last-modified", common::http_date(common::epoch(), -86_400))
        }));
        h.get("/a").await;
        h.get("/a").await;
        assert_eq!(h.origin.calls(), 2, "{status}");
    }
}

#[tokio::test]
async fn s3_1_connection_specific_fields_are_not_stored() {
    // RFC 9111 §7.3 lets Set-Cookie be stored and replayed: ask for it explicitly (the edge
    // default, SetCookie::Explicit, is tested in tests/behaviour.rs and tests/hyper_stack.rs).
    let h = Harness::with(
        Origin::fixed(Reply::ok(
            &[
                ("cache-control", "max-age=3600"),
                ("connection", "a, b"),
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("set-cookie", "a=b"),
                ("www-authenticate", "Basic"),
            ],
            "x",
        )),
        |b| b.set_cookie(SetCookie::Replay),
    );
    h.get("/a").await;
    let hit = h.get("/a").await;
    assert!(hit.hit());
    assert_eq!(hit.header("c"), Some("3"));
    assert_eq!(hit.header("a"), None);
    assert_eq!(hit.header("b"), None);
    assert_eq!(hit.header("connection"), None);
    assert_eq!(
        hit.header("set-cookie"),
        Some("a=b"),
        "RFC 9111 §7.3: Set-Cookie does not inhibit caching"
    );
    assert_eq!(hit.header("www-authenticate"), Some("Basic"));
}

#[tokio::test]
async fn s3_5_authorization_needs_explicit_permission() {
    let h = Harness::new(Origin::new(|_| {
        Reply::ok(&[], "x").with("expires", common::http_date(common::epoch(), 30 * 86_400))
    }));
    let auth = [("authorization", "FOO")];
    h.get_with("/a", &auth).await;
    assert_eq!(h.origin.last().headers["authorization"], "FOO");
    h.get("/a").await;
    assert_eq!(h.origin.calls(), 2);

    for cc in [
        "max-age=3600, public",
        "max-age=3600, must-revalidate",
        "s-maxage=3600",
    ] {
        let h = Harness::new(Origin::fixed(Reply::ok(&[("cache-control", cc)], "x")));
        h.get_with("/a", &auth).await;
        assert!(h.get("/a").await.hit(), "{cc}");
    }
}

#[tokio::test]
async fn s3_1_private_qualified_fields_are_not_stored() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "max-age=60, private=\"x-user\""),
            ("x-user", "alice"),
            ("x-other", "1"),
        ],
        "x",
    )));
    let first = h.get("/a").await;
    assert_eq!(
        first.header("x-user"),
        Some("alice"),
        "the first client gets its own field"
    );
    let hit = h.get("/a").await;
    assert!(hit.hit());
    assert_eq!(hit.header("x-user"), None);
    assert_eq!(hit.header("x-other"), Some("1"));
}

#[tokio::test]
async fn s5_2_2_3_must_understand_overrides_no_store() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "must-understand, no-store, max-age=60")],
        "x",
    )));
    h.get("/a").await;
    assert!(h.get("/a").await.hit());
}

// === §4 Constructing responses from caches ===

#[tokio::test]
async fn s4_different_query_arguments_are_different_keys() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=100000")],
        "x",
    )));
    h.get("/a?test=1").await;
    assert!(!h.get("/a?test=2").await.hit());
    assert!(h.get("/a?test=1").await.hit());
}

#[tokio::test]
async fn s4_cookie_in_the_request_does_not_prevent_reuse() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=3600")],
        "x",
    )));
    h.get("/a").await;
    assert!(h.get_with("/a", &[("cookie", "a=b")]).await.hit());
}

#[tokio::test]
async fn s4_head_is_answered_from_a_stored_get() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=3600")],
        "hello",
    )));
    h.get("/a").await;
    let head = h.request("HEAD", "/a", &[]).await;
    assert!(head.hit());
    assert_eq!(head.body.len(), 0);
    assert_eq!(head.header("content-length"), Some("5"));
    assert_eq!(h.origin.calls(), 1);
}

#[tokio::test]
async fn s4_a_head_miss_is_forwarded_as_head_and_not_stored() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=3600")],
        "",
    )));
    h.request("HEAD", "/a", &[]).await;
    assert_eq!(h.origin.last().method, http::Method::HEAD);
    let get = h.get("/a").await;
    assert!(!get.hit());
    assert_eq!(h.origin.calls(), 2);
}

/// RFC 9110 §9.3.1: content in a GET has no generally defined semantics, and the key does not
/// include it — yet origins that read parameters from it answer for them. A GET with content is
/// neither stored nor answered from the cache (a "fat GET" would otherwise poison the URL).
#[tokio::test]
async fn s4_a_get_with_content_goes_around_the_cache() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=10000")],
        "x",
    )));
    let fat = || {
        Request::get("http://example.com/a")
            .header("content-length", "5")
            .body("q=bad".to_string())
            .unwrap()
    };
    let first = h.send(fat()).await.unwrap();
    assert_eq!(
        first.cache_status(),
        "ravelin; fwd=bypass; detail=request-content"
    );
    assert!(
        !h.get("/a").await.hit(),
        "the answer to the content was not stored"
    );
    assert!(h.get("/a").await.hit());
    assert!(
        !h.send(fat()).await.unwrap().hit(),
        "nor is the stored one served to it"
    );
    let chunked = Request::get("http://example.com/a")
        .header("transfer-encoding", "chunked")
        .body("q=bad".to_string())
        .unwrap();
    assert!(!h.send(chunked).await.unwrap().hit());
    let empty = Request::get("http://example.com/a")
        .header("content-length", "0")
        .body(String::new())
        .unwrap();
    assert!(
        h.send(empty).await.unwrap().hit(),
        "Content-Length: 0 is no content"
    );
    assert_eq!(h.origin.calls(), 4);
}

// === §4.1 Vary ===

fn vary_origin() -> Origin {
    Origin::new(|seen| {
        let value = seen
            .headers
            .get("foo")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Reply::ok(&[("cache-control", "max-age=5000"), ("vary", "Foo")], "").with("x-foo", value)
    })
}

#[tokio::test]
async fn s4_1_vary_matching_request_is_served() {
    let h = Harness::new(vary_origin());
    h.get_with("/a", &[("foo", "1")]).await;
    assert!(h.get_with("/a", &[("foo", "1")]).await.hit());
}

#[tokio::test]
async fn s4_1_vary_mismatch_is_a_vary_miss() {
    let h = Harness::new(vary_origin());
    h.get_with("/a", &[("foo", "1")]).await;
    let other = h.get_with("/a", &[("foo", "2")]).await;
    assert!(!other.hit());
    assert!(
        other.cache_status().contains("fwd=vary-miss"),
        "{}",
        other.cache_status()
    );
    let omitted = h.get("/a").await;
    assert!(!omitted.hit());
}

#[tokio::test]
async fn s4_1_variants_coexist() {
    let h = Harness::new(vary_origin());
    h.get_with("/a", &[("foo", "1")]).await;
    h.get_with("/a", &[("foo", "2")]).await;
    let one = h.get_with("/a", &[("foo", "1")]).await;
    let two = h.get_with("/a", &[("foo", "2")]).await;
    assert!(one.hit() && two.hit());
    assert_eq!(one.header("x-foo"), Some("1"));
    assert_eq!(two.header("x-foo"), Some("2"));
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn s4_1_headers_not_listed_in_vary_are_not_in_the_key() {
    let h = Harness::new(vary_origin());
    h.get_with("/a", &[("foo", "1"), ("other", "2")]).await;
    assert!(
        h.get_with("/a", &[("foo", "1"), ("other", "3")])
            .await
            .hit()
    );
}

#[tokio::test]
async fn s4_1_selecting_fields_are_normalised() {
    let h = Harness::new(vary_origin());
    h.get_with("/a", &[("foo", "1,2")]).await;
    assert!(h.get_with("/a", &[("foo", " 1, 2 ")]).await.hit());
    let mut req = Request::get("http://example.com/a")
        .body(String::new())
        .unwrap();
    req.headers_mut().append("foo", "1".parse().unwrap());
    req.headers_mut().append("foo", "2".parse().unwrap());
    assert!(h.send(req).await.unwrap().hit());
}

#[tokio::test]
async fn s4_1_three_way_vary_with_an_omitted_field() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=5000"), ("vary", "Foo, Bar, Baz")],
        "",
    )));
    h.get_with("/a", &[("foo", "1"), ("baz", "789")]).await;
    assert!(
        h.get_with("/a", &[("foo", "1"), ("baz", "789")])
            .await
            .hit()
    );
    assert!(
        !h.get_with("/a", &[("foo", "1"), ("bar", "abc"), ("baz", "789")])
            .await
            .hit()
    );
}

#[tokio::test]
async fn s4_1_vary_star_is_never_served() {
    for vary in ["*", "*, *", ", *", "*, Foo", "Foo, *"] {
        let h = Harness::new(Origin::fixed(Reply::ok(
            &[("cache-control", "max-age=5000"), ("vary", vary)],
            "",
        )));
        h.get_with("/a", &[("foo", "1")]).await;
        assert!(!h.get_with("/a", &[("foo", "1")]).await.hit(), "{vary}");
    }
}

// === §4.2 Freshness ===

#[tokio::test]
async fn s4_2_1_max_age_makes_a_response_fresh() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=3600")],
        "x",
    )));
    h.get("/a").await;
    h.advance(3599);
    assert!(h.get("/a").await.hit());
    h.advance(2);
    assert!(!h.get("/a").await.hit());
}

#[tokio::test]
async fn s4_2_1_parsing_odd_max_age_values() {
    for (cc, cached) in [
        ("max-age=\"3600\"", true),
        ("max-age='3600'", false),
        ("extension=\"max-age=100\", max-age=1", false),
        ("max-age=1, extension=\"max-age=100\"", false),
        ("max-age =100", false),
        ("max-age= 100", false),
        ("max-age=0", false),
        ("max-age=a100", false),
        ("max-age=100a", false),
        ("max-age=-100", false),
        ("max-age=2147483648", true),
        ("max-age=99999999999", true),
        ("max-age=003600", true),
        ("foobar, max-age=3600", true),
        ("MaX-aGe=3600", true),
    ] {
        let h = Harness::new(Origin::fixed(Reply::ok(&[("cache-control", cc)], "x")));
        h.get("/a").await;
        h.advance(5);
        assert_eq!(h.get("/a").await.hit(), cached, "{cc}");
    }
}

#[tokio::test]
async fn s4_2_1_s_maxage_takes_precedence_in_a_shared_cache() {
    for (cc, cached) in [
        ("s-maxage=3600", true),
        ("max-age=3600, s-maxage=1", false),
        ("s-maxage=1, max-age=3600", false),
        ("max-age=1, s-maxage=3600", true),
    ] {
        let h = Harness::new(Origin::fixed(Reply::ok(&[("cache-control", cc)], "x")));
        h.get("/a").await;
        h.advance(3);
        assert_eq!(h.get("/a").await.hit(), cached, "{cc}");
    }
}

#[tokio::test]
async fn s4_2_1_expires_minus_date() {
    let now = common::epoch();
    for (expires, date, cached) in [
        (
            common::http_date(now, 30 * 86_400),
            common::http_date(now, 0),
            true,
        ),
        (
            common::http_date(now, -30 * 86_400),
            common::http_date(now, 0),
            false,
        ),
        (common::http_date(now, 0), common::http_date(now, 0), false),
        (
            common::http_date(now, 300),
            common::http_date(now, 400),
            false,
        ),
        ("0".to_string(), common::http_date(now, 0), false),
        (
            "Thu, 18 Aug 2050 02:01:18 UTC".to_string(),
            common::http_date(now, 0),
            false,
        ),
        (
            "Thu, 18 Aug 50 02:01:18 GMT".to_string(),
            common::http_date(now, 0),
            false,
        ),
        (
            "Thu, 18-Aug-2050 02:01:18 GMT".to_string(),
            common::http_date(now, 0),
            false,
        ),
        (
            "THU, 18 Aug 2050 02:01:18 GMT".to_string(),
            common::http_date(now, 0),
            true,
        ),
        (common::http_date(now, 10), "foo".to_string(), true),
    ] {
        let label = format!("Expires {expires:?} Date {date:?}");
        let h = Harness::new(Origin::new(move |_| {
            Reply::ok(&[], "x")
                .with("expires", expires.clone())
                .with("date", date.clone())
        }));
        h.get("/a").await;
        h.advance(1);
        assert_eq!(h.get("/a").await.hit(), cached, "{label}");
    }
}

#[tokio::test]
async fn s4_2_1_max_age_beats_expires() {
    let now = common::epoch();
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(&[("cache-control", "max-age=3600")], "x")
            .with("expires", common::http_date(now, -10_000))
            .with("date", common::http_date(now, 0))
    }));
    h.get("/a").await;
    h.advance(5);
    assert!(h.get("/a").await.hit());
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(&[("cache-control", "max-age=0")], "x")
            .with("expires", common::http_date(now, 10_000))
            .with("date", common::http_date(now, 0))
    }));
    h.get("/a").await;
    assert!(!h.get("/a").await.hit());
}

#[tokio::test]
async fn s4_2_2_heuristic_freshness_from_last_modified() {
    let now = common::epoch();
    for (status, cached) in [
        (200u16, true),
        (203, true),
        (204, true),
        (404, true),
        (405, true),
        (410, true),
        (414, true),
        (501, true),
        (201, false),
        (403, false),
        (502, false),
    ] {
        let h = Harness::new(Origin::new(move |_| {
            Reply::status(status, &[], "")
                .with("last-modified", common::http_date(now, -86_400))
                .with("date", common::http_date(now, 0))
        }));
        h.get("/a").await;
        h.advance(60);
        assert_eq!(h.get("/a").await.hit(), cached, "{status}");
    }
    // 10% of a day is 8640 s.
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(&[], "x")
            .with("last-modified", common::http_date(now, -86_400))
            .with("date", common::http_date(now, 0))
    }));
    h.get("/a").await;
    h.advance(8_639);
    assert!(h.get("/a").await.hit());
    h.advance(2);
    assert!(!h.get("/a").await.hit());
}

#[tokio::test]
async fn s4_2_2_no_freshness_and_no_validator_is_not_reused() {
    let h = Harness::new(Origin::fixed(Reply::ok(&[], "x")));
    h.get("/a").await;
    assert!(!h.get("/a").await.hit());
}

#[tokio::test]
async fn s4_2_3_received_age_counts_against_freshness() {
    let now = common::epoch();
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(&[("cache-control", "max-age=10"), ("age", "15")], "x")
            .with("date", common::http_date(now, 0))
    }));
    h.get("/a").await;
    assert!(!h.get("/a").await.hit());
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(&[("age", "25")], "x")
            .with("date", common::http_date(now, -10))
            .with("expires", common::http_date(now, 10))
    }));
    h.get("/a").await;
    assert!(!h.get("/a").await.hit());
}

/// An origin answering `max-age=<max_age>`, dated now, with these `Age` field lines.
fn aged_origin(max_age: u32, ages: &[&str]) -> Origin {
    let now = common::epoch();
    let ages: Vec<String> = ages.iter().map(|a| a.to_string()).collect();
    Origin::new(move |_| {
        let mut reply = Reply::ok(&[], "x")
            .with("cache-control", format!("max-age={max_age}"))
            .with("date", common::http_date(now, 0));
        for age in &ages {
            reply = reply.with("age", age.clone());
        }
        reply
    })
}

#[tokio::test]
async fn s5_1_an_invalid_age_is_ignored_and_the_response_reused() {
    // cache-tests.fyi age-parse-nonnumeric, -negative, -float: stored and reused as if no `Age`
    // had been sent.
    for age in ["abc", "-7200", "7200.0", "+7200", ""] {
        let h = Harness::new(aged_origin(3600, &[age]));
        h.get("/a").await;
        let second = h.get("/a").await;
        assert!(second.hit(), "Age: {age:?}: {}", second.cache_status());
        assert_eq!(second.header("age"), Some("0"), "Age: {age:?}");
        assert_eq!(h.origin.calls(), 1, "Age: {age:?}");
    }
}

#[tokio::test]
async fn s5_1_a_list_or_repeated_age_uses_the_first_value() {
    // cache-tests.fyi age-parse-suffix, -prefix, -suffix-twoline, -prefix-twoline, -dup-0,
    // -dup-0-twoline, -dup-old, and the parameter checks.
    for (ages, max_age, fresh) in [
        (&["7200, 0"][..], 3600, false),
        (&["0, 7200"], 3600, true),
        (&["7200", "0"], 3600, false),
        (&["0", "7200"], 3600, true),
        (&["0, 0"], 3600, true),
        (&["0", "0"], 3600, true),
        (&["3600", "3600"], 10000, true),
        (&["7200;foo=bar"], 3600, false),
        (&["7200;foo=111"], 3600, false),
    ] {
        let h = Harness::new(aged_origin(max_age, ages));
        h.get("/a").await;
        let second = h.get("/a").await;
        assert_eq!(
            second.hit(),
            fresh,
            "Age: {ages:?}: {}",
            second.cache_status()
        );
        assert_eq!(h.origin.calls(), if fresh { 1 } else { 2 }, "Age: {ages:?}");
    }
}

#[tokio::test]
async fn s1_2_2_an_age_past_2_31_seconds_is_stale() {
    // cache-tests.fyi age-parse-large-minus-one, -large, -larger.
    for age in [
        "2147483647",
        "2147483648",
        "2147483649",
        "99999999999999999999",
    ] {
        let h = Harness::new(aged_origin(3600, &[age]));
        h.get("/a").await;
        assert!(!h.get("/a").await.hit(), "Age: {age}");
        assert_eq!(h.origin.calls(), 2, "Age: {age}");
    }
}

#[tokio::test]
async fn s4_2_3_age_is_generated_and_grows() {
    let now = common::epoch();
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(&[("cache-control", "max-age=600"), ("age", "30")], "x")
            .with("date", common::http_date(now, 0))
    }));
    h.get("/a").await;
    h.advance(3);
    let hit = h.get("/a").await;
    assert_eq!(hit.header("age"), Some("33"));
    assert_eq!(
        hit.header("date"),
        Some(common::http_date(now, 0).as_str()),
        "Date is not updated"
    );
}

// === §4.2.4 Serving stale ===

#[tokio::test]
async fn s4_2_4_stale_is_not_served_when_the_origin_fails_without_permission() {
    for cc in [
        "max-age=2, must-revalidate",
        "max-age=2, proxy-revalidate",
        "max-age=2, no-cache",
        "max-age=2, s-maxage=2",
    ] {
        let h = Harness::new(Origin::fixed(Reply::ok(&[("cache-control", cc)], "x")));
        h.get("/a").await;
        h.advance(10);
        h.origin.set(|_| Reply::error());
        let r = h.svc.clone();
        let resp = tower::ServiceExt::oneshot(
            r,
            Request::get("http://example.com/a")
                .body(String::new())
                .unwrap(),
        )
        .await;
        assert!(resp.is_err(), "{cc}: the origin's error passes through");
    }
}

// === §4.3 Validation ===

#[tokio::test]
async fn s4_3_1_stale_response_is_validated_with_its_etag() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=2"), ("etag", "\"abcdef\"")],
        "body",
    )));
    h.get("/a").await;
    h.advance(5);
    h.origin.set(|seen| {
        assert_eq!(seen.headers["if-none-match"], "\"abcdef\"");
        Reply::status(
            304,
            &[("cache-control", "max-age=3600"), ("etag", "\"abcdef\"")],
            "",
        )
    });
    let validated = h.get("/a").await;
    assert_eq!(validated.status, 200);
    assert_eq!(validated.text(), "body");
    assert!(
        validated
            .cache_status()
            .contains("fwd=stale; fwd-status=304"),
        "{}",
        validated.cache_status()
    );
    assert!(
        h.get("/a").await.hit(),
        "the 304 freshened the stored response"
    );
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn s4_3_1_weak_and_unquoted_etags_are_sent_back() {
    for (etag, sent) in [("W/\"abcdef\"", "W/\"abcdef\""), ("abcdef", "\"abcdef\"")] {
        let h = Harness::new(Origin::new(move |_| {
            Reply::ok(&[("cache-control", "max-age=2")], "x").with("etag", etag)
        }));
        h.get("/a").await;
        h.advance(5);
        h.get("/a").await;
        assert_eq!(h.origin.last().headers["if-none-match"], sent);
    }
}

#[tokio::test]
async fn s4_3_1_validation_with_last_modified() {
    let now = common::epoch();
    let lm = common::http_date(now, -3000);
    let lm2 = lm.clone();
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(&[("cache-control", "max-age=2")], "x").with("last-modified", lm2.clone())
    }));
    h.get("/a").await;
    h.advance(5);
    h.get("/a").await;
    assert_eq!(h.origin.last().headers["if-modified-since"], lm.as_str());
}

#[tokio::test]
async fn s4_3_1_validation_sends_the_selecting_fields() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "max-age=1"),
            ("etag", "\"abcdef\""),
            ("vary", "Abc"),
        ],
        "",
    )));
    h.get_with("/a", &[("abc", "123")]).await;
    h.advance(5);
    h.get_with("/a", &[("abc", "123")]).await;
    let seen = h.origin.last();
    assert_eq!(seen.headers["abc"], "123");
    assert_eq!(seen.headers["if-none-match"], "\"abcdef\"");
}

#[tokio::test]
async fn s4_3_2_conditional_requests_are_answered_from_fresh_responses() {
    let now = common::epoch();
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(
            &[("cache-control", "max-age=100000"), ("etag", "\"abcdef\"")],
            "x",
        )
        .with("last-modified", common::http_date(now, -3000))
        .with("date", common::http_date(now, 0))
    }));
    h.get("/a").await;
    for inm in [
        "\"abcdef\"",
        "\"abcdef\", \"1234\", \"5678\"",
        "\"1234\", \"abcdef\"",
        "W/\"abcdef\"",
        "*",
    ] {
        let r = h.get_with("/a", &[("if-none-match", inm)]).await;
        assert_eq!(r.status, 304, "{inm}");
        assert_eq!(
            r.header("etag"),
            Some("\"abcdef\""),
            "RFC 9110 §15.4.5: a 304 carries the ETag"
        );
        assert!(r.body.is_empty());
    }
    let r = h.get_with("/a", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, 200);
    let ims = common::http_date(now, -2000);
    let r = h.get_with("/a", &[("if-modified-since", &ims)]).await;
    assert_eq!(r.status, 304);
    // If-None-Match takes precedence over If-Modified-Since (RFC 9110 §13.1.3).
    let r = h
        .get_with(
            "/a",
            &[("if-none-match", "\"other\""), ("if-modified-since", &ims)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.origin.calls(), 1);
}

#[tokio::test]
async fn s4_3_2_if_modified_since_uses_date_without_last_modified() {
    let now = common::epoch();
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(&[("cache-control", "max-age=10000")], "x")
            .with("date", common::http_date(now, 0))
    }));
    h.get("/a").await;
    // Date is the last-modification time: an earlier If-Modified-Since gets the response...
    let r = h
        .get_with(
            "/a",
            &[("if-modified-since", &common::http_date(now, -3000))],
        )
        .await;
    assert_eq!(r.status, 200);
    // ...an equal or later one a 304, in any of the three date formats.
    let r = h
        .get_with("/a", &[("if-modified-since", &common::http_date(now, 0))])
        .await;
    assert_eq!(r.status, 304);
    let rfc850 = "Tuesday, 14-Nov-23 22:13:20 GMT";
    assert_eq!(common::http_date(now, 0), "Tue, 14 Nov 2023 22:13:20 GMT");
    let r = h.get_with("/a", &[("if-modified-since", rfc850)]).await;
    assert_eq!(r.status, 304);
}

#[tokio::test]
async fn s4_3_2_stale_conditional_request_is_validated_then_answered_304() {
    let now = common::epoch();
    let lm = common::http_date(now, -3000);
    let lm_for_origin = lm.clone();
    let h = Harness::new(Origin::new(move |seen| {
        if seen.headers.contains_key("if-modified-since") {
            Reply::status(304, &[("cache-control", "max-age=2")], "")
                .with("last-modified", lm_for_origin.clone())
        } else {
            Reply::ok(&[("cache-control", "max-age=2")], "x")
                .with("last-modified", lm_for_origin.clone())
        }
    }));
    h.get("/a").await;
    h.advance(5);
    let r = h.get_with("/a", &[("if-modified-since", &lm)]).await;
    assert_eq!(r.status, 304);
    assert_eq!(h.origin.calls(), 2);
}

/// An origin that answers `If-None-Match: "v1"` with a 304 and anything else with the stored
/// representation (tagged `"v1"`, fresh for an hour), after `delay_ms`.
fn v1_origin(delay_ms: u64) -> Origin {
    Origin::new(move |seen| {
        let d = std::time::Duration::from_millis(delay_ms);
        if seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            Reply::status(
                304,
                &[("cache-control", "max-age=3600"), ("etag", "\"v1\"")],
                "",
            )
            .delayed(d)
        } else {
            Reply::ok(
                &[("cache-control", "max-age=3600"), ("etag", "\"v1\"")],
                "body",
            )
            .delayed(d)
        }
    })
}

#[tokio::test]
async fn rfc9111_4_3_2_a_miss_forwards_the_clients_conditionals_and_passes_a_304() {
    let h = Harness::new(v1_origin(0));
    let ims = h.date(-60);
    let r = h
        .get_with(
            "/a",
            &[("if-none-match", "\"v1\""), ("if-modified-since", &ims)],
        )
        .await;
    // RFC 9110 §13.2.1: with no stored response, the client's conditionals go upstream as sent.
    let seen = h.origin.last();
    assert_eq!(seen.headers["if-none-match"], "\"v1\"");
    assert_eq!(seen.headers["if-modified-since"], ims.as_str());
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let cs = r.cache_status();
    assert!(cs.starts_with("ravelin; fwd=uri-miss"), "{cs}");
    assert!(cs.contains("detail=conditional-miss"), "{cs}");
    assert!(!cs.contains("stored"), "{cs}");
    // The 304 is not a complete response: nothing was stored, the next request goes forward.
    let next = h.get("/a").await;
    assert!(!next.hit(), "{}", next.cache_status());
    assert_eq!((next.status.as_u16(), next.text()), (200, "body"));
    assert!(!h.origin.last().headers.contains_key("if-none-match"));
    assert!(h.get("/a").await.hit());
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn rfc9111_4_3_2_a_miss_forwards_if_modified_since_alone() {
    let lm = common::http_date(common::epoch(), -3000);
    let lm_for_origin = lm.clone();
    let h = Harness::new(Origin::new(move |seen| {
        if seen.headers.contains_key("if-modified-since") {
            Reply::status(304, &[("cache-control", "max-age=3600")], "")
                .with("last-modified", lm_for_origin.clone())
        } else {
            Reply::ok(&[("cache-control", "max-age=3600")], "x")
                .with("last-modified", lm_for_origin.clone())
        }
    }));
    let r = h.get_with("/a", &[("if-modified-since", &lm)]).await;
    assert_eq!(r.status, 304);
    assert_eq!(h.origin.last().headers["if-modified-since"], lm.as_str());
    assert!(!h.get("/a").await.hit());
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn rfc9111_4_3_2_a_200_to_a_conditional_miss_is_stored_and_the_next_request_hits() {
    let h = Harness::new(v1_origin(0));
    let r = h.get_with("/a", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(h.origin.last().headers["if-none-match"], "\"v0\"");
    assert_eq!((r.status.as_u16(), r.text()), (200, "body"));
    let next = h.get("/a").await;
    assert!(next.hit(), "{}", next.cache_status());
    assert_eq!(next.text(), "body");
    // And a conditional request is now answered from the stored response.
    let cond = h.get_with("/a", &[("if-none-match", "\"v1\"")]).await;
    assert!(cond.hit(), "{}", cond.cache_status());
    assert_eq!(cond.status, 304);
    assert_eq!(h.origin.calls(), 1);
}

#[tokio::test]
async fn rfc9111_4_3_2_a_stale_stored_response_still_replaces_the_clients_conditionals() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=2"), ("etag", "\"v1\"")],
        "body",
    )));
    h.get("/a").await;
    h.advance(5);
    let ims = h.date(-60);
    let r = h
        .get_with(
            "/a",
            &[("if-none-match", "\"other\""), ("if-modified-since", &ims)],
        )
        .await;
    let seen = h.origin.last();
    assert_eq!(seen.headers["if-none-match"], "\"v1\"");
    assert!(!seen.headers.contains_key("if-modified-since"));
    assert_eq!((r.status.as_u16(), r.text()), (200, "body"));
}

#[tokio::test]
async fn rfc9111_4_3_2_a_vary_miss_forwards_the_clients_conditionals() {
    let h = Harness::new(Origin::new(|seen| {
        if seen.headers.contains_key("if-none-match") {
            Reply::status(304, &[("vary", "accept-language"), ("etag", "\"de\"")], "")
        } else {
            Reply::ok(
                &[
                    ("cache-control", "max-age=3600"),
                    ("vary", "accept-language"),
                    ("etag", "\"en\""),
                ],
                "en",
            )
        }
    }));
    h.get_with("/a", &[("accept-language", "en")]).await;
    let r = h
        .get_with(
            "/a",
            &[("accept-language", "de"), ("if-none-match", "\"de\"")],
        )
        .await;
    assert_eq!(h.origin.last().headers["if-none-match"], "\"de\"");
    assert_eq!(r.status, 304);
    assert!(
        r.cache_status().contains("fwd=vary-miss"),
        "{}",
        r.cache_status()
    );
    let en = h.get_with("/a", &[("accept-language", "en")]).await;
    assert!(en.hit(), "the stored variant is untouched");
}

#[tokio::test(start_paused = true)]
async fn rfc9111_4_3_2_concurrent_conditional_and_unconditional_misses() {
    // The unconditional misses share one fill; the conditional one does not lead or follow it:
    // it goes alone with its validators and gets the origin's 304.
    let h = Harness::new(v1_origin(100));
    let (a, b, c) = tokio::join!(
        h.get("/a"),
        h.get_with("/a", &[("if-none-match", "\"v1\"")]),
        h.get("/a"),
    );
    assert_eq!((a.status.as_u16(), a.text()), (200, "body"));
    assert_eq!(b.status, 304);
    assert!(
        b.cache_status().contains("detail=conditional-miss"),
        "{}",
        b.cache_status()
    );
    assert!(
        !b.cache_status().contains("collapsed"),
        "{}",
        b.cache_status()
    );
    assert_eq!((c.status.as_u16(), c.text()), (200, "body"));
    assert!(
        c.cache_status().contains("collapsed"),
        "{}",
        c.cache_status()
    );
    assert_eq!(h.origin.calls(), 2);
    assert!(h.get("/a").await.hit());
}

#[tokio::test(start_paused = true)]
async fn rfc9111_4_3_2_a_conditional_miss_first_does_not_hold_back_unconditional_ones() {
    // Were the conditional miss a fill leader, its 304 would leave the others without a body.
    let h = Harness::new(v1_origin(100));
    let start = tokio::time::Instant::now();
    let (a, b, c) = tokio::join!(
        h.get_with("/a", &[("if-none-match", "\"v1\"")]),
        h.get("/a"),
        h.get_with("/a", &[("if-none-match", "\"v1\"")]),
    );
    assert_eq!(a.status, 304);
    assert_eq!((b.status.as_u16(), b.text()), (200, "body"));
    assert_eq!(c.status, 304);
    for r in [&a, &b, &c] {
        assert!(
            !r.cache_status().contains("collapsed"),
            "{}",
            r.cache_status()
        );
    }
    assert_eq!(h.origin.calls(), 3);
    assert!(
        start.elapsed() < std::time::Duration::from_millis(200),
        "nobody waited on another's fetch"
    );
    assert!(h.get("/a").await.hit());
}

#[tokio::test]
async fn s4_3_4_a_304_updates_stored_and_returned_fields() {
    for (name, a, b) in [
        ("test-header", "A", "B"),
        ("x-test-header", "A", "B"),
        ("content-foo", "A", "B"),
        ("content-type", "text/plain", "text/plain;charset=utf-8"),
        ("content-location", "/foo", "/bar"),
        // Only Content-Length is kept (§3.2): the content-describing fields follow the 304.
        ("content-encoding", "A", "B"),
        (
            "content-md5",
            "rL0Y20zC+Fzt72VPzMSk2A==",
            "N7UdGUp1E+RbVvZSTy1R8g==",
        ),
        ("content-range", "A", "B"),
        (
            "content-security-policy",
            "default-src 'self'",
            "default-src 'self' cdn.example.com",
        ),
        ("clear-site-data", "cache", "cookies"),
        (
            "expires",
            "Fri, 01 Jan 2038 01:01:01 GMT",
            "Mon, 11 Jan 2038 11:11:11 GMT",
        ),
        ("public-key-pins", "A", "B"),
        ("set-cookie2", "a=b", "a=c"),
        ("x-xss-protection", "1", "1; mode=block"),
        ("x-frame-options", "deny", "sameorigin"),
        ("set-cookie", "a=b", "a=c"),
        ("cache-control", "max-age=1", "max-age=3600"),
    ] {
        // The RFC's behaviour for Set-Cookie (stored, updated, replayed) is asked for explicitly.
        let h = Harness::with(
            Origin::new(move |_| {
                let cc = if name == "cache-control" {
                    a
                } else {
                    "max-age=1"
                };
                Reply::ok(&[("etag", "\"e1\"")], "x")
                    .with("cache-control", cc)
                    .with(name, a)
            }),
            |b| b.set_cookie(SetCookie::Replay),
        );
        h.get("/a").await;
        h.advance(5);
        h.origin.set(move |_| {
            let cc = if name == "cache-control" {
                b
            } else {
                "max-age=3600"
            };
            Reply::status(304, &[("etag", "\"e1\"")], "")
                .with("cache-control", cc)
                .with(name, b)
        });
        let returned = h.get("/a").await;
        assert_eq!(returned.header(name), Some(b), "returned {name}");
        let stored = h.get("/a").await;
        assert!(stored.hit(), "{name}: {}", stored.cache_status());
        assert_eq!(stored.header(name), Some(b), "stored {name}");
        assert_eq!(stored.text(), "x");
    }
}

#[tokio::test]
async fn s4_3_4_a_304_that_omits_a_field_keeps_the_stored_one() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "max-age=1"),
            ("etag", "\"e\""),
            ("test-header", "A"),
        ],
        "x",
    )));
    h.get("/a").await;
    h.advance(5);
    h.origin.set(|_| {
        Reply::status(
            304,
            &[("cache-control", "max-age=3600"), ("etag", "\"e\"")],
            "",
        )
    });
    assert_eq!(h.get("/a").await.header("test-header"), Some("A"));
}

#[tokio::test]
async fn s4_3_4_a_304_with_a_new_etag_validates_and_relabels_the_stored_response() {
    // cache-tests.fyi 304-etag-update-response-ETag: the 304 answers the cache's
    // `If-None-Match: "abcdef"`, so the stored response is current; its new tag is stored.
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=2"), ("etag", "\"abcdef\"")],
        "x",
    )));
    h.get("/a").await;
    h.advance(3);
    h.origin.set(|_| {
        Reply::status(
            304,
            &[("cache-control", "max-age=2"), ("etag", "\"ghijkl\"")],
            "",
        )
    });
    let validated = h.get("/a").await;
    assert_eq!(
        h.origin.last().headers.get("if-none-match").unwrap(),
        "\"abcdef\""
    );
    assert_eq!(validated.header("etag"), Some("\"ghijkl\""));
    assert_eq!(validated.text(), "x");
    let hit = h.get("/a").await;
    assert!(hit.hit(), "{}", hit.cache_status());
    assert_eq!(hit.header("etag"), Some("\"ghijkl\""));
    assert_eq!(hit.text(), "x");
    assert_eq!(h.origin.calls(), 2);
    // The next validation sends the new tag.
    h.advance(3);
    h.get("/a").await;
    assert_eq!(
        h.origin.last().headers.get("if-none-match").unwrap(),
        "\"ghijkl\""
    );
}

#[tokio::test]
async fn s4_3_4_a_304_dating_another_representation_does_not_update() {
    let lm = "Wed, 01 Jan 2020 00:00:00 GMT";
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=2"), ("last-modified", lm)],
        "x",
    )));
    h.get("/a").await;
    h.advance(3);
    h.origin.set(|_| {
        Reply::status(
            304,
            &[
                ("cache-control", "max-age=3600"),
                ("last-modified", "Thu, 02 Jan 2020 00:00:00 GMT"),
            ],
            "",
        )
    });
    let got = h.get("/a").await;
    assert!(
        got.cache_status().contains("validator-mismatch"),
        "{}",
        got.cache_status()
    );
    h.origin
        .set(|_| Reply::ok(&[("cache-control", "max-age=3600")], "y"));
    assert_eq!(
        h.get("/a").await.text(),
        "y",
        "the stored response was dropped"
    );
}

#[tokio::test]
async fn rfc9110_6_6_1_a_304_without_date_is_dated_when_received() {
    let now = common::epoch();
    let h = Harness::new(Origin::new(move |_| {
        Reply::ok(&[("cache-control", "max-age=10"), ("etag", "\"e\"")], "x")
            .with("date", common::http_date(now, 0))
    }));
    h.get("/a").await;
    h.advance(100);
    h.origin.set(|_| {
        Reply::status(
            304,
            &[("cache-control", "max-age=10"), ("etag", "\"e\"")],
            "",
        )
    });
    let validated = h.get("/a").await;
    assert_eq!(validated.header("age"), Some("0"));
    let hit = h.get("/a").await;
    assert!(hit.hit(), "{}", hit.cache_status());
    assert_eq!(
        hit.header("date"),
        Some(common::http_date(now, 100).as_str())
    );
}

#[tokio::test]
async fn s3_2_a_304_does_not_change_content_length() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=1"), ("etag", "\"e\"")],
        "12345",
    )));
    h.get("/a").await;
    h.advance(5);
    h.origin.set(|_| {
        Reply::status(
            304,
            &[
                ("cache-control", "max-age=3600"),
                ("etag", "\"e\""),
                ("content-length", "10"),
            ],
            "",
        )
    });
    let r = h.get("/a").await;
    assert_eq!(r.text(), "12345");
    assert_eq!(r.header("content-length"), Some("5"));
}

#[tokio::test]
async fn s4_3_3_a_full_response_to_validation_replaces_the_stored_one() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=1"), ("etag", "\"v1\"")],
        "one",
    )));
    h.get("/a").await;
    h.advance(5);
    h.origin.set(|_| {
        Reply::ok(
            &[("cache-control", "max-age=3600"), ("etag", "\"v2\"")],
            "two",
        )
    });
    assert_eq!(h.get("/a").await.text(), "two");
    let hit = h.get("/a").await;
    assert!(hit.hit());
    assert_eq!(hit.text(), "two");
}

#[tokio::test]
async fn s4_3_5_head_response_freshens_a_stored_get() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "max-age=2"),
            ("etag", "\"e\""),
            ("template-a", "1"),
        ],
        "x",
    )));
    h.get("/a").await;
    h.advance(5);
    h.origin.set(|_| {
        Reply::ok(
            &[
                ("cache-control", "max-age=1000"),
                ("etag", "\"e\""),
                ("template-a", "2"),
            ],
            "",
        )
    });
    let head = h.request("HEAD", "/a", &[]).await;
    assert_eq!(h.origin.last().method, http::Method::HEAD);
    assert_eq!(head.header("template-a"), Some("2"));
    let get = h.get("/a").await;
    assert!(get.hit(), "{}", get.cache_status());
    assert_eq!(get.header("template-a"), Some("2"));
    assert_eq!(get.text(), "x");
}

/// §3.5 with §4.3.5: the answer to a HEAD with `Authorization` may describe the user's own
/// representation; merged into the shared stored GET, its fields would be served to everyone.
/// Such a HEAD neither freshens nor evicts the stored response.
#[tokio::test]
async fn s3_5_a_head_with_authorization_does_not_freshen_the_shared_entry() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "max-age=2"),
            ("etag", "\"e\""),
            ("template-a", "1"),
        ],
        "x",
    )));
    h.get("/a").await;
    h.advance(5);
    h.origin.set(|seen| {
        let who = if seen.method == http::Method::HEAD {
            "user-7"
        } else {
            "2"
        };
        Reply::ok(
            &[
                ("cache-control", "max-age=1000"),
                ("etag", "\"e\""),
                ("template-a", who),
            ],
            "",
        )
    });
    let head = h
        .request("HEAD", "/a", &[("authorization", "Bearer user-7")])
        .await;
    assert_eq!(head.header("template-a"), Some("user-7"));
    let get = h.get("/a").await;
    assert!(!get.hit(), "still stale: {}", get.cache_status());
    assert_eq!(get.header("template-a"), Some("2"));
}

/// The other half of §3.5 with §4.3.5: an authorized HEAD whose validator differs does not evict
/// the shared stored GET either (the user's representation says nothing about the shared one).
#[tokio::test]
async fn s3_5_a_head_with_authorization_does_not_evict_the_shared_entry() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=2"), ("etag", "\"shared\"")],
        "x",
    )));
    h.get("/a").await;
    h.advance(5);
    h.origin.set(|seen| {
        if seen.method == http::Method::HEAD {
            // The user's own representation: another validator.
            Reply::ok(
                &[("cache-control", "max-age=100"), ("etag", "\"user-7\"")],
                "",
            )
        } else if seen.headers.contains_key("if-none-match") {
            Reply::status(
                304,
                &[("cache-control", "max-age=100"), ("etag", "\"shared\"")],
                "",
            )
        } else {
            Reply::ok(&[("cache-control", "max-age=100")], "refetched")
        }
    });
    let head = h
        .request("HEAD", "/a", &[("authorization", "Bearer user-7")])
        .await;
    assert_eq!(head.header("etag"), Some("\"user-7\""));
    // Still stored: the next GET revalidates it instead of fetching it anew.
    let get = h.get("/a").await;
    assert!(
        get.cache_status().contains("fwd=stale"),
        "{}",
        get.cache_status()
    );
    assert_eq!(get.text(), "x");
}

// === §4.4 Invalidation ===

#[tokio::test]
async fn s4_4_unsafe_methods_invalidate_the_target_uri() {
    for method in ["POST", "PUT", "DELETE", "M-SEARCH"] {
        let h = Harness::with(
            Origin::fixed(Reply::ok(&[("cache-control", "max-age=100000")], "x")),
            |b| b.invalidate_on_unsafe(true),
        );
        h.get("/a").await;
        let r = h.request(method, "/a", &[]).await;
        assert!(
            r.cache_status().contains("fwd=method"),
            "{}",
            r.cache_status()
        );
        assert!(!h.get("/a").await.hit(), "{method}");
    }
}

#[tokio::test]
async fn s4_4_failed_unsafe_requests_do_not_invalidate() {
    let h = Harness::with(
        Origin::new(|seen| {
            if seen.method == http::Method::POST {
                Reply::status(500, &[], "")
            } else {
                Reply::ok(&[("cache-control", "max-age=100000")], "x")
            }
        }),
        |b| b.invalidate_on_unsafe(true),
    );
    h.get("/a").await;
    h.request("POST", "/a", &[]).await;
    assert!(h.get("/a").await.hit());
}

#[tokio::test]
async fn s4_4_location_and_content_location_on_the_same_origin_are_invalidated() {
    let h = Harness::with(
        Origin::new(|seen| {
            if seen.method == http::Method::POST {
                Reply::ok(
                    &[
                        ("location", "http://example.com/target"),
                        ("content-location", "other"),
                    ],
                    "",
                )
            } else {
                Reply::ok(&[("cache-control", "max-age=100000")], "x")
            }
        }),
        |b| b.invalidate_on_unsafe(true),
    );
    h.get("/target").await;
    h.get("/dir/other").await;
    h.get("/elsewhere").await;
    h.request("POST", "/dir/post", &[]).await;
    assert!(!h.get("/target").await.hit());
    assert!(
        !h.get("/dir/other").await.hit(),
        "relative Content-Location resolves against the request"
    );
    assert!(h.get("/elsewhere").await.hit());
}

#[tokio::test]
async fn s4_4_other_origins_are_not_invalidated() {
    let h = Harness::with(
        Origin::new(|seen| {
            if seen.method == http::Method::POST {
                Reply::ok(&[("location", "http://other.example/target")], "")
            } else {
                Reply::ok(&[("cache-control", "max-age=100000")], "x")
            }
        }),
        |b| b.invalidate_on_unsafe(true),
    );
    let req = Request::get("http://other.example/target")
        .body(String::new())
        .unwrap();
    h.send(req).await.unwrap();
    h.request("POST", "/a", &[]).await;
    let again = h
        .send(
            Request::get("http://other.example/target")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(again.hit());
}

// === §5.2.1 Request directives ===

#[tokio::test]
async fn s5_2_1_request_max_age_min_fresh_no_cache() {
    let h = Harness::with(
        Origin::fixed(Reply::ok(
            &[("cache-control", "max-age=1500"), ("age", "1000")],
            "x",
        )),
        |b| b.request_directives(true),
    );
    h.get("/a").await;
    assert!(h.get("/a").await.hit());
    let r = h.get_with("/a", &[("cache-control", "max-age=600")]).await;
    assert!(
        r.cache_status().contains("fwd=request"),
        "{}",
        r.cache_status()
    );
    assert!(
        !h.get_with("/a", &[("cache-control", "min-fresh=1000")])
            .await
            .hit()
    );
    assert!(
        !h.get_with("/a", &[("cache-control", "no-cache")])
            .await
            .hit()
    );
    assert!(
        !h.get_with("/a", &[("pragma", "no-cache")]).await.hit(),
        "RFC 9111 §5.4"
    );
    assert!(
        h.get_with(
            "/a",
            &[("pragma", "no-cache"), ("cache-control", "max-stale")]
        )
        .await
        .hit()
    );
}

#[tokio::test]
async fn s5_2_1_2_max_stale_accepts_stale_responses() {
    let h = Harness::with(
        Origin::fixed(Reply::ok(&[("cache-control", "max-age=1")], "x")),
        |b| b.request_directives(true),
    );
    h.get("/a").await;
    h.advance(10);
    let r = h
        .get_with("/a", &[("cache-control", "max-stale=1000")])
        .await;
    assert!(r.hit());
    assert!(r.cache_status().contains("ttl=-9"), "{}", r.cache_status());
}

#[tokio::test]
async fn s5_2_1_5_request_no_store_prevents_storing() {
    let h = Harness::with(
        Origin::fixed(Reply::ok(&[("cache-control", "max-age=3600")], "x")),
        |b| b.request_directives(true),
    );
    let r = h.get_with("/a", &[("cache-control", "no-store")]).await;
    assert!(
        r.cache_status().contains("detail=request-no-store"),
        "{}",
        r.cache_status()
    );
    assert!(!h.get("/a").await.hit());
}

#[tokio::test]
async fn s5_2_1_7_only_if_cached_without_a_stored_response_is_504() {
    let h = Harness::with(
        Origin::fixed(Reply::ok(&[("cache-control", "max-age=3600")], "x")),
        |b| b.request_directives(true),
    );
    let r = h
        .get_with("/a", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(r.status, 504);
    assert_eq!(h.origin.calls(), 0);
    h.get("/a").await;
    assert!(
        h.get_with("/a", &[("cache-control", "only-if-cached")])
            .await
            .hit()
    );
}

#[tokio::test]
async fn request_directives_can_be_ignored_by_configuration() {
    let h = Harness::with(
        Origin::fixed(Reply::ok(&[("cache-control", "max-age=3600")], "x")),
        |b| b.request_directives(false),
    );
    h.get("/a").await;
    assert!(
        h.get_with("/a", &[("cache-control", "no-cache")])
            .await
            .hit()
    );
}

// === §5.2.2 Response directives ===

#[tokio::test]
async fn s5_2_2_4_no_cache_responses_are_revalidated_on_every_use() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "max-age=10000, no-cache"),
            ("etag", "\"abcd\""),
        ],
        "x",
    )));
    h.get("/a").await;
    h.get("/a").await;
    assert_eq!(h.origin.calls(), 2);
    assert_eq!(h.origin.last().headers["if-none-match"], "\"abcd\"");
}

#[tokio::test]
async fn s5_2_2_4_qualified_no_cache_fields_are_not_reused_without_validation() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "no-cache=\"a, b\", max-age=3600"),
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
        ],
        "x",
    )));
    h.get("/a").await;
    let hit = h.get("/a").await;
    assert!(hit.hit());
    assert_eq!(hit.header("a"), None);
    assert_eq!(hit.header("b"), None);
    assert_eq!(hit.header("c"), Some("3"));
}

#[tokio::test]
async fn s5_2_2_2_must_revalidate_fresh_is_reused_stale_is_validated() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "max-age=2, must-revalidate"),
            ("etag", "\"abcd\""),
        ],
        "x",
    )));
    h.get("/a").await;
    assert!(h.get("/a").await.hit());
    h.advance(5);
    let r = h.get("/a").await;
    assert!(!r.hit());
    assert_eq!(h.origin.last().headers["if-none-match"], "\"abcd\"");
}

// === RFC 9213 CDN-Cache-Control ===

#[tokio::test]
async fn rfc9213_targeted_field_takes_precedence() {
    let now = common::epoch();
    let exp = common::http_date(now, 10_000);
    for (cc, cdn, cached) in [
        ("", "max-age=3600", true),
        ("max-age=1", "max-age=3600", true),
        ("max-age=3600", "max-age=1", false),
        ("no-store", "max-age=10000", true),
        ("max-age=10000", "no-store", false),
        ("max-age=10000", "private", false),
        ("max-age=10000", "no-cache", false),
        ("no-store", "max-age=10000, &&&&&", false),
        ("no-store", "max-age=\"10000\"", false),
        ("max-age=1", "max-age =100", false),
        ("", "max-age=0", false),
    ] {
        let exp = exp.clone();
        let h = Harness::new(Origin::new(move |_| {
            let mut r = Reply::ok(&[("cdn-cache-control", cdn)], "x").with("expires", exp.clone());
            if !cc.is_empty() {
                r = r.with("cache-control", cc);
            }
            r
        }));
        h.get("/a").await;
        h.advance(3);
        assert_eq!(h.get("/a").await.hit(), cached, "CC {cc:?} CDN-CC {cdn:?}");
    }
}

#[tokio::test]
async fn rfc9213_targeted_field_list_is_configurable() {
    let h = Harness::with(
        Origin::fixed(Reply::ok(
            &[
                ("cache-control", "max-age=1"),
                ("ravelin-cache-control", "max-age=3600"),
                ("cdn-cache-control", "max-age=2"),
            ],
            "x",
        )),
        |b| b.targeted_fields(["ravelin-cache-control", "cdn-cache-control"]),
    );
    h.get("/a").await;
    h.advance(10);
    assert!(h.get("/a").await.hit());
}

#[tokio::test]
async fn rfc9213_the_targeted_field_is_forwarded() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "max-age=10000"),
            ("cdn-cache-control", "foo"),
        ],
        "x",
    )));
    assert_eq!(h.get("/a").await.header("cdn-cache-control"), Some("foo"));
}

// === Surrogate-Control (W3C Edge Architecture 1.0) ===

/// Two requests for `/a` `secs` seconds apart from an origin answering `headers` (`Date` now):
/// whether the second was a hit.
async fn reused_after(headers: &[(&'static str, &'static str)], secs: u64) -> bool {
    let now = common::epoch();
    let headers = headers.to_vec();
    let h = Harness::new(Origin::new(move |_| {
        let mut reply = Reply::ok(&[], "x").with("date", common::http_date(now, 0));
        for (name, value) in &headers {
            let value = match *value {
                "<future>" => common::http_date(now, 10000),
                "<past>" => common::http_date(now, -10000),
                v => v.to_string(),
            };
            reply = reply.with(name, value);
        }
        reply
    }));
    h.get("/a").await;
    h.advance(secs);
    let second = h.get("/a").await;
    assert_eq!(h.origin.calls(), if second.hit() { 1 } else { 2 });
    second.hit()
}

#[tokio::test]
async fn w3c_edge_arch_surrogate_control_replaces_cache_control() {
    // The required tests of cache-tests.fyi's former surrogate-control group (removed from the
    // suite in 2023), with the optimal ones, in order.
    let sc = "surrogate-control";
    for (headers, secs, reused) in [
        (&[(sc, "max-age=3600")][..], 0, true),
        (&[(sc, "max-age=2147483648")], 0, true),
        (&[(sc, "max-age=99999999999")], 0, true),
        (&[(sc, "max-age=3600"), ("age", "7200")], 0, false),
        (
            &[("cache-control", "max-age=1"), (sc, "max-age =100")],
            2,
            false,
        ),
        (
            &[("cache-control", "max-age=1"), (sc, "max-age= 100")],
            2,
            false,
        ),
        (&[(sc, "max-age=0")], 0, false),
        (&[(sc, "foobar, max-age=3600")], 0, true),
        (&[(sc, "MaX-aGe=3600")], 0, true),
        (&[(sc, "max-age=3600"), ("expires", "<past>")], 0, true),
        (&[(sc, "max-age=3600"), ("expires", "0")], 0, true),
        (&[(sc, "max-age=0"), ("expires", "<future>")], 0, false),
        (
            &[("cache-control", "max-age=1"), (sc, "max-age=3600")],
            2,
            true,
        ),
        (
            &[("cache-control", "max-age=3600"), (sc, "max-age=1")],
            2,
            false,
        ),
        (&[(sc, "no-store")], 0, false),
        (
            &[(sc, "no-store-remote"), ("cache-control", "max-age=3600")],
            0,
            false,
        ),
        (
            &[
                ("cache-control", "max-age=10000"),
                (sc, "no-store"),
                ("expires", "<future>"),
            ],
            0,
            false,
        ),
        (
            &[("cache-control", "no-store"), (sc, "max-age=10000")],
            0,
            true,
        ),
        // Nothing this cache implements: Cache-Control applies.
        (
            &[
                ("cache-control", "max-age=3600"),
                (sc, "content=\"ESI/1.0\""),
            ],
            0,
            true,
        ),
    ] {
        assert_eq!(reused_after(headers, secs).await, reused, "{headers:?}");
    }
}

#[tokio::test]
async fn w3c_edge_arch_surrogate_control_members_are_targeted_by_device_token() {
    let h = Harness::new(Origin::fixed(Reply::ok(&[], "x")));
    h.get("/a").await;
    assert_eq!(
        h.origin.last().headers.get("surrogate-capability").unwrap(),
        "ravelin=\"Surrogate/1.0\"",
        "the cache announces its device token"
    );
    let sc = "surrogate-control";
    for (headers, reused) in [
        (&[(sc, "max-age=3600;ravelin")][..], true),
        (&[(sc, "max-age=3600;RAVELIN")], true),
        (&[(sc, "max-age=3600;other;ravelin")], true),
        (&[(sc, "max-age=3600;not-for-you")], false),
        (
            &[("cache-control", "max-age=3600"), (sc, "no-store;other")],
            true,
        ),
        (&[(sc, "no-store;other, max-age=3600")], true),
        (
            &[("cache-control", "no-store"), (sc, "max-age=10000;ravelin")],
            true,
        ),
    ] {
        assert_eq!(reused_after(headers, 0).await, reused, "{headers:?}");
    }
}

#[tokio::test]
async fn w3c_edge_arch_a_max_age_extension_serves_stale_when_the_origin_fails() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("surrogate-control", "max-age=60+600")],
        "x",
    )));
    h.get("/a").await;
    h.advance(120);
    h.origin.set(|_| Reply::status(503, &[], "down"));
    let stale = h.get("/a").await;
    assert_eq!(stale.text(), "x", "{}", stale.cache_status());
    h.advance(600);
    assert_eq!(h.get("/a").await.status, 503, "past the extension");
}

#[tokio::test]
async fn w3c_edge_arch_the_surrogate_consumes_its_own_directives() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "max-age=60"),
            ("surrogate-control", "max-age=3600, no-store;other"),
            (
                "surrogate-control",
                "content=\"ESI/1.0\";ravelin, max-age=5;other",
            ),
        ],
        "x",
    )));
    let miss = h.get("/a").await;
    let hit = h.get("/a").await;
    assert!(hit.hit());
    for got in [&miss, &hit] {
        assert_eq!(
            got.header("surrogate-control"),
            Some("no-store;other, max-age=5;other"),
            "members for other devices stay for them"
        );
    }
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("surrogate-control", "max-age=3600")],
        "x",
    )));
    assert_eq!(h.get("/a").await.header("surrogate-control"), None);
    assert_eq!(h.get("/a").await.header("surrogate-control"), None);
    // A 304 keeps the stored Surrogate-Control in force and out of the response.
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[
            ("cache-control", "no-store"),
            ("surrogate-control", "max-age=1"),
            ("etag", "\"e\""),
        ],
        "x",
    )));
    h.get("/a").await;
    h.advance(2);
    h.origin
        .set(|_| Reply::status(304, &[("etag", "\"e\"")], ""));
    let validated = h.get("/a").await;
    assert_eq!(validated.header("surrogate-control"), None);
    assert!(
        h.get("/a").await.hit(),
        "still stored under the surrogate's max-age"
    );
}

#[tokio::test]
async fn rfc9213_cdn_cache_control_comes_before_surrogate_control() {
    let both = [
        ("cdn-cache-control", "max-age=1"),
        ("surrogate-control", "max-age=3600"),
    ];
    assert!(!reused_after(&both, 2).await);
    // An invalid CDN-Cache-Control falls through to Surrogate-Control.
    let invalid = [
        ("cdn-cache-control", "max-age=\"1\""),
        ("surrogate-control", "max-age=3600"),
    ];
    assert!(reused_after(&invalid, 2).await);
}

#[tokio::test]
async fn w3c_edge_arch_surrogate_control_can_be_left_to_another_surrogate() {
    let h = Harness::with(
        Origin::fixed(Reply::ok(
            &[
                ("cache-control", "max-age=1"),
                ("surrogate-control", "max-age=3600"),
            ],
            "x",
        )),
        |b| b.targeted_fields(["cdn-cache-control"]),
    );
    let first = h.get("/a").await;
    assert_eq!(first.header("surrogate-control"), Some("max-age=3600"));
    assert!(
        h.origin
            .last()
            .headers
            .get("surrogate-capability")
            .is_none()
    );
    h.advance(2);
    assert!(!h.get("/a").await.hit(), "Cache-Control applies");
}

// === RFC 9110 §14 Ranges from stored responses ===

#[tokio::test]
async fn rfc9110_14_ranges_are_served_from_a_complete_stored_response() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=3600")],
        "01234567890",
    )));
    h.get("/a").await;
    for (range, text, cr) in [
        ("bytes=0-1", "01", "bytes 0-1/11"),
        ("bytes=1-", "1234567890", "bytes 1-10/11"),
        ("bytes=-1", "0", "bytes 10-10/11"),
    ] {
        let r = h.get_with("/a", &[("range", range)]).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.text(), text, "{range}");
        assert_eq!(r.header("content-range"), Some(cr));
    }
    let r = h.get_with("/a", &[("range", "bytes=50-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(h.origin.calls(), 1);
}

/// Lets background work (a range fill finishing the body after its client's range) run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn rfc9111_3_4_a_range_miss_stores_the_whole_response_and_the_next_range_is_a_hit() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=3600"), ("etag", "\"v1\"")],
        "0123456789",
    )));
    let first = h
        .get_with("/a", &[("range", "bytes=0-3"), ("if-range", "\"v1\"")])
        .await;
    assert_eq!(first.status, 206);
    assert_eq!(first.text(), "0123");
    assert_eq!(first.header("content-range"), Some("bytes 0-3/10"));
    assert_eq!(first.header("content-length"), Some("4"));
    // The origin is asked for the whole representation.
    let seen = h.origin.last();
    assert!(!seen.headers.contains_key("range"), "{seen:?}");
    assert!(!seen.headers.contains_key("if-range"), "{seen:?}");
    for (range, text, cr) in [
        ("bytes=5-", "56789", "bytes 5-9/10"),
        ("bytes=-2", "89", "bytes 8-9/10"),
    ] {
        let r = h.get_with("/a", &[("range", range)]).await;
        assert!(r.hit(), "{range}: {}", r.cache_status());
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.text(), text, "{range}");
        assert_eq!(r.header("content-range"), Some(cr));
    }
    assert!(h.get("/a").await.hit());
    assert_eq!(h.origin.calls(), 1);
}

#[tokio::test]
async fn rfc9111_3_4_a_range_fill_finishes_the_body_after_the_clients_range() {
    // The body arrives in two chunks; the client's range ends in the first, and the rest is
    // still read and stored.
    let h = Harness::new(Origin::fixed(
        Reply::ok(&[("cache-control", "max-age=3600")], "")
            .with("content-length", "10")
            .streamed(&[Some("01234"), Some("56789")]),
    ));
    let first = h.get_with("/a", &[("range", "bytes=1-2")]).await;
    assert_eq!(first.status, 206);
    assert_eq!(first.text(), "12");
    assert_eq!(first.header("content-range"), Some("bytes 1-2/10"));
    settle().await;
    let second = h.get_with("/a", &[("range", "bytes=4-6")]).await;
    assert!(second.hit(), "{}", second.cache_status());
    assert_eq!(second.text(), "456");
    assert_eq!(h.origin.calls(), 1);
}

#[tokio::test]
async fn rfc9110_14_1_2_an_unsatisfiable_range_miss_is_416_and_fills_the_cache() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=3600")],
        "0123456789",
    )));
    let first = h.get_with("/a", &[("range", "bytes=10-19")]).await;
    assert_eq!(first.status, 416);
    assert_eq!(first.header("content-range"), Some("bytes */10"));
    assert!(first.body.is_empty());
    settle().await;
    let second = h.get_with("/a", &[("range", "bytes=20-30")]).await;
    assert!(second.hit(), "{}", second.cache_status());
    assert_eq!(second.status, 416);
    assert_eq!(second.header("content-range"), Some("bytes */10"));
    let third = h.get_with("/a", &[("range", "bytes=9-")]).await;
    assert!(third.hit());
    assert_eq!((third.status.as_u16(), third.text()), (206, "9"));
    assert_eq!(h.origin.calls(), 1);
}

#[tokio::test]
async fn rfc9110_14_2_a_suffix_or_open_range_miss_goes_forward_with_its_range() {
    // Filling for `bytes=-1` would read a whole object, however large, for one byte: such
    // ranges (and those ending past range_fill_max_bytes) are the origin's to answer.
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=3600")],
        "0123456789",
    )));
    for range in ["bytes=-1", "bytes=5-", "bytes=0-99999999999"] {
        let reply = h.get_with("/a", &[("range", range)]).await;
        assert_eq!(
            h.origin
                .last()
                .headers
                .get("range")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some(range.to_owned()),
            "{range} forwarded untouched"
        );
        assert!(!reply.hit(), "{range}: {}", reply.cache_status());
    }
}

#[tokio::test]
async fn rfc9111_3_3_a_range_fill_over_its_bound_is_not_stored_and_the_range_is_sent() {
    let h = Harness::with(
        Origin::fixed(Reply::ok(
            &[("cache-control", "max-age=3600")],
            "0123456789",
        )),
        |b| b.range_fill_max_bytes(6),
    );
    // The range ends within the bound, the object does not.
    let first = h.get_with("/a", &[("range", "bytes=2-5")]).await;
    assert_eq!(first.status, 206);
    assert_eq!(first.text(), "2345");
    assert_eq!(first.header("content-range"), Some("bytes 2-5/10"));
    assert!(
        first.cache_status().contains("detail=too-large"),
        "{}",
        first.cache_status()
    );
    assert!(!h.origin.last().headers.contains_key("range"));
    // Not stored; the key is marked, so the next range miss goes forward with its `Range`.
    let second = h.get_with("/a", &[("range", "bytes=2-5")]).await;
    assert!(!second.hit());
    assert_eq!(h.origin.last().headers["range"], "bytes=2-5");
    assert_eq!(h.origin.calls(), 2);
}

#[tokio::test]
async fn rfc9110_14_2_a_range_fill_without_a_length_sends_the_whole_response_unstored() {
    let h = Harness::new(Origin::fixed(
        Reply::ok(&[("cache-control", "max-age=3600")], "")
            .streamed(&[Some("01234"), Some("56789")]),
    ));
    let first = h.get_with("/a", &[("range", "bytes=0-1")]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "0123456789");
    assert!(
        first.cache_status().contains("detail=unknown-length"),
        "{}",
        first.cache_status()
    );
    let second = h.get_with("/a", &[("range", "bytes=0-1")]).await;
    assert!(!second.hit());
    assert_eq!(h.origin.last().headers["range"], "bytes=0-1");
}

#[tokio::test]
async fn rfc9110_13_1_5_if_range_mismatch_on_a_range_miss_gets_the_full_200() {
    let h = Harness::new(Origin::fixed(Reply::ok(
        &[("cache-control", "max-age=3600"), ("etag", "\"v2\"")],
        "0123456789",
    )));
    let first = h
        .get_with("/a", &[("range", "bytes=0-1"), ("if-range", "\"v1\"")])
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "0123456789");
    assert!(first.header("content-range").is_none());
    assert!(!h.origin.last().headers.contains_key("if-range"));
    let second = h
        .get_with("/a", &[("range", "bytes=0-1"), ("if-range", "\"v2\"")])
        .await;
    assert!(second.hit(), "{}", second.cache_status());
    assert_eq!((second.status.as_u16(), second.text()), (206, "01"));
    assert_eq!(h.origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn rfc9111_4_concurrent_range_misses_share_one_whole_fetch() {
    let h = Harness::new(Origin::fixed(
        Reply::ok(&[("cache-control", "max-age=3600")], "0123456789")
            .delayed(std::time::Duration::from_millis(100)),
    ));
    let (a, b, c) = tokio::join!(
        h.get_with("/a", &[("range", "bytes=0-1")]),
        h.get_with("/a", &[("range", "bytes=5-9")]),
        h.get_with("/a", &[("range", "bytes=50-60")]),
    );
    assert_eq!((a.status.as_u16(), a.text()), (206, "01"));
    assert_eq!((b.status.as_u16(), b.text()), (206, "56789"));
    assert_eq!(b.header("content-range"), Some("bytes 5-9/10"));
    assert_eq!(c.status, 416);
    assert_eq!(h.origin.calls(), 1);
}

#[tokio::test]
async fn range_misses_go_forward_untouched_when_range_fills_are_off() {
    let h = Harness::with(
        Origin::fixed(Reply::status(
            206,
            &[
                ("cache-control", "max-age=3600"),
                ("content-range", "bytes 4-9/10"),
            ],
            "01234",
        )),
        |b| b.range_fill_max_bytes(0),
    );
    h.get_with("/a", &[("range", "bytes=-5")]).await;
    assert_eq!(h.origin.last().headers["range"], "bytes=-5");
    assert!(!h.get_with("/a", &[("range", "bytes=-5")]).await.hit());
}

#[tokio::test]
async fn rfc9111_3_3_a_206_answering_a_range_fill_is_passed_on_and_not_stored() {
    // An origin that answers 206 anyway: passed on as it is, never stored.
    let h = Harness::new(Origin::fixed(Reply::status(
        206,
        &[
            ("cache-control", "max-age=3600"),
            ("content-range", "bytes 4-9/10"),
        ],
        "01234",
    )));
    let first = h.get_with("/a", &[("range", "bytes=-5")]).await;
    assert_eq!((first.status.as_u16(), first.text()), (206, "01234"));
    assert!(!h.get_with("/a", &[("range", "bytes=-5")]).await.hit());
}

// === RFC 9110 §9.3.3 POST responses for later GETs ===

#[tokio::test]
async fn rfc9110_9_3_3_a_post_response_with_its_own_content_location_answers_gets() {
    let h = Harness::with(
        Origin::new(|seen| {
            if seen.method == http::Method::POST {
                Reply::ok(
                    &[
                        ("cache-control", "max-age=600"),
                        ("content-location", "http://example.com/a"),
                    ],
                    "posted",
                )
            } else {
                Reply::ok(&[("cache-control", "max-age=600")], "fetched")
            }
        }),
        |b| b.invalidate_on_unsafe(true),
    );
    let post = h.request("POST", "/a", &[]).await;
    // The body streams to the client as it is stored: `stored` is not claimed before it is
    // complete (the GET below shows it was stored).
    assert!(
        post.cache_status()
            .ends_with("fwd=method; ttl=600; detail=storing"),
        "{}",
        post.cache_status()
    );
    let get = h.get("/a").await;
    assert!(get.hit());
    assert_eq!(get.text(), "posted");
}

#[tokio::test]
async fn rfc9110_9_3_3_other_post_responses_are_not_stored() {
    for headers in [
        vec![("cache-control", "max-age=600")],
        vec![("content-location", "http://example.com/a")],
        vec![
            ("cache-control", "max-age=600"),
            ("content-location", "http://example.com/b"),
        ],
    ] {
        let h = Harness::with(
            Origin::new(move |seen| {
                if seen.method == http::Method::POST {
                    Reply::ok(&headers, "posted")
                } else {
                    Reply::ok(&[], "fetched")
                }
            }),
            |b| b.invalidate_on_unsafe(true),
        );
        h.request("POST", "/a", &[]).await;
        assert!(!h.get("/a").await.hit());
    }
}
