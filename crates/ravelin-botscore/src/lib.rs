#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod actions;
mod config;
pub mod effect;
mod features;
pub mod future;
mod guard;
mod layer;
mod model;
mod request;
mod score;
mod ua;
mod verified;

#[cfg(feature = "train")]
#[cfg_attr(docsrs, doc(cfg(feature = "train")))]
pub mod dataset;
#[cfg(feature = "train")]
#[cfg_attr(docsrs, doc(cfg(feature = "train")))]
pub mod synth;
#[cfg(feature = "train")]
#[cfg_attr(docsrs, doc(cfg(feature = "train")))]
pub mod train;

pub use actions::{
    Action, MAX_BODY_BYTES, MAX_ROUTES, ResponseTemplate, Route, validate_default_route,
    validate_routes,
};
pub use config::{BotScoreConfig, MAX_WATCH_INTERVAL, MIN_WATCH_INTERVAL};
pub use features::{FeatureKind, MAX_JA4_PER_ROW, MAX_PARAM_LEN};
pub use guard::{
    BotDecision, BotGuard, BotGuardBuilder, BuildError, DEFAULT_REASONS_HEADER,
    DEFAULT_SCORE_HEADER, DEFAULT_VERIFIED_HEADER, ForwardHeaders, GUARD_NAME,
};
pub use layer::{BotScoreLayer, BotScoreLayerBuilder, BotScoring};
pub use model::{
    BUILTIN_MODEL_JSON, DEFAULT_MAX_FEATURES, DEFAULT_MAX_FILE_BYTES, FeatureRow, Limits,
    MAX_ABS_WEIGHT, MAX_NAME_LEN, Model, ModelError, SCHEMA_VERSION, Thresholds,
    max_features_model,
};
pub use request::{RequestView, TlsFingerprint};
pub use score::{
    BotScore, Class, MAX_REASONS, Reason, Reasons, STORE_NAME, Score, ScoreError, ScoreStatus,
    Scorer, Unscored, model_store,
};
pub use ua::{BrowserFamily, Os};
pub use verified::{MAX_RANGES_PER_BOT, MAX_VERIFIED_BOTS, VerifiedBot, VerifiedBots};

/// Whether a route acts on its decisions (`enforce`) or only logs and counts them (`shadow`):
/// ravelin-primitives' one enforce/shadow switch, shared with rate-limit rules ([`Route::mode`]).
pub use ravelin_primitives::Enforcement;

// The types of the crates this one is built on that appear in its signatures, re-exported so a
// user can name them without depending on those crates (issue 17): the guard layer a
// `BotScoreLayer` is (`BotScoring<S>` = `GuardService<S, BotGuard>`) with its configuration,
// handle and verdicts; the config store the model is read from; the validation vocabulary and
// kill switches. `ravelin_failsafe::ConfigError` is renamed: here it is the guard's.
pub use ipnet::IpNet;
pub use ravelin_config::{CohortKey, Rejection, Store};
pub use ravelin_failsafe::{
    CircuitBreakerConfig, ConfigError as GuardConfigError, FailurePolicy, Guard, GuardConfig,
    GuardError, GuardHandle, GuardLayer, GuardService, RequestHead, SkipReason, Verdict,
};
pub use ravelin_primitives::{KillSwitch, Switchboard, Validate, Violations};
