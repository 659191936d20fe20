//! HTTPS upstreams over real loopback sockets: a TLS origin (tokio-rustls, certificates made
//! at test time by rcgen from a test CA) ← Forward ← Server ← plain HTTP client.
// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// ring is the workspace's provider; rustls 0.23.48 deprecated its constructor (no PQ kex).
#![allow(deprecated)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use ravelin_proxy::{Forward, ServerConfig, Upstream, UpstreamBuilder, UpstreamError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;

use support::{BOUND, Serving, metric};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// === certificates ===

/// A CA made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf for `names` (DNS names or IP addresses), for a server or a client.
    fn issue(&self, names: &[&str], client: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert, key }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Leaf {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

/// Files the upstream reads.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

// === the origin ===

/// An HTTPS origin answering `200` with the HTTP version it was spoken to in; `served` counts
/// the requests it answered.
struct Origin {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
}

impl Origin {
    /// Serves `leaf`; with `client_ca`, only clients with a certificate from it are accepted.
    async fn start(leaf: &Leaf, client_ca: Option<&Ca>) -> Self {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(leaf.chain(), leaf.key()).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    // A failed handshake (an untrusting or certificate-less client) just ends.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request: Request<_>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = format!("{:?}", request.version());
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, served }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

// === the proxy ===

struct Proxy {
    addr: SocketAddr,
    recorder: Arc<PrometheusRecorder>,
    server: Serving,
}

impl Proxy {
    /// Server → Forward(upstream built from `builder` under this test's recorder).
    async fn start(builder: UpstreamBuilder) -> Self {
        let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
        let service =
            metrics::with_local_recorder(&*recorder, || Forward::new(builder.build().unwrap()));
        let server = Serving::start(service, ServerConfig::default(), None).await;
        Self {
            addr: server.addr,
            recorder,
            server,
        }
    }

    async fn get(&self) -> (StatusCode, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::get(format!("http://{}/x", self.addr))
            .header("host", "shop.example")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(BOUND, client.request(request))
            .await
            .unwrap()
            .unwrap();
        let status = response.status();
        let body = tokio::time::timeout(BOUND, response.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn connect_errors(&self) -> f64 {
        let series = "ravelin_proxy_upstream_errors_total{upstream=\"origin\",kind=\"connect\"}";
        metric(&self.recorder, series)
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

const UNREACHABLE: &str = "502 Bad Gateway: the upstream could not be reached\n";

// === tests ===

#[tokio::test]
async fn a_private_ca_is_trusted_over_http1_and_h2() {
    let ca = Ca::new("test CA");
    let origin = Origin::start(&ca.issue(&["127.0.0.1", "localhost"], false), None).await;
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.cert.pem());
    for (http2, version) in [(false, "HTTP/1.1"), (true, "HTTP/2.0")] {
        let proxy = Proxy::start(
            Upstream::builder("origin", origin.url())
                .ca_file(&ca_file)
                .http2(http2),
        )
        .await;
        for _ in 0..3 {
            assert_eq!(proxy.get().await, (StatusCode::OK, version.to_owned()));
        }
        assert_eq!(proxy.connect_errors(), 0.0);
        proxy.stop().await;
    }
    assert_eq!(origin.served(), 6);
}

#[tokio::test]
async fn an_untrusted_origin_is_a_502_connect_failure() {
    let ca = Ca::new("unknown CA");
    let origin = Origin::start(&ca.issue(&["127.0.0.1"], false), None).await;
    // The public roots (no ca_file), and another private CA: neither trusts the origin.
    let other = Ca::new("other CA");
    let files = Files::new();
    let other_file = files.write("other.pem", &other.cert.pem());
    for builder in [
        Upstream::builder("origin", origin.url()),
        Upstream::builder("origin", origin.url()).ca_file(&other_file),
    ] {
        let proxy = Proxy::start(builder).await;
        assert_eq!(
            proxy.get().await,
            (StatusCode::BAD_GATEWAY, UNREACHABLE.to_owned())
        );
        assert!(proxy.connect_errors() >= 1.0);
        proxy.stop().await;
    }
    assert_eq!(origin.served(), 0);
}

#[tokio::test]
async fn the_certificate_must_name_the_upstream() {
    let ca = Ca::new("test CA");
    let origin = Origin::start(&ca.issue(&["origin.test"], false), None).await;
    let files = Files::new();
    let ca_file = files.write("ca.pem", &ca.cert.pem());
    // The URL's host is 127.0.0.1, which the certificate does not list: 502.
    let proxy = Proxy::start(Upstream::builder("origin", origin.url()).ca_file(&ca_file)).await;
    assert_eq!(
        proxy.get().await,
        (StatusCode::BAD_GATEWAY, UNREACHABLE.to_owned())
    );
    assert!(proxy.connect_errors() >= 1.0);
    proxy.stop().await;
    // Another configured name: still a mismatch.
    let proxy = Proxy::start(
        Upstream::builder("origin", origin.url())
            .ca_file(&ca_file)
            .tls_server_name("other.test"),
    )
    .await;
    assert_eq!(proxy.get().await.0, StatusCode::BAD_GATEWAY);
    proxy.stop().await;
    assert_eq!(origin.served(), 0);
    // The name the certificate carries: served.
    let proxy = Proxy::start(
        Upstream::builder("origin", origin.url())
            .ca_file(&ca_file)
            .tls_server_name("origin.test"),
    )
    .await;
    assert_eq!(proxy.get().await, (StatusCode::OK, "HTTP/1.1".to_owned()));
    proxy.stop().await;
    assert_eq!(origin.served(), 1);
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let origin = Origin::start(&server_ca.issue(&["127.0.0.1"], false), Some(&client_ca)).await;
    let client = client_ca.issue(&["edge.test"], true);
    let files = Files::new();
    let ca_file = files.write("ca.pem", &server_ca.cert.pem());
    let cert_file = files.write("client.pem", &client.cert.pem());
    let key_file = files.write("client-key.pem", &client.key.serialize_pem());

    // Without a client certificate the origin refuses the handshake: 502.
    let proxy = Proxy::start(Upstream::builder("origin", origin.url()).ca_file(&ca_file)).await;
    assert_eq!(proxy.get().await.0, StatusCode::BAD_GATEWAY);
    proxy.stop().await;
    assert_eq!(origin.served(), 0);

    for http2 in [false, true] {
        let proxy = Proxy::start(
            Upstream::builder("origin", origin.url())
                .ca_file(&ca_file)
                .client_cert_file(&cert_file)
                .client_key_file(&key_file)
                .http2(http2),
        )
        .await;
        assert_eq!(proxy.get().await.0, StatusCode::OK);
        proxy.stop().await;
    }
    assert_eq!(origin.served(), 2);

    // A certificate from a CA the origin does not trust: refused as well.
    let stranger = Ca::new("stranger").issue(&["edge.test"], true);
    let stranger_cert = files.write("stranger.pem", &stranger.cert.pem());
    let stranger_key = files.write("stranger-key.pem", &stranger.key.serialize_pem());
    let proxy = Proxy::start(
        Upstream::builder("origin", origin.url())
            .ca_file(&ca_file)
            .client_cert_file(&stranger_cert)
            .client_key_file(&stranger_key),
    )
    .await;
    assert_eq!(proxy.get().await.0, StatusCode::BAD_GATEWAY);
    proxy.stop().await;
    assert_eq!(origin.served(), 2);
}

#[test]
fn bad_tls_settings_are_refused_at_build_time() {
    let files = Files::new();
    let garbage = files.write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    let client = Ca::new("client CA").issue(&["edge.test"], true);
    let cert = files.write("client.pem", &client.cert.pem());
    let other_key = files.write(
        "other-key.pem",
        &KeyPair::generate().unwrap().serialize_pem(),
    );
    let missing = files.dir.path().join("missing.pem");
    let https = "https://127.0.0.1:8443";
    let cases: Vec<(UpstreamBuilder, &str)> = vec![
        (Upstream::builder("web", https).ca_file(&missing), "ca_file"),
        (Upstream::builder("web", https).ca_file(&garbage), "ca_file"),
        (
            Upstream::builder("web", https)
                .client_cert_file(&cert)
                .client_key_file(&other_key),
            "client_key_file",
        ),
        (
            Upstream::builder("web", https)
                .client_cert_file(&cert)
                .client_key_file(&missing),
            "client_key_file",
        ),
        (
            Upstream::builder("web", https).client_cert_file(&cert),
            "client_key_file",
        ),
        (
            Upstream::builder("web", "http://127.0.0.1:8080").ca_file(&cert),
            "ca_file",
        ),
    ];
    for (builder, expected) in cases {
        let checked = builder.check().unwrap_err();
        let built = builder.build().unwrap_err();
        assert_eq!(checked, built);
        match &built {
            UpstreamError::Tls { field, .. } => assert_eq!(*field, expected, "{built}"),
            other => panic!("expected a TLS error for {expected}, got {other}"),
        }
    }
    let ftp = Upstream::builder("web", "ftp://127.0.0.1")
        .build()
        .unwrap_err();
    assert!(
        ftp.to_string().contains("write http:// or https://"),
        "{ftp}"
    );
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_a_connect_failure() {
    // Accepts TCP connections and holds them open without a byte of TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    // The response timeout is far above the bound of every wait here: only the connect
    // timeout, which covers the handshake, can answer in time.
    let proxy = Proxy::start(
        Upstream::builder("origin", format!("https://{addr}"))
            .connect_timeout(Duration::from_millis(100))
            .response_timeout(Duration::from_secs(600)),
    )
    .await;
    assert_eq!(
        proxy.get().await,
        (StatusCode::BAD_GATEWAY, UNREACHABLE.to_owned())
    );
    assert!(proxy.connect_errors() >= 1.0);
    proxy.stop().await;
    held.abort();
}
