//! JA4, the TLS client fingerprint of FoxIO's JA4+ suite, computed from a [`ClientHello`].
//!
//! The algorithm follows FoxIO's specification, `technical_details/JA4.md` in
//! <https://github.com/FoxIO-LLC/ja4> (JA4 itself is BSD-3-Clause). A fingerprint has three parts,
//! `a_b_c`:
//!
//! - `a`, 10 characters: the transport (`t` TCP, `q` QUIC), the highest TLS version offered (`13`,
//!   `12`, `11`, `10`, `s3`, `s2`, else `00`; from `supported_versions` if present), `d` if the SNI
//!   extension is present else `i`, the number of cipher suites and of extensions (two digits each,
//!   at most 99), and the first and last character of the first ALPN protocol (`00` without one).
//! - `b`: the first 12 hex digits of the SHA-256 of the cipher suites, sorted, as comma-separated
//!   4-digit lower-case hex.
//! - `c`: the same of the extensions, sorted, without SNI (`0000`) and ALPN (`0010`), then `_` and
//!   the signature algorithms in the order sent (the `_` only if there are any).
//!
//! GREASE values (RFC 8701) are left out everywhere. An empty list hashes to `000000000000`.
//!
//! Two details follow the specification's text where FoxIO's implementations (Rust, Python and
//! Wireshark, at commit `0e54bc8`) do otherwise: an ALPN protocol whose first or last byte is not
//! an ASCII letter or digit gives the first and last digit of its hex encoding (`0xba 0xad` gives
//! `bd`; the implementations print `99`), and GREASE signature algorithms are left out (the
//! implementations keep them; no mainstream client sends any).

use std::fmt::{self, Write as _};

use sha2::{Digest as _, Sha256};

use crate::clienthello::{ClientHello, Transport, extension, is_grease};

/// The JA4 fingerprint of a ClientHello.
///
/// [`Display`](fmt::Display) and [`as_str`](Self::as_str) give the canonical form,
/// `t13d1516h2_8daaf6152771_e5627efa2ab1`; [`raw`](Self::raw) the unhashed `JA4_r`, and
/// [`original`](Self::original) / [`raw_original`](Self::raw_original) the `JA4_o` / `JA4_ro`
/// variants that keep the client's order. Equality and hashing are those of the canonical form.
#[derive(Debug, Clone)]
pub struct Ja4 {
    /// The canonical fingerprint.
    fingerprint: String,
    /// Non-GREASE cipher suites, in the client's order.
    ciphers: Vec<u16>,
    /// Non-GREASE extension types, in the client's order.
    extensions: Vec<u16>,
    /// Non-GREASE signature algorithms, in the client's order.
    signature_algorithms: Vec<u16>,
}

impl Ja4 {
    /// The fingerprint of `hello`.
    #[must_use]
    pub fn from_client_hello(hello: &ClientHello) -> Self {
        let non_grease = |list: &[u16]| -> Vec<u16> {
            list.iter().copied().filter(|v| !is_grease(*v)).collect()
        };
        let mut ja4 = Self {
            fingerprint: String::new(),
            ciphers: non_grease(&hello.cipher_suites),
            extensions: non_grease(&hello.extensions),
            signature_algorithms: non_grease(&hello.signature_algorithms),
        };
        let a = ja4_a(hello, &ja4.ciphers, &ja4.extensions);
        let (ciphers, exts_sigs) = ja4.lists(true);
        ja4.fingerprint = format!("{a}_{}_{}", hash12(&ciphers), hash12(&exts_sigs));
        ja4
    }

    /// The canonical fingerprint, `t13d1516h2_8daaf6152771_e5627efa2ab1`: always 36 ASCII
    /// characters, `a` (10 letters and digits) `_` `b` (12 hex digits) `_` `c` (12 hex digits).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.fingerprint
    }

    /// `JA4_a`, the first 10 characters: `t13d1516h2`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.fingerprint.get(..10).unwrap_or_default()
    }

    /// `JA4_r`, the fingerprint before hashing: `a`, the sorted cipher suites, the sorted
    /// extensions without SNI and ALPN, and the signature algorithms in the client's order.
    /// Handy to see why two fingerprints differ.
    #[must_use]
    pub fn raw(&self) -> String {
        let (ciphers, exts_sigs) = self.lists(true);
        format!("{}_{ciphers}_{exts_sigs}", self.prefix())
    }

    /// `JA4_o`: like the canonical form, but hashing the cipher suites and the extensions
    /// (SNI and ALPN included) in the client's order.
    #[must_use]
    pub fn original(&self) -> String {
        let (ciphers, exts_sigs) = self.lists(false);
        format!(
            "{}_{}_{}",
            self.prefix(),
            hash12(&ciphers),
            hash12(&exts_sigs)
        )
    }

    /// `JA4_ro`: the unhashed [`original`](Self::original).
    #[must_use]
    pub fn raw_original(&self) -> String {
        let (ciphers, exts_sigs) = self.lists(false);
        format!("{}_{ciphers}_{exts_sigs}", self.prefix())
    }

    /// The strings hashed into `b` and `c`: sorted (SNI and ALPN left out) or as sent.
    fn lists(&self, sorted: bool) -> (String, String) {
        let mut ciphers = self.ciphers.clone();
        let mut extensions = self.extensions.clone();
        if sorted {
            ciphers.sort_unstable();
            extensions.retain(|e| *e != extension::SERVER_NAME && *e != extension::ALPN);
            extensions.sort_unstable();
        }
        let mut exts_sigs = hex_list(&extensions);
        if !self.signature_algorithms.is_empty() {
            exts_sigs.push('_');
            exts_sigs.push_str(&hex_list(&self.signature_algorithms));
        }
        (hex_list(&ciphers), exts_sigs)
    }
}

impl fmt::Display for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint)
    }
}

impl PartialEq for Ja4 {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for Ja4 {}

impl std::hash::Hash for Ja4 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.fingerprint.hash(state);
    }
}

/// `JA4_a`: transport, version, SNI, counts, ALPN.
fn ja4_a(hello: &ClientHello, ciphers: &[u16], extensions: &[u16]) -> String {
    let transport = match hello.transport {
        Transport::Quic => 'q',
        Transport::Tcp => 't',
    };
    let version = match hello.max_version() {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        _ => "00",
    };
    let sni = if hello.has_extension(extension::SERVER_NAME) {
        'd'
    } else {
        'i'
    };
    let (first, last) = alpn_chars(hello.alpn.first().map(Vec::as_slice));
    format!(
        "{transport}{version}{sni}{:02}{:02}{first}{last}",
        ciphers.len().min(99),
        extensions.len().min(99),
    )
}

/// The first and last character of the first ALPN protocol: the bytes themselves if both are ASCII
/// letters or digits, else the first and last digit of the protocol's hex encoding; `00` if there
/// is none or it is empty.
fn alpn_chars(protocol: Option<&[u8]>) -> (char, char) {
    let Some((&first, &last)) = protocol.and_then(|p| p.first().zip(p.last())) else {
        return ('0', '0');
    };
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        (char::from(first), char::from(last))
    } else {
        (hex_digit(first >> 4), hex_digit(last & 0x0f))
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble & 0x0f), 16).unwrap_or('0')
}

/// `0403,0804,…`: 4-digit lower-case hex, comma-separated.
fn hex_list(values: &[u16]) -> String {
    let mut out = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v:04x}");
    }
    out
}

/// The first 12 lower-case hex digits of the SHA-256 of `s`; `000000000000` for an empty `s`.
fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".to_owned();
    }
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(12);
    for byte in digest.iter().take(6) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clienthello::fixture::{self, HelloBytes};
    use crate::clienthello::parse_client_hello;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The example of FoxIO's specification (technical_details/JA4.md, "Example" and "Raw Output"),
    /// as a ClientHello.
    fn spec_example() -> ClientHello {
        ClientHello {
            legacy_version: 0x0303,
            cipher_suites: vec![
                0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
                0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
            ],
            extensions: vec![
                0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023,
                0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
            ],
            signature_algorithms: vec![
                0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
            ],
            supported_versions: vec![0x0304, 0x0303],
            server_name: Some("example.com".to_owned()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            ..ClientHello::default()
        }
    }

    #[test]
    fn specification_example() {
        // Expected values: technical_details/JA4.md of FoxIO-LLC/ja4 (also the unit test
        // `test_client_stats_into_out` of its rust/ja4/src/tls.rs).
        let ja4 = Ja4::from_client_hello(&spec_example());
        assert_eq!(ja4.to_string(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(ja4.as_str(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(ja4.prefix(), "t13d1516h2");
        assert_eq!(
            ja4.raw(),
            "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601"
        );
        assert_eq!(ja4.original(), "t13d1516h2_acb858a92679_18f69afefd3d");
        assert_eq!(
            ja4.raw_original(),
            "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015_0403,0804,0401,0503,0805,0501,0806,0601"
        );
    }

    #[test]
    fn specification_hashes() {
        // technical_details/JA4.md, "Cipher hash" and "Extension hash".
        assert_eq!(
            hash12("002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"),
            "8daaf6152771"
        );
        // Without signature algorithms the string ends without an underscore.
        assert_eq!(
            hash12("0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"),
            "6d807ffa2a79"
        );
        let mut no_sigs = spec_example();
        no_sigs.signature_algorithms.clear();
        assert_eq!(
            Ja4::from_client_hello(&no_sigs).to_string(),
            "t13d1516h2_8daaf6152771_6d807ffa2a79"
        );
        assert_eq!(hash12(""), "000000000000");
    }

    #[test]
    fn alpn_characters() {
        // technical_details/JA4.md, "ALPN Extension Value": each example of the hex rule.
        for (protocol, expected) in [
            (&[0xab][..], "ab"),
            (&[0x20], "20"),
            (&[0xab, 0xcd], "ad"),
            (&[0x20, 0x61], "21"),
            (&[0x30, 0xab], "3b"),
            (&[0x61, 0x20], "60"),
            (&[0x30, 0x31, 0xab, 0xcd], "3d"),
            (&[0x30, 0xab, 0xcd, 0x31], "01"),
            (b"h2", "h2"),
            (b"http/1.1", "h1"),
            (b"h", "hh"),
            (b"", "00"),
        ] {
            let (first, last) = alpn_chars(Some(protocol));
            assert_eq!(format!("{first}{last}"), expected, "{protocol:02x?}");
        }
        assert_eq!(alpn_chars(None), ('0', '0'));
    }

    /// Real ClientHellos from FoxIO-LLC/ja4's pcap/ directory (commit 0e54bc8), the TCP payload
    /// of the first packet carrying one; expected JA4 from its rust/ja4/src/snapshots.
    #[test]
    fn captured_hellos() {
        // pcap/tls12.pcap, Firefox to contile.services.mozilla.com.
        let tls12 = unhex(concat!(
            "1603010200010001fc0303ecb2691addb2bf6c599c7aaae23de5f42561cc04eb41029acc6fc050a16ac1d220",
            "46f8617b580ac9358e2aa44e306d52466bcc989c87c8ca64309f5faf50ba7b4d0022130113031302c02bc02f",
            "cca9cca8c02cc030c00ac009c013c014009c009d002f00350100019100000021001f00001c636f6e74696c65",
            "2e73657276696365732e6d6f7a696c6c612e636f6d00170000ff01000100000a000e000c001d001700180019",
            "01000101000b00020100002300000010000e000c02683208687474702f312e31000500050100000000002200",
            "0a000804030503060302030033006b0069001d00208909858fbeb6ed2f1248ba5b9e2978bead0e840110192c",
            "61daed0096798b184400170041044d183d91f5eed35791fa982464e3b0214aaa5f5d1b78616d9b9fbebc22d1",
            "1f535b2f94c686143136aa795e6e5a875d6c08064ad5b76d44caad766e2483012748002b0005040304030300",
            "0d0018001604030503060308040805080604010501060102030201002d00020101001c000240010015007a00",
            "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000000000000000000000000000000000000000000000"
        ));
        let hello = parse_client_hello(&tls12).unwrap();
        assert_eq!(
            hello.server_name.as_deref(),
            Some("contile.services.mozilla.com")
        );
        assert_eq!(
            Ja4::from_client_hello(&hello).to_string(),
            "t13d1715h2_5b57614c22b0_3d5424432f57"
        );

        // pcap/tls-alpn-h2.pcap: a TLS 1.2 hello with 46 cipher suites.
        let alpn_h2 = unhex(concat!(
            "16030100e8010000e40303858226c04fbaeddef4246093b4cfdab38f9dcfef145360e417686575cac49c7000",
            "005cc030c02cc028c024c014c00a009f006b0039cca9cca8ccaaff8500c400880081009d003d003500c00084",
            "c02fc02bc027c023c013c009009e0067003300be0045009c003c002f00ba0041c011c00700050004c012c008",
            "0016000a00ff0100005f0000001700150000127777772e636c6f7564666c6172652e636f6d000b0002010000",
            "0a00080006001d00170018000d001c001a06010603efef0501050304010403eeeeeded030103030201020300",
            "10000e000c02683208687474702f312e31"
        ));
        let hello = parse_client_hello(&alpn_h2).unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("www.cloudflare.com"));
        assert_eq!(
            Ja4::from_client_hello(&hello).to_string(),
            "t12d4605h2_85626a9a5f7f_aaf95bb78ec9"
        );

        // pcap/tls-non-ascii-alpn.pcapng: the first ALPN protocol is 0xba 0xad. FoxIO's tools print
        // `t13d151699_8daaf6152771_e5627efa2ab1`; the specification's hex rule gives `bd`.
        let non_ascii = unhex(concat!(
            "1603010200010001fc03030f9e38acb9a54a7c6e00e29a70ac2feee180ff76d7f25dca84932a66a42d1e5a20",
            "bc58b92f865e6b9aa4a6371cadcb0afe1da1c0f705209a11d52357f56d5dd9620020aaaa130113021303c02b",
            "c02fc02cc030cca9cca8c013c014009c009d002f0035010001939a9a0000ff010001000033002b00290a0a00",
            "0100001d0020cf55af2603e92f59eb321779706a18fa6b96b16c16404c2264ed687a59401878002d00020101",
            "000500050100000000446900050003026832000d00120010040308040401050308050501080606010010000e",
            "000c02baad08687474702f312e3100230000001b0003020002002b0007060a0a030403030000002200200000",
            "1d636c69656e7473657276696365732e676f6f676c65617069732e636f6d00120000000a000a00080a0a001d",
            "0017001800170000000b000201006a6a000100001500ba000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000000000000000000000000000000000000000000000"
        ));
        let hello = parse_client_hello(&non_ascii).unwrap();
        assert_eq!(
            hello.alpn.first().map(Vec::as_slice),
            Some(&[0xba, 0xad][..])
        );
        let ja4 = Ja4::from_client_hello(&hello);
        assert_eq!(ja4.to_string(), "t13d1516bd_8daaf6152771_e5627efa2ab1");
        // rust/ja4/src/snapshots (and python/test/testdata), apart from the ALPN characters.
        assert_eq!(
            ja4.raw().replacen("bd", "99", 1),
            "t13d151699_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601"
        );
        assert_eq!(ja4.original(), "t13d1516bd_acb858a92679_8fc3c02244b2");
    }

    #[test]
    fn branches_from_bytes() {
        let ja4 = |spec: &HelloBytes| {
            Ja4::from_client_hello(&parse_client_hello(&spec.bytes()).unwrap()).to_string()
        };
        // No SNI: `i`; no ALPN: `00`; TLS 1.2 only (no supported_versions): `12`.
        let plain = HelloBytes {
            ciphers: vec![0xc02f, 0x009c],
            extensions: Some(vec![fixture::u16_list(0x000d, &[0x0401])]),
            ..HelloBytes::default()
        };
        let fp = ja4(&plain);
        assert!(fp.starts_with("t12i020100_"), "{fp}");
        assert_eq!(
            fp,
            format!("t12i020100_{}_{}", hash12("009c,c02f"), hash12("000d_0401"))
        );

        // GREASE everywhere counts for nothing; SNI and ALPN count but are not hashed.
        let greased = HelloBytes {
            ciphers: vec![0xdada, 0xc02f, 0x009c],
            extensions: Some(vec![
                (0x0a0a, vec![]),
                fixture::sni("example.com"),
                fixture::u16_list(0x000d, &[0x0401]),
                fixture::alpn(&[b"http/1.1"]),
                fixture::versions(&[0xfafa, 0x0304]),
                (0xfafa, vec![1]),
            ]),
            ..HelloBytes::default()
        };
        let fp = ja4(&greased);
        assert_eq!(
            fp,
            format!(
                "t13d0204h1_{}_{}",
                hash12("009c,c02f"),
                hash12("000d,002b_0401")
            )
        );

        // No cipher suites, no extensions.
        let empty = HelloBytes {
            ciphers: vec![],
            extensions: None,
            legacy_version: 0x0300,
            ..HelloBytes::default()
        };
        assert_eq!(ja4(&empty), "ts3i000000_000000000000_000000000000");
    }

    #[test]
    fn versions_counts_and_transport() {
        let mut hello = ClientHello::default();
        for (legacy, expected) in [
            (0x0304, "13"),
            (0x0303, "12"),
            (0x0302, "11"),
            (0x0301, "10"),
            (0x0300, "s3"),
            (0x0002, "s2"),
            (0x0305, "00"),
            (0xfefd, "00"),
        ] {
            hello.legacy_version = legacy;
            assert_eq!(&Ja4::from_client_hello(&hello).prefix()[1..3], expected);
        }
        // supported_versions wins when present, GREASE left out; only GREASE: legacy_version.
        hello.legacy_version = 0x0303;
        hello.extensions = vec![0x002b];
        hello.supported_versions = vec![0x0303, 0x0304, 0x7a7a];
        assert!(Ja4::from_client_hello(&hello).prefix().starts_with("t13"));
        hello.supported_versions = vec![0x7a7a];
        assert!(Ja4::from_client_hello(&hello).prefix().starts_with("t12"));

        hello.cipher_suites = (1..=150).collect();
        hello.extensions = (100..=250).collect();
        hello.transport = Transport::Quic;
        assert_eq!(Ja4::from_client_hello(&hello).prefix(), "q12i999900");
    }

    #[test]
    fn equality_is_the_canonical_form() {
        let a = spec_example();
        let mut b = a.clone();
        b.cipher_suites.reverse();
        let (ja4_a, ja4_b) = (Ja4::from_client_hello(&a), Ja4::from_client_hello(&b));
        assert_eq!(ja4_a, ja4_b);
        assert_ne!(ja4_a.original(), ja4_b.original());
    }
}
