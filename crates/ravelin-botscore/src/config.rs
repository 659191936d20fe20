//! [`BotScoreConfig`]: the whole module from a configuration file section.

use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use ravelin_config::{Validate, Violations};
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
/// model = "/etc/ravelin/botscore.json"
/// watch_interval = "10s"
/// reasons_header = "x-bot-score-reasons"
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
/// request and enforces nothing.
///
/// [`Validate::validate`] refuses everything [`guard`](Self::guard) and
/// [`layer`](Self::layer) would, naming each field (`routes[0].prefix: "login" must start
/// with /`), so a configuration check (`--check`) or a `ravelin_config::Store` of this type
/// catches it before anything is built. A loader that nests only the routes calls
/// [`validate_routes`](crate::validate_routes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotScoreConfig {
    /// The feature file. Absent: the shipped model only.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// How often the feature file is checked for changes (default 10 s).
    #[serde(default = "default_watch_interval", with = "humantime_serde")]
    pub watch_interval: Duration,
    /// The guard's time budget (default 100 ms, the failsafe default; scoring takes
    /// microseconds).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
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
    /// A request header the TLS terminator sets (and overwrites) with the JA4 fingerprint.
    #[serde(default)]
    pub fingerprint_header: Option<String>,
}

fn default_watch_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_timeout() -> Duration {
    ravelin_failsafe::DEFAULT_TIMEOUT
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
            model: None,
            watch_interval: default_watch_interval(),
            timeout: default_timeout(),
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
        if self.timeout.is_zero() {
            v.push(
                "timeout",
                "must be greater than zero (every evaluation would time out)",
            );
        } else if self.timeout > ravelin_failsafe::MAX_GUARD_TIMEOUT {
            v.push(
                "timeout",
                format!(
                    "{:?} is longer than the limit of {:?}: a guard's budget is per request",
                    self.timeout,
                    ravelin_failsafe::MAX_GUARD_TIMEOUT
                ),
            );
        }
        v.into_result()
    }
}

impl BotScoreConfig {
    /// The scorer: from [`model`](Self::model) through [`model_store`](crate::model_store)
    /// (shipped model until a valid file is read), or the shipped model alone.
    ///
    /// # Errors
    /// [`BuildError::Model`] only when the shipped model is unusable and the file is too.
    pub fn scorer(&self) -> Result<Scorer, BuildError> {
        match &self.model {
            Some(path) => Scorer::from_file(path).map_err(|r| BuildError::Model(r.to_string())),
            None => Scorer::builtin().map_err(|e| BuildError::Model(e.to_string())),
        }
    }

    /// The guard, scoring with `scorer`.
    ///
    /// # Errors
    /// [`BuildError::Config`] with every violation [`Validate::validate`] finds (invalid header
    /// names, routes, verified-bot entries, a zero timeout).
    pub fn guard(&self, scorer: Scorer) -> Result<BotGuard, BuildError> {
        self.validate().map_err(BuildError::Config)?;
        let header = |field: &str, value: &str| {
            HeaderName::from_bytes(value.as_bytes()).map_err(|_| {
                BuildError::Header(format!("{field}: {value:?} is not a valid header name"))
            })
        };
        let mut builder = BotGuard::builder(scorer)
            .routes(self.routes.iter().cloned())
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
    /// configured timeout. Start following the file with
    /// `layer.guard().scorer().store().map(|s| s.watch(config.watch_interval))` inside a Tokio
    /// runtime. For a kill switch or other guard settings, build the layer yourself:
    /// `BotScoreLayer::builder(config.guard(config.scorer()?)?).timeout(config.timeout)…`.
    ///
    /// # Errors
    /// [`BuildError`].
    pub fn layer(&self) -> Result<BotScoreLayer, BuildError> {
        let guard = self.guard(self.scorer()?)?;
        BotScoreLayer::builder(guard)
            .timeout(self.timeout)
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
            ("timeout = \"0s\"", "timeout: must be greater than zero"),
            (
                "timeout = \"2m\"",
                "timeout: 120s is longer than the limit of 60s",
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
    }

    #[test]
    fn model_path_gives_a_watchable_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = BotScoreConfig {
            model: Some(dir.path().join("missing.json")),
            ..BotScoreConfig::default()
        };
        let layer = config.layer().unwrap();
        let store = layer.guard().scorer().store().unwrap();
        assert!(store.current().meta().is_default());
    }
}
