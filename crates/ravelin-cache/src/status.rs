//! `Cache-Status` (RFC 9211): one list member per cache, appended after any upstream members.

use http::{HeaderMap, HeaderValue};

use crate::headers::CACHE_STATUS;

/// Why a request went forward (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// The cache was configured not to handle the request (kill switch, internal error).
    Bypass,
    /// The method's semantics require forwarding.
    Method,
    /// Nothing stored for the URI.
    UriMiss,
    /// Responses stored for the URI, none selected by this request's header fields.
    VaryMiss,
    /// A response could be used, but the request's directives forbade it.
    Request,
    /// The selected response was stale (or needed validation).
    Stale,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
        }
    }
}

/// This cache's member of `Cache-Status` for one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CacheStatus {
    pub(crate) hit: bool,
    pub(crate) fwd: Option<Fwd>,
    pub(crate) fwd_status: Option<u16>,
    pub(crate) ttl: Option<i64>,
    pub(crate) stored: bool,
    pub(crate) collapsed: Option<bool>,
    pub(crate) detail: Option<&'static str>,
}

impl CacheStatus {
    pub(crate) fn hit(ttl: i64) -> Self {
        Self {
            hit: true,
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    pub(crate) fn fwd(fwd: Fwd) -> Self {
        Self {
            fwd: Some(fwd),
            ..Self::default()
        }
    }

    pub(crate) fn detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Renders `name; hit; ttl=…` (parameters in RFC 9211 order). Built with plain pushes and
    /// handed to the header without a copy: it runs on every response.
    pub(crate) fn render(&self, name: &str) -> Option<HeaderValue> {
        let mut s = String::with_capacity(name.len() + 48);
        s.push_str(name);
        if self.hit {
            s.push_str("; hit");
        } else if let Some(fwd) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(fwd.as_str());
            if let Some(code) = self.fwd_status {
                s.push_str("; fwd-status=");
                push_int(&mut s, i64::from(code));
            }
        }
        if let Some(ttl) = self.ttl {
            s.push_str("; ttl=");
            push_int(&mut s, ttl);
        }
        if self.stored && !self.hit {
            s.push_str("; stored");
        }
        match self.collapsed {
            Some(true) => s.push_str("; collapsed"),
            Some(false) => s.push_str("; collapsed=?0"),
            None => {}
        }
        if let Some(detail) = self.detail {
            s.push_str("; detail=");
            s.push_str(detail);
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
    }

    /// Appends this member to the response's `Cache-Status`, after any upstream members.
    pub(crate) fn append_to(&self, name: &str, headers: &mut HeaderMap) {
        if let Some(v) = self.render(name) {
            headers.append(CACHE_STATUS.clone(), v);
        }
    }
}

/// Appends the decimal form of `n` (a TTL is negative once stale).
fn push_int(s: &mut String, n: i64) {
    if n < 0 {
        s.push('-');
    }
    ravelin_http::push_decimal(s, n.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9211_2_members_render_in_order() {
        assert_eq!(
            CacheStatus::hit(376).render("ravelin").unwrap(),
            "ravelin; hit; ttl=376"
        );
        let mut s = CacheStatus::fwd(Fwd::UriMiss);
        s.stored = true;
        assert_eq!(
            s.render("ravelin").unwrap(),
            "ravelin; fwd=uri-miss; stored"
        );
        let mut s = CacheStatus::fwd(Fwd::Stale);
        s.fwd_status = Some(304);
        s.collapsed = Some(true);
        assert_eq!(
            s.detail("revalidated").render("edge").unwrap(),
            "edge; fwd=stale; fwd-status=304; collapsed; detail=revalidated"
        );
        assert_eq!(CacheStatus::hit(-5).render("c").unwrap(), "c; hit; ttl=-5");
    }

    #[test]
    fn integers_render_like_display() {
        for n in [0i64, 7, -7, 10, 376, -1_000_000, i64::MAX, i64::MIN] {
            let mut s = String::new();
            push_int(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn rfc9211_2_appends_after_upstream_members() {
        let mut h = HeaderMap::new();
        h.insert(&CACHE_STATUS, HeaderValue::from_static("origin-cache; hit"));
        CacheStatus::fwd(Fwd::UriMiss).append_to("ravelin", &mut h);
        let all: Vec<_> = h.get_all(&CACHE_STATUS).iter().collect();
        assert_eq!(all, ["origin-cache; hit", "ravelin; fwd=uri-miss"]);
    }
}
