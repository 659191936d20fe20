//! GuardLayer behaviour, outcome by outcome, under both failure modes.

// Test helpers are test code: they may unwrap and index (clippy.toml allows this inside
// #[test] functions only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use ravelin_failsafe::KillSwitch;
use ravelin_failsafe::{
    Allow, CircuitBreakerConfig, CircuitState, FailureMode, FailurePolicy, GuardError,
    GuardErrorKind, GuardLayer, MAX_GUARD_TIMEOUT, ManualClock, RequestHead, SkipReason, Verdict,
    X_RAVELIN_SKIPPED, guard_fn,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const NAME: &str = "testguard";

fn policy(mode: FailureMode) -> FailurePolicy {
    match mode {
        FailureMode::Open => FailurePolicy::open().skip_header(X_RAVELIN_SKIPPED),
        FailureMode::Closed => FailurePolicy::closed(),
    }
}

/// Sends one request through `layer` and checks what the failure policy of `mode` must have
/// done with it.
async fn assert_policy_applied<G: ravelin_failsafe::Guard>(
    layer: GuardLayer<G>,
    mode: FailureMode,
    reason: SkipReason,
) {
    let origin = Origin::default();
    let mut service = layer.layer(origin.clone());
    let response = send(&mut service, Request::new(())).await;
    match mode {
        FailureMode::Open => {
            assert_eq!(response.status(), StatusCode::OK);
            let seen = response.extensions().get::<Seen>().unwrap().clone();
            assert_eq!(body_of(response).await, "origin");
            assert_eq!(origin.calls(), 1);
            let skipped = seen.skipped.expect("fail-open marks the request skipped");
            assert_eq!(skipped.reason(NAME), Some(reason));
            assert_eq!(
                seen.headers[X_RAVELIN_SKIPPED],
                format!("{NAME}={}", reason.as_str())
            );
            assert_eq!(seen.score, None, "a failed guard annotates nothing");
        }
        FailureMode::Closed => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[RETRY_AFTER], "5");
            assert!(response.extensions().get::<Seen>().is_none());
            assert!(!body_of(response).await.is_empty());
            assert_eq!(origin.calls(), 0, "fail-closed does not call the origin");
        }
    }
}

fn modes() -> [FailureMode; 2] {
    [FailureMode::Open, FailureMode::Closed]
}

#[tokio::test]
async fn allow_applies_annotations() {
    let layer = GuardLayer::new(guard_fn(NAME, |head| {
        assert_eq!(head.uri.path(), "/path");
        Ok(Verdict::Allow(
            Allow::new()
                .request_header(
                    HeaderName::from_static("x-score"),
                    HeaderValue::from_static("77"),
                )
                .response_header(
                    HeaderName::from_static("x-checked"),
                    HeaderValue::from_static("yes"),
                )
                .extension(Score(77)),
        ))
    }));
    let origin = Origin::default();
    let mut service = ServiceBuilder::new().layer(layer).service(origin.clone());
    let request = Request::get("/path").body(()).unwrap();
    let response = send(&mut service, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-checked"], "yes");
    let seen = response.extensions().get::<Seen>().unwrap();
    assert_eq!(seen.headers["x-score"], "77");
    assert_eq!(seen.score, Some(Score(77)));
    assert!(
        seen.skipped.is_none(),
        "an allowed request is not marked skipped"
    );
    assert_eq!(origin.calls(), 1);
}

#[tokio::test]
async fn response_headers_are_appended_not_replaced() {
    let layer = GuardLayer::new(guard_fn(NAME, |_| {
        Ok(Verdict::Allow(
            Allow::new()
                .response_header(
                    HeaderName::from_static("vary"),
                    HeaderValue::from_static("a"),
                )
                .response_header(
                    HeaderName::from_static("vary"),
                    HeaderValue::from_static("b"),
                ),
        ))
    }));
    let inner = tower::service_fn(|_: Request<()>| async {
        let mut response = Response::new(http_body_util::Full::new(Bytes::new()));
        response
            .headers_mut()
            .insert("vary", HeaderValue::from_static("origin"));
        Ok::<_, Infallible>(response)
    });
    let response = layer.layer(inner).oneshot(Request::new(())).await.unwrap();
    let vary: Vec<_> = response.headers().get_all("vary").iter().collect();
    assert_eq!(vary, ["origin", "a", "b"]);
}

#[tokio::test]
async fn respond_answers_without_the_origin() {
    let layer = GuardLayer::builder(guard_fn(NAME, |_| {
        let mut response = Response::new(Bytes::from_static(b"slow down"));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        Ok(Verdict::Respond(response))
    }))
    .policy(FailurePolicy::closed())
    .build()
    .unwrap();
    let origin = Origin::default();
    let mut service = layer.layer(origin.clone());
    let response = send(&mut service, Request::new(())).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!response.body().is_inner());
    assert_eq!(body_of(response).await, "slow down");
    assert_eq!(origin.calls(), 0);
}

#[tokio::test]
async fn guard_error_applies_the_policy() {
    for mode in modes() {
        let layer = GuardLayer::builder(guard_fn(NAME, |_| {
            Err(GuardError::new(GuardErrorKind::Dependency, "redis refused"))
        }))
        .policy(policy(mode))
        .build()
        .unwrap();
        assert_policy_applied(layer, mode, SkipReason::Failed).await;
    }
}

#[tokio::test]
async fn synchronous_panic_is_contained() {
    for mode in modes() {
        let layer = GuardLayer::builder(guard_fn(NAME, |_| -> Result<Verdict, GuardError> {
            let features: Vec<u32> = vec![0; 200];
            // The 18 Nov 2025 shape: an index past a preallocated limit.
            let index = features.len() + usize::from(features.is_empty());
            Ok(Verdict::Allow(
                Allow::new().extension(Score(features[index] as u8)),
            ))
        }))
        .policy(policy(mode))
        .build()
        .unwrap();
        assert_policy_applied(layer, mode, SkipReason::Panicked).await;
    }
}

#[tokio::test]
async fn panic_inside_the_future_is_contained() {
    for mode in modes() {
        let layer = GuardLayer::builder(async_guard(
            NAME,
            |_: &ravelin_failsafe::RequestHead<'_>| {
                Box::pin(async {
                    tokio::task::yield_now().await;
                    let limit: Option<u32> = std::hint::black_box(None);
                    Ok(Verdict::Allow(
                        Allow::new().extension(Score(limit.unwrap() as u8)),
                    ))
                }) as BoxVerdict
            },
        ))
        .policy(policy(mode))
        .build()
        .unwrap();
        assert_policy_applied(layer, mode, SkipReason::Panicked).await;
    }
}

#[tokio::test(start_paused = true)]
async fn guard_past_its_timeout_applies_the_policy() {
    for mode in modes() {
        let layer = GuardLayer::builder(async_guard(
            NAME,
            |_: &ravelin_failsafe::RequestHead<'_>| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok(Verdict::Allow(Allow::new().extension(Score(1))))
                }) as BoxVerdict
            },
        ))
        .timeout(Duration::from_millis(50))
        .policy(policy(mode))
        .build()
        .unwrap();
        let start = tokio::time::Instant::now();
        assert_policy_applied(layer, mode, SkipReason::TimedOut).await;
        // Paused time jumps straight to the timer that fires first: the guard's deadline.
        assert!(tokio::time::Instant::now() - start < Duration::from_secs(10));
    }
}

#[tokio::test(start_paused = true)]
async fn slow_guard_within_its_timeout_decides() {
    let layer = GuardLayer::builder(async_guard(
        NAME,
        |_: &ravelin_failsafe::RequestHead<'_>| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(40)).await;
                Ok(Verdict::Allow(Allow::new().extension(Score(9))))
            }) as BoxVerdict
        },
    ))
    .timeout(Duration::from_millis(50))
    .build()
    .unwrap();
    let mut service = layer.layer(Origin::default());
    let response = send(&mut service, Request::new(())).await;
    let seen = response.extensions().get::<Seen>().unwrap();
    assert_eq!(seen.score, Some(Score(9)));
    assert!(seen.skipped.is_none());
}

/// A synchronous guard that works for `took` (on `clock`) and then allows with a score.
fn working_guard(clock: ManualClock, took: Duration) -> impl ravelin_failsafe::Guard {
    guard_fn(NAME, move |_| {
        clock.advance(took);
        Ok(Verdict::Allow(Allow::new().extension(Score(7))))
    })
}

#[tokio::test]
async fn synchronous_guard_over_its_budget_is_timed_out() {
    // A synchronous check cannot be interrupted; once it returns late, its verdict is discarded
    // and the failure policy applies, counted as a timeout.
    for mode in modes() {
        let clock = ManualClock::new();
        let layer = GuardLayer::builder(working_guard(clock.clone(), Duration::from_millis(150)))
            .clock(clock)
            .timeout(Duration::from_millis(100))
            .policy(policy(mode))
            .build()
            .unwrap();
        assert_policy_applied(layer, mode, SkipReason::TimedOut).await;
    }
}

#[tokio::test]
async fn synchronous_guard_within_its_budget_decides() {
    let clock = ManualClock::new();
    let layer = GuardLayer::builder(working_guard(clock.clone(), Duration::from_millis(100)))
        .clock(clock)
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut service = layer.layer(Origin::default());
    let response = send(&mut service, Request::new(())).await;
    let seen = response.extensions().get::<Seen>().unwrap();
    assert_eq!(
        seen.score,
        Some(Score(7)),
        "exactly the budget is within it"
    );
    assert!(seen.skipped.is_none());
}

#[tokio::test]
async fn late_answers_of_every_kind_are_discarded() {
    // A 429 that comes too late is not sent, and an error that comes too late is a timeout.
    let late: Vec<(&str, Result<Verdict, GuardError>)> = vec![
        (
            "respond",
            Ok(Verdict::Respond(
                Response::builder().status(429).body(Bytes::new()).unwrap(),
            )),
        ),
        (
            "error",
            Err(GuardError::new(GuardErrorKind::Dependency, "down")),
        ),
    ];
    for (what, answer) in late {
        let clock = ManualClock::new();
        let answer = std::sync::Mutex::new(Some(answer));
        let layer = {
            let clock = clock.clone();
            GuardLayer::builder(guard_fn(NAME, move |_| {
                clock.advance(Duration::from_secs(1));
                answer.lock().unwrap().take().unwrap()
            }))
        }
        .clock(clock)
        .timeout(Duration::from_millis(100))
        .policy(policy(FailureMode::Open))
        .build()
        .unwrap();
        let origin = Origin::default();
        let mut service = layer.layer(origin.clone());
        let response = send(&mut service, Request::new(())).await;
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        let seen = response.extensions().get::<Seen>().unwrap();
        assert_eq!(
            seen.skipped.as_ref().unwrap().reason(NAME),
            Some(SkipReason::TimedOut),
            "{what}"
        );
        assert_eq!(origin.calls(), 1);
    }
}

#[tokio::test]
async fn async_guard_ready_at_first_poll_after_its_budget_is_timed_out() {
    // The work happens inside the future's first poll, which then returns Ready: no await
    // point, so no timer could have fired.
    for mode in modes() {
        let clock = ManualClock::new();
        let layer = {
            let clock = clock.clone();
            GuardLayer::builder(async_guard(
                NAME,
                move |_: &ravelin_failsafe::RequestHead<'_>| {
                    let clock = clock.clone();
                    Box::pin(async move {
                        clock.advance(Duration::from_millis(150));
                        Ok(Verdict::Allow(Allow::new().extension(Score(1))))
                    }) as BoxVerdict
                },
            ))
        }
        .clock(clock)
        .timeout(Duration::from_millis(100))
        .policy(policy(mode))
        .build()
        .unwrap();
        assert_policy_applied(layer, mode, SkipReason::TimedOut).await;
    }
}

#[tokio::test(start_paused = true)]
async fn async_guard_that_spends_its_budget_before_waiting_is_timed_out_at_once() {
    // `check` works synchronously past the budget and then returns a future that waits: the
    // request is timed out at the first poll, without waiting for a timer.
    let clock = ManualClock::new();
    let layer = {
        let clock = clock.clone();
        GuardLayer::builder(async_guard(
            NAME,
            move |_: &ravelin_failsafe::RequestHead<'_>| {
                clock.advance(Duration::from_millis(150));
                Box::pin(std::future::pending()) as BoxVerdict
            },
        ))
    }
    .clock(clock)
    .timeout(Duration::from_millis(100))
    .policy(policy(FailureMode::Open))
    .build()
    .unwrap();
    let mut service = layer.layer(Origin::default());
    let start = tokio::time::Instant::now();
    let response = send(&mut service, Request::new(())).await;
    assert_eq!(
        tokio::time::Instant::now(),
        start,
        "paused time would have jumped to a timer"
    );
    let seen = response.extensions().get::<Seen>().unwrap();
    assert_eq!(
        seen.skipped.as_ref().unwrap().reason(NAME),
        Some(SkipReason::TimedOut)
    );
}

#[tokio::test]
async fn overruns_count_as_breaker_failures() {
    let clock = ManualClock::new();
    let layer = GuardLayer::builder(working_guard(clock.clone(), Duration::from_millis(150)))
        .clock(clock)
        .timeout(Duration::from_millis(100))
        .circuit_breaker(CircuitBreakerConfig::new().consecutive_failures(3))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(Origin::default());
    for _ in 0..3 {
        send(&mut service, Request::new(())).await;
    }
    assert_eq!(handle.circuit_state(), CircuitState::Open);
}

#[tokio::test]
async fn synchronous_overrun_is_measured_on_the_default_clock() {
    // No injected clock: the budget is measured on the time-stamp counter (real time).
    let layer = GuardLayer::builder(guard_fn(NAME, |_| {
        std::thread::sleep(Duration::from_millis(20));
        Ok(Verdict::Allow(Allow::new().extension(Score(3))))
    }))
    .timeout(Duration::from_millis(5))
    .policy(policy(FailureMode::Open))
    .build()
    .unwrap();
    assert_policy_applied(layer, FailureMode::Open, SkipReason::TimedOut).await;
}

#[tokio::test]
async fn killed_guard_is_bypassed_under_both_modes() {
    for mode in modes() {
        let calls = Calls::default();
        let switch = KillSwitch::standalone(NAME);
        let layer = {
            let calls = calls.clone();
            GuardLayer::builder(guard_fn(NAME, move |_| {
                calls.hit();
                Ok(Verdict::Respond(Response::new(Bytes::from_static(
                    b"blocked",
                ))))
            }))
        }
        .policy(policy(mode).skip_header(X_RAVELIN_SKIPPED))
        .kill_switch(switch.clone())
        .build()
        .unwrap();
        let handle = layer.handle();
        let origin = Origin::default();
        let mut service = layer.layer(origin.clone());

        switch.engage("test");
        assert!(handle.is_killed());
        let response = send(&mut service, Request::new(())).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "module off: request continues"
        );
        let seen = response.extensions().get::<Seen>().unwrap();
        assert_eq!(
            seen.skipped.as_ref().unwrap().reason(NAME),
            Some(SkipReason::Killed)
        );
        assert_eq!(seen.headers[X_RAVELIN_SKIPPED], "testguard=killed");
        assert_eq!(calls.get(), 0, "a killed guard is not called");

        switch.disengage("test");
        let response = send(&mut service, Request::new(())).await;
        assert_eq!(body_of(response).await, "blocked");
        assert_eq!(calls.get(), 1);
    }
}

#[tokio::test]
async fn skipped_entries_accumulate_across_guards() {
    let failing = |name: &'static str| {
        GuardLayer::builder(guard_fn(name, |_| {
            Err(GuardError::new(GuardErrorKind::Config, "no model"))
        }))
        .policy(FailurePolicy::open().skip_header(X_RAVELIN_SKIPPED))
        .build()
        .unwrap()
    };
    let mut service: tower::util::BoxService<Request<()>, Response<_>, Infallible> =
        tower::util::BoxService::new(
            ServiceBuilder::new()
                .layer(failing("botscore"))
                .layer(failing("ratelimit"))
                .service(Origin::default()),
        );
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let seen = response.extensions().get::<Seen>().unwrap();
    let skipped: Vec<_> = seen.skipped.as_ref().unwrap().iter().collect();
    assert_eq!(
        skipped,
        [
            ("botscore", SkipReason::Failed),
            ("ratelimit", SkipReason::Failed)
        ]
    );
    let header: Vec<_> = seen.headers.get_all(X_RAVELIN_SKIPPED).iter().collect();
    assert_eq!(
        header,
        ["botscore=failed, ratelimit=failed"],
        "one field line for the whole request"
    );
}

#[tokio::test(start_paused = true)]
async fn the_skip_header_is_one_field_rendered_from_every_marked_guard() {
    // Outermost first: a rate limiter that times out, then a killed bot scorer, then a guard
    // whose policy does not mark skips, then a client's forged copy of the header.
    let ratelimit = GuardLayer::builder(async_guard("ratelimit", |_: &RequestHead<'_>| {
        Box::pin(std::future::pending()) as BoxVerdict
    }))
    .timeout(Duration::from_millis(20))
    .policy(FailurePolicy::open().skip_header(X_RAVELIN_SKIPPED))
    .build()
    .unwrap();
    let switch = KillSwitch::standalone("botscore");
    switch.engage("test");
    let botscore = GuardLayer::builder(guard_fn("botscore", |_| Ok(Verdict::allow())))
        .policy(FailurePolicy::open().skip_header(X_RAVELIN_SKIPPED))
        .kill_switch(switch)
        .build()
        .unwrap();
    let unmarked = GuardLayer::builder(guard_fn("unmarked", |_| {
        Err(GuardError::new(GuardErrorKind::Dependency, "down"))
    }))
    .policy(FailurePolicy::open())
    .build()
    .unwrap();
    let mut service = ServiceBuilder::new()
        .layer(ratelimit)
        .layer(botscore)
        .layer(unmarked)
        .service(Origin::default());
    let request = Request::builder()
        .header(X_RAVELIN_SKIPPED, "ratelimit=forged")
        .body(())
        .unwrap();
    let response = ServiceExt::<Request<()>>::ready(&mut service)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = response.extensions().get::<Seen>().unwrap();
    let header: Vec<_> = seen.headers.get_all(X_RAVELIN_SKIPPED).iter().collect();
    assert_eq!(
        header,
        ["ratelimit=timed_out, botscore=killed"],
        "one field, rendered from the marked entries; the client's copy is replaced"
    );
    let skipped: Vec<_> = seen.skipped.as_ref().unwrap().iter().collect();
    assert_eq!(
        skipped,
        [
            ("ratelimit", SkipReason::TimedOut),
            ("botscore", SkipReason::Killed),
            ("unmarked", SkipReason::Failed)
        ],
        "the extension has every skipped guard, marked or not"
    );
}

#[tokio::test]
async fn circuit_opens_skips_the_guard_then_recovers() {
    for mode in modes() {
        let clock = ManualClock::new();
        let calls = Calls::default();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let layer = {
            let calls = calls.clone();
            let healthy = healthy.clone();
            GuardLayer::builder(guard_fn(NAME, move |_| {
                calls.hit();
                if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(Verdict::allow())
                } else {
                    Err(GuardError::new(GuardErrorKind::Dependency, "down"))
                }
            }))
        }
        .policy(policy(mode))
        .clock(clock.clone())
        .circuit_breaker(
            CircuitBreakerConfig::new()
                .consecutive_failures(3)
                .open_for(Duration::from_secs(10))
                .half_open_successes(2),
        )
        .build()
        .unwrap();
        let handle = layer.handle();
        let mut service = layer.layer(Origin::default());

        for _ in 0..3 {
            send(&mut service, Request::new(())).await;
        }
        assert_eq!(handle.circuit_state(), CircuitState::Open);
        assert_eq!(calls.get(), 3);

        // Open: the guard is not called, the policy applies at once.
        for _ in 0..5 {
            let response = send(&mut service, Request::new(())).await;
            match mode {
                FailureMode::Open => {
                    let seen = response.extensions().get::<Seen>().unwrap();
                    assert_eq!(
                        seen.skipped.as_ref().unwrap().reason(NAME),
                        Some(SkipReason::CircuitOpen)
                    );
                }
                FailureMode::Closed => {
                    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE)
                }
            }
        }
        assert_eq!(calls.get(), 3);

        // After the cooldown a probe goes through; the dependency is back; two successes close.
        healthy.store(true, std::sync::atomic::Ordering::SeqCst);
        clock.advance(Duration::from_secs(10));
        let response = send(&mut service, Request::new(())).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(handle.circuit_state(), CircuitState::HalfOpen);
        send(&mut service, Request::new(())).await;
        assert_eq!(handle.circuit_state(), CircuitState::Closed);
        assert_eq!(calls.get(), 5);
    }
}

/// A guard that fails while `failing` is set, otherwise waits for a permit of `gate`.
fn switchable_guard(
    failing: Arc<std::sync::atomic::AtomicBool>,
    gate: Arc<tokio::sync::Semaphore>,
    calls: Calls,
) -> impl ravelin_failsafe::Guard {
    async_guard(NAME, move |_: &ravelin_failsafe::RequestHead<'_>| {
        calls.hit();
        let fail = failing.load(std::sync::atomic::Ordering::SeqCst);
        let gate = gate.clone();
        Box::pin(async move {
            if fail {
                return Err(GuardError::new(GuardErrorKind::Dependency, "down"));
            }
            gate.acquire().await.unwrap().forget();
            Ok(Verdict::allow())
        }) as BoxVerdict
    })
}

struct Probing {
    clock: ManualClock,
    failing: Arc<std::sync::atomic::AtomicBool>,
    gate: Arc<tokio::sync::Semaphore>,
    calls: Calls,
    handle: ravelin_failsafe::GuardHandle,
}

/// A guarded origin whose circuit was tripped and whose cooldown has elapsed: the next request
/// is a probe, and it will wait on the gate.
async fn tripped_and_cooled_down() -> (
    Probing,
    impl Service<
        Request<()>,
        Response = Response<ravelin_failsafe::GuardBody<http_body_util::Full<Bytes>>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
) {
    let p = Probing {
        clock: ManualClock::new(),
        failing: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        calls: Calls::default(),
        handle: GuardLayer::new(guard_fn(NAME, |_| Ok(Verdict::allow()))).handle(),
    };
    let layer = GuardLayer::builder(switchable_guard(
        p.failing.clone(),
        p.gate.clone(),
        p.calls.clone(),
    ))
    .clock(p.clock.clone())
    // The longest budget a layer accepts: the gate holds probes for as long as the test needs.
    .timeout(MAX_GUARD_TIMEOUT)
    .circuit_breaker(
        CircuitBreakerConfig::new()
            .consecutive_failures(2)
            .half_open_probes(1)
            .half_open_successes(1),
    )
    .build()
    .unwrap();
    let p = Probing {
        handle: layer.handle(),
        ..p
    };
    let mut service = layer.layer(Origin::default());
    send(&mut service, Request::new(())).await;
    send(&mut service, Request::new(())).await;
    assert_eq!(p.handle.circuit_state(), CircuitState::Open);
    p.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    p.clock.advance(Duration::from_secs(10));
    (p, service)
}

#[tokio::test]
async fn half_open_caps_concurrent_probes_and_recovers() {
    let (p, service) = tripped_and_cooled_down().await;
    let probe = tokio::spawn(service.clone().oneshot(Request::new(())));
    while p.calls.get() < 3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(p.handle.circuit_state(), CircuitState::HalfOpen);

    // The single probe slot is taken: this request gets the policy without a guard call.
    let response = service.clone().oneshot(Request::new(())).await.unwrap();
    let seen = response.extensions().get::<Seen>().unwrap();
    assert_eq!(
        seen.skipped.as_ref().unwrap().reason(NAME),
        Some(SkipReason::CircuitOpen)
    );
    assert_eq!(p.calls.get(), 3);

    p.gate.add_permits(1);
    let response = probe.await.unwrap().unwrap();
    assert!(
        response
            .extensions()
            .get::<Seen>()
            .unwrap()
            .skipped
            .is_none()
    );
    assert_eq!(p.handle.circuit_state(), CircuitState::Closed);

    p.gate.add_permits(1);
    service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(p.calls.get(), 4, "closed again: the guard is called");
}

#[tokio::test]
async fn a_cancelled_probe_gives_its_slot_back() {
    let (p, service) = tripped_and_cooled_down().await;
    let probe = tokio::spawn(service.clone().oneshot(Request::new(())));
    while p.calls.get() < 3 {
        tokio::task::yield_now().await;
    }
    probe.abort();
    assert!(probe.await.unwrap_err().is_cancelled());

    let next = tokio::spawn(service.clone().oneshot(Request::new(())));
    while p.calls.get() < 4 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        p.handle.circuit_state(),
        CircuitState::HalfOpen,
        "a new probe runs"
    );
    p.gate.add_permits(1);
    next.await.unwrap().unwrap();
    assert_eq!(p.handle.circuit_state(), CircuitState::Closed);
}

#[tokio::test]
async fn forced_open_applies_the_policy_without_calling_the_guard() {
    for mode in modes() {
        let calls = Calls::default();
        let layer = {
            let calls = calls.clone();
            GuardLayer::builder(guard_fn(NAME, move |_| {
                calls.hit();
                Ok(Verdict::allow())
            }))
        }
        .policy(policy(mode))
        .build()
        .unwrap();
        let handle = layer.handle();
        handle.force_open();
        assert_eq!(handle.circuit_state().as_str(), "forced_open");
        assert_policy_applied(layer.clone(), mode, SkipReason::CircuitOpen).await;
        assert_eq!(calls.get(), 0);
        handle.reset();
        let response = layer
            .layer(Origin::default())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(calls.get(), 1);
    }
}

#[tokio::test]
async fn inner_errors_pass_through_unchanged() {
    let layer = GuardLayer::new(guard_fn(NAME, |_| Ok(Verdict::allow())));
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<()>, Response<http_body_util::Full<Bytes>>>();
    let mut service = layer.layer(mock);
    let call =
        tokio::spawn(async move { service.ready().await.unwrap().call(Request::new(())).await });
    let (_request, send_response) = handle.next_request().await.unwrap();
    send_response.send_error(std::io::Error::other("origin reset"));
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "origin reset");
}

#[tokio::test]
async fn poll_ready_follows_the_inner_service() {
    let layer = GuardLayer::new(guard_fn(NAME, |_| Ok(Verdict::allow())));
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<()>, Response<http_body_util::Full<Bytes>>>();
    let mut service = tower_test::mock::Spawn::new(layer.layer(mock));
    handle.allow(0);
    assert!(service.poll_ready().is_pending());
    handle.allow(1);
    assert!(service.poll_ready().is_ready());
    // The guard allows in `call`/the future, never in `poll_ready`: the request reaches the
    // inner service that was made ready.
    // (The inner service is called when the response future runs the guard, so drive it.)
    let response = tokio::spawn(service.call(Request::new(())));
    let (_, send_response) = handle.next_request().await.unwrap();
    send_response.send_response(Response::new(http_body_util::Full::new(
        Bytes::from_static(b"ok"),
    )));
    assert_eq!(body_of(response.await.unwrap().unwrap()).await, "ok");
}

/// Allows every request with its `x-id` as score, except request 57: its future panics.
struct PanicsOn57;

impl ravelin_failsafe::Guard for PanicsOn57 {
    type Future = BoxVerdict;

    fn name(&self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(NAME)
    }

    fn check(&self, head: &ravelin_failsafe::RequestHead<'_>) -> BoxVerdict {
        let id: u32 = head.headers["x-id"].to_str().unwrap().parse().unwrap();
        Box::pin(async move {
            tokio::task::yield_now().await;
            assert_ne!(id, 57, "request 57 trips an assertion in the guard");
            Ok(Verdict::Allow(Allow::new().extension(Score(id as u8))))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_of_100_concurrent_requests_affects_only_that_one() {
    for mode in modes() {
        // The budget is wall-clock time, so on a loaded machine a preempted check could time out;
        // this test is about panic containment, so the budget is out of its way.
        let layer = GuardLayer::builder(PanicsOn57)
            .policy(policy(mode))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let handle = layer.handle();
        let service = layer.layer(Origin::default());

        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..100_u32 {
            let service = service.clone();
            tasks.spawn(async move {
                let request = Request::builder().header("x-id", id).body(()).unwrap();
                (id, service.oneshot(request).await.unwrap())
            });
        }
        let mut answered = 0;
        while let Some(joined) = tasks.join_next().await {
            let (id, response) = joined.expect("no task died with the guard's panic");
            answered += 1;
            if id == 57 {
                match mode {
                    FailureMode::Open => {
                        let seen = response.extensions().get::<Seen>().unwrap();
                        assert_eq!(
                            seen.skipped.as_ref().unwrap().reason(NAME),
                            Some(SkipReason::Panicked)
                        );
                        assert_eq!(seen.score, None);
                    }
                    FailureMode::Closed => {
                        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE)
                    }
                }
            } else {
                assert_eq!(response.status(), StatusCode::OK);
                let seen = response.extensions().get::<Seen>().unwrap();
                assert!(seen.skipped.is_none(), "request {id} was not affected");
                assert_eq!(seen.score, Some(Score(id as u8)));
            }
        }
        assert_eq!(answered, 100);
        assert_eq!(handle.circuit_state(), CircuitState::Closed);
    }
}

/// Not ready at its first poll, ready at its second.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = Result<Verdict, GuardError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if self.0 {
            return std::task::Poll::Ready(Ok(Verdict::Allow(Allow::new().extension(Score(3)))));
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

struct YieldingGuard;

impl ravelin_failsafe::Guard for YieldingGuard {
    type Future = YieldOnce;

    fn name(&self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(NAME)
    }

    fn check(&self, _: &ravelin_failsafe::RequestHead<'_>) -> YieldOnce {
        YieldOnce(false)
    }
}

/// Polls a future to completion with a no-op waker, outside any runtime.
fn poll_to_end<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

#[test]
fn without_a_tokio_timer_an_async_guard_runs_untimed_instead_of_panicking() {
    let mut service = GuardLayer::new(YieldingGuard).layer(Origin::default());
    // Outside any runtime.
    let response = poll_to_end(service.call(Request::new(()))).unwrap();
    assert_eq!(
        response.extensions().get::<Seen>().unwrap().score,
        Some(Score(3))
    );

    // Inside a runtime built without `enable_time()`: creating the timer panics in Tokio;
    // that panic is contained too.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let response = runtime
        .block_on(
            GuardLayer::new(YieldingGuard)
                .layer(Origin::default())
                .oneshot(Request::new(())),
        )
        .unwrap();
    assert_eq!(
        response.extensions().get::<Seen>().unwrap().score,
        Some(Score(3))
    );
}
