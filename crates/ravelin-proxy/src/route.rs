//! Routing: host and path prefix → upstream.
//!
//! Routes compare the request's [`MatchPath`] (the [`RequestIdentity`]'s when the ingress stage
//! ran, else the lenient normalization of the URI path) against a [`PathPrefix`], and its
//! [`effective_host`]: the same path and host the cache, the rate limiter and the bot scorer
//! read, so a request cannot be routed by one spelling and policed by another.
//!
//! [`RequestIdentity`]: ravelin_http::RequestIdentity

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ravelin_http::{MatchPath, PathPrefix, PrefixError, effective_host};

use crate::forward::{Resolve, Target};

/// The longest route host accepted (a DNS name's limit).
const MAX_HOST_BYTES: usize = 253;

/// One route: an optional host, a path prefix, and where matching requests go.
#[derive(Debug, Clone)]
pub struct Route {
    host: Option<String>,
    /// `None` when the configured prefix was refused: the route then matches nothing.
    prefix: Option<PathPrefix>,
    configured_prefix: String,
    target: Target,
    name: Arc<str>,
}

impl Route {
    /// A route for requests whose path lies under `path_prefix` to `target`. The prefix is a
    /// [`PathPrefix`]: segment-aligned (`/api` matches `/api` and `/api/x`, not `/apiary`; a
    /// prefix ending in `/` matches what lies below it), normalized like request paths, and
    /// compared case-insensitively against case-folded paths (the ingress default).
    ///
    /// A missing leading `/` is added. A prefix [`PathPrefix::new`] refuses (longer than 1 KiB,
    /// holding `?` or `#`) makes a route that matches nothing; check configured prefixes with
    /// [`check_prefix`](Self::check_prefix) first.
    pub fn new(name: impl Into<String>, path_prefix: impl Into<String>, target: Target) -> Self {
        let mut configured_prefix = path_prefix.into();
        if !configured_prefix.starts_with('/') {
            configured_prefix.insert(0, '/');
        }
        let prefix = PathPrefix::new(configured_prefix.as_str()).ok();
        Self {
            host: None,
            prefix,
            configured_prefix,
            target,
            name: Arc::from(name.into()),
        }
    }

    /// Checks a configured path prefix as [`new`](Self::new) will read it (a missing leading
    /// `/` is added).
    ///
    /// # Errors
    /// The [`PrefixError`] that would make the route match nothing.
    pub fn check_prefix(prefix: &str) -> Result<(), PrefixError> {
        let prefix: Cow<'_, str> = if prefix.starts_with('/') {
            Cow::Borrowed(prefix)
        } else {
            Cow::Owned(format!("/{prefix}"))
        };
        PathPrefix::new(prefix.into_owned()).map(|_| ())
    }

    /// Restricts the route to requests for `host`, compared with the request's effective host
    /// (without port, lowercased, without a trailing dot). The host is normalized the same way.
    /// A host [`check_host`](Self::check_host) refuses (one with a port, a wildcard or other
    /// invalid characters) can never equal a request's host, so the route matches nothing.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(normalize_host(&host.into()));
        self
    }

    /// Checks a configured route host: a DNS name (letters, digits, `-`, `_`, `.`; at most 253
    /// bytes; a trailing dot is allowed and removed) or an IP address (IPv6 in brackets),
    /// without a port.
    ///
    /// # Errors
    /// A message naming the host and what is wrong with it, for a config error.
    pub fn check_host(host: &str) -> Result<(), String> {
        let bare = host.strip_suffix('.').unwrap_or(host);
        let bad = |reason: &str| Err(format!("route host {host:?} {reason}"));
        if bare.is_empty() {
            return bad("is empty");
        }
        if let Some(inner) = bare.strip_prefix('[') {
            return match inner.strip_suffix(']') {
                Some(ip) if ip.parse::<std::net::Ipv6Addr>().is_ok() => Ok(()),
                Some(_) => bad("is not an IPv6 address in brackets"),
                None if inner.contains("]:") => {
                    bad("must not have a port: routes match the host only (write it without :port)")
                }
                None => bad("has an unclosed IPv6 bracket"),
            };
        }
        if bare.parse::<std::net::Ipv6Addr>().is_ok() {
            return bad("is an IPv6 address: write it in brackets, e.g. [::1]");
        }
        if bare.contains(':') {
            return bad(
                "must not have a port: routes match the host only (write it without :port)",
            );
        }
        if bare.contains('*') {
            return bad("is a wildcard, which routes do not support");
        }
        if bare.len() > MAX_HOST_BYTES {
            return bad("is longer than 253 bytes");
        }
        if let Some(c) = bare
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        {
            return Err(format!(
                "route host {host:?} contains {c:?}: a host is letters, digits, '-', '_' and '.', or a bracketed IPv6 address"
            ));
        }
        if bare.split('.').any(str::is_empty) {
            return bad("has an empty label (`..` or a leading dot)");
        }
        Ok(())
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's host, normalized, if it has one.
    pub fn host_name(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The path prefix as configured (with the leading `/` added if it was missing).
    pub fn path_prefix(&self) -> &str {
        &self.configured_prefix
    }

    /// The route's target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn matches(&self, host: Option<&str>, path: &MatchPath) -> bool {
        if let Some(want) = &self.host {
            match host {
                Some(h) if h == want => {}
                _ => return false,
            }
        }
        self.prefix.as_ref().is_some_and(|p| p.matches(path))
    }

    fn specificity(&self) -> usize {
        self.prefix.as_ref().map_or(0, PathPrefix::specificity)
    }
}

/// Lowercased, without a trailing dot: the form [`effective_host`] returns.
fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The request's host without port, lowercased and without a trailing dot: the
/// [`RequestIdentity`](ravelin_http::RequestIdentity)'s when the ingress stage ran, else the
/// absolute-form target's authority, else `Host`. A thin wrapper over
/// [`ravelin_http::effective_host`], kept for its name.
pub fn request_host(head: &http::request::Parts) -> Option<Cow<'_, str>> {
    effective_host(head)
}

/// A route table: the most specific match wins — routes with a host before routes without,
/// then the longest (normalized) path prefix, then configuration order.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// A table of `routes`.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        let mut routes: Vec<Route> = routes.into_iter().collect();
        // Stable sort: equal specificity keeps configuration order.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.specificity().cmp(&a.specificity()))
        });
        Self { routes }
    }

    /// The route matching `head`, if any.
    pub fn find(&self, head: &http::request::Parts) -> Option<&Route> {
        let host = effective_host(head);
        let path = MatchPath::of(&head.uri, &head.extensions);
        self.routes
            .iter()
            .find(|r| r.matches(host.as_deref(), &path))
    }

    /// The routes, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

impl Resolve for Routes {
    fn resolve(&self, head: &http::request::Parts) -> Option<Target> {
        self.find(head).map(|r| r.target.clone())
    }
}

/// A route table that can be replaced at run time (config reload) while requests use it:
/// readers take a lock-free snapshot.
#[derive(Debug, Clone)]
pub struct SharedRoutes {
    inner: Arc<ArcSwap<Routes>>,
}

impl SharedRoutes {
    /// Starts with `routes`.
    pub fn new(routes: Routes) -> Self {
        Self {
            inner: Arc::new(ArcSwap::from_pointee(routes)),
        }
    }

    /// Replaces the table; requests already resolved keep their target.
    pub fn store(&self, routes: Routes) {
        self.inner.store(Arc::new(routes));
    }

    /// The current table.
    pub fn load(&self) -> Arc<Routes> {
        self.inner.load_full()
    }
}

impl Resolve for SharedRoutes {
    fn resolve(&self, head: &http::request::Parts) -> Option<Target> {
        self.inner.load().resolve(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Upstream;

    fn target(name: &str) -> Target {
        Upstream::builder(name, "http://127.0.0.1:1")
            .build()
            .unwrap()
            .into()
    }

    fn head(host: &str, path: &str) -> http::request::Parts {
        http::Request::get(path)
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn pick(routes: &Routes, host: &str, path: &str) -> Option<String> {
        routes.find(&head(host, path)).map(|r| r.name().to_owned())
    }

    #[test]
    fn most_specific_wins() {
        let routes = Routes::new([
            Route::new("default", "/", target("a")),
            Route::new("api", "/api", target("b")),
            Route::new("api-v2", "/api/v2", target("c")),
            Route::new("admin-host", "/", target("d")).host("Admin.Example.com"),
        ]);
        assert_eq!(
            pick(&routes, "example.com", "/").as_deref(),
            Some("default")
        );
        assert_eq!(pick(&routes, "example.com", "/api").as_deref(), Some("api"));
        assert_eq!(
            pick(&routes, "example.com", "/api/x").as_deref(),
            Some("api")
        );
        assert_eq!(
            pick(&routes, "example.com", "/apiary").as_deref(),
            Some("default")
        );
        assert_eq!(
            pick(&routes, "example.com", "/api/v2/x").as_deref(),
            Some("api-v2")
        );
        assert_eq!(
            pick(&routes, "admin.example.com:8080", "/api").as_deref(),
            Some("admin-host")
        );
    }

    #[test]
    fn no_match_is_none() {
        let routes = Routes::new([Route::new("api", "/api", target("b")).host("a.test")]);
        assert!(pick(&routes, "b.test", "/api").is_none());
        assert!(pick(&routes, "a.test", "/").is_none());
    }

    #[test]
    fn host_parsing() {
        assert_eq!(
            request_host(&head("x.test:80", "/")).as_deref(),
            Some("x.test")
        );
        assert_eq!(
            request_host(&head("[::1]:80", "/")).as_deref(),
            Some("[::1]")
        );
        assert_eq!(request_host(&head("[::1]", "/")).as_deref(), Some("[::1]"));
        assert_eq!(
            request_host(&head("X.Test.:8080", "/")).as_deref(),
            Some("x.test")
        );
    }

    #[test]
    fn path_spellings_route_alike() {
        let routes = Routes::new([
            Route::new("default", "/", target("a")),
            Route::new("login", "/login", target("b")),
        ]);
        for path in [
            "/login",
            "/LOGIN",
            "//login",
            "/./login",
            "/x/../login",
            "/%6cogin",
            "/login;a=b",
            "/login/x",
        ] {
            assert_eq!(
                pick(&routes, "a.test", path).as_deref(),
                Some("login"),
                "{path}"
            );
        }
        assert_eq!(
            pick(&routes, "a.test", "/loginx").as_deref(),
            Some("default")
        );
        // Without an ingress stage the lenient reading matches more, never less.
        assert_eq!(
            pick(&routes, "a.test", "/x/..;/login").as_deref(),
            Some("login")
        );
    }

    #[test]
    fn absolute_form_authority_and_identity_win_over_host() {
        let routes = Routes::new([
            Route::new("default", "/", target("a")),
            Route::new("victim", "/", target("b")).host("Victim.Example."),
        ]);
        let mut parts = http::Request::get("http://victim.example/x")
            .header("host", "evil.example")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(routes.find(&parts).unwrap().name(), "victim");
        let identity = ravelin_http::RequestIdentity::from_parts(
            &parts,
            http::uri::Scheme::HTTP,
            &ravelin_http::IdentityOptions::default(),
        )
        .unwrap();
        parts.uri = "/x".parse().unwrap();
        parts.extensions.insert(identity);
        assert_eq!(routes.find(&parts).unwrap().name(), "victim");
    }

    #[test]
    fn route_hosts_are_checked_with_clear_messages() {
        for good in [
            "example.com",
            "Example.COM.",
            "a_b.test",
            "10.0.0.1",
            "[::1]",
            "localhost",
        ] {
            assert_eq!(Route::check_host(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("example.com:8080", "must not have a port"),
            ("[::1]:80", "must not have a port"),
            ("::1", "in brackets"),
            ("*.example.com", "wildcard"),
            ("exa mple.com", "contains ' '"),
            ("a/b", "contains '/'"),
            ("", "is empty"),
            (".", "is empty"),
            ("a..b", "empty label"),
            ("[zz]", "not an IPv6 address"),
        ] {
            let message = Route::check_host(bad).unwrap_err();
            assert!(message.contains(says), "{bad:?}: {message}");
            assert!(message.contains(&format!("{bad:?}")), "{message}");
        }
        assert!(Route::check_host(&"a".repeat(254)).is_err());
        // A refused host can never match.
        let routes = Routes::new([Route::new("ported", "/", target("a")).host("x.test:80")]);
        assert!(pick(&routes, "x.test:80", "/").is_none());
    }

    #[test]
    fn refused_prefixes_match_nothing() {
        assert!(Route::check_prefix("api").is_ok());
        assert!(Route::check_prefix("/a?b").is_err());
        let routes = Routes::new([Route::new("query", "/a?b", target("a"))]);
        assert!(pick(&routes, "x.test", "/a").is_none());
        assert_eq!(Route::new("r", "api", target("a")).path_prefix(), "/api");
    }
}
