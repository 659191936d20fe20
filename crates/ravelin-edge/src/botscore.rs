//! The bot-score module: `ravelin-botscore`'s guard in its failure policy, scoring with the model
//! of a hot-reloaded feature file. `[botscore]` is the crate's own [`BotScoreConfig`].

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use ravelin_botscore::{BotGuard, BotScoreConfig, DEFAULT_MAX_FILE_BYTES, Model, Scorer};
use ravelin_config::{Format, Store, Validate, Violations, WatchHandle};
use ravelin_failsafe::GuardLayer;
use ravelin_proxy::ModuleStatus;
use serde_json::json;

use crate::config::EdgeConfig;
use crate::modules::{Apply, Followed, Module, Stop, guard_layer, guard_status};
use crate::stack::{EdgeService, Slot, layered};

/// The module name: the guard's own ([`ravelin_botscore::GUARD_NAME`]), which names its kill
/// switch, metric label and skip-header key.
pub(crate) const NAME: &str = ravelin_botscore::GUARD_NAME;

/// The bot module: the feature-file store (with its watcher) and the guard layer.
#[derive(Clone, Default)]
pub(crate) struct BotModule {
    state: Option<State>,
    /// The routes' kill switches (`botscore.route.<name>`) with the file's `killed` when it
    /// changed (or is new), set at commit: an operator's flip survives unrelated reloads.
    pending_switches: Vec<(String, bool)>,
    /// Where the routes' switches live (the edge's one switchboard).
    switchboard: Option<ravelin_config::Switchboard>,
}

#[derive(Clone)]
struct State {
    store: Store<Model>,
    /// Following the file (started at commit; shared by the copies of one running module).
    watch: Option<Arc<WatchHandle>>,
    /// How often the file is checked (`watch_interval`; zero: never).
    interval: Duration,
    layer: GuardLayer<BotGuard>,
    /// The pre-activation check's sample and bounds, as last applied (the store's check reads
    /// it, so a reload that changes `[rollout]` needs no new store).
    gate: Arc<std::sync::Mutex<Option<Gate>>>,
}

impl State {
    /// The rollout policy and check of the store in force, from a reloaded document.
    fn set_rollout(
        &self,
        policy: Option<ravelin_config::RolloutPolicy>,
        gate: Option<Gate>,
    ) -> Result<(), String> {
        self.store
            .set_rollout(policy)
            .map_err(|v| format!("rollout.bot_features: {v}"))?;
        *self
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = gate;
        Ok(())
    }
}

/// A new model's pre-activation check: scored on the sample beside the model in force.
#[derive(Clone)]
struct Gate {
    sample: Arc<ravelin_botscore::effect::RequestSample>,
    bounds: ravelin_botscore::effect::EffectBounds,
}

/// The check `apply` asks for, when the edge lends a sample and `[rollout] bot_check` is on.
fn gate(apply: &Apply<'_>) -> Option<Gate> {
    let rollout = &apply.config.rollout;
    let rollouts = apply.env.rollouts.as_ref()?;
    rollout.bot_check.then(|| Gate {
        sample: Arc::clone(&rollouts.bot_sample),
        bounds: rollout.bot_bounds,
    })
}

impl Module for BotModule {
    fn name(&self) -> &str {
        NAME
    }

    /// The crate's own validation, which refuses everything `BotScoreConfig::guard` (the
    /// build below) refuses.
    fn check(&self, config: &EdgeConfig, v: &mut Violations) {
        if let Err(violations) = config.botscore.validate() {
            v.merge_under("botscore", violations);
        }
    }

    /// The feature-file store survives reloads unless its path or watch interval changed; the
    /// guard layer (and its circuit breaker) is rebuilt only when the bot settings changed.
    fn update(&mut self, apply: &Apply<'_>) -> Result<(), String> {
        let section = &apply.config.botscore;
        let previous = apply.previous.map(|p| &p.botscore);
        self.switchboard = Some(apply.switchboard.clone());
        self.pending_switches = section
            .routes
            .iter()
            .enumerate()
            .filter_map(|(index, route)| {
                let name = route.switch_name(index);
                let before = previous.and_then(|p| {
                    p.routes
                        .iter()
                        .enumerate()
                        .find(|(i, r)| r.switch_name(*i) == name)
                        .map(|(_, r)| r.killed)
                });
                (before != Some(route.killed)).then_some((name, route.killed))
            })
            .collect();
        let rollout = &apply.config.rollout;
        let policy = Some(rollout.bot_features.clone());
        let gate = gate(apply);
        if let Some(running) = &self.state
            && previous == Some(section)
        {
            // The same store: only the rollout's settings may have changed (applied to the
            // running store only for the stack in force, never for a canary's).
            if apply.env.live {
                running.set_rollout(policy, gate)?;
            }
            return Ok(());
        }
        let same_file = previous.is_some_and(|p| {
            p.feature_file == section.feature_file && p.watch_interval == section.watch_interval
        });
        let (store, watch, shared_gate) = match &self.state {
            Some(running) if same_file => {
                if apply.env.live {
                    running.set_rollout(policy, gate)?;
                }
                (
                    running.store.clone(),
                    running.watch.clone(),
                    Arc::clone(&running.gate),
                )
            }
            _ => {
                let shared_gate = Arc::new(std::sync::Mutex::new(gate));
                let store = feature_store(section, apply, Arc::clone(&shared_gate))?;
                (store, None, shared_gate)
            }
        };
        let guard = section
            .guard_with_switches(Scorer::from_store(store.clone()), apply.switchboard)
            .map_err(|e| format!("botscore: {e}"))?;
        let layer = guard_layer(guard, &section.guard, apply.switchboard)?;
        self.state = Some(State {
            store,
            watch,
            gate: shared_gate,
            interval: section.watch_interval,
            layer,
        });
        Ok(())
    }

    /// Starts following the feature file, unless it is already followed or there is none.
    fn commit(&mut self) {
        if let Some(board) = &self.switchboard {
            for (name, killed) in self.pending_switches.drain(..) {
                board.switch(&name).set(killed, "config");
            }
        }
        if let Some(state) = &mut self.state
            && state.watch.is_none()
            && state.store.path().is_some()
            && !state.interval.is_zero()
        {
            state.watch = Some(Arc::new(state.store.watch(state.interval)));
        }
    }

    fn stop(&mut self, _: Stop) {
        self.state = None;
        self.pending_switches.clear();
    }

    fn slot(&self) -> Option<Slot<Incoming>> {
        let layer = self.state.as_ref()?.layer.clone();
        Some(Box::new(move |inner: EdgeService<Incoming>| {
            layered(layer, inner)
        }))
    }

    /// The guard's state and the model in force.
    fn status(&self) -> Option<ModuleStatus> {
        let state = self.state.as_ref()?;
        let snapshot = state.store.load();
        let meta = snapshot.meta();
        Some(guard_status(
            &state.layer.handle(),
            json!({
                "model_version": snapshot.value().model_version(),
                "features": snapshot.value().features().len(),
                "model_source": meta.source.to_string(),
                "model_digest": meta.digest.short(),
            }),
        ))
    }

    fn followed(&self) -> Option<(&'static str, Arc<dyn Followed>)> {
        let state = self.state.as_ref()?;
        Some(("bot_feature_file", Arc::new(state.store.clone())))
    }

    fn clone_module(&self) -> Box<dyn Module> {
        Box::new(self.clone())
    }
}

/// The feature-file store: JSON, size-capped, last-known-good (persisted in the state
/// directory when there is one); the compiled-in model serves until a valid file loads (a
/// degraded module beats no proxy). A new file is scored on the sample beside the model in
/// force (the gate) and then rolled out through a canary (`[rollout.bot_features]`).
fn feature_store(
    section: &BotScoreConfig,
    apply: &Apply<'_>,
    gate: Arc<std::sync::Mutex<Option<Gate>>>,
) -> Result<Store<Model>, String> {
    let builtin =
        Model::builtin().map_err(|e| format!("the compiled-in bot model is invalid: {e}"))?;
    let mut builder = Store::<Model>::builder("bot-features")
        .format(Format::Json)
        .max_bytes(DEFAULT_MAX_FILE_BYTES)
        .default_value(builtin)
        .rollout(apply.config.rollout.bot_features.clone())
        .check(move |active: &Model, candidate: &Model| {
            let gate = gate
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let Some(gate) = gate else {
                return Ok(());
            };
            let sample = gate.sample.snapshot();
            let effect = ravelin_botscore::effect::compare(
                active,
                candidate,
                sample
                    .iter()
                    .map(ravelin_botscore::effect::SampledRequest::view),
            );
            gate.bounds.check(&effect)
        });
    if let (Some(dir), Some(_)) = (&apply.env.state_dir, &section.feature_file) {
        builder = builder.state_dir(dir);
    }
    let builder = match &section.feature_file {
        Some(path) => builder.file(path),
        None => builder.initial_bytes(
            ravelin_botscore::BUILTIN_MODEL_JSON.as_bytes().to_vec(),
            "builtin",
        ),
    };
    builder.build().map_err(|e| e.to_string())
}
