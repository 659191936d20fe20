//! Shared test fixtures: an origin that records what it saw, guards of every failure kind, and
//! a tracing layer that counts lines.
#![allow(dead_code, unreachable_pub)]

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use ravelin_failsafe::{Guard, GuardBody, GuardError, RequestHead, Skipped, Verdict};
use tower::{Service, ServiceExt};

/// What the origin saw of a forwarded request, returned as a response extension.
#[derive(Debug, Clone)]
pub struct Seen {
    pub headers: HeaderMap,
    pub skipped: Option<Skipped>,
    pub score: Option<Score>,
}

/// An annotation a guard sets as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score(pub u8);

/// Counts calls and records what it saw.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub calls: Arc<AtomicUsize>,
}

impl Origin {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<B> Service<Request<B>> for Origin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(Full::new(Bytes::from_static(b"origin")));
        response.extensions_mut().insert(Seen {
            headers: request.headers().clone(),
            skipped: request.extensions().get::<Skipped>().cloned(),
            score: request.extensions().get::<Score>().copied(),
        });
        std::future::ready(Ok(response))
    }
}

pub type BoxVerdict = Pin<Box<dyn Future<Output = Result<Verdict, GuardError>> + Send>>;

/// A guard named `.0` from a closure returning a boxed future (fine in tests; real guards name
/// their future type).
pub struct AsyncGuard<F>(pub &'static str, pub F);

impl<F> Guard for AsyncGuard<F>
where
    F: Fn(&RequestHead<'_>) -> BoxVerdict + Send + Sync + 'static,
{
    type Future = BoxVerdict;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.0)
    }

    fn check(&self, head: &RequestHead<'_>) -> BoxVerdict {
        (self.1)(head)
    }
}

/// Builds an [`AsyncGuard`] named `name`, giving the closure its higher-ranked signature.
pub fn async_guard<F>(name: &'static str, f: F) -> AsyncGuard<F>
where
    F: Fn(&RequestHead<'_>) -> BoxVerdict + Send + Sync + 'static,
{
    AsyncGuard(name, f)
}

/// Counts how often a guard was called.
#[derive(Debug, Clone, Default)]
pub struct Calls(pub Arc<AtomicUsize>);

impl Calls {
    pub fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

pub async fn send<S>(service: &mut S, request: Request<()>) -> Response<GuardBody<Full<Bytes>>>
where
    S: Service<Request<()>, Response = Response<GuardBody<Full<Bytes>>>, Error = Infallible>,
{
    service.ready().await.unwrap().call(request).await.unwrap()
}

pub async fn body_of(response: Response<GuardBody<Full<Bytes>>>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

/// A tracing layer that records every event's level and rendered fields.
#[derive(Debug, Clone, Default)]
pub struct Lines(pub Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Lines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Render(String);
        impl tracing::field::Visit for Render {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={:?}", field.name(), value));
            }
        }
        let mut line = Render(format!("{}", event.metadata().level()));
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
}
