//! TLS to `https://` upstreams: rustls with the ring provider (never aws-lc-rs or OpenSSL),
//! through hyper-rustls wrapping the upstream's own `HttpConnector` (its last-good DNS
//! resolver and connect timeout stay).
//!
//! - **Trust.** By default the server certificate must chain to the Mozilla root set compiled
//!   in by `webpki-roots`. Chosen over `rustls-native-certs` because the proxy then verifies
//!   the same way on every machine and in every image (distroless and `scratch` images have
//!   no `/etc/ssl`), and a build never reads the host's trust store; the price is that the
//!   set changes with the crate's releases, not the OS's. With a `ca_file` (PEM, one or more
//!   certificates) **only** those certificates are trusted: a private CA is for private
//!   origins, and keeping the public roots beside it would let any public CA vouch for them.
//! - **Name.** The certificate must match the URL's host (a DNS name, or an IP address SAN),
//!   or `tls_server_name` when set; that name is also the SNI sent (none for an IP address).
//! - **Client certificate** (mTLS): `client_cert_file` (PEM chain, leaf first) and
//!   `client_key_file` (PEM PKCS#8, PKCS#1 or SEC1 key), both or neither.
//! - **Protocols.** TLS 1.3 and 1.2 (rustls' safe defaults). ALPN offers exactly `h2` when the
//!   upstream is [`http2`](crate::UpstreamBuilder::http2), else nothing (HTTP/1.1, which
//!   protocol upgrades need); so the protocol spoken never depends on what the origin picks.
//!
//! Every file is read when the upstream is built (and by `check`), so a bad path or a bad PEM
//! is an [`UpstreamError::Tls`] naming the field, never a failure at the first request.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use tower_service::Service;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::error::UpstreamError;
use crate::forward::BoxError;

/// The connector of one upstream: TLS (for `https://` upstreams) over the plain connector with
/// the upstream's resolver, the whole setup under the upstream's connect timeout.
pub(crate) type UpstreamConnector = ConnectTimeout<
    hyper_rustls::HttpsConnector<
        hyper_util::client::legacy::connect::HttpConnector<crate::dns::ConnectorResolver>,
    >,
>;

/// The TLS settings of one upstream, as given to the builder.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert_file: Option<PathBuf>,
    pub(crate) client_key_file: Option<PathBuf>,
    pub(crate) server_name: Option<String>,
}

/// The most certificates a `ca_file` or `client_cert_file` may hold: 256. A bundle of the
/// whole public root set is ~150; more is a wrong file.
pub(crate) const MAX_PEM_CERTIFICATES: usize = 256;

/// What the connector needs: the client config and the name to verify, when it is not the
/// URL's host.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) config: ClientConfig,
    pub(crate) server_name: Option<ServerName<'static>>,
}

impl TlsSettings {
    /// The first TLS field set, for the error on an `http://` URL.
    fn first_field(&self) -> Option<&'static str> {
        [
            ("ca_file", self.ca_file.is_some()),
            ("client_cert_file", self.client_cert_file.is_some()),
            ("client_key_file", self.client_key_file.is_some()),
            ("tls_server_name", self.server_name.is_some()),
        ]
        .into_iter()
        .find_map(|(field, set)| set.then_some(field))
    }

    /// Checks the settings and reads every file: the client config of an `https` upstream
    /// (`https` true). A plain `http` upstream, where no TLS setting may be given, gets a
    /// config that trusts nothing: its connector never starts a handshake.
    pub(crate) fn prepare(&self, name: &str, https: bool) -> Result<Prepared, UpstreamError> {
        let error = |field: &'static str, reason: String| UpstreamError::Tls {
            name: name.to_owned(),
            field,
            reason,
        };
        if !https {
            return match self.first_field() {
                Some(field) => Err(error(
                    field,
                    "is set, but the url is http://; write https:// to use TLS".into(),
                )),
                None => Ok(Prepared {
                    config: ClientConfig::builder_with_provider(provider())
                        .with_safe_default_protocol_versions()
                        .map_err(|e| error("tls", e.to_string()))?
                        .with_root_certificates(RootCertStore::empty())
                        .with_no_client_auth(),
                    server_name: None,
                }),
            };
        }
        let server_name = match &self.server_name {
            Some(text) => Some(ServerName::try_from(text.clone()).map_err(|e| {
                error(
                    "tls_server_name",
                    format!("{text:?} is not a DNS name or IP address: {e}"),
                )
            })?),
            None => None,
        };
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let certificates = read_certificates(path).map_err(|r| error("ca_file", r))?;
                let (added, ignored) = roots.add_parsable_certificates(certificates);
                if added == 0 || ignored > 0 {
                    return Err(error(
                        "ca_file",
                        format!(
                            "{}: {ignored} of {} certificates are not usable trust anchors",
                            path.display(),
                            added.saturating_add(ignored)
                        ),
                    ));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error("tls", e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certificates(cert).map_err(|r| error("client_cert_file", r))?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    error(
                        "client_key_file",
                        format!("{}: no usable PEM private key: {e}", key.display()),
                    )
                })?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    error(
                        "client_key_file",
                        format!(
                            "{} does not go with client_cert_file {}: {e}",
                            key.display(),
                            cert.display()
                        ),
                    )
                })?
            }
            (Some(_), None) => {
                return Err(error(
                    "client_key_file",
                    "is required with client_cert_file".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(error(
                    "client_cert_file",
                    "is required with client_key_file".into(),
                ));
            }
        };
        Ok(Prepared {
            config,
            server_name,
        })
    }
}

/// The one crypto provider: ring, named explicitly, so a process-wide default (or another
/// crate enabling aws-lc-rs) never decides it. ring builds with a C compiler alone; rustls
/// 0.23.48 deprecated it because it has no post-quantum key exchange, which matters less on
/// the proxy-to-origin hop than towards clients (as `ravelin-tls` records for the listener).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[expect(
        deprecated,
        reason = "ring is the workspace's provider (no aws-lc-rs build tools); no post-quantum key exchange, documented above"
    )]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

// === impl ConnectTimeout ===

/// Bounds the whole connection setup — TCP connect and, for `https://`, the TLS handshake —
/// by the upstream's `connect_timeout`. The plain connector's own timeout covers only the TCP
/// connect; without this, an origin that accepts and never finishes the handshake would hold
/// the request until its response timeout (a 504) instead of failing fast as a connect error
/// (a 502, retried like any failed connect).
#[derive(Debug, Clone)]
pub(crate) struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

impl<C> ConnectTimeout<C> {
    pub(crate) fn new(inner: C, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<C> Service<Uri> for ConnectTimeout<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    // Boxed: one allocation per new connection (not per request), and hyper-util needs an
    // `Unpin` future.
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_elapsed) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "connection not established within connect_timeout ({timeout:?}), TLS handshake included"
                    ),
                )) as BoxError),
            }
        })
    }
}

/// The certificates of a PEM file: at least one, at most [`MAX_PEM_CERTIFICATES`].
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certificates = Vec::new();
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    for certificate in iter {
        let certificate =
            certificate.map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
        if certificates.len() >= MAX_PEM_CERTIFICATES {
            return Err(format!(
                "{}: more than {MAX_PEM_CERTIFICATES} certificates",
                path.display()
            ));
        }
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TlsSettings {
        TlsSettings::default()
    }

    fn field(result: Result<Prepared, UpstreamError>) -> &'static str {
        match result {
            Err(UpstreamError::Tls { field, .. }) => field,
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }

    #[test]
    fn public_roots_by_default_and_nothing_for_http() {
        assert!(
            settings()
                .prepare("web", false)
                .unwrap()
                .config
                .alpn_protocols
                .is_empty()
        );
        let prepared = settings().prepare("web", true).unwrap();
        assert!(prepared.server_name.is_none());
        assert!(prepared.config.alpn_protocols.is_empty());
    }

    #[test]
    fn bad_settings_name_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let cases: [(TlsSettings, bool, &str); 7] = [
            (
                TlsSettings {
                    ca_file: Some(missing.clone()),
                    ..settings()
                },
                false,
                "ca_file",
            ),
            (
                TlsSettings {
                    server_name: Some("a.example".into()),
                    ..settings()
                },
                false,
                "tls_server_name",
            ),
            (
                TlsSettings {
                    ca_file: Some(missing.clone()),
                    ..settings()
                },
                true,
                "ca_file",
            ),
            (
                TlsSettings {
                    ca_file: Some(empty.clone()),
                    ..settings()
                },
                true,
                "ca_file",
            ),
            (
                TlsSettings {
                    server_name: Some("not a name!".into()),
                    ..settings()
                },
                true,
                "tls_server_name",
            ),
            (
                TlsSettings {
                    client_cert_file: Some(empty.clone()),
                    ..settings()
                },
                true,
                "client_key_file",
            ),
            (
                TlsSettings {
                    client_key_file: Some(empty.clone()),
                    ..settings()
                },
                true,
                "client_cert_file",
            ),
        ];
        for (settings, https, expected) in cases {
            assert_eq!(
                field(settings.prepare("web", https)),
                expected,
                "{settings:?}"
            );
        }
        let message = TlsSettings {
            ca_file: Some(missing.clone()),
            ..settings()
        }
        .prepare("web", true)
        .unwrap_err()
        .to_string();
        assert!(
            message.starts_with("upstream \"web\": ca_file: "),
            "{message}"
        );
        assert!(message.contains("missing.pem: cannot read"), "{message}");
    }
}
