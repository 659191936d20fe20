//! Arbitrary header text through every ravelin-cache parser: `Cache-Control`, targeted fields
//! (RFC 9213 structured fields), `Pragma`, HTTP dates, `Age`, `Vary`, entity tags, surrogate tags
//! and `Range`. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(
        ravelin_cache::fuzz_logic::parse_all(data),
        "directive parsing is not deterministic"
    );
});
