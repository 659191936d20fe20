//! Arbitrary bytes offered to a store, in both formats: never a panic, never an invalid install.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ravelin_config::{Format, Outcome, Store, Validate, Violations};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Doc {
    version: u64,
    rows: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct Row {
    name: String,
    weight: f64,
}

impl Validate for Doc {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        if v.check_count("rows", "entries", self.rows.len(), 8) {
            for (i, row) in self.rows.iter().enumerate() {
                v.check_finite(&format!("rows[{i}].weight"), row.weight);
                if row.name.is_empty() {
                    v.push(format!("rows[{i}].name"), "must not be blank");
                }
            }
        }
        v.into_result()
    }
    fn version(&self) -> Option<u64> {
        Some(self.version)
    }
}

fuzz_target!(|data: &[u8]| {
    let seeds: [(Format, &[u8]); 2] = [
        (Format::Json, b"{\"version\":0,\"rows\":[]}"),
        (Format::Toml, b"version = 0\nrows = []\n"),
    ];
    for (format, seed) in seeds {
        let Ok(store) = Store::<Doc>::builder("fuzz")
            .format(format)
            .max_bytes(64 * 1024)
            .initial_bytes(seed, "seed")
            .build()
        else {
            panic!("the seed document must be valid");
        };
        if let Ok(Outcome::Installed { .. }) = store.submit(data, "fuzz") {
            assert!(store.current().validate().is_ok());
        }
    }
});
