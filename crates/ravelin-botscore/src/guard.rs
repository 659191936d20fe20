//! The bot-score guard: scores a request head, flags verified bots, applies the route's action.

use std::borrow::Cow;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::{Arc, OnceLock};

use http::header::{HeaderName, HeaderValue};
use ravelin_failsafe::{
    Allow, Guard, GuardError, GuardErrorKind, LogLimiter, RequestHead, Verdict,
};
use ravelin_http::MatchPath;

use crate::actions::{Action, CompiledRoute, Route, Routes};
use crate::request::RequestView;
use crate::score::{BotScore, Class, Scorer};
use crate::verified::VerifiedBots;

/// The name a [`BotGuard`] gives itself ([`Guard::name`]): whatever layer wraps it derives the
/// metric label, the kill switch and its [`Skipped`](ravelin_failsafe::Skipped) key from it, and
/// [`ScoreStatus::of`](crate::ScoreStatus::of) looks that key up.
pub const GUARD_NAME: &str = "botscore";

/// Default header carrying the score to the origin.
pub const DEFAULT_SCORE_HEADER: HeaderName = HeaderName::from_static("x-bot-score");
/// Default header carrying the explanation to the origin, when enabled.
pub const DEFAULT_REASONS_HEADER: HeaderName = HeaderName::from_static("x-bot-score-reasons");
/// Default header marking a verified bot to the origin.
pub const DEFAULT_VERIFIED_HEADER: HeaderName = HeaderName::from_static("x-bot-verified");

/// Shadow-mode decisions logged per second at most; the rest are only counted.
const SHADOW_LOGS_PER_SECOND: u32 = 10;

/// The decision taken for a request, set as a request extension beside [`BotScore`] on requests
/// that pass (in shadow mode: the decision that *would* have been taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotDecision {
    /// What the route's policy decided.
    pub action: Action,
    /// Whether the route is in shadow mode (the action was not enforced).
    pub shadow: bool,
}

/// Names of the headers the guard forwards to the origin. The guard owns them
/// ([`Guard::owned_headers`]): whatever layer wraps it removes client-sent copies of all of them
/// before the guard runs, so a client cannot forge its score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardHeaders {
    /// The score (default `x-bot-score`).
    pub score: HeaderName,
    /// The explanation (default off; `x-bot-score-reasons` when enabled).
    pub reasons: Option<HeaderName>,
    /// Verified-bot marker, value `1` (default `x-bot-verified`).
    pub verified: Option<HeaderName>,
}

impl Default for ForwardHeaders {
    fn default() -> Self {
        Self {
            score: DEFAULT_SCORE_HEADER,
            reasons: None,
            verified: Some(DEFAULT_VERIFIED_HEADER),
        }
    }
}

impl ForwardHeaders {
    /// Every configured header name.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        std::iter::once(&self.score)
            .chain(self.reasons.as_ref())
            .chain(self.verified.as_ref())
    }

    /// Removes every configured header from `headers` (client-sent copies).
    pub fn strip(&self, headers: &mut http::HeaderMap) {
        for name in self.names() {
            headers.remove(name);
        }
    }
}

/// Why a [`BotGuard`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A route is invalid: every violation, by field path (`routes[0].prefix: "login" must
    /// start with /`); [`validate_routes`](crate::validate_routes) reports the same without
    /// building.
    #[error("bot-score routes: {0}")]
    Routes(String),
    /// The verified-bot list is invalid.
    #[error("verified bots: {0}")]
    VerifiedBots(ravelin_config::Violations),
    /// A configured header name is invalid.
    #[error("bot-score headers: {0}")]
    Header(String),
    /// No model to score with.
    #[error("bot-score model: {0}")]
    Model(String),
    /// A [`BotScoreConfig`](crate::BotScoreConfig) breaks its rules: every violation, by field.
    #[error("bot-score configuration: {0}")]
    Config(ravelin_config::Violations),
    /// A guard-layer setting (timeout, breaker, failure response) is out of range.
    #[error("bot-score guard: {0}")]
    Guard(ravelin_failsafe::ConfigError),
}

/// The bot-score guard, named [`GUARD_NAME`]. Implements [`Guard`]: use
/// [`BotScoreLayer`](crate::BotScoreLayer) (a [`GuardLayer`](ravelin_failsafe::GuardLayer) with
/// the open failure policy), or wrap it in a `GuardLayer` yourself.
///
/// Per request it reads the active model (lock-free), scores the head, checks the verified-bot
/// list, looks up the route by path and:
/// - **allow / annotate**: lets the request through with [`BotScore`] and [`BotDecision`]
///   extensions (and, for annotate, the score headers);
/// - **challenge / block**: answers with the route's response (in shadow mode: logs, counts and
///   lets it through instead).
///
/// Scoring failure is a [`GuardError`], never a made-up score: under the open policy the request
/// passes *unscored* and [`ScoreStatus`](crate::ScoreStatus) says so.
#[derive(Clone)]
pub struct BotGuard {
    inner: Arc<Inner>,
}

struct Inner {
    scorer: Scorer,
    verified: VerifiedBots,
    routes: Routes,
    headers: ForwardHeaders,
    /// `headers`' names as a slice: what `Guard::owned_headers` hands to `GuardLayer`.
    owned: Box<[HeaderName]>,
    fingerprint_header: Option<HeaderName>,
    shadow_logs: LogLimiter,
    /// Metric handles, each resolved on first use and then reused: no label vector, hashing
    /// or registry lookup per request (issue 13). Resolving lazily keeps the exported series
    /// what they were: one appears when it is first counted.
    metrics: Metrics,
}

/// `ravelin_botscore_decisions_total` by action × mode × class, the score histogram and the
/// verified-bot counter.
#[derive(Default)]
struct Metrics {
    decisions: [OnceLock<metrics::Counter>; DECISION_SERIES],
    score: OnceLock<metrics::Histogram>,
    verified: OnceLock<metrics::Counter>,
}

/// Four actions × two modes × three classes.
const DECISION_SERIES: usize = 4 * 2 * 3;

impl Metrics {
    fn decision(&self, action: Action, shadow: bool, class: Class) -> Option<&metrics::Counter> {
        let action_index = match action {
            Action::Allow => 0,
            Action::Annotate => 1,
            Action::Challenge => 2,
            Action::Block => 3,
        };
        let class_index = match class {
            Class::Automated => 0,
            Class::LikelyAutomated => 1,
            Class::LikelyHuman => 2,
        };
        let index = (action_index * 2 + usize::from(shadow)) * 3 + class_index;
        let slot = self.decisions.get(index)?;
        Some(slot.get_or_init(|| {
            let mode = if shadow { "shadow" } else { "enforce" };
            metrics::counter!("ravelin_botscore_decisions_total", "action" => action.as_str(), "mode" => mode, "class" => class.as_str())
        }))
    }
}

impl BotGuard {
    /// Starts a guard that scores with `scorer`.
    pub fn builder(scorer: Scorer) -> BotGuardBuilder {
        BotGuardBuilder {
            scorer,
            verified: VerifiedBots::new(),
            routes: Vec::new(),
            default_route: Route::default(),
            headers: ForwardHeaders::default(),
            fingerprint_header: None,
        }
    }

    /// The scorer.
    pub fn scorer(&self) -> &Scorer {
        &self.inner.scorer
    }

    /// The forwarded header names.
    pub fn forward_headers(&self) -> &ForwardHeaders {
        &self.inner.headers
    }

    /// Scores and decides without building a verdict: the guard's logic as plain data.
    ///
    /// # Errors
    /// [`ScoreError`](crate::ScoreError) when the request cannot be scored.
    pub fn evaluate(
        &self,
        head: &RequestHead<'_>,
    ) -> Result<(BotScore, BotDecision), crate::ScoreError> {
        self.decide(head)
            .map(|(score, decision, _)| (score, decision))
    }

    fn decide(
        &self,
        head: &RequestHead<'_>,
    ) -> Result<(BotScore, BotDecision, Option<&CompiledRoute>), crate::ScoreError> {
        let inner = &*self.inner;
        let view = RequestView::from_head(head, inner.fingerprint_header.as_ref());
        // The client's cohort during a rollout of the feature file: the key its server set
        // (the edge: the client address it resolved), else the peer address.
        let key = head
            .extensions
            .get::<ravelin_config::CohortKey>()
            .copied()
            .or_else(|| view.peer().map(ravelin_config::CohortKey::of_ip));
        let mut score = match key {
            Some(key) => inner.scorer.score_for(&view, key)?,
            None => inner.scorer.score(&view)?,
        };
        let verified = inner.verified.matches(view.user_agent(), view.peer());
        score.set_verified_bot(verified.is_some());
        // The normalized path, computed once per request (or the ingress stage's), so that
        // every spelling of a path meets its route.
        let route = inner
            .routes
            .lookup(&MatchPath::of(head.uri, head.extensions));
        let (action, shadow) = match route {
            Some(route) => (route.route.decide(&score), route.route.mode.is_shadow()),
            None => (Action::Annotate, false),
        };
        Ok((score, BotDecision { action, shadow }, route))
    }

    fn verdict(&self, head: &RequestHead<'_>) -> Result<Verdict, GuardError> {
        let inner = &*self.inner;
        let (score, decision, route) = self
            .decide(head)
            .map_err(|e| GuardError::new(GuardErrorKind::Config, e.to_string()))?;
        if let Some(counter) =
            inner
                .metrics
                .decision(decision.action, decision.shadow, score.class())
        {
            counter.increment(1);
        }
        inner
            .metrics
            .score
            .get_or_init(|| metrics::histogram!("ravelin_botscore_score"))
            .record(f64::from(score.score().get()));
        if score.verified_bot() {
            inner
                .metrics
                .verified
                .get_or_init(|| metrics::counter!("ravelin_botscore_verified_bots_total"))
                .increment(1);
        }
        if !decision.shadow {
            match (decision.action, route) {
                (Action::Challenge, Some(route)) => {
                    return Ok(Verdict::Respond(route.challenge.to_response()));
                }
                (Action::Block, Some(route)) => {
                    return Ok(Verdict::Respond(route.block.to_response()));
                }
                _ => {}
            }
        } else if matches!(decision.action, Action::Challenge | Action::Block)
            && inner.shadow_logs.check().is_some()
        {
            tracing::info!(
                path = %head.uri.path(),
                score = score.score().get(),
                action = decision.action.as_str(),
                reasons = %score.reasons(),
                "bot-score shadow decision (not enforced)"
            );
        }
        let annotate = match decision.action {
            Action::Annotate => true,
            Action::Allow => false,
            // Shadowed challenge/block: forward as the route would for a passing request.
            Action::Challenge | Action::Block => route.is_some_and(|r| r.route.annotate),
        };
        let mut allow = Allow::new();
        if annotate {
            let headers = allow.request_headers_mut();
            headers.insert(inner.headers.score.clone(), score.score().header_value());
            if let Some(name) = &inner.headers.reasons
                && let Ok(value) = HeaderValue::from_str(&score.reasons().to_string())
            {
                headers.insert(name.clone(), value);
            }
            if let (Some(name), true) = (&inner.headers.verified, score.verified_bot()) {
                headers.insert(name.clone(), HeaderValue::from_static("1"));
            }
        }
        Ok(Verdict::Allow(allow.extension(decision).extension(score)))
    }
}

impl Guard for BotGuard {
    type Future = Ready<Result<Verdict, GuardError>>;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(GUARD_NAME)
    }

    fn check(&self, head: &RequestHead<'_>) -> Self::Future {
        ready(self.verdict(head))
    }

    /// The score, reasons and verified-bot headers: a plain `GuardLayer<BotGuard>` removes
    /// forged client copies itself, even when scoring is killed or fails open.
    fn owned_headers(&self) -> &[HeaderName] {
        &self.inner.owned
    }
}

impl fmt::Debug for BotGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotGuard")
            .field("scorer", &self.inner.scorer)
            .field("verified_bots", &self.inner.verified.bots.len())
            .field("routes", &self.inner.routes)
            .field("headers", &self.inner.headers)
            .finish_non_exhaustive()
    }
}

/// Builds a [`BotGuard`].
#[derive(Debug)]
pub struct BotGuardBuilder {
    scorer: Scorer,
    verified: VerifiedBots,
    routes: Vec<Route>,
    default_route: Route,
    headers: ForwardHeaders,
    fingerprint_header: Option<HeaderName>,
}

impl BotGuardBuilder {
    /// The verified-bot allow-list (default empty).
    pub fn verified_bots(mut self, bots: VerifiedBots) -> Self {
        self.verified = bots;
        self
    }

    /// Adds a route (longest prefix wins).
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds routes.
    pub fn routes(mut self, routes: impl IntoIterator<Item = Route>) -> Self {
        self.routes.extend(routes);
        self
    }

    /// The policy for paths no route matches (default: annotate only). Its prefix is ignored.
    pub fn default_route(mut self, route: Route) -> Self {
        self.default_route = route;
        self
    }

    /// The score header (default `x-bot-score`).
    pub fn score_header(mut self, name: HeaderName) -> Self {
        self.headers.score = name;
        self
    }

    /// Forwards the explanation in `name` (e.g. [`DEFAULT_REASONS_HEADER`]); `None` (the default)
    /// does not.
    pub fn reasons_header(mut self, name: Option<HeaderName>) -> Self {
        self.headers.reasons = name;
        self
    }

    /// The verified-bot header (default `x-bot-verified`; `None` to not forward it).
    pub fn verified_header(mut self, name: Option<HeaderName>) -> Self {
        self.headers.verified = name;
        self
    }

    /// Reads the JA4 fingerprint from this request header when the [`TlsFingerprint`](crate::TlsFingerprint)
    /// extension is absent. Only for a header your TLS terminator sets **and overwrites**: a
    /// client could otherwise choose its own fingerprint.
    pub fn fingerprint_header(mut self, name: HeaderName) -> Self {
        self.fingerprint_header = Some(name);
        self
    }

    /// Builds the guard.
    ///
    /// # Errors
    /// [`BuildError`] naming the invalid route or verified-bot entry.
    pub fn build(self) -> Result<BotGuard, BuildError> {
        use ravelin_config::Validate as _;
        let BotGuardBuilder {
            scorer,
            mut verified,
            routes,
            default_route,
            headers,
            fingerprint_header,
        } = self;
        verified.validate().map_err(BuildError::VerifiedBots)?;
        verified.prepare();
        let routes = Routes::compile(routes, default_route)
            .map_err(|violations| BuildError::Routes(violations.to_string()))?;
        Ok(BotGuard {
            inner: Arc::new(Inner {
                scorer,
                verified,
                routes,
                owned: headers.names().cloned().collect(),
                headers,
                fingerprint_header,
                shadow_logs: LogLimiter::per_second(SHADOW_LOGS_PER_SECOND),
                metrics: Metrics::default(),
            }),
        })
    }
}
