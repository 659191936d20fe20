//! Startup, hot reload and shutdown of the assembled proxy. The binary and the end-to-end
//! tests both start the proxy through [`start`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use ravelin_config::{Format, Store, Switchboard, Validate};
use ravelin_proxy::IngressConfig;
use ravelin_proxy::admin::AdminToken;
use ravelin_proxy::{
    Admin, Route, Routes, ServeSummary, Server, ServerConfig, SharedRoutes, Target, Upstream, demo,
};
use ravelin_tls::acceptor::TlsAcceptor;
use ravelin_tls::certs::CertificateSet;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{EdgeConfig, Overrides, PlaintextMode, UpstreamSection};
use crate::modules::{
    Entry, ExtraGuard, Followed, Module, ModuleEnv, PurgeFn, Stop, registry, update_all,
};
use crate::rollout::Rollouts;
use crate::stack::{CanaryStack, EdgeHandler, EdgeService, SharedCanary, Slot, assemble};

/// The largest config file read: 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// How the proxy starts.
#[derive(Default)]
pub struct EdgeOptions {
    /// The config file (watched and reloaded); without one, `config_text` is used.
    pub config_path: Option<PathBuf>,
    /// Config text used when there is no file (the binary passes the built-in example).
    pub config_text: Option<String>,
    /// Command-line overrides.
    pub overrides: Overrides,
    /// Renders `/metrics` (the binary installs the Prometheus recorder).
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// A test-only guard placed after bot scoring.
    pub extra_guard: Option<ExtraGuard>,
}

impl std::fmt::Debug for EdgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeOptions")
            .field("config_path", &self.config_path)
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

/// A file a module follows, with the key its reload outcome is reported under.
type FollowedFile = (&'static str, Arc<dyn Followed>);

/// The upstreams, routes and modules, rebuilt or updated on reload; control plane only.
struct Control {
    applied: Option<EdgeConfig>,
    generation: Option<u64>,
    upstreams: HashMap<String, (UpstreamSection, Upstream)>,
    demo: Option<demo::DemoHandle>,
    /// The registry's modules in stack order (`crate::modules::registry`), each on or off.
    modules: Vec<Entry>,
}

impl Control {
    fn new(modules: Vec<Box<dyn Module>>) -> Self {
        Self {
            applied: None,
            generation: None,
            upstreams: HashMap::new(),
            demo: None,
            modules: modules.into_iter().map(Entry::new).collect(),
        }
    }

    /// The modules in the stack, outermost first.
    fn running(&self) -> impl Iterator<Item = &dyn Module> {
        self.modules
            .iter()
            .filter(|entry| entry.on)
            .map(|entry| entry.module.as_ref())
    }
}

/// Everything a document builds, before any of it is live.
struct Built {
    upstreams: HashMap<String, (UpstreamSection, Upstream)>,
    routes: Vec<Route>,
    ingress: IngressConfig,
    modules: crate::modules::Updated,
}

/// The running proxy's shared state.
pub struct Edge {
    store: Store<EdgeConfig>,
    overrides: Overrides,
    switchboard: Switchboard,
    routes: SharedRoutes,
    stack: Arc<ArcSwap<EdgeService<Incoming>>>,
    /// The stack of a main config's canary clients, while its rollout lasts.
    canary: SharedCanary<Incoming>,
    control: tokio::sync::Mutex<Control>,
    /// The modules in the stack, outermost first, as last applied (read by the admin API for
    /// `/status`).
    statuses: Mutex<Vec<Arc<dyn Module>>>,
    /// Files the modules follow besides the main config (bot feature file), for `/status`
    /// and reloads.
    followed: Mutex<Vec<FollowedFile>>,
    /// The cache's purge entry point, when the cache is on.
    purger: Mutex<Option<PurgeFn>>,
    apply_error: Mutex<Option<String>>,
    draining: AtomicBool,
    /// The admin bearer token, rotated by every applied config.
    admin_token: AdminToken,
    /// Set when the proxy's serve task ended on its own (a panic or an early return): the
    /// process is then not ready and exits non-zero.
    serve_failure: Mutex<Option<String>>,
    /// `[tls]`'s certificates, each with its last known good (followed, reloaded, in
    /// `/status`).
    certificates: Option<CertificateSet>,
    /// The request sample of the pre-activation checks and the documents in rollout.
    rollouts: Arc<Rollouts>,
    /// What modules are lent beyond the document (the sample, the state directory).
    env: ModuleEnv,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Edge {
    /// The main config store: its `status()` is what `/status` shows (version, digest, age,
    /// last rejection).
    pub fn store(&self) -> &Store<EdgeConfig> {
        &self.store
    }

    /// The kill switches, one per module (`ratelimit`, `botscore`, `cache`, an extra guard's
    /// name): what `POST /modules/{name}/kill` flips. A switch set here survives unrelated
    /// reloads.
    pub fn switchboard(&self) -> &Switchboard {
        &self.switchboard
    }

    /// The configuration in force (file + overrides), as last applied.
    pub async fn applied(&self) -> Option<EdgeConfig> {
        self.control.lock().await.applied.clone()
    }

    /// The demo origin, when one was started.
    pub async fn demo_url(&self) -> Option<String> {
        self.control
            .lock()
            .await
            .demo
            .as_ref()
            .map(demo::DemoHandle::url)
    }

    /// Re-reads the config file and the bot feature file, and applies what changed. Wired to
    /// SIGHUP and `POST /config/reload`.
    ///
    /// # Errors
    /// The rejection of the config file, which leaves the running config in force.
    pub async fn reload(&self) -> Result<Value, String> {
        let mut report = serde_json::Map::new();
        let config_result = if self.store.path().is_some() {
            match self.store.reload_async().await {
                Ok(outcome) => {
                    report.insert("config".into(), json!(outcome.as_str()));
                    Ok(())
                }
                Err(rejection) => Err(rejection.to_string()),
            }
        } else {
            report.insert(
                "config".into(),
                json!("no file: started from built-in config"),
            );
            Ok(())
        };
        let followed = lock(&self.followed).clone();
        for (key, file) in followed.iter().filter(|(_, file)| file.has_file()) {
            let outcome = match file.reload().await {
                Ok(outcome) => json!(outcome),
                Err(rejection) => json!({ "rejected": rejection }),
            };
            report.insert((*key).into(), outcome);
        }
        if let Some(certificates) = &self.certificates {
            report.insert(
                "certificates".into(),
                reload_certificates(certificates).await,
            );
        }
        config_result?;
        self.apply_latest().await?;
        self.sync_canary().await;
        Ok(Value::Object(report))
    }

    /// Applies the store's current document if it has not been applied yet.
    async fn apply_latest(&self) -> Result<(), String> {
        let mut control = self.control.lock().await;
        let snapshot = self.store.load();
        let generation = snapshot.meta().generation;
        if control.generation == Some(generation) {
            return Ok(());
        }
        let effective = self.overrides.apply(snapshot.value());
        let result = self.apply(&mut control, effective).await;
        match &result {
            Ok(()) => {
                control.generation = Some(generation);
                *lock(&self.apply_error) = None;
            }
            Err(reason) => {
                metrics::counter!("ravelin_edge_apply_failures_total").increment(1);
                tracing::error!(%reason, "config accepted by validation but could not be applied; the previous one stays in force");
                *lock(&self.apply_error) = Some(reason.clone());
            }
        }
        result
    }

    async fn apply(&self, control: &mut Control, config: EdgeConfig) -> Result<(), String> {
        config
            .validate()
            .map_err(|v| format!("with command-line overrides: {v}"))?;
        let old = control.applied.clone();
        // What a document alone cannot answer: a list that had entries and would now be empty
        // (scenarios 4, 5, 24). Refused here, before anything is built: the config in force
        // stays, and the reason is `/status`'s apply_error and the reload's answer.
        if let Some(old) = &old {
            config
                .check_against(old)
                .map_err(|v| format!("refused against the config in force: {v}"))?;
        }
        if let Some(old) = &old {
            if old.server != config.server {
                tracing::warn!("[server] changed: takes effect at the next restart");
            }
            if old.overload != config.overload {
                tracing::warn!("[overload] changed: takes effect at the next restart");
            }
            if old.admin.listen != config.admin.listen {
                tracing::warn!("admin.listen changed: takes effect at the next restart");
            }
        }

        // Upstreams: with none configured, the embedded demo origin.
        let mut sections = config.upstreams.clone();
        if sections.is_empty() {
            if control.demo.is_none() {
                let handle = demo::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .map_err(|e| format!("cannot start the demo origin: {e}"))?;
                tracing::info!(url = %handle.url(), "no upstream configured: serving the embedded demo origin");
                control.demo = Some(handle);
            }
            if let Some(demo) = &control.demo {
                sections.push(demo_upstream(demo.url()));
            }
        } else if let Some(demo) = control.demo.take() {
            demo.shutdown().await;
        }

        let built = build(
            control,
            old.as_ref(),
            &config,
            &sections,
            &self.switchboard,
            &self.env,
        )?;

        // Everything is built: nothing below can fail, so the switch to the new config is whole.
        self.routes.store(Routes::new(built.routes));
        control.upstreams = built.upstreams;
        control.modules = built
            .modules
            .commit(old.as_ref(), &config, &self.switchboard);
        if self.admin_token.set(admin_token(&config)) {
            tracing::info!("admin token changed: the previous token no longer works");
        }
        self.rollouts.set_rate(config.rollout.samples_per_second);
        if self.store.rollout_policy() != config.rollout.config
            && let Err(violations) = self.store.set_rollout(config.rollout.config.clone())
        {
            // Validation refuses such a policy first; kept as it was if it ever gets here.
            tracing::error!(%violations, "rollout.config: the main config's rollout policy stays");
        }
        self.rollouts
            .set_resolver(crate::ratelimit::client_resolver(&config));
        control.applied = Some(config);
        self.install_stack(control, built.ingress);
        Ok(())
    }

    /// Assembles the stack from the running modules (the registry's order) and swaps it in;
    /// `/status`, reloads and purges follow the same modules.
    fn install_stack(&self, control: &Control, ingress: IngressConfig) {
        // `assemble` takes the slots innermost first.
        let running: Vec<&dyn Module> = control.running().collect();
        self.stack.store(Arc::new(assemble(
            self.routes.clone(),
            ingress,
            self.slots(&running),
        )));
        *lock(&self.statuses) = running
            .iter()
            .map(|m| Arc::<dyn Module>::from(m.clone_module()))
            .collect();
        let followed: Vec<FollowedFile> = running.iter().filter_map(|m| m.followed()).collect();
        // The documents that can be rolled out: the main config and the modules' files.
        let main: Arc<dyn Followed> = Arc::new(self.store.clone());
        self.rollouts.set_stores(
            std::iter::once(main)
                .chain(followed.iter().map(|(_, f)| Arc::clone(f)))
                .collect(),
        );
        *lock(&self.followed) = followed;
        *lock(&self.purger) = running.iter().find_map(|m| m.purger());
    }

    /// The slots of a stack running `modules` (outermost first), innermost first as
    /// [`assemble`] takes them: the rollout marker under every guard (above the cache, the one
    /// module that is not a guard and the innermost), the observer above them all (issue 15).
    fn slots(&self, modules: &[&dyn Module]) -> Vec<Slot<Incoming>> {
        let mut slots: Vec<Slot<Incoming>> = Vec::with_capacity(modules.len() + 2);
        let mut marked = false;
        for module in modules.iter().rev() {
            if !marked && module.name() != crate::cache::NAME {
                slots.push(Box::new(crate::rollout::marker));
                marked = true;
            }
            slots.extend(module.slot());
        }
        if !marked {
            slots.push(Box::new(crate::rollout::marker));
        }
        let rollouts = Arc::clone(&self.rollouts);
        slots.push(Box::new(move |inner| {
            crate::rollout::observer(rollouts, inner)
        }));
        slots
    }

    /// Builds or drops the stack of the main config's canary clients, as the store's rollout
    /// says: built when a candidate goes under canary, dropped when its rollout ends (a promoted
    /// config is then applied as every config is). A candidate whose stack cannot be built is
    /// aborted with the reason: it never serves anyone.
    async fn sync_canary(&self) {
        let candidate = self.store.candidate();
        let id = self.store.rollout_id();
        let current = self.canary.load_full();
        let (Some(candidate), Some(id)) = (candidate, id) else {
            if current.is_some() {
                self.canary.store(None);
            }
            return;
        };
        if current.is_some_and(|stack| stack.rollout == id) {
            return;
        }
        let control = self.control.lock().await;
        // The rollout may have ended or been superseded while the lock was awaited: the next
        // call sees the one in progress then.
        if self.store.rollout_id() != Some(id) {
            return;
        }
        match self.build_canary(&control, candidate.value()) {
            Ok(service) => {
                tracing::info!(
                    version = ?candidate.meta().version,
                    digest = %candidate.meta().digest.short(),
                    "the main config's canary clients run on a stack built from the candidate"
                );
                self.canary.store(Some(Arc::new(CanaryStack {
                    rollout: id,
                    service,
                    store: self.store.clone(),
                    rollouts: Arc::clone(&self.rollouts),
                })));
            }
            Err(reason) => {
                self.canary.store(None);
                let _ = self.store.abort_rollout(
                    id,
                    format!("the canary's stack could not be built: {reason}"),
                );
            }
        }
    }

    /// The stack `candidate` builds, beside the running one: its routes and upstreams (pools
    /// shared where a section is unchanged) and every enabled module updated on a copy (state
    /// shared where its settings are unchanged), nothing made live — no kill switch set from
    /// the document, no watcher started, no file persisted.
    fn build_canary(
        &self,
        control: &Control,
        candidate: &EdgeConfig,
    ) -> Result<EdgeService<Incoming>, String> {
        let config = self.overrides.apply(candidate);
        let mut sections = config.upstreams.clone();
        if sections.is_empty() {
            let demo = control
                .demo
                .as_ref()
                .ok_or("it asks for the demo origin, which is not running")?;
            sections.push(demo_upstream(demo.url()));
        }
        let env = ModuleEnv {
            rollouts: self.env.rollouts.clone(),
            state_dir: None,
            live: false,
        };
        let built = build(
            control,
            control.applied.as_ref(),
            &config,
            &sections,
            &self.switchboard,
            &env,
        )?;
        let modules = built.modules.uncommitted();
        Ok(assemble(
            SharedRoutes::new(Routes::new(built.routes)),
            built.ingress,
            self.slots(&modules),
        ))
    }

    fn admin(
        self: &Arc<Self>,
        config: &EdgeConfig,
        metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    ) -> Admin {
        if !self.admin_token.is_set() {
            tracing::warn!(
                variable = %config.admin.token_env,
                "no admin token: mutating admin endpoints are disabled"
            );
        }
        let mut builder = Admin::builder()
            .token_source(self.admin_token.clone())
            .allowed_hosts(config.admin.allowed_hosts.iter().cloned())
            .switchboard(self.switchboard.clone());
        if let Some(render) = metrics {
            builder = builder.metrics(move || render());
        }
        let edge = Arc::clone(self);
        builder = builder.ready(move || {
            if let Some(reason) = lock(&edge.serve_failure).clone() {
                Err(reason)
            } else if edge.draining.load(Ordering::Relaxed) {
                Err("shutting down".into())
            } else {
                Ok(())
            }
        });
        let edge = Arc::clone(self);
        builder = builder.degraded(move || {
            use ravelin_proxy::admin::degraded_reason;
            let mut reasons: Vec<String> = Vec::new();
            reasons.extend(degraded_reason(&edge.store.status()));
            if let Some(error) = lock(&edge.apply_error).clone() {
                reasons.push(format!(
                    "edge-proxy serves the previous config: the latest could not be applied ({error})"
                ));
            }
            for (_, file) in lock(&edge.followed).iter() {
                reasons.extend(degraded_reason(&file.status()));
            }
            if let Some(certificates) = &edge.certificates {
                for certificate in certificates.status() {
                    if certificate.active.is_none() {
                        let why = certificate
                            .last_rejection
                            .map(|record| record.rejection.to_string())
                            .unwrap_or_default();
                        reasons.push(format!(
                            "tls certificate {} is not served ({why})",
                            certificate.label
                        ));
                    }
                }
            }
            reasons
        });
        let edge = Arc::clone(self);
        builder = builder.command("demo-outage", move |query| {
            let edge = Arc::clone(&edge);
            Box::pin(async move {
                let on = query
                    .as_deref()
                    .unwrap_or("")
                    .split('&')
                    .any(|p| p == "on=1" || p == "on=true");
                let control = edge.control.lock().await;
                let Some(demo) = &control.demo else {
                    return Err("the demo origin is not running (an upstream is configured)".into());
                };
                demo.origin().set_outage(on);
                tracing::info!(on, "admin: demo origin outage switched");
                Ok(json!({ "demo_outage": on }))
            })
        });
        for (command, promote) in [("rollout-promote", true), ("rollout-abort", false)] {
            let edge = Arc::clone(self);
            builder = builder.command(command, move |query| {
                let edge = Arc::clone(&edge);
                Box::pin(async move { edge.drive_rollout(query.as_deref(), promote) })
            });
        }
        let store = self.store.clone();
        builder = builder.config_status(move || store.status());
        let edge = Arc::clone(self);
        builder = builder.status_extra("feature_files", move || {
            let followed = lock(&edge.followed).clone();
            Value::Array(
                followed
                    .iter()
                    .map(|(_, file)| ravelin_proxy::admin::config_status_json(&file.status()))
                    .collect(),
            )
        });
        let edge = Arc::clone(self);
        builder = builder.status_extra("certificates", move || {
            edge.certificates
                .as_ref()
                .map_or(Value::Null, certificates_status_json)
        });
        let edge = Arc::clone(self);
        builder = builder.status_extra("apply_error", move || json!(*lock(&edge.apply_error)));
        let edge = Arc::clone(self);
        builder = builder.modules(move || {
            let modules = lock(&edge.statuses).clone();
            modules.iter().filter_map(|m| m.status()).collect()
        });
        let edge = Arc::clone(self);
        builder = builder.on_reload(move || {
            let edge = Arc::clone(&edge);
            Box::pin(async move { edge.reload().await })
        });
        let edge = Arc::clone(self);
        builder = builder.on_purge(move |purge| {
            let purger = lock(&edge.purger).clone();
            Box::pin(async move {
                match purger {
                    Some(purge_fn) => purge_fn(purge),
                    None => Err("the cache is not enabled".into()),
                }
            })
        });
        builder.build()
    }
}

impl Edge {
    /// `POST /commands/rollout-promote?store=bot-features` and `…/rollout-abort?store=…&reason=…`:
    /// ends a rollout by hand.
    fn drive_rollout(&self, query: Option<&str>, promote: bool) -> Result<Value, String> {
        let mut name = None;
        let mut reason = "aborted by hand".to_owned();
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("store", value)) => name = Some(value.to_owned()),
                Some(("reason", value)) if !value.is_empty() => {
                    reason = format!("aborted by hand: {}", form_decode(value));
                }
                _ => {}
            }
        }
        let stores = self.rollouts.stores();
        let names: Vec<&str> = stores.iter().map(|s| s.store_name()).collect();
        let Some(name) = name else {
            return Err(format!("name the store: ?store=<name> (one of {names:?})"));
        };
        let Some(store) = stores.iter().find(|s| s.store_name() == name) else {
            return Err(format!("no store {name:?} (stores: {names:?})"));
        };
        let end = if promote {
            store.promote()?
        } else {
            store.abort(reason)?
        };
        tracing::info!(store = %name, end = end.as_str(), "admin: rollout ended by hand");
        Ok(json!({ "store": name, "end": end.as_str(), "reason": end.reason() }))
    }
}

/// A query value as a form encodes it (`+` a space, `%XX` a byte), lossy where the bytes are
/// not UTF-8, at most 256 bytes: an operator's reason, for a log line and `/status`.
fn form_decode(value: &str) -> String {
    let mut bytes = Vec::with_capacity(value.len().min(256));
    let mut rest = value.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if bytes.len() >= 256 {
            break;
        }
        match first {
            b'+' => {
                bytes.push(b' ');
                rest = tail;
            }
            b'%' => {
                let hex = tail
                    .get(..2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        bytes.push(byte);
                        rest = tail.get(2..).unwrap_or_default();
                    }
                    None => {
                        bytes.push(b'%');
                        rest = tail;
                    }
                }
            }
            other => {
                bytes.push(other);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Re-reads every certificate's files (off the async threads: file reads and signature
/// checks), one outcome per certificate in configuration order.
async fn reload_certificates(certificates: &CertificateSet) -> Value {
    let set = certificates.clone();
    let outcomes = tokio::task::spawn_blocking(move || set.reload())
        .await
        .unwrap_or_default();
    Value::Array(
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(outcome) => json!(outcome.as_str()),
                Err(rejection) => json!({ "rejected": rejection.to_string() }),
            })
            .collect(),
    )
}

/// `/status` → `certificates`: each certificate's files, what is served, its expiry and its
/// last rejection.
fn certificates_status_json(certificates: &CertificateSet) -> Value {
    let unix = |at: std::time::SystemTime| {
        at.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    };
    Value::Array(
        certificates
            .status()
            .into_iter()
            .map(|status| {
                json!({
                    "label": status.label,
                    "files": status.files,
                    "configured_names": status.configured_names,
                    "active": status.active.map(|active| json!({
                        "subject": active.subject,
                        "server_names": active.server_names,
                        "dns_names": active.dns_names,
                        "not_after_unix": unix(active.not_after),
                        "seconds_to_expiry": active.seconds_to_expiry,
                        "loaded_at_unix": unix(active.loaded_at),
                    })),
                    "consecutive_rejections": status.consecutive_rejections,
                    "last_rejection": status.last_rejection.map(|record| json!({
                        "reason": record.rejection.to_string(),
                        "at_unix": unix(record.at),
                    })),
                })
            })
            .collect(),
    )
}

/// The demo origin as an upstream.
fn demo_upstream(url: String) -> UpstreamSection {
    UpstreamSection {
        name: "demo".into(),
        url,
        http2: false,
        preserve_host: false,
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(35),
        max_idle_connections: 64,
        body_idle_timeout: Duration::from_secs(60),
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        tls_server_name: None,
        upgrade_idle_timeout: ravelin_proxy::UpstreamBuilder::DEFAULT_UPGRADE_IDLE_TIMEOUT,
        max_upgraded_connections: ravelin_proxy::UpstreamBuilder::DEFAULT_MAX_UPGRADED_CONNECTIONS,
        health: Default::default(),
        retry: Default::default(),
        dns: Default::default(),
    }
}

/// Builds everything `config` needs — the server limits, the ingress stage, the upstreams
/// (`sections`; the pool of every unchanged one is kept) and routes, and every module of
/// `control` (updated copies) — without changing anything that runs. Applying a document and
/// [`try_build`] both go through here.
fn build(
    control: &Control,
    previous: Option<&EdgeConfig>,
    config: &EdgeConfig,
    sections: &[UpstreamSection],
    switchboard: &Switchboard,
    env: &ModuleEnv,
) -> Result<Built, String> {
    // The limits the listener is bound with (`Server::bind` refuses the same).
    server_config(config).check().map_err(|e| {
        let (path, message) = crate::config::server_violation(e);
        format!("{path}: {message}")
    })?;
    let ingress = ingress_config(config)?;

    let mut upstreams = HashMap::new();
    for (i, section) in sections.iter().enumerate() {
        let reuse = control
            .upstreams
            .get(&section.name)
            .filter(|(old, _)| old == section)
            .map(|(_, upstream)| upstream.clone());
        let upstream = match reuse {
            Some(upstream) => upstream,
            None => crate::config::upstream_builder(section)
                .build()
                .map_err(|e| {
                    crate::config::upstream_violations(&format!("upstreams[{i}]"), e).to_string()
                })?,
        };
        upstreams.insert(section.name.clone(), (section.clone(), upstream));
    }
    let mut routes = Vec::new();
    if config.routes.is_empty()
        && let Some(first) = sections.first().and_then(|s| upstreams.get(&s.name))
    {
        routes.push(Route::new("default", "/", Target::from(first.1.clone())));
    }
    for (i, route) in config.routes.iter().enumerate() {
        let Some((_, upstream)) = upstreams.get(&route.upstream) else {
            return Err(format!(
                "routes[{i}].upstream: unknown upstream {:?}",
                route.upstream
            ));
        };
        // A prefix or host that could never match is refused, not installed as a dead route.
        ravelin_http::PathPrefix::new(route.path_prefix.as_str())
            .map_err(|e| format!("routes[{i}].path_prefix: {e}"))?;
        let mut built = Route::new(
            route
                .name
                .clone()
                .unwrap_or_else(|| route.path_prefix.clone()),
            route.path_prefix.clone(),
            Target {
                upstream: upstream.clone(),
                response_timeout: route.response_timeout,
            },
        );
        if let Some(host) = &route.host {
            crate::config::route_host(host).map_err(|e| format!("routes[{i}].host: {e}"))?;
            built = built.host(host.clone());
        }
        routes.push(built);
    }

    // Modules: each keeps its state (limiter buckets, cache entries, bot model) and rebuilds
    // its layer only when its settings changed.
    let modules = update_all(&control.modules, previous, config, switchboard, env)?;
    Ok(Built {
        upstreams,
        routes,
        ingress,
        modules,
    })
}

/// Builds everything applying `config` builds — the server limits, the ingress stage, the
/// upstreams and routes, and every enabled module's layer through the modules' own builders —
/// then drops it: nothing is bound, served, installed or followed, and `config` is **not**
/// validated first. It is how the edge's tests hold [`check_config`] to the build path (every
/// document the build refuses, `--check` must refuse, naming the field), and how an embedder can
/// see the build's own words for a document.
///
/// Call it inside a Tokio runtime: a Redis store starts its connection task as it is built.
///
/// # Errors
/// The first thing that could not be built.
pub fn try_build(config: &EdgeConfig) -> Result<(), String> {
    let control = Control::new(registry(None));
    let mut sections = config.upstreams.clone();
    if sections.is_empty() {
        // What applying starts instead: the demo origin on a loopback port.
        sections.push(demo_upstream("http://127.0.0.1:9".into()));
    }
    build(
        &control,
        None,
        config,
        &sections,
        &Switchboard::new(),
        &ModuleEnv::default(),
    )?;
    // The TLS listener's parts, as `start` builds them: the certificates (read and checked),
    // the acceptor's bounds, the JA4 header.
    if let (Some(tls), Some(certificates)) = (&config.tls, load_certificates(config)?) {
        TlsAcceptor::new(Arc::new(certificates), tls.acceptor_config())
            .map_err(|e| format!("tls: {e}"))?;
        tls.ja4_header_name()
            .map_err(|e| format!("tls.ja4_header: {e}"))?;
    }
    Ok(())
}

/// Where a config document comes from, for [`check_config`].
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file on disk.
    File(PathBuf),
    /// Text (the built-in example).
    Text(String),
}

/// The gate `--check` runs: the same store (size cap, parse, [`Validate`], which builds every
/// module's configuration exactly as applying it would) as startup and reload, then the
/// command-line overrides, then `[tls]`'s certificate files as startup loads them. A document
/// this accepts is one the running proxy applies.
///
/// # Errors
/// Every violation, as one message.
pub fn check_config(source: ConfigSource, overrides: &Overrides) -> Result<EdgeConfig, String> {
    let builder = Store::<EdgeConfig>::builder("edge-proxy")
        .format(Format::Toml)
        .max_bytes(MAX_CONFIG_BYTES);
    // `[reload]`'s store settings as start applies them, the persisted last good config read
    // but never written: the file is judged against it as a restart (and the running proxy,
    // which holds the same document) would judge it.
    let builder = match source {
        ConfigSource::File(path) => {
            crate::config::ReloadSection::peek_file(&path, MAX_CONFIG_BYTES)
                .overridden(overrides)
                .configure(builder)
                .file(path)
        }
        ConfigSource::Text(text) => crate::config::ReloadSection::peek(text.as_bytes())
            .overridden(overrides)
            .configure(builder)
            .initial_bytes(text.into_bytes(), "built-in"),
    }
    .persist(false);
    let store = builder.build().map_err(|rejection| rejection.to_string())?;
    // Started from the persisted copy: the file itself was refused, and so is it here.
    if let Some(record) = store.last_rejection() {
        return Err(record.rejection.to_string());
    }
    let effective = overrides.apply(store.current().value());
    effective
        .validate()
        .map_err(|v| format!("with command-line overrides: {v}"))?;
    // The certificate files, read and checked as startup reads them: a config whose
    // certificates cannot serve is refused here, not at the next restart.
    load_certificates(&effective)?;
    Ok(effective)
}

/// The ingress stage a config asks for: case folding, trusted proxies, the header limit, and
/// every header the edge owns — the bot scorer's under their default and configured names
/// whether scoring is on or off, so a client can never hand the origin a score, and with
/// `[tls]` the JA4 header — and the headers only a trusted proxy may send (the rate limiter's
/// client-IP header, the bot scorer's `fingerprint_header`).
///
/// # Errors
/// A trusted proxy that is not a network.
pub(crate) fn ingress_config(config: &EdgeConfig) -> Result<IngressConfig, String> {
    let mut ingress = IngressConfig::new()
        .fold_case(config.ingress.fold_case)
        .trusted_proxies(config.ingress.trusted_networks()?)
        .max_headers(config.server.max_headers)
        .owned_header(ravelin_botscore::DEFAULT_SCORE_HEADER)
        .owned_header(ravelin_botscore::DEFAULT_REASONS_HEADER)
        .owned_header(ravelin_botscore::DEFAULT_VERIFIED_HEADER);
    let bot = &config.botscore;
    let configured = [
        Some(bot.score_header.as_str()),
        bot.reasons_header.as_deref(),
        Some(bot.verified_header.as_str()).filter(|name| !name.is_empty()),
    ];
    for name in configured.into_iter().flatten() {
        if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
            ingress = ingress.owned_header(name);
        }
    }
    // What a proxy in front tells the edge and the modules believe from it is that proxy's to
    // say: a client-IP header of its own for the rate limiter, a JA4 computed by a TLS
    // terminator in front for the bot scorer. Kept from `[ingress] trusted_proxies`, removed from
    // everyone else, the origin behind included. Only once those proxies are named: before, the
    // edge cannot tell them from clients and keeps both headers as it always did (a deployment
    // reachable only through its terminator loses nothing). The client-IP header only where the
    // rate limiter trusts the same proxies (its own list empty, or equal): one that trusts others
    // reads the header from peers ingress would strip it from.
    let rules = config.ratelimit.rules_document();
    let named = &config.ingress.trusted_proxies;
    let limiter_trusts_the_same =
        rules.client_ip.trusted_proxies.is_empty() || rules.client_ip.trusted_proxies == *named;
    let proxy_said = [
        Some(rules.client_ip.header.as_str()).filter(|_| limiter_trusts_the_same),
        bot.fingerprint_header.as_deref(),
    ];
    for name in proxy_said
        .into_iter()
        .flatten()
        .filter(|_| !named.is_empty())
    {
        if let Ok(name) = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            && !ravelin_proxy::headers::FORWARDING_HEADERS.contains(&name)
        {
            ingress = ingress.proxy_header(name);
        }
    }
    // With TLS, the JA4 header is the edge's: a client's own is removed (under the default name
    // too, even when forwarding is off: an origin may have trusted it) and, when forwarded, it
    // is set by the ingress stage from the handshake, where `Connection` cannot remove it.
    if let Some(tls) = &config.tls {
        ingress = ingress.owned_header(http::HeaderName::from_static(
            ravelin_proxy::tls::DEFAULT_JA4_HEADER,
        ));
        if let Some(name) = tls
            .ja4_header_name()
            .map_err(|e| format!("tls.ja4_header: {e}"))?
        {
            ingress = ingress.ja4_header(name);
        }
    }
    Ok(ingress)
}

/// The admin token a config names: `admin.token`, else the variable `admin.token_env` names.
fn admin_token(config: &EdgeConfig) -> Option<String> {
    config
        .admin
        .token
        .clone()
        .or_else(|| std::env::var(&config.admin.token_env).ok())
        .filter(|t| !t.is_empty())
}

/// Why the proxy did not start.
#[derive(Debug)]
pub enum StartError {
    /// The config file was rejected.
    Config(String),
    /// A listener could not be bound.
    Bind(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(reason) => write!(f, "invalid configuration: {reason}"),
            StartError::Bind(reason) => write!(f, "cannot listen: {reason}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A started proxy: its addresses, its shared state, and how to stop it.
pub struct Running {
    /// Where the proxy listens: the plaintext listener (`[server] listen`), or the TLS
    /// listener when `[tls] plaintext = "off"`.
    pub proxy_addr: SocketAddr,
    /// Where the TLS listener listens, when `[tls]` is configured.
    pub tls_addr: Option<SocketAddr>,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// The shared state.
    pub edge: Arc<Edge>,
    stop: watch::Sender<bool>,
    proxy: JoinHandle<ServeSummary>,
    /// Aborts the inner serve task (tests simulate its death with it).
    serve_abort: tokio::task::AbortHandle,
    /// Becomes `Some(reason)` when the serve task ended before shutdown.
    serve_failed: watch::Receiver<Option<String>>,
    admin: JoinHandle<ServeSummary>,
    background: Vec<JoinHandle<()>>,
    _watch: Option<ravelin_config::WatchHandle>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("proxy_addr", &self.proxy_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Waits for `signal`, then shuts down (drain, then stop). If the proxy's serve task ends
    /// by itself first (it panicked or returned), shuts down at once and returns the reason:
    /// a supervisor then restarts the process instead of leaving a listener that answers
    /// nothing.
    ///
    /// # Errors
    /// Why the serve task ended.
    pub async fn run_until(
        mut self,
        signal: impl Future<Output = ()>,
    ) -> Result<ServeSummary, String> {
        let failed = tokio::select! {
            () = signal => None,
            reason = serve_failure(&mut self.serve_failed) => Some(reason),
        };
        let summary = self.shutdown().await;
        match failed {
            Some(reason) => Err(reason),
            None => Ok(summary),
        }
    }

    /// Kills the proxy's serve task as a crash would (tests of the supervision).
    pub fn abort_serve_task(&self) {
        self.serve_abort.abort();
    }

    /// Stops accepting, drains in-flight requests up to the configured deadline, and stops
    /// every background task.
    pub async fn shutdown(self) -> ServeSummary {
        self.edge.draining.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let summary = self.proxy.await.unwrap_or(ServeSummary {
            connections: 0,
            forced_closed: 0,
        });
        let _ = self.admin.await;
        for task in &self.background {
            task.abort();
        }
        let mut control = self.edge.control.lock().await;
        if let Some(demo) = control.demo.take() {
            demo.shutdown().await;
        }
        for entry in &mut control.modules {
            entry.module.stop(Stop::Shutdown);
        }
        *lock(&self.edge.followed) = Vec::new();
        summary
    }
}

/// Completes with the reason once the serve task has failed.
async fn serve_failure(rx: &mut watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(reason) = rx.borrow_and_update().clone() {
            return reason;
        }
        if rx.changed().await.is_err() {
            // The supervisor is gone without a verdict: only at shutdown.
            return std::future::pending().await;
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Loads the config, builds the stack, binds both listeners and starts serving.
///
/// # Errors
/// [`StartError`] with the reason: an invalid config (FailFast: the proxy never runs on a
/// guess), or a listener that cannot be bound.
pub async fn start(options: EdgeOptions) -> Result<Running, StartError> {
    let mut builder = Store::<EdgeConfig>::builder("edge-proxy")
        .format(Format::Toml)
        .max_bytes(MAX_CONFIG_BYTES);
    // `[reload] state_dir` and `max_growth`, read from the file before the store judges it, so
    // that a rejected file still finds the persisted last good config (applied at start).
    builder = match (&options.config_path, &options.config_text) {
        (Some(path), _) => crate::config::ReloadSection::peek_file(path, MAX_CONFIG_BYTES)
            .overridden(&options.overrides)
            .configure(builder)
            .file(path.clone()),
        (None, Some(text)) => crate::config::ReloadSection::peek(text.as_bytes())
            .overridden(&options.overrides)
            .configure(builder)
            .initial_bytes(text.clone().into_bytes(), "built-in"),
        (None, None) => crate::config::ReloadSection::default()
            .overridden(&options.overrides)
            .configure(builder)
            .initial_bytes(
                Vec::<u8>::from(&b"[demo]\nenabled = true\n"[..]),
                "built-in",
            ),
    };
    // The pre-activation check of every new main config, against the one in force (issue 15):
    // the document with the command-line overrides, lists not emptied, and the rate-limit
    // rules' effect on the request sample. Refused here, the file is a rejection like any
    // other: never installed, never persisted.
    // The main config names its own canary ([rollout.config]); at a restart the persisted
    // copy's setting decides, so a changed file goes through the canary it asked for.
    builder = builder.rollout_from(|config: &EdgeConfig| config.rollout.config.clone());
    let sample_cell: Arc<std::sync::OnceLock<Arc<Rollouts>>> = Arc::default();
    let overrides = options.overrides.clone();
    let cell = Arc::clone(&sample_cell);
    builder = builder.check(move |active: &EdgeConfig, candidate: &EdgeConfig| {
        let active = overrides.apply(active);
        let candidate = overrides.apply(candidate);
        candidate
            .validate()
            .map_err(|v| format!("with command-line overrides: {v}"))?;
        candidate
            .check_against(&active)
            .map_err(|v| format!("against the config in force: {v}"))?;
        // The judge is the config in force, not the candidate: a file cannot switch off or
        // loosen its own check.
        if active.rollout.ratelimit_check
            && let Some(rollouts) = cell.get()
        {
            crate::ratelimit::check_effect(&active, &candidate, rollouts)?;
        }
        Ok(())
    });
    let store = builder
        .build()
        .map_err(|r| StartError::Config(r.to_string()))?;
    let effective = options.overrides.apply(store.current().value());
    effective
        .validate()
        .map_err(|v| StartError::Config(format!("with command-line overrides: {v}")))?;
    let certificates = load_certificates(&effective).map_err(StartError::Config)?;

    let rollouts = Arc::new(Rollouts::new(
        effective.rollout.sample_capacity,
        effective.rollout.samples_per_second,
    ));
    // Set once, before any reload can run the check that reads it.
    let _ = sample_cell.set(Arc::clone(&rollouts));
    let state_dir = store
        .persisted_path()
        .and_then(|path| path.parent().map(std::path::Path::to_path_buf));
    let switchboard = Switchboard::new();
    let placeholder = assemble::<Incoming>(
        SharedRoutes::new(Routes::default()),
        IngressConfig::new(),
        Vec::new(),
    );
    let edge = Arc::new(Edge {
        store: store.clone(),
        overrides: options.overrides.clone(),
        switchboard,
        routes: SharedRoutes::new(Routes::default()),
        stack: Arc::new(ArcSwap::from_pointee(placeholder)),
        canary: SharedCanary::default(),
        control: tokio::sync::Mutex::new(Control::new(registry(options.extra_guard.as_ref()))),
        statuses: Mutex::new(Vec::new()),
        followed: Mutex::new(Vec::new()),
        purger: Mutex::new(None),
        apply_error: Mutex::new(None),
        draining: AtomicBool::new(false),
        admin_token: AdminToken::new(admin_token(&effective)),
        serve_failure: Mutex::new(None),
        certificates,
        rollouts: Arc::clone(&rollouts),
        env: ModuleEnv {
            rollouts: Some(Arc::clone(&rollouts)),
            state_dir: state_dir.clone(),
            live: true,
        },
    });
    edge.apply_latest().await.map_err(StartError::Config)?;

    let server_config = server_config(&effective);
    let plaintext = effective
        .tls
        .as_ref()
        .map_or(PlaintextMode::Serve, |tls| tls.plaintext);
    let proxy = if plaintext == PlaintextMode::Off {
        None
    } else {
        Some(
            Server::bind(effective.server.listen, server_config.clone())
                .await
                .map_err(|e| StartError::Bind(e.to_string()))?,
        )
    };
    let tls_server = match (&effective.tls, &edge.certificates) {
        (Some(section), Some(certificates)) => {
            let acceptor =
                TlsAcceptor::new(Arc::new(certificates.clone()), section.acceptor_config())
                    .map_err(|e| StartError::Config(format!("tls: {e}")))?;
            let server = Server::bind(section.listen, server_config)
                .await
                .map_err(|e| StartError::Bind(e.to_string()))?;
            Some(server.tls(acceptor))
        }
        _ => None,
    };
    let admin_server = Server::bind(
        effective.admin.listen,
        // Its own small server: a flood on the data plane cannot take these slots, and silent or
        // idle sockets here are closed within seconds, so operators always get in.
        ServerConfig::default()
            .max_connections(64)
            .max_connections_per_ip(16)
            .request_head_timeout(Duration::from_secs(5))
            .header_read_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(15))
            .shutdown_timeout(Duration::from_secs(2)),
    )
    .await
    .map_err(|e| StartError::Bind(e.to_string()))?;
    let proxy_loops = proxy
        .as_ref()
        .or(tls_server.as_ref())
        .map_or(0, Server::accept_loops);
    let tls_addr = tls_server
        .as_ref()
        .map(Server::local_addr)
        .transpose()
        .map_err(|e| StartError::Bind(e.to_string()))?;
    let plaintext_addr = proxy
        .as_ref()
        .map(Server::local_addr)
        .transpose()
        .map_err(|e| StartError::Bind(e.to_string()))?;
    let Some(proxy_addr) = plaintext_addr.or(tls_addr) else {
        // Validation refuses `plaintext = "off"` without a `[tls]` section to serve instead.
        return Err(StartError::Config(
            "no listener: [tls] plaintext = \"off\" needs a [tls] section".into(),
        ));
    };
    let admin_addr = admin_server
        .local_addr()
        .map_err(|e| StartError::Bind(e.to_string()))?;

    let (stop, stop_rx) = watch::channel(false);
    // Load shedding is outermost and outside the swapped stack: its one count of requests in
    // flight spans reloads (a reload that changes `[overload]` warns; it applies at restart).
    let handler = tower::Layer::layer(
        &ravelin_proxy::LoadShedLayer::new(&effective.overload),
        EdgeHandler::new(Arc::clone(&edge.stack), Arc::clone(&edge.canary)),
    );
    let mut listeners = JoinSet::new();
    if let Some(proxy) = proxy {
        if plaintext == PlaintextMode::Redirect {
            let tls_port = tls_addr.map_or(443, |addr| addr.port());
            let redirect = tower::ServiceBuilder::new()
                .layer(ravelin_proxy::IngressLayer::new(
                    ingress_config(&effective).map_err(StartError::Config)?,
                ))
                .service(ravelin_proxy::tls::HttpsRedirect::new(tls_port));
            listeners.spawn(proxy.serve(redirect, stopped(stop_rx.clone())));
        } else {
            listeners.spawn(proxy.serve(handler.clone(), stopped(stop_rx.clone())));
        }
    }
    if let Some(tls_server) = tls_server {
        listeners.spawn(tls_server.serve(handler, stopped(stop_rx.clone())));
    }
    // The serve task is supervised: if a listener ends while no shutdown was asked for (a
    // panic in an accept loop, an early return), the process reports not ready and
    // `run_until` returns the reason so the binary exits non-zero.
    let stopping = stop_rx.clone();
    let serve = tokio::spawn(async move {
        let mut total = ServeSummary {
            connections: 0,
            forced_closed: 0,
        };
        while let Some(joined) = listeners.join_next().await {
            match joined {
                Ok(summary) => {
                    total.connections = total.connections.saturating_add(summary.connections);
                    total.forced_closed = total.forced_closed.saturating_add(summary.forced_closed);
                    if !*stopping.borrow() {
                        return Err((
                            "the proxy listener stopped serving on its own".to_owned(),
                            total,
                        ));
                    }
                }
                Err(error) => {
                    let reason = if error.is_panic() {
                        "the proxy listener task panicked"
                    } else {
                        "the proxy listener task was cancelled"
                    };
                    return Err((reason.to_owned(), total));
                }
            }
        }
        Ok(total)
    });
    let serve_abort = serve.abort_handle();
    let (failed_tx, serve_failed) = watch::channel(None::<String>);
    let supervised = Arc::clone(&edge);
    let proxy_task = tokio::spawn(async move {
        let (summary, reason) = match serve.await {
            Ok(Ok(summary)) => (summary, None),
            Ok(Err((reason, summary))) => (summary, Some(reason)),
            Err(error) => (
                ServeSummary {
                    connections: 0,
                    forced_closed: 0,
                },
                Some(if error.is_panic() {
                    "the proxy listener task panicked".to_owned()
                } else {
                    "the proxy listener task was cancelled".to_owned()
                }),
            ),
        };
        if let Some(reason) = reason {
            metrics::counter!("ravelin_edge_serve_failures_total").increment(1);
            tracing::error!(%reason, "the proxy stopped serving; reporting not ready and exiting");
            *lock(&supervised.serve_failure) = Some(reason.clone());
            let _ = failed_tx.send(Some(reason));
        }
        summary
    });
    let admin = edge.admin(&effective, options.metrics.clone());
    let admin_task = tokio::spawn(admin_server.serve(admin, stopped(stop_rx)));

    // Reload: the file watcher installs new documents; this task applies them. SIGHUP and the
    // admin API call `Edge::reload`, which applies directly; applying twice is a no-op.
    let interval = effective.reload.watch_interval;
    let watch =
        (options.config_path.is_some() && !interval.is_zero()).then(|| store.watch(interval));
    let mut installs = store.subscribe();
    let applier = Arc::clone(&edge);
    let apply_task = tokio::spawn(async move {
        while installs.changed().await.is_ok() {
            let _ = applier.apply_latest().await;
            applier.sync_canary().await;
        }
    });
    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        runtime = effective.server.runtime.as_str(),
        accept_loops = proxy_loops,
        "edge-proxy started"
    );
    let mut background = vec![apply_task];
    // Rollouts advance on their own: promoted once baked, rolled back as soon as the canary
    // cohort does worse (checked every second; a promotion persists the file, so off the
    // async threads).
    let ticking = Arc::clone(&edge);
    background.push(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let rollouts = Arc::clone(&ticking.rollouts);
            let _ = tokio::task::spawn_blocking(move || rollouts.tick()).await;
            // A main config's canary begins when its file is polled and ends on a tick.
            ticking.sync_canary().await;
        }
    }));
    if let Some(certificates) = edge.certificates.clone() {
        // Certificates renewed on disk are picked up as the config file is: polled, each good
        // file installed, each bad one reported while the last good keeps serving. The
        // seconds-to-expiry gauges count down on the same timer (every 10 s without polling).
        let watching = !interval.is_zero();
        let period = if watching {
            interval
        } else {
            Duration::from_secs(10)
        };
        background.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if watching {
                    let set = certificates.clone();
                    let _ = tokio::task::spawn_blocking(move || set.poll()).await;
                }
                certificates.publish_expiry();
            }
        }));
    }
    Ok(Running {
        proxy_addr,
        tls_addr,
        admin_addr,
        edge,
        stop,
        proxy: proxy_task,
        serve_abort,
        serve_failed,
        admin: admin_task,
        background,
        _watch: watch,
    })
}

/// `[tls]`'s certificates, loaded as the TLS listener will serve them: at least one must load
/// (the others are reported in `/status` and retried on every reload).
///
/// # Errors
/// Why none can be served.
pub(crate) fn load_certificates(config: &EdgeConfig) -> Result<Option<CertificateSet>, String> {
    config
        .tls
        .as_ref()
        .map(|tls| {
            CertificateSet::load(&tls.certificates).map_err(|e| format!("tls.certificates: {e}"))
        })
        .transpose()
}

/// The server the proxy listener is bound with: its limits ([`server_limits`]) and what it
/// reads from `[overload]` (connections past the limit, `Retry-After`).
pub(crate) fn server_config(config: &EdgeConfig) -> ServerConfig {
    server_limits(config).overload(&config.overload)
}

/// The `[server]` limits alone (validation checks `[overload]` through its own type).
pub(crate) fn server_limits(config: &EdgeConfig) -> ServerConfig {
    let s = &config.server;
    ServerConfig::default()
        .max_connections(s.max_connections)
        .max_connections_per_ip(s.max_connections_per_ip)
        .max_headers(s.max_headers)
        .max_header_bytes(s.max_header_bytes)
        .header_read_timeout(s.header_read_timeout)
        .max_concurrent_streams(s.max_concurrent_streams)
        .shutdown_timeout(s.shutdown_timeout)
        .request_head_timeout(s.request_head_timeout)
        .idle_timeout(s.idle_timeout)
        .send_timeout(s.send_timeout)
        .http2_keep_alive_interval(s.http2_keep_alive_interval)
        .http2_keep_alive_timeout(s.http2_keep_alive_timeout)
        .per_ip_ipv4_prefix_len(s.per_ip_ipv4_prefix_len)
        .per_ip_ipv6_prefix_len(s.per_ip_ipv6_prefix_len)
        .runtime(s.runtime)
        .workers(s.workers)
}

#[cfg(test)]
mod tests {
    use super::form_decode;

    #[test]
    fn an_abort_reason_is_decoded_as_a_form_encodes_it() {
        assert_eq!(form_decode("looks+wrong"), "looks wrong");
        assert_eq!(
            form_decode("scores%3A+90%25+bots%2C+see+%23ops"),
            "scores: 90% bots, see #ops"
        );
        assert_eq!(form_decode("50%+off%zz%4"), "50% off%zz%4");
        assert_eq!(form_decode("caf%C3%A9"), "café");
        assert_eq!(form_decode("%FF"), "\u{fffd}");
        assert_eq!(form_decode(&"x".repeat(1000)).len(), 256);
    }
}
