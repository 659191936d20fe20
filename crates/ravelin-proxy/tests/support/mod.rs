//! Helpers shared by this crate's integration tests, each of which includes this file with
//! `mod support;` (Cargo does not build `tests/support/mod.rs` as a test of its own): the bound
//! on every wait, a plain client, metric reading, a bounded `eventually`, a server started on a
//! loopback port with its stop handle ([`Serving`]), and the ingress proxy ([`Proxy`]).

// Each test file uses part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use ravelin_proxy::{
    BoxError, Forward, IngressConfig, IngressLayer, Resolve, ServeSummary, Server, ServerConfig,
};
use tokio::sync::oneshot;
use tower::ServiceBuilder;

/// A bound on every wait: a hang is a failure, not a timing measurement.
pub(crate) const BOUND: Duration = Duration::from_secs(10);

/// The request body the test clients send.
pub(crate) type TestBody = BoxBody<Bytes, Infallible>;

/// An HTTP/1.1 client over plain TCP.
pub(crate) fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client over plain TCP (prior knowledge).
pub(crate) fn h2_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// An empty request body (a `Full` of no bytes).
pub(crate) fn empty() -> TestBody {
    Full::new(Bytes::new()).boxed()
}

/// The value of one metric series (name and labels as rendered), 0 when absent.
pub(crate) fn metric(recorder: &PrometheusRecorder, series: &str) -> f64 {
    recorder
        .handle()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Waits (bounded) until `condition` holds.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(BOUND, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never happened: {what}");
}

/// Reads `response` to the end (bounded): its status, headers and body.
pub(crate) async fn read_whole<B>(response: Response<B>) -> (StatusCode, HeaderMap, Bytes)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(BOUND, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (parts.status, parts.headers, body)
}

/// A `Server` bound to `127.0.0.1:0`, serving in a task until stopped.
pub(crate) struct Serving {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ServeSummary>,
}

impl Serving {
    /// Binds a loopback port with `config` and serves `service` on it. With `recorder`, that
    /// recorder is the default while the server is bound (the server registers its metric
    /// handles then).
    pub(crate) async fn start<S, B>(
        service: S,
        config: ServerConfig,
        recorder: Option<&PrometheusRecorder>,
    ) -> Self
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let _guard = recorder.map(|r| metrics::set_default_local_recorder(r));
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(service, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits for `serve` to return; fails if it takes longer than
    /// [`BOUND`] or panicked.
    pub(crate) async fn stop(mut self) -> ServeSummary {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(BOUND, self.task)
            .await
            .unwrap()
            .unwrap()
    }

    /// Stops the server and waits at most `bound` for `serve` to return, whatever it returns.
    pub(crate) async fn stop_quietly(mut self, bound: Duration) {
        let _ = self.stop.take().unwrap().send(());
        let _ = tokio::time::timeout(bound, self.task).await;
    }
}

/// Server → IngressLayer(config) → Forward(resolve), with the test's own metrics recorder.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    recorder: Arc<PrometheusRecorder>,
    server: Serving,
}

impl Proxy {
    /// `make` builds the upstreams inside this proxy's recorder, so their handles register
    /// there too.
    pub(crate) async fn start<R: Resolve>(config: IngressConfig, make: impl FnOnce() -> R) -> Self {
        let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
        let service = metrics::with_local_recorder(&*recorder, || {
            ServiceBuilder::new()
                .layer(IngressLayer::new(config))
                .service(Forward::new(make()))
        });
        let server = Serving::start(service, ServerConfig::default(), None).await;
        Self {
            addr: server.addr,
            recorder,
            server,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// The value of one metric series of this proxy (name and labels as rendered), 0 when
    /// absent.
    pub(crate) fn metric(&self, series: &str) -> f64 {
        metric(&self.recorder, series)
    }

    /// The proxy's [`Serving`], to stop it.
    pub(crate) fn into_server(self) -> Serving {
        self.server
    }
}
