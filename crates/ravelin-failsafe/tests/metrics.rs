//! Every outcome lands in `ravelin_guard_decisions_total{guard,outcome}`, once.

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

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use ravelin_failsafe::KillSwitch;
use ravelin_failsafe::{
    CircuitState, DECISIONS_TOTAL, FailurePolicy, GuardError, GuardErrorKind, GuardLayer,
    GuardLayerBuilder, Outcome, Verdict, guard_fn,
};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

type Svc = BoxCloneService<
    Request<()>,
    Response<ravelin_failsafe::GuardBody<http_body_util::Full<Bytes>>>,
    std::convert::Infallible,
>;

/// Times every evaluation, so each guard that ran has exactly one duration sample.
fn boxed<G: ravelin_failsafe::Guard>(builder: GuardLayerBuilder<G>) -> Svc {
    as_is(builder.duration_sampling(1).build().unwrap())
}

fn as_is<G: ravelin_failsafe::Guard>(layer: GuardLayer<G>) -> Svc {
    BoxCloneService::new(layer.layer(Origin::default()))
}

fn error() -> Result<Verdict, GuardError> {
    Err(GuardError::new(GuardErrorKind::Dependency, "down"))
}

#[tokio::test(start_paused = true)]
async fn each_outcome_is_counted_once_under_its_label() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let switch = KillSwitch::standalone("killed");
    switch.engage("test");

    let services: Vec<(Outcome, Svc)> = metrics::with_local_recorder(&recorder, || {
        let forced = GuardLayer::builder(guard_fn("circuit_open", |_| Ok(Verdict::allow())))
            .duration_sampling(1)
            .build()
            .unwrap();
        forced.handle().force_open();
        vec![
            (
                Outcome::Allowed,
                boxed(GuardLayer::builder(guard_fn("allowed", |_| {
                    Ok(Verdict::allow())
                }))),
            ),
            (
                Outcome::Responded,
                boxed(GuardLayer::builder(guard_fn("responded", |_| {
                    Ok(Verdict::Respond(Response::new(Bytes::new())))
                }))),
            ),
            (
                Outcome::FailedOpen,
                boxed(GuardLayer::builder(guard_fn("failed_open", |_| error()))),
            ),
            (
                Outcome::FailedClosed,
                boxed(
                    GuardLayer::builder(guard_fn("failed_closed", |_| error()))
                        .policy(FailurePolicy::closed()),
                ),
            ),
            (
                Outcome::Panicked,
                boxed(GuardLayer::builder(guard_fn("panicked", |head| {
                    Ok(Verdict::Allow(
                        ravelin_failsafe::Allow::new()
                            .extension(Score(head.headers["missing"].len() as u8)),
                    ))
                }))),
            ),
            (
                Outcome::TimedOut,
                boxed(
                    GuardLayer::builder(async_guard("timed_out", |_| {
                        Box::pin(async {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            Ok(Verdict::allow())
                        }) as BoxVerdict
                    }))
                    .timeout(Duration::from_millis(10)),
                ),
            ),
            // The forced layer's state is its own from `build`: box it as it is.
            (Outcome::CircuitOpen, as_is(forced)),
            (
                Outcome::Killed,
                boxed(
                    GuardLayer::builder(guard_fn("killed", |_| error()))
                        .kill_switch(switch.clone()),
                ),
            ),
        ]
    });
    for (_, service) in &services {
        service.clone().oneshot(Request::new(())).await.unwrap();
    }

    let snapshot = snapshotter.snapshot().into_vec();
    let label = |key: &metrics::Key, name: &str| {
        key.labels()
            .find(|l| l.key() == name)
            .map(|l| l.value().to_owned())
    };
    for (expected, _) in &services {
        let guard = expected.as_str();
        for outcome in Outcome::ALL {
            let value = snapshot
                .iter()
                .find(|(key, _, _, _)| {
                    key.key().name() == DECISIONS_TOTAL
                        && label(key.key(), "guard").as_deref() == Some(guard)
                        && label(key.key(), "outcome").as_deref() == Some(outcome.as_str())
                })
                .map(|(_, _, _, value)| value);
            let want = u64::from(outcome == *expected);
            assert_eq!(
                value,
                Some(DebugValue::Counter(want)).as_ref(),
                "guard {guard}, outcome {}",
                outcome.as_str()
            );
        }
        let samples = snapshot
            .iter()
            .find(|(key, _, _, _)| {
                key.key().name() == ravelin_failsafe::DURATION_SECONDS
                    && label(key.key(), "guard").as_deref() == Some(guard)
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Histogram(samples) => samples.len(),
                _ => usize::MAX,
            });
        // The guard's time is measured when it ran, not when it was skipped.
        let ran = !matches!(expected, Outcome::CircuitOpen | Outcome::Killed);
        assert_eq!(
            samples,
            Some(usize::from(ran)),
            "duration samples of {guard}"
        );
    }

    let state = snapshot
        .iter()
        .find(|(key, _, _, _)| {
            key.key().name() == ravelin_failsafe::CIRCUIT_STATE
                && label(key.key(), "guard").as_deref() == Some("circuit_open")
        })
        .map(|(_, _, _, value)| value);
    assert_eq!(
        state,
        Some(DebugValue::Gauge(
            CircuitState::ForcedOpen.gauge_value().into()
        ))
        .as_ref()
    );
}

#[tokio::test]
async fn a_late_synchronous_answer_is_counted_as_a_timeout() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ravelin_failsafe::ManualClock::new();
    let service = metrics::with_local_recorder(&recorder, || {
        let work = clock.clone();
        boxed(
            GuardLayer::builder(guard_fn("late", move |_| {
                work.advance(Duration::from_millis(250));
                Ok(Verdict::allow())
            }))
            .clock(clock.clone())
            .timeout(Duration::from_millis(100)),
        )
    });
    service.oneshot(Request::new(())).await.unwrap();
    let snapshot = snapshotter.snapshot().into_vec();
    let counted = |outcome: Outcome| {
        snapshot.iter().find_map(|(key, _, _, value)| {
            let labels: Vec<_> = key.key().labels().map(|l| l.value().to_owned()).collect();
            (key.key().name() == DECISIONS_TOTAL
                && labels.contains(&"late".to_owned())
                && labels.contains(&outcome.as_str().to_owned()))
            .then_some(value)
        })
    };
    assert_eq!(counted(Outcome::TimedOut), Some(&DebugValue::Counter(1)));
    assert_eq!(counted(Outcome::Allowed), Some(&DebugValue::Counter(0)));
    let durations = snapshot.iter().find_map(|(key, _, _, value)| {
        (key.key().name() == ravelin_failsafe::DURATION_SECONDS).then_some(value)
    });
    // The histogram records what the guard took, measured on the same reads.
    match durations {
        Some(DebugValue::Histogram(samples)) => {
            assert_eq!(samples.len(), 1);
            assert_eq!(samples[0].into_inner(), 0.25);
        }
        other => panic!("no duration sample: {other:?}"),
    }
}
