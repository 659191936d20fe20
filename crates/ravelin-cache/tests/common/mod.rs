//! A scripted origin and a harness that drives requests through the cache layer.
// Test support, not library code: a failed unwrap here is a failed test.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use ravelin_cache::{Cache, CacheBody, CacheHandle, CacheLayer, CacheLayerBuilder, ManualClock};
use tower::{Layer, Service, ServiceExt};

/// What the origin answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Option<Duration>,
    pub fail: bool,
    /// Send the body as these chunks with no known length; `None` fails the body there.
    pub chunks: Option<Vec<Option<&'static str>>>,
    /// A pause before each chunk after the first (a slow or stalling origin body).
    pub gap: Option<Duration>,
}

/// The origin's response body: a known-length body, or a stream of unknown length.
pub type OriginBody = BoxBody<Bytes, OriginError>;

impl Reply {
    pub fn ok(headers: &[(&str, &str)], body: &'static str) -> Self {
        Self::status(200, headers, body)
    }

    pub fn status(status: u16, headers: &[(&str, &str)], body: &'static str) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Bytes::from_static(body.as_bytes()),
            delay: None,
            fail: false,
            chunks: None,
            gap: None,
        }
    }

    /// Pauses `d` before each chunk after the first of a [`streamed`](Self::streamed) body.
    pub fn gap(mut self, d: Duration) -> Self {
        self.gap = Some(d);
        self
    }

    /// A body of unknown length sent in chunks (`None` makes the body fail at that point).
    pub fn streamed(mut self, chunks: &[Option<&'static str>]) -> Self {
        self.chunks = Some(chunks.to_vec());
        self
    }

    pub fn error() -> Self {
        Self {
            fail: true,
            ..Self::status(200, &[], "")
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
}

type Script = Box<dyn FnMut(&Seen) -> Reply + Send>;

/// A scripted origin service. Clones share the script and the log.
#[derive(Clone)]
pub struct Origin {
    script: Arc<Mutex<Script>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    calls: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub struct OriginError;

impl std::fmt::Display for OriginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("origin failed")
    }
}
impl std::error::Error for OriginError {}

impl Origin {
    pub fn new(script: impl FnMut(&Seen) -> Reply + Send + 'static) -> Self {
        Self {
            script: Arc::new(Mutex::new(Box::new(script))),
            seen: Arc::new(Mutex::new(Vec::new())),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Always answers `reply`.
    pub fn fixed(reply: Reply) -> Self {
        Self::new(move |_| reply.clone())
    }

    pub fn set(&self, script: impl FnMut(&Seen) -> Reply + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the origin saw a request")
    }
}

impl Service<Request<String>> for Origin {
    type Response = Response<OriginBody>;
    type Error = OriginError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, OriginError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), OriginError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        let seen = Seen {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        };
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(seen.clone());
        let reply = (self.script.lock().unwrap())(&seen);
        Box::pin(async move {
            if let Some(d) = reply.delay {
                tokio::time::sleep(d).await;
            }
            if reply.fail {
                return Err(OriginError);
            }
            let body: OriginBody = match &reply.chunks {
                None => Full::new(reply.body.clone())
                    .map_err(|never| match never {})
                    .boxed(),
                Some(chunks) => {
                    let frames: Vec<Result<http_body::Frame<Bytes>, OriginError>> = chunks
                        .iter()
                        .map(|c| match c {
                            Some(text) => {
                                Ok(http_body::Frame::data(Bytes::from_static(text.as_bytes())))
                            }
                            None => Err(OriginError),
                        })
                        .collect();
                    let gap = reply.gap;
                    let stream = futures_util::stream::unfold(
                        (frames.into_iter(), true),
                        move |(mut rest, first)| async move {
                            let frame = rest.next()?;
                            if let (Some(d), false) = (gap, first) {
                                tokio::time::sleep(d).await;
                            }
                            Some((frame, (rest, false)))
                        },
                    );
                    StreamBody::new(stream).boxed()
                }
            };
            let mut resp = Response::new(body);
            *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
            for (k, v) in &reply.headers {
                resp.headers_mut().append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            Ok(resp)
        })
    }
}

/// A fixed starting time, so HTTP dates are predictable.
pub fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// An HTTP-date `offset` seconds from `now`.
pub fn http_date(now: SystemTime, offset: i64) -> String {
    let t = if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    httpdate::fmt_http_date(t)
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body ended in an error (the client saw a truncated response).
    pub body_error: bool,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn cache_status(&self) -> String {
        self.headers
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn hit(&self) -> bool {
        self.cache_status().starts_with("ravelin; hit")
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

pub struct Harness {
    pub origin: Origin,
    pub clock: ManualClock<SystemTime>,
    pub handle: CacheHandle,
    pub svc: Cache<Origin>,
}

impl Harness {
    pub fn new(origin: Origin) -> Self {
        Self::with(origin, |b| b)
    }

    pub fn with(
        origin: Origin,
        configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder,
    ) -> Self {
        let clock = ManualClock::at(epoch());
        let layer: CacheLayer = configure(CacheLayer::builder().clock(clock.clone()))
            .build()
            .expect("valid config");
        let handle = layer.handle();
        let svc = layer.layer(origin.clone());
        Self {
            origin,
            clock,
            handle,
            svc,
        }
    }

    pub fn now(&self) -> SystemTime {
        use ravelin_cache::Clock;
        self.clock.now()
    }

    pub fn date(&self, offset: i64) -> String {
        http_date(self.now(), offset)
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    pub async fn send(&self, req: Request<String>) -> Result<Got, OriginError> {
        let resp = self.svc.clone().oneshot(req).await?;
        Ok(read(resp).await)
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://example.com{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(String::new()).unwrap())
            .await
            .expect("origin answered")
    }

    pub async fn get(&self, path: &str) -> Got {
        self.request("GET", path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        self.request("GET", path, headers).await
    }
}

pub async fn read(resp: Response<CacheBody<OriginBody>>) -> Got {
    let (parts, body) = resp.into_parts();
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    let mut body_error = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    bytes.extend_from_slice(d);
                }
            }
            Err(_) => {
                body_error = true;
                break;
            }
        }
    }
    Got {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(bytes),
        body_error,
    }
}
