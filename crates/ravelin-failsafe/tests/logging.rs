//! A failure storm must not become a logging storm. This binary installs the Ravelin panic
//! hook, as a proxy binary would, so contained panics do not write to stderr either.

// Test helpers are test code: they may unwrap and index (clippy.toml allows this inside
// #[test] functions only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use http::Request;
use ravelin_failsafe::{
    CircuitBreakerConfig, CircuitState, GuardError, GuardErrorKind, GuardLayer, ManualClock,
    Verdict, guard_fn, install_panic_hook,
};
use tower::Layer;
use tracing_subscriber::layer::SubscriberExt;

/// Runs `f` on a current-thread runtime with a subscriber that records every line.
fn with_lines(f: impl AsyncFnOnce(Lines)) {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry().with(lines.clone());
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(f(lines));
    });
}

#[test]
fn ten_thousand_errors_write_a_bounded_number_of_lines() {
    with_lines(async |lines| {
        let clock = ManualClock::new();
        let layer = GuardLayer::builder(guard_fn("flaky", |_| {
            Err(GuardError::new(
                GuardErrorKind::Dependency,
                "connection refused",
            ))
        }))
        .clock(clock.clone())
        // Without a breaker every request reaches the failing guard: the limiter alone must
        // hold the line count.
        .circuit_breaker(CircuitBreakerConfig::disabled())
        .log_lines_per_second(5)
        .build()
        .unwrap();
        let mut service = layer.layer(Origin::default());

        for _ in 0..10_000 {
            send(&mut service, Request::new(())).await;
        }
        assert_eq!(lines.count(), 5, "{:#?}", lines.all());

        clock.advance(Duration::from_secs(1));
        send(&mut service, Request::new(())).await;
        let all = lines.all();
        assert_eq!(all.len(), 7, "one summary line, then the failure: {all:#?}");
        assert!(all[5].contains("suppressed=9995"), "{}", all[5]);
        assert!(all[6].contains("connection refused"), "{}", all[6]);
    });
}

#[test]
fn ten_thousand_panics_write_a_bounded_number_of_lines_with_their_location() {
    install_panic_hook();
    with_lines(async |lines| {
        let clock = ManualClock::new();
        let layer =
            GuardLayer::builder(guard_fn("panicky", |head| -> Result<Verdict, GuardError> {
                let limit: Option<usize> = head.headers.get("x-limit").map(|_| 200);
                Ok(Verdict::Allow(
                    ravelin_failsafe::Allow::new().extension(Score(limit.unwrap() as u8)),
                ))
            }))
            .clock(clock.clone())
            .circuit_breaker(CircuitBreakerConfig::disabled())
            .build()
            .unwrap();
        let mut service = layer.layer(Origin::default());

        for _ in 0..10_000 {
            send(&mut service, Request::new(())).await;
        }
        let all = lines.all();
        assert_eq!(all.len(), 5, "{all:#?}");
        assert!(all[0].starts_with("ERROR"), "{}", all[0]);
        assert!(
            all[0].contains("called `Option::unwrap()` on a `None` value"),
            "the payload as text: {}",
            all[0]
        );
        assert!(
            all[0].contains("logging.rs:"),
            "the hook records where it panicked: {}",
            all[0]
        );
    });
}

#[test]
fn with_the_default_breaker_a_panic_storm_opens_the_circuit_and_goes_quiet() {
    install_panic_hook();
    with_lines(async |lines| {
        let layer = GuardLayer::builder(guard_fn(
            "featurefile",
            |_| -> Result<Verdict, GuardError> {
                let features = [0_u8; 200];
                let index = features.len();
                Ok(Verdict::Allow(
                    ravelin_failsafe::Allow::new().extension(Score(features[index])),
                ))
            },
        ))
        .clock(ManualClock::new())
        .build()
        .unwrap();
        let handle = layer.handle();
        let mut service = layer.layer(Origin::default());
        for _ in 0..10_000 {
            send(&mut service, Request::new(())).await;
        }
        assert_eq!(handle.circuit_state(), CircuitState::Open);
        let all = lines.all();
        // Ten panics open the circuit (consecutive failures): five logged, then the
        // transition; the other 9,990 requests skip the guard without a line each.
        assert_eq!(all.len(), 6, "{all:#?}");
        assert!(all[5].contains("guard circuit opened"), "{}", all[5]);
    });
}
