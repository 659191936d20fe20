//! The shipped model against the fingerprints captured from real clients
//! (`data/ja4-clients.json`): a Chrome User-Agent with Chrome's full header set scores as a
//! person over Chromium's TLS stack and as automated over every other captured stack, and the
//! model's `ja4_stack_mismatch` rows are the ones the data gives (the model was retrained after
//! the last capture).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};
use ravelin_botscore::dataset::{Ja4Capture, load_ja4_clients};
use ravelin_botscore::train::{JA4_STACK_MISMATCH_WEIGHT, ja4_priors};
use ravelin_botscore::{Model, RequestView};
use ravelin_http::TlsInfo;

fn captures() -> Vec<Ja4Capture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    load_ja4_clients(&dir)
        .unwrap()
        .expect("data/ja4-clients.json")
}

/// Chrome's navigation headers in Chrome's order, for a UA on `platform` (`Linux`, `Windows`).
fn chrome_request(platform: &str, major: u32) -> HeaderMap {
    let ua = match platform {
        "Windows" => format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
        ),
        _ => format!(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
        ),
    };
    let pairs = [
        (
            "sec-ch-ua",
            format!(
                "\"Chromium\";v=\"{major}\", \"Google Chrome\";v=\"{major}\", \"Not?A_Brand\";v=\"99\""
            ),
        ),
        ("sec-ch-ua-mobile", "?0".into()),
        ("sec-ch-ua-platform", format!("\"{platform}\"")),
        ("upgrade-insecure-requests", "1".into()),
        ("user-agent", ua),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7".into(),
        ),
        ("sec-fetch-site", "none".into()),
        ("sec-fetch-mode", "navigate".into()),
        ("sec-fetch-user", "?1".into()),
        ("sec-fetch-dest", "document".into()),
        ("accept-encoding", "gzip, deflate, br, zstd".into()),
        ("accept-language", "en-US,en;q=0.9".into()),
        ("priority", "u=0, i".into()),
    ];
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    map
}

#[test]
fn the_shipped_model_carries_the_rows_the_captured_data_gives() {
    let model = Model::builtin().unwrap();
    let shipped: Vec<_> = model
        .features()
        .iter()
        .filter(|row| row.kind == "ja4_stack_mismatch")
        .cloned()
        .collect();
    let expected = ja4_priors(&captures());
    assert!(!expected.is_empty(), "the data covers at least one browser");
    assert_eq!(
        serde_json::to_value(&shipped).unwrap(),
        serde_json::to_value(&expected).unwrap(),
        "retrain the model after a capture (see data/README.md)"
    );
    assert!(
        shipped
            .iter()
            .all(|row| row.weight == JA4_STACK_MISMATCH_WEIGHT)
    );
}

#[test]
fn chrome_headers_score_human_over_chromes_stack_and_automated_over_any_other() {
    let model = Model::builtin().unwrap();
    let captures = captures();
    let score = |headers: &HeaderMap, version: Version, ja4: Option<&str>| {
        let s = model
            .score(&RequestView::new(version, headers).with_ja4(ja4))
            .unwrap();
        let reasons: Vec<String> = s.reasons().iter().map(|r| r.feature().to_owned()).collect();
        (s.score().get(), reasons)
    };
    for platform in ["Linux", "Windows"] {
        for major in [120, 156] {
            let headers = chrome_request(platform, major);
            for version in [Version::HTTP_11, Version::HTTP_2] {
                let (plain, _) = score(&headers, version, None);
                assert!(
                    plain >= 30,
                    "{platform} {major} {version:?} without TLS: {plain}"
                );
                for capture in &captures {
                    let (s, reasons) = score(&headers, version, Some(&capture.ja4));
                    let what = format!(
                        "Chrome {major} on {platform} over {version:?}, {} ({}): {s} {reasons:?}",
                        capture.client, capture.ja4
                    );
                    if capture.family.as_deref() == Some("chrome") {
                        assert_eq!(s, plain, "{what}: its own stack changes nothing");
                        assert!(s >= 30, "{what}");
                    } else {
                        assert!(s <= 29, "{what}");
                        // Not the floor: a TLS-intercepting middlebox can cause a mismatch for
                        // a real person, so it should lead to a challenge, not a block at 1.
                        assert!(s > 1, "{what}");
                        assert!(
                            reasons.iter().any(|r| r == "ja4_stack_mismatch_chrome"),
                            "{what}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_edges_tls_info_reaches_the_score() {
    let model = Model::builtin().unwrap();
    let curl = captures()
        .into_iter()
        .find(|c| c.client == "curl")
        .expect("a curl capture");
    let mut request = Request::new(());
    *request.headers_mut() = chrome_request("Linux", 156);
    let (before, _) = {
        let s = model.score(&RequestView::from_request(&request)).unwrap();
        (s.score().get(), ())
    };
    request.extensions_mut().insert(TlsInfo {
        version: "TLSv1.3",
        ja4: Some(Arc::from(curl.ja4.as_str())),
        ..TlsInfo::default()
    });
    let s = model.score(&RequestView::from_request(&request)).unwrap();
    assert!(before >= 30, "{before}");
    assert!(s.score().get() <= 29, "{s:?}");
    assert!(
        s.reasons()
            .iter()
            .any(|r| r.feature() == "ja4_stack_mismatch_chrome")
    );
}
