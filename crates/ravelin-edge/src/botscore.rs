//! The bot-score slot: `ravelin-botscore`'s guard in its failure policy, scoring with the model of
//! a hot-reloaded feature file.

use std::sync::Arc;

use http::HeaderName;
use hyper::body::Incoming;
use ravelin_botscore::{BotGuard, DEFAULT_MAX_FILE_BYTES, DEFAULT_REASONS_HEADER, Model, Scorer};
use ravelin_config::{Format, Store, Switchboard, WatchHandle};
use ravelin_failsafe::GuardLayer;
use ravelin_proxy::ModuleStatus;
use serde_json::json;

use crate::config::{BotScoreSection, EdgeConfig};
use crate::modules::{apply_killed, guard_layer, guard_status};
use crate::stack::{EdgeService, Slot, layered};

/// The module name: the guard's own ([`ravelin_botscore::GUARD_NAME`]), which names its kill
/// switch, metric label and skip-header key.
pub(crate) const NAME: &str = ravelin_botscore::GUARD_NAME;

/// The bot module: the feature-file store (with its watcher) and the guard layer.
#[derive(Clone)]
pub(crate) struct BotModule {
    store: Store<Model>,
    watch: Option<Arc<WatchHandle>>,
    layer: GuardLayer<BotGuard>,
    forward: ForwardStrip,
}

/// Client-sent copies of the score headers, removed before the guard so a client cannot forge
/// its score even when the guard is skipped (killed or failed open).
#[derive(Clone)]
struct ForwardStrip {
    names: Arc<[HeaderName]>,
}

impl BotModule {
    /// Builds, updates or removes the module for `config`. The feature-file store survives
    /// reloads unless its path changed; the guard layer (and its circuit breaker) is rebuilt only
    /// when the bot settings changed.
    ///
    /// # Errors
    /// A description of what could not be built.
    pub(crate) fn update(
        previous: Option<Self>,
        old: Option<&EdgeConfig>,
        config: &EdgeConfig,
        switchboard: &Switchboard,
    ) -> Result<Option<Self>, String> {
        let section = &config.botscore;
        let switch = switchboard.switch(NAME);
        apply_killed(
            &switch,
            old.filter(|o| o.botscore.enabled)
                .map(|o| o.botscore.killed),
            section.killed,
        );
        if !section.enabled {
            return Ok(None);
        }
        if let (Some(previous), Some(old)) = (&previous, old)
            && old.botscore == *section
        {
            return Ok(Some(previous.clone()));
        }
        let same_file = old.is_some_and(|o| {
            o.botscore.feature_file == section.feature_file
                && o.botscore.watch_interval == section.watch_interval
        });
        let (store, watch) = match previous {
            Some(previous) if same_file => (previous.store, previous.watch),
            _ => {
                let store = feature_store(section.feature_file.as_deref())?;
                let watch = (section.feature_file.is_some() && !section.watch_interval.is_zero())
                    .then(|| Arc::new(store.watch(section.watch_interval)));
                (store, watch)
            }
        };
        let guard = build_guard(section, Scorer::from_store(store.clone()))?;
        let forward = ForwardStrip {
            names: guard.forward_headers().names().cloned().collect(),
        };
        let layer = guard_layer(guard, &section.guard, switchboard)?;
        Ok(Some(Self {
            store,
            watch,
            layer,
            forward,
        }))
    }

    /// The feature-file store.
    pub(crate) fn store(&self) -> &Store<Model> {
        &self.store
    }

    /// Stops following the feature file (shutdown).
    pub(crate) fn stop_watching(&mut self) {
        self.watch = None;
    }

    /// The slot: strip forged score headers, then the guard.
    pub(crate) fn slot(&self) -> Slot<Incoming> {
        let layer = self.layer.clone();
        let strip = self.forward.clone();
        Box::new(move |inner: EdgeService<Incoming>| {
            let guarded = layered(layer, inner);
            let stripped = tower::ServiceExt::map_request(
                guarded,
                move |mut request: http::Request<Incoming>| {
                    for name in strip.names.iter() {
                        request.headers_mut().remove(name);
                    }
                    request
                },
            );
            super::stack::boxed(stripped)
        })
    }

    /// `/status` entry: the guard's state and the model in force.
    pub(crate) fn status(&self) -> ModuleStatus {
        let snapshot = self.store.load();
        let meta = snapshot.meta();
        guard_status(
            &self.layer.handle(),
            json!({
                "model_version": snapshot.value().model_version(),
                "features": snapshot.value().features().len(),
                "model_source": meta.source.to_string(),
                "model_digest": meta.digest.short(),
            }),
        )
    }
}

/// Builds the guard for `section` scoring with `scorer`: the one path both [`check`] and the
/// module take, so `--check` refuses exactly what building refuses.
fn build_guard(section: &BotScoreSection, scorer: Scorer) -> Result<BotGuard, String> {
    let score_header = HeaderName::from_bytes(section.score_header.as_bytes())
        .map_err(|e| format!("botscore.score_header: {e}"))?;
    let reasons = section.forward_reasons.then_some(DEFAULT_REASONS_HEADER);
    BotGuard::builder(scorer)
        .score_header(score_header)
        .reasons_header(reasons)
        .routes(section.routes.iter().cloned())
        .build()
        .map_err(|e| format!("botscore: {e}"))
}

/// Everything building the bot guard would refuse in `section` (routes, headers), checked by
/// building it over the compiled-in model.
///
/// # Errors
/// What the build refuses.
pub(crate) fn check(section: &BotScoreSection) -> Result<(), String> {
    static SCORER: std::sync::LazyLock<Result<Scorer, String>> = std::sync::LazyLock::new(|| {
        Model::builtin()
            .map(Scorer::from_model)
            .map_err(|e| format!("the compiled-in bot model is invalid: {e}"))
    });
    let scorer = SCORER.as_ref().map_err(Clone::clone)?.clone();
    build_guard(section, scorer).map(|_| ())
}

/// The feature-file store: JSON, size-capped, last-known-good; the compiled-in model serves
/// until a valid file loads (a degraded module beats no proxy).
fn feature_store(path: Option<&std::path::Path>) -> Result<Store<Model>, String> {
    let builtin =
        Model::builtin().map_err(|e| format!("the compiled-in bot model is invalid: {e}"))?;
    let builder = Store::<Model>::builder("bot-features")
        .format(Format::Json)
        .max_bytes(DEFAULT_MAX_FILE_BYTES)
        .default_value(builtin);
    let builder = match path {
        Some(path) => builder.file(path),
        None => builder.initial_bytes(
            ravelin_botscore::BUILTIN_MODEL_JSON.as_bytes().to_vec(),
            "builtin",
        ),
    };
    builder.build().map_err(|e| e.to_string())
}
