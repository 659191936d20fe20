//! Arbitrary bytes as the reply of ravelin-ratelimit's GCRA script, on the wire (RESP2 or RESP3),
//! for a batch of up to three checks described by the first bytes: parsing never panics, and an
//! accepted reply gives one decision per check, each within its quota.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(
        ravelin_ratelimit::redis::fuzz_logic::script_reply(data),
        "an accepted script reply gave decisions outside their quotas"
    );
});
