//! TLS termination of the assembled proxy over real sockets, with certificates generated at
//! test time (rcgen) and rustls clients: SNI picks the certificate (exact, wildcard, default),
//! HTTP/1.1 and h2 reach the origin with `X-Forwarded-Proto: https` and the client's JA4; a
//! corrupt, mismatched or expired certificate file is rejected while the old one keeps
//! serving; plaintext is redirected on request; a client cannot forge the JA4 header.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ravelin_test_support::edge::{self as support, Harness, config, eventually};
use ravelin_tls::acceptor::crypto_provider;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// A bound on every wait: a hang is a failure, not a timing measurement.
const BOUND: Duration = Duration::from_secs(20);

/// A test CA and leaf certificates it signs.
struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Ravelin test CA");
        let cert = params.self_signed(&key).unwrap();
        Self { key, cert }
    }

    /// A leaf for `names`, valid from a day ago for `days` days (negative: already expired),
    /// as (chain PEM, key PEM).
    fn leaf(&self, names: &[&str], days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let now = time::OffsetDateTime::now_utc();
        if days < 0 {
            params.not_before = now - time::Duration::days(30);
            params.not_after = now + time::Duration::days(days);
        } else {
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(days);
        }
        let leaf = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (leaf.pem(), key.serialize_pem())
    }

    fn root(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

/// What one request over TLS saw.
struct Seen {
    status: u16,
    version: Version,
    body: String,
    /// The leaf certificate the server presented.
    leaf: CertificateDer<'static>,
    /// The response's `Cache-Status`.
    cache_status: String,
}

/// One GET over a fresh TLS connection to `addr` with SNI `name`, offering `alpn`.
async fn tls_get(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    name: &str,
    alpn: &[&[u8]],
    path: &str,
) -> Seen {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        BOUND,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp),
    )
    .await
    .unwrap()
    .expect("the handshake succeeds");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let request = Request::get(format!("https://{name}{path}"))
        .header("host", name)
        .header("x-ja4", "forged-by-the-client")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        parts.version = Version::HTTP_2;
        parts.headers.remove("host");
        tokio::time::timeout(BOUND, sender.send_request(Request::from_parts(parts, body)))
            .await
            .unwrap()
            .unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().unwrap();
        tokio::time::timeout(BOUND, sender.send_request(Request::from_parts(parts, body)))
            .await
            .unwrap()
            .unwrap()
    };
    let status = response.status().as_u16();
    let version = response.version();
    let cache_status = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Seen {
        status,
        version,
        body: String::from_utf8_lossy(&body).into_owned(),
        leaf,
        cache_status,
    }
}

/// A header the demo origin's `/echo` says it received.
fn echoed(body: &str, name: &str) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    json["headers"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter(|p| p[0] == name)
                .filter_map(|p| p[1].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

const TLS_SECTION: &str = r#"
[tls]
listen = "127.0.0.1:0"

[[tls.certificates]]
cert_file = "{dir}/default.pem"
key_file = "{dir}/default.key"

[[tls.certificates]]
cert_file = "{dir}/a.pem"
key_file = "{dir}/a.key"
server_names = ["a.test"]

[[tls.certificates]]
cert_file = "{dir}/b.pem"
key_file = "{dir}/b.key"
server_names = ["*.b.test"]
"#;

async fn start(ca: &Ca, extra: &str) -> Harness {
    start_with(ca, &config(&format!("{TLS_SECTION}{extra}"))).await
}

/// The edge with config `text` and the three certificates of [`TLS_SECTION`], freshly issued.
async fn start_with(ca: &Ca, text: &str) -> Harness {
    let (default_pem, default_key) = ca.leaf(&["default.test"], 30);
    let (a_pem, a_key) = ca.leaf(&["a.test"], 30);
    let (b_pem, b_key) = ca.leaf(&["*.b.test"], 30);
    Harness::start_with_files(
        text,
        &[
            ("default.pem", default_pem.as_bytes()),
            ("default.key", default_key.as_bytes()),
            ("a.pem", a_pem.as_bytes()),
            ("a.key", a_key.as_bytes()),
            ("b.pem", b_pem.as_bytes()),
            ("b.key", b_key.as_bytes()),
        ],
        None,
    )
    .await
}

fn tls_addr(harness: &Harness) -> SocketAddr {
    harness.running().tls_addr.expect("a TLS listener")
}

fn subject_alt_names(leaf: &CertificateDer<'_>) -> String {
    // The DER holds the SAN's DNS names as plain ASCII: enough to tell certificates apart.
    String::from_utf8_lossy(leaf.as_ref()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_both_protocols_reach_the_origin_as_https() {
    let ca = Ca::new();
    let harness = start(&ca, "").await;
    let addr = tls_addr(&harness);

    let a = tls_get(addr, &ca.root(), "a.test", &[b"http/1.1"], "/echo").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.version, Version::HTTP_11);
    assert!(subject_alt_names(&a.leaf).contains("a.test"));
    assert_eq!(echoed(&a.body, "x-forwarded-proto"), vec!["https"]);
    let ja4 = echoed(&a.body, "x-ja4");
    assert_eq!(ja4.len(), 1, "one JA4, the edge's: {ja4:?}");
    assert!(ja4[0].starts_with("t13d"), "{ja4:?}");
    assert!(ja4[0].contains("h1_"), "{ja4:?}");

    let b = tls_get(
        addr,
        &ca.root(),
        "www.b.test",
        &[b"h2", b"http/1.1"],
        "/echo",
    )
    .await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.version, Version::HTTP_2);
    assert!(subject_alt_names(&b.leaf).contains("*.b.test"));
    let ja4 = echoed(&b.body, "x-ja4");
    assert!(ja4[0].contains("h2_"), "{ja4:?}");

    // A name no certificate covers gets the default, which the client then refuses to trust
    // for that name: the handshake is the client's to fail, the server stays up.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.root()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("other.test").unwrap(), tcp)
        .await;
    assert!(
        refused.is_err(),
        "the default certificate does not cover other.test"
    );

    let status = harness.status().await;
    let certificates = status["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 3, "{status:#}");
    assert!(
        certificates[1]["active"]["seconds_to_expiry"]
            .as_i64()
            .unwrap()
            > 86_400
    );
    let metrics = harness.metrics().await;
    assert!(
        support::metric(&metrics, "ravelin_tls_certificate_expiry_seconds", &[]) > 0.0,
        "{metrics}"
    );
    assert!(
        support::metric(
            &metrics,
            "ravelin_tls_handshakes_total",
            &["outcome=\"ok\""]
        ) >= 2.0
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_files_are_rejected_and_the_last_good_one_keeps_serving() {
    let ca = Ca::new();
    let harness = start(&ca, "").await;
    let addr = tls_addr(&harness);
    let before = tls_get(addr, &ca.root(), "a.test", &[b"http/1.1"], "/").await;
    assert_eq!(before.status, 200);

    let (_, other_key) = ca.leaf(&["a.test"], 30);
    let (good_pem, _) = ca.leaf(&["a.test"], 30);
    let (expired_pem, expired_key) = ca.leaf(&["a.test"], -1);
    let corrupt = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n";
    let cases: [(&str, &str, &str, &str); 3] = [
        ("corrupt", corrupt, "", "PEM"),
        ("mismatched key", &good_pem, &other_key, "key"),
        ("expired", &expired_pem, &expired_key, "expired"),
    ];
    for (what, pem, key, reason) in cases {
        support::write_atomically(&harness.path("a.pem"), pem.as_bytes());
        if !key.is_empty() {
            support::write_atomically(&harness.path("a.key"), key.as_bytes());
        }
        let reloaded = harness.admin_post("/config/reload").await;
        assert_eq!(reloaded.status, 200, "{what}: {}", reloaded.text());
        let status = harness.status().await;
        let a = &status["certificates"][1];
        let rejection = a["last_rejection"]["reason"].as_str().unwrap_or_default();
        assert!(
            rejection.to_lowercase().contains(&reason.to_lowercase()),
            "{what}: the rejection says why ({reason}): {a:#}"
        );
        // Handshakes after the rejection still get the last good certificate.
        let after = tls_get(addr, &ca.root(), "a.test", &[b"http/1.1"], "/").await;
        assert_eq!(after.status, 200, "{what}");
        assert_eq!(
            after.leaf, before.leaf,
            "{what}: the old certificate keeps serving"
        );
    }

    // A good renewal is picked up by the watcher without a reload call.
    let (renewed_pem, renewed_key) = ca.leaf(&["a.test"], 60);
    support::write_atomically(&harness.path("a.key"), renewed_key.as_bytes());
    support::write_atomically(&harness.path("a.pem"), renewed_pem.as_bytes());
    let root = ca.root();
    let old = before.leaf.clone();
    eventually("the renewed certificate is served", || {
        let root = root.clone();
        let old = old.clone();
        async move {
            let seen = tls_get(addr, &root, "a.test", &[b"http/1.1"], "/").await;
            seen.status == 200 && seen.leaf != old
        }
    })
    .await;
    let status = harness.status().await;
    assert!(
        status["certificates"][1]["last_rejection"].is_null(),
        "{status:#}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_can_be_redirected_and_cannot_forge_the_ja4() {
    let ca = Ca::new();
    // Serving plaintext too: a client's own x-ja4 never reaches the origin.
    let harness = start(&ca, "").await;
    let request = Request::get(harness.url("/echo"))
        .header("x-ja4", "t13d1516h2_8daaf6152771_e5627efa2ab1")
        .body(http_body_util::Full::default())
        .unwrap();
    let reply = harness.send(request).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.echoed("x-ja4").is_empty(), "{}", reply.text());
    assert_eq!(reply.echoed("x-forwarded-proto"), vec!["http"]);
    harness.stop().await;

    let text = config(TLS_SECTION);
    let text = text.replacen(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nplaintext = \"redirect\"\n",
        1,
    );
    let harness = start_with(&ca, &text).await;
    let request = Request::get(harness.url("/p/q?x=1"))
        .header("host", "a.test")
        .body(http_body_util::Full::default())
        .unwrap();
    let reply = harness.send(request).await.unwrap();
    assert_eq!(reply.status, 308);
    let port = tls_addr(&harness).port();
    assert_eq!(
        reply.headers["location"],
        format!("https://a.test:{port}/p/q?x=1").as_str()
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_http_are_cached_apart() {
    let ca = Ca::new();
    let harness = start(&ca, "").await;
    let addr = tls_addr(&harness);
    let first = tls_get(
        addr,
        &ca.root(),
        "a.test",
        &[b"http/1.1"],
        "/assets/style.css",
    )
    .await;
    assert_eq!(first.status, 200);
    assert!(
        !first.cache_status.contains("hit"),
        "{}",
        first.cache_status
    );
    let second = tls_get(addr, &ca.root(), "a.test", &[b"h2"], "/assets/style.css").await;
    assert!(
        second.cache_status.contains("hit"),
        "{}",
        second.cache_status
    );
    // The same host and path over plaintext is another URL (`http://`): not that entry.
    let request = Request::get(harness.url("/assets/style.css"))
        .header("host", "a.test")
        .body(http_body_util::Full::default())
        .unwrap();
    let plain = harness.send(request).await.unwrap();
    assert_eq!(plain.status, 200);
    let status = plain.headers["cache-status"].to_str().unwrap().to_owned();
    assert!(!status.contains("hit"), "{status}");
    harness.stop().await;
}
