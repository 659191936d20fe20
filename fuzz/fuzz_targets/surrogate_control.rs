//! Arbitrary `Surrogate-Control` field lines (one per `\n`) from an origin: parsing never panics,
//! the device token compares without case, and once this cache removed its own members from the
//! response, nothing left is for it (a second removal changes nothing).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(
        ravelin_cache::fuzz_logic::surrogate_control(data),
        "Surrogate-Control: case-sensitive token, or members for this cache survived removal"
    );
});
