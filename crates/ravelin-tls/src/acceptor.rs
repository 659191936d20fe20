//! The TLS acceptor: the ClientHello read (and fingerprinted) first, then the rustls handshake,
//! within a deadline and a bound on concurrent handshakes.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use ravelin_http::TlsInfo;
use ravelin_primitives::Violations;
use rustls::server::{ResolvesServerCert, ServerSessionMemoryCache};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;

use crate::clienthello::{MAX_CLIENT_HELLO_BYTES, parse_client_hello, record_bytes_needed};
use crate::ja4::Ja4;
use crate::replay::Rewind;

/// The ALPN protocols offered, in the server's order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Sessions kept for resumption by session id (TLS 1.2); TLS 1.3 and ticket-capable TLS 1.2
/// clients resume with stateless tickets instead.
pub const SESSION_CACHE_ENTRIES: usize = 4096;

/// The most bytes read from a client before its ClientHello is complete: the parser's own
/// bound ([`MAX_CLIENT_HELLO_BYTES`], record headers included). A client that needs more is
/// handshaken without a fingerprint.
pub const MAX_HELLO_READ_BYTES: usize = MAX_CLIENT_HELLO_BYTES;

/// How the acceptor bounds handshakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptorConfig {
    /// The whole handshake, ClientHello read included, must finish within this (default 10 s;
    /// at most [`Self::MAX_HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once, counted from the moment a client's ClientHello has
    /// arrived (default 1024; 1 to [`Self::MAX_HANDSHAKES`]). One past the bound is closed at
    /// once: handshakes are the expensive part of a connection (key exchange, signatures), and a
    /// flood of them must not starve established connections. Waiting for a silent client's
    /// hello takes no slot (the server's connection limits and the deadline bound that).
    pub max_handshakes: usize,
    /// Read the ClientHello and compute its JA4 (default on).
    pub fingerprint: bool,
}

impl AcceptorConfig {
    /// The upper bound of [`handshake_timeout`](Self::handshake_timeout).
    pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
    /// The upper bound of [`max_handshakes`](Self::max_handshakes).
    pub const MAX_HANDSHAKES: usize = 65_536;

    /// Checks the bounds.
    ///
    /// # Errors
    /// [`AcceptorError::Config`] naming every setting out of bounds.
    pub fn check(&self) -> Result<(), AcceptorError> {
        self.violations()
            .map_err(|violations| AcceptorError::Config(violations.to_string()))
    }

    /// Every setting out of bounds, each under its own name (`handshake_timeout`,
    /// `max_handshakes`): for a config file's validation to report under its section.
    ///
    /// # Errors
    /// The violations.
    pub fn violations(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        if self.handshake_timeout.is_zero() || self.handshake_timeout > Self::MAX_HANDSHAKE_TIMEOUT
        {
            v.push(
                "handshake_timeout",
                format!(
                    "must be above 0 and at most {:?}, got {:?}",
                    Self::MAX_HANDSHAKE_TIMEOUT,
                    self.handshake_timeout
                ),
            );
        }
        if self.max_handshakes == 0 || self.max_handshakes > Self::MAX_HANDSHAKES {
            v.push(
                "max_handshakes",
                format!(
                    "must be 1 to {}, got {}",
                    Self::MAX_HANDSHAKES,
                    self.max_handshakes
                ),
            );
        }
        v.into_result()
    }
}

impl Default for AcceptorConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            fingerprint: true,
        }
    }
}

/// Why an acceptor could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptorError {
    /// A setting is out of bounds.
    #[error("tls acceptor: {0}")]
    Config(String),
    /// rustls refused the configuration.
    #[error("tls acceptor: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why one connection's handshake did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// [`max_handshakes`](AcceptorConfig::max_handshakes) were in progress: closed at once.
    #[error("too many handshakes in progress")]
    Busy,
    /// The handshake did not finish within the deadline.
    #[error("handshake timed out")]
    TimedOut,
    /// The client closed or the handshake failed (a protocol error, no common cipher, an
    /// unknown server name with no default certificate).
    #[error("handshake failed: {0}")]
    Failed(#[source] io::Error),
}

impl HandshakeError {
    /// A short label: `busy`, `timeout`, `failed` (a metric label, a log field).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::TimedOut => "timeout",
            Self::Failed(_) => "failed",
        }
    }
}

/// A connection past its handshake.
#[derive(Debug)]
pub struct Accepted<IO> {
    /// The TLS stream to serve HTTP on.
    pub stream: TlsStream<Rewind<IO>>,
    /// What the handshake established (set it on every request of the connection).
    pub info: TlsInfo,
}

/// Terminates TLS on accepted connections: reads the ClientHello (bounded) to compute the
/// client's JA4 fingerprint, then replays it to rustls for the handshake. Cheap to clone.
///
/// ```no_run
/// # async fn run(resolver: std::sync::Arc<dyn rustls::server::ResolvesServerCert>) -> Result<(), Box<dyn std::error::Error>> {
/// use ravelin_tls::acceptor::{AcceptorConfig, TlsAcceptor};
///
/// let acceptor = TlsAcceptor::new(resolver, AcceptorConfig::default())?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// let (tcp, _) = listener.accept().await?;
/// let accepted = acceptor.accept(tcp).await?;
/// println!("ja4 {:?}, alpn {:?}", accepted.info.ja4, accepted.info.alpn);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    handshakes: Arc<Semaphore>,
    config: AcceptorConfig,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("config", &self.config)
            .field("handshakes_available", &self.handshakes.available_permits())
            .finish_non_exhaustive()
    }
}

struct Metrics {
    ok: metrics::Counter,
    busy: metrics::Counter,
    timeout: metrics::Counter,
    failed: metrics::Counter,
    resumed: metrics::Counter,
    unfingerprinted: metrics::Counter,
}

impl Metrics {
    fn new() -> Self {
        let outcome = |outcome: &'static str| metrics::counter!("ravelin_tls_handshakes_total", "outcome" => outcome);
        Self {
            ok: outcome("ok"),
            busy: outcome("busy"),
            timeout: outcome("timeout"),
            failed: outcome("failed"),
            resumed: metrics::counter!("ravelin_tls_resumed_sessions_total"),
            unfingerprinted: metrics::counter!("ravelin_tls_client_hello_unparsed_total"),
        }
    }
}

/// The crypto provider of every TLS connection Ravelin makes or accepts: *ring*.
///
/// Chosen because it builds with a C compiler alone (aws-lc-rs, rustls' default, needs more of
/// a build toolchain than a fresh CI machine has) and is small and audited. The price, and the
/// reason rustls 0.23.48 deprecated this function: *ring* has no post-quantum key exchange
/// (`X25519MLKEM768`), so clients that offer it (current Chrome) fall back to `X25519`. Moving
/// to aws-lc-rs is this one function; `docs/architecture.md` records the trade-off.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[expect(
        deprecated,
        reason = "ring is the chosen provider (no build tools beyond a C compiler); its lack of post-quantum key exchange is documented above"
    )]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// The server configuration the acceptor uses: TLS 1.3 and 1.2 with the ring provider, no
/// client authentication, certificates from `resolver` (by SNI), ALPN `h2` then `http/1.1`,
/// resumption by stateless tickets and by a bounded session cache.
///
/// # Errors
/// [`AcceptorError::Rustls`] when rustls refuses the versions or the ticketer.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<rustls::ServerConfig, AcceptorError> {
    let provider = crypto_provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(config)
}

impl TlsAcceptor {
    /// An acceptor serving the certificates of `resolver` with [`server_config`].
    ///
    /// # Errors
    /// [`AcceptorError`] when a bound is out of range or rustls refuses the configuration.
    pub fn new(
        resolver: Arc<dyn ResolvesServerCert>,
        config: AcceptorConfig,
    ) -> Result<Self, AcceptorError> {
        Self::with_server_config(Arc::new(server_config(resolver)?), config)
    }

    /// An acceptor with a rustls configuration of one's own (ALPN, versions, client auth).
    ///
    /// # Errors
    /// [`AcceptorError::Config`] when a bound is out of range.
    pub fn with_server_config(
        server: Arc<rustls::ServerConfig>,
        config: AcceptorConfig,
    ) -> Result<Self, AcceptorError> {
        config.check()?;
        Ok(Self {
            inner: tokio_rustls::TlsAcceptor::from(server),
            handshakes: Arc::new(Semaphore::new(config.max_handshakes)),
            config,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// The bounds in force.
    pub fn config(&self) -> &AcceptorConfig {
        &self.config
    }

    /// Handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.config
            .max_handshakes
            .saturating_sub(self.handshakes.available_permits())
    }

    /// Handshakes `io`: refused at once past [`max_handshakes`](AcceptorConfig::max_handshakes),
    /// cut off past [`handshake_timeout`](AcceptorConfig::handshake_timeout).
    ///
    /// # Errors
    /// [`HandshakeError`]; each outcome is counted in `ravelin_tls_handshakes_total{outcome}`.
    pub async fn accept<IO>(&self, io: IO) -> Result<Accepted<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = tokio::time::timeout(self.config.handshake_timeout, self.handshake(io));
        let result = match handshake.await {
            Ok(result) => result,
            Err(_) => Err(HandshakeError::TimedOut),
        };
        match &result {
            Ok(accepted) => {
                self.metrics.ok.increment(1);
                if accepted.info.resumed {
                    self.metrics.resumed.increment(1);
                }
            }
            Err(HandshakeError::TimedOut) => self.metrics.timeout.increment(1),
            Err(_) => self.metrics.failed.increment(1),
        }
        result
    }

    async fn handshake<IO>(&self, mut io: IO) -> Result<Accepted<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        // The ClientHello is read before a handshake slot is taken: waiting for a client's first
        // bytes costs a buffer, not CPU, so silent sockets (bounded by the server's connection
        // limits and this deadline) cannot hold the slots that real handshakes need. The slot
        // covers rustls' part: key exchange and signatures.
        let (prefix, ja4) = read_client_hello(&mut io, self.config.fingerprint)
            .await
            .map_err(HandshakeError::Failed)?;
        if self.config.fingerprint && ja4.is_none() {
            // Not a hello this parser reads: rustls decides; the connection goes on without a
            // fingerprint (and a guard can tell: TLS without a JA4).
            self.metrics.unfingerprinted.increment(1);
        }
        let Ok(_permit) = self.handshakes.try_acquire() else {
            self.metrics.busy.increment(1);
            return Err(HandshakeError::Busy);
        };
        let stream = self
            .inner
            .accept(Rewind::new(prefix, io))
            .await
            .map_err(HandshakeError::Failed)?;
        let (_, connection) = stream.get_ref();
        let info = TlsInfo {
            server_name: connection.server_name().map(Arc::from),
            alpn: connection.alpn_protocol().map(Arc::from),
            version: match connection.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "unknown",
            },
            ja4,
            resumed: matches!(
                connection.handshake_kind(),
                Some(rustls::HandshakeKind::Resumed)
            ),
        };
        Ok(Accepted { stream, info })
    }
}

/// Reads from `io` until the bytes hold a whole ClientHello (its JA4 returned when
/// `fingerprint`) or can never become one this parser reads (`None`: the handshake goes on
/// without a fingerprint), at most [`MAX_HELLO_READ_BYTES`]. Returns every byte read, to be
/// replayed to rustls.
///
/// Only record and handshake headers are looked at while bytes arrive
/// ([`record_bytes_needed`]), and each read asks for exactly what is still missing, so a client
/// sending one byte at a time costs reads, not re-parses; the hello is parsed once.
async fn read_client_hello<IO>(
    io: &mut IO,
    fingerprint: bool,
) -> io::Result<(Vec<u8>, Option<Arc<str>>)>
where
    IO: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    loop {
        let needed = match record_bytes_needed(&buf) {
            Ok(0) => break,
            Ok(needed) => needed,
            // Not a hello this parser reads: rustls takes it from here.
            Err(_) => return Ok((buf, None)),
        };
        let room = MAX_HELLO_READ_BYTES.saturating_sub(buf.len());
        let want = needed.min(room);
        if want == 0 {
            return Ok((buf, None));
        }
        let mut limited = (&mut *io).take(u64::try_from(want).unwrap_or(u64::MAX));
        if limited.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed before its ClientHello was complete",
            ));
        }
    }
    if !fingerprint {
        return Ok((buf, None));
    }
    let ja4 = parse_client_hello(&buf)
        .ok()
        .map(|hello| Arc::from(Ja4::from_client_hello(&hello).to_string()));
    Ok((buf, ja4))
}
