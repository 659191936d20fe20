//! The server terminating TLS over real loopback sockets (a certificate made at test time,
//! rustls clients): HTTP/1.1 and HTTP/2 as ALPN agrees, the handshake's facts (SNI, ALPN,
//! version, JA4) on every request, `https` in the request's identity, failed handshakes
//! counted and contained.
// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use ravelin_http::TlsInfo;
use ravelin_proxy::{IngressConfig, IngressLayer, ServeSummary, Server, ServerConfig};
use ravelin_tls::acceptor::{AcceptorConfig, TlsAcceptor, crypto_provider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::ResolvesServerCertUsingSni;
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tower::ServiceBuilder;

/// A bound on every wait: a hang is a failure, not a timing measurement.
const BOUND: Duration = Duration::from_secs(10);

struct Pki {
    resolver: Arc<ResolvesServerCertUsingSni>,
    root: CertificateDer<'static>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["edge.test".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let signing = crypto_provider()
        .key_provider
        .load_private_key(key)
        .unwrap();
    let mut resolver = ResolvesServerCertUsingSni::new();
    resolver
        .add(
            "edge.test",
            CertifiedKey::new(vec![leaf.der().clone()], signing),
        )
        .unwrap();
    Pki {
        resolver: Arc::new(resolver),
        root: ca.der().clone(),
    }
}

struct Proxy {
    addr: SocketAddr,
    recorder: Arc<PrometheusRecorder>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ServeSummary>,
}

impl Proxy {
    /// Server (TLS) → IngressLayer → a service describing what it was given.
    async fn start(acceptor: TlsAcceptor) -> Self {
        let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
        let service = ServiceBuilder::new()
            .layer(IngressLayer::new(IngressConfig::new()))
            .service_fn(|request: Request<_>| async move {
                let tls = TlsInfo::of(request.extensions())
                    .cloned()
                    .unwrap_or_default();
                let described = format!(
                    "uri={} version={:?} sni={} alpn={} tls={} ja4={}",
                    request.uri(),
                    request.version(),
                    tls.server_name.as_deref().unwrap_or("-"),
                    tls.alpn
                        .as_deref()
                        .map_or("-".into(), |a| String::from_utf8_lossy(a).into_owned()),
                    tls.version,
                    tls.ja4.as_deref().unwrap_or("-"),
                );
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(described))))
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // The server registers its metric handles when created: with this test's recorder.
        let server = metrics::with_local_recorder(&*recorder, || {
            Server::from_listener(listener, ServerConfig::default()).unwrap()
        })
        .tls(acceptor);
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(service, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            recorder,
            stop: Some(stop),
            task,
        }
    }

    fn metric(&self, series: &str) -> f64 {
        self.recorder
            .handle()
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(BOUND, &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn client_config(root: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("edge.test").unwrap(), tcp)
        .await
        .unwrap()
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "edge.test")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn http11_over_tls_carries_the_handshake_and_https_on_every_request() {
    let pki = pki();
    let proxy =
        Proxy::start(TlsAcceptor::new(pki.resolver.clone(), AcceptorConfig::default()).unwrap())
            .await;
    let tls = tls_connect(proxy.addr, client_config(&pki.root, &[b"http/1.1"])).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    for _ in 0..2 {
        let response = tokio::time::timeout(BOUND, sender.send_request(get("/a/../b")))
            .await
            .unwrap()
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("uri=https://edge.test/b"), "{body}");
        assert!(body.contains("version=HTTP/1.1"), "{body}");
        assert!(body.contains("sni=edge.test"), "{body}");
        assert!(body.contains("alpn=http/1.1"), "{body}");
        assert!(body.contains("tls=TLSv1.3"), "{body}");
        assert!(body.contains("ja4=t13d"), "{body}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn h2_is_served_when_alpn_agrees_on_it() {
    let pki = pki();
    let proxy =
        Proxy::start(TlsAcceptor::new(pki.resolver.clone(), AcceptorConfig::default()).unwrap())
            .await;
    let tls = tls_connect(proxy.addr, client_config(&pki.root, &[b"h2", b"http/1.1"])).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("https://edge.test/h2")
        .version(Version::HTTP_2)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(BOUND, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.contains("uri=https://edge.test/h2"), "{body}");
    assert!(body.contains("alpn=h2"), "{body}");
    assert!(body.contains("ja4=t13d"), "{body}");
    assert!(
        body.contains("h2_"),
        "the JA4 records the h2 ALPN offer: {body}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_failed_handshake_is_counted_and_the_server_keeps_serving() {
    let pki = pki();
    let proxy =
        Proxy::start(TlsAcceptor::new(pki.resolver.clone(), AcceptorConfig::default()).unwrap())
            .await;
    // Plain HTTP to the TLS port: the handshake fails, the connection is closed.
    let mut plain = TcpStream::connect(proxy.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        BOUND,
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut rest),
    )
    .await
    .unwrap();
    // A TLS client right after is served.
    let tls = tls_connect(proxy.addr, client_config(&pki.root, &[b"http/1.1"])).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(sender);
    let mut closed = 0.0;
    for _ in 0..100 {
        closed = proxy.metric("ravelin_proxy_connections_closed_total{reason=\"tls_handshake\"}");
        if closed >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(closed, 1.0);
    proxy.stop().await;
}
