//! `edge-proxy`: Ravelin's layers assembled into a reverse proxy.
//!
//! ```text
//! cargo run --release --example edge-proxy -- [--config FILE] [--listen ADDR] [--admin ADDR] [--upstream URL] [--state-dir DIR]
//! ```
//!
//! Without `--config` the built-in configuration (the commented `examples/edge-proxy.toml`)
//! is used; without an upstream, an embedded demo origin serves on loopback. See
//! `docs/operations.md`.
//!
//! This binary is a thin shell: arguments, logging, the Prometheus exporter and signals. The
//! assembly itself (config, stack, reload, admin API) is the `ravelin-edge` library, which the
//! end-to-end tests and embedders use directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use ravelin_edge::{ConfigSource, EdgeOptions, Overrides, check_config, start};
use tracing_subscriber::EnvFilter;

/// The binary allocates through mimalloc: measured against glibc's malloc by `benches/load.sh`
/// in the same run, it cost ~10% less CPU per forwarded request (`docs/performance.md`).
/// `--features system-allocator` builds it with the system allocator.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The example configuration, used when no `--config` is given.
const BUILT_IN_CONFIG: &str = include_str!("../edge-proxy.toml");

/// Ravelin edge proxy: rate limiting, bot scoring and caching in front of an origin.
#[derive(Debug, Parser)]
#[command(name = "edge-proxy", version, about)]
struct Args {
    /// The TOML configuration file (watched and hot-reloaded). Default: the built-in example.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve on (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the admin API (overrides admin.listen). A non-loopback address also needs
    /// `--admin-allow-remote` (or `admin.allow_remote = true`).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Allow a non-loopback admin address: only where a firewall guards it.
    #[arg(long)]
    admin_allow_remote: bool,
    /// Send all traffic to this origin (replaces the configured upstreams and routes).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Where the last known good config and bot feature file persist (overrides
    /// `[reload] state_dir`; default: `$RAVELIN_STATE_DIR`, else the file's). Prefer this to the
    /// file's key: the file is generated input, the directory the process writes is yours.
    /// One directory per running proxy: a second process is refused.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Validate the configuration (with the flags applied) and exit: 0 and a summary, or 1 and
    /// every violation. For deployment pipelines, before a file is published.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return check(&args);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    // With `[server] runtime = "per_core"` the proxy listener brings its own worker threads;
    // this runtime then only carries the admin API, reloads and upstream health: one thread.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if per_core(&args) {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("edge-proxy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

/// The configuration as `--check` and startup read it.
fn checked(args: &Args) -> Result<ravelin_edge::EdgeConfig, String> {
    let overrides = Overrides {
        listen: args.listen,
        admin: args.admin,
        admin_allow_remote: args.admin_allow_remote,
        upstream: args.upstream.clone(),
        state_dir: state_dir(args),
    };
    let source = match &args.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::Text(BUILT_IN_CONFIG.to_owned()),
    };
    check_config(source, &overrides)
}

/// Whether the proxy listener runs its own per-core workers (an invalid file: no; startup
/// reports it).
/// `--state-dir`, else `RAVELIN_STATE_DIR` (an empty value: none).
fn state_dir(args: &Args) -> Option<PathBuf> {
    args.state_dir.clone().or_else(|| {
        std::env::var_os("RAVELIN_STATE_DIR")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
    })
}

fn per_core(args: &Args) -> bool {
    checked(args).is_ok_and(|config| config.server.runtime == ravelin_proxy::RuntimeModel::PerCore)
}

/// `--check`: the same parse and validation the proxy runs at startup and on reload.
fn check(args: &Args) -> ExitCode {
    let result = checked(args);
    match result {
        Ok(config) => {
            println!(
                "ok: listen {}, admin {}, {} upstream(s){}, {} route(s), ratelimit {}, botscore {}, cache {}",
                config.server.listen,
                config.admin.listen,
                config.upstreams.len(),
                if config.upstreams.is_empty() {
                    " (demo origin)"
                } else {
                    ""
                },
                config.routes.len(),
                on_off(config.modules.get("ratelimit").enabled),
                on_off(config.modules.get("botscore").enabled),
                on_off(config.modules.get("cache").enabled),
            );
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("edge-proxy: invalid configuration: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Bucket bounds of the edge's duration histograms (guards, upstreams), in seconds: 0.5 ms to
/// 10 s, the range between a guard's in-memory check and an upstream's slow answer.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds of `ravelin_botscore_score` (scores run 1 to 99; the thresholds operators set
/// sit in the low tens).
const SCORE_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0,
];

/// The Prometheus exporter, its histograms exported as histograms (`_bucket{le=…}`): they add up
/// across edge instances, which summaries' quantiles do not, and recording one costs a bucket
/// count instead of the exporter's quantile sketch (a sketch update per sample at every upkeep
/// was 1.5 % of a cache hit's instructions; issue 13).
fn prometheus() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets(&DURATION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("ravelin_botscore_score".to_owned()),
            &SCORE_BUCKETS,
        )
}

fn on_off(enabled: bool) -> &'static str {
    if enabled { "on" } else { "off" }
}

async fn run(args: Args) -> ExitCode {
    // Only the binary picks the exporter; the libraries record through the `metrics` facade.
    let metrics = match prometheus().and_then(PrometheusBuilder::install_recorder) {
        Ok(handle) => {
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            Some(Arc::new(move || handle.render()) as Arc<dyn Fn() -> String + Send + Sync>)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot install the Prometheus recorder; /metrics is off");
            None
        }
    };
    // The panic hook of ravelin-failsafe keeps contained guard panics to one short log line.
    ravelin_failsafe::install_panic_hook();

    let state_dir = state_dir(&args);
    let options = EdgeOptions {
        config_text: args.config.is_none().then(|| BUILT_IN_CONFIG.to_owned()),
        config_path: args.config,
        overrides: Overrides {
            listen: args.listen,
            admin: args.admin,
            admin_allow_remote: args.admin_allow_remote,
            upstream: args.upstream,
            state_dir,
        },
        metrics,
        extra_guard: None,
    };
    let running = match start(options).await {
        Ok(running) => running,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("edge-proxy: {error}");
            return ExitCode::FAILURE;
        }
    };
    let upstream = running.edge.demo_url().await;
    let tls = running
        .tls_addr
        .map(|addr| format!(", https://{addr}"))
        .unwrap_or_default();
    println!(
        "edge-proxy listening on http://{}{tls} (admin http://{}){}",
        running.proxy_addr,
        running.admin_addr,
        upstream
            .map(|u| format!("; demo origin at {u}"))
            .unwrap_or_default()
    );

    // SIGHUP reloads the config file and the bot feature file.
    let edge = Arc::clone(&running.edge);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!(
                    "cannot install the SIGHUP handler; reload with POST /config/reload"
                );
                return;
            };
            while hup.recv().await.is_some() {
                match edge.reload().await {
                    Ok(report) => tracing::info!(%report, "SIGHUP: reloaded"),
                    Err(reason) => {
                        tracing::warn!(%reason, "SIGHUP: config rejected; the running one stays in force")
                    }
                }
            }
        }
    });

    match running.run_until(ravelin_proxy::shutdown_signal()).await {
        Ok(summary) => {
            tracing::info!(
                connections = summary.connections,
                forced_closed = summary.forced_closed,
                "edge-proxy stopped"
            );
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("edge-proxy: {reason}");
            ExitCode::FAILURE
        }
    }
}
