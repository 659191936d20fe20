//! The acceptor over real loopback sockets, with certificates generated at test time and a
//! rustls client: ALPN, versions, the JA4 of the hello, resumption, and the bounds.
// Test code, helpers included: a panic is a failing test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use ravelin_tls::acceptor::{AcceptorConfig, HandshakeError, TlsAcceptor, crypto_provider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::ResolvesServerCertUsingSni;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    let certified = CertifiedKey::new(vec![leaf.der().clone()], signing);
    let mut resolver = ResolvesServerCertUsingSni::new();
    resolver.add("edge.test", certified).unwrap();
    Pki {
        resolver: Arc::new(resolver),
        root: ca.der().clone(),
    }
}

fn client(
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Accepts one connection, handshakes, echoes one line, and returns the outcome.
async fn serve_one(
    listener: &TcpListener,
    acceptor: &TlsAcceptor,
) -> Result<ravelin_http::TlsInfo, HandshakeError> {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut accepted = acceptor.accept(tcp).await?;
    let mut buf = [0u8; 5];
    accepted.stream.read_exact(&mut buf).await.unwrap();
    accepted.stream.write_all(&buf).await.unwrap();
    accepted.stream.flush().await.unwrap();
    Ok(accepted.info)
}

async fn connect(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("edge.test").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
    // Reading on lets the client take the server's session tickets (TLS 1.3).
    let _ = tokio::time::timeout(Duration::from_millis(50), tls.read(&mut back)).await;
}

#[tokio::test]
async fn tls13_with_h2_reports_sni_alpn_version_and_ja4() {
    let pki = pki();
    let acceptor = TlsAcceptor::new(pki.resolver.clone(), AcceptorConfig::default()).unwrap();
    let (listener, addr) = listener().await;
    let config = client(&pki.root, &[b"h2", b"http/1.1"], &[&rustls::version::TLS13]);
    let (info, ()) = tokio::join!(serve_one(&listener, &acceptor), connect(addr, config));
    let info = info.unwrap();
    assert_eq!(info.server_name.as_deref(), Some("edge.test"));
    assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(info.version, "TLSv1.3");
    let ja4 = info.ja4.expect("a rustls hello is fingerprinted");
    // TLS 1.3, SNI present, ALPN h2: the JA4 prefix (FoxIO) says so.
    assert!(ja4.starts_with("t13d"), "{ja4}");
    assert!(ja4.contains("h2_"), "{ja4}");
    assert!(!info.resumed);
    assert_eq!(acceptor.handshakes_in_progress(), 0);
}

#[tokio::test]
async fn tls12_with_http1_is_served_and_fingerprinted_as_such() {
    let pki = pki();
    let acceptor = TlsAcceptor::new(pki.resolver.clone(), AcceptorConfig::default()).unwrap();
    let (listener, addr) = listener().await;
    let config = client(&pki.root, &[b"http/1.1"], &[&rustls::version::TLS12]);
    let (info, ()) = tokio::join!(serve_one(&listener, &acceptor), connect(addr, config));
    let info = info.unwrap();
    assert_eq!(info.version, "TLSv1.2");
    assert_eq!(info.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let ja4 = info.ja4.unwrap();
    assert!(ja4.starts_with("t12d"), "{ja4}");
    assert!(ja4.contains("h1_"), "{ja4}");
}

#[tokio::test]
async fn a_second_connection_resumes_the_session() {
    let pki = pki();
    let acceptor = TlsAcceptor::new(pki.resolver.clone(), AcceptorConfig::default()).unwrap();
    let (listener, addr) = listener().await;
    let config = client(&pki.root, &[b"h2"], &[&rustls::version::TLS13]);
    let (first, ()) = tokio::join!(
        serve_one(&listener, &acceptor),
        connect(addr, config.clone())
    );
    assert!(!first.unwrap().resumed);
    let (second, ()) = tokio::join!(serve_one(&listener, &acceptor), connect(addr, config));
    assert!(
        second.unwrap().resumed,
        "the ticket from the first connection resumes"
    );
}

#[tokio::test]
async fn fingerprinting_can_be_switched_off() {
    let pki = pki();
    let config = AcceptorConfig {
        fingerprint: false,
        ..AcceptorConfig::default()
    };
    let acceptor = TlsAcceptor::new(pki.resolver.clone(), config).unwrap();
    let (listener, addr) = listener().await;
    let client_config = client(&pki.root, &[b"h2"], &[&rustls::version::TLS13]);
    let (info, ()) = tokio::join!(
        serve_one(&listener, &acceptor),
        connect(addr, client_config)
    );
    assert_eq!(info.unwrap().ja4, None);
}

#[tokio::test]
async fn a_silent_client_is_cut_off_at_the_handshake_deadline() {
    let pki = pki();
    let config = AcceptorConfig {
        handshake_timeout: Duration::from_millis(100),
        ..AcceptorConfig::default()
    };
    let acceptor = TlsAcceptor::new(pki.resolver.clone(), config).unwrap();
    let (listener, addr) = listener().await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let outcome = acceptor.accept(tcp).await;
    assert!(
        matches!(outcome, Err(HandshakeError::TimedOut)),
        "{outcome:?}"
    );
    assert_eq!(
        acceptor.handshakes_in_progress(),
        0,
        "the slot is given back"
    );
}

#[tokio::test]
async fn past_the_bound_a_handshake_is_refused_at_once() {
    let pki = pki();
    let config = AcceptorConfig {
        max_handshakes: 1,
        ..AcceptorConfig::default()
    };
    let acceptor = TlsAcceptor::new(pki.resolver.clone(), config).unwrap();
    let (listener, addr) = listener().await;
    // The first client sends a real ClientHello, then says nothing more: its handshake is under
    // way and holds the only slot.
    let hello = client_hello(&pki.root);
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&hello).await.unwrap();
    let (first, _) = listener.accept().await.unwrap();
    let holder = {
        let acceptor = acceptor.clone();
        tokio::spawn(async move { acceptor.accept(first).await.map(|_| ()) })
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while acceptor.handshakes_in_progress() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first handshake takes the slot");
    let mut second_client = TcpStream::connect(addr).await.unwrap();
    second_client.write_all(&hello).await.unwrap();
    let (second, _) = listener.accept().await.unwrap();
    let outcome = acceptor.accept(second).await;
    assert!(matches!(outcome, Err(HandshakeError::Busy)), "{outcome:?}");
    holder.abort();
}

#[tokio::test]
async fn silent_clients_take_no_handshake_slot() {
    let pki = pki();
    let config = AcceptorConfig {
        max_handshakes: 1,
        handshake_timeout: Duration::from_secs(5),
        ..AcceptorConfig::default()
    };
    let acceptor = TlsAcceptor::new(pki.resolver.clone(), config).unwrap();
    let (listener, addr) = listener().await;
    // Silent sockets wait for their ClientHello without a slot...
    let mut silent = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(addr).await.unwrap());
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = acceptor.clone();
        waiting.push(tokio::spawn(async move {
            acceptor.accept(tcp).await.map(|_| ())
        }));
    }
    assert_eq!(acceptor.handshakes_in_progress(), 0);
    // ...so a real client still gets its handshake.
    let client_config = client(&pki.root, &[b"h2"], &[&rustls::version::TLS13]);
    let (info, ()) = tokio::join!(
        serve_one(&listener, &acceptor),
        connect(addr, client_config)
    );
    assert!(info.is_ok(), "{info:?}");
    for task in waiting {
        task.abort();
    }
}

/// The first flight of a rustls client for `edge.test`: a ClientHello, as bytes.
fn client_hello(root: &CertificateDer<'static>) -> Vec<u8> {
    let config = client(root, &[b"h2"], &[&rustls::version::TLS13]);
    let mut connection =
        rustls::ClientConnection::new(config, ServerName::try_from("edge.test").unwrap()).unwrap();
    let mut bytes = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut bytes).unwrap();
    }
    bytes
}

#[tokio::test]
async fn plaintext_http_on_the_tls_port_fails_the_handshake_cleanly() {
    let pki = pki();
    let acceptor = TlsAcceptor::new(pki.resolver.clone(), AcceptorConfig::default()).unwrap();
    let (listener, addr) = listener().await;
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let outcome = acceptor.accept(tcp).await;
    assert!(
        matches!(outcome, Err(HandshakeError::Failed(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_client_that_closes_mid_hello_fails_without_a_fingerprint_wait() {
    let pki = pki();
    let acceptor = TlsAcceptor::new(pki.resolver.clone(), AcceptorConfig::default()).unwrap();
    let (listener, addr) = listener().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    // A handshake record header announcing 512 bytes, then two bytes, then close.
    client
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    drop(client);
    let (tcp, _) = listener.accept().await.unwrap();
    let outcome = acceptor.accept(tcp).await;
    assert!(
        matches!(outcome, Err(HandshakeError::Failed(_))),
        "{outcome:?}"
    );
}

#[test]
fn bounds_are_checked() {
    let pki = pki();
    for config in [
        AcceptorConfig {
            handshake_timeout: Duration::ZERO,
            ..AcceptorConfig::default()
        },
        AcceptorConfig {
            handshake_timeout: Duration::from_secs(61),
            ..AcceptorConfig::default()
        },
        AcceptorConfig {
            max_handshakes: 0,
            ..AcceptorConfig::default()
        },
        AcceptorConfig {
            max_handshakes: AcceptorConfig::MAX_HANDSHAKES + 1,
            ..AcceptorConfig::default()
        },
    ] {
        assert!(TlsAcceptor::new(pki.resolver.clone(), config).is_err());
    }
}
