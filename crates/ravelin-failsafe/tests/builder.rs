//! `GuardLayer::builder`: settings out of range are refused, never clamped; the state is created
//! once, by `build`, and shared by everything the layer makes; identity comes from the guard.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use ravelin_failsafe::Switchboard;
use ravelin_failsafe::{
    CircuitBreakerConfig, CircuitState, ConfigError, FailurePolicy, GuardConfig, GuardError,
    GuardErrorKind, GuardLayer, MAX_FAILURE_BODY_BYTES, MAX_GUARD_TIMEOUT, SkipReason, Verdict,
    X_RAVELIN_SKIPPED, guard_fn,
};
use tower::Layer;

fn allow(name: &'static str) -> impl ravelin_failsafe::Guard {
    guard_fn(name, |_| Ok(Verdict::allow()))
}

#[test]
fn every_out_of_range_setting_is_refused_with_a_clear_error() {
    let refused = |builder: ravelin_failsafe::GuardLayerBuilder<_>| -> ConfigError {
        builder
            .build()
            .expect_err("an out-of-range setting must be refused")
    };

    let zero = refused(GuardLayer::builder(allow("authz")).timeout(Duration::ZERO));
    assert_eq!(
        zero,
        ConfigError::Timeout {
            timeout: Duration::ZERO,
            max: MAX_GUARD_TIMEOUT
        }
    );
    assert_eq!(
        zero.to_string(),
        "guard timeout 0ns is out of range: more than zero and at most 60s"
    );
    let long = refused(GuardLayer::builder(allow("authz")).timeout(Duration::from_secs(61)));
    assert!(matches!(long, ConfigError::Timeout { .. }), "{long}");

    let breaker = refused(
        GuardLayer::builder(allow("authz")).circuit_breaker(CircuitBreakerConfig::new().window(0)),
    );
    assert_eq!(
        breaker.to_string(),
        "circuit breaker setting `window` is 0; allowed: 1 to 4096 calls"
    );
    let cooldown = refused(
        GuardLayer::builder(allow("authz"))
            .circuit_breaker(CircuitBreakerConfig::new().open_for(Duration::from_secs(7200))),
    );
    assert!(cooldown.to_string().contains("`open_for`"), "{cooldown}");

    let status = refused(
        GuardLayer::builder(allow("authz")).policy(FailurePolicy::closed().status(StatusCode::OK)),
    );
    assert_eq!(status, ConfigError::FailureStatus { status: 200 });
    assert_eq!(
        status.to_string(),
        "failure status 200 is not a 4xx or 5xx status"
    );

    let body =
        refused(GuardLayer::builder(allow("authz")).policy(
            FailurePolicy::closed().body(Bytes::from(vec![b'x'; MAX_FAILURE_BODY_BYTES + 1])),
        ));
    assert_eq!(
        body.to_string(),
        "failure body is 4097 bytes; the limit is 4096"
    );

    // A skip header needs a name that can be its key; without one, any name will do.
    let name = refused(
        GuardLayer::builder(allow("Bot Score"))
            .policy(FailurePolicy::open().skip_header(X_RAVELIN_SKIPPED)),
    );
    assert_eq!(
        name,
        ConfigError::Name {
            name: "Bot Score".into()
        }
    );
    assert!(name.to_string().contains("\"Bot Score\""), "{name}");
    assert!(GuardLayer::builder(allow("Bot Score")).build().is_ok());
}

#[test]
fn a_guard_config_is_checked_as_its_own_validation_checks_it() {
    let config: GuardConfig = serde_json::from_str(
        r#"{ "failure_mode": "closed", "failure_status": 1200, "timeout": "0s" }"#,
    )
    .unwrap();
    let error = GuardLayer::from_config(allow("authz"), &config).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ConfigError::Config(_)), "{message}");
    assert!(
        message.contains("timeout: must be greater than zero"),
        "{message}"
    );
    assert!(message.contains("failure_status: 1200"), "{message}");

    // A later setter does not launder a document that broke its rules.
    let laundered = GuardLayer::builder(allow("authz"))
        .config(&config)
        .timeout(Duration::from_millis(10))
        .build();
    assert!(laundered.is_err());

    let valid: GuardConfig =
        serde_json::from_str(r#"{ "failure_mode": "closed", "timeout": "20ms" }"#).unwrap();
    let layer = GuardLayer::from_config(allow("authz"), &valid).unwrap();
    assert_eq!(layer.handle().timeout(), Duration::from_millis(20));
}

#[test]
fn the_defaults_need_no_checking() {
    let layer = GuardLayer::new(allow("Any Name At All"));
    let handle = layer.handle();
    assert_eq!(handle.name(), "Any Name At All");
    assert_eq!(handle.timeout(), ravelin_failsafe::DEFAULT_TIMEOUT);
    assert_eq!(handle.circuit_breaker(), &CircuitBreakerConfig::new());
    assert!(handle.kill_switch().is_none());
}

#[tokio::test]
async fn two_services_from_one_layer_share_one_breaker() {
    let layer = GuardLayer::builder(guard_fn("flaky", |_| {
        Err(GuardError::new(GuardErrorKind::Dependency, "down"))
    }))
    .circuit_breaker(CircuitBreakerConfig::new().consecutive_failures(2))
    .build()
    .unwrap();
    let handle = layer.handle();
    let clone = layer.clone();
    let mut first = layer.layer(Origin::default());
    let mut second = clone.layer(Origin::default());

    // One failure through each service: two in a row for the one breaker they share.
    send(&mut first, Request::new(())).await;
    assert_eq!(handle.circuit_state(), CircuitState::Closed);
    let response = send(&mut second, Request::new(())).await;
    let seen = response.extensions().get::<Seen>().unwrap();
    assert_eq!(
        seen.skipped.as_ref().unwrap().reason("flaky"),
        Some(SkipReason::Failed)
    );
    assert_eq!(handle.circuit_state(), CircuitState::Open);
    assert_eq!(first.handle().circuit_state(), CircuitState::Open);
    assert_eq!(second.handle().circuit_state(), CircuitState::Open);

    let response = send(&mut first, Request::new(())).await;
    let seen = response.extensions().get::<Seen>().unwrap();
    assert_eq!(
        seen.skipped.as_ref().unwrap().reason("flaky"),
        Some(SkipReason::CircuitOpen),
        "the first service sees the circuit the second one opened"
    );

    // A handle taken later is the same state, not a new one.
    handle.reset();
    assert_eq!(clone.handle().circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn the_kill_switch_is_looked_up_by_the_guards_name() {
    let switchboard = Switchboard::new();
    let layer = GuardLayer::builder(guard_fn("botscore", |_| {
        Err(GuardError::new(
            GuardErrorKind::Config,
            "unreachable while killed",
        ))
    }))
    .policy(FailurePolicy::closed())
    .switchboard(&switchboard)
    .build()
    .unwrap();
    let handle = layer.handle();
    assert_eq!(handle.kill_switch().unwrap().name(), "botscore");
    let mut service = layer.layer(Origin::default());

    switchboard.set("botscore", true, "test").unwrap();
    assert!(handle.is_killed());
    let response = send(&mut service, Request::new(())).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "killed: the guard is off"
    );
    let seen = response.extensions().get::<Seen>().unwrap();
    assert_eq!(
        seen.skipped.as_ref().unwrap().reason("botscore"),
        Some(SkipReason::Killed)
    );
}
