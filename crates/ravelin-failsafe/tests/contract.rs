//! The `Future` contract at the edges: a future polled after it completed fails loudly instead
//! of hanging its caller on a `Pending` that no waker will ever end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use ravelin_failsafe::{GuardLayer, Verdict, guard_fn};
use tower::{Layer, Service, service_fn};

#[test]
#[should_panic(expected = "polled after completion")]
fn a_guard_answer_polled_after_completion_panics_instead_of_hanging() {
    let guard = guard_fn("refuser", |_head| {
        let mut response = Response::new(Bytes::from_static(b"no"));
        *response.status_mut() = StatusCode::FORBIDDEN;
        Ok(Verdict::Respond(response))
    });
    let mut service = GuardLayer::new(guard).layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let mut future = pin!(service.call(Request::new(())));
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
        other => panic!("a synchronous refusal is ready at the first poll: {other:?}"),
    }
    let _ = future.as_mut().poll(&mut cx);
}
