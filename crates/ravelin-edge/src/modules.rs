//! The modules of the edge behind one small trait, and the one place their order in the stack is
//! written ([`registry`]).
//!
//! A module turns its config section into one layer of the stack, keeps its state across
//! reloads, and reports itself to `/status`. The runtime knows no module by name: it iterates
//! the registry to check a document, to apply it (update every module, then commit), to assemble
//! the stack, and to answer `/status`, reload and purge. Whether a module runs at all and its
//! kill switch come from `[modules.<name>]`, handled here once for every module.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use ravelin_config::{KillSwitch, Store, Switchboard, Violations};
use ravelin_failsafe::{Guard, GuardConfig, GuardHandle, GuardLayer};
use ravelin_proxy::{ModuleStatus, Purge};
use serde_json::Value;

use crate::config::EdgeConfig;
use crate::stack::{BoxGuard, EdgeService, Slot, layered};
use crate::{botscore, cache, ratelimit};

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// The purge entry point behind `POST /cache/purge`.
pub(crate) type PurgeFn =
    Arc<dyn Fn(Purge) -> Result<ravelin_proxy::admin::PurgeAnswer, String> + Send + Sync>;

/// What a module is given while a document is applied.
pub(crate) struct Apply<'a> {
    /// The document being applied (the file with the command-line overrides).
    pub(crate) config: &'a EdgeConfig,
    /// The document this module was last applied with, if it has been running since: `None` at
    /// startup and when the module was off. A module reuses its state only against it.
    pub(crate) previous: Option<&'a EdgeConfig>,
    /// The kill switches, by name (`[modules.<name>] killed`, `POST /modules/<name>/kill`). The
    /// runtime sets a module's from the document after every module updated; a module only wires
    /// its own in (a guard's `GuardLayer` finds it by the guard's name).
    pub(crate) switchboard: &'a Switchboard,
    /// What the running edge lends its modules (none in `try_build` and `--check`).
    pub(crate) env: &'a ModuleEnv,
}

/// What the running edge lends its modules beyond the document: the request sample of the
/// pre-activation checks and the state directory their files persist to.
#[derive(Debug, Default, Clone)]
pub(crate) struct ModuleEnv {
    /// The rollout state (sample, stores in rollout); `None` when building only to check.
    pub(crate) rollouts: Option<Arc<crate::rollout::Rollouts>>,
    /// Where followed files persist their last known good; `None`: nowhere.
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// Whether the update is for the stack in force (false for a canary's stack or a check):
    /// only then may a module change state it shares with the running one (a store's rollout
    /// policy).
    pub(crate) live: bool,
}

/// A file a module follows besides the main config (the bot feature file).
pub(crate) trait Followed: Send + Sync {
    /// For `/status` (`feature_files`).
    fn status(&self) -> ravelin_config::Status;

    /// Whether the module reads it from a file (else there is nothing to re-read).
    fn has_file(&self) -> bool;

    /// Re-reads it (`POST /config/reload`, SIGHUP): the outcome, or the rejection.
    fn reload(&self) -> BoxFuture<Result<&'static str, String>>;

    /// The store's name (`bot-features`), which the admin API's rollout commands take.
    fn store_name(&self) -> &str;

    /// Whether a candidate is under canary ([`ravelin_config::Store::in_rollout`]).
    fn in_rollout(&self) -> bool;

    /// The client's cohort in the rollout in progress ([`ravelin_config::Store::assignment`]).
    fn assignment(&self, key: ravelin_config::CohortKey) -> Option<ravelin_config::Assignment>;

    /// Files one request's outcome ([`ravelin_config::Store::observe`]).
    fn observe(
        &self,
        assignment: ravelin_config::Assignment,
        observation: &ravelin_config::Observation,
    );

    /// Promotes or rolls back when due ([`ravelin_config::Store::tick`]).
    fn tick(&self);

    /// Promotes the candidate by hand ([`ravelin_config::Store::promote`]).
    ///
    /// # Errors
    /// No rollout in progress.
    fn promote(&self) -> Result<ravelin_config::RolloutEnd, String>;

    /// Rolls the candidate back by hand ([`ravelin_config::Store::abort`]).
    ///
    /// # Errors
    /// No rollout in progress.
    fn abort(&self, reason: String) -> Result<ravelin_config::RolloutEnd, String>;
}

/// Every store is followed the same way: the bot feature file's, and the main config's for
/// its rollouts.
impl<T: ravelin_config::Document> Followed for Store<T> {
    fn status(&self) -> ravelin_config::Status {
        Store::status(self)
    }

    fn has_file(&self) -> bool {
        self.path().is_some()
    }

    fn store_name(&self) -> &str {
        self.name()
    }

    fn in_rollout(&self) -> bool {
        Store::in_rollout(self)
    }

    fn assignment(&self, key: ravelin_config::CohortKey) -> Option<ravelin_config::Assignment> {
        Store::assignment(self, key)
    }

    fn observe(
        &self,
        assignment: ravelin_config::Assignment,
        observation: &ravelin_config::Observation,
    ) {
        Store::observe(self, assignment, observation);
    }

    fn tick(&self) {
        let _ = Store::tick(self);
    }

    fn promote(&self) -> Result<ravelin_config::RolloutEnd, String> {
        Store::promote(self)
    }

    fn abort(&self, reason: String) -> Result<ravelin_config::RolloutEnd, String> {
        Store::abort(self, reason)
    }

    fn reload(&self) -> BoxFuture<Result<&'static str, String>> {
        let store = self.clone();
        Box::pin(async move {
            store
                .reload_async()
                .await
                .map(|outcome| outcome.as_str())
                .map_err(|rejection| rejection.to_string())
        })
    }
}

/// Why a module is [`stop`](Module::stop)ped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A reload switched the module off; the edge goes on serving.
    SwitchedOff,
    /// The edge is shutting down, its listeners closed and its requests drained.
    Shutdown,
}

/// One module of the edge.
///
/// Its life: [`check`](Self::check) is part of every document's validation (so `--check`
/// refuses what building refuses); on apply the runtime clones the running module, calls
/// [`update`](Self::update) on the copy (every module must succeed, or the copies are dropped
/// and nothing changes), then [`commit`](Self::commit) on each, and installs the new stack from
/// the [`slot`](Self::slot)s. A module switched off in `[modules.<name>]` is
/// [`stop`](Self::stop)ped instead, and left out of the stack and `/status`.
pub(crate) trait Module: Send + Sync + 'static {
    /// The module's name: its `[modules.<name>]` table, its kill switch (`POST
    /// /modules/<name>/kill`), its `/status` entry. A guard module's is its guard's own name
    /// (metric label and skip-header key).
    fn name(&self) -> &str;

    /// Every check that [`update`](Self::update) would refuse `config` for, as violations
    /// named by field path (`cache.max_object_bytes`). The module's section is checked whether
    /// or not the module is enabled, so switching it on cannot fail later.
    fn check(&self, config: &EdgeConfig, violations: &mut Violations);

    /// Brings the module to `apply.config`: builds its layer, keeping what survives the change
    /// (limiter buckets, cache entries, the bot model). Called on a copy of the running module;
    /// nothing that serving can see may change here — that is [`commit`](Self::commit)'s.
    ///
    /// # Errors
    /// What could not be built, naming the field where one is at fault.
    fn update(&mut self, apply: &Apply<'_>) -> Result<(), String>;

    /// Makes the updated module live: hands new rules to a running store, starts following a
    /// file. Called once every module updated; it cannot fail.
    fn commit(&mut self) {}

    /// Drops the module's state: it was switched off by a reload, or the edge is shutting down
    /// (`why`). Called on the control task: it must not wait on anything slow when switched off
    /// (the admin API and further reloads wait behind it).
    fn stop(&mut self, why: Stop);

    /// The module's layer as a slot of the stack (`None` before a successful update).
    fn slot(&self) -> Option<Slot<Incoming>>;

    /// The module's `/status` entry (`None` before a successful update).
    fn status(&self) -> Option<ModuleStatus>;

    /// A file the module follows besides the main config, with the key its reload outcome is
    /// reported under.
    fn followed(&self) -> Option<(&'static str, Arc<dyn Followed>)> {
        None
    }

    /// The purge entry point, if the module is a cache.
    fn purger(&self) -> Option<PurgeFn> {
        None
    }

    /// A copy sharing the module's state, to update (see [`update`](Self::update)).
    fn clone_module(&self) -> Box<dyn Module>;
}

/// The modules in stack order, **outermost first**: the one place the order is written.
///
/// ```text
/// ingress → request id → ratelimit → botscore → [extra guard] → cache → forward
/// ```
///
/// - **ratelimit** first: it is the cheapest refusal, and it must count every request — also
///   the ones the cache would answer and the ones the bot scorer would challenge — so a flood
///   is stopped before any other module spends work on it.
/// - **botscore** next: a blocked or challenged client is never served from the cache, and the
///   score reaches the origin on every miss.
/// - an **extra guard** (tests) after bot scoring, where a site's own checks would go.
/// - **cache** innermost, just before forwarding: only admitted requests are answered from it or
///   fill it.
pub(crate) fn registry(extra: Option<&ExtraGuard>) -> Vec<Box<dyn Module>> {
    let mut modules: Vec<Box<dyn Module>> = vec![
        Box::new(ratelimit::RateLimitModule::default()),
        Box::new(botscore::BotModule::default()),
    ];
    if let Some(extra) = extra {
        modules.push(Box::new(ExtraModule::new(extra)));
    }
    modules.push(Box::new(cache::CacheModule::default()));
    modules
}

/// The names a `[modules.<name>]` table may have: the registry's (an extra guard is not
/// configured from the file).
pub(crate) fn configurable_names() -> Vec<String> {
    registry(None)
        .iter()
        .map(|module| module.name().to_owned())
        .collect()
}

/// Every module's check of `config` (see [`Module::check`]).
pub(crate) fn check_all(config: &EdgeConfig, violations: &mut Violations) {
    for module in registry(None) {
        module.check(config, violations);
    }
}

// === running modules ===

/// A registered module and whether it runs.
pub(crate) struct Entry {
    /// The module.
    pub(crate) module: Box<dyn Module>,
    /// In the stack (its `[modules.<name>] enabled`, as last applied).
    pub(crate) on: bool,
}

impl Entry {
    /// A module not yet applied.
    pub(crate) fn new(module: Box<dyn Module>) -> Self {
        Self { module, on: false }
    }
}

/// The registry's modules brought to `config`, before anything is live.
pub(crate) struct Updated {
    entries: Vec<Entry>,
    /// Per entry: whether it ran under the previous document (for the kill switches).
    was_on: Vec<bool>,
}

/// Updates a copy of every module in `running` for `config` (see [`Module::update`]). Nothing
/// live changes: on an error the copies are dropped.
///
/// # Errors
/// The first module that could not be built.
pub(crate) fn update_all(
    running: &[Entry],
    previous: Option<&EdgeConfig>,
    config: &EdgeConfig,
    switchboard: &Switchboard,
    env: &ModuleEnv,
) -> Result<Updated, String> {
    let mut entries = Vec::with_capacity(running.len());
    let mut was_on = Vec::with_capacity(running.len());
    for entry in running {
        let mut module = entry.module.clone_module();
        let on = config.modules.get(module.name()).enabled;
        if on {
            module.update(&Apply {
                config,
                previous: previous.filter(|_| entry.on),
                switchboard,
                env,
            })?;
        }
        entries.push(Entry { module, on });
        was_on.push(entry.on && previous.is_some());
    }
    Ok(Updated { entries, was_on })
}

impl Updated {
    /// Makes the updated modules live: kill switches from `[modules.<name>] killed` (only where
    /// the value changed, so an operator's `POST /modules/{name}/kill` survives unrelated
    /// reloads), then [`Module::commit`] or [`Module::stop`].
    /// The updated modules that would run, outermost first, without making anything live
    /// (no kill switch set from the document, no watcher started): a canary stack's modules.
    pub(crate) fn uncommitted(&self) -> Vec<&dyn Module> {
        self.entries
            .iter()
            .filter(|entry| entry.on)
            .map(|entry| entry.module.as_ref())
            .collect()
    }

    pub(crate) fn commit(
        mut self,
        previous: Option<&EdgeConfig>,
        config: &EdgeConfig,
        switchboard: &Switchboard,
    ) -> Vec<Entry> {
        for (entry, was_on) in self.entries.iter_mut().zip(self.was_on) {
            let name = entry.module.name();
            let old = previous
                .filter(|_| was_on)
                .map(|p| p.modules.get(name).killed);
            apply_killed(
                &switchboard.switch(name),
                old,
                config.modules.get(name).killed,
            );
            if entry.on {
                entry.module.commit();
            } else {
                entry.module.stop(Stop::SwitchedOff);
            }
        }
        self.entries
    }
}

/// Sets a kill switch from the config when the config's value changed (or at startup), so an
/// operator's `POST /modules/{name}/kill` is not undone by an unrelated reload.
fn apply_killed(switch: &KillSwitch, old: Option<bool>, new: bool) {
    if old != Some(new) {
        switch.set(new, "config");
    }
}

// === guard modules ===

/// Wraps `guard` (a module under the name it gives itself) with the policy, timeout and breaker
/// of its `[<module>.guard]` (failsafe's own `GuardLayerBuilder::config`) and the kill switch of
/// that name.
///
/// # Errors
/// What the guard layer refuses, prefixed with the module's name.
pub(crate) fn guard_layer<G: Guard>(
    guard: G,
    config: &GuardConfig,
    switchboard: &Switchboard,
) -> Result<GuardLayer<G>, String> {
    let name = guard.name();
    GuardLayer::builder(guard)
        .config(config)
        .switchboard(switchboard)
        .build()
        .map_err(|e| format!("{name}.guard: {e}"))
}

/// A guard module's `/status` entry from its handle.
pub(crate) fn guard_status(handle: &GuardHandle, detail: Value) -> ModuleStatus {
    ModuleStatus {
        name: handle.name().to_owned(),
        failure_mode: handle.failure_mode(),
        timeout_ms: Some(u64::try_from(handle.timeout().as_millis()).unwrap_or(u64::MAX)),
        circuit: Some(handle.circuit_state()),
        killed: handle.is_killed(),
        detail,
    }
}

// === extra guard ===

/// An additional guard placed after bot scoring: how tests put a misbehaving module (one that
/// panics on every request) into the real stack.
#[derive(Clone, Debug)]
pub struct ExtraGuard {
    /// The guard; its own name ([`Guard::name`]) is the module's (kill switch, metrics label,
    /// `/status` entry, skip-header key).
    pub guard: BoxGuard,
    /// Its policy.
    pub policy: GuardConfig,
}

/// The extra guard as a module: always on, not configured from the file.
#[derive(Clone)]
pub(crate) struct ExtraModule {
    name: String,
    extra: ExtraGuard,
    layer: Option<GuardLayer<BoxGuard>>,
}

impl ExtraModule {
    fn new(extra: &ExtraGuard) -> Self {
        Self {
            name: extra.guard.name().into_owned(),
            extra: extra.clone(),
            layer: None,
        }
    }
}

impl Module for ExtraModule {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, _: &EdgeConfig, _: &mut Violations) {}

    /// Builds the layer once: its circuit breaker lives as long as the process.
    fn update(&mut self, apply: &Apply<'_>) -> Result<(), String> {
        if self.layer.is_none() {
            let guard = self.extra.guard.clone();
            self.layer = Some(guard_layer(guard, &self.extra.policy, apply.switchboard)?);
        }
        Ok(())
    }

    fn stop(&mut self, _: Stop) {
        self.layer = None;
    }

    fn slot(&self) -> Option<Slot<Incoming>> {
        let layer = self.layer.clone()?;
        Some(Box::new(move |inner: EdgeService<Incoming>| {
            layered(layer, inner)
        }))
    }

    fn status(&self) -> Option<ModuleStatus> {
        let layer = self.layer.as_ref()?;
        Some(guard_status(&layer.handle(), Value::Null))
    }

    fn clone_module(&self) -> Box<dyn Module> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModuleSwitch;
    use ravelin_failsafe::{GuardError, RequestHead, Verdict, guard_fn};

    fn extra(name: &'static str) -> ExtraGuard {
        ExtraGuard {
            guard: BoxGuard::new(guard_fn(
                name,
                |_: &RequestHead<'_>| -> Result<Verdict, GuardError> { Ok(Verdict::allow()) },
            )),
            policy: GuardConfig::default(),
        }
    }

    #[test]
    fn the_registry_is_the_stack_order() {
        let names = |modules: Vec<Box<dyn Module>>| {
            modules
                .iter()
                .map(|m| m.name().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(registry(None)),
            ["ratelimit", "botscore", "cache"],
            "outermost first"
        );
        assert_eq!(
            names(registry(Some(&extra("sitecheck")))),
            ["ratelimit", "botscore", "sitecheck", "cache"]
        );
        assert_eq!(configurable_names(), ["ratelimit", "botscore", "cache"]);
        // The guard modules' names are their guards' own.
        assert_eq!(ravelin_ratelimit::GUARD_NAME, "ratelimit");
        assert_eq!(ravelin_botscore::GUARD_NAME, "botscore");
    }

    #[tokio::test]
    async fn modules_follow_their_switches_and_a_failed_update_changes_nothing() {
        let switchboard = Switchboard::new();
        let running: Vec<Entry> = registry(None).into_iter().map(Entry::new).collect();
        let config: EdgeConfig =
            toml::from_str("[modules.cache]\nenabled = false\n[modules.botscore]\nkilled = true\n")
                .unwrap();
        let updated =
            update_all(&running, None, &config, &switchboard, &ModuleEnv::default()).unwrap();
        let running = updated.commit(None, &config, &switchboard);
        let on: Vec<_> = running
            .iter()
            .filter(|e| e.on)
            .map(|e| e.module.name().to_owned())
            .collect();
        assert_eq!(on, ["ratelimit", "botscore"]);
        assert!(switchboard.switch("botscore").is_engaged());
        assert!(!switchboard.switch("ratelimit").is_engaged());
        assert!(
            running
                .iter()
                .filter(|e| e.on)
                .all(|e| e.module.slot().is_some())
        );
        assert!(
            running
                .iter()
                .find(|e| !e.on)
                .is_some_and(|e| e.module.slot().is_none())
        );

        // An operator revives the bot scorer; an unrelated reload keeps it revived.
        switchboard.switch("botscore").set(false, "operator");
        let mut next = config.clone();
        next.version = Some(2);
        let updated = update_all(
            &running,
            Some(&config),
            &next,
            &switchboard,
            &ModuleEnv::default(),
        )
        .unwrap();
        let running = updated.commit(Some(&config), &next, &switchboard);
        assert!(!switchboard.switch("botscore").is_engaged());

        // A document one module refuses (checked nowhere before: the build path alone) leaves
        // the running modules and the switches as they were.
        let mut bad = next.clone();
        bad.cache.max_capacity_bytes = 0;
        bad.modules = Default::default();
        bad.modules.set(
            "botscore",
            ModuleSwitch {
                enabled: true,
                killed: true,
            },
        );
        assert!(
            update_all(
                &running,
                Some(&next),
                &bad,
                &switchboard,
                &ModuleEnv::default()
            )
            .is_err()
        );
        assert!(!switchboard.switch("botscore").is_engaged());
    }
}
