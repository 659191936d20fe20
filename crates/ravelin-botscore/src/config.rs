//! [`BotScoreConfig`]: the whole module from a configuration file section.

use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use ravelin_config::{Validate, Violations};
use ravelin_failsafe::GuardConfig;
use serde::{Deserialize, Serialize};

use crate::actions::{Route, validate_default_route, validate_routes};
use crate::guard::{BotGuard, BuildError};
use crate::layer::BotScoreLayer;
use crate::score::Scorer;
use crate::verified::VerifiedBots;

/// Bot scoring as an operator configures it, e.g. a `[botscore]` table in a proxy's TOML:
///
/// ```
/// # let text = r#"
/// feature_file = "/etc/ravelin/botscore.json"
/// watch_interval = "10s"
/// reasons_header = "x-bot-score-reasons"
///
/// [guard]            # how scoring fails: ravelin-failsafe's GuardConfig
/// timeout = "5ms"
///
/// [[routes]]
/// prefix = "/login"
/// challenge_at_or_below = 29
/// block_at_or_below = 1
/// challenge = { status = 429, content_type = "text/html", body = "<h1>Slow down</h1>" }
///
/// [[routes]]
/// prefix = "/search"
/// challenge_at_or_below = 29
/// mode = "shadow"
///
/// [[verified_bots.bots]]
/// name = "examplebot"
/// user_agent_token = "ExampleBot"
/// ranges = ["192.0.2.0/24", "2001:db8::/32"]
/// # "#;
/// # let config: ravelin_botscore::BotScoreConfig = toml::from_str(text).unwrap();
/// # assert_eq!(config.routes.len(), 2);
/// ```
///
/// Every field has a default: an empty table scores with the shipped model, annotates every
/// request and enforces nothing. The keys, their defaults and their limits are listed once, in
/// the crate README's configuration table; the edge proxy's `[botscore]` table *is* this type.
///
/// [`Validate::validate`] refuses everything [`guard`](Self::guard) and
/// [`layer`](Self::layer) would, naming each field (`routes[0].prefix: "login" must start
/// with /`), so a configuration check (`--check`) or a `ravelin_config::Store` of this type
/// catches it before anything is built. A loader that nests only the routes calls
/// [`validate_routes`](crate::validate_routes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotScoreConfig {
    /// The feature file (the model). Absent: the shipped model only.
    #[serde(default)]
    pub feature_file: Option<PathBuf>,
    /// How often the feature file is checked for changes (default 1 s; `0s`: only when asked,
    /// e.g. on a reload). Otherwise at least 10 ms and at most 1 h.
    #[serde(default = "default_watch_interval", with = "humantime_serde")]
    pub watch_interval: Duration,
    /// How scoring fails: `ravelin-failsafe`'s [`GuardConfig`] (failure mode, time budget,
    /// fail-closed answer, circuit breaker). Its defaults: open, 100 ms — scoring takes
    /// microseconds, but the budget is wall-clock time and a preempted thread must not leave
    /// requests unscored.
    #[serde(default)]
    pub guard: GuardConfig,
    /// Per-prefix policies.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The policy of unmatched paths (default: annotate only).
    #[serde(default)]
    pub default_route: Route,
    /// The verified-bot allow-list.
    #[serde(default)]
    pub verified_bots: VerifiedBots,
    /// The score header (default `x-bot-score`).
    #[serde(default = "default_score_header")]
    pub score_header: String,
    /// The explanation header; absent (default) forwards none.
    #[serde(default)]
    pub reasons_header: Option<String>,
    /// The verified-bot header (default `x-bot-verified`; empty string: none).
    #[serde(default = "default_verified_header")]
    pub verified_header: String,
    /// A request header the TLS terminator in front sets (and overwrites) with the JA4
    /// fingerprint. The edge proxy removes it from every peer but its trusted proxies.
    #[serde(default)]
    pub fingerprint_header: Option<String>,
}

/// The shortest non-zero `watch_interval`.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(10);
/// The longest `watch_interval`.
pub const MAX_WATCH_INTERVAL: Duration = Duration::from_secs(3600);

/// One second, as the edge proxy polls its own config file: a feature file pushed to fix a
/// problem is in force within a second, and a poll costs one `stat` when nothing changed.
fn default_watch_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_score_header() -> String {
    crate::DEFAULT_SCORE_HEADER.as_str().to_owned()
}

fn default_verified_header() -> String {
    crate::DEFAULT_VERIFIED_HEADER.as_str().to_owned()
}

impl Default for BotScoreConfig {
    fn default() -> Self {
        Self {
            feature_file: None,
            watch_interval: default_watch_interval(),
            guard: GuardConfig::default(),
            routes: Vec::new(),
            default_route: Route::default(),
            verified_bots: VerifiedBots::default(),
            score_header: default_score_header(),
            reasons_header: None,
            verified_header: default_verified_header(),
            fingerprint_header: None,
        }
    }
}

impl Validate for BotScoreConfig {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        if let Err(routes) = validate_routes(&self.routes) {
            v.merge(routes);
        }
        if let Err(default) = validate_default_route(&self.default_route) {
            v.merge(default);
        }
        if let Err(bots) = self.verified_bots.validate() {
            v.merge_under("verified_bots", bots);
        }
        let mut header = |field: &str, value: &str| {
            if HeaderName::from_bytes(value.as_bytes()).is_err() {
                v.push(field, format!("{value:?} is not a valid header name"));
            }
        };
        header("score_header", &self.score_header);
        if let Some(name) = &self.reasons_header {
            header("reasons_header", name);
        }
        if !self.verified_header.is_empty() {
            header("verified_header", &self.verified_header);
        }
        if let Some(name) = &self.fingerprint_header {
            header("fingerprint_header", name);
        }
        if let Err(guard) = self.guard.validate() {
            v.merge_under("guard", guard);
        }
        let watch = self.watch_interval;
        if !watch.is_zero() && !(MIN_WATCH_INTERVAL..=MAX_WATCH_INTERVAL).contains(&watch) {
            v.push(
                "watch_interval",
                format!("{watch:?} must be 0s (not watched) or within 10ms..=1h"),
            );
        }
        v.into_result()
    }
}

impl BotScoreConfig {
    /// The scorer: from [`feature_file`](Self::feature_file) through [`model_store`](crate::model_store)
    /// (shipped model until a valid file is read), or the shipped model alone.
    ///
    /// # Errors
    /// [`BuildError::Model`] only when the shipped model is unusable and the file is too.
    pub fn scorer(&self) -> Result<Scorer, BuildError> {
        match &self.feature_file {
            Some(path) => Scorer::from_file(path).map_err(|r| BuildError::Model(r.to_string())),
            None => Scorer::builtin().map_err(|e| BuildError::Model(e.to_string())),
        }
    }

    /// The guard, scoring with `scorer`.
    ///
    /// # Errors
    /// [`BuildError::Config`] with every violation [`Validate::validate`] finds (invalid header
    /// names, routes, verified-bot entries, the guard's failure settings, the watch interval).
    pub fn guard(&self, scorer: Scorer) -> Result<BotGuard, BuildError> {
        self.build_guard(scorer, None)
    }

    /// As [`guard`](Self::guard), with each route's kill switch read from `switchboard`, under
    /// [`Route::switch_name`] (`botscore.route.<name>`, or `botscore.route.<index>`), which
    /// this registers: a killed route is skipped and the default route decides for its paths.
    /// The switchboard owns the switches' state; a loader sets each from the route's `killed`
    /// when that value changes (so an operator's flip survives unrelated reloads).
    ///
    /// # Errors
    /// As [`guard`](Self::guard).
    pub fn guard_with_switches(
        &self,
        scorer: Scorer,
        switchboard: &ravelin_primitives::Switchboard,
    ) -> Result<BotGuard, BuildError> {
        self.build_guard(scorer, Some(switchboard))
    }

    fn build_guard(
        &self,
        scorer: Scorer,
        switchboard: Option<&ravelin_primitives::Switchboard>,
    ) -> Result<BotGuard, BuildError> {
        self.validate().map_err(BuildError::Config)?;
        let routes: Vec<Route> = self
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| match switchboard {
                Some(board) => route
                    .clone()
                    .with_switch(board.switch(&route.switch_name(index))),
                None => route.clone(),
            })
            .collect();
        let header = |field: &str, value: &str| {
            HeaderName::from_bytes(value.as_bytes()).map_err(|_| {
                BuildError::Header(format!("{field}: {value:?} is not a valid header name"))
            })
        };
        let mut builder = BotGuard::builder(scorer)
            .routes(routes)
            .default_route(self.default_route.clone())
            .verified_bots(self.verified_bots.clone())
            .score_header(header("score_header", &self.score_header)?)
            .reasons_header(
                self.reasons_header
                    .as_deref()
                    .map(|h| header("reasons_header", h))
                    .transpose()?,
            )
            .verified_header(if self.verified_header.is_empty() {
                None
            } else {
                Some(header("verified_header", &self.verified_header)?)
            });
        if let Some(name) = &self.fingerprint_header {
            builder = builder.fingerprint_header(header("fingerprint_header", name)?);
        }
        builder.build()
    }

    /// The layer: [`scorer`](Self::scorer), [`guard`](Self::guard), [`BotScoreLayer`] with the
    /// failure policy, time budget and circuit breaker of [`guard`](field@Self::guard). Unless
    /// `watch_interval` is zero, start following the file with
    /// `layer.guard().scorer().store().map(|s| s.watch(config.watch_interval))` inside a Tokio
    /// runtime. For a kill switch or other guard settings, build the layer yourself:
    /// `BotScoreLayer::builder(config.guard(config.scorer()?)?).guard_config(&config.guard)…`.
    ///
    /// # Errors
    /// [`BuildError`].
    pub fn layer(&self) -> Result<BotScoreLayer, BuildError> {
        let guard = self.guard(self.scorer()?)?;
        BotScoreLayer::builder(guard)
            .guard_config(&self.guard)
            .build()
            .map_err(BuildError::Guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_builds_with_defaults() {
        let config: BotScoreConfig = toml::from_str("").unwrap();
        assert_eq!(config, BotScoreConfig::default());
        let layer = config.layer().unwrap();
        assert_eq!(
            layer.guard().forward_headers().score,
            crate::DEFAULT_SCORE_HEADER
        );
        assert!(layer.guard().scorer().store().is_none());
    }

    #[test]
    fn bad_values_are_reported_by_field() {
        let config: BotScoreConfig = toml::from_str("score_header = \"bad header\"").unwrap();
        let err = config.layer().unwrap_err().to_string();
        assert!(err.contains("score_header"), "{err}");
        let config: BotScoreConfig =
            toml::from_str("[[routes]]\nprefix = \"/x\"\nblock_at_or_below = 0").unwrap();
        assert!(
            config
                .layer()
                .unwrap_err()
                .to_string()
                .contains("block_at_or_below")
        );
        assert!(
            toml::from_str::<BotScoreConfig>("modle = \"x\"").is_err(),
            "typos are errors"
        );
        // The keys this type used to have are unknown now, not silently ignored.
        for old in ["model = \"x\"", "timeout = \"5ms\""] {
            let err = toml::from_str::<BotScoreConfig>(old)
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown field"), "{old}: {err}");
        }
    }

    #[test]
    fn validate_refuses_what_building_refuses() {
        let cases = [
            (
                "[[routes]]\nprefix = \"login\"",
                r#"routes[0].prefix: "login" must start with /"#,
            ),
            (
                "[[routes]]\nprefix = \"/a\"\n[[routes]]\nprefix = \"/b?c\"",
                "routes[1].prefix",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nchallenge = { status = 200 }",
                "routes[0].challenge.status: 200 is not a 4xx or 5xx status",
            ),
            (
                "[default_route]\nprefix = \"/\"\nblock_at_or_below = 0",
                "default_route.block_at_or_below",
            ),
            ("reasons_header = \"a b\"", "reasons_header"),
            ("fingerprint_header = \"\"", "fingerprint_header"),
            (
                "[guard]\ntimeout = \"0s\"",
                "guard.timeout: must be greater than zero",
            ),
            ("[guard]\nfailure_status = 200", "guard.failure_status"),
            ("[guard.circuit]\nwindow = 100000", "guard.circuit"),
            (
                "[[routes]]\nprefix = \"/a\"\nname = \"12\"",
                r#"routes[0].name: "12" is all digits"#,
            ),
            ("watch_interval = \"1ms\"", "watch_interval"),
            ("watch_interval = \"2h\"", "watch_interval"),
            (
                "[guard]\ntimeout = \"2m\"",
                "guard.timeout: 120s is longer than the limit of 60s",
            ),
            (
                "[[verified_bots.bots]]\nname = \"x\"\nuser_agent_token = \"X\"\nranges = []",
                "verified_bots.bots[0]",
            ),
        ];
        for (text, expected) in cases {
            let config: BotScoreConfig = toml::from_str(text).unwrap();
            let violations = config.validate().unwrap_err().to_string();
            assert!(violations.contains(expected), "{text}: {violations}");
            let built = config.layer().unwrap_err().to_string();
            assert!(built.contains(expected), "{text}: {built}");
        }
        assert!(BotScoreConfig::default().validate().is_ok());
        let documented: BotScoreConfig = toml::from_str(
            "[[routes]]\nprefix = \"/login\"\nchallenge_at_or_below = 29\nblock_at_or_below = 1\n",
        )
        .unwrap();
        assert!(documented.validate().is_ok());
        let unwatched: BotScoreConfig = toml::from_str("watch_interval = \"0s\"").unwrap();
        assert!(unwatched.validate().is_ok(), "0s: not watched");
    }

    #[test]
    fn the_guard_table_is_failsafes_and_reaches_the_layer() {
        let config: BotScoreConfig = toml::from_str(
            "[guard]\nfailure_mode = \"closed\"\ntimeout = \"7ms\"\nfailure_status = 429\n",
        )
        .unwrap();
        let layer = config.layer().unwrap();
        let handle = layer.handle();
        assert_eq!(handle.failure_mode(), ravelin_failsafe::FailureMode::Closed);
        assert_eq!(handle.timeout(), Duration::from_millis(7));
        assert_eq!(handle.name(), crate::GUARD_NAME);
        let defaults = BotScoreConfig::default().layer().unwrap().handle();
        assert_eq!(defaults.failure_mode(), ravelin_failsafe::FailureMode::Open);
        assert_eq!(defaults.timeout(), ravelin_failsafe::DEFAULT_TIMEOUT);
    }

    #[test]
    fn model_path_gives_a_watchable_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = BotScoreConfig {
            feature_file: Some(dir.path().join("missing.json")),
            ..BotScoreConfig::default()
        };
        let layer = config.layer().unwrap();
        let store = layer.guard().scorer().store().unwrap();
        assert!(store.current().meta().is_default());
    }
}
