//! Shared harness of the end-to-end tests: the edge proxy started in-process through the same
//! assembly code as the `edge-proxy` example, a real HTTP client over loopback sockets, load
//! generation with bounded count and time, and metrics scraping.
//!
//! The assembly is the `ravelin-edge` crate, the same one the `edge-proxy` example runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ravelin_edge::{EdgeOptions, ExtraGuard, Overrides, Running, start};

/// The admin token every test config sets.
pub const TOKEN: &str = "e2e-token";

/// The bound on any single wait: a hang fails the test instead of stalling CI.
pub const BOUND: Duration = Duration::from_secs(20);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder (installed once per test binary).
pub fn prometheus() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

/// A config for tests: loopback ephemeral ports (flags), a known admin token, limits high
/// enough that load tests are not rate limited, fast file watching, and the demo origin asked
/// for (it serves when `extra` names no `[[upstreams]]`). `extra` is appended.
pub fn config(extra: &str) -> String {
    format!(
        r#"
[demo]
enabled = true

[admin]
token = "{TOKEN}"

[reload]
watch_interval = "50ms"

{extra}
"#
    )
}

/// The default rate-limit section for load tests: a limit no test reaches.
pub const GENEROUS_RATELIMIT: &str = r#"
[ratelimit]
[[ratelimit.rules]]
name = "per-ip"
limit = 1000000
window = "1s"
key = ["client_ip"]
"#;

/// A started proxy with its config file in a temporary directory.
#[derive(Debug)]
pub struct Harness {
    /// The proxy (taken by [`stop`](Self::stop)).
    pub running: Option<Running>,
    /// The temporary directory holding the config file and any feature files.
    pub dir: tempfile::TempDir,
    /// The config file the proxy watches.
    pub config_path: PathBuf,
    /// A pooled HTTP client for requests to the proxy and the admin API.
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl Harness {
    /// Starts the proxy with `config_text` (written to a file so reloads work).
    pub async fn start(config_text: &str, extra_guard: Option<ExtraGuard>) -> Self {
        Self::start_with_files(config_text, &[], extra_guard).await
    }

    /// As [`start`](Self::start), first writing `files` (name, bytes) into the temporary
    /// directory; `{dir}` in the config text is replaced by that directory.
    pub async fn start_with_files(
        config_text: &str,
        files: &[(&str, &[u8])],
        extra_guard: Option<ExtraGuard>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            write_atomically(&dir.path().join(name), bytes);
        }
        let config_path = dir.path().join("edge-proxy.toml");
        let config_text = config_text.replace("{dir}", &dir.path().display().to_string());
        write_atomically(&config_path, config_text.as_bytes());
        let handle = prometheus();
        let options = EdgeOptions {
            config_path: Some(config_path.clone()),
            config_text: None,
            overrides: Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                admin: Some("127.0.0.1:0".parse().unwrap()),
                admin_allow_remote: false,
                upstream: None,
                state_dir: None,
            },
            metrics: handle
                .map(|h| Arc::new(move || h.render()) as Arc<dyn Fn() -> String + Send + Sync>),
            extra_guard,
        };
        let running = start(options).await.expect("the proxy starts");
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        Self {
            running: Some(running),
            dir,
            config_path,
            client,
        }
    }

    /// A path in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The running proxy; panics after [`stop`](Self::stop).
    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// The proxy URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().proxy_addr)
    }

    /// The admin API URL of `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().admin_addr)
    }

    /// GET through the proxy.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(
            Request::get(self.url(path))
                .header("user-agent", "ravelin-e2e/1.0")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .expect("the proxy answers")
    }

    /// Sends `request` with the harness client, bounded by [`BOUND`].
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Reply, String> {
        send(&self.client, request).await
    }

    /// `POST` to the admin API with the token.
    pub async fn admin_post(&self, path: &str) -> Reply {
        let request = Request::post(self.admin_url(path))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::default())
            .unwrap();
        self.send(request).await.unwrap()
    }

    /// `GET /status` of the admin API, as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let reply = self
            .send(
                Request::get(self.admin_url("/status"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        serde_json::from_slice(&reply.body).unwrap()
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let reply = self
            .send(
                Request::get(self.admin_url("/metrics"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        // An empty or failed /metrics would let every metric assertion pass vacuously.
        assert_eq!(reply.status, 200, "GET /metrics: {}", reply.text());
        let text = String::from_utf8(reply.body.to_vec()).unwrap();
        assert!(
            !text.is_empty(),
            "GET /metrics served nothing: is the test recorder installed?"
        );
        text
    }

    /// Shuts the proxy down (bounded by [`BOUND`]).
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            tokio::time::timeout(BOUND, running.shutdown())
                .await
                .expect("shutdown completes");
        }
    }
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header the demo origin's `/echo` says it received.
    pub fn echoed(&self, name: &str) -> Vec<String> {
        let json = self.json();
        json["headers"]
            .as_array()
            .map(|pairs| {
                pairs
                    .iter()
                    .filter(|p| p[0] == name)
                    .filter_map(|p| p[1].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Sends `request` with `client` and reads the whole reply, bounded by [`BOUND`].
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<Reply, String> {
    let response = tokio::time::timeout(BOUND, client.request(request))
        .await
        .map_err(|_| "request timed out".to_owned())?
        .map_err(|e| format!("request failed: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(BOUND, body.collect())
        .await
        .map_err(|_| "body timed out".to_owned())?
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Writes `bytes` to `path` the way a careful generator does: a temporary file renamed over
/// the old one, so a reader sees the old file or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Replies by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests that got no reply.
    pub transport_errors: u64,
    /// The first few errors (transport or failed checks), for the failure message.
    pub first_errors: Vec<String>,
    /// Replies the check inspected.
    pub checked: u64,
}

impl LoadReport {
    /// Every request sent.
    pub fn total(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.transport_errors
    }

    /// Replies with a 5xx status.
    pub fn count_5xx(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum()
    }

    /// Replies that were not 2xx, plus transport errors.
    pub fn non_2xx(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum::<u64>()
            + self.transport_errors
    }
}

/// [`load`] of `GET /echo` running in the background while a test changes the proxy under it.
#[derive(Debug)]
pub struct BackgroundLoad {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

impl BackgroundLoad {
    /// Starts `workers` tasks for at most `max_time`; `check` inspects every reply.
    pub fn start<F>(harness: &Arc<Harness>, workers: usize, max_time: Duration, check: F) -> Self
    where
        F: Fn(&Reply) -> Result<(), String> + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (harness, stop_task) = (Arc::clone(harness), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            load(
                &harness, "/echo", workers, 1_000_000, max_time, stop_task, check,
            )
            .await
        });
        Self { stop, task }
    }

    /// Stops the load and returns its report.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Steady concurrent load: `workers` tasks send `GET path` until `stop` is set, `max_requests`
/// were sent or `max_time` passed, whichever comes first. `check` inspects every reply and
/// returns an error text when it is wrong.
pub async fn load<F>(
    harness: &Harness,
    path: &str,
    workers: usize,
    max_requests: u64,
    max_time: Duration,
    stop: Arc<AtomicBool>,
    check: F,
) -> LoadReport
where
    F: Fn(&Reply) -> Result<(), String> + Send + Sync + 'static,
{
    let check = Arc::new(check);
    let sent = Arc::new(AtomicU64::new(0));
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let client = harness.client.clone();
        let url = harness.url(path);
        let (check, sent, report, stop) =
            (check.clone(), sent.clone(), report.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < max_time
                && sent.fetch_add(1, Ordering::Relaxed) < max_requests
            {
                let request = Request::get(&url)
                    .header("user-agent", "ravelin-e2e/1.0")
                    .header("accept", "application/json")
                    .body(Full::default())
                    .unwrap();
                let result = send(&client, request).await;
                let mut report = report.lock().unwrap();
                match result {
                    Ok(reply) => {
                        *report.by_status.entry(reply.status.as_u16()).or_default() += 1;
                        report.checked += 1;
                        if let Err(e) = check(&reply)
                            && report.first_errors.len() < 10
                        {
                            report.first_errors.push(e);
                        }
                    }
                    Err(e) => {
                        report.transport_errors += 1;
                        if report.first_errors.len() < 10 {
                            report.first_errors.push(e);
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(report).unwrap().into_inner().unwrap()
}

/// Polls `condition` every 20 ms until it holds, failing after [`BOUND`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + BOUND;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of a counter or gauge line in Prometheus text whose name and labels contain all of
/// `needles`, summed over matching series.
pub fn metric(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && l.get(name.len()..name.len() + 1)
                    .is_some_and(|c| c == "{" || c == " ")
        })
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

// === bot feature files ===

/// A valid feature file with `rows` features (distinct names), model `version`, and a bias that
/// puts requests from the test client at a score the compiled-in model never gives.
pub fn feature_file(version: u64, rows: usize, bias: f64) -> String {
    let features: Vec<serde_json::Value> = (0..rows)
        .map(|i| {
            serde_json::json!({
                "name": format!("f{i:03}"),
                "kind": "ua_missing",
                "weight": -0.5,
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "schema_version": ravelin_botscore::SCHEMA_VERSION,
        "model_version": version,
        "bias": bias,
        "thresholds": {"automated": 1, "likely_automated": 29},
        "features": features,
    }))
    .unwrap()
}

/// The same file with every feature row duplicated: the 18 November file.
pub fn doubled(file: &str) -> String {
    let mut json: serde_json::Value = serde_json::from_str(file).unwrap();
    let rows = json["features"].as_array().unwrap().clone();
    let mut twice = rows.clone();
    twice.extend(rows);
    json["features"] = serde_json::Value::Array(twice);
    serde_json::to_string_pretty(&json).unwrap()
}

// === the cache through the proxy ===

/// GET `path` through `proxy` with `Host: host` (proxies of one test share cache keys only
/// when they are asked for the same host).
pub async fn get_on(proxy: &Harness, host: &str, path: &str) -> Reply {
    proxy
        .send(
            Request::get(proxy.url(path))
                .header("host", host)
                .header("user-agent", "ravelin-e2e/1.0")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .expect("the proxy answers")
}

/// Every `Cache-Status` field line of `reply`, joined.
pub fn cache_status(reply: &Reply) -> String {
    reply
        .headers
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the cache answered `reply` from its store.
pub fn is_hit(reply: &Reply) -> bool {
    cache_status(reply).contains("; hit")
}

/// `POST /cache/purge?{query}` on `proxy` with the token: the JSON answer (200 asserted).
pub async fn purge(proxy: &Harness, query: &str) -> serde_json::Value {
    let reply = proxy
        .send(
            Request::post(proxy.admin_url(&format!("/cache/purge?{query}")))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "purge {query}: {}", reply.text());
    reply.json()
}

/// The `detail` of module `name` in `proxy`'s `/status`.
pub async fn module_detail(proxy: &Harness, name: &str) -> serde_json::Value {
    let status = proxy.status().await;
    status["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no module {name} in {status:#}"))["detail"]
        .clone()
}
