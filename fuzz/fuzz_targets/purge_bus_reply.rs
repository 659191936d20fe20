//! Arbitrary bytes as a Redis reply to the purge bus's `XREAD`, `XRANGE` and `XINFO STREAM`
//! (anyone with access to Redis can write to the stream): parsing never panics, entry IDs print
//! back to themselves, and a purge that decodes encodes to fields that decode to the same purge.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(
        ravelin_cache::fuzz_logic::bus_reply(data),
        "a purge-bus reply did not round-trip"
    );
});
