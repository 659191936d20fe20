//! Routing: host and path prefix → upstream.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header;

use crate::forward::{Resolve, Target};

/// One route: an optional host, a path prefix, and where matching requests go.
#[derive(Debug, Clone)]
pub struct Route {
    host: Option<String>,
    path_prefix: String,
    target: Target,
    name: Arc<str>,
}

impl Route {
    /// A route for requests whose path starts with `path_prefix` (on a segment boundary:
    /// `/api` matches `/api` and `/api/x`, not `/apiary`; a prefix ending in `/` matches
    /// textually) to `target`.
    pub fn new(name: impl Into<String>, path_prefix: impl Into<String>, target: Target) -> Self {
        let mut path_prefix = path_prefix.into();
        if !path_prefix.starts_with('/') {
            path_prefix.insert(0, '/');
        }
        Self {
            host: None,
            path_prefix,
            target,
            name: Arc::from(name.into()),
        }
    }

    /// Restricts the route to requests for `host` (compared without port, ASCII
    /// case-insensitively).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into().to_ascii_lowercase());
        self
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.host {
            match host {
                Some(h) if h.eq_ignore_ascii_case(want) => {}
                _ => return false,
            }
        }
        prefix_matches(&self.path_prefix, path)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The request's host without port: from `Host`, else the URI authority (HTTP/2).
pub fn request_host(head: &http::request::Parts) -> Option<&str> {
    let raw = head
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| head.uri.authority().map(|a| a.as_str()))?;
    // IPv6 literals keep their brackets; strip only a trailing :port.
    Some(match raw.rfind(':') {
        Some(i)
            if !raw.ends_with(']')
                && raw
                    .get(i + 1..)
                    .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            raw.get(..i).unwrap_or(raw)
        }
        _ => raw,
    })
}

/// A route table: the most specific match wins — routes with a host before routes without,
/// then the longest path prefix, then configuration order.
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
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        Self { routes }
    }

    /// The route matching `head`, if any.
    pub fn find(&self, head: &http::request::Parts) -> Option<&Route> {
        let host = request_host(head);
        let path = head.uri.path();
        self.routes.iter().find(|r| r.matches(host, path))
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
        assert_eq!(request_host(&head("x.test:80", "/")), Some("x.test"));
        assert_eq!(request_host(&head("[::1]:80", "/")), Some("[::1]"));
        assert_eq!(request_host(&head("[::1]", "/")), Some("[::1]"));
    }
}
