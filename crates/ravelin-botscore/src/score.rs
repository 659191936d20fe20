//! Scores, their explanations, and the "scored or unscored" status a request carries.

use std::fmt;
use std::sync::Arc;

use http::Extensions;
use ravelin_config::Store;
use ravelin_failsafe::{SkipReason, Skipped};

use crate::model::Model;
use crate::request::RequestView;

/// A bot score: 1 = almost certainly automated, 99 = almost certainly a human's browser.
///
/// The invariant `1..=99` holds for every value of this type; there is no "zero" or default score.
/// A request that could not be scored has no `Score` at all (see [`ScoreStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Score(u8);

impl Score {
    /// The lowest score: automated.
    pub const MIN: Score = Score(1);
    /// The highest score: a human's browser.
    pub const MAX: Score = Score(99);

    /// `Some` when `value` is in `1..=99`.
    pub const fn new(value: u8) -> Option<Score> {
        if value >= 1 && value <= 99 {
            Some(Score(value))
        } else {
            None
        }
    }

    /// The number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// `1 + round(98 · σ(logit))`; `None` for a NaN logit (an infinite one saturates).
    pub fn from_logit(logit: f64) -> Option<Score> {
        if logit.is_nan() {
            return None;
        }
        let p = 1.0 / (1.0 + (-logit).exp());
        let scaled = (1.0 + 98.0 * p).round();
        // `scaled` is in [1, 99] for every non-NaN logit; the clamp documents it.
        let value = scaled.clamp(1.0, 99.0) as u8;
        Score::new(value)
    }

    /// The score as a static header value: no allocation per request.
    pub fn header_value(self) -> http::HeaderValue {
        #[expect(
            clippy::indexing_slicing,
            reason = "a `Score` is 1..=99 by construction (`new` is the only constructor) and the table has 100 entries; an out-of-range score would be a broken invariant, which must fail loudly rather than forward a made-up score"
        )]
        let text = SCORE_STRINGS[usize::from(self.0)];
        http::HeaderValue::from_static(text)
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// "0".."99", indexed by score.
static SCORE_STRINGS: [&str; 100] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
    "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47", "48",
    "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61", "62", "63", "64",
    "65", "66", "67", "68", "69", "70", "71", "72", "73", "74", "75", "76", "77", "78", "79", "80",
    "81", "82", "83", "84", "85", "86", "87", "88", "89", "90", "91", "92", "93", "94", "95", "96",
    "97", "98", "99",
];

/// The class of a score under the model's [`Thresholds`](crate::Thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// At or below `thresholds.automated` (default 1).
    Automated,
    /// At or below `thresholds.likely_automated` (default 29).
    LikelyAutomated,
    /// Above.
    LikelyHuman,
}

impl Class {
    /// A short stable name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Automated => "automated",
            Class::LikelyAutomated => "likely_automated",
            Class::LikelyHuman => "likely_human",
        }
    }
}

/// One feature's part in a score: its name and how much it moved the logit (negative: toward
/// automated).
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    feature: Arc<str>,
    contribution: f64,
}

impl Reason {
    /// The feature's name from the feature file.
    pub fn feature(&self) -> &str {
        &self.feature
    }

    /// Its contribution to the logit.
    pub fn contribution(&self) -> f64 {
        self.contribution
    }
}

/// How many reasons an explanation keeps.
pub const MAX_REASONS: usize = 5;

/// The top contributing features of a score, largest absolute contribution first. Fixed capacity
/// ([`MAX_REASONS`]): building one never allocates.
#[derive(Clone, Default, PartialEq)]
pub struct Reasons {
    items: [Option<Reason>; MAX_REASONS],
}

impl Reasons {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Keeps `(name, contribution)` if it is among the largest so far.
    pub(crate) fn offer(&mut self, name: &Arc<str>, contribution: f64) {
        if contribution == 0.0 {
            return;
        }
        let magnitude = contribution.abs();
        // Find the first slot this contribution beats; ties keep the earlier feature first, so
        // the explanation is as deterministic as the score.
        let Some(at) = self.items.iter().position(|slot| match slot {
            None => true,
            Some(r) => magnitude > r.contribution.abs(),
        }) else {
            return;
        };
        let mut carry = Some(Reason {
            feature: Arc::clone(name),
            contribution,
        });
        for slot in self.items.iter_mut().skip(at) {
            carry = std::mem::replace(slot, carry);
            if carry.is_none() {
                break;
            }
        }
    }

    /// The reasons, largest first.
    pub fn iter(&self) -> impl Iterator<Item = &Reason> {
        self.items.iter().map_while(Option::as_ref)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no feature fired.
    pub fn is_empty(&self) -> bool {
        self.items.first().is_none_or(Option::is_none)
    }
}

impl fmt::Debug for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Display for Reasons {
    /// `ua_token_curl=-4.21, header_accept_language=+1.10`: the `x-bot-score-reasons` format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:+.2}", r.feature, r.contribution)?;
        }
        Ok(())
    }
}

/// A request's bot score with its explanation: set as a request extension by the guard.
///
/// Read it through [`ScoreStatus::of`], which also tells *why* a request has no score.
#[derive(Debug, Clone, PartialEq)]
pub struct BotScore {
    score: Score,
    class: Class,
    verified_bot: bool,
    model_version: u64,
    reasons: Reasons,
}

impl BotScore {
    pub(crate) fn new(score: Score, class: Class, model_version: u64, reasons: Reasons) -> Self {
        Self {
            score,
            class,
            verified_bot: false,
            model_version,
            reasons,
        }
    }

    pub(crate) fn set_verified_bot(&mut self, verified: bool) {
        self.verified_bot = verified;
    }

    /// The score.
    pub fn score(&self) -> Score {
        self.score
    }

    /// The class under the scoring model's thresholds.
    pub fn class(&self) -> Class {
        self.class
    }

    /// Whether the request matched the verified-bot allow-list (UA token and IP range).
    pub fn verified_bot(&self) -> bool {
        self.verified_bot
    }

    /// The version of the model that scored it.
    pub fn model_version(&self) -> u64 {
        self.model_version
    }

    /// The top contributing features.
    pub fn reasons(&self) -> &Reasons {
        &self.reasons
    }
}

/// Why a request has no score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unscored {
    /// The bot-score guard failed open, timed out, panicked, was circuit-broken or killed.
    Skipped(SkipReason),
    /// No bot-score guard ran for this request (not installed on this route).
    NotEvaluated,
}

impl Unscored {
    /// A short stable name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unscored::Skipped(reason) => reason.as_str(),
            Unscored::NotEvaluated => "not_evaluated",
        }
    }
}

/// Whether a request carries a score. The only way to read a score from a request:
/// a rule that needs a score matches on `Scored` and so cannot fire on an unscored request.
///
/// ```
/// use ravelin_botscore::ScoreStatus;
/// # let request = http::Request::new(());
/// match ScoreStatus::of(request.extensions()) {
///     ScoreStatus::Scored(s) if s.score().get() < 30 => { /* likely automated */ }
///     ScoreStatus::Scored(_) => { /* likely human */ }
///     ScoreStatus::Unscored(why) => { /* no score: do not treat as bot or human */ let _ = why; }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreStatus<'a> {
    /// The request was scored.
    Scored(&'a BotScore),
    /// It was not; here is why.
    Unscored(Unscored),
}

impl<'a> ScoreStatus<'a> {
    /// The status of a request scored by a guard named [`GUARD_NAME`](crate::GUARD_NAME).
    pub fn of(extensions: &'a Extensions) -> Self {
        Self::of_named(extensions, crate::GUARD_NAME)
    }

    /// The status of a request scored by a guard registered under `guard_name`.
    pub fn of_named(extensions: &'a Extensions, guard_name: &str) -> Self {
        if let Some(score) = extensions.get::<BotScore>() {
            return ScoreStatus::Scored(score);
        }
        match extensions
            .get::<Skipped>()
            .and_then(|s| s.reason(guard_name))
        {
            Some(reason) => ScoreStatus::Unscored(Unscored::Skipped(reason)),
            None => ScoreStatus::Unscored(Unscored::NotEvaluated),
        }
    }

    /// The score, when there is one.
    pub fn score(&self) -> Option<Score> {
        match self {
            ScoreStatus::Scored(s) => Some(s.score()),
            ScoreStatus::Unscored(_) => None,
        }
    }

    /// `true` only for a scored request whose score is at or below `threshold`: an unscored
    /// request is never "below" anything.
    pub fn is_at_or_below(&self, threshold: u8) -> bool {
        self.score().is_some_and(|s| s.get() <= threshold)
    }
}

/// Why scoring failed. A failure yields no score, never a default one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// The model was not validated and compiled (build it through a store or `Model::prepared`).
    #[error(
        "the bot-score model was not validated and compiled; load it through a Store or Model::prepared"
    )]
    NotPrepared,
    /// The model's sum was not a number (impossible for a validated model; kept as a guard).
    #[error("the bot-score model produced a non-finite logit")]
    NonFinite,
}

/// The name of the model store: in log lines, metric labels and rejection messages.
pub const STORE_NAME: &str = "botscore";

/// A store for the feature file at `path`: JSON, capped at
/// [`DEFAULT_MAX_FILE_BYTES`](crate::DEFAULT_MAX_FILE_BYTES), validated as [`Model`], with the
/// compiled-in model ([`Model::builtin`]) as the default that serves until a valid file arrives.
/// A missing or invalid file at startup is logged and counted, not fatal. Call
/// [`Store::watch`] on the result to follow the file.
///
/// # Errors
/// Only if the compiled-in model were unusable (a unit test rules that out) *and* the file is
/// missing or invalid: then there is nothing to score with, and the caller decides.
pub fn model_store(
    path: impl Into<std::path::PathBuf>,
) -> Result<Store<Model>, ravelin_config::Rejection> {
    let builder = Store::builder(STORE_NAME)
        .format(ravelin_config::Format::Json)
        .max_bytes(crate::DEFAULT_MAX_FILE_BYTES)
        .file(path);
    let builder = match Model::builtin() {
        Ok(model) => builder.default_value(model),
        Err(error) => {
            tracing::error!(%error, "the compiled-in bot-score model is unusable; starting without a default");
            builder
        }
    };
    builder.build()
}

/// Scores requests with the active model of a hot-reloaded [`Store`] (or a fixed model).
///
/// Reading the model is lock-free ([`Store::current`]); a reload swaps it between two requests.
/// Cheap to clone.
#[derive(Clone)]
pub struct Scorer {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Store(Store<Model>),
    Fixed(Arc<Model>),
}

impl Scorer {
    /// Scores with whatever `store` holds: the last valid file, or the compiled-in default before
    /// any. Call `store.watch(interval)` to follow the file.
    pub fn from_store(store: Store<Model>) -> Self {
        Self {
            source: Source::Store(store),
        }
    }

    /// Scores with the feature file at `path`, through [`model_store`]: hot-reloadable (call
    /// `scorer.store()` → [`Store::watch`]), last good model kept on a bad file, the compiled-in
    /// model before any good one.
    ///
    /// # Errors
    /// Only if the compiled-in model were unusable *and* the file is missing or invalid.
    pub fn from_file(
        path: impl Into<std::path::PathBuf>,
    ) -> Result<Self, ravelin_config::Rejection> {
        model_store(path).map(Self::from_store)
    }

    /// Scores with a fixed model (tests, the CLI).
    pub fn from_model(model: Model) -> Self {
        Self {
            source: Source::Fixed(Arc::new(model)),
        }
    }

    /// Scores with the model shipped in the crate.
    ///
    /// # Errors
    /// See [`Model::builtin`].
    pub fn builtin() -> Result<Self, crate::ModelError> {
        Model::builtin().map(Self::from_model)
    }

    /// The store, when scoring from one (for status pages and reloads).
    pub fn store(&self) -> Option<&Store<Model>> {
        match &self.source {
            Source::Store(store) => Some(store),
            Source::Fixed(_) => None,
        }
    }

    /// Scores `view` with the active model.
    ///
    /// # Errors
    /// [`ScoreError`]; the request then has no score.
    pub fn score(&self, view: &RequestView<'_>) -> Result<BotScore, ScoreError> {
        match &self.source {
            Source::Store(store) => store.current().value().score(view),
            Source::Fixed(model) => model.score(view),
        }
    }

    /// Scores `view` for the client `key`: with the candidate model when a rollout of the
    /// store's feature file is in progress and the client is in its canary share, else with the
    /// active one (see [`ravelin_config::rollout`]). The score is filed with the client's
    /// cohort, whose mean scores the rollout compares. Without a rollout this is
    /// [`score`](Scorer::score).
    ///
    /// # Errors
    /// [`ScoreError`]; the request then has no score.
    pub fn score_for(
        &self,
        view: &RequestView<'_>,
        key: ravelin_config::CohortKey,
    ) -> Result<BotScore, ScoreError> {
        match &self.source {
            Source::Store(store) if store.in_rollout() => {
                let (snapshot, assignment) = store.load_for(key);
                let scored = snapshot.value().score(view);
                if let (Some(assignment), Ok(score)) = (assignment, &scored) {
                    store.observe_value(assignment, f64::from(score.score().get()));
                }
                scored
            }
            _ => self.score(view),
        }
    }

    /// Runs `f` with the active model.
    pub fn with_model<R>(&self, f: impl FnOnce(&Model) -> R) -> R {
        match &self.source {
            Source::Store(store) => f(store.current().value()),
            Source::Fixed(model) => f(model),
        }
    }
}

impl fmt::Debug for Scorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Store(store) => f.debug_tuple("Scorer").field(store).finish(),
            Source::Fixed(model) => f.debug_tuple("Scorer").field(model).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn logit_mapping_covers_the_scale() {
        assert_eq!(Score::from_logit(f64::NEG_INFINITY), Some(Score::MIN));
        assert_eq!(Score::from_logit(f64::INFINITY), Some(Score::MAX));
        assert_eq!(Score::from_logit(0.0).map(Score::get), Some(50));
        assert_eq!(Score::from_logit(-40.0), Some(Score::MIN));
        assert_eq!(Score::from_logit(f64::NAN), None);
    }

    #[test]
    fn header_values_are_the_numbers() {
        for n in 1..=99u8 {
            let s = Score::new(n).unwrap();
            assert_eq!(s.header_value().to_str().unwrap(), n.to_string());
        }
        assert!(Score::new(0).is_none() && Score::new(100).is_none());
    }

    #[test]
    fn reasons_keep_the_largest_in_order() {
        let mut r = Reasons::new();
        let names: Vec<Arc<str>> = (0..8)
            .map(|i| Arc::from(format!("f{i}").as_str()))
            .collect();
        let weights = [0.5, -3.0, 1.0, 0.0, 2.0, -0.1, 4.0, -2.0];
        for (n, w) in names.iter().zip(weights) {
            r.offer(n, w);
        }
        let got: Vec<(&str, f64)> = r.iter().map(|r| (r.feature(), r.contribution())).collect();
        assert_eq!(
            got,
            vec![
                ("f6", 4.0),
                ("f1", -3.0),
                ("f4", 2.0),
                ("f7", -2.0),
                ("f2", 1.0)
            ]
        );
        assert_eq!(
            r.to_string(),
            "f6=+4.00, f1=-3.00, f4=+2.00, f7=-2.00, f2=+1.00"
        );
    }

    #[test]
    fn unscored_without_extensions_and_when_skipped() {
        let mut ext = Extensions::new();
        assert_eq!(
            ScoreStatus::of(&ext),
            ScoreStatus::Unscored(Unscored::NotEvaluated)
        );
        let mut skipped = Skipped::default();
        skipped.push(crate::GUARD_NAME.into(), SkipReason::Panicked);
        ext.insert(skipped);
        let status = ScoreStatus::of(&ext);
        assert_eq!(
            status,
            ScoreStatus::Unscored(Unscored::Skipped(SkipReason::Panicked))
        );
        assert_eq!(status.score(), None);
        assert!(
            !status.is_at_or_below(99),
            "an unscored request is never below a threshold"
        );
    }

    proptest! {
        #[test]
        fn any_logit_maps_into_range(logit in proptest::num::f64::ANY) {
            match Score::from_logit(logit) {
                Some(s) => prop_assert!((1..=99).contains(&s.get())),
                None => prop_assert!(logit.is_nan()),
            }
        }

        #[test]
        fn monotonic(a in -50.0f64..50.0, b in -50.0f64..50.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(Score::from_logit(lo).unwrap() <= Score::from_logit(hi).unwrap());
        }

        #[test]
        fn reasons_match_sorted_reference(weights in proptest::collection::vec(-10.0f64..10.0, 0..20)) {
            let names: Vec<Arc<str>> = (0..weights.len()).map(|i| Arc::from(format!("f{i}").as_str())).collect();
            let mut r = Reasons::new();
            for (n, w) in names.iter().zip(&weights) {
                r.offer(n, *w);
            }
            let mut reference: Vec<(usize, f64)> = weights.iter().copied().enumerate().filter(|(_, w)| *w != 0.0).collect();
            // Stable sort by descending magnitude keeps earlier features first on ties.
            reference.sort_by(|a, b| b.1.abs().partial_cmp(&a.1.abs()).unwrap());
            reference.truncate(MAX_REASONS);
            let got: Vec<f64> = r.iter().map(Reason::contribution).collect();
            let want: Vec<f64> = reference.iter().map(|(_, w)| *w).collect();
            prop_assert_eq!(got, want);
        }
    }
}
