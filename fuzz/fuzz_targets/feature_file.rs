//! Arbitrary bytes offered as a bot-score feature file: never a panic; a rejected file leaves the
//! previous model serving; whatever is active scores every request into 1..=99.
//!
//! The input is split at the first NUL: before it the candidate feature file, after it a
//! User-Agent to score with whatever model is then active.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ravelin_botscore::{BUILTIN_MODEL_JSON, DEFAULT_MAX_FILE_BYTES, Model, RequestView};
use ravelin_config::{Format, Outcome, Store};

fuzz_target!(|data: &[u8]| {
    let (file, ua) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(store) = Store::<Model>::builder("botscore")
        .format(Format::Json)
        .max_bytes(DEFAULT_MAX_FILE_BYTES)
        .initial_bytes(BUILTIN_MODEL_JSON, "builtin")
        .build()
    else {
        panic!("the shipped model must load");
    };
    let before = store.current().model_version();
    let before_len = store.current().features().len();
    match store.submit(file, "fuzz") {
        Ok(Outcome::Installed { .. }) => {
            // Only a valid, greater-versioned model may install.
            let active = store.current();
            assert!(active.is_prepared());
            assert!(active.model_version() > before);
            assert!(active.features().len() <= ravelin_botscore::DEFAULT_MAX_FEATURES);
        }
        Ok(_) | Err(_) => {
            assert_eq!(store.current().model_version(), before);
            assert_eq!(store.current().features().len(), before_len);
        }
    }
    let ua = String::from_utf8_lossy(ua);
    let scored = store
        .current()
        .score(&RequestView::user_agent_only(Some(&ua)));
    let Ok(scored) = scored else {
        panic!("an installed model must score");
    };
    assert!((1..=99).contains(&scored.score().get()));
});
