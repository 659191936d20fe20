//! Arbitrary first bytes of a TLS connection: the ClientHello parser never panics, never asks for
//! more than `MAX_CLIENT_HELLO_BYTES`, agrees with `record_bytes_needed`, and when it accepts a
//! hello, its JA4 has the documented shape (`a_b_c`: 10 letters or digits, then two 12-digit
//! lower-case hex hashes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ravelin_tls::clienthello::{
    MAX_CLIENT_HELLO_BYTES, ParseError, Transport, parse_client_hello, parse_handshake_message,
    record_bytes_needed,
};
use ravelin_tls::ja4::Ja4;

fn check_ja4(ja4: &Ja4) {
    let s = ja4.as_str();
    let parts: Vec<&str> = s.split('_').collect();
    let hex12 =
        |p: &str| p.len() == 12 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert_eq!(s.len(), 36, "{s}");
    assert_eq!(parts.len(), 3, "{s}");
    assert!(
        parts[0].len() == 10 && parts[0].bytes().all(|b| b.is_ascii_alphanumeric()),
        "{s}"
    );
    assert!(hex12(parts[1]) && hex12(parts[2]), "{s}");
    assert_eq!(ja4.to_string(), s);
    assert!(ja4.raw().starts_with(ja4.prefix()));
    assert!(ja4.raw_original().starts_with(ja4.prefix()));
    assert_eq!(ja4.original().len(), 36);
}

fuzz_target!(|data: &[u8]| {
    let needed = record_bytes_needed(data);
    match parse_client_hello(data) {
        Ok(hello) => {
            assert_eq!(needed, Ok(0));
            check_ja4(&Ja4::from_client_hello(&hello));
        }
        Err(ParseError::Incomplete { needed: Some(n) }) => {
            assert!(n >= 1 && data.len() + n <= MAX_CLIENT_HELLO_BYTES);
            assert_eq!(needed, Ok(n));
        }
        Err(ParseError::Incomplete { needed: None }) => panic!("the parser always knows"),
        Err(hard) => assert!(needed == Err(hard.clone()) || needed == Ok(0), "{hard}"),
    }
    // The same bytes as a bare handshake message (QUIC's CRYPTO frames).
    if let Ok(hello) = parse_handshake_message(data, Transport::Quic) {
        let ja4 = Ja4::from_client_hello(&hello);
        check_ja4(&ja4);
        assert!(ja4.as_str().starts_with('q'));
    }
});
