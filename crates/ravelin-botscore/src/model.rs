//! The feature file: a versioned JSON model, validated as hostile input and compiled once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ravelin_config::{Validate, Violations};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::features::{Context, FeatureKind, Test, TokenIndex};
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
    tokens: TokenIndex,
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
    pub fn new(
        model_version: u64,
        bias: f64,
        thresholds: Thresholds,
        features: Vec<FeatureRow>,
    ) -> Self {
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
        if !v.check_count(
            "features",
            "features",
            self.features.len(),
            limits.max_features,
        ) {
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
            let Some(test) =
                Test::compile(kind, &row.params, &format!("features[{i}]"), &mut scratch)
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
        let tokens = TokenIndex::build(features.iter_mut().map(|f| &mut f.test));
        self.compiled = Some(Arc::new(Compiled {
            features: features.into_boxed_slice(),
            tokens,
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
        let mut cx = Context::new(view);
        if !compiled.tokens.is_empty() {
            cx.tokens = Some(compiled.tokens.scan(cx.ua_lower()));
        }
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
    pub fn feature_values(
        &self,
        view: &RequestView<'_>,
        out: &mut Vec<f64>,
    ) -> Result<(), ScoreError> {
        let compiled = self.compiled.as_deref().ok_or(ScoreError::NotPrepared)?;
        let mut cx = Context::new(view);
        if !compiled.tokens.is_empty() {
            cx.tokens = Some(compiled.tokens.scan(cx.ua_lower()));
        }
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

/// A valid model using every feature kind, padded with `ua_token` rows to exactly
/// [`DEFAULT_MAX_FEATURES`]: the worst case the limit allows (benches, tests).
#[doc(hidden)]
pub fn max_features_model() -> Model {
    use FeatureKind as K;
    let mut rows = vec![
        FeatureRow::new("k_ua_missing", K::UaMissing),
        FeatureRow::new("k_ua_malformed", K::UaMalformed),
        FeatureRow::new("k_ua_length", K::UaLength)
            .param("min", 10)
            .param("max", 100),
        FeatureRow::new("k_ua_url", K::UaUrl),
        FeatureRow::new("k_ua_no_version", K::UaNoVersion),
        FeatureRow::new("k_ua_token", K::UaToken).param("token", "bot"),
        FeatureRow::new("k_ua_mozilla", K::UaMozilla),
        FeatureRow::new("k_ua_products", K::UaProducts).param("min", 2),
        FeatureRow::new("k_ua_comment", K::UaComment),
        FeatureRow::new("k_ua_browser", K::UaBrowser).param("family", "chrome"),
        FeatureRow::new("k_ua_below", K::UaBrowserVersionBelow)
            .param("family", "chrome")
            .param("major", 100),
        FeatureRow::new("k_ua_implausible", K::UaVersionImplausible),
        FeatureRow::new("k_ua_engine", K::UaOsEngineMismatch),
        FeatureRow::new("k_headers_unknown", K::HeadersUnknown),
        FeatureRow::new("k_present", K::HeaderPresent).param("header", "accept"),
        FeatureRow::new("k_contains", K::HeaderContains)
            .param("header", "accept")
            .param("value", "html"),
        FeatureRow::new("k_equals", K::HeaderEquals)
            .param("header", "accept")
            .param("value", "*/*"),
        FeatureRow::new("k_before", K::HeaderBefore)
            .param("first", "user-agent")
            .param("second", "accept"),
        FeatureRow::new("k_count", K::HeaderCount).param("min", 8),
        FeatureRow::new("k_no_hints", K::ChromiumWithoutClientHints),
        FeatureRow::new("k_no_fetch", K::BrowserWithoutFetchMetadata),
        FeatureRow::new("k_mismatch", K::ClientHintsMismatch),
        FeatureRow::new("k_version", K::HttpVersion).param("version", "HTTP/1.1"),
        FeatureRow::new("k_ja4", K::Ja4Present),
        FeatureRow::new("k_ja4_prefix", K::Ja4Prefix).param("prefix", "t13d"),
        FeatureRow::new("k_ja4_alpn", K::Ja4Alpn).param("alpn", "h2"),
        FeatureRow::new("k_ja4_stack", K::Ja4StackMismatch)
            .param("family", "chrome")
            .param("ja4", vec!["t13d1516h2_8daaf6152771_02713d6af862"]),
    ];
    let mut i = 0usize;
    while rows.len() < DEFAULT_MAX_FEATURES {
        // Alternate cheap and costly kinds so the padding is not all one code path.
        let row = match i % 4 {
            0 => FeatureRow::new(format!("pad_token_{i}"), K::UaToken)
                .param("token", format!("token{i}")),
            1 => FeatureRow::new(format!("pad_header_{i}"), K::HeaderPresent)
                .param("header", format!("x-pad-{i}")),
            2 => FeatureRow::new(format!("pad_before_{i}"), K::HeaderBefore)
                .param("first", format!("x-pad-{i}"))
                .param("second", "accept"),
            _ => FeatureRow::new(format!("pad_contains_{i}"), K::HeaderContains)
                .param("header", "accept")
                .param("value", format!("type/{i}")),
        };
        rows.push(row.weight(0.01));
        i = i.saturating_add(1);
    }
    Model {
        schema_version: SCHEMA_VERSION,
        model_version: 1,
        description: Some("every kind, padded to the feature limit".into()),
        bias: 0.0,
        thresholds: Thresholds::default(),
        features: rows,
        compiled: None,
    }
    .prepared()
    .unwrap_or_else(|_| Model::new(0, 0.0, Thresholds::default(), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ravelin_config::{Format, Rejection, Store};
    use serde_json::json;

    fn row(i: usize) -> Value {
        json!({ "name": format!("token_{i}"), "kind": "ua_token", "params": { "token": format!("tok{i}") }, "weight": -0.5 })
    }

    /// A valid file with `n` features and `model_version`.
    fn file(n: usize, model_version: u64) -> Value {
        json!({
            "schema_version": 1,
            "model_version": model_version,
            "bias": 1.0,
            "thresholds": { "automated": 1, "likely_automated": 29 },
            "features": (0..n).map(row).collect::<Vec<_>>(),
        })
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec_pretty(v).unwrap()
    }

    fn store_with(first: &Value) -> Store<Model> {
        Store::builder("botscore")
            .format(Format::Json)
            .max_bytes(DEFAULT_MAX_FILE_BYTES)
            .initial_bytes(bytes(first), "test")
            .default_value(Model::builtin().unwrap())
            .build()
            .unwrap()
    }

    fn invalid(v: &Value) -> String {
        let model: Model = serde_json::from_value(v.clone()).unwrap();
        model.check(&Limits::default()).unwrap_err().to_string()
    }

    #[test]
    fn builtin_model_is_valid_and_small() {
        let model = Model::builtin().unwrap();
        assert!(model.is_prepared());
        assert!(model.features().len() <= DEFAULT_MAX_FEATURES / 2);
        assert!(BUILTIN_MODEL_JSON.len() as u64 <= DEFAULT_MAX_FILE_BYTES);
    }

    #[test]
    fn incident_2025_11_18_duplicated_feature_rows_are_rejected() {
        // A valid generated file with 150 features, then the same file with every row emitted
        // twice, as the query that lost its database filter produced: 300 rows, past the limit.
        let good = file(150, 1);
        let store = store_with(&good);
        assert_eq!(store.current().model_version(), 1);
        let mut doubled = file(150, 2);
        let rows = doubled["features"].as_array().unwrap().clone();
        doubled["features"].as_array_mut().unwrap().extend(rows);

        let rejection = store.submit(&bytes(&doubled), "generator").unwrap_err();
        let message = rejection.to_string();
        assert!(
            matches!(rejection, Rejection::Invalid { .. }),
            "{rejection:?}"
        );
        assert!(message.contains("300"), "names the count: {message}");
        assert!(message.contains("256"), "names the limit: {message}");
        // The previous model keeps serving, and scoring still works.
        let active = store.current();
        assert_eq!(active.model_version(), 1);
        assert_eq!(active.features().len(), 150);
        assert!(
            active
                .score(&RequestView::user_agent_only(Some("tok3/1.0")))
                .is_ok()
        );
        // The next good generation installs.
        store.submit(&bytes(&file(150, 3)), "generator").unwrap();
        assert_eq!(store.current().model_version(), 3);
    }

    #[test]
    fn duplicates_under_the_limit_are_rejected_naming_name_and_index() {
        // The shipped model doubled stays under 256 rows: the duplicate names catch it.
        let mut doubled: Value = serde_json::from_str(BUILTIN_MODEL_JSON).unwrap();
        let rows = doubled["features"].as_array().unwrap().clone();
        let n = rows.len();
        doubled["features"].as_array_mut().unwrap().extend(rows);
        let message = invalid(&doubled);
        let first = doubled["features"][0]["name"].as_str().unwrap().to_owned();
        assert!(
            message.contains(&format!("features[{n}].name: duplicate feature name \"{first}\" (first defined at features[0])")),
            "{message}"
        );
    }

    #[test]
    fn count_limit_is_configurable_and_exact() {
        let model: Model = serde_json::from_value(file(256, 1)).unwrap();
        assert!(model.check(&Limits::default()).is_ok());
        let model: Model = serde_json::from_value(file(257, 1)).unwrap();
        let err = model.check(&Limits::default()).unwrap_err().to_string();
        assert_eq!(err, "features: 257 features exceeds limit 256");
        let model: Model = serde_json::from_value(file(10, 1)).unwrap();
        assert!(model.check(&Limits { max_features: 9 }).is_err());
    }

    #[test]
    fn non_finite_and_out_of_range_weights_are_rejected() {
        let mut model: Model = serde_json::from_value(file(3, 1)).unwrap();
        model.features[1].weight = f64::NAN;
        model.features[2].weight = f64::INFINITY;
        model.bias = f64::NEG_INFINITY;
        let err = model.check(&Limits::default()).unwrap_err().to_string();
        assert!(
            err.contains("features[1].weight: value NaN is not finite"),
            "{err}"
        );
        assert!(
            err.contains("features[2].weight: value inf is not finite"),
            "{err}"
        );
        assert!(err.contains("bias: value -inf is not finite"), "{err}");
        let mut model: Model = serde_json::from_value(file(3, 1)).unwrap();
        model.features[0].weight = 1e6;
        assert!(
            model
                .check(&Limits::default())
                .unwrap_err()
                .to_string()
                .contains("features[0].weight")
        );
        // JSON cannot spell NaN; an out-of-range literal is a parse error, also rejected.
        let store = store_with(&file(3, 1));
        let text = String::from_utf8(bytes(&file(3, 2)))
            .unwrap()
            .replacen("-0.5", "1e999", 1);
        assert!(matches!(
            store.submit(text.as_bytes(), "t"),
            Err(Rejection::Parse { .. })
        ));
    }

    #[test]
    fn unknown_kind_lists_the_known_ones() {
        let mut v = file(2, 1);
        v["features"][1]["kind"] = json!("ua_regex");
        let err = invalid(&v);
        assert!(
            err.contains(
                "features[1].kind: unknown feature kind \"ua_regex\"; known kinds: ua_missing"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_params_are_rejected_per_field() {
        let mut v = file(5, 1);
        v["features"][0]["params"] = json!({});
        v["features"][1]["params"] = json!({ "token": "x", "extra": 1 });
        v["features"][2] = json!({ "name": "h", "kind": "header_present", "params": { "header": "bad header" }, "weight": 1.0 });
        v["features"][3] = json!({ "name": "len", "kind": "ua_length", "params": { "min": 9, "max": 3 }, "weight": 1.0 });
        v["features"][4] = json!({ "name": "v", "kind": "http_version", "params": { "version": "HTTP/4" }, "weight": 1.0 });
        let err = invalid(&v);
        for needle in [
            "features[0].params.token: kind ua_token requires parameter \"token\"",
            "features[1].params.extra: unknown parameter",
            "features[2].params.header: \"bad header\" is not a valid header name",
            "features[3].params: min 9 must be less than max 3",
            "features[4].params.version",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn schema_version_thresholds_names_and_empty_features() {
        let mut v = file(1, 1);
        v["schema_version"] = json!(2);
        assert!(
            invalid(&v).contains("unsupported schema version 2; this build reads schema version 1")
        );
        let mut v = file(1, 1);
        v["thresholds"] = json!({ "automated": 40, "likely_automated": 29 });
        assert!(invalid(&v).contains("thresholds"));
        let mut v = file(1, 1);
        v["features"][0]["name"] = json!("has space");
        assert!(invalid(&v).contains("features[0].name"));
        let v = file(0, 1);
        assert!(invalid(&v).contains("no features"));
    }

    #[test]
    fn unknown_fields_are_parse_errors() {
        let mut v = file(1, 1);
        v["featurez"] = json!([]);
        assert!(serde_json::from_value::<Model>(v).is_err());
    }

    #[test]
    fn store_rejections_keep_the_last_good_model() {
        let store = store_with(&file(5, 10));
        let good = bytes(&file(5, 11));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("whitespace", b"  \n".to_vec()),
            ("truncated", good[..good.len() / 2].to_vec()),
            ("oversize", vec![b' '; DEFAULT_MAX_FILE_BYTES as usize + 1]),
            ("stale", bytes(&file(5, 9))),
            ("same version other content", bytes(&file(6, 10))),
            ("not json", b"\x00\xff garbage".to_vec()),
        ];
        for (what, candidate) in cases {
            let rejection = store.submit(&candidate, what).unwrap_err();
            let expected = match what {
                "empty" | "whitespace" => "empty",
                "truncated" | "not json" => "parse",
                "oversize" => "too_large",
                _ => "stale",
            };
            assert_eq!(rejection.kind(), expected, "{what}: {rejection}");
            assert_eq!(
                store.current().model_version(),
                10,
                "{what} replaced the model"
            );
        }
        store.submit(&good, "good").unwrap();
        assert_eq!(store.current().model_version(), 11);
    }

    #[test]
    fn before_any_valid_file_the_builtin_model_serves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.json");
        let store = crate::model_store(&path).unwrap();
        assert!(store.current().meta().is_default());
        assert_eq!(
            store.current().model_version(),
            Model::builtin().unwrap().model_version()
        );
        assert!(store.current().is_prepared());
        std::fs::write(&path, b"{ truncated").unwrap();
        assert!(store.reload().is_err());
        assert!(store.current().meta().is_default());
        // Any valid file replaces the default, whatever its version.
        std::fs::write(&path, bytes(&file(4, 0))).unwrap();
        store.reload().unwrap();
        assert_eq!(store.current().features().len(), 4);
    }

    #[test]
    fn unprepared_models_refuse_to_score() {
        let model: Model = serde_json::from_value(file(3, 1)).unwrap();
        assert_eq!(
            model.score(&RequestView::user_agent_only(Some("x"))),
            Err(ScoreError::NotPrepared)
        );
        let model = model.prepared().unwrap();
        assert!(
            model
                .score(&RequestView::user_agent_only(Some("x")))
                .is_ok()
        );
    }

    #[test]
    fn max_features_model_is_at_the_limit_and_covers_every_kind() {
        let model = max_features_model();
        assert!(model.is_prepared());
        assert_eq!(model.features().len(), DEFAULT_MAX_FEATURES);
        for kind in FeatureKind::ALL {
            assert!(
                model.features().iter().any(|r| r.kind == kind.as_str()),
                "{kind} missing"
            );
        }
    }

    #[test]
    fn serialisation_round_trips() {
        let model = Model::builtin().unwrap();
        let again = Model::from_json(model.to_json().unwrap().as_bytes()).unwrap();
        assert_eq!(again.features(), model.features());
        assert_eq!(again.bias(), model.bias());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic_or_install(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let store = store_with(&file(3, 5));
                let _ = store.submit(&data, "fuzz");
                prop_assert_eq!(store.current().model_version(), 5);
                prop_assert_eq!(store.current().features().len(), 3);
            }

            #[test]
            fn truncations_of_a_valid_file_never_install(cut in 0usize..1000) {
                let store = store_with(&file(3, 5));
                let full = bytes(&file(8, 6));
                let cut = cut % full.len();
                prop_assert!(store.submit(&full[..cut], "cut").is_err());
                prop_assert_eq!(store.current().model_version(), 5);
            }

            #[test]
            fn arbitrary_json_shapes_never_panic(
                n in 0usize..300,
                weight in proptest::num::f64::ANY,
                kind in "[a-z_]{0,24}",
                version in any::<u64>(),
            ) {
                let mut v = file(n.min(300), version);
                if let Some(first) = v["features"].get_mut(0) {
                    first["kind"] = json!(kind);
                    first["weight"] = json!(weight);
                }
                let store = store_with(&file(1, 0));
                let _ = store.submit(&bytes(&v), "shape");
                // Whatever is active scores into range.
                let scored = store.current().score(&RequestView::user_agent_only(Some("tok0 bot")));
                let score = scored.unwrap().score().get();
                prop_assert!((1..=99).contains(&score));
            }
        }
    }
}
