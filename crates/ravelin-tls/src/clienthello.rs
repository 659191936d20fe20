//! The TLS ClientHello, read from the first bytes a client sends, before any TLS library sees them.
//!
//! [`parse_client_hello`] takes the raw bytes of a TCP connection (TLS records of content type 22,
//! the hello possibly split over several of them) and returns the [`ClientHello`], or says that more
//! bytes are needed ([`ParseError::Incomplete`]) or that they never will make one (any other
//! [`ParseError`]). The parser is hand-written, never panics, never reads past what the records
//! declare, and refuses a hello whose records would exceed [`MAX_CLIENT_HELLO_BYTES`].
//!
//! # Reading a hello off a socket
//!
//! Read into a buffer until the parser answers `Ok` or a hard error. [`ParseError::Incomplete`]
//! carries a lower bound of the bytes still missing, and reading exactly that many never reads past
//! the last record of the hello, so the buffer never holds more than [`MAX_CLIENT_HELLO_BYTES`]:
//!
//! ```
//! use std::io::Read;
//! use ravelin_tls::clienthello::{ParseError, parse_client_hello};
//!
//! fn read_hello(conn: &mut impl Read) -> std::io::Result<Vec<u8>> {
//!     let mut buf = Vec::new();
//!     loop {
//!         match parse_client_hello(&buf) {
//!             Ok(_hello) => return Ok(buf),
//!             Err(ParseError::Incomplete { needed }) => {
//!                 let start = buf.len();
//!                 buf.resize(start + needed.unwrap_or(1), 0);
//!                 let read = conn.read(&mut buf[start..])?;
//!                 buf.truncate(start + read);
//!                 if read == 0 {
//!                     return Err(std::io::ErrorKind::UnexpectedEof.into());
//!                 }
//!             }
//!             Err(hard) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, hard)),
//!         }
//!     }
//! }
//! # let mut hello: &[u8] = &[22, 3, 1, 0, 5, 9];
//! # assert!(read_hello(&mut hello).is_err());
//! ```
//!
//! [`record_bytes_needed`] answers the same question without building the [`ClientHello`], for a
//! reader that peeks (`MSG_PEEK`) and leaves the bytes in the socket for the TLS library.

use std::fmt;
use std::net::IpAddr;

/// The most bytes of TLS records, record headers included, that may carry one ClientHello.
///
/// A hello that would need more is refused with [`ParseError::TooLarge`] as soon as its declared
/// lengths show it, so a reader never buffers more than this. Browsers send 0.5–2 KiB (a
/// post-quantum key share included); a hello carrying several large session tickets stays well below.
pub const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;

/// The largest TLS record fragment a peer may send (RFC 8446, section 5.1).
const MAX_RECORD_FRAGMENT: usize = 1 << 14;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;

/// Extension types this module reads the contents of (IANA "TLS ExtensionType Values").
pub mod extension {
    /// `server_name` (SNI, RFC 6066).
    pub const SERVER_NAME: u16 = 0x0000;
    /// `supported_groups` (RFC 8422, RFC 8446).
    pub const SUPPORTED_GROUPS: u16 = 0x000a;
    /// `signature_algorithms` (RFC 8446).
    pub const SIGNATURE_ALGORITHMS: u16 = 0x000d;
    /// `application_layer_protocol_negotiation` (ALPN, RFC 7301).
    pub const ALPN: u16 = 0x0010;
    /// `supported_versions` (RFC 8446).
    pub const SUPPORTED_VERSIONS: u16 = 0x002b;
}

/// Whether `value` is one of the sixteen GREASE values (RFC 8701) a client sprinkles into its
/// cipher suites, extensions, groups, versions and signature algorithms: `0x?a?a` with equal bytes.
#[must_use]
pub const fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

// === ParseError ===

/// Why a buffer does not (yet) hold a ClientHello.
///
/// [`Incomplete`](Self::Incomplete) is the only variant that more bytes can cure: every other one is
/// final for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes so far are a valid beginning of a ClientHello; read more.
    ///
    /// `needed` is a lower bound of the bytes still missing: reading exactly that many never reads
    /// past the last record of the hello, and the buffer plus `needed` never exceeds
    /// [`MAX_CLIENT_HELLO_BYTES`]. This parser always knows it (`Some`); `None` would mean
    /// "unknown, read at least one byte".
    #[error("incomplete ClientHello: {} more bytes needed", DisplayNeeded(*.needed))]
    Incomplete {
        /// At least this many more bytes are needed.
        needed: Option<usize>,
    },
    /// The first record is not a TLS handshake record (content type 22, version 3.x): plain HTTP on
    /// a TLS port, an SSL 2.0 hello, or noise.
    #[error("not TLS: the first record is not a TLS handshake record")]
    NotTls,
    /// The first handshake message is not a ClientHello.
    #[error("the first handshake message has type {handshake_type}, not ClientHello (1)")]
    NotClientHello {
        /// The handshake type found.
        handshake_type: u8,
    },
    /// The hello's records would need more than [`MAX_CLIENT_HELLO_BYTES`].
    #[error(
        "ClientHello too large: its records need at least {at_least} bytes, more than the limit of {MAX_CLIENT_HELLO_BYTES}"
    )]
    TooLarge {
        /// The records need at least this many bytes.
        at_least: usize,
    },
    /// The records or the hello violate the TLS encoding; the text names what.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

impl ParseError {
    /// Whether more bytes may turn this into a ClientHello.
    #[must_use]
    pub const fn is_incomplete(&self) -> bool {
        matches!(self, Self::Incomplete { .. })
    }
}

struct DisplayNeeded(Option<usize>);

impl fmt::Display for DisplayNeeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("an unknown number of"),
        }
    }
}

// === ClientHello ===

/// How the hello travelled, the first character of a JA4 fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Transport {
    /// TLS records over TCP (JA4 `t`), what [`parse_client_hello`] reads.
    #[default]
    Tcp,
    /// QUIC CRYPTO frames (JA4 `q`): the handshake message given to [`parse_handshake_message`].
    Quic,
}

/// The fields of a ClientHello that identify a client and route its connection.
///
/// Lists keep the order and the GREASE values the client sent. Fields read from an extension are
/// empty (or `None`) when the extension is absent; [`extensions`](Self::extensions) tells absent
/// from empty. Build one in tests with `ClientHello::default()` and field assignment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientHello {
    /// How the hello travelled.
    pub transport: Transport,
    /// `legacy_version` (`client_version` before TLS 1.3): 0x0303 in a TLS 1.3 hello.
    pub legacy_version: u16,
    /// The 32-byte client random.
    pub random: [u8; 32],
    /// `legacy_session_id`, 0 to 32 bytes.
    pub session_id: Vec<u8>,
    /// Cipher suites, in order.
    pub cipher_suites: Vec<u16>,
    /// `legacy_compression_methods`: `[0]` from any current client.
    pub compression_methods: Vec<u8>,
    /// Extension types, in order. A type appears at most once (duplicates are refused as malformed).
    pub extensions: Vec<u16>,
    /// The SNI host name, lower-cased, if the `server_name` extension carries a valid DNS name
    /// (ASCII letters, digits, `-` and `_`, labels of 1–63 bytes, at most 253 bytes, no trailing
    /// dot, not an IP address literal). `None` if absent or not valid: the extension still counts in
    /// [`extensions`](Self::extensions).
    pub server_name: Option<String>,
    /// ALPN protocol names, in order.
    pub alpn: Vec<Vec<u8>>,
    /// `signature_algorithms`, in order.
    pub signature_algorithms: Vec<u16>,
    /// `supported_groups` (named groups for key exchange), in order.
    pub supported_groups: Vec<u16>,
    /// `supported_versions`, in order.
    pub supported_versions: Vec<u16>,
}

impl ClientHello {
    /// Whether the client sent extension `ext`.
    #[must_use]
    pub fn has_extension(&self, ext: u16) -> bool {
        self.extensions.contains(&ext)
    }

    /// The TLS version the client offers at most: the highest non-GREASE value of
    /// `supported_versions` if the extension is present and has one, else `legacy_version`.
    #[must_use]
    pub fn max_version(&self) -> u16 {
        self.supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
            .filter(|_| self.has_extension(extension::SUPPORTED_VERSIONS))
            .unwrap_or(self.legacy_version)
    }
}

// === parsing ===

/// Parses the ClientHello at the start of `buf`, the bytes a client sent first on a TCP connection.
///
/// Bytes after the records that carry the hello (early data, say) are ignored.
///
/// # Errors
///
/// [`ParseError::Incomplete`] if `buf` is a valid beginning of a hello; any other [`ParseError`] if
/// it cannot be one.
pub fn parse_client_hello(buf: &[u8]) -> Result<ClientHello, ParseError> {
    let (message, _records_len) = reassemble(buf)?;
    parse_handshake_message(&message, Transport::Tcp)
}

/// How many more bytes the records carrying the ClientHello at the start of `buf` need: `Ok(0)`
/// once `buf` holds them all.
///
/// It reads only record and handshake headers. A positive answer is a lower bound and reading
/// exactly that many bytes never reads past the hello's last record; `buf.len()` plus the answer
/// never exceeds [`MAX_CLIENT_HELLO_BYTES`]. `Ok(0)` does not mean the hello is well-formed:
/// [`parse_client_hello`] checks the rest.
///
/// # Errors
///
/// The hard errors of [`parse_client_hello`] that the headers show ([`ParseError::NotTls`],
/// [`ParseError::NotClientHello`], [`ParseError::TooLarge`], [`ParseError::Malformed`]); never
/// [`ParseError::Incomplete`].
pub fn record_bytes_needed(buf: &[u8]) -> Result<usize, ParseError> {
    match reassemble(buf) {
        Ok(_) => Ok(0),
        Err(ParseError::Incomplete { needed }) => Ok(needed.unwrap_or(1)),
        Err(hard) => Err(hard),
    }
}

/// Parses one complete ClientHello handshake message (4-byte handshake header included), without
/// the record layer: what QUIC carries in CRYPTO frames.
///
/// # Errors
///
/// [`ParseError::NotClientHello`], [`ParseError::TooLarge`] (a message longer than
/// [`MAX_CLIENT_HELLO_BYTES`]) or [`ParseError::Malformed`]; a truncated message is malformed,
/// not incomplete, since the caller says it is whole.
pub fn parse_handshake_message(
    message: &[u8],
    transport: Transport,
) -> Result<ClientHello, ParseError> {
    if message.len() > MAX_CLIENT_HELLO_BYTES {
        return Err(ParseError::TooLarge {
            at_least: message.len(),
        });
    }
    let mut r = Reader::new(message);
    let handshake_type = r.u8("handshake type")?;
    if handshake_type != HANDSHAKE_CLIENT_HELLO {
        return Err(ParseError::NotClientHello { handshake_type });
    }
    let len = r.u24("handshake length")?;
    let mut body = r.sub(len, "ClientHello body")?;
    r.finish("bytes after the ClientHello message")?;

    let legacy_version = body.u16("legacy_version")?;
    let random = <[u8; 32]>::try_from(body.bytes(32, "random")?)
        .map_err(|_| ParseError::Malformed("random"))?;
    let session_id = body.vec_u8("legacy_session_id")?.rest();
    if session_id.len() > 32 {
        return Err(ParseError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let cipher_suites = body.vec_u16("cipher_suites")?.u16_list("cipher_suites")?;
    let compression_methods = body.vec_u8("legacy_compression_methods")?.rest().to_vec();
    let mut hello = ClientHello {
        transport,
        legacy_version,
        random,
        session_id: session_id.to_vec(),
        cipher_suites,
        compression_methods,
        ..ClientHello::default()
    };
    // SSL 3.0 and TLS 1.0 hellos may end here, without an extensions block.
    if body.is_empty() {
        return Ok(hello);
    }
    let mut extensions = body.vec_u16("extensions")?;
    body.finish("bytes after the extensions")?;
    while !extensions.is_empty() {
        let ext = extensions.u16("extension type")?;
        let data = extensions.vec_u16("extension data")?;
        hello.extensions.push(ext);
        read_extension(&mut hello, ext, data)?;
    }
    // RFC 8446, 4.2: no two extensions of one type. Sorting a copy keeps this O(n log n) for a
    // hello stuffed with thousands of empty extensions.
    let mut types = hello.extensions.clone();
    types.sort_unstable();
    if types
        .windows(2)
        .any(|pair| matches!(pair, [a, b] if a == b))
    {
        return Err(ParseError::Malformed("duplicate extension"));
    }
    Ok(hello)
}

/// Reads the contents of the extensions [`ClientHello`] keeps; ignores the others.
fn read_extension(
    hello: &mut ClientHello,
    ext: u16,
    mut data: Reader<'_>,
) -> Result<(), ParseError> {
    match ext {
        extension::SERVER_NAME => {
            // An empty extension is the server's acknowledgement form; tolerated from a client.
            if data.is_empty() {
                return Ok(());
            }
            let mut names = data.vec_u16("server_name list")?;
            data.finish("bytes after the server_name list")?;
            while !names.is_empty() {
                let name_type = names.u8("server name type")?;
                let name = names.vec_u16("server name")?.rest();
                // RFC 6066: one name per type; only host_name (0) is defined.
                if name_type == 0 && hello.server_name.is_none() {
                    hello.server_name = valid_host_name(name);
                }
            }
        }
        extension::ALPN => {
            let mut protocols = data.vec_u16("ALPN protocol list")?;
            data.finish("bytes after the ALPN list")?;
            while !protocols.is_empty() {
                hello
                    .alpn
                    .push(protocols.vec_u8("ALPN protocol name")?.rest().to_vec());
            }
        }
        extension::SIGNATURE_ALGORITHMS => {
            hello.signature_algorithms = data
                .vec_u16("signature_algorithms")?
                .u16_list("signature_algorithms")?;
            data.finish("bytes after signature_algorithms")?;
        }
        extension::SUPPORTED_GROUPS => {
            hello.supported_groups = data
                .vec_u16("supported_groups")?
                .u16_list("supported_groups")?;
            data.finish("bytes after supported_groups")?;
        }
        extension::SUPPORTED_VERSIONS => {
            hello.supported_versions = data
                .vec_u8("supported_versions")?
                .u16_list("supported_versions")?;
            data.finish("bytes after supported_versions")?;
        }
        _ => {}
    }
    Ok(())
}

/// The SNI host name, lower-cased, if it is a DNS name RFC 6066 allows: ASCII, no trailing dot, not
/// an IP literal. Underscores are let through: they occur in internal names.
fn valid_host_name(name: &[u8]) -> Option<String> {
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let labels_ok = name.split(|b| *b == b'.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    });
    if !labels_ok {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    if name.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

// === record layer ===

/// Joins the handshake fragments of the records at the start of `buf` into the first handshake
/// message; returns it and the length of the records that carried it.
fn reassemble(buf: &[u8]) -> Result<(Vec<u8>, usize), ParseError> {
    let mut message = Vec::new();
    // Start of the current record in `buf`.
    let mut pos = 0usize;
    loop {
        let first_record = pos == 0;
        let Some(header) = buf.get(pos..pos.saturating_add(RECORD_HEADER_LEN)) else {
            // A partial header: check what there is, then ask for the rest.
            let partial = buf.get(pos..).unwrap_or_default();
            check_record_header(partial, first_record)?;
            // At least one more byte of handshake follows the header.
            let at_least = pos + RECORD_HEADER_LEN + 1;
            if at_least > MAX_CLIENT_HELLO_BYTES {
                return Err(ParseError::TooLarge { at_least });
            }
            return Err(ParseError::Incomplete {
                needed: Some(pos + RECORD_HEADER_LEN - buf.len()),
            });
        };
        check_record_header(header, first_record)?;
        let fragment_len = usize::from(u16::from_be_bytes([
            header.get(3).copied().unwrap_or_default(),
            header.get(4).copied().unwrap_or_default(),
        ]));
        if fragment_len == 0 {
            return Err(ParseError::Malformed("empty handshake record"));
        }
        if fragment_len > MAX_RECORD_FRAGMENT {
            return Err(ParseError::Malformed("record longer than 2^14 bytes"));
        }
        let start = pos + RECORD_HEADER_LEN;
        let end = start + fragment_len;
        if end > MAX_CLIENT_HELLO_BYTES {
            return Err(ParseError::TooLarge { at_least: end });
        }
        let available = buf.get(start..end.min(buf.len())).unwrap_or_default();
        let before = message.len();
        message.extend_from_slice(available);

        // What the handshake header says, once its bytes have arrived.
        if let Some(&handshake_type) = message.first()
            && handshake_type != HANDSHAKE_CLIENT_HELLO
        {
            return Err(ParseError::NotClientHello { handshake_type });
        }
        let total = match message.get(1..HANDSHAKE_HEADER_LEN) {
            Some(&[a, b, c]) => Some(
                HANDSHAKE_HEADER_LEN
                    + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c)),
            ),
            _ => None,
        };
        let after_record = before + fragment_len;
        if let Some(total) = total {
            if after_record > total {
                return Err(ParseError::Malformed(
                    "record carries bytes after the ClientHello",
                ));
            }
            // This record, then at least one more header and the rest of the message.
            let at_least = if total > after_record {
                end + RECORD_HEADER_LEN + (total - after_record)
            } else {
                end
            };
            if at_least > MAX_CLIENT_HELLO_BYTES {
                return Err(ParseError::TooLarge { at_least });
            }
        }
        if buf.len() < end {
            return Err(ParseError::Incomplete {
                needed: Some(end - buf.len()),
            });
        }
        pos = end;
        if total == Some(message.len()) {
            return Ok((message, pos));
        }
    }
}

/// Checks the (possibly partial) record header `header`: content type 22, protocol version 3.x.
fn check_record_header(header: &[u8], first_record: bool) -> Result<(), ParseError> {
    let wrong = |header: &[u8]| match header {
        [content_type, ..] if *content_type != CONTENT_TYPE_HANDSHAKE => true,
        [_, major, ..] => *major != 3,
        _ => false,
    };
    if !wrong(header) {
        Ok(())
    } else if first_record {
        Err(ParseError::NotTls)
    } else {
        Err(ParseError::Malformed(
            "a record that is not TLS handshake interrupts the ClientHello",
        ))
    }
}

// === Reader ===

/// A cursor over a complete message: running out of bytes is a malformed message.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    const fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        match (self.buf.get(..n), self.buf.get(n..)) {
            (Some(taken), Some(rest)) => {
                self.buf = rest;
                Ok(taken)
            }
            _ => Err(ParseError::Malformed(what)),
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        match self.bytes(1, what)? {
            [a] => Ok(*a),
            _ => Err(ParseError::Malformed(what)),
        }
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        match self.bytes(2, what)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(ParseError::Malformed(what)),
        }
    }

    fn u24(&mut self, what: &'static str) -> Result<usize, ParseError> {
        match self.bytes(3, what)? {
            [a, b, c] => Ok(usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c)),
            _ => Err(ParseError::Malformed(what)),
        }
    }

    /// The next `len` bytes as their own reader.
    fn sub(&mut self, len: usize, what: &'static str) -> Result<Self, ParseError> {
        self.bytes(len, what).map(Reader::new)
    }

    /// A vector with a one-byte length prefix.
    fn vec_u8(&mut self, what: &'static str) -> Result<Self, ParseError> {
        let len = self.u8(what)?;
        self.sub(usize::from(len), what)
    }

    /// A vector with a two-byte length prefix.
    fn vec_u16(&mut self, what: &'static str) -> Result<Self, ParseError> {
        let len = self.u16(what)?;
        self.sub(usize::from(len), what)
    }

    /// Everything left.
    fn rest(self) -> &'a [u8] {
        self.buf
    }

    /// The rest as big-endian `u16`s.
    fn u16_list(self, what: &'static str) -> Result<Vec<u16>, ParseError> {
        let chunks = self.buf.chunks_exact(2);
        if !chunks.remainder().is_empty() {
            return Err(ParseError::Malformed(what));
        }
        Ok(chunks
            .map(|pair| match pair {
                [a, b] => u16::from_be_bytes([*a, *b]),
                _ => 0,
            })
            .collect())
    }

    /// Requires that nothing is left.
    fn finish(&self, what: &'static str) -> Result<(), ParseError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ParseError::Malformed(what))
        }
    }
}

// === tests ===

/// Builders of ClientHello bytes for the tests of this crate.
#[cfg(test)]
pub(crate) mod fixture {
    /// A ClientHello to encode: extensions as (type, data) in order.
    #[derive(Debug, Clone)]
    pub(crate) struct HelloBytes {
        pub(crate) legacy_version: u16,
        pub(crate) session_id: Vec<u8>,
        pub(crate) ciphers: Vec<u16>,
        pub(crate) extensions: Option<Vec<(u16, Vec<u8>)>>,
    }

    impl Default for HelloBytes {
        fn default() -> Self {
            Self {
                legacy_version: 0x0303,
                session_id: vec![7; 32],
                ciphers: vec![0x1301, 0x1302, 0xc02b],
                extensions: Some(Vec::new()),
            }
        }
    }

    pub(crate) fn u16s(values: &[u16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    pub(crate) fn prefixed16(data: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(data.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    pub(crate) fn prefixed8(data: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(data.len()).unwrap()];
        out.extend_from_slice(data);
        out
    }

    pub(crate) fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend(prefixed16(name.as_bytes()));
        (0x0000, prefixed16(&entry))
    }

    pub(crate) fn alpn(protocols: &[&[u8]]) -> (u16, Vec<u8>) {
        let list: Vec<u8> = protocols.iter().flat_map(|p| prefixed8(p)).collect();
        (0x0010, prefixed16(&list))
    }

    pub(crate) fn u16_list(ext: u16, values: &[u16]) -> (u16, Vec<u8>) {
        (ext, prefixed16(&u16s(values)))
    }

    pub(crate) fn versions(values: &[u16]) -> (u16, Vec<u8>) {
        (0x002b, prefixed8(&u16s(values)))
    }

    impl HelloBytes {
        /// The handshake message, header included.
        pub(crate) fn message(&self) -> Vec<u8> {
            let mut body = self.legacy_version.to_be_bytes().to_vec();
            body.extend((0..32u8).map(|i| i.wrapping_mul(37)));
            body.extend(prefixed8(&self.session_id));
            body.extend(prefixed16(&u16s(&self.ciphers)));
            body.extend(prefixed8(&[0]));
            if let Some(extensions) = &self.extensions {
                let mut block = Vec::new();
                for (ext, data) in extensions {
                    block.extend(ext.to_be_bytes());
                    block.extend(prefixed16(data));
                }
                body.extend(prefixed16(&block));
            }
            let len = u32::try_from(body.len()).unwrap().to_be_bytes();
            let mut message = vec![1, len[1], len[2], len[3]];
            message.extend(body);
            message
        }

        /// The message in one record.
        pub(crate) fn bytes(&self) -> Vec<u8> {
            records(&self.message(), &[])
        }
    }

    /// `message` in TLS handshake records, cut at the offsets `cuts` (ascending).
    pub(crate) fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&message.len())) {
            let fragment = &message[start..end];
            out.extend([22, 3, 1]);
            out.extend(prefixed16(fragment));
            start = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{self, HelloBytes};
    use super::*;

    fn full() -> HelloBytes {
        HelloBytes {
            ciphers: vec![0x2a2a, 0x1301, 0x1302, 0x1303, 0xc02b],
            extensions: Some(vec![
                (0x1a1a, vec![]),
                fixture::sni("Example.COM"),
                (0x0017, vec![]),
                fixture::u16_list(0x000a, &[0x3a3a, 0x001d, 0x0017]),
                fixture::u16_list(0x000d, &[0x0403, 0x0804]),
                fixture::alpn(&[b"h2", b"http/1.1"]),
                fixture::versions(&[0x4a4a, 0x0304, 0x0303]),
                (0x0033, vec![0, 2, 0, 0]),
                (0x5a5a, vec![0]),
            ]),
            ..HelloBytes::default()
        }
    }

    #[test]
    fn parses_every_field() {
        let bytes = full().bytes();
        let hello = parse_client_hello(&bytes).unwrap();
        assert_eq!(hello.transport, Transport::Tcp);
        assert_eq!(hello.legacy_version, 0x0303);
        assert_eq!(hello.session_id, vec![7; 32]);
        assert_eq!(hello.random[1], 37);
        assert_eq!(
            hello.cipher_suites,
            [0x2a2a, 0x1301, 0x1302, 0x1303, 0xc02b]
        );
        assert_eq!(hello.compression_methods, [0]);
        assert_eq!(
            hello.extensions,
            [
                0x1a1a, 0x0000, 0x0017, 0x000a, 0x000d, 0x0010, 0x002b, 0x0033, 0x5a5a
            ]
        );
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(hello.signature_algorithms, [0x0403, 0x0804]);
        assert_eq!(hello.supported_groups, [0x3a3a, 0x001d, 0x0017]);
        assert_eq!(hello.supported_versions, [0x4a4a, 0x0304, 0x0303]);
        assert_eq!(hello.max_version(), 0x0304);
        assert_eq!(record_bytes_needed(&bytes), Ok(0));
    }

    #[test]
    fn without_sni_or_alpn() {
        let hello = HelloBytes {
            extensions: Some(vec![fixture::u16_list(0x000d, &[0x0403])]),
            ..HelloBytes::default()
        };
        let hello = parse_client_hello(&hello.bytes()).unwrap();
        assert_eq!(hello.server_name, None);
        assert!(hello.alpn.is_empty());
        assert!(!hello.has_extension(extension::SERVER_NAME));
    }

    #[test]
    fn tls12_only_hello_and_no_extension_block() {
        // TLS 1.2: no supported_versions; the version is legacy_version.
        let tls12 = HelloBytes {
            extensions: Some(vec![fixture::sni("a.example")]),
            ..HelloBytes::default()
        };
        let hello = parse_client_hello(&tls12.bytes()).unwrap();
        assert_eq!(hello.max_version(), 0x0303);
        assert!(hello.supported_versions.is_empty());

        // TLS 1.0 may omit the extensions block altogether.
        let tls10 = HelloBytes {
            legacy_version: 0x0301,
            extensions: None,
            ..HelloBytes::default()
        };
        let hello = parse_client_hello(&tls10.bytes()).unwrap();
        assert_eq!(hello.max_version(), 0x0301);
        assert!(hello.extensions.is_empty());
    }

    #[test]
    fn split_records_give_the_same_hello() {
        let spec = full();
        let message = spec.message();
        let whole = parse_client_hello(&spec.bytes()).unwrap();
        // Two records; then one cutting the handshake header; then many one-byte records.
        for cuts in [
            vec![message.len() / 2],
            vec![2, 40],
            (1..message.len()).collect::<Vec<_>>(),
        ] {
            let bytes = fixture::records(&message, &cuts);
            assert_eq!(parse_client_hello(&bytes).unwrap(), whole, "cuts {cuts:?}");
        }
    }

    #[test]
    fn every_prefix_is_incomplete_and_needed_never_overshoots() {
        let message = full().message();
        let bytes = fixture::records(&message, &[3, 100]);
        for len in 0..bytes.len() {
            let prefix = &bytes[..len];
            match parse_client_hello(prefix) {
                Err(ParseError::Incomplete { needed: Some(n) }) => {
                    assert!(n >= 1 && len + n <= bytes.len(), "len {len}: needed {n}");
                    assert_eq!(record_bytes_needed(prefix), Ok(n));
                }
                other => panic!("prefix of {len} bytes: {other:?}"),
            }
        }
        // Bytes after the hello (early data) are not its business.
        let mut more = bytes.clone();
        more.extend([23, 3, 3, 0, 1, 0]);
        assert!(parse_client_hello(&more).is_ok());
    }

    #[test]
    fn a_reader_reading_exactly_needed_ends_on_the_hello() {
        let bytes = fixture::records(&full().message(), &[10, 11, 100]);
        let mut buf = Vec::new();
        let hello = loop {
            match parse_client_hello(&buf) {
                Ok(hello) => break hello,
                Err(ParseError::Incomplete { needed: Some(n) }) => {
                    buf.extend_from_slice(&bytes[buf.len()..buf.len() + n]);
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(buf.len(), bytes.len());
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
    }

    #[test]
    fn host_names_are_checked() {
        for (name, expected) in [
            ("WWW.Example.com", Some("www.example.com")),
            ("_acme.internal", Some("_acme.internal")),
            ("localhost", Some("localhost")),
            ("192.0.2.1", None),
            ("example.com.", None),
            ("exa mple.com", None),
            ("a..b", None),
            ("bücher.de", None),
        ] {
            let spec = HelloBytes {
                extensions: Some(vec![fixture::sni(name)]),
                ..HelloBytes::default()
            };
            let hello = parse_client_hello(&spec.bytes()).unwrap();
            assert_eq!(hello.server_name.as_deref(), expected, "{name}");
            assert!(hello.has_extension(extension::SERVER_NAME));
        }
        assert_eq!(valid_host_name(&[b'a'; 254]), None);
        assert_eq!(valid_host_name(&[b'a'; 64]), None);
        assert!(valid_host_name(&[b'a'; 63]).is_some());
    }

    #[test]
    fn hard_errors() {
        assert_eq!(
            parse_client_hello(b"GET / HTTP/1.1\r\n"),
            Err(ParseError::NotTls)
        );
        assert_eq!(parse_client_hello(b"G"), Err(ParseError::NotTls));
        assert_eq!(parse_client_hello(&[22, 2]), Err(ParseError::NotTls));
        // SSL 2.0 hello: record marker with the high bit set.
        assert_eq!(
            parse_client_hello(&[0x80, 0x2e, 1, 3, 1]),
            Err(ParseError::NotTls)
        );
        assert_eq!(
            parse_client_hello(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
            Err(ParseError::NotClientHello { handshake_type: 2 })
        );
        // A declared 20000-byte hello is refused from its header alone.
        assert!(matches!(
            parse_client_hello(&[22, 3, 1, 0, 4, 1, 0, 0x4e, 0x20]),
            Err(ParseError::TooLarge { .. })
        ));
        assert!(matches!(
            record_bytes_needed(&[22, 3, 1, 0x40, 1]),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(
            parse_client_hello(&[22, 3, 1, 0, 0]),
            Err(ParseError::Malformed("empty handshake record"))
        );

        let message = full().message();
        // An alert record in the middle of the hello.
        let mut interrupted = fixture::records(&message[..10], &[]);
        interrupted.extend([21, 3, 3, 0, 2, 2, 40]);
        assert!(matches!(
            parse_client_hello(&interrupted),
            Err(ParseError::Malformed(_))
        ));
        // A record carrying more than the hello.
        let mut padded = message.clone();
        padded.push(0);
        assert_eq!(
            parse_client_hello(&fixture::records(&padded, &[])),
            Err(ParseError::Malformed(
                "record carries bytes after the ClientHello"
            ))
        );

        let duplicate = HelloBytes {
            extensions: Some(vec![(0x0017, vec![]), (0x0017, vec![])]),
            ..HelloBytes::default()
        };
        assert_eq!(
            parse_client_hello(&duplicate.bytes()),
            Err(ParseError::Malformed("duplicate extension"))
        );
        let odd_ciphers = HelloBytes {
            ciphers: vec![],
            ..HelloBytes::default()
        };
        let mut bytes = odd_ciphers.message();
        // Make the (empty) cipher list claim one byte: the lengths no longer add up.
        bytes[4 + 2 + 32 + 1 + 32 + 1] = 1;
        assert!(matches!(
            parse_client_hello(&fixture::records(&bytes, &[])),
            Err(ParseError::Malformed(_))
        ));
        let bad_alpn = HelloBytes {
            extensions: Some(vec![(0x0010, vec![0, 3, 5, b'h', b'2'])]),
            ..HelloBytes::default()
        };
        assert!(matches!(
            parse_client_hello(&bad_alpn.bytes()),
            Err(ParseError::Malformed(_))
        ));
        assert!(!ParseError::NotTls.is_incomplete());
    }

    #[test]
    fn the_limit_is_on_the_records() {
        // The largest hello that fits: one record of MAX - 5 bytes.
        let mut fits = HelloBytes {
            extensions: Some(vec![(0x0015, vec![])]),
            ..HelloBytes::default()
        };
        let padding = MAX_CLIENT_HELLO_BYTES - fits.bytes().len();
        fits.extensions = Some(vec![(0x0015, vec![0; padding])]);
        let bytes = fits.bytes();
        assert_eq!(bytes.len(), MAX_CLIENT_HELLO_BYTES);
        assert!(parse_client_hello(&bytes).is_ok());
        // The same message in two records needs 5 more bytes than the limit.
        let split = fixture::records(&fits.message(), &[100]);
        assert_eq!(
            parse_client_hello(&split[..200]),
            Err(ParseError::TooLarge {
                at_least: MAX_CLIENT_HELLO_BYTES + 5
            })
        );
        let msg = fits.message();
        assert!(matches!(
            parse_handshake_message(&[msg.as_slice(), &[0; 8]].concat(), Transport::Quic),
            Err(ParseError::TooLarge { .. } | ParseError::Malformed(_))
        ));
    }

    #[test]
    fn handshake_message_without_records() {
        let message = full().message();
        let hello = parse_handshake_message(&message, Transport::Quic).unwrap();
        assert_eq!(hello.transport, Transport::Quic);
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert!(matches!(
            parse_handshake_message(&message[..message.len() - 1], Transport::Quic),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn grease_values() {
        let grease: Vec<u16> = (0..16).map(|i| 0x0a0a + 0x1010 * i).collect();
        assert!(grease.iter().all(|v| is_grease(*v)));
        assert_eq!((0..=u16::MAX).filter(|v| is_grease(*v)).count(), 16);
        assert!(!is_grease(0x0a1a));
    }

    #[test]
    fn error_messages_name_the_facts() {
        assert_eq!(
            ParseError::Incomplete { needed: Some(5) }.to_string(),
            "incomplete ClientHello: 5 more bytes needed"
        );
        assert_eq!(
            ParseError::TooLarge { at_least: 20000 }.to_string(),
            "ClientHello too large: its records need at least 20000 bytes, more than the limit of 16384"
        );
    }
}
