//! A small demo origin, so every layer of a proxy can be seen at work with `curl -i` and tested
//! without an external server.
//!
//! | Path | Behaviour |
//! |---|---|
//! | `GET /` | an HTML page listing the headers the origin received (`x-bot-score`, `via`, …); `no-store` |
//! | `GET /assets/style.css`, `/assets/app.js` | cacheable for 300 s, `ETag`, `Surrogate-Key: assets css\|js` |
//! | `GET /api/time` | JSON, `no-store` |
//! | `GET /api/private` | `private, max-age=60` (a shared cache must not store it) |
//! | `GET /stale` | `max-age=2, stale-if-error=600`: shows stale-if-error during an outage |
//! | `GET /slow?ms=N` | answers after N ms (default 2000, at most 30000) |
//! | `GET /fail` | 500 |
//! | any `/echo` | streams the request body through a counter and reports method, headers, size |
//!
//! The simulated outage (every path answers 503) is switched with [`DemoOrigin::set_outage`]
//! only, never over HTTP: anything the demo origin serves is reachable through the proxy in
//! front of it, so a control path there would let any client take the site down. The
//! `edge-proxy` binary exposes it as the token-protected admin command
//! `POST /commands/demo-outage?on=1`.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::sync::oneshot;
use tower_service::Service;

use crate::admin::BoxFuture;
use crate::error::ServerError;
use crate::forward::BoxError;
use crate::server::{Server, ServerConfig};

const STYLE_CSS: &str = "body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 48rem; }\n\
code { background: #f3f3f3; padding: 0 .2em; }\n";
const APP_JS: &str = "document.querySelector('#js').textContent = 'script loaded (cacheable)';\n";

/// The demo origin's request handler. Cheap to clone; clones share counters and the outage flag.
#[derive(Clone, Default)]
pub struct DemoOrigin {
    state: Arc<DemoState>,
}

#[derive(Default)]
struct DemoState {
    requests: AtomicU64,
    outage: AtomicBool,
}

impl fmt::Debug for DemoOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoOrigin")
            .field("requests", &self.requests())
            .field("outage", &self.outage())
            .finish()
    }
}

impl DemoOrigin {
    /// A fresh origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests served so far (every path): a test can tell a cache hit from a miss.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Whether the simulated outage is on.
    pub fn outage(&self) -> bool {
        self.state.outage.load(Ordering::Relaxed)
    }

    /// Turns the simulated outage on or off.
    pub fn set_outage(&self, on: bool) {
        self.state.outage.store(on, Ordering::Relaxed);
    }

    async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        if self.outage() {
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-store",
                "text/plain",
                "503 demo outage\n",
            );
        }
        let get = request.method() == Method::GET || request.method() == Method::HEAD;
        match path.as_str() {
            "/" if get => respond(
                StatusCode::OK,
                "no-store",
                "text/html; charset=utf-8",
                page(request.headers()),
            ),
            "/assets/style.css" if get => asset(
                &request,
                STYLE_CSS,
                "text/css",
                "\"style-v1\"",
                "assets css",
            ),
            "/assets/app.js" if get => asset(
                &request,
                APP_JS,
                "text/javascript",
                "\"app-v1\"",
                "assets js",
            ),
            "/api/time" if get => respond(
                StatusCode::OK,
                "no-store",
                "application/json",
                format!("{{\"unix\":{}}}\n", now_unix()),
            ),
            "/api/private" if get => respond(
                StatusCode::OK,
                "private, max-age=60",
                "application/json",
                "{\"account\":\"demo\"}\n",
            ),
            "/stale" if get => respond(
                StatusCode::OK,
                "max-age=2, stale-if-error=600",
                "text/plain",
                format!("generated at {}\n", now_unix()),
            ),
            "/slow" if get => {
                let ms = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("ms="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(2000)
                    .min(30_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                respond(
                    StatusCode::OK,
                    "no-store",
                    "text/plain",
                    format!("slept {ms} ms\n"),
                )
            }
            "/fail" if get => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no-store",
                "text/plain",
                "500 the demo origin failed on purpose\n",
            ),
            "/echo" => echo(request).await,
            _ => respond(
                StatusCode::NOT_FOUND,
                "no-store",
                "text/plain",
                "404 not found on the demo origin\n",
            ),
        }
    }
}

impl<B> Service<Request<B>> for DemoOrigin
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let origin = self.clone();
        Box::pin(async move { Ok(origin.handle(request).await) })
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn respond(
    status: StatusCode,
    cache_control: &'static str,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
        headers.insert(header::DATE, date);
    }
    response
}

fn asset<B>(
    request: &Request<B>,
    body: &'static str,
    content_type: &'static str,
    etag: &'static str,
    tags: &'static str,
) -> Response<Full<Bytes>> {
    let not_modified = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| {
            ravelin_http::split_list(v.as_bytes()).any(|t| t == etag.as_bytes() || t == b"*")
        });
    let mut response = if not_modified {
        respond(
            StatusCode::NOT_MODIFIED,
            "public, max-age=300",
            content_type,
            Bytes::new(),
        )
    } else {
        respond(StatusCode::OK, "public, max-age=300", content_type, body)
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_static(etag));
    headers.insert("surrogate-key", HeaderValue::from_static(tags));
    response
}

/// The headers the page reports, so a reader sees what the proxy added.
const SHOWN: [&str; 10] = [
    "x-bot-score",
    "x-bot-score-reasons",
    "x-ravelin-skipped",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-ja4",
    "via",
    "user-agent",
];

fn page(headers: &http::HeaderMap) -> String {
    let mut rows = String::new();
    for name in SHOWN {
        let value = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(absent)");
        rows.push_str(&format!(
            "<tr><td><code>{name}</code></td><td><code>{}</code></td></tr>\n",
            escape(value)
        ));
    }
    format!(
        "<!doctype html>\n<html><head><title>Ravelin demo origin</title>\
         <link rel=\"stylesheet\" href=\"/assets/style.css\"></head><body>\n\
         <h1>Ravelin demo origin</h1>\n<p>Headers this origin received from the proxy:</p>\n\
         <table>\n{rows}</table>\n<p id=\"js\">script not loaded</p>\
         <script src=\"/assets/app.js\"></script>\n\
         <p>Try <code>/assets/style.css</code> (cacheable), <code>/api/time</code> (uncacheable), \
         <code>/slow?ms=3000</code>, <code>/fail</code>, <code>/stale</code>, <code>/echo</code>.</p>\n\
         </body></html>\n"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn echo<B>(request: Request<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // Count frames as they arrive, keeping none: the echo works for bodies of any size.
    let mut body = std::pin::pin!(body);
    let mut bytes: u64 = 0;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes = bytes.saturating_add(data.len() as u64);
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    let report = json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": bytes,
        "body_complete": complete,
    });
    respond(
        StatusCode::OK,
        "no-store",
        "application/json",
        report.to_string(),
    )
}

/// A running demo origin; stops when [`shutdown`](DemoHandle::shutdown) is called or it is
/// dropped.
#[derive(Debug)]
pub struct DemoHandle {
    addr: SocketAddr,
    origin: DemoOrigin,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DemoHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The handler (counters, outage switch).
    pub fn origin(&self) -> &DemoOrigin {
        &self.origin
    }

    /// Stops accepting, drains, and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DemoHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a demo origin on `addr` (use port 0 for any free port). Must be called inside a
/// tokio runtime.
///
/// # Errors
/// [`ServerError`] when the address cannot be bound.
pub async fn spawn(addr: SocketAddr) -> Result<DemoHandle, ServerError> {
    let server = Server::bind(
        addr,
        ServerConfig::default().shutdown_timeout(Duration::from_secs(5)),
    )
    .await?;
    let addr = server
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let origin = DemoOrigin::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let service = origin.clone();
    let task = tokio::spawn(async move {
        server
            .serve(service, async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(DemoHandle {
        addr,
        origin,
        stop: Some(stop),
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn asset_revalidates_and_outage_applies() {
        let origin = DemoOrigin::new();
        let response = origin
            .clone()
            .oneshot(
                Request::get("/assets/style.css")
                    .header("if-none-match", "\"style-v1\"")
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        origin.set_outage(true);
        let response = origin
            .clone()
            .oneshot(
                Request::get("/stale")
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(origin.requests(), 2);
    }

    #[tokio::test]
    async fn the_outage_cannot_be_switched_over_http() {
        let origin = DemoOrigin::new();
        let response = origin
            .clone()
            .oneshot(
                Request::post("/_demo/outage?on=1")
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_ne!(response.status(), StatusCode::OK);
        assert!(!origin.outage());
    }
}
