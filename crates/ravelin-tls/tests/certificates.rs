//! Certificates as validated, hot-reloaded files: every rejection keeps the last good certificate
//! serving; SNI chooses among several; a real handshake sees the chosen one. Certificates are
//! generated with rcgen at test time and written to a temporary directory.

// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ravelin_config::Outcome;
use ravelin_primitives::clock::ManualClock;
use ravelin_tls::certs::{CertificateError, SharedWallClock, covers};
use ravelin_tls::{CertificateConfig, CertificateSet, ServerCertificate};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, date_time_ymd,
};
use rustls_pki_types::CertificateDer;

/// 2026-06-01T00:00:00Z: "now" for the validity checks.
const NOW: u64 = 1_780_272_000;

fn clock() -> SharedWallClock {
    Arc::new(ManualClock::at(
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
    ))
}

/// A certificate with its key.
struct Issued {
    cert: Certificate,
    key: KeyPair,
}

fn params(cn: &str, names: &[&str], years: (i32, i32)) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = date_time_ymd(years.0, 1, 1);
    params.not_after = date_time_ymd(years.1, 1, 1);
    params
}

fn ca(cn: &str) -> Issued {
    let mut params = params(cn, &[], (2024, 2036));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    Issued {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

fn intermediate(cn: &str, issuer: &Issued) -> Issued {
    let mut params = params(cn, &[], (2024, 2036));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    Issued {
        cert: params.signed_by(&key, &issuer.cert, &issuer.key).unwrap(),
        key,
    }
}

fn leaf_valid(names: &[&str], issuer: &Issued, years: (i32, i32)) -> Issued {
    let key = KeyPair::generate().unwrap();
    let params = params(names.first().copied().unwrap_or("leaf"), names, years);
    Issued {
        cert: params.signed_by(&key, &issuer.cert, &issuer.key).unwrap(),
        key,
    }
}

fn leaf(names: &[&str], issuer: &Issued) -> Issued {
    leaf_valid(names, issuer, (2025, 2035))
}

/// Writes `chain` (leaf first) and `key` over `config`'s files, renaming into place.
fn publish(config: &CertificateConfig, chain: &[&Certificate], key: &KeyPair) {
    let pem: String = chain.iter().map(|c| c.pem()).collect();
    write_atomically(&config.cert_file, pem.as_bytes());
    write_atomically(&config.key_file, key.serialize_pem().as_bytes());
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(dir: &Path, name: &str) -> CertificateConfig {
    CertificateConfig::new(
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

fn served(set: &CertificateSet, sni: Option<&str>) -> CertificateDer<'static> {
    set.resolve_name(sni).unwrap().cert[0].clone()
}

#[test]
fn a_good_certificate_loads_and_reports_itself() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("Test Root");
    let inter = intermediate("Test Intermediate", &root);
    let site = leaf(&["example.com", "www.example.com"], &inter);
    let config = config(dir.path(), "site").server_names(["www.example.com"]);
    publish(&config, &[&site.cert, &inter.cert], &site.key);

    let set = CertificateSet::load_with_clock(std::slice::from_ref(&config), clock()).unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(&served(&set, Some("www.example.com")), site.cert.der());
    assert_eq!(
        set.resolve_name(None).unwrap().cert.len(),
        2,
        "the chain is served"
    );

    let status = set.status();
    let [status] = status.as_slice() else {
        panic!("one certificate")
    };
    assert_eq!(
        status.files,
        [config.cert_file.clone(), config.key_file.clone()]
    );
    assert_eq!(status.configured_names, ["www.example.com"]);
    assert!(status.last_rejection.is_none());
    let active = status.active.as_ref().unwrap();
    assert_eq!(active.subject, "CN=example.com");
    assert_eq!(active.dns_names, ["example.com", "www.example.com"]);
    assert_eq!(active.server_names, ["www.example.com"]);
    // 2035-01-01 from 2026-06-01.
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(2_051_222_400);
    assert_eq!(active.not_after, not_after);
    assert_eq!(active.seconds_to_expiry, 2_051_222_400 - NOW as i64);

    assert_eq!(set.reload()[0], Ok(Outcome::Unchanged));
}

#[test]
fn a_combined_file_holds_the_chain_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("Test Root");
    let site = leaf(&["example.com"], &root);
    let path = dir.path().join("combined.pem");
    // No newline between the sections: two files concatenated by a careless script.
    let pem = format!("{}{}", site.cert.pem().trim_end(), site.key.serialize_pem());
    std::fs::write(&path, pem).unwrap();
    let set =
        CertificateSet::load_with_clock(&[CertificateConfig::new(&path, &path)], clock()).unwrap();
    assert_eq!(&served(&set, Some("example.com")), site.cert.der());
    assert_eq!(set.status()[0].files, [path]);
}

/// One bad publication after another on the same paths: each is rejected with its reason, and
/// the first good certificate is served throughout; then a good renewal is installed.
#[test]
fn every_bad_file_is_rejected_and_the_last_good_certificate_stays() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("Test Root");
    let inter = intermediate("Test Intermediate", &root);
    let good = leaf(&["a.example.com"], &inter);
    let config = config(dir.path(), "a").server_names(["a.example.com"]);
    publish(&config, &[&good.cert, &inter.cert], &good.key);
    let set = CertificateSet::load_with_clock(std::slice::from_ref(&config), clock()).unwrap();

    let renewed = leaf(&["a.example.com"], &inter);
    let other = leaf(&["a.example.com"], &inter);
    let expired = leaf_valid(&["a.example.com"], &inter, (2020, 2021));
    let early = leaf_valid(&["a.example.com"], &inter, (2030, 2035));
    let uncovered = leaf(&["b.example.com"], &inter);
    // Same subject as the real intermediate, another key: the issuer name matches, the
    // signature does not.
    let impostor = intermediate("Test Intermediate", &root);
    let stranger = intermediate("Another Intermediate", &root);

    let cert_file = config.cert_file.display().to_string();
    let key_file = config.key_file.display().to_string();
    /// What is published, how it is rejected (kind), and what the reason must say.
    type Case<'a> = (&'static str, Box<dyn Fn() + 'a>, &'static str, Vec<String>);
    let cases: Vec<Case<'_>> = vec![
        (
            "corrupt PEM",
            Box::new(|| {
                write_atomically(
                    &config.cert_file,
                    b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
                )
            }),
            "parse",
            vec!["pem parse error: malformed PEM after 0 well-formed sections: invalid base64".into()],
        ),
        (
            "a truncated file",
            Box::new(|| {
                let pem = good.cert.pem();
                write_atomically(&config.cert_file, &pem.as_bytes()[..pem.len() / 2]);
                write_atomically(&config.key_file, good.key.serialize_pem().as_bytes());
            }),
            "parse",
            vec![r#"no "-----END CERTIFICATE-----" line (a truncated file?)"#.into()],
        ),
        (
            "no key",
            Box::new(|| {
                write_atomically(&config.cert_file, good.cert.pem().as_bytes());
                write_atomically(&config.key_file, b"\n");
            }),
            "parse",
            vec![format!("no private key"), format!("in key_file {key_file}")],
        ),
        (
            "the key of another certificate",
            Box::new(|| publish(&config, &[&renewed.cert, &inter.cert], &other.key)),
            "invalid",
            vec![format!(
                "key_file: the private key in {key_file} does not match the certificate in {cert_file}"
            )],
        ),
        (
            "an expired certificate",
            Box::new(|| publish(&config, &[&expired.cert, &inter.cert], &expired.key)),
            "invalid",
            vec![
                format!(r#"cert_file: certificate "CN=a.example.com" in {cert_file} has expired"#),
                "valid from Jan  1 00:00:00 2020 +00:00 to Jan  1 00:00:00 2021 +00:00".into(),
                "now Jun  1 00:00:00 2026 +00:00".into(),
            ],
        ),
        (
            "a certificate not yet valid",
            Box::new(|| publish(&config, &[&early.cert, &inter.cert], &early.key)),
            "invalid",
            vec![
                "is not yet valid".into(),
                "valid from Jan  1 00:00:00 2030 +00:00 to Jan  1 00:00:00 2035 +00:00".into(),
            ],
        ),
        (
            "an intermediate that did not sign the leaf",
            Box::new(|| publish(&config, &[&renewed.cert, &impostor.cert], &renewed.key)),
            "invalid",
            vec![format!(
                r#"cert_file: certificate "CN=a.example.com" in {cert_file} is not signed by the next certificate of the chain ("CN=Test Intermediate")"#
            )],
        ),
        (
            "an intermediate that is not the leaf's issuer",
            Box::new(|| publish(&config, &[&renewed.cert, &stranger.cert], &renewed.key)),
            "invalid",
            vec![
                r#"is issued by "CN=Test Intermediate", but the next certificate of the chain is "CN=Another Intermediate""#.into(),
            ],
        ),
        (
            "a name not covered",
            Box::new(|| publish(&config, &[&uncovered.cert, &inter.cert], &uncovered.key)),
            "invalid",
            vec![format!(
                r#"server_names[0]: "a.example.com" is not covered by the certificate in {cert_file} (its DNS names: b.example.com)"#
            )],
        ),
    ];
    for (i, (case, publish_bad, kind, reasons)) in cases.iter().enumerate() {
        publish_bad();
        let outcomes = set.reload();
        let rejection = outcomes[0].as_ref().expect_err(case);
        assert_eq!(rejection.kind(), *kind, "{case}: {rejection}");
        let message = rejection.to_string();
        for reason in reasons {
            assert!(
                message.contains(reason.as_str()),
                "{case}: {message}\nlacks: {reason}"
            );
        }
        assert_eq!(
            &served(&set, Some("a.example.com")),
            good.cert.der(),
            "{case}: the last good certificate is served"
        );
        let status = &set.status()[0];
        assert_eq!(
            status
                .last_rejection
                .as_ref()
                .map(|r| r.rejection.to_string()),
            Some(message),
            "{case}"
        );
        assert_eq!(status.consecutive_rejections, i as u64 + 1, "{case}");
        assert_eq!(status.active.as_ref().unwrap().subject, "CN=a.example.com");
    }

    publish(&config, &[&renewed.cert, &inter.cert], &renewed.key);
    assert!(matches!(set.reload()[0], Ok(Outcome::Installed { .. })));
    assert_eq!(&served(&set, Some("a.example.com")), renewed.cert.der());
    assert!(set.status()[0].last_rejection.is_none());
}

#[test]
fn decoding_wants_the_chain_then_one_key() {
    let root = ca("Test Root");
    let site = leaf(&["example.com"], &root);
    let other = leaf(&["example.com"], &root);
    let config = CertificateConfig::new("/etc/site.crt", "/etc/site.key");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    let decode = |pem: String| ServerCertificate::decode(pem.as_bytes(), &config, now);

    let good = decode(site.cert.pem() + &site.key.serialize_pem()).unwrap();
    assert_eq!(good.subject(), "CN=example.com");
    assert_eq!(good.dns_names(), ["example.com"]);
    assert!(good.seconds_to_expiry(now) > 0);

    let err = decode(site.key.serialize_pem() + &site.cert.pem()).unwrap_err();
    assert!(
        err.contains("a CERTIFICATE section follows the private key"),
        "{err}"
    );
    let err = decode(site.cert.pem() + &site.key.serialize_pem() + &other.key.serialize_pem())
        .unwrap_err();
    assert_eq!(
        err,
        "2 private keys found: expected exactly one, in key_file /etc/site.key"
    );
    let err = decode(site.key.serialize_pem()).unwrap_err();
    assert_eq!(err, "no CERTIFICATE section in cert_file /etc/site.crt");
    let err = decode(site.cert.pem() + &site.key.public_key_pem()).unwrap_err();
    assert!(err.contains("unexpected PEM section PublicKey"), "{err}");
    let err = decode(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned()
            + &site.key.serialize_pem(),
    )
    .unwrap_err();
    assert!(
        err.starts_with("certificate 0 of the chain in cert_file /etc/site.crt is not X.509"),
        "{err}"
    );
}

#[test]
fn the_configuration_is_strict() {
    let config: CertificateConfig = toml::from_str(
        r#"
        cert_file = "/etc/site.crt"
        key_file = "/etc/site.key"
        "#,
    )
    .unwrap();
    assert!(config.server_names.is_empty());
    assert_eq!(config.files().len(), 2);
    let err = toml::from_str::<CertificateConfig>(
        r#"
        cert_file = "/etc/site.crt"
        key_file = "/etc/site.key"
        server_name = ["typo.example.com"]
        "#,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown field `server_name`"),
        "{err}"
    );
}

#[test]
fn server_names_must_be_dns_names() {
    let dir = tempfile::tempdir().unwrap();
    let bad = config(dir.path(), "x").server_names(["ok.example.com", "Bad Name", "a.*.com"]);
    let err = CertificateSet::load(&[bad]).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, CertificateError::Invalid { index: 0, .. }),
        "{message}"
    );
    assert!(
        message.contains(r#"server_names[1]: "Bad Name" is not a lowercase DNS name"#),
        "{message}"
    );
    assert!(
        message.contains(r#"server_names[2]: "a.*.com""#),
        "{message}"
    );
    assert!(matches!(
        CertificateSet::load(&[]),
        Err(CertificateError::NoneConfigured)
    ));
}

#[test]
fn wildcards_follow_rfc_6125() {
    assert!(covers("*.example.com", "a.example.com"));
    assert!(covers("*.example.com", "A.Example.COM."));
    assert!(!covers("*.example.com", "example.com"));
    assert!(!covers("*.example.com", "a.b.example.com"));
    assert!(!covers("*.example.com", ".example.com"));
    assert!(covers("*.example.com", "*.example.com"));
    assert!(!covers("a.example.com", "*.example.com"));
    assert!(
        !covers("a*.example.com", "ab.example.com"),
        "partial wildcards are not honoured"
    );
    assert!(covers("example.com", "example.com"));
    assert!(!covers("example.com", "a.example.com"));
}

/// Three certificates: the default (first), an exact name and a wildcard.
struct Three {
    _dir: tempfile::TempDir,
    root: Issued,
    default: Issued,
    exact: Issued,
    wildcard: Issued,
    configs: Vec<CertificateConfig>,
}

fn three() -> Three {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("Test Root");
    let default = leaf(&["default.test"], &root);
    let exact = leaf(&["a.example.com"], &root);
    let wildcard = leaf(&["*.example.com"], &root);
    let configs = vec![
        config(dir.path(), "default"),
        config(dir.path(), "exact"),
        config(dir.path(), "wildcard"),
    ];
    publish(&configs[0], &[&default.cert], &default.key);
    publish(&configs[1], &[&exact.cert], &exact.key);
    publish(&configs[2], &[&wildcard.cert], &wildcard.key);
    Three {
        _dir: dir,
        root,
        default,
        exact,
        wildcard,
        configs,
    }
}

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let t = three();
    let set = CertificateSet::load_with_clock(&t.configs, clock()).unwrap();
    assert_eq!(&served(&set, Some("a.example.com")), t.exact.cert.der());
    assert_eq!(&served(&set, Some("A.EXAMPLE.COM.")), t.exact.cert.der());
    assert_eq!(&served(&set, Some("b.example.com")), t.wildcard.cert.der());
    assert_eq!(&served(&set, Some("default.test")), t.default.cert.der());
    assert_eq!(&served(&set, Some("x.b.example.com")), t.default.cert.der());
    assert_eq!(&served(&set, Some("example.com")), t.default.cert.der());
    assert_eq!(&served(&set, Some("unknown.test")), t.default.cert.der());
    assert_eq!(&served(&set, None), t.default.cert.der());
}

#[test]
fn a_certificate_rejected_at_startup_does_not_stop_the_others() {
    let t = three();
    std::fs::write(&t.configs[1].key_file, t.wildcard.key.serialize_pem()).unwrap();
    let set = CertificateSet::load_with_clock(&t.configs, clock()).unwrap();
    let status = set.status();
    assert!(status[1].active.is_none());
    let reason = status[1]
        .last_rejection
        .as_ref()
        .unwrap()
        .rejection
        .to_string();
    assert!(
        reason.contains("does not match the certificate"),
        "{reason}"
    );
    // Meanwhile its name is served by the next best: here the wildcard.
    assert_eq!(&served(&set, Some("a.example.com")), t.wildcard.cert.der());

    publish(&t.configs[1], &[&t.exact.cert], &t.exact.key);
    assert!(matches!(set.reload()[1], Ok(Outcome::Installed { .. })));
    assert_eq!(&served(&set, Some("a.example.com")), t.exact.cert.der());
    assert!(set.status()[1].active.is_some());

    // With every certificate rejected there is nothing to serve: building fails, naming each.
    for config in &t.configs {
        std::fs::write(&config.cert_file, "").unwrap();
    }
    let err = CertificateSet::load_with_clock(&t.configs, clock()).unwrap_err();
    let CertificateError::NoneLoaded(rejections) = &err else {
        panic!("{err}")
    };
    assert_eq!(rejections.len(), 3);
}

#[test]
fn poll_installs_renewals_once_and_rejects_bad_files_once() {
    let t = three();
    let set = CertificateSet::load_with_clock(&t.configs, clock()).unwrap();
    assert!(!set.poll(), "nothing changed");
    // A renewal of the wildcard certificate that also covers the bare domain.
    let renewed = leaf(&["*.example.com", "example.com"], &t.root);
    publish(&t.configs[2], &[&renewed.cert], &renewed.key);
    assert!(set.poll());
    assert_eq!(&served(&set, Some("b.example.com")), renewed.cert.der());
    // Without configured server_names the certificate's own names route: the table was rebuilt.
    assert_eq!(&served(&set, Some("example.com")), renewed.cert.der());

    std::fs::write(&t.configs[2].key_file, t.exact.key.serialize_pem()).unwrap();
    assert!(!set.poll());
    assert!(!set.poll());
    let status = &set.status()[2];
    assert_eq!(
        status.consecutive_rejections, 1,
        "an unchanged bad file is not counted again"
    );
    assert_eq!(
        status.last_rejection.as_ref().unwrap().rejection.kind(),
        "invalid"
    );
    assert_eq!(&served(&set, Some("b.example.com")), renewed.cert.der());
}

#[test]
fn watch_picks_up_a_renewal() {
    let t = three();
    let set = CertificateSet::load_with_clock(&t.configs, clock()).unwrap();
    let watch = set.watch(Duration::from_millis(10)).unwrap();
    let renewed = leaf(&["a.example.com"], &t.root);
    publish(&t.configs[1], &[&renewed.cert], &renewed.key);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while &served(&set, Some("a.example.com")) != renewed.cert.der() {
        assert!(std::time::Instant::now() < deadline, "not picked up");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(watch);
}

#[test]
fn the_expiry_gauge_is_the_certificates_expiry_time() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let t = three();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        CertificateSet::load_with_clock(&t.configs, clock()).unwrap();
    });
    let gauges: Vec<(String, f64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == ravelin_tls::certs::NOT_AFTER_GAUGE)
        .map(|(key, _, _, value)| {
            let label = key.key().labels().next().unwrap();
            assert_eq!(label.key(), "certificate");
            let DebugValue::Gauge(value) = value else {
                panic!("a gauge")
            };
            (label.value().to_owned(), value.into_inner())
        })
        .collect();
    assert_eq!(gauges.len(), 3);
    for config in &t.configs {
        // Valid to 2035-01-01.
        assert!(
            gauges.contains(&(config.label(), 2_051_222_400.0)),
            "{gauges:?}"
        );
    }
}

#[tokio::test]
async fn a_real_handshake_sees_the_certificate_chosen_by_sni() {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let t = three();
    let set = CertificateSet::load(&t.configs).unwrap();
    // rustls 0.23.48 deprecates the ring provider (no post-quantum key exchange); ring is
    // Ravelin's choice because it builds with gcc alone (see the crate docs).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(set.clone()));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut byte = [0u8; 1];
                    if tls.read_exact(&mut byte).await.is_ok() {
                        let _ = tls.write_all(b"ok").await;
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(t.root.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    for (sni, expected) in [
        ("a.example.com", &t.exact),
        ("b.example.com", &t.wildcard),
        ("default.test", &t.default),
    ] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(&peer, expected.cert.der(), "{sni}");
        tls.write_all(b"?").await.unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"ok", "{sni}");
    }
    // A name only the default covers by SNI fallback fails verification in the client.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("x.b.example.com".to_owned()).unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
    serving.abort();
}
