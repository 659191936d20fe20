//! Arbitrary bytes as a value of ravelin-cache's shared tier on Redis (another proxy's write, or
//! anyone's with access to Redis): decoding never panics, and what decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(
        ravelin_cache::fuzz_logic::decode_shared_entry(data),
        "a decoded shared-tier entry does not round-trip"
    );
});
