//! The admin API: health, readiness, metrics, status, kill switches, reload and purge.
//!
//! The router knows nothing about particular modules: the binary hands it closures (render the
//! metrics, report module states, reload the config, purge the cache) and the
//! [`Switchboard`]. That keeps this crate free of the module crates and lets an embedding
//! expose only what it has.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use ravelin_config::{Status, Switchboard};
use serde::Serialize;
use serde_json::{Value, json};
use tower_service::Service;

use crate::forward::BoxError;

/// A boxed, sendable future, as the admin hooks return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The largest admin request body read (a purge request): 64 KiB.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// One module's state for `/status`.
///
/// The failure mode and circuit state are typed ([`FailureMode`], [`CircuitState`]) and
/// serialize to the strings `ravelin-failsafe` uses for them (`"open"`, `"half_open"`, …). They
/// are this crate's own small enums rather than failsafe's types, so the admin router does not
/// tie this crate to the guard machinery; whoever assembles modules (`ravelin-edge`) converts
/// failsafe's values with an exhaustive `match`, so a new failsafe state cannot go unreported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModuleStatus {
    /// The module's name (also its kill switch's name).
    pub name: String,
    /// What happens to a request when the module fails.
    pub failure_mode: FailureMode,
    /// The module's time budget per request, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// The circuit breaker's state, when the module has one.
    pub circuit: Option<CircuitState>,
    /// Whether the kill switch is engaged (module off).
    pub killed: bool,
    /// Module-specific facts (model version, store kind, …).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

/// How a module fails and where its circuit stands, as `/status` shows them (`"open"`,
/// `"half_open"`, …): the very types `ravelin-failsafe` acts on, from `ravelin-primitives`.
pub use ravelin_primitives::{CircuitState, FailureMode};

/// What `POST /cache/purge` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Purge the entries for one URL (every variant).
    Url(String),
    /// Purge every entry tagged `Surrogate-Key`/`Cache-Tag` with this tag.
    Tag(String),
}

type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;
type ReadyFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
type DegradedFn = Arc<dyn Fn() -> Vec<String> + Send + Sync>;
type ConfigFn = Arc<dyn Fn() -> Status + Send + Sync>;
type ModulesFn = Arc<dyn Fn() -> Vec<ModuleStatus> + Send + Sync>;
type ExtraFn = Arc<dyn Fn() -> Value + Send + Sync>;
type ReloadFn = Arc<dyn Fn() -> BoxFuture<Result<Value, String>> + Send + Sync>;
type PurgeFn = Arc<dyn Fn(Purge) -> BoxFuture<Result<PurgeAnswer, String>> + Send + Sync>;

/// What a purge did, as `POST /cache/purge` answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeAnswer {
    /// Entries removed here.
    pub purged: u64,
    /// Where the purge stands towards the other proxies, when the cache publishes purges to
    /// them (`queued`: on its way; `pending`: the bus is unreachable, it will be sent on
    /// reconnection; `refused`: too large to publish). `None`: this proxy's cache only.
    pub fleet: Option<&'static str>,
}

impl From<u64> for PurgeAnswer {
    fn from(purged: u64) -> Self {
        Self {
            purged,
            fleet: None,
        }
    }
}
type CommandFn = Arc<dyn Fn(Option<String>) -> BoxFuture<Result<Value, String>> + Send + Sync>;

// === impl AdminToken ===

/// The bearer token of the admin API, replaceable while the API serves: a config reload that
/// rotates the token takes effect for the next request (the old token stops working at once).
/// Clones share the token.
#[derive(Clone, Default)]
pub struct AdminToken {
    inner: Arc<arc_swap::ArcSwapOption<String>>,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("set", &self.inner.load().is_some())
            .finish()
    }
}

impl AdminToken {
    /// A token holder starting with `token` (`None` or empty: mutations disabled).
    pub fn new(token: Option<String>) -> Self {
        let holder = Self::default();
        holder.set(token);
        holder
    }

    /// Replaces the token; `None` or an empty string disables mutating endpoints. Returns
    /// whether the token changed.
    pub fn set(&self, token: Option<String>) -> bool {
        let token = token.filter(|t| !t.is_empty());
        let changed = self.inner.load().as_deref() != token.as_ref();
        self.inner.store(token.map(Arc::new));
        changed
    }

    /// Whether a token is configured.
    pub fn is_set(&self) -> bool {
        self.inner.load().is_some()
    }

    fn current(&self) -> Option<Arc<String>> {
        self.inner.load_full()
    }
}

/// Builds an [`Admin`] service.
#[derive(Default)]
pub struct AdminBuilder {
    token: AdminToken,
    allowed_hosts: Vec<String>,
    commands: Vec<(String, CommandFn)>,
    metrics: Option<MetricsFn>,
    ready: Option<ReadyFn>,
    degraded: Option<DegradedFn>,
    configs: Vec<ConfigFn>,
    modules: Option<ModulesFn>,
    extras: Vec<(String, ExtraFn)>,
    switchboard: Option<Switchboard>,
    reload: Option<ReloadFn>,
    purge: Option<PurgeFn>,
}

impl fmt::Debug for AdminBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminBuilder")
            .field("token", &self.token)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("configs", &self.configs.len())
            .finish_non_exhaustive()
    }
}

impl AdminBuilder {
    /// The bearer token mutating endpoints require. Without one, they answer 403: a proxy never
    /// accepts unauthenticated control. An empty string counts as no token.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = AdminToken::new(token);
        self
    }

    /// As [`token`](Self::token), with a holder the caller keeps to rotate the token later
    /// (on a config reload).
    pub fn token_source(mut self, token: AdminToken) -> Self {
        self.token = token;
        self
    }

    /// Host names (besides IP literals and `localhost`) the admin API answers to. Any other
    /// `Host` is refused with 421 on every endpoint: a web page on another origin that
    /// rebinds its DNS name to this address (DNS rebinding) cannot read `/status` or
    /// `/metrics` through a victim's browser, because its requests carry its own name.
    pub fn allowed_hosts(mut self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.allowed_hosts = hosts
            .into_iter()
            .map(|h| h.into().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        self
    }

    /// A token-protected command at `POST /commands/{name}`: the handler gets the raw query
    /// string and answers `Ok(json)` (200) or `Err(reason)` (422). For binary-specific controls
    /// (the demo origin's simulated outage) that must not be reachable through the data plane.
    pub fn command<F>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Option<String>) -> BoxFuture<Result<Value, String>> + Send + Sync + 'static,
    {
        self.commands.push((name.into(), Arc::new(handler)));
        self
    }

    /// Renders `/metrics` (Prometheus text format). The binary owns the exporter and passes its
    /// renderer, e.g. `move || handle.render()` for a `metrics-exporter-prometheus` handle, so
    /// this library links no exporter. Without it, `/metrics` answers 404.
    pub fn metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// Decides `/readyz`: `Err(reason)` answers 503 with the reason.
    pub fn ready(mut self, ready: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.ready = Some(Arc::new(ready));
        self
    }

    /// What `/readyz` reports as degraded: a module serving something other than what its
    /// source offers (a persisted last good copy, the compiled-in default after its file was
    /// refused). A degraded edge is still ready — it serves its last good state, and taking every
    /// instance out of rotation because the same bad file reached them all would be the outage —
    /// so `/readyz` answers 200 with `ready, degraded: <reasons>`: alert on it, do not route on
    /// it.
    pub fn degraded(mut self, degraded: impl Fn() -> Vec<String> + Send + Sync + 'static) -> Self {
        self.degraded = Some(Arc::new(degraded));
        self
    }

    /// Adds a config store to `/status` (call once per store: main config, feature files, …).
    pub fn config_status(mut self, status: impl Fn() -> Status + Send + Sync + 'static) -> Self {
        self.configs.push(Arc::new(status));
        self
    }

    /// Reports module states in `/status`.
    pub fn modules(
        mut self,
        modules: impl Fn() -> Vec<ModuleStatus> + Send + Sync + 'static,
    ) -> Self {
        self.modules = Some(Arc::new(modules));
        self
    }

    /// Adds a member `key` to the `/status` document.
    pub fn status_extra(
        mut self,
        key: impl Into<String>,
        value: impl Fn() -> Value + Send + Sync + 'static,
    ) -> Self {
        self.extras.push((key.into(), Arc::new(value)));
        self
    }

    /// The kill switches `POST /modules/{name}/kill` and `/revive` flip.
    pub fn switchboard(mut self, switchboard: Switchboard) -> Self {
        self.switchboard = Some(switchboard);
        self
    }

    /// Runs `POST /config/reload`: `Ok(report)` answers 200 with the report, `Err(reason)` 422.
    pub fn on_reload<F>(mut self, reload: F) -> Self
    where
        F: Fn() -> BoxFuture<Result<Value, String>> + Send + Sync + 'static,
    {
        self.reload = Some(Arc::new(reload));
        self
    }

    /// Runs `POST /cache/purge`: `Ok` with the entries removed (and, for a cache that publishes
    /// purges to other proxies, where the publication stands).
    pub fn on_purge<F>(mut self, purge: F) -> Self
    where
        F: Fn(Purge) -> BoxFuture<Result<PurgeAnswer, String>> + Send + Sync + 'static,
    {
        self.purge = Some(Arc::new(purge));
        self
    }

    /// The service.
    pub fn build(self) -> Admin {
        Admin {
            inner: Arc::new(AdminInner {
                builder: self,
                started: Instant::now(),
            }),
        }
    }
}

/// The admin API as a tower service; serve it with [`Server`](crate::Server) on its own
/// (loopback) listener.
///
/// | Endpoint | Answer |
/// |---|---|
/// | `GET /` | the admin page (HTML, [below](#the-admin-page)); with `Accept: application/json`, the list of endpoints |
/// | `GET /healthz` | 200 while the process serves |
/// | `GET /readyz` | 200 (`ready`, or `ready, degraded: …` while a module serves a fallback), or 503 with the reason |
/// | `GET /metrics` | Prometheus text |
/// | `GET /status` | JSON: configs (version, digest, age, last rejection), modules, switches |
/// | `POST /modules/{name}/kill`, `/revive` | flips the module's kill switch |
/// | `POST /config/reload` | reloads the config files |
/// | `POST /cache/purge?url=…` or `?tag=…` (or a JSON body `{"url":…}` / `{"tag":…}`) | purges |
///
/// `POST` endpoints need `Authorization: Bearer <token>`.
///
/// # The admin page
///
/// `GET /` answers one self-contained HTML page (its style and script inline, compiled into
/// the binary, so it works offline and loads nothing from elsewhere). It polls `/status` and
/// `/metrics` and shows the modules (failure mode, circuit, kill switch), each document's
/// active version, digest, age, source and last rejection, TLS certificates with their
/// expiry, a rollout when `/status` reports one, and sparklines of the main counters over
/// the last 60 scrapes. Its buttons (kill/revive, reload, purge by tag) send the token typed
/// into a password field, kept in the tab's memory only. The page is served with a
/// `Content-Security-Policy` that allows its own inline script and style by their SHA-256
/// hashes and nothing else (`connect-src 'self'`), `Cache-Control: no-store` and
/// `X-Frame-Options: DENY`; the `Host` check (421) applies to it as to every endpoint.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<AdminInner>,
}

struct AdminInner {
    builder: AdminBuilder,
    started: Instant,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("builder", &self.inner.builder)
            .finish()
    }
}

impl Admin {
    /// Starts building the admin service.
    pub fn builder() -> AdminBuilder {
        AdminBuilder::default()
    }

    /// The `/status` document as JSON.
    pub fn status(&self) -> Value {
        self.inner.status()
    }
}

impl<B> Service<Request<B>> for Admin
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
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { Ok(inner.handle(request).await) })
    }
}

impl AdminInner {
    async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some(refused) = self.misdirected(&request) {
            return refused;
        }
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = request.method().clone();
        let get = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        match segments.as_slice() {
            ["healthz"] if get => text(StatusCode::OK, "ok\n"),
            ["readyz"] if get => match self.builder.ready.as_ref().map_or(Ok(()), |f| f()) {
                Ok(()) => {
                    let degraded = self
                        .builder
                        .degraded
                        .as_ref()
                        .map(|f| f())
                        .unwrap_or_default();
                    if degraded.is_empty() {
                        text(StatusCode::OK, "ready\n")
                    } else {
                        text(
                            StatusCode::OK,
                            format!("ready, degraded: {}\n", degraded.join("; ")),
                        )
                    }
                }
                Err(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {reason}\n"),
                ),
            },
            ["metrics"] if get => match &self.builder.metrics {
                Some(render) => {
                    let mut response = text(StatusCode::OK, render());
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    response
                }
                None => text(StatusCode::NOT_FOUND, "no metrics recorder installed\n"),
            },
            ["status"] if get => json_response(StatusCode::OK, &self.status()),
            [""] if get && !wants_json(&request) => page(),
            [""] if get => json_response(
                StatusCode::OK,
                &json!({"endpoints": [
                    "GET / (the admin page, as HTML)", "GET /healthz", "GET /readyz", "GET /metrics", "GET /status",
                    "POST /modules/{name}/kill", "POST /modules/{name}/revive",
                    "POST /config/reload", "POST /cache/purge?url=URL | ?tag=TAG",
                    "POST /commands/{name}"
                ], "commands": self.builder.commands.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()}),
            ),
            ["commands", name] if post => {
                if let Some(denied) = self.denied(&request) {
                    return denied;
                }
                let Some((_, command)) = self.builder.commands.iter().find(|(n, _)| n == name)
                else {
                    return text(StatusCode::NOT_FOUND, "no such command; GET / lists them\n");
                };
                let query = request.uri().query().map(str::to_owned);
                match command(query).await {
                    Ok(report) => json_response(StatusCode::OK, &report),
                    Err(reason) => {
                        json_response(StatusCode::UNPROCESSABLE_ENTITY, &json!({"error": reason}))
                    }
                }
            }
            ["modules", name, action @ ("kill" | "revive")] if post => {
                if let Some(denied) = self.denied(&request) {
                    return denied;
                }
                self.flip(name, *action == "kill")
            }
            ["config", "reload"] if post => {
                if let Some(denied) = self.denied(&request) {
                    return denied;
                }
                let Some(reload) = &self.builder.reload else {
                    return text(
                        StatusCode::NOT_IMPLEMENTED,
                        "reload is not wired in this binary\n",
                    );
                };
                match reload().await {
                    Ok(report) => json_response(StatusCode::OK, &report),
                    Err(reason) => json_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &json!({"error": reason, "active": "unchanged"}),
                    ),
                }
            }
            ["cache", "purge"] if post => {
                if let Some(denied) = self.denied(&request) {
                    return denied;
                }
                let Some(purge_fn) = self.builder.purge.clone() else {
                    return text(StatusCode::NOT_IMPLEMENTED, "no cache in this binary\n");
                };
                let purge = match parse_purge(request).await {
                    Ok(purge) => purge,
                    Err(reason) => return text(StatusCode::BAD_REQUEST, format!("{reason}\n")),
                };
                tracing::info!(?purge, "admin: cache purge");
                match purge_fn(purge.clone()).await {
                    Ok(answer) => {
                        let (by, value) = match &purge {
                            Purge::Url(url) => ("url", url),
                            Purge::Tag(tag) => ("tag", tag),
                        };
                        let mut body = json!({ by: value, "purged": answer.purged });
                        if let (Some(fleet), Some(object)) = (answer.fleet, body.as_object_mut()) {
                            object.insert("fleet".into(), json!(fleet));
                        }
                        json_response(StatusCode::OK, &body)
                    }
                    Err(reason) => {
                        json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": reason}))
                    }
                }
            }
            ["healthz" | "readyz" | "metrics" | "status"] => method_not_allowed("GET, HEAD"),
            ["modules", _, "kill" | "revive"]
            | ["config", "reload"]
            | ["cache", "purge"]
            | ["commands", _] => method_not_allowed("POST"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; GET / lists the endpoints\n",
            ),
        }
    }

    /// `Some(421)` when the request names a host this API does not answer to (DNS rebinding).
    /// No `Host` at all (HTTP/1.0 tools) is accepted: a browser always sends one.
    fn misdirected<B>(&self, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let host = request
            .uri()
            .authority()
            .map(|a| a.host().to_owned())
            .or_else(|| {
                let value = request.headers().get(header::HOST)?;
                let text = value.to_str().unwrap_or("\u{fffd}");
                Some(match text.parse::<http::uri::Authority>() {
                    Ok(authority) => authority.host().to_owned(),
                    Err(_) => text.to_owned(),
                })
            })?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_ok()
            || host == "localhost"
            || self.builder.allowed_hosts.contains(&host)
        {
            return None;
        }
        metrics::counter!("ravelin_admin_misdirected_total").increment(1);
        Some(text(
            StatusCode::MISDIRECTED_REQUEST,
            "the admin API does not answer to this Host; use its IP address or localhost, \
             or add the name to admin.allowed_hosts\n",
        ))
    }

    /// `Some(answer)` when the request may not mutate: no token configured, or a wrong one.
    fn denied<B>(&self, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let Some(expected) = self.builder.token.current() else {
            return Some(text(
                StatusCode::FORBIDDEN,
                "mutating admin endpoints are disabled: configure an admin token \
                 (admin.token or the variable named by admin.token_env)\n",
            ));
        };
        let offered = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        match offered {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => None,
            _ => {
                metrics::counter!("ravelin_admin_unauthorized_total").increment(1);
                let mut response =
                    text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Some(response)
            }
        }
    }

    fn flip(&self, name: &str, engage: bool) -> Response<Full<Bytes>> {
        let Some(board) = &self.builder.switchboard else {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "no kill switches in this binary\n",
            );
        };
        match board.set(name, engage, "admin api") {
            Ok(previous) => json_response(
                StatusCode::OK,
                &json!({"module": name, "killed": engage, "was_killed": previous}),
            ),
            Err(unknown) => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": unknown.to_string()}),
            ),
        }
    }

    fn status(&self) -> Value {
        let b = &self.builder;
        let configs: Vec<Value> = b.configs.iter().map(|f| config_status_json(&f())).collect();
        let modules = b.modules.as_ref().map(|f| f()).unwrap_or_default();
        let switches: serde_json::Map<String, Value> = b
            .switchboard
            .as_ref()
            .map(|s| s.states())
            .unwrap_or_default()
            .into_iter()
            .map(|(name, engaged)| (name, Value::Bool(engaged)))
            .collect();
        let mut doc = json!({
            "uptime_seconds": self.started.elapsed().as_secs(),
            "configs": configs,
            "modules": modules,
            "kill_switches": switches,
        });
        if let Some(map) = doc.as_object_mut() {
            for (key, f) in &b.extras {
                map.insert(key.clone(), f());
            }
        }
        doc
    }
}

/// A config store's [`Status`] as the JSON `/status` shows: active version, digest, source, age
/// and the last rejection with its reason.
pub fn config_status_json(status: &Status) -> Value {
    let active = &status.active;
    let last = status.last_rejection.as_ref().map(|r| {
        json!({
            "kind": r.rejection.kind(),
            "source": r.rejection.origin().to_string(),
            "reason": r.rejection.to_string(),
            "digest": r.digest.map(|d| d.short()),
            "at_unix": unix(r.at),
        })
    });
    let rollout = status.rollout.as_ref().map(|r| {
        json!({
            "stage": "canary",
            "version": r.candidate.version,
            "digest": r.candidate.digest.short(),
            "source": r.candidate.source.to_string(),
            "share": r.share,
            "elapsed_seconds": r.elapsed.as_secs_f64(),
            "bake_seconds": r.bake.as_secs_f64(),
            "min_requests": r.min_requests,
            "started_at_unix": unix(r.started_at),
            "canary": r.canary,
            "baseline": r.baseline,
        })
    });
    let last_rollout = status.last_rollout.as_ref().map(|r| {
        json!({
            "end": r.end.as_str(),
            "reason": r.end.reason(),
            "version": r.version,
            "digest": r.digest.short(),
            "at_unix": unix(r.at),
            "elapsed_seconds": r.elapsed.as_secs_f64(),
            "canary": r.canary,
            "baseline": r.baseline,
        })
    });
    json!({
        "name": status.name,
        "stage": if status.rollout.is_some() { "canary" } else { "promoted" },
        "rollout": rollout,
        "last_rollout": last_rollout,
        "version": active.version,
        "digest": active.digest.short(),
        "source": active.source.to_string(),
        "is_default": active.is_default(),
        "generation": active.generation,
        "loaded_at_unix": unix(active.loaded_at),
        "age_seconds": active.age().as_secs(),
        "consecutive_rejections": status.consecutive_rejections,
        "total_rejections": status.total_rejections,
        "rejections_window": status.rejections_window,
        "persist_failures": status.persist_failures,
        "degraded": is_degraded(status),
        "last_rejection": last,
    })
}

/// Whether a store serves a fallback because its source was refused: the persisted last good
/// copy or the compiled-in default, with a rejection on record (a store that simply has no file,
/// such as the built-in bot model, is not degraded).
pub fn is_degraded(status: &Status) -> bool {
    status.degraded() && status.last_rejection.is_some()
}

/// The `/readyz` line of a degraded store: its name, what it serves and why.
pub fn degraded_reason(status: &Status) -> Option<String> {
    if !is_degraded(status) {
        return None;
    }
    let why = status
        .last_rejection
        .as_ref()
        .map(|record| record.rejection.to_string())
        .unwrap_or_default();
    Some(format!(
        "{} serves {} ({why})",
        status.name, status.active.source
    ))
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret; content comparison does not stop at the first difference.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn parse_purge<B>(request: Request<B>) -> Result<Purge, String>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(query) = request.uri().query() {
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value =
                percent_decode(value).ok_or("query value is not valid percent-encoded UTF-8")?;
            match key {
                "url" if !value.is_empty() => return Ok(Purge::Url(value)),
                "tag" if !value.is_empty() => return Ok(Purge::Tag(value)),
                _ => {}
            }
        }
    }
    let body = Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the request body (limit {MAX_ADMIN_BODY} bytes): {e}"))?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(
            "say what to purge: ?url=URL or ?tag=TAG, or a JSON body {\"url\":…} / {\"tag\":…}"
                .into(),
        );
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PurgeBody {
        url: Option<String>,
        tag: Option<String>,
    }
    let parsed: PurgeBody =
        serde_json::from_slice(&body).map_err(|e| format!("purge body is not valid JSON: {e}"))?;
    match (parsed.url, parsed.tag) {
        (Some(url), None) if !url.is_empty() => Ok(Purge::Url(url)),
        (None, Some(tag)) if !tag.is_empty() => Ok(Purge::Tag(tag)),
        _ => Err("give exactly one non-empty member: url or tag".into()),
    }
}

fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

// === the admin page ===

/// The admin page: one HTML document with its `<style>` and `<script>` inline.
const PAGE: &str = include_str!("admin/page.html");

/// The page's `Content-Security-Policy`, computed once: nothing may load but the page's own
/// inline style and script (allowed by hash, so an injected element would not run) and
/// `fetch`es to this origin.
static PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = page_csp(PAGE);
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

/// The CSP for `html`: its one inline `<style>` and one inline `<script>` allowed by their
/// SHA-256 hashes. An element missing from the page gets no source at all (`'none'`).
fn page_csp(html: &str) -> String {
    let hash = |open: &str, close: &str| {
        html.split_once(open)
            .and_then(|(_, rest)| rest.split_once(close))
            .map_or_else(
                || "'none'".to_owned(),
                |(inline, _)| {
                    let digest = ravelin_config::Digest::of(inline.as_bytes());
                    format!("'sha256-{}'", base64(digest.as_bytes()))
                },
            )
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash("<script>", "</script>"),
        hash("<style>", "</style>"),
    )
}

/// Standard base64 with padding (RFC 4648 §4), as CSP hash sources are written.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol = |index: u32| {
        let index = usize::try_from(index & 63).unwrap_or(0);
        ALPHABET.get(index).copied().map_or('=', char::from)
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let [a, b, c] = [0, 1, 2].map(|i| chunk.get(i).copied().map_or(0, u32::from));
        let n = (a << 16) | (b << 8) | c;
        out.push(symbol(n >> 18));
        out.push(symbol(n >> 12));
        out.push(if chunk.len() > 1 { symbol(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { symbol(n) } else { '=' });
    }
    out
}

/// Whether a `GET /` asks for the endpoint list (JSON) rather than the page: its `Accept`
/// names `application/json` and not `text/html`. Browsers ask for HTML; `curl` (`*/*`) gets
/// the page too.
fn wants_json<B>(request: &Request<B>) -> bool {
    let accept = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase();
    accept.contains("application/json") && !accept.contains("text/html")
}

fn page() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    ravelin_http::plain_text(status, Full::new(body.into()))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = text(status, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn call(admin: &Admin, request: Request<Full<Bytes>>) -> (StatusCode, String) {
        let response = admin.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn post(uri: &str, token: Option<&str>) -> Request<Full<Bytes>> {
        let mut builder = Request::post(uri);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(Full::default()).unwrap()
    }

    fn get(uri: &str) -> Request<Full<Bytes>> {
        Request::get(uri).body(Full::default()).unwrap()
    }

    #[tokio::test]
    async fn health_ready_metrics() {
        let admin = Admin::builder()
            .metrics(|| "ravelin_up 1\n".into())
            .ready(|| Err("config not loaded".into()))
            .build();
        assert_eq!(
            call(&admin, get("/healthz")).await,
            (StatusCode::OK, "ok\n".into())
        );
        let (status, body) = call(&admin, get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("config not loaded"));
        // Degraded is still ready, and says so.
        let degraded = Admin::builder()
            .degraded(|| vec!["bot-features serves the compiled-in default (parse error)".into()])
            .build();
        assert_eq!(
            call(&degraded, get("/readyz")).await,
            (
                StatusCode::OK,
                "ready, degraded: bot-features serves the compiled-in default (parse error)\n"
                    .into()
            )
        );
        let fine = Admin::builder().degraded(Vec::new).build();
        assert_eq!(
            call(&fine, get("/readyz")).await,
            (StatusCode::OK, "ready\n".into())
        );
        assert_eq!(call(&admin, get("/metrics")).await.1, "ravelin_up 1\n");
        assert_eq!(
            call(&admin, post("/metrics", None)).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(call(&admin, get("/nope")).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn kill_switches_need_the_token() {
        let board = Switchboard::new();
        let switch = board.switch("botscore");
        let admin = Admin::builder()
            .token(Some("s3cret".into()))
            .switchboard(board.clone())
            .build();
        assert_eq!(
            call(&admin, post("/modules/botscore/kill", None)).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&admin, post("/modules/botscore/kill", Some("wrong")))
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert!(!switch.is_engaged());
        let (status, body) = call(&admin, post("/modules/botscore/kill", Some("s3cret"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(switch.is_engaged());
        call(&admin, post("/modules/botscore/revive", Some("s3cret"))).await;
        assert!(!switch.is_engaged());
        let (status, body) = call(&admin, post("/modules/botscroe/kill", Some("s3cret"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body.contains("botscore"),
            "names the known switches: {body}"
        );
        let status = admin.status();
        assert_eq!(status["kill_switches"]["botscore"], Value::Bool(false));
    }

    #[tokio::test]
    async fn without_a_token_mutations_are_refused() {
        let board = Switchboard::new();
        board.switch("cache");
        let admin = Admin::builder()
            .token(Some(String::new()))
            .switchboard(board)
            .build();
        let (status, body) = call(&admin, post("/modules/cache/kill", Some(""))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("admin token"));
    }

    #[tokio::test]
    async fn purge_by_query_and_body() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let admin = Admin::builder()
            .token(Some("t".into()))
            .on_purge(move |p| {
                record.lock().unwrap().push(p);
                Box::pin(async { Ok(3.into()) })
            })
            .build();
        let (status, body) = call(
            &admin,
            post(
                "/cache/purge?url=http%3A%2F%2Fa.test%2Fx%3Fy%3D1",
                Some("t"),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\"purged\": 3"));
        let request = Request::post("/cache/purge")
            .header("authorization", "Bearer t")
            .body(Full::new(Bytes::from_static(br#"{"tag":"css"}"#)))
            .unwrap();
        assert_eq!(call(&admin, request).await.0, StatusCode::OK);
        let request = Request::post("/cache/purge")
            .header("authorization", "Bearer t")
            .body(Full::new(Bytes::from_static(br#"{"tag":"css","url":"x"}"#)))
            .unwrap();
        assert_eq!(call(&admin, request).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(
            call(&admin, post("/cache/purge", Some("t"))).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Purge::Url("http://a.test/x?y=1".into()),
                Purge::Tag("css".into())
            ]
        );
    }

    #[tokio::test]
    async fn reload_reports_rejection_as_422() {
        let admin = Admin::builder()
            .token(Some("t".into()))
            .on_reload(|| {
                Box::pin(async { Err("routes[0].upstream: unknown upstream \"x\"".to_owned()) })
            })
            .build();
        let (status, body) = call(&admin, post("/config/reload", Some("t"))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body.contains("routes[0].upstream"), "{body}");
    }

    #[tokio::test]
    async fn a_rotated_token_replaces_the_old_one_at_once() {
        let token = AdminToken::new(Some("old".into()));
        let admin = Admin::builder()
            .token_source(token.clone())
            .switchboard(Switchboard::new())
            .build();
        let (status, _) = call(&admin, post("/modules/x/kill", Some("old"))).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED);
        assert!(token.set(Some("new".into())));
        let (status, _) = call(&admin, post("/modules/x/kill", Some("old"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call(&admin, post("/modules/x/kill", Some("new"))).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED);
        assert!(token.set(None));
        let (status, _) = call(&admin, post("/modules/x/kill", Some("new"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn foreign_host_names_are_misdirected() {
        let admin = Admin::builder().allowed_hosts(["Admin.Internal."]).build();
        let with_host = |host: &str| {
            Request::get("/status")
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        for host in [
            "127.0.0.1:9901",
            "[::1]:9901",
            "localhost:9901",
            "admin.internal",
            "10.0.0.5",
        ] {
            assert_eq!(
                call(&admin, with_host(host)).await.0,
                StatusCode::OK,
                "{host}"
            );
        }
        for host in [
            "attacker.example",
            "attacker.example:9901",
            "localhost.attacker.example",
        ] {
            let (status, body) = call(&admin, with_host(host)).await;
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}");
            assert!(body.contains("allowed_hosts"), "{body}");
        }
    }

    #[tokio::test]
    async fn commands_need_the_token_and_get_the_query() {
        let admin = Admin::builder()
            .token(Some("t".into()))
            .command("demo-outage", |query| {
                Box::pin(async move { Ok(json!({ "query": query })) })
            })
            .build();
        assert_eq!(
            call(&admin, post("/commands/demo-outage?on=1", None))
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = call(&admin, post("/commands/demo-outage?on=1", Some("t"))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("on=1"), "{body}");
        assert_eq!(
            call(&admin, post("/commands/other", Some("t"))).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&admin, get("/commands/demo-outage")).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn module_status_json_keeps_the_failsafe_strings() {
        let admin = Admin::builder()
            .modules(|| {
                vec![
                    ModuleStatus {
                        name: "ratelimit".into(),
                        failure_mode: FailureMode::Closed,
                        timeout_ms: Some(20),
                        circuit: Some(CircuitState::HalfOpen),
                        killed: false,
                        detail: Value::Null,
                    },
                    ModuleStatus {
                        name: "cache".into(),
                        failure_mode: FailureMode::Open,
                        timeout_ms: None,
                        circuit: None,
                        killed: true,
                        detail: json!({ "entries": 0 }),
                    },
                ]
            })
            .build();
        let (status, body) = call(&admin, get("/status")).await;
        assert_eq!(status, StatusCode::OK);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body["modules"],
            json!([
                { "name": "ratelimit", "failure_mode": "closed", "timeout_ms": 20,
                  "circuit": "half_open", "killed": false },
                { "name": "cache", "failure_mode": "open", "timeout_ms": null,
                  "circuit": null, "killed": true, "detail": { "entries": 0 } },
            ])
        );
        let states = [
            (CircuitState::Closed, "closed"),
            (CircuitState::Open, "open"),
            (CircuitState::HalfOpen, "half_open"),
            (CircuitState::ForcedOpen, "forced_open"),
            (CircuitState::ForcedClosed, "forced_closed"),
        ];
        for (state, text) in states {
            assert_eq!(serde_json::to_value(state).unwrap(), json!(text));
        }
        assert_eq!(
            serde_json::to_value(FailureMode::Open).unwrap(),
            json!("open")
        );
    }

    #[tokio::test]
    async fn the_page_is_served_with_a_strict_policy() {
        let admin = Admin::builder().build();
        let response = admin.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert_eq!(csp, page_csp(PAGE));
        assert!(
            csp.starts_with("default-src 'none'; script-src 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, PAGE.as_bytes());

        // Asked for JSON, `/` still lists the endpoints.
        let request = Request::get("/")
            .header("accept", "application/json")
            .body(Full::default())
            .unwrap();
        let (status, body) = call(&admin, request).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("GET /status"), "{body}");

        // The Host check covers the page.
        let request = Request::get("/")
            .header("host", "rebound.attacker.example")
            .body(Full::default())
            .unwrap();
        assert_eq!(
            call(&admin, request).await.0,
            StatusCode::MISDIRECTED_REQUEST
        );
    }

    #[test]
    fn the_page_is_self_contained() {
        // One inline style and one inline script, so the policy's two hashes cover everything.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(!PAGE.contains("<script src"));
        for attribute in ["src=", "href=", "action="] {
            for (at, _) in PAGE.match_indices(attribute) {
                let value = PAGE[at + attribute.len()..].trim_start_matches(['"', '\'']);
                assert!(
                    value.starts_with("data:")
                        || (value.starts_with('/') && !value.starts_with("//"))
                        || value.starts_with('#'),
                    "{attribute} must be relative or data:, found {}",
                    &value[..value.len().min(40)]
                );
            }
        }
        assert!(!PAGE.contains("localStorage") && !PAGE.contains("sessionStorage"));
        assert!(
            !PAGE.contains("innerHTML"),
            "server text is never parsed as HTML"
        );
        // The only absolute URL is the SVG namespace, an identifier that is never fetched.
        assert_eq!(PAGE.matches("://").count(), 1);
        assert!(PAGE.contains("\"http://www.w3.org/2000/svg\""));
    }

    #[test]
    fn csp_hashes_are_base64_sha256() {
        assert_eq!(
            page_csp("<style></style><script></script>"),
            "default-src 'none'; \
             script-src 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='; \
             style-src 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
        assert!(page_csp("<p>no script</p>").contains("script-src 'none'"));
        for (input, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), encoded);
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
