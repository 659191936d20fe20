//! Property tests of the ClientHello parser and of JA4.
//!
//! (a) arbitrary bytes never panic the parser and never make it ask for more than
//! `MAX_CLIENT_HELLO_BYTES`; (b) a generated ClientHello survives encoding, record splitting and
//! parsing, and every prefix of its bytes is `Incomplete`; (c) JA4 ignores the order of cipher
//! suites and extensions and any GREASE.
// Test code: a panic in a helper is a failing test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;
use ravelin_tls::clienthello::{
    ClientHello, MAX_CLIENT_HELLO_BYTES, ParseError, is_grease, parse_client_hello,
    record_bytes_needed,
};
use ravelin_tls::ja4::Ja4;

// === encoding (written from RFC 8446 section 4.1.2, independently of the parser) ===

const SNI: u16 = 0x0000;
const GROUPS: u16 = 0x000a;
const SIGALGS: u16 = 0x000d;
const ALPN: u16 = 0x0010;
const VERSIONS: u16 = 0x002b;
const KNOWN: [u16; 5] = [SNI, GROUPS, SIGALGS, ALPN, VERSIONS];

/// A ClientHello and the data of the extensions it does not keep.
#[derive(Debug, Clone)]
struct Generated {
    hello: ClientHello,
    unknown: BTreeMap<u16, Vec<u8>>,
}

fn len8(out: &mut Vec<u8>, data: &[u8]) {
    out.push(u8::try_from(data.len()).unwrap());
    out.extend_from_slice(data);
}

fn len16(out: &mut Vec<u8>, data: &[u8]) {
    out.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(data);
}

fn u16s(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn extension_data(g: &Generated, ext: u16) -> Vec<u8> {
    let h = &g.hello;
    let mut data = Vec::new();
    match ext {
        SNI => {
            let mut entry = vec![0];
            len16(
                &mut entry,
                h.server_name.as_deref().unwrap_or_default().as_bytes(),
            );
            len16(&mut data, &entry);
        }
        ALPN => {
            let mut list = Vec::new();
            for p in &h.alpn {
                len8(&mut list, p);
            }
            len16(&mut data, &list);
        }
        SIGALGS => len16(&mut data, &u16s(&h.signature_algorithms)),
        GROUPS => len16(&mut data, &u16s(&h.supported_groups)),
        VERSIONS => len8(&mut data, &u16s(&h.supported_versions)),
        other => data.clone_from(&g.unknown[&other]),
    }
    data
}

/// The handshake message.
fn message(g: &Generated) -> Vec<u8> {
    let h = &g.hello;
    let mut body = h.legacy_version.to_be_bytes().to_vec();
    body.extend(h.random);
    len8(&mut body, &h.session_id);
    len16(&mut body, &u16s(&h.cipher_suites));
    len8(&mut body, &h.compression_methods);
    let mut block = Vec::new();
    for &ext in &h.extensions {
        block.extend(ext.to_be_bytes());
        len16(&mut block, &extension_data(g, ext));
    }
    len16(&mut body, &block);
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut message = vec![1, len[1], len[2], len[3]];
    message.extend(body);
    message
}

/// `message` in handshake records, cut at `cuts` (any values: sorted, deduplicated, clamped).
fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|c| c % message.len())
        .filter(|c| *c > 0)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(message.len());
    let mut out = Vec::new();
    let mut start = 0;
    for end in cuts {
        out.extend([22, 3, 1]);
        len16(&mut out, &message[start..end]);
        start = end;
    }
    out
}

// === generators ===

fn host_name() -> impl Strategy<Value = String> {
    "[a-z0-9_]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}"
        .prop_filter("an IP literal is not a host name", |s| {
            s.parse::<IpAddr>().is_err()
        })
}

fn u16_list(max: usize) -> impl Strategy<Value = Vec<u16>> {
    prop::collection::vec(any::<u16>(), 0..max)
}

prop_compose! {
    fn generated()(
        legacy_version in any::<u16>(),
        random in any::<[u8; 32]>(),
        session_id in prop::collection::vec(any::<u8>(), 0..=32),
        cipher_suites in u16_list(60),
        compression_methods in prop::collection::vec(any::<u8>(), 0..4),
        server_name in prop::option::of(host_name()),
        alpn in prop::option::of(prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..12), 0..5)),
        signature_algorithms in prop::option::of(u16_list(30)),
        supported_groups in prop::option::of(u16_list(20)),
        supported_versions in prop::option::of(u16_list(8)),
        unknown in prop::collection::btree_map(
            any::<u16>().prop_filter("known", |t| !KNOWN.contains(t)),
            prop::collection::vec(any::<u8>(), 0..24), 0..12),
    )(
        order in Just(order(&server_name, &alpn, &signature_algorithms, &supported_groups,
            &supported_versions, &unknown)).prop_shuffle(),
        legacy_version in Just(legacy_version),
        random in Just(random),
        session_id in Just(session_id),
        cipher_suites in Just(cipher_suites),
        compression_methods in Just(compression_methods),
        server_name in Just(server_name),
        alpn in Just(alpn),
        signature_algorithms in Just(signature_algorithms),
        supported_groups in Just(supported_groups),
        supported_versions in Just(supported_versions),
        unknown in Just(unknown),
    ) -> Generated {
        let mut hello = ClientHello::default();
        hello.legacy_version = legacy_version;
        hello.random = random;
        hello.session_id = session_id;
        hello.cipher_suites = cipher_suites;
        hello.compression_methods = compression_methods;
        hello.extensions = order;
        hello.server_name = server_name;
        hello.alpn = alpn.unwrap_or_default();
        hello.signature_algorithms = signature_algorithms.unwrap_or_default();
        hello.supported_groups = supported_groups.unwrap_or_default();
        hello.supported_versions = supported_versions.unwrap_or_default();
        Generated { hello, unknown }
    }
}

/// The extension types present, in a canonical order (shuffled by the caller).
fn order(
    sni: &Option<String>,
    alpn: &Option<Vec<Vec<u8>>>,
    sigalgs: &Option<Vec<u16>>,
    groups: &Option<Vec<u16>>,
    versions: &Option<Vec<u16>>,
    unknown: &BTreeMap<u16, Vec<u8>>,
) -> Vec<u16> {
    let mut types: Vec<u16> = unknown.keys().copied().collect();
    for (present, ext) in [
        (sni.is_some(), SNI),
        (alpn.is_some(), ALPN),
        (sigalgs.is_some(), SIGALGS),
        (groups.is_some(), GROUPS),
        (versions.is_some(), VERSIONS),
    ] {
        if present {
            types.push(ext);
        }
    }
    types
}

fn grease() -> impl Strategy<Value = u16> {
    (0u16..16).prop_map(|i| 0x0a0a + 0x1010 * i)
}

/// Inserts `value` at `at` (taken modulo the length + 1).
fn insert(list: &mut Vec<u16>, at: usize, value: u16) {
    let at = at % (list.len() + 1);
    list.insert(at, value);
}

fn ja4_shape_ok(ja4: &str) -> bool {
    let parts: Vec<&str> = ja4.split('_').collect();
    let hex12 = |s: &str| {
        s.len() == 12
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    ja4.len() == 36
        && parts.len() == 3
        && parts[0].len() == 10
        && parts[0].bytes().all(|b| b.is_ascii_alphanumeric())
        && hex12(parts[1])
        && hex12(parts[2])
}

/// Checks the answers for any buffer: bounded, and `record_bytes_needed` agrees.
fn check_any(buf: &[u8]) -> Result<(), TestCaseError> {
    let parsed = parse_client_hello(buf);
    let needed = record_bytes_needed(buf);
    match &parsed {
        Ok(hello) => {
            prop_assert_eq!(needed, Ok(0));
            let ja4 = Ja4::from_client_hello(hello);
            prop_assert!(ja4_shape_ok(ja4.as_str()), "{}", ja4);
        }
        Err(ParseError::Incomplete { needed: Some(n) }) => {
            prop_assert!(*n >= 1);
            prop_assert!(
                buf.len() + n <= MAX_CLIENT_HELLO_BYTES,
                "{} + {}",
                buf.len(),
                n
            );
            prop_assert_eq!(needed, Ok(*n));
        }
        Err(ParseError::Incomplete { needed: None }) => {
            prop_assert!(false, "the parser always knows what it needs");
        }
        // Reassembly errors are the same; errors inside a complete message only the parser sees.
        Err(hard) => prop_assert!(needed == Err(hard.clone()) || needed == Ok(0)),
    }
    Ok(())
}

proptest! {
    // (a) arbitrary bytes.
    #[test]
    fn arbitrary_bytes_are_safe(buf in prop::collection::vec(any::<u8>(), 0..600)) {
        check_any(&buf)?;
    }

    // (a) arbitrary bytes behind a handshake record header, to get past the first checks.
    #[test]
    fn arbitrary_records_are_safe(
        len in any::<u16>(),
        handshake_len in 0u32..0x5000,
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let h = handshake_len.to_be_bytes();
        let mut buf = vec![22, 3, 1];
        buf.extend(len.to_be_bytes());
        buf.extend([1, h[1], h[2], h[3]]);
        buf.extend(body);
        check_any(&buf)?;
    }

    // (a) a valid hello with a byte changed or the buffer cut.
    #[test]
    fn mutated_hellos_are_safe(
        g in generated(),
        cuts in prop::collection::vec(any::<usize>(), 0..3),
        at in any::<usize>(),
        xor in 1u8..,
        cut in any::<usize>(),
    ) {
        let mut bytes = records(&message(&g), &cuts);
        let at = at % bytes.len();
        bytes[at] ^= xor;
        check_any(&bytes)?;
        check_any(&bytes[..cut % bytes.len()])?;
    }

    // (b) round trip, every split, every prefix.
    #[test]
    fn generated_hellos_round_trip(
        g in generated(),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let bytes = records(&message(&g), &cuts);
        prop_assert_eq!(parse_client_hello(&bytes), Ok(g.hello.clone()));
        prop_assert_eq!(record_bytes_needed(&bytes), Ok(0));
        for len in 0..bytes.len() {
            match parse_client_hello(&bytes[..len]) {
                Err(ParseError::Incomplete { needed: Some(n) }) => {
                    prop_assert!(n >= 1 && len + n <= bytes.len(), "len {}: needed {}", len, n);
                }
                other => prop_assert!(false, "prefix of {} bytes: {:?}", len, other),
            }
        }
    }

    // (c) JA4 ignores the order of cipher suites and extensions and GREASE anywhere.
    #[test]
    fn ja4_ignores_order_and_grease(
        g in generated(),
        cipher_seed in any::<u64>(),
        ext_seed in any::<u64>(),
        greases in prop::collection::vec((grease(), any::<usize>()), 0..4),
    ) {
        let ja4 = Ja4::from_client_hello(&g.hello);
        prop_assert!(ja4_shape_ok(ja4.as_str()), "{}", ja4);

        let mut shuffled = g.clone();
        let h = &mut shuffled.hello;
        h.cipher_suites = permute(&h.cipher_suites, cipher_seed);
        // ALPN's place among the extensions does not matter either; its first protocol does.
        h.extensions = permute(&h.extensions, ext_seed);
        for &(value, at) in &greases {
            insert(&mut h.cipher_suites, at, value);
            insert(&mut h.signature_algorithms, at, value);
            insert(&mut h.supported_groups, at, value);
            if h.has_extension(VERSIONS) && h.supported_versions.len() < 100 {
                insert(&mut h.supported_versions, at, value);
            }
            if !h.extensions.contains(&value) {
                insert(&mut h.extensions, at, value);
                shuffled.unknown.insert(value, vec![0; at % 3]);
            }
        }
        // Through the bytes, as a server sees it.
        let bytes = records(&message(&shuffled), &[]);
        let reparsed = parse_client_hello(&bytes);
        prop_assert!(reparsed.is_ok(), "{:?}", reparsed);
        let other = Ja4::from_client_hello(&reparsed.unwrap());
        prop_assert_eq!(&other, &ja4);
        prop_assert_eq!(other.raw(), ja4.raw());
    }

    // The order of signature algorithms does matter.
    #[test]
    fn ja4_keeps_the_order_of_signature_algorithms(
        g in generated(),
        sigalgs in prop::collection::vec(any::<u16>(), 2..20),
    ) {
        let sigalgs: Vec<u16> = sigalgs.into_iter().filter(|v| !is_grease(*v)).collect();
        let mut reversed = sigalgs.clone();
        reversed.reverse();
        prop_assume!(reversed != sigalgs);
        let mut hello = g.hello.clone();
        hello.signature_algorithms = sigalgs;
        let mut other = hello.clone();
        other.signature_algorithms = reversed;
        prop_assert_ne!(Ja4::from_client_hello(&other), Ja4::from_client_hello(&hello));
    }
}

/// A permutation of `list` chosen by `seed` (a small xorshift Fisher–Yates).
fn permute(list: &[u16], mut seed: u64) -> Vec<u16> {
    let mut out = list.to_vec();
    seed |= 1;
    for i in (1..out.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = usize::try_from(seed % (i as u64 + 1)).unwrap();
        out.swap(i, j);
    }
    out
}
