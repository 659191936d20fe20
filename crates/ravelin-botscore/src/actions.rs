//! What to do with a scored request, per route.

use http::StatusCode;
use ravelin_config::Violations;
use ravelin_http::{FixedResponse, FixedResponseError, MatchPath, PathPrefix};
use ravelin_primitives::{Enforcement, KillSwitch};
use serde::{Deserialize, Serialize};

use crate::score::BotScore;

/// Maximum number of routes in a policy.
pub const MAX_ROUTES: usize = 1024;
/// Maximum size of a challenge or block body: [`ravelin_http::MAX_FIXED_BODY_BYTES`], the
/// bound of every fixed answer (the rate limiter's denial too).
pub const MAX_BODY_BYTES: usize = ravelin_http::MAX_FIXED_BODY_BYTES;

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

/// A response the guard answers with instead of calling the origin.
///
/// It is sent as the edge's own answer ([`ravelin_http::FixedResponse`], the one checked fixed
/// answer every Ravelin layer shares): the configured status, `content_type` and body, with
/// `Cache-Control: no-store` (a verdict about one request must not be cached for others) and
/// `X-Content-Type-Options: nosniff` (a browser must not read a challenge or block page as
/// anything but its declared type). Earlier versions sent no `X-Content-Type-Options`.
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

    /// Records what makes this template unusable, under `what` (`routes[0].challenge`): each
    /// problem [`FixedResponse::new`] finds, as `{what}.{field}`.
    fn check(&self, what: &str, v: &mut Violations) {
        if let Err(err) = self.compile() {
            for problem in err.problems() {
                v.push(format!("{what}.{}", problem.field()), problem.to_string());
            }
        }
    }

    /// The response to send, checked by [`FixedResponse::new`], or every reason it is not
    /// usable (what [`check`](Self::check) records).
    pub(crate) fn compile(&self) -> Result<FixedResponse, FixedResponseError> {
        FixedResponse::new(self.status, &self.content_type, self.body.clone())
    }
}

/// The policy of one path prefix.
///
/// The prefix is a [`PathPrefix`], the one definition every Ravelin module matches paths with:
/// segment-aligned (`/login` covers `/login` and `/login/x`, never `/loginx`; `/api/` covers
/// what lies below `/api/`, not `/api` itself), compared with the request's normalized path
/// ([`MatchPath::of`]: the ingress stage's, else the URI path with case folded, dot segments,
/// repeated slashes, unreserved escapes and `;parameters` resolved). So `/LOGIN`, `//login`,
/// `/x/../login`, `/%6cogin` and `/login;a=b` all meet the `/login` route.
///
/// Decision order: a verified bot is allowed (annotated) when `allow_verified_bots`; a score at or
/// below `block_at_or_below` is blocked; at or below `challenge_at_or_below` challenged; anything
/// else annotated (or allowed without headers when `annotate` is off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix, matched on whole segments of the normalized path (`/api` matches `/api` and
    /// `/api/x`, not `/apix`; see [`Route`]). Must start with `/`.
    pub prefix: String,
    /// The route's name, for its kill switch (`botscore.route.<name>`, see
    /// [`Route::switch_name`]): 1 to 64 of `A-Z a-z 0-9 _ - .`, unique among the routes, and
    /// not all digits (`"0"` would take the switch of an unnamed `routes[0]`).
    /// Absent: the switch is named by the route's index in the list (`botscore.route.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The route's kill switch as the document sets it: a killed route is skipped and the
    /// default route decides for its paths (no challenge, no block unless the default route
    /// has them). With a switchboard ([`BotScoreConfig::guard_with_switches`]) the switch
    /// named [`Route::switch_name`] is read instead; its loader sets it from this value when
    /// it changes.
    ///
    /// [`BotScoreConfig::guard_with_switches`]: crate::BotScoreConfig::guard_with_switches
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub killed: bool,
    /// The switch read per request (from a switchboard), attached by the loader; not part of
    /// the document or of the route's value.
    #[serde(skip)]
    pub(crate) switch: RouteSwitch,
    /// `enforce` (default: challenge and block as configured) or `shadow` (compute the
    /// decision, log and count it, but let the request through annotated: for trying thresholds
    /// on live traffic before enforcing them).
    #[serde(default)]
    pub mode: Enforcement,
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

/// The prefix of the routes' kill switches in a switchboard: `botscore.route.<name>`.
pub(crate) const ROUTE_SWITCH_PREFIX: &str = "botscore.route.";

/// A route's kill switch as attached by its loader; equal whatever it holds (it is not part of
/// the route's value).
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteSwitch(pub(crate) Option<KillSwitch>);

impl PartialEq for RouteSwitch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RouteSwitch {}

impl Route {
    /// The name of this route's kill switch when it is `routes[index]`:
    /// `botscore.route.<name>`, or `botscore.route.<index>` for a route without a name.
    pub fn switch_name(&self, index: usize) -> String {
        match &self.name {
            Some(name) => format!("{ROUTE_SWITCH_PREFIX}{name}"),
            None => format!("{ROUTE_SWITCH_PREFIX}{index}"),
        }
    }

    /// Names the route (see [`Route::name`]).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the route's kill switch as the document does (see [`Route::killed`]).
    pub fn killed(mut self, killed: bool) -> Self {
        self.killed = killed;
        self
    }

    /// Reads the kill switch `switch` per request instead of [`Route::killed`].
    pub(crate) fn with_switch(mut self, switch: KillSwitch) -> Self {
        self.switch = RouteSwitch(Some(switch));
        self
    }

    /// A route that annotates requests under `prefix` and enforces nothing (the default policy).
    pub fn annotate(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            name: None,
            killed: false,
            switch: RouteSwitch::default(),
            mode: Enforcement::Enforce,
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
        self.mode = Enforcement::Shadow;
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

    /// Records everything that makes this route unusable, each violation under `at`
    /// (`routes[2]` → `routes[2].prefix: "login" must start with /`). The default route's
    /// prefix is ignored (it covers every path), so it is checked with `check_prefix` off.
    fn check_into(&self, at: &str, check_prefix: bool, v: &mut Violations) {
        if check_prefix && let Err(error) = PathPrefix::new(self.prefix.as_str()) {
            v.push(format!("{at}.prefix"), error.to_string());
        }
        for (field, value) in [
            ("challenge_at_or_below", self.challenge_at_or_below),
            ("block_at_or_below", self.block_at_or_below),
        ] {
            if let Some(score) = value
                && !(1..=99).contains(&score)
            {
                v.push(
                    format!("{at}.{field}"),
                    format!("{score} is outside the score range 1..=99"),
                );
            }
        }
        self.challenge.check(&format!("{at}.challenge"), v);
        self.block.check(&format!("{at}.block"), v);
    }
}

/// Checks per-prefix routes the way building a [`BotGuard`](crate::BotGuard) does, without
/// building one: every violation, named by its field path in the list as configured
/// (`routes[0].prefix: "login" must start with /`, `routes[3].block.status: 200 is not a 4xx or
/// 5xx status`). A configuration loader (a proxy's `--check`, a `ravelin_config::Validate`
/// impl) calls this on the routes it nests, and prefixes the paths with its own section name.
///
/// # Errors
/// Every violation, when there is any: more than [`MAX_ROUTES`] routes, a prefix that
/// [`PathPrefix::new`] refuses (not starting with `/`, holding `?` or `#`, longer than 1024
/// bytes), a threshold outside 1..=99, an unusable challenge or block response.
pub fn validate_routes(routes: &[Route]) -> Result<(), Violations> {
    let mut v = Violations::new();
    if v.check_count("routes", "routes", routes.len(), MAX_ROUTES) {
        for (i, route) in routes.iter().enumerate() {
            route.check_into(&format!("routes[{i}]"), true, &mut v);
            if let Some(name) = &route.name {
                if !valid_route_name(name) {
                    v.push(
                        format!("routes[{i}].name"),
                        format!("{name:?} must be 1 to 64 characters of A-Z a-z 0-9 _ - ."),
                    );
                } else if name.bytes().all(|b| b.is_ascii_digit()) {
                    v.push(
                        format!("routes[{i}].name"),
                        format!(
                            "{name:?} is all digits, the kill switch name of an unnamed route \
                             ({ROUTE_SWITCH_PREFIX}{name}); include a letter or one of _ - ."
                        ),
                    );
                }
                if let Some(first) = routes
                    .iter()
                    .position(|r| r.name.as_deref() == Some(name.as_str()))
                    && first < i
                {
                    v.push(
                        format!("routes[{i}].name"),
                        format!(
                            "{name:?} is also the name of routes[{first}]; names must be unique"
                        ),
                    );
                }
            }
        }
    }
    v.into_result()
}

/// A route name: what a switch name and a URL path segment can hold.
fn valid_route_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Checks the policy of unmatched paths (its prefix is ignored), paths under `default_route`.
///
/// # Errors
/// Every violation: thresholds outside 1..=99, unusable challenge or block responses.
pub fn validate_default_route(route: &Route) -> Result<(), Violations> {
    let mut v = Violations::new();
    route.check_into("default_route", false, &mut v);
    if route.killed {
        v.push(
            "default_route.killed",
            "the default route is what a killed route falls back to and cannot be killed (kill the module instead)",
        );
    }
    if route.name.is_some() {
        v.push(
            "default_route.name",
            "the default route has no kill switch to name",
        );
    }
    v.into_result()
}

impl Default for Route {
    fn default() -> Self {
        Self::annotate("/")
    }
}

/// Routes compiled for lookup: longest matching prefix wins.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    /// Sorted by descending prefix specificity; the catch-all default is last.
    entries: Box<[CompiledRoute]>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRoute {
    pub(crate) route: Route,
    prefix: PathPrefix,
    /// The route's kill switch: the one its loader attached, else a standalone one set from
    /// `killed`. Read per request (an atomic load).
    kill: KillSwitch,
    pub(crate) challenge: FixedResponse,
    pub(crate) block: FixedResponse,
}

impl CompiledRoute {
    /// `None` for a route that does not pass [`Route::check_into`].
    fn new(route: Route) -> Option<Self> {
        let kill = route.switch.0.clone().unwrap_or_else(|| {
            let switch = KillSwitch::standalone(route.switch_name(0));
            if route.killed {
                switch.engage("routes document");
            }
            switch
        });
        Some(Self {
            kill,
            prefix: PathPrefix::new(route.prefix.as_str()).ok()?,
            challenge: route.challenge.compile().ok()?,
            block: route.block.compile().ok()?,
            route,
        })
    }
}

impl Routes {
    /// Validates (as [`validate_routes`] and [`validate_default_route`]) and compiles: each
    /// prefix becomes a [`PathPrefix`] here, once, not per request.
    pub(crate) fn compile(routes: Vec<Route>, default: Route) -> Result<Routes, Violations> {
        let mut v = Violations::new();
        if let Err(routes) = validate_routes(&routes) {
            v.merge(routes);
        }
        if let Err(default) = validate_default_route(&default) {
            v.merge(default);
        }
        v.into_result()?;
        let mut entries = Vec::with_capacity(routes.len().saturating_add(1));
        for route in routes {
            entries.push(CompiledRoute::new(route).ok_or_else(unusable)?);
        }
        // Stable: among equally specific prefixes the first configured wins.
        entries.sort_by_key(|r| std::cmp::Reverse(r.prefix.specificity()));
        // The default route has no kill switch: it is what a killed route falls back to.
        let default = Route {
            prefix: "/".into(),
            killed: false,
            switch: RouteSwitch::default(),
            ..default
        };
        entries.push(CompiledRoute::new(default).ok_or_else(unusable)?);
        Ok(Routes {
            entries: entries.into_boxed_slice(),
        })
    }

    /// The route of the longest prefix `path` lies under (the default when no other); when
    /// that route's kill switch is engaged, the default route (last, never killed).
    pub(crate) fn lookup(&self, path: &MatchPath) -> Option<&CompiledRoute> {
        let found = self.entries.iter().find(|r| r.prefix.matches(path))?;
        if found.kill.is_engaged() {
            return self.entries.last();
        }
        Some(found)
    }
}

/// Validation and compilation disagree: a bug, reported rather than panicked on.
fn unusable() -> Violations {
    Violations::one(
        "routes",
        "a route passed validation but could not be compiled",
    )
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

    /// The match path of a raw request path, as a request without an ingress stage has it.
    fn path(raw: &str) -> MatchPath {
        let uri: http::Uri = raw.parse().unwrap();
        MatchPath::of(&uri, &http::Extensions::new()).into_owned()
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let routes = Routes::compile(
            vec![
                Route::allow("/api"),
                Route::annotate("/api/login").block_at_or_below(5),
                Route::annotate("/api/admin/").block_at_or_below(9),
            ],
            Route::annotate("/"),
        )
        .unwrap();
        let prefix = |p: &str| routes.lookup(&path(p)).unwrap().route.prefix.clone();
        assert_eq!(prefix("/api/login"), "/api/login");
        assert_eq!(prefix("/api/login/x"), "/api/login");
        assert_eq!(prefix("/api/loginx"), "/api");
        assert_eq!(prefix("/apix"), "/");
        assert_eq!(prefix("/"), "/");
        // A prefix ending in `/` covers what lies below it (ravelin_http::PathPrefix, the one
        // definition every module uses), not the bare path.
        assert_eq!(prefix("/api/admin/users"), "/api/admin/");
        assert_eq!(prefix("/api/admin/"), "/api/admin/");
        assert_eq!(prefix("/api/admin"), "/api");
    }

    #[test]
    fn a_killed_route_falls_back_to_the_default_route() {
        let live = Route::annotate("/login").challenge_at_or_below(99);
        let killed = Route::annotate("/api")
            .named("api")
            .block_at_or_below(99)
            .killed(true);
        let routes = Routes::compile(vec![live, killed], Route::allow("/")).unwrap();
        assert_eq!(
            routes.lookup(&path("/login")).unwrap().route.prefix,
            "/login"
        );
        // The killed route's paths get the default route's decision (allow), not its block.
        let decided = routes.lookup(&path("/api/x")).unwrap();
        assert_eq!(decided.route.prefix, "/");
        assert_eq!(decided.route.decide(&scored(1, false)), Action::Allow);

        // With a switch attached, the switch decides, and flips take effect at once.
        let switch = KillSwitch::standalone("botscore.route.login");
        let login = Route::annotate("/login")
            .challenge_at_or_below(99)
            .with_switch(switch.clone());
        assert_eq!(login.switch_name(0), "botscore.route.0");
        assert_eq!(
            login.clone().named("login").switch_name(0),
            "botscore.route.login"
        );
        let routes = Routes::compile(vec![login], Route::default()).unwrap();
        for i in 0..20 {
            switch.set(i % 2 == 0, "test");
            let prefix = &routes.lookup(&path("/login")).unwrap().route.prefix;
            assert_eq!(prefix, if i % 2 == 0 { "/" } else { "/login" });
        }
    }

    #[test]
    fn route_names_are_checked_and_the_default_route_cannot_be_killed() {
        let err = validate_routes(&[Route::annotate("/a").named("a b")]).unwrap_err();
        assert!(err.to_string().contains("routes[0].name"), "{err}");
        let err = validate_routes(&[
            Route::annotate("/a").named("x"),
            Route::annotate("/b").named("x"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("routes[1].name"), "{err}");
        // An all-digit name would share the switch of an unnamed route at that index.
        let err = validate_routes(&[Route::annotate("/a"), Route::annotate("/b").named("0")])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "routes[1].name: \"0\" is all digits, the kill switch name of an unnamed route \
             (botscore.route.0); include a letter or one of _ - ."
        );
        let err = validate_routes(&[Route::annotate("/a").named("2025")]).unwrap_err();
        assert_eq!(err.total(), 1, "{err}");
        for name in ["v1", "1.0", "0_", "-1", "route-7"] {
            assert!(
                validate_routes(&[Route::annotate("/a").named(name)]).is_ok(),
                "{name}"
            );
        }
        let err = validate_default_route(&Route::default().killed(true)).unwrap_err();
        assert!(err.to_string().contains("default_route.killed"), "{err}");
    }

    #[test]
    fn every_spelling_of_a_path_meets_its_route() {
        let routes = Routes::compile(
            vec![Route::annotate("/login").block_at_or_below(99)],
            Route::annotate("/"),
        )
        .unwrap();
        for spelling in [
            "/login",
            "/LOGIN",
            "//login",
            "/./login",
            "/x/../login",
            "/%6cogin",
            "/login;a=b",
            "/Login/sso",
        ] {
            let route = routes.lookup(&path(spelling)).unwrap();
            assert_eq!(route.route.prefix, "/login", "{spelling}");
        }
        assert_eq!(routes.lookup(&path("/loginx")).unwrap().route.prefix, "/");
        // Configured spellings are normalized too.
        let routes = Routes::compile(vec![Route::annotate("/%6Cogin/")], Route::default()).unwrap();
        assert_eq!(
            routes.lookup(&path("/LOGIN/x")).unwrap().route.prefix,
            "/%6Cogin/"
        );
    }

    #[test]
    fn bad_routes_are_rejected_with_the_field() {
        let err = Routes::compile(
            vec![Route::annotate("/x").challenge_at_or_below(0)],
            Route::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("challenge_at_or_below"), "{err}");
        let err = Routes::compile(
            vec![
                Route::annotate("/x")
                    .challenge_response(ResponseTemplate::new(StatusCode::OK, "hi")),
            ],
            Route::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a 4xx or 5xx"), "{err}");
        assert!(Routes::compile(vec![Route::annotate("nope")], Route::default()).is_err());
    }

    #[test]
    fn violations_name_the_route_as_configured() {
        // Indexes are those of the list as written, not of the longest-first order.
        let routes = vec![
            Route::annotate("/a"),
            Route::annotate("/longer/prefix").block_at_or_below(100),
            Route::annotate("login"),
            Route::annotate("/q?x=1"),
            Route::annotate(format!("/{}", "a".repeat(1100))),
        ];
        let err = validate_routes(&routes).unwrap_err().to_string();
        assert!(
            err.contains("routes[1].block_at_or_below: 100 is outside the score range 1..=99"),
            "{err}"
        );
        assert!(
            err.contains(r#"routes[2].prefix: "login" must start with /"#),
            "{err}"
        );
        assert!(err.contains("routes[3].prefix"), "{err}");
        assert!(err.contains("routes[4].prefix"), "{err}");
        assert!(!err.contains("routes[0]"), "{err}");
        // Building refuses exactly what validation refuses.
        let built = Routes::compile(routes, Route::default())
            .unwrap_err()
            .to_string();
        assert_eq!(built, err);
        // The default route's prefix is ignored; the rest of it is checked.
        assert!(validate_default_route(&Route::annotate("whatever")).is_ok());
        let err = validate_default_route(
            &Route::annotate("/").block_response(ResponseTemplate::new(StatusCode::OK, "")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("default_route.block.status: 200 is not a 4xx or 5xx status"),
            "{err}"
        );
        let too_many = vec![Route::annotate("/x"); MAX_ROUTES + 1];
        assert!(
            validate_routes(&too_many)
                .unwrap_err()
                .to_string()
                .contains("1025 routes exceeds limit 1024")
        );
    }

    #[test]
    fn responses_are_not_cacheable_nor_sniffed() {
        let r = ResponseTemplate::new(StatusCode::TOO_MANY_REQUESTS, "slow down")
            .content_type("text/html; charset=utf-8")
            .compile()
            .unwrap()
            .to_response();
        assert_eq!(r.status(), 429);
        let headers = r.headers();
        assert_eq!(headers.len(), 3, "{headers:?}");
        assert_eq!(
            headers[http::header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(headers[http::header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[http::header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.body().as_ref(), b"slow down");
    }

    #[test]
    fn a_template_is_checked_field_by_field() {
        let mut v = Violations::new();
        ResponseTemplate::new(StatusCode::OK, "x".repeat(MAX_BODY_BYTES + 1))
            .content_type("bad\nvalue")
            .check("routes[0].block", &mut v);
        assert_eq!(
            v.to_string(),
            "routes[0].block.status: 200 is not a 4xx or 5xx status; \
             routes[0].block.content_type: \"bad\\nvalue\" is not a valid header value; \
             routes[0].block.body: 65537 bytes exceeds the limit of 65536"
        );
    }
}
