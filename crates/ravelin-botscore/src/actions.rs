//! What to do with a scored request, per route.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::score::BotScore;

/// Maximum number of routes in a policy.
pub const MAX_ROUTES: usize = 1024;
/// Maximum size of a challenge or block body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Pass, without forwarding score headers (the extension is still set).
    Allow,
    /// Pass and forward the score headers to the origin.
    Annotate,
    /// Answer with the route's challenge response.
    Challenge,
    /// Answer with the route's block response.
    Block,
}

impl Action {
    /// A short stable name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Annotate => "annotate",
            Action::Challenge => "challenge",
            Action::Block => "block",
        }
    }
}

/// Enforce decisions or only log them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Challenge and block as configured.
    #[default]
    Enforce,
    /// Compute the decision, log it and count it, but let the request through (annotated):
    /// for trying thresholds on live traffic before enforcing them.
    Shadow,
}

/// A response the guard answers with instead of calling the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseTemplate {
    /// Status code (400..=599; e.g. 403 or 429).
    pub status: u16,
    /// `content-type` of the body.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The body (at most [`MAX_BODY_BYTES`]).
    #[serde(default)]
    pub body: String,
}

fn default_content_type() -> String {
    "text/plain; charset=utf-8".into()
}

impl ResponseTemplate {
    /// A template with `status`, plain-text `body`.
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status: status.as_u16(),
            content_type: default_content_type(),
            body: body.into(),
        }
    }

    /// Sets the content type (e.g. `text/html; charset=utf-8` for an operator's challenge page).
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// The default challenge: 403 with a short explanation.
    pub fn default_challenge() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "This request looks automated. If you are using a browser, enable JavaScript and cookies and try again.\n",
        )
    }

    /// The default block: 403 `Forbidden`.
    pub fn default_block() -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden\n")
    }

    pub(crate) fn compile(&self, what: &str) -> Result<CompiledResponse, String> {
        let status = StatusCode::from_u16(self.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .ok_or_else(|| format!("{what}.status: {} is not a 4xx or 5xx status", self.status))?;
        let content_type = HeaderValue::from_str(&self.content_type).map_err(|_| {
            format!(
                "{what}.content_type: {:?} is not a valid header value",
                self.content_type
            )
        })?;
        if self.body.len() > MAX_BODY_BYTES {
            return Err(format!(
                "{what}.body: {} bytes exceeds the limit of {MAX_BODY_BYTES}",
                self.body.len()
            ));
        }
        Ok(CompiledResponse {
            status,
            content_type,
            body: Bytes::from(self.body.clone()),
        })
    }
}

/// A response ready to send: cloning it is a reference-count increment.
#[derive(Debug, Clone)]
pub(crate) struct CompiledResponse {
    status: StatusCode,
    content_type: HeaderValue,
    body: Bytes,
}

impl CompiledResponse {
    pub(crate) fn to_response(&self) -> Response<Bytes> {
        let mut response = Response::new(self.body.clone());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        // A verdict about one request must not be cached for others.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The policy of one path prefix.
///
/// Decision order: a verified bot is allowed (annotated) when `allow_verified_bots`; a score at or
/// below `block_at_or_below` is blocked; at or below `challenge_at_or_below` challenged; anything
/// else annotated (or allowed without headers when `annotate` is off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix, matched on whole segments (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub prefix: String,
    /// Enforce or shadow.
    #[serde(default)]
    pub mode: Mode,
    /// Forward score headers to the origin.
    #[serde(default = "yes")]
    pub annotate: bool,
    /// Challenge scores at or below this (1..=99).
    #[serde(default)]
    pub challenge_at_or_below: Option<u8>,
    /// Block scores at or below this (1..=99).
    #[serde(default)]
    pub block_at_or_below: Option<u8>,
    /// Let verified bots through regardless of score.
    #[serde(default = "yes")]
    pub allow_verified_bots: bool,
    /// The challenge response (default [`ResponseTemplate::default_challenge`]).
    #[serde(default = "ResponseTemplate::default_challenge")]
    pub challenge: ResponseTemplate,
    /// The block response (default [`ResponseTemplate::default_block`]).
    #[serde(default = "ResponseTemplate::default_block")]
    pub block: ResponseTemplate,
}

fn yes() -> bool {
    true
}

impl Route {
    /// A route that annotates requests under `prefix` and enforces nothing (the default policy).
    pub fn annotate(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            mode: Mode::Enforce,
            annotate: true,
            challenge_at_or_below: None,
            block_at_or_below: None,
            allow_verified_bots: true,
            challenge: ResponseTemplate::default_challenge(),
            block: ResponseTemplate::default_block(),
        }
    }

    /// A route that lets everything under `prefix` through without score headers.
    pub fn allow(prefix: impl Into<String>) -> Self {
        Self {
            annotate: false,
            ..Self::annotate(prefix)
        }
    }

    /// Challenges scores at or below `score`.
    pub fn challenge_at_or_below(mut self, score: u8) -> Self {
        self.challenge_at_or_below = Some(score);
        self
    }

    /// Blocks scores at or below `score`.
    pub fn block_at_or_below(mut self, score: u8) -> Self {
        self.block_at_or_below = Some(score);
        self
    }

    /// Replaces the challenge response.
    pub fn challenge_response(mut self, template: ResponseTemplate) -> Self {
        self.challenge = template;
        self
    }

    /// Replaces the block response.
    pub fn block_response(mut self, template: ResponseTemplate) -> Self {
        self.block = template;
        self
    }

    /// Only logs decisions.
    pub fn shadow(mut self) -> Self {
        self.mode = Mode::Shadow;
        self
    }

    /// Whether verified bots bypass the thresholds (default true).
    pub fn allow_verified_bots(mut self, allow: bool) -> Self {
        self.allow_verified_bots = allow;
        self
    }

    /// The decision for `score` on this route.
    pub fn decide(&self, score: &BotScore) -> Action {
        let pass = if self.annotate {
            Action::Annotate
        } else {
            Action::Allow
        };
        if score.verified_bot() && self.allow_verified_bots {
            return pass;
        }
        let s = score.score().get();
        if self.block_at_or_below.is_some_and(|t| s <= t) {
            Action::Block
        } else if self.challenge_at_or_below.is_some_and(|t| s <= t) {
            Action::Challenge
        } else {
            pass
        }
    }

    fn check(&self, i: usize) -> Result<(), String> {
        let what = format!("routes[{i}]");
        if !self.prefix.starts_with('/') || self.prefix.len() > 1024 {
            return Err(format!(
                "{what}.prefix: {:?} must start with '/' and be at most 1024 bytes",
                self.prefix
            ));
        }
        for (field, value) in [
            ("challenge_at_or_below", self.challenge_at_or_below),
            ("block_at_or_below", self.block_at_or_below),
        ] {
            if let Some(v) = value
                && !(1..=99).contains(&v)
            {
                return Err(format!(
                    "{what}.{field}: {v} is outside the score range 1..=99"
                ));
            }
        }
        Ok(())
    }

    fn matches(&self, path: &str) -> bool {
        let prefix = self.prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return true;
        }
        match path.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl Default for Route {
    fn default() -> Self {
        Self::annotate("/")
    }
}

/// Routes compiled for lookup: longest matching prefix wins.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    /// Sorted by descending prefix length; the catch-all default is last.
    entries: Box<[CompiledRoute]>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRoute {
    pub(crate) route: Route,
    pub(crate) challenge: CompiledResponse,
    pub(crate) block: CompiledResponse,
}

impl Routes {
    pub(crate) fn compile(mut routes: Vec<Route>, default: Route) -> Result<Routes, String> {
        if routes.len() > MAX_ROUTES {
            return Err(format!(
                "{} routes exceeds the limit of {MAX_ROUTES}",
                routes.len()
            ));
        }
        // Stable: among equal prefixes the first configured wins.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.trim_end_matches('/').len()));
        routes.push(Route {
            prefix: "/".into(),
            ..default
        });
        let mut entries = Vec::with_capacity(routes.len());
        for (i, route) in routes.into_iter().enumerate() {
            route.check(i)?;
            let challenge = route.challenge.compile(&format!("routes[{i}].challenge"))?;
            let block = route.block.compile(&format!("routes[{i}].block"))?;
            entries.push(CompiledRoute {
                route,
                challenge,
                block,
            });
        }
        Ok(Routes {
            entries: entries.into_boxed_slice(),
        })
    }

    pub(crate) fn lookup(&self, path: &str) -> Option<&CompiledRoute> {
        self.entries.iter().find(|r| r.route.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{Class, Reasons, Score};

    fn scored(n: u8, verified: bool) -> BotScore {
        let mut s = BotScore::new(
            Score::new(n).unwrap(),
            Class::LikelyHuman,
            1,
            Reasons::new(),
        );
        s.set_verified_bot(verified);
        s
    }

    #[test]
    fn thresholds_and_verified_bots() {
        let route = Route::annotate("/login")
            .challenge_at_or_below(29)
            .block_at_or_below(1);
        assert_eq!(route.decide(&scored(1, false)), Action::Block);
        assert_eq!(route.decide(&scored(2, false)), Action::Challenge);
        assert_eq!(route.decide(&scored(29, false)), Action::Challenge);
        assert_eq!(route.decide(&scored(30, false)), Action::Annotate);
        assert_eq!(route.decide(&scored(1, true)), Action::Annotate);
        let strict = route.clone().allow_verified_bots(false);
        assert_eq!(strict.decide(&scored(1, true)), Action::Block);
        assert_eq!(
            Route::allow("/health").decide(&scored(1, false)),
            Action::Allow
        );
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let routes = Routes::compile(
            vec![
                Route::allow("/api"),
                Route::annotate("/api/login/").block_at_or_below(5),
            ],
            Route::annotate("/"),
        )
        .unwrap();
        let prefix = |p: &str| routes.lookup(p).unwrap().route.prefix.clone();
        assert_eq!(prefix("/api/login"), "/api/login/");
        assert_eq!(prefix("/api/login/x"), "/api/login/");
        assert_eq!(prefix("/api/loginx"), "/api");
        assert_eq!(prefix("/apix"), "/");
        assert_eq!(prefix("/"), "/");
    }

    #[test]
    fn bad_routes_are_rejected_with_the_field() {
        let err = Routes::compile(
            vec![Route::annotate("/x").challenge_at_or_below(0)],
            Route::default(),
        )
        .unwrap_err();
        assert!(err.contains("challenge_at_or_below"), "{err}");
        let err = Routes::compile(
            vec![
                Route::annotate("/x")
                    .challenge_response(ResponseTemplate::new(StatusCode::OK, "hi")),
            ],
            Route::default(),
        )
        .unwrap_err();
        assert!(err.contains("not a 4xx or 5xx"), "{err}");
        assert!(Routes::compile(vec![Route::annotate("nope")], Route::default()).is_err());
    }

    #[test]
    fn responses_are_not_cacheable() {
        let r = ResponseTemplate::new(StatusCode::TOO_MANY_REQUESTS, "slow down")
            .compile("x")
            .unwrap()
            .to_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(r.body().as_ref(), b"slow down");
    }
}
