//! Arbitrary rate-limit rule documents, TOML and JSON, through a config store: never a panic, and
//! an installed document always compiles into a usable guard.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ravelin_config::{Format, Outcome, Store};
use ravelin_ratelimit::{RateLimitGuard, Rules};

fuzz_target!(|data: &[u8]| {
    for format in [Format::Toml, Format::Json] {
        let store: Store<Rules> = Store::builder("fuzz")
            .format(format)
            .max_bytes(64 * 1024)
            .default_value(Rules::new())
            .build()
            .expect("the default is valid");
        if let Ok(Outcome::Installed { .. }) = store.submit(data, "fuzz") {
            let rules = store.load().value().clone();
            assert!(rules.rules.len() <= ravelin_ratelimit::MAX_RULES);
            assert!(
                RateLimitGuard::new(rules).is_ok(),
                "an installed document must build"
            );
        }
    }
});
