//! Certificates as validated, hot-reloaded files, chosen by SNI.
//!
//! Each configured certificate ([`CertificateConfig`]) is a `ravelin_config` [`Store`] of a
//! [`ServerCertificate`]: its chain and key files are read as one document, decoded from PEM and
//! checked (key matches the certificate, validity dates, chain signatures, configured names)
//! before it may replace the last known good one. A [`CertificateSet`] holds them all and
//! answers rustls' [`ResolvesServerCert`] by SNI, lock-free.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use ravelin_config::{Document, Outcome, Rejection, RejectionRecord, Store, StoreBuilder};
use ravelin_primitives::clock::{Clock, WallClock};
use ravelin_primitives::{Validate, Violations};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// A wall clock, shared: what a [`CertificateSet`] checks validity dates against.
pub type SharedWallClock = Arc<dyn Clock<Instant = SystemTime>>;

/// The metric gauge of the Unix time each active certificate expires at (see
/// [`CertificateSet`]).
pub const NOT_AFTER_GAUGE: &str = "ravelin_tls_certificate_not_after_timestamp_seconds";

/// The metric gauge of the seconds until each active certificate expires (negative once it
/// has), refreshed by [`CertificateSet::publish_expiry`].
pub const SECONDS_TO_EXPIRY_GAUGE: &str = "ravelin_tls_certificate_expiry_seconds";

/// The size cap of a certificate's files together: a chain of a few certificates and a key is a
/// few KiB; 256 KiB leaves room for long chains and refuses a runaway file before parsing.
pub const MAX_CERTIFICATE_BYTES: u64 = 256 * 1024;

// === CertificateConfig ===

/// One certificate the edge serves: `[[tls.certificates]]` in the edge's configuration.
///
/// ```toml
/// [[tls.certificates]]
/// cert_file = "/etc/ravelin/tls/example.com.crt"   # the chain: leaf first, then intermediates
/// key_file = "/etc/ravelin/tls/example.com.key"    # may be cert_file itself (a combined file)
/// server_names = ["example.com", "*.example.com"]  # optional: default, the certificate's SANs
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file of the certificate chain, leaf first, each certificate followed by its issuer.
    pub cert_file: PathBuf,
    /// PEM file of the private key (PKCS#8, PKCS#1 RSA or SEC1 EC); the same path as
    /// `cert_file` for a combined file (the chain, then the key).
    pub key_file: PathBuf,
    /// The names this certificate is chosen for by SNI (`example.com`, `*.example.com`). Each
    /// must be covered by the certificate's subject alternative names, or the certificate is
    /// rejected. Empty (the default): the certificate's own DNS names.
    #[serde(default)]
    pub server_names: Vec<String>,
}

impl CertificateConfig {
    /// A certificate read from `cert_file` and `key_file`, chosen for its own DNS names.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            server_names: Vec::new(),
        }
    }

    /// The names to choose this certificate for by SNI (see
    /// [`server_names`](CertificateConfig::server_names)).
    pub fn server_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.server_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// The files read as one document: the chain then the key, or the combined file once.
    pub fn files(&self) -> Vec<PathBuf> {
        if self.cert_file == self.key_file {
            vec![self.cert_file.clone()]
        } else {
            vec![self.cert_file.clone(), self.key_file.clone()]
        }
    }

    /// The certificate's label in metrics, logs and its store's name: the chain file's path.
    pub fn label(&self) -> String {
        self.cert_file.display().to_string()
    }

    /// A store of this certificate, its first document read and checked now against `clock`.
    ///
    /// # Errors
    /// Why the files' first document was rejected.
    pub fn store(&self, clock: SharedWallClock) -> Result<Store<ServerCertificate>, Rejection> {
        let config = self.clone();
        StoreBuilder::with_decoder(
            format!("tls certificate {}", self.label()),
            "pem",
            move |bytes: &[u8]| ServerCertificate::decode(bytes, &config, clock.now()),
        )
        .max_bytes(MAX_CERTIFICATE_BYTES)
        // No growth bound: a renewal from an ECDSA leaf to an RSA chain is legitimately many
        // times larger, and refusing it would keep an expiring certificate serving.
        // MAX_CERTIFICATE_BYTES bounds the files.
        .max_growth(None)
        .files(self.files())
        .build()
    }
}

impl Validate for CertificateConfig {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        if self.cert_file.as_os_str().is_empty() {
            v.push("cert_file", "is empty");
        }
        if self.key_file.as_os_str().is_empty() {
            v.push("key_file", "is empty");
        }
        for (i, name) in self.server_names.iter().enumerate() {
            if let Err(why) = check_server_name(name) {
                v.push(format!("server_names[{i}]"), format!("{name:?} {why}"));
            }
        }
        v.into_result()
    }
}

/// Whether `name` is a DNS name or a wildcard of one (`*.example.com`), lowercase.
fn check_server_name(name: &str) -> Result<(), &'static str> {
    let host = name.strip_prefix("*.").unwrap_or(name);
    if host.is_empty() || host.len() > 253 {
        return Err("is not a DNS name (empty or longer than 253 bytes)");
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(
                "is not a lowercase DNS name (labels of a-z, 0-9 and '-'; a wildcard only as `*.` in front)",
            );
        }
    }
    Ok(())
}

// === ServerCertificate ===

/// A certificate chain with its private key, decoded from PEM and checked: what a certificate's
/// [`Store`] holds and a handshake is served from.
///
/// Decoding (a [`Rejection::Parse`]) reads the PEM sections — the chain's certificates, then
/// exactly one private key — and parses each certificate and the key. Validation (a
/// [`Rejection::Invalid`], each violation naming `cert_file`, `cert_file[i]` for the i-th
/// certificate of the chain, `key_file` or `server_names[i]`) checks that the key matches the
/// leaf, that every certificate is within its validity dates at the time of decoding, that each
/// certificate is issued and signed by the next one, and that every configured server name is
/// covered by the leaf's DNS names.
///
/// Dates are checked when a document is offered: an active certificate that expires later keeps
/// being served (there is nothing better to serve), and says so through
/// [`seconds_to_expiry`](ServerCertificate::seconds_to_expiry), the status and the expiry gauge.
pub struct ServerCertificate {
    key: Arc<CertifiedKey>,
    subject: String,
    dns_names: Vec<String>,
    not_before: SystemTime,
    not_after: SystemTime,
    server_names: Vec<String>,
    problems: Vec<(String, String)>,
}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("subject", &self.subject)
            .field("dns_names", &self.dns_names)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

impl ServerCertificate {
    /// Decodes `pem` — the chain's certificates, then the private key — for the certificate
    /// `config` describes (its files name the problems), and checks it at time `now`.
    ///
    /// # Errors
    /// Why the bytes are not a chain and a key (malformed PEM, no certificate, no key or more
    /// than one, a certificate that is not X.509, a key type the ring provider does not support).
    /// What is wrong with a well-formed chain and key is not an error here but the
    /// [`Document::validate`] answer of the value returned, so a store reports it as invalid.
    pub fn decode(pem: &[u8], config: &CertificateConfig, now: SystemTime) -> Result<Self, String> {
        // The store names the files in every rejection; a message adds the one at fault when
        // it is known (the concatenated bytes do not say where one file ends).
        let cert_file = config.cert_file.display();
        let key_file = config.key_file.display();
        let pem = separate_sections(pem);
        let mut chain = Vec::new();
        let mut keys = Vec::new();
        for (i, section) in <(SectionKind, Vec<u8>)>::pem_slice_iter(&pem).enumerate() {
            let (kind, der) = section.map_err(|e| {
                format!(
                    "malformed PEM after {i} well-formed sections: {}",
                    pem_error(&e)
                )
            })?;
            match kind {
                SectionKind::Certificate if keys.is_empty() => {
                    chain.push(CertificateDer::from(der));
                }
                SectionKind::Certificate => {
                    return Err(
                        "a CERTIFICATE section follows the private key: expected the chain, then the key"
                            .to_owned(),
                    );
                }
                SectionKind::PrivateKey => {
                    keys.push(PrivateKeyDer::Pkcs8(der.into()));
                }
                SectionKind::RsaPrivateKey => keys.push(PrivateKeyDer::Pkcs1(der.into())),
                SectionKind::EcPrivateKey => keys.push(PrivateKeyDer::Sec1(der.into())),
                other => {
                    return Err(format!(
                        "unexpected PEM section {other:?}: expected certificates and one private key"
                    ));
                }
            }
        }
        if chain.is_empty() {
            return Err(format!("no CERTIFICATE section in cert_file {cert_file}"));
        }
        let key = match keys.len() {
            1 => keys.pop(),
            0 => None,
            n => {
                return Err(format!(
                    "{n} private keys found: expected exactly one, in key_file {key_file}"
                ));
            }
        };
        let Some(key) = key else {
            return Err(format!(
                "no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section) in key_file {key_file}"
            ));
        };
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("unsupported private key in key_file {key_file}: {e}"))?;

        let mut parsed = Vec::with_capacity(chain.len());
        for (i, der) in chain.iter().enumerate() {
            match X509Certificate::from_der(der) {
                Ok((_, cert)) => parsed.push(cert),
                Err(e) => {
                    return Err(format!(
                        "certificate {i} of the chain in cert_file {cert_file} is not X.509: {e}"
                    ));
                }
            }
        }
        let Some(leaf) = parsed.first() else {
            return Err(format!("no CERTIFICATE section in cert_file {cert_file}"));
        };
        let dns_names = match leaf.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                return Err(format!(
                    "the subject alternative names of the certificate in cert_file {cert_file} are malformed: {e}"
                ));
            }
        };

        let mut problems = Vec::new();
        let key = CertifiedKey::new(chain.clone(), signing_key);
        match key.keys_match() {
            // As rustls' own `CertifiedKey::from_der`: a key that cannot tell its public half is
            // not refused (ring's keys always can).
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                problems.push((
                    "key_file".to_owned(),
                    format!(
                        "the private key in {key_file} does not match the certificate in {cert_file}"
                    ),
                ));
            }
            Err(e) => problems.push((
                "key_file".to_owned(),
                format!(
                    "the private key in {key_file} cannot be checked against the certificate in {cert_file}: {e}"
                ),
            )),
        }
        for (i, cert) in parsed.iter().enumerate() {
            let path = if i == 0 {
                "cert_file".to_owned()
            } else {
                format!("cert_file[{i}]")
            };
            let validity = cert.validity();
            let not_before = system_time(validity.not_before.timestamp());
            let not_after = system_time(validity.not_after.timestamp());
            let what = if i == 0 {
                format!(
                    "certificate {:?} in {cert_file}",
                    cert.subject().to_string()
                )
            } else {
                format!(
                    "certificate {i} of the chain ({:?}) in {cert_file}",
                    cert.subject().to_string()
                )
            };
            let dates = format!(
                "valid from {} to {}, now {}",
                validity.not_before,
                validity.not_after,
                asn1_now(now)
            );
            if now < not_before {
                problems.push((path.clone(), format!("{what} is not yet valid: {dates}")));
            } else if now > not_after {
                problems.push((path.clone(), format!("{what} has expired: {dates}")));
            }
            if let Some(issuer) = parsed.get(i + 1) {
                if cert.issuer().as_raw() != issuer.subject().as_raw() {
                    problems.push((
                        path,
                        format!(
                            "{what} is issued by {:?}, but the next certificate of the chain is {:?}",
                            cert.issuer().to_string(),
                            issuer.subject().to_string()
                        ),
                    ));
                } else if let Err(e) = cert.verify_signature(Some(issuer.public_key())) {
                    problems.push((
                        path,
                        format!(
                            "{what} is not signed by the next certificate of the chain ({:?}): {e}",
                            issuer.subject().to_string()
                        ),
                    ));
                }
            }
        }
        for (i, name) in config.server_names.iter().enumerate() {
            if !dns_names.iter().any(|san| covers(san, name)) {
                problems.push((
                    format!("server_names[{i}]"),
                    format!(
                        "{name:?} is not covered by the certificate in {cert_file} (its DNS names: {})",
                        if dns_names.is_empty() {
                            "none".to_owned()
                        } else {
                            dns_names.join(", ")
                        }
                    ),
                ));
            }
        }
        let validity = leaf.validity();
        Ok(Self {
            subject: leaf.subject().to_string(),
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
            server_names: if config.server_names.is_empty() {
                dns_names.clone()
            } else {
                config.server_names.clone()
            },
            dns_names,
            key: Arc::new(key),
            problems,
        })
    }

    /// The chain and signing key rustls serves.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// The leaf's subject (`CN=example.com, O=…`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The leaf's DNS subject alternative names, lowercase.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The names this certificate is chosen for: the configured server names, or its DNS names.
    pub fn server_names(&self) -> &[String] {
        &self.server_names
    }

    /// The start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The end of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Seconds from `now` to the end of the leaf's validity; negative once it has expired.
    pub fn seconds_to_expiry(&self, now: SystemTime) -> i64 {
        match self.not_after.duration_since(now) {
            Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            Err(past) => i64::try_from(past.duration().as_secs()).map_or(i64::MIN, |s| -s),
        }
    }
}

impl Document for ServerCertificate {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        for (path, message) in &self.problems {
            v.push(path.clone(), message.clone());
        }
        v.into_result()
    }
}

/// PEM sections of two files concatenated without a final newline ("-----END
/// CERTIFICATE----------BEGIN PRIVATE KEY-----") are put back on lines of their own.
fn separate_sections(pem: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const JOINED: &[u8] = b"----------BEGIN ";
    if !pem.windows(JOINED.len()).any(|w| w == JOINED) {
        return std::borrow::Cow::Borrowed(pem);
    }
    let mut out = Vec::with_capacity(pem.len().saturating_add(16));
    let mut rest = pem;
    while let Some(at) = rest.windows(JOINED.len()).position(|w| w == JOINED) {
        let (head, tail) = rest.split_at(at.saturating_add(5));
        out.extend_from_slice(head);
        out.push(b'\n');
        rest = tail;
    }
    out.extend_from_slice(rest);
    std::borrow::Cow::Owned(out)
}

/// A PEM error in words (rustls-pki-types prints markers and lines as byte arrays).
fn pem_error(error: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { end_marker } => format!(
            "no \"-----END {}-----\" line (a truncated file?)",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "malformed section start {:?}",
            String::from_utf8_lossy(line)
        ),
        Error::Base64Decode(e) => format!("invalid base64 ({e})"),
        other => other.to_string(),
    }
}

/// A Unix timestamp as a `SystemTime` (certificates may predate 1970 in theory).
fn system_time(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH
            .checked_add(magnitude)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(magnitude)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// `now` printed as the certificates' dates are.
fn asn1_now(now: SystemTime) -> String {
    let secs = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map_or_else(|_| format!("{secs} s after 1970"), |t| t.to_string())
}

/// Whether the certificate name `san` covers the host name `name` (both lowercase), per RFC 6125
/// §6.4.3: a wildcard only as the whole left-most label, matching exactly one non-empty label
/// (`*.example.com` covers `a.example.com`, not `example.com` nor `a.b.example.com`). A
/// configured wildcard name is covered only by the same wildcard.
pub fn covers(san: &str, name: &str) -> bool {
    let san = san.trim_end_matches('.');
    let name = name.trim_end_matches('.');
    if san.eq_ignore_ascii_case(name) {
        return true;
    }
    let Some(suffix) = san.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => {
            !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)
        }
        None => false,
    }
}

// === CertificateSet ===

/// Several certificates, each a hot-reloaded [`Store`] of a [`ServerCertificate`] (last known
/// good), chosen by SNI: an exact server name first, then a wildcard (`*.example.com` for
/// `a.example.com`), then the default — the first certificate (or, while it has none, the first
/// that has one). A client without SNI gets the default. A name claimed by two certificates is
/// the first one's.
///
/// Choosing is lock-free: the name table is an `arc-swap` snapshot rebuilt when a certificate is
/// installed, and each certificate is read from its store's snapshot. Clones share one set.
///
/// A certificate whose files are rejected at startup does not stop the others: the set starts
/// as long as one certificate loads, reports the rejected one in [`status`](CertificateSet::status),
/// and loads it on a later [`reload`](CertificateSet::reload) once its files are good.
///
/// Metrics (gauges per `certificate`): `ravelin_tls_certificate_not_after_timestamp_seconds`,
/// the Unix time at which the active certificate expires (set on every install and reload, as
/// Prometheus' blackbox exporter's `probe_ssl_earliest_cert_expiry`), and
/// `ravelin_tls_certificate_expiry_seconds`, the seconds until then (set on install and by
/// [`publish_expiry`](CertificateSet::publish_expiry), which a server calls on a timer). Alert
/// on `ravelin_tls_certificate_expiry_seconds < 14 * 86400`.
///
/// Files are re-read by [`reload`](CertificateSet::reload) (every file, every time: for SIGHUP
/// and the admin API), [`poll`](CertificateSet::poll) (only what changed) or
/// [`watch`](CertificateSet::watch) (`poll` on a timer).
#[derive(Clone)]
pub struct CertificateSet {
    inner: Arc<SetInner>,
}

struct SetInner {
    entries: Vec<Entry>,
    table: ArcSwap<NameTable>,
    clock: SharedWallClock,
    /// Serialises reloads and table rebuilds (control plane only; the handshake never takes it).
    control: Mutex<()>,
}

struct Entry {
    config: CertificateConfig,
    store: ArcSwapOption<Store<ServerCertificate>>,
    /// Why the first document was rejected, while there is no store.
    startup_rejection: Mutex<Option<RejectionRecord>>,
}

/// Server names to entry indexes.
#[derive(Debug, Default)]
struct NameTable {
    exact: HashMap<String, usize>,
    /// `example.com` for `*.example.com`.
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
}

/// Why a [`CertificateSet`] could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// No certificate was configured.
    #[error("no TLS certificate configured")]
    NoneConfigured,
    /// Every configured certificate was rejected.
    #[error("no TLS certificate could be loaded: {}", join_rejections(.0))]
    NoneLoaded(Vec<Rejection>),
    /// A certificate's configuration is invalid.
    #[error("tls.certificates[{index}]: {violations}")]
    Invalid {
        /// Its position in the configuration.
        index: usize,
        /// What is wrong.
        violations: Violations,
    },
}

fn join_rejections(rejections: &[Rejection]) -> String {
    rejections
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The state of one certificate of a [`CertificateSet`], for status pages.
#[derive(Debug, Clone)]
pub struct CertificateStatus {
    /// The certificate's label (its chain file; the metric's `certificate` label).
    pub label: String,
    /// The files it is read from, in order.
    pub files: Vec<PathBuf>,
    /// The configured server names (empty: the certificate's own DNS names).
    pub configured_names: Vec<String>,
    /// The certificate being served, if one was ever loaded.
    pub active: Option<ActiveCertificate>,
    /// Rejections since the last install or unchanged reload.
    pub consecutive_rejections: u64,
    /// The most recent rejection since the active certificate was installed: what is wrong with
    /// the files now (or, with no active certificate, why none could be loaded).
    pub last_rejection: Option<RejectionRecord>,
}

/// What a [`CertificateStatus`] reports of the certificate being served.
#[derive(Debug, Clone)]
pub struct ActiveCertificate {
    /// The leaf's subject.
    pub subject: String,
    /// The names it is chosen for by SNI.
    pub server_names: Vec<String>,
    /// The leaf's DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// The end of the leaf's validity.
    pub not_after: SystemTime,
    /// Seconds until then, at the time of the report (negative once expired).
    pub seconds_to_expiry: i64,
    /// When it was installed.
    pub loaded_at: SystemTime,
}

impl fmt::Debug for CertificateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateSet")
            .field(
                "certificates",
                &self
                    .inner
                    .entries
                    .iter()
                    .map(|e| e.config.label())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl CertificateSet {
    /// Loads every certificate of `configs`, checking validity dates against the system clock.
    ///
    /// # Errors
    /// When nothing is configured, a configuration is invalid, or no certificate loads.
    pub fn load(configs: &[CertificateConfig]) -> Result<Self, CertificateError> {
        Self::load_with_clock(configs, Arc::new(WallClock))
    }

    /// [`load`](CertificateSet::load) with the clock validity dates are checked against (tests
    /// use a `ManualClock<SystemTime>`).
    ///
    /// # Errors
    /// As [`load`](CertificateSet::load).
    pub fn load_with_clock(
        configs: &[CertificateConfig],
        clock: SharedWallClock,
    ) -> Result<Self, CertificateError> {
        if configs.is_empty() {
            return Err(CertificateError::NoneConfigured);
        }
        let mut entries = Vec::with_capacity(configs.len());
        let mut rejections = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            Validate::validate(config)
                .map_err(|violations| CertificateError::Invalid { index, violations })?;
            let entry = Entry {
                config: config.clone(),
                store: ArcSwapOption::empty(),
                startup_rejection: Mutex::new(None),
            };
            match config.store(Arc::clone(&clock)) {
                Ok(store) => entry.store.store(Some(Arc::new(store))),
                Err(rejection) => {
                    tracing::warn!(
                        certificate = %config.label(),
                        "TLS certificate not loaded, the others are served: {rejection}"
                    );
                    *lock(&entry.startup_rejection) = Some(RejectionRecord {
                        rejection: rejection.clone(),
                        digest: None,
                        at: SystemTime::now(),
                    });
                    rejections.push(rejection);
                }
            }
            entries.push(entry);
        }
        if rejections.len() == entries.len() {
            return Err(CertificateError::NoneLoaded(rejections));
        }
        let set = Self {
            inner: Arc::new(SetInner {
                entries,
                table: ArcSwap::from_pointee(NameTable::default()),
                clock,
                control: Mutex::new(()),
            }),
        };
        set.refresh();
        Ok(set)
    }

    /// How many certificates are configured.
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether no certificate is configured (never true for a built set).
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    /// Re-reads every certificate's files; each good one replaces its last known good, each bad
    /// one is rejected (and reported by [`status`](CertificateSet::status)) while the previous
    /// one keeps serving. A certificate not loaded at startup is loaded now if its files are good.
    /// Returns one answer per certificate, in configuration order.
    pub fn reload(&self) -> Vec<Result<Outcome, Rejection>> {
        let outcomes = {
            let _control = lock(&self.inner.control);
            self.inner
                .entries
                .iter()
                .map(|entry| self.reload_entry(entry))
                .collect()
        };
        self.refresh();
        outcomes
    }

    fn reload_entry(&self, entry: &Entry) -> Result<Outcome, Rejection> {
        if let Some(store) = entry.store.load_full() {
            return store.reload();
        }
        match entry.config.store(Arc::clone(&self.inner.clock)) {
            Ok(store) => {
                let snapshot = store.load();
                entry.store.store(Some(Arc::new(store)));
                *lock(&entry.startup_rejection) = None;
                Ok(Outcome::Installed {
                    version: None,
                    digest: snapshot.meta().digest,
                })
            }
            Err(rejection) => {
                *lock(&entry.startup_rejection) = Some(RejectionRecord {
                    rejection: rejection.clone(),
                    digest: None,
                    at: SystemTime::now(),
                });
                Err(rejection)
            }
        }
    }

    /// One watch step for every certificate: each file whose bytes changed since the last look
    /// is offered (a good one installed, a bad one rejected once, not again on every poll, while
    /// the last good certificate keeps serving), and a certificate not loaded yet is tried
    /// again. Returns whether a certificate was installed; the SNI table and the expiry gauges
    /// are then rebuilt. [`watch`](CertificateSet::watch) calls this on a timer.
    pub fn poll(&self) -> bool {
        let installed = {
            let _control = lock(&self.inner.control);
            let mut installed = false;
            for entry in &self.inner.entries {
                installed |= match entry.store.load_full() {
                    Some(store) => matches!(store.poll(), Some(Ok(Outcome::Installed { .. }))),
                    None => self.reload_entry(entry).is_ok(),
                };
            }
            installed
        };
        if installed {
            self.refresh();
        }
        installed
    }

    /// Polls the certificates' files every `interval` ([`poll`](CertificateSet::poll)) on a
    /// thread of its own (reading files blocks; no async runtime is needed), until the returned
    /// handle is dropped.
    ///
    /// # Errors
    /// The operating system's, when the thread cannot be started.
    pub fn watch(&self, interval: Duration) -> std::io::Result<CertificateWatch> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let set = self.clone();
        let thread = std::thread::Builder::new()
            .name("ravelin-tls-certificates".into())
            .spawn(move || {
                // Dropping the handle drops the sender: `recv_timeout` returns at once.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    set.poll();
                }
            })?;
        Ok(CertificateWatch {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Rebuilds the name table from the active certificates and sets the expiry gauges.
    fn refresh(&self) {
        let _control = lock(&self.inner.control);
        let mut table = NameTable::default();
        for (index, entry) in self.inner.entries.iter().enumerate() {
            let Some(store) = entry.store.load_full() else {
                continue;
            };
            let certificate = store.load();
            table.default.get_or_insert(index);
            for name in certificate.server_names() {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => {
                        table.wildcard.entry(suffix.to_owned()).or_insert(index);
                    }
                    None => {
                        table.exact.entry(name).or_insert(index);
                    }
                }
            }
            let expiry = certificate
                .not_after()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics::gauge!(NOT_AFTER_GAUGE, "certificate" => entry.config.label()).set(expiry);
        }
        self.inner.table.store(Arc::new(table));
        self.publish_expiry();
    }

    /// Sets `ravelin_tls_certificate_expiry_seconds{certificate}` to the seconds until each
    /// active certificate expires (negative once it has). Call it on a timer (the edge does,
    /// every few seconds) so the gauge counts down between reloads.
    pub fn publish_expiry(&self) {
        let now = self.inner.clock.now();
        for entry in &self.inner.entries {
            let Some(store) = entry.store.load_full() else {
                continue;
            };
            let seconds = store.load().value().seconds_to_expiry(now);
            #[expect(
                clippy::cast_precision_loss,
                reason = "seconds to expiry are far below 2^52; a gauge is an f64"
            )]
            let seconds = seconds as f64;
            metrics::gauge!(SECONDS_TO_EXPIRY_GAUGE, "certificate" => entry.config.label())
                .set(seconds);
        }
    }

    /// The certificate for a ClientHello's SNI (`None`: no SNI): exact name, then wildcard, then
    /// the default. Lock-free. `None` only if no certificate is loaded at all.
    pub fn resolve_name(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let table = self.inner.table.load();
        let chosen = server_name.and_then(|name| {
            let name = name.trim_end_matches('.');
            // SNI host names are ASCII; compare without allocating when already lowercase.
            let lower;
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name
            };
            table.exact.get(name).copied().or_else(|| {
                name.split_once('.')
                    .filter(|(label, _)| !label.is_empty())
                    .and_then(|(_, suffix)| table.wildcard.get(suffix).copied())
            })
        });
        chosen
            .and_then(|index| self.active_key(index))
            .or_else(|| table.default.and_then(|index| self.active_key(index)))
    }

    fn active_key(&self, index: usize) -> Option<Arc<CertifiedKey>> {
        let entry = self.inner.entries.get(index)?;
        let store = entry.store.load();
        store
            .as_ref()
            .map(|store| Arc::clone(store.current().certified_key()))
    }

    /// The state of every certificate, in configuration order.
    pub fn status(&self) -> Vec<CertificateStatus> {
        let now = self.inner.clock.now();
        self.inner
            .entries
            .iter()
            .map(|entry| {
                let store = entry.store.load_full();
                let (active, consecutive_rejections, last_rejection) = match store {
                    Some(store) => {
                        let status = store.status();
                        let certificate = store.load();
                        (
                            Some(ActiveCertificate {
                                subject: certificate.subject().to_owned(),
                                server_names: certificate.server_names().to_vec(),
                                dns_names: certificate.dns_names().to_vec(),
                                not_after: certificate.not_after(),
                                seconds_to_expiry: certificate.seconds_to_expiry(now),
                                loaded_at: certificate.meta().loaded_at,
                            }),
                            status.consecutive_rejections,
                            status.last_rejection,
                        )
                    }
                    None => {
                        let rejection = lock(&entry.startup_rejection).clone();
                        (None, u64::from(rejection.is_some()), rejection)
                    }
                };
                CertificateStatus {
                    label: entry.config.label(),
                    files: entry.config.files(),
                    configured_names: entry.config.server_names.clone(),
                    active,
                    consecutive_rejections,
                    last_rejection,
                }
            })
            .collect()
    }

    /// The files of every certificate, in configuration order (a combined file once), for a
    /// caller that watches them itself.
    pub fn files(&self) -> Vec<PathBuf> {
        self.inner
            .entries
            .iter()
            .flat_map(|e| e.config.files())
            .collect()
    }
}

/// Stops a [`CertificateSet::watch`] thread when dropped (waiting for a poll in progress).
#[derive(Debug)]
pub struct CertificateWatch {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for CertificateWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread would be a bug here; it has already been reported.
            let _ = thread.join();
        }
    }
}

impl ResolvesServerCert for CertificateSet {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.resolve_name(client_hello.server_name())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain records: a panic while holding the lock cannot leave them inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
