//! What a candidate model would change, measured before it serves: the candidate and the active
//! model score the same sample of real request heads side by side, and the candidate is refused
//! when its effect moves past bounds (issue 15, scenario 11: a well-formed file with an absurd
//! effect, such as `bias = -1000`, which passes every validation and then calls everyone a bot;
//! or `bias = +1000`, which lets every bot in).
//!
//! - [`RequestSample`]: a bounded, in-memory sample of recent request heads (one in `every`
//!   requests, the last `capacity` kept), recorded by whoever sees the traffic.
//! - [`compare`]: both models over a sample → an [`Effect`]: class changes, requests newly
//!   called automated, automated requests newly called human, and requests the active model
//!   scores but the candidate cannot (these count against the candidate; requests the active
//!   model cannot score are left out).
//! - [`EffectBounds::check`]: the gate, with one bound per share — `max_class_change` (default
//!   10 %), `max_newly_automated` (5 %), `max_newly_human` (10 % of the automated requests),
//!   `max_newly_unscored` (1 %) — and `min_samples` (100) below which a sample is no evidence.
//!   [`EffectBounds`] is also a validated serde section for a configuration file.
//!
//! `botscore check FILE --sample S.jsonl` runs the same gate in CI against a sample file; a
//! server runs it on its own reloads against a [`RequestSample`].

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use http::{HeaderMap, Version};
use ravelin_primitives::{Validate, Violations};
use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::request::RequestView;
use crate::score::Class;

/// The most request heads a [`RequestSample`] keeps.
pub const MAX_SAMPLE_CAPACITY: usize = 10_000;

/// A sampled head whose header bytes exceed this is not kept (the sample's memory is bounded
/// by `capacity` × this).
pub const MAX_SAMPLED_HEAD_BYTES: usize = 16 * 1024;

/// One request head, owned, as the scorer reads it.
#[derive(Debug, Clone)]
pub struct SampledRequest {
    version: Version,
    /// `None`: a record of which only the User-Agent is known.
    headers: Option<HeaderMap>,
    user_agent: Option<Box<str>>,
    ja4: Option<Box<str>>,
    peer: Option<IpAddr>,
}

impl SampledRequest {
    /// A full request head.
    pub fn new(version: Version, headers: HeaderMap) -> Self {
        Self {
            version,
            headers: Some(headers),
            user_agent: None,
            ja4: None,
            peer: None,
        }
    }

    /// A record of which only the User-Agent is known.
    pub fn user_agent_only(user_agent: Option<&str>) -> Self {
        Self {
            version: Version::HTTP_11,
            headers: None,
            user_agent: user_agent.map(Box::from),
            ja4: None,
            peer: None,
        }
    }

    /// Sets the JA4 fingerprint.
    #[must_use]
    pub fn with_ja4(mut self, ja4: Option<&str>) -> Self {
        self.ja4 = ja4.map(Box::from);
        self
    }

    /// Sets the client's address.
    #[must_use]
    pub fn with_peer(mut self, peer: Option<IpAddr>) -> Self {
        self.peer = peer;
        self
    }

    /// The view the scorer reads.
    pub fn view(&self) -> RequestView<'_> {
        let view = match &self.headers {
            Some(headers) => RequestView::new(self.version, headers),
            None => RequestView::user_agent_only(self.user_agent.as_deref()),
        };
        view.with_ja4(self.ja4.as_deref()).with_peer(self.peer)
    }

    /// An owned copy of `view`, or `None` when its headers are larger than
    /// [`MAX_SAMPLED_HEAD_BYTES`].
    pub fn of(view: &RequestView<'_>) -> Option<Self> {
        let sampled = match view.headers {
            Some(headers) => {
                let bytes: usize = headers
                    .iter()
                    .map(|(name, value)| name.as_str().len().saturating_add(value.len()))
                    .sum();
                if bytes > MAX_SAMPLED_HEAD_BYTES {
                    return None;
                }
                Self::new(view.version, headers.clone())
            }
            None => {
                let user_agent = view.user_agent.map(String::from_utf8_lossy);
                Self::user_agent_only(user_agent.as_deref())
            }
        };
        Some(sampled.with_ja4(view.ja4).with_peer(view.peer))
    }
}

/// A bounded sample of recent request heads: one in every `every` recorded, the last
/// `capacity` kept. Recording a request that is not sampled is one atomic increment.
#[derive(Debug)]
pub struct RequestSample {
    ring: Mutex<VecDeque<SampledRequest>>,
    capacity: usize,
    every: u64,
    seen: AtomicU64,
}

impl RequestSample {
    /// Keeps the last `capacity` (1 to [`MAX_SAMPLE_CAPACITY`], clamped) of one in every
    /// `every` (at least 1) requests.
    pub fn new(capacity: usize, every: u64) -> Self {
        let capacity = capacity.clamp(1, MAX_SAMPLE_CAPACITY);
        Self {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            every: every.max(1),
            seen: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<SampledRequest>> {
        // A panic while holding the lock leaves a consistent ring (pushes and pops only).
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers one request head.
    pub fn record(&self, view: &RequestView<'_>) {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        if !n.is_multiple_of(self.every) {
            return;
        }
        let Some(sampled) = SampledRequest::of(view) else {
            return;
        };
        let mut ring = self.lock();
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(sampled);
    }

    /// Adds a head as it is (a sample file, tests).
    pub fn push(&self, sampled: SampledRequest) {
        let mut ring = self.lock();
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(sampled);
    }

    /// The heads kept now.
    pub fn snapshot(&self) -> Vec<SampledRequest> {
        self.lock().iter().cloned().collect()
    }

    /// How many heads are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The newly-human bound applies once the sample holds this many requests the active model
/// calls automated: below it one flip is a large share of a handful (1 of 3 is 33 %), and the
/// class-change bound still watches the whole sample.
pub const MIN_AUTOMATED_FOR_NEWLY_HUMAN: usize = 20;

/// What a candidate model changes on a sample, against the active one.
///
/// Every request of the sample falls in exactly one of three counts:
/// [`samples`](Self::samples) (both models scored it), [`newly_unscored`](Self::newly_unscored)
/// (the active model scored it, the candidate could not) and [`unscored`](Self::unscored) (the
/// active model could not score it). The first two are the requests the active model scores
/// today, [`compared`](Self::compared): the denominator of the shares and of
/// [`EffectBounds::min_samples`], so a candidate that cannot score what is scored today counts
/// against itself instead of vanishing from the statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effect {
    /// Requests scored by both models.
    pub samples: usize,
    /// Of [`samples`](Self::samples), requests whose [`Class`] differs between the two.
    pub class_changed: usize,
    /// Of [`samples`](Self::samples), requests the active model calls likely human and the
    /// candidate calls (likely) automated.
    pub newly_automated: usize,
    /// Of [`samples`](Self::samples), requests the active model calls (likely) automated.
    pub automated_before: usize,
    /// Of [`samples`](Self::samples), requests the candidate calls (likely) automated.
    pub automated_after: usize,
    /// Requests the active model could not score, whether the candidate could or not: there is
    /// nothing to compare them with, and they are left out of the shares. (Before
    /// `newly_unscored` existed this also counted requests only the candidate failed on.)
    pub unscored: usize,
    /// Requests the active model scored and the candidate could not
    /// ([`ScoreError`](crate::ScoreError)): counted in the shares' denominator
    /// ([`compared`](Self::compared)), so a candidate that fails on everything is refused.
    pub newly_unscored: usize,
    /// Of [`samples`](Self::samples), requests the active model calls (likely) automated and
    /// the candidate calls likely human: bots the candidate would let in.
    pub newly_human: usize,
}

impl Effect {
    /// The requests the active model scored: [`samples`](Self::samples) plus
    /// [`newly_unscored`](Self::newly_unscored). The denominator of the class-change,
    /// newly-automated and newly-unscored shares, and what [`EffectBounds::min_samples`] is
    /// compared with.
    pub fn compared(&self) -> usize {
        self.samples.saturating_add(self.newly_unscored)
    }

    /// The share of [`compared`](Self::compared) requests whose class changes (0 without any).
    pub fn class_change_share(&self) -> f64 {
        share(self.class_changed, self.compared())
    }

    /// The share of [`compared`](Self::compared) requests newly called automated (0 without
    /// any).
    pub fn newly_automated_share(&self) -> f64 {
        share(self.newly_automated, self.compared())
    }

    /// The share of [`compared`](Self::compared) requests the candidate cannot score (0 without
    /// any).
    pub fn newly_unscored_share(&self) -> f64 {
        share(self.newly_unscored, self.compared())
    }

    /// The share of the requests the active model calls (likely) automated
    /// ([`automated_before`](Self::automated_before)) that the candidate calls likely human (0
    /// when the active model calls none automated).
    ///
    /// Its denominator is the automated requests, not the whole sample, so that a candidate
    /// letting every bot in (`bias = +1000`) is refused however few bots the sample holds: 20
    /// bots in 1 000 requests all turned human is 100 % here, 2 % of the sample. The price is
    /// noise when the sample holds very few automated requests (one of three is 33 %); the
    /// reason names the counts.
    pub fn newly_human_share(&self) -> f64 {
        share(self.newly_human, self.automated_before)
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "sample counts are at most MAX_SAMPLE_CAPACITY or a sample file's lines, far below 2^52"
)]
fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn automated(class: Class) -> bool {
    matches!(class, Class::Automated | Class::LikelyAutomated)
}

/// Scores every request of `sample` with both models.
pub fn compare<'a>(
    active: &Model,
    candidate: &Model,
    sample: impl IntoIterator<Item = RequestView<'a>>,
) -> Effect {
    let mut effect = Effect::default();
    for view in sample {
        let Ok(before) = active.score(&view) else {
            effect.unscored = effect.unscored.saturating_add(1);
            continue;
        };
        let Ok(after) = candidate.score(&view) else {
            effect.newly_unscored = effect.newly_unscored.saturating_add(1);
            continue;
        };
        let (before, after) = (before.class(), after.class());
        effect.samples = effect.samples.saturating_add(1);
        if before != after {
            effect.class_changed = effect.class_changed.saturating_add(1);
        }
        if automated(before) {
            effect.automated_before = effect.automated_before.saturating_add(1);
            if !automated(after) {
                effect.newly_human = effect.newly_human.saturating_add(1);
            }
        }
        if automated(after) {
            effect.automated_after = effect.automated_after.saturating_add(1);
            if !automated(before) {
                effect.newly_automated = effect.newly_automated.saturating_add(1);
            }
        }
    }
    effect
}

/// How far a candidate may move the sample before it is refused.
///
/// Also a configuration section: every key is optional (an empty table is
/// [`EffectBounds::default`]) and an unknown key is an error. [`Validate`] refuses a share that
/// is not a finite number in 0..=1 and a `min_samples` above [`MAX_SAMPLE_CAPACITY`] (a sample
/// that can never hold that many would never be evidence):
///
/// ```
/// use ravelin_botscore::effect::EffectBounds;
/// use ravelin_primitives::Validate;
///
/// # let text = r#"
/// max_newly_automated = 0.02
/// max_newly_human = 0.05
/// min_samples = 500
/// # "#;
/// let bounds: EffectBounds = toml::from_str(text).unwrap();
/// assert!(bounds.validate().is_ok());
/// assert_eq!(bounds.max_class_change, EffectBounds::default().max_class_change);
///
/// let wrong: EffectBounds = toml::from_str("max_newly_unscored = 1.5").unwrap();
/// assert_eq!(
///     wrong.validate().unwrap_err().to_string(),
///     "max_newly_unscored: value 1.5 is outside 0..=1"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EffectBounds {
    /// The largest share of requests whose class may change (default 0.10).
    pub max_class_change: f64,
    /// The largest share of requests the candidate may newly call automated (default 0.05).
    pub max_newly_automated: f64,
    /// The largest share of the requests the active model calls automated that the candidate
    /// may call likely human (default 0.10; see [`Effect::newly_human_share`]).
    pub max_newly_human: f64,
    /// The largest share of the requests the active model scores that the candidate may fail
    /// to score (default 0.01).
    pub max_newly_unscored: f64,
    /// Below this many requests scored by the active model ([`Effect::compared`]) there is no
    /// evidence either way and the check passes (default 100, at most
    /// [`MAX_SAMPLE_CAPACITY`]); the effect is still reported.
    pub min_samples: usize,
}

impl Default for EffectBounds {
    fn default() -> Self {
        Self {
            max_class_change: 0.10,
            max_newly_automated: 0.05,
            max_newly_human: 0.10,
            max_newly_unscored: 0.01,
            min_samples: 100,
        }
    }
}

impl Validate for EffectBounds {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        for (path, value) in self.shares() {
            if value.is_finite() {
                v.check_range(path, value, 0.0..=1.0);
            } else {
                v.check_finite(path, value);
            }
        }
        v.check_range("min_samples", self.min_samples, 0..=MAX_SAMPLE_CAPACITY);
        v.into_result()
    }
}

impl EffectBounds {
    /// The share bounds by field name.
    fn shares(&self) -> [(&'static str, f64); 4] {
        [
            ("max_class_change", self.max_class_change),
            ("max_newly_automated", self.max_newly_automated),
            ("max_newly_human", self.max_newly_human),
            ("max_newly_unscored", self.max_newly_unscored),
        ]
    }

    /// Whether `effect` holds enough requests ([`Effect::compared`] at least
    /// [`min_samples`](Self::min_samples)) for [`check`](Self::check) to judge it.
    pub fn is_evidence(&self, effect: &Effect) -> bool {
        effect.compared() >= self.min_samples
    }

    /// Passes `effect`, or says which bound it crosses, with the numbers.
    ///
    /// Bounds that [`Validate`] refuses (a NaN share would let everything through) refuse the
    /// candidate too, whatever the sample: build them from a validated configuration.
    ///
    /// # Errors
    /// Every reason, joined by `; `, e.g. `92.0% of 500 sampled requests would newly be called
    /// automated (bound 5.0%)`.
    pub fn check(&self, effect: &Effect) -> Result<(), String> {
        if let Err(violations) = self.validate() {
            return Err(format!("the effect bounds are invalid: {violations}"));
        }
        if !self.is_evidence(effect) {
            return Ok(());
        }
        let compared = effect.compared();
        let mut reasons = Vec::new();
        if effect.newly_unscored_share() > self.max_newly_unscored {
            reasons.push(format!(
                "{:.1}% of {compared} sampled requests could not be scored by the candidate ({} requests; bound {:.1}%)",
                effect.newly_unscored_share() * 100.0,
                effect.newly_unscored,
                self.max_newly_unscored * 100.0
            ));
        }
        if effect.newly_automated_share() > self.max_newly_automated {
            reasons.push(format!(
                "{:.1}% of {compared} sampled requests would newly be called automated (bound {:.1}%)",
                effect.newly_automated_share() * 100.0,
                self.max_newly_automated * 100.0
            ));
        }
        if effect.automated_before >= MIN_AUTOMATED_FOR_NEWLY_HUMAN
            && effect.newly_human_share() > self.max_newly_human
        {
            reasons.push(format!(
                "{:.1}% of the {} sampled requests called automated would newly be called human ({} requests; bound {:.1}%)",
                effect.newly_human_share() * 100.0,
                effect.automated_before,
                effect.newly_human,
                self.max_newly_human * 100.0
            ));
        }
        if effect.class_change_share() > self.max_class_change {
            reasons.push(format!(
                "{:.1}% of {compared} sampled requests would change class (bound {:.1}%)",
                effect.class_change_share() * 100.0,
                self.max_class_change * 100.0
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use http::header::{ACCEPT, ACCEPT_LANGUAGE, HeaderValue, USER_AGENT};

    use super::*;

    const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    fn browser() -> SampledRequest {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(CHROME));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        headers.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("en-US,en;q=0.9"));
        headers.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        headers.insert("sec-fetch-site", HeaderValue::from_static("none"));
        headers.insert("sec-fetch-dest", HeaderValue::from_static("document"));
        headers.insert("upgrade-insecure-requests", HeaderValue::from_static("1"));
        SampledRequest::new(Version::HTTP_2, headers)
    }

    fn tool() -> SampledRequest {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static("curl/8.5.0"));
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        SampledRequest::new(Version::HTTP_11, headers)
    }

    fn mixed(n: usize) -> Vec<SampledRequest> {
        (0..n)
            .map(|i| if i % 4 == 0 { tool() } else { browser() })
            .collect()
    }

    fn with_bias(bias: f64) -> Model {
        let mut json: serde_json::Value =
            serde_json::from_str(crate::model::BUILTIN_MODEL_JSON).unwrap();
        json["bias"] = serde_json::json!(bias);
        json["model_version"] = serde_json::json!(2);
        Model::from_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_same_model_changes_nothing() {
        let active = Model::builtin().unwrap();
        let sample = mixed(200);
        let effect = compare(&active, &active, sample.iter().map(SampledRequest::view));
        assert_eq!(effect.samples, 200);
        assert_eq!(effect.class_changed, 0);
        assert_eq!(effect.newly_automated, 0);
        assert!(effect.automated_before >= 50, "{effect:?}");
        assert!(EffectBounds::default().check(&effect).is_ok());
    }

    #[test]
    fn a_bias_of_minus_1000_is_refused_with_the_numbers() {
        let active = Model::builtin().unwrap();
        let absurd = with_bias(-1000.0);
        let sample = mixed(200);
        let effect = compare(&active, &absurd, sample.iter().map(SampledRequest::view));
        assert_eq!(effect.newly_automated, 150, "{effect:?}");
        assert_eq!(effect.automated_after, 200);
        let reason = EffectBounds::default().check(&effect).unwrap_err();
        assert!(
            reason.contains("75.0% of 200 sampled requests would newly be called automated"),
            "{reason}"
        );
        assert!(reason.contains("change class"), "{reason}");
    }

    /// One tool head in every `every`, browsers otherwise.
    fn sparse(n: usize, every: usize) -> Vec<SampledRequest> {
        (0..n)
            .map(|i| if i % every == 0 { tool() } else { browser() })
            .collect()
    }

    #[test]
    fn a_handful_of_automated_requests_is_no_evidence_for_the_newly_human_bound() {
        let effect = Effect {
            samples: 200,
            automated_before: 3,
            newly_human: 1,
            class_changed: 1,
            ..Effect::default()
        };
        assert!(effect.newly_human_share() > EffectBounds::default().max_newly_human);
        assert_eq!(EffectBounds::default().check(&effect), Ok(()));
    }

    #[test]
    fn a_bias_of_plus_1000_is_refused_however_few_bots_it_lets_in() {
        let active = Model::builtin().unwrap();
        let lenient = with_bias(1000.0);
        // 20 tools in 400 requests: letting all of them in changes the class of 5 % (under the
        // class-change bound), but it is every automated request.
        let sample = sparse(400, 20);
        let effect = compare(&active, &lenient, sample.iter().map(SampledRequest::view));
        assert_eq!(effect.automated_before, 20, "{effect:?}");
        assert_eq!(effect.newly_human, 20, "{effect:?}");
        assert_eq!(effect.automated_after, 0);
        assert_eq!(effect.class_changed, 20);
        assert!(effect.class_change_share() <= EffectBounds::default().max_class_change);
        assert!((effect.newly_human_share() - 1.0).abs() < f64::EPSILON);
        let reason = EffectBounds::default().check(&effect).unwrap_err();
        assert_eq!(
            reason,
            "100.0% of the 20 sampled requests called automated would newly be called human \
             (20 requests; bound 10.0%)"
        );
        // The same model against itself lets nobody in.
        let same = compare(&active, &active, sample.iter().map(SampledRequest::view));
        assert_eq!(same.newly_human, 0);
        assert!(EffectBounds::default().check(&same).is_ok());
    }

    /// Every file a store or `Model::from_json` accepts scores every request (weights are
    /// bounded by `MAX_ABS_WEIGHT`, so the logit is finite), so an unscoreable candidate cannot
    /// come from a file: the `botscore` CLI cannot show this case, and this test uses a model
    /// that was never prepared ([`crate::ScoreError::NotPrepared`]), the failure a caller can
    /// still reach.
    #[test]
    fn a_candidate_that_cannot_score_counts_against_itself() {
        let active = Model::builtin().unwrap();
        let unprepared: Model = serde_json::from_str(crate::model::BUILTIN_MODEL_JSON).unwrap();
        assert!(unprepared.score(&browser().view()).is_err());
        let sample = mixed(200);
        let effect = compare(
            &active,
            &unprepared,
            sample.iter().map(SampledRequest::view),
        );
        assert_eq!(
            effect,
            Effect {
                newly_unscored: 200,
                ..Effect::default()
            }
        );
        assert_eq!(effect.compared(), 200);
        let reason = EffectBounds::default().check(&effect).unwrap_err();
        assert_eq!(
            reason,
            "100.0% of 200 sampled requests could not be scored by the candidate (200 requests; \
             bound 1.0%)"
        );

        // One in a hundred is at the default bound and passes; one and a half is over it.
        let partly = Effect {
            samples: 197,
            newly_unscored: 3,
            ..Effect::default()
        };
        assert!(EffectBounds::default().check(&partly).is_err());
        let within = Effect {
            samples: 198,
            newly_unscored: 2,
            ..Effect::default()
        };
        assert!(EffectBounds::default().check(&within).is_ok());

        // What the active model cannot score is no evidence either way.
        let effect = compare(
            &unprepared,
            &active,
            sample.iter().map(SampledRequest::view),
        );
        assert_eq!((effect.unscored, effect.compared()), (200, 0));
        assert!(EffectBounds::default().check(&effect).is_ok());
        let effect = compare(
            &unprepared,
            &unprepared,
            sample.iter().map(SampledRequest::view),
        );
        assert_eq!((effect.unscored, effect.newly_unscored), (200, 0));
    }

    #[test]
    fn bounds_are_a_validated_config_section() {
        let bounds: EffectBounds = toml::from_str("").unwrap();
        assert_eq!(bounds, EffectBounds::default());
        assert!(bounds.validate().is_ok());
        let bounds: EffectBounds =
            toml::from_str("max_newly_human = 0.2\nmax_newly_unscored = 0\nmin_samples = 10000")
                .unwrap();
        assert!(bounds.validate().is_ok());
        assert!((bounds.max_newly_human - 0.2).abs() < f64::EPSILON);
        assert!(bounds.max_newly_unscored.abs() < f64::EPSILON);
        assert_eq!(
            bounds.max_class_change,
            EffectBounds::default().max_class_change
        );
        let err = toml::from_str::<EffectBounds>("max_bot_share = 0.1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");

        let wrong = EffectBounds {
            max_class_change: f64::NAN,
            max_newly_automated: -0.1,
            max_newly_human: f64::INFINITY,
            max_newly_unscored: 1.5,
            min_samples: MAX_SAMPLE_CAPACITY + 1,
        };
        let violations = wrong.validate().unwrap_err();
        assert_eq!(violations.total(), 5, "{violations}");
        assert_eq!(
            violations.to_string(),
            "max_class_change: value NaN is not finite; \
             max_newly_automated: value -0.1 is outside 0..=1; \
             max_newly_human: value inf is not finite; \
             max_newly_unscored: value 1.5 is outside 0..=1; \
             min_samples: value 10001 is outside 0..=10000"
        );
        // Bounds that would pass everything (NaN compares false) refuse instead.
        let nan = EffectBounds {
            max_newly_automated: f64::NAN,
            ..EffectBounds::default()
        };
        let reason = nan.check(&Effect::default()).unwrap_err();
        assert!(
            reason.starts_with("the effect bounds are invalid: max_newly_automated"),
            "{reason}"
        );
    }

    #[test]
    fn too_few_samples_are_no_evidence() {
        let active = Model::builtin().unwrap();
        let absurd = with_bias(-1000.0);
        let sample = mixed(20);
        let effect = compare(&active, &absurd, sample.iter().map(SampledRequest::view));
        assert_eq!(effect.samples, 20);
        assert!(EffectBounds::default().check(&effect).is_ok());
        let strict = EffectBounds {
            min_samples: 10,
            ..EffectBounds::default()
        };
        assert!(strict.check(&effect).is_err());
    }

    #[test]
    fn the_sample_is_bounded_and_keeps_one_in_every() {
        let sample = RequestSample::new(5, 3);
        let head = browser();
        for _ in 0..30 {
            sample.record(&head.view());
        }
        // 30 offered, one in three kept (10), the last five of them held.
        assert_eq!(sample.len(), 5);
        let capped = RequestSample::new(usize::MAX, 0);
        assert_eq!(capped.capacity, MAX_SAMPLE_CAPACITY);
        assert_eq!(capped.every, 1);
    }

    #[test]
    fn oversized_heads_are_not_sampled() {
        let mut headers = HeaderMap::new();
        let big = "x".repeat(MAX_SAMPLED_HEAD_BYTES + 1);
        headers.insert("x-big", HeaderValue::from_str(&big).unwrap());
        let view = RequestView::new(Version::HTTP_11, &headers);
        assert!(SampledRequest::of(&view).is_none());
        let sample = RequestSample::new(10, 1);
        sample.record(&view);
        assert!(sample.is_empty());
    }

    #[test]
    fn a_sampled_head_scores_as_the_original() {
        let model = Model::builtin().unwrap();
        let original = browser();
        let copy = SampledRequest::of(
            &original
                .view()
                .with_ja4(Some("t13d1516h2_8daaf6152771_02713d6af862")),
        )
        .unwrap();
        assert_eq!(
            model
                .score(
                    &original
                        .view()
                        .with_ja4(Some("t13d1516h2_8daaf6152771_02713d6af862"))
                )
                .unwrap()
                .score(),
            model.score(&copy.view()).unwrap().score()
        );
    }
}
