//! The feature file: a versioned JSON model, validated as hostile input and compiled once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ravelin_config::{Validate, Violations};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::features::{Context, FeatureKind, Test};
use crate::request::RequestView;
use crate::score::{BotScore, Reasons, Score, ScoreError};

/// The feature-file schema this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Default limit on the number of feature rows. The scorer preallocates for the model it loads; a
/// file past the limit is rejected whole (and the last good model stays), never truncated.
pub const DEFAULT_MAX_FEATURES: usize = 256;

/// Default size cap of a feature file, checked before parsing.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024;

/// Largest accepted absolute weight or bias. Real weights are single digits; the bound keeps every
/// sum finite (256 × 1000 is far from overflow) so no file can make a score NaN.
pub const MAX_ABS_WEIGHT: f64 = 1000.0;

/// Longest feature name.
pub const MAX_NAME_LEN: usize = 64;

/// The model shipped with the crate, trained by `botscore train` (see `docs/botscore.md`).
pub const BUILTIN_MODEL_JSON: &str = include_str!("../model/default.json");

/// The hard limits a feature file is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of feature rows (default [`DEFAULT_MAX_FEATURES`]).
    pub max_features: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_features: DEFAULT_MAX_FEATURES,
        }
    }
}

/// Score boundaries of the three classes (Cloudflare's scale): `score <= automated` is
/// *automated*, `score <= likely_automated` is *likely automated*, anything higher *likely human*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Highest score still classed as automated (default 1).
    pub automated: u8,
    /// Highest score still classed as likely automated (default 29). This is the model's default
    /// decision threshold: routes that challenge "bots" without their own threshold use it.
    pub likely_automated: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            automated: 1,
            likely_automated: 29,
        }
    }
}

/// One row of the feature file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureRow {
    /// Unique name (`[A-Za-z0-9_.:-]`, at most [`MAX_NAME_LEN`] bytes); shown in explanations.
    pub name: String,
    /// One of [`FeatureKind`]'s names.
    pub kind: String,
    /// The kind's parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// Added to the logit when the feature fires: negative pushes toward "automated".
    pub weight: f64,
}

impl FeatureRow {
    /// A row with `weight` 0 (for templates the trainer fills in).
    pub fn new(name: impl Into<String>, kind: FeatureKind) -> Self {
        Self {
            name: name.into(),
            kind: kind.as_str().to_owned(),
            params: Map::new(),
            weight: 0.0,
        }
    }

    /// Adds a parameter.
    pub fn param(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.params.insert(key.to_owned(), value.into());
        self
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }
}

/// A bot-scoring model: a logistic regression over indicator features.
///
/// `score = 1 + round(98 · σ(bias + Σ weight of each fired feature))`, so 1 means almost certainly
/// automated and 99 almost certainly a human's browser.
///
/// A model scores only after it has been validated and compiled: through a
/// [`ravelin_config::Store`] (which calls [`Validate::validate`] and [`Validate::prepare`]), or
/// [`Model::from_json`], [`Model::builtin`] or [`Model::prepared`]. An unprepared model refuses to
/// score ([`ScoreError::NotPrepared`]) rather than guess.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    schema_version: u32,
    model_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    bias: f64,
    #[serde(default)]
    thresholds: Thresholds,
    features: Vec<FeatureRow>,
    #[serde(skip)]
    compiled: Option<Arc<Compiled>>,
}

/// The model after [`Validate::prepare`]: rows turned into tests, names shared with explanations.
#[derive(Debug)]
struct Compiled {
    features: Box<[CompiledFeature]>,
}

#[derive(Debug)]
struct CompiledFeature {
    name: Arc<str>,
    weight: f64,
    test: Test,
    needs_headers: bool,
}

/// Why a model could not be built from bytes outside a [`ravelin_config::Store`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Not a JSON feature file.
    #[error("feature file parse error: {0}")]
    Parse(String),
    /// Broke the rules.
    #[error("feature file invalid: {0}")]
    Invalid(Violations),
}

impl Model {
    /// A model from its parts, not yet validated; call [`prepared`](Model::prepared) before
    /// scoring.
    pub fn new(model_version: u64, bias: f64, thresholds: Thresholds, features: Vec<FeatureRow>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            model_version,
            description: None,
            bias,
            thresholds,
            features,
            compiled: None,
        }
    }

    /// Sets the free-text description (how it was trained).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self.compiled = None;
        self
    }

    /// Parses, validates against the default [`Limits`] and compiles a feature file.
    ///
    /// # Errors
    /// [`ModelError`] naming what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Model, ModelError> {
        let model: Model =
            serde_json::from_slice(bytes).map_err(|e| ModelError::Parse(e.to_string()))?;
        model.prepared().map_err(ModelError::Invalid)
    }

    /// The model shipped with the crate ([`BUILTIN_MODEL_JSON`]).
    ///
    /// # Errors
    /// Only if the shipped file were broken, which a unit test rules out; callers still handle it
    /// (e.g. by starting without a default model) instead of panicking.
    pub fn builtin() -> Result<Model, ModelError> {
        Self::from_json(BUILTIN_MODEL_JSON.as_bytes())
    }

    /// Validates against the default [`Limits`] and compiles.
    ///
    /// # Errors
    /// Every violation found.
    pub fn prepared(self) -> Result<Model, Violations> {
        self.prepared_with(&Limits::default())
    }

    /// Validates against `limits` and compiles.
    ///
    /// # Errors
    /// Every violation found.
    pub fn prepared_with(mut self, limits: &Limits) -> Result<Model, Violations> {
        self.check(limits)?;
        self.compile();
        Ok(self)
    }

    /// Checks every rule against `limits`: schema version, finite and bounded bias and weights,
    /// thresholds, feature count, unique names, known kinds and their parameters.
    ///
    /// # Errors
    /// Every violation found (the count check stops the walk early, so a huge file costs little).
    pub fn check(&self, limits: &Limits) -> Result<(), Violations> {
        let mut v = Violations::new();
        if self.schema_version != SCHEMA_VERSION {
            v.push(
                "schema_version",
                format!(
                    "unsupported schema version {}; this build reads schema version {SCHEMA_VERSION}",
                    self.schema_version
                ),
            );
        }
        check_weight(&mut v, "bias", self.bias);
        let t = self.thresholds;
        if t.automated < 1 || t.automated > t.likely_automated || t.likely_automated > 98 {
            v.push(
                "thresholds",
                format!(
                    "need 1 <= automated <= likely_automated <= 98, got automated {} and likely_automated {}",
                    t.automated, t.likely_automated
                ),
            );
        }
        if self.features.is_empty() {
            v.push(
                "features",
                "the model has no features: it would give every request the same score",
            );
        }
        if !v.check_count("features", "features", self.features.len(), limits.max_features) {
            return v.into_result();
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.features.len());
        for (i, row) in self.features.iter().enumerate() {
            let path = format!("features[{i}]");
            check_name(&mut v, &path, &row.name);
            if let Some(first) = seen.insert(row.name.as_str(), i) {
                // Keep the first index for later duplicates of the same name.
                seen.insert(row.name.as_str(), first);
                v.push(
                    format!("{path}.name"),
                    format!(
                        "duplicate feature name {:?} (first defined at features[{first}])",
                        row.name
                    ),
                );
            }
            check_weight(&mut v, &format!("{path}.weight"), row.weight);
            match FeatureKind::from_name(&row.kind) {
                Some(kind) => {
                    let _ = Test::compile(kind, &row.params, &path, &mut v);
                }
                None => v.push(
                    format!("{path}.kind"),
                    format!(
                        "unknown feature kind {:?}; known kinds: {}",
                        truncate(&row.kind),
                        FeatureKind::known_list()
                    ),
                ),
            }
        }
        v.into_result()
    }

    fn compile(&mut self) {
        let mut features = Vec::with_capacity(self.features.len());
        let mut scratch = Violations::new();
        for (i, row) in self.features.iter().enumerate() {
            let Some(kind) = FeatureKind::from_name(&row.kind) else {
                continue;
            };
            let Some(test) = Test::compile(kind, &row.params, &format!("features[{i}]"), &mut scratch)
            else {
                continue;
            };
            features.push(CompiledFeature {
                name: Arc::from(row.name.as_str()),
                weight: row.weight,
                needs_headers: test.needs_headers(),
                test,
            });
        }
        self.compiled = Some(Arc::new(Compiled {
            features: features.into_boxed_slice(),
        }));
    }

    /// Whether the model is validated and compiled, i.e. able to score.
    pub fn is_prepared(&self) -> bool {
        self.compiled.is_some()
    }

    /// Scores a request. Deterministic; allocates nothing beyond reference-count increments for
    /// the reasons' names.
    ///
    /// # Errors
    /// [`ScoreError::NotPrepared`] for a model that skipped validation. A failure means *no
    /// score*: callers must not substitute one.
    pub fn score(&self, view: &RequestView<'_>) -> Result<BotScore, ScoreError> {
        let compiled = self.compiled.as_deref().ok_or(ScoreError::NotPrepared)?;
        let cx = Context::new(view);
        let headers_known = view.headers_known();
        let mut logit = self.bias;
        let mut reasons = Reasons::new();
        for feature in compiled.features.iter() {
            if feature.needs_headers && !headers_known {
                continue;
            }
            if feature.test.fires(&cx) {
                logit += feature.weight;
                reasons.offer(&feature.name, feature.weight);
            }
        }
        let score = Score::from_logit(logit).ok_or(ScoreError::NonFinite)?;
        Ok(BotScore::new(
            score,
            self.thresholds.class_of(score),
            self.model_version,
            reasons,
        ))
    }

    /// The feature-file schema version.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The model version (monotonic across published files).
    pub fn model_version(&self) -> u64 {
        self.model_version
    }

    /// The free-text description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The bias (logit of a request on which no feature fires).
    pub fn bias(&self) -> f64 {
        self.bias
    }

    /// The class boundaries.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// The feature rows.
    pub fn features(&self) -> &[FeatureRow] {
        &self.features
    }

    /// The model as pretty-printed JSON (the feature-file format).
    ///
    /// # Errors
    /// A non-finite weight cannot be written as JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// Evaluates every feature on `view` into `out` (1.0 fired, 0.0 not), in row order: the
    /// design matrix the trainer fits. Clears `out` first.
    ///
    /// # Errors
    /// [`ScoreError::NotPrepared`] for an unprepared model.
    pub fn feature_values(&self, view: &RequestView<'_>, out: &mut Vec<f64>) -> Result<(), ScoreError> {
        let compiled = self.compiled.as_deref().ok_or(ScoreError::NotPrepared)?;
        let cx = Context::new(view);
        out.clear();
        out.extend(compiled.features.iter().map(|f| {
            let fires = (!f.needs_headers || view.headers_known()) && f.test.fires(&cx);
            if fires { 1.0 } else { 0.0 }
        }));
        Ok(())
    }
}

impl Thresholds {
    /// The class of `score`.
    pub fn class_of(&self, score: Score) -> crate::score::Class {
        use crate::score::Class;
        let s = score.get();
        if s <= self.automated {
            Class::Automated
        } else if s <= self.likely_automated {
            Class::LikelyAutomated
        } else {
            Class::LikelyHuman
        }
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("schema_version", &self.schema_version)
            .field("model_version", &self.model_version)
            .field("bias", &self.bias)
            .field("thresholds", &self.thresholds)
            .field("features", &self.features.len())
            .field("prepared", &self.is_prepared())
            .finish()
    }
}

impl Validate for Model {
    fn validate(&self) -> Result<(), Violations> {
        self.check(&Limits::default())
    }

    fn version(&self) -> Option<u64> {
        Some(self.model_version)
    }

    fn prepare(&mut self) {
        self.compile();
    }
}

fn check_weight(v: &mut Violations, path: &str, value: f64) {
    if !value.is_finite() {
        v.check_finite(path, value);
    } else if value.abs() > MAX_ABS_WEIGHT {
        v.push(
            path,
            format!("value {value} is outside -{MAX_ABS_WEIGHT}..={MAX_ABS_WEIGHT}"),
        );
    }
}

fn check_name(v: &mut Violations, path: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if !ok {
        v.push(
            format!("{path}.name"),
            format!(
                "name {:?} must be 1..={MAX_NAME_LEN} characters of A-Z a-z 0-9 _ . : -",
                truncate(name)
            ),
        );
    }
}

/// Hostile strings are echoed into messages only in part.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default()
}
