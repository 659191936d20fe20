//! The request identity: which host and which path a request is for, decided once at ingress
//! and read by every module after it.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Uri, Version};

use crate::path::{MatchPath, PathError, canonical_path, match_path};

/// Why a request's identity could not be decided. Each is answered `400 Bad Request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2), or an HTTP/2 request with neither
    /// `:authority` nor `Host`.
    #[error("the request has no Host")]
    MissingHost,
    /// More than one `Host` field line (RFC 9112 §3.2).
    #[error("the request has {count} Host field lines")]
    DuplicateHost {
        /// How many.
        count: usize,
    },
    /// A `Host` or target authority that is not `host[:port]` with a DNS name or IP literal.
    #[error("invalid host {value:?}: {reason}")]
    InvalidHost {
        /// The value, truncated to 64 bytes.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An HTTP/2 request whose `Host` names another authority than `:authority` (RFC 9113
    /// §8.3.1: malformed).
    #[error("Host {host:?} disagrees with :authority {authority:?}")]
    AuthorityMismatch {
        /// The `Host` value, truncated to 64 bytes.
        host: String,
        /// The `:authority`, truncated to 64 bytes.
        authority: String,
    },
    /// The path is spelled in a way origins disagree on.
    #[error(transparent)]
    Path(#[from] PathError),
}

impl IdentityError {
    /// The status a server answers with: always `400 Bad Request`.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::BAD_REQUEST
    }
}

/// How identities are decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityOptions {
    /// Fold ASCII case in the match path (default on): a policy on `/login` then also covers
    /// `/LOGIN`, which case-insensitive origins (Express by default, IIS) serve from the same
    /// handler. Turn it off only when the origin routes case-sensitively and policies must too.
    pub fold_case: bool,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        Self { fold_case: true }
    }
}

/// Who a request is for, decided once: the effective authority (RFC 9112 §3.2.2 for HTTP/1.1,
/// RFC 9113 §8.3.1 for HTTP/2), the canonical path forwarded upstream, and the match path every
/// policy compares. The ingress stage of ravelin-proxy stores it as a request extension and
/// rewrites the request to agree with it (one `Host`, an absolute URI), so the cache key,
/// routing, `X-Forwarded-Host` and every module read the same answer.
///
/// Rules:
/// - HTTP/1.1 needs exactly one valid `Host`; HTTP/1.0 may have none. An absolute-form target's
///   authority wins over `Host` (which a proxy must then replace, §3.2.2).
/// - HTTP/2's `:authority` wins; a `Host` that names another authority is refused (§8.3.1).
/// - Hosts are compared and stored lowercased, without a trailing dot, and without the
///   scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdentity {
    scheme: Scheme,
    authority: Option<Authority>,
    /// The host's length at the start of `authority` (`host[:port]`): the host is a prefix of
    /// the authority's text, so it is not stored twice.
    host_len: usize,
    canonical_path: String,
    match_path: MatchPath,
}

impl RequestIdentity {
    /// Decides the identity of a request received over `scheme` (`http` or `https`).
    ///
    /// # Errors
    /// [`IdentityError`]: missing, duplicate, invalid or disagreeing hosts, and refused paths.
    pub fn from_parts(
        parts: &http::request::Parts,
        scheme: Scheme,
        options: &IdentityOptions,
    ) -> Result<Self, IdentityError> {
        let hosts = parts.headers.get_all(header::HOST);
        let mut lines = hosts.iter();
        let host_header = lines.next();
        let extra = lines.count();
        if extra > 0 {
            return Err(IdentityError::DuplicateHost {
                count: extra.saturating_add(1),
            });
        }
        let from_header = host_header
            .map(|value| normalize_authority(value_text(value)?, &scheme))
            .transpose()?;
        let from_target = parts
            .uri
            .authority()
            .map(|a| normalize_authority(a.as_str(), &scheme))
            .transpose()?;
        let authority = match parts.version {
            Version::HTTP_2 | Version::HTTP_3 => {
                if let (Some(target), Some(header)) = (&from_target, &from_header)
                    && target != header
                {
                    return Err(IdentityError::AuthorityMismatch {
                        host: shorten(header.0.as_str()),
                        authority: shorten(target.0.as_str()),
                    });
                }
                from_target.or(from_header)
            }
            Version::HTTP_09 | Version::HTTP_10 => from_target.or(from_header),
            _ => {
                if from_header.is_none() {
                    return Err(IdentityError::MissingHost);
                }
                from_target.or(from_header)
            }
        };
        if authority.is_none() && !matches!(parts.version, Version::HTTP_09 | Version::HTTP_10) {
            return Err(IdentityError::MissingHost);
        }
        let canonical_path = canonical_path(parts.uri.path())?;
        let match_path = match_path(&canonical_path, options.fold_case);
        let (authority, host_len) = match authority {
            Some((authority, host_len)) => (Some(authority), host_len),
            None => (None, 0),
        };
        Ok(Self {
            scheme,
            authority,
            host_len,
            canonical_path,
            match_path,
        })
    }

    /// The scheme the request arrived over.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The effective authority (`host[:port]`, lowercased, default port removed); `None` only
    /// for an HTTP/1.0 request without `Host`.
    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }

    /// The host without port (IPv6 literals keep their brackets).
    pub fn host(&self) -> Option<&str> {
        self.authority
            .as_ref()
            .and_then(|authority| authority.as_str().get(..self.host_len))
    }

    /// The canonical path: what is forwarded upstream and keyed in the cache.
    pub fn canonical_path(&self) -> &str {
        &self.canonical_path
    }

    /// The path policies compare.
    pub fn match_path(&self) -> &MatchPath {
        &self.match_path
    }

    /// The request target rebuilt from the identity: `scheme://authority/canonical-path?query`
    /// (origin-form when there is no authority).
    ///
    /// # Errors
    /// Never for an identity built by [`from_parts`](Self::from_parts) with a query taken from
    /// a valid URI; the `http` builder's error otherwise.
    pub fn target(&self, query: Option<&str>) -> Result<Uri, http::Error> {
        let path_and_query = match query {
            Some(query) => format!("{}?{query}", self.canonical_path),
            None => self.canonical_path.clone(),
        };
        let builder = Uri::builder();
        match &self.authority {
            Some(authority) => builder
                .scheme(self.scheme.clone())
                .authority(authority.clone())
                .path_and_query(path_and_query)
                .build(),
            None => builder.path_and_query(path_and_query).build(),
        }
    }

    /// The request target rebuilt from the identity, as [`target`](Self::target) with
    /// `original`'s query, but reusing `original`'s path and query without a copy when its path
    /// is already the canonical one (the common case: only the scheme and authority are added).
    ///
    /// # Errors
    /// As [`target`](Self::target).
    pub fn target_of(&self, original: &Uri) -> Result<Uri, http::Error> {
        let reusable = original
            .path_and_query()
            .filter(|pq| pq.path() == self.canonical_path);
        let Some(path_and_query) = reusable else {
            return self.target(original.query());
        };
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(path_and_query.clone());
        if let Some(authority) = &self.authority {
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(authority.clone());
        }
        Ok(Uri::from_parts(parts)?)
    }

    /// The `Host` field value that agrees with this identity.
    pub fn host_header(&self) -> Option<HeaderValue> {
        self.authority
            .as_ref()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    }

    /// Whether `value` (a request's `Host`) already is this identity's authority, so a proxy can
    /// keep the field as it is instead of writing [`host_header`](Self::host_header).
    pub fn host_header_agrees(&self, value: &HeaderValue) -> bool {
        self.authority
            .as_ref()
            .is_some_and(|a| a.as_str().as_bytes() == value.as_bytes())
    }
}

fn value_text(value: &HeaderValue) -> Result<&str, IdentityError> {
    value.to_str().map_err(|_| IdentityError::InvalidHost {
        value: String::from_utf8_lossy(value.as_bytes())
            .chars()
            .take(64)
            .collect(),
        reason: "not visible ASCII",
    })
}

fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Parses and normalizes `host[:port]`: lowercased, no trailing dot, no default port. Returns
/// the authority and the length of its host part (the bare host is that prefix of its text).
fn normalize_authority(raw: &str, scheme: &Scheme) -> Result<(Authority, usize), IdentityError> {
    let invalid = |reason| IdentityError::InvalidHost {
        value: shorten(raw),
        reason,
    };
    if raw.is_empty() {
        return Err(invalid("empty"));
    }
    if raw.contains('@') {
        return Err(invalid("userinfo is not allowed in an authority"));
    }
    let (host, port) = split_port(raw).ok_or_else(|| invalid("bad port"))?;
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(invalid("empty host"));
    }
    if host.starts_with('[') {
        let inner = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .ok_or_else(|| invalid("unclosed IPv6 literal"))?;
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("not an IPv6 address"));
        }
    } else if host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(invalid("not a DNS name or IP address"));
    }
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let port = port.filter(|&port| port != default_port);
    // The normalized text written once, exactly sized, so the authority takes it without a
    // copy (issue 13: this was a lowercased copy, a `format!` and the authority's own copy).
    let port_digits = port.map_or(0, port_text_len);
    let mut text = String::with_capacity(host.len().saturating_add(port_digits));
    text.push_str(host);
    text.make_ascii_lowercase();
    if let Some(port) = port {
        text.push(':');
        crate::push_decimal(&mut text, u64::from(port));
    }
    let authority = Authority::try_from(text).map_err(|_| invalid("not a valid authority"))?;
    Ok((authority, host.len()))
}

/// The length of `:port`.
fn port_text_len(port: u16) -> usize {
    match port {
        0..=9 => 2,
        10..=99 => 3,
        100..=999 => 4,
        1_000..=9_999 => 5,
        _ => 6,
    }
}

/// Splits `host[:port]`; `None` when a port is present but not a number in 0..=65535.
fn split_port(raw: &str) -> Option<(&str, Option<u16>)> {
    let port_start = if raw.starts_with('[') {
        match raw.rfind(']') {
            Some(end) => {
                let rest = raw.get(end.saturating_add(1)..)?;
                if rest.is_empty() {
                    return Some((raw, None));
                }
                rest.strip_prefix(':')?;
                end.saturating_add(1)
            }
            None => return Some((raw, None)),
        }
    } else {
        match raw.rfind(':') {
            Some(i) => i,
            None => return Some((raw, None)),
        }
    };
    let host = raw.get(..port_start)?;
    let digits = raw.get(port_start.saturating_add(1)..)?;
    if digits.is_empty() {
        // `host:` is allowed by RFC 3986 and means the default port.
        return Some((host, None));
    }
    if digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u16>().ok().map(|port| (host, Some(port)))
}

/// The host a request is for, without port: the [`RequestIdentity`]'s when the ingress stage
/// set one, else `Host` or the URI authority, lowercased and without a trailing dot.
pub fn effective_host(parts: &http::request::Parts) -> Option<Cow<'_, str>> {
    if let Some(identity) = parts.extensions.get::<RequestIdentity>() {
        return identity.host().map(Cow::Borrowed);
    }
    let raw = parts.uri.authority().map(Authority::as_str).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    })?;
    let raw = raw.rsplit('@').next().unwrap_or(raw);
    let (host, _) = split_port(raw).unwrap_or((raw, None));
    let host = host.strip_suffix('.').unwrap_or(host);
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(version: Version, uri: &str, hosts: &[&str]) -> http::request::Parts {
        let mut builder = Request::get(uri).version(version);
        for host in hosts {
            builder = builder.header("host", *host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn identity(
        version: Version,
        uri: &str,
        hosts: &[&str],
    ) -> Result<RequestIdentity, IdentityError> {
        RequestIdentity::from_parts(
            &parts(version, uri, hosts),
            Scheme::HTTP,
            &IdentityOptions::default(),
        )
    }

    #[test]
    fn absolute_form_wins_over_host() {
        let id = identity(
            Version::HTTP_11,
            "http://victim.example/x",
            &["evil.example"],
        )
        .unwrap();
        assert_eq!(id.host(), Some("victim.example"));
        assert_eq!(id.host_header().unwrap(), "victim.example");
        assert_eq!(
            id.target(Some("a=1")).unwrap().to_string(),
            "http://victim.example/x?a=1"
        );
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(
            identity(Version::HTTP_11, "/", &[]),
            Err(IdentityError::MissingHost)
        );
        assert_eq!(
            identity(Version::HTTP_11, "/", &["a.example", "b.example"]),
            Err(IdentityError::DuplicateHost { count: 2 })
        );
        assert_eq!(
            identity(Version::HTTP_11, "http://a.example/", &[]),
            Err(IdentityError::MissingHost)
        );
        let old = identity(Version::HTTP_10, "/", &[]).unwrap();
        assert_eq!(old.authority(), None);
        assert_eq!(old.target(None).unwrap().to_string(), "/");
    }

    #[test]
    fn http2_authority_must_agree_with_host() {
        let ok = identity(Version::HTTP_2, "http://a.example/", &["A.example."]).unwrap();
        assert_eq!(ok.host(), Some("a.example"));
        assert!(matches!(
            identity(Version::HTTP_2, "http://a.example/", &["evil.example"]),
            Err(IdentityError::AuthorityMismatch { .. })
        ));
        assert_eq!(
            identity(Version::HTTP_2, "/", &[]),
            Err(IdentityError::MissingHost)
        );
        assert_eq!(
            identity(Version::HTTP_2, "/", &["b.example"])
                .unwrap()
                .host(),
            Some("b.example")
        );
    }

    #[test]
    fn hosts_are_normalized_and_checked() {
        let id = identity(Version::HTTP_11, "/", &["Example.COM.:80"]).unwrap();
        assert_eq!(id.authority().unwrap().as_str(), "example.com");
        let id = identity(Version::HTTP_11, "/", &["example.com:8080"]).unwrap();
        assert_eq!(id.authority().unwrap().as_str(), "example.com:8080");
        assert_eq!(id.host(), Some("example.com"));
        let id = identity(Version::HTTP_11, "/", &["[::1]:8080"]).unwrap();
        assert_eq!(id.host(), Some("[::1]"));
        for bad in [
            "a b",
            "user@host",
            "host:99999",
            "host:x",
            "[::1",
            "[zz]",
            "a/b",
            "",
        ] {
            assert!(
                matches!(
                    identity(Version::HTTP_11, "/", &[bad]),
                    Err(IdentityError::InvalidHost { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths_are_normalized_or_refused() {
        let id = identity(Version::HTTP_11, "/x/../%6COGIN;a=b?q=1", &["a.example"]).unwrap();
        assert_eq!(id.canonical_path(), "/lOGIN;a=b");
        assert_eq!(id.match_path().as_str(), "/login");
        assert!(matches!(
            identity(Version::HTTP_11, "/login%2f", &["a.example"]),
            Err(IdentityError::Path(PathError::EncodedSeparator { .. }))
        ));
    }

    #[test]
    fn effective_host_prefers_the_identity() {
        let mut p = parts(Version::HTTP_11, "/", &["Evil.example."]);
        assert_eq!(effective_host(&p).as_deref(), Some("evil.example"));
        let id = RequestIdentity::from_parts(
            &parts(
                Version::HTTP_11,
                "http://victim.example/",
                &["evil.example"],
            ),
            Scheme::HTTP,
            &IdentityOptions::default(),
        )
        .unwrap();
        p.extensions.insert(id);
        assert_eq!(effective_host(&p).as_deref(), Some("victim.example"));
    }

    #[test]
    fn ports_are_written_in_decimal() {
        for port in [
            0u16, 1, 9, 10, 99, 100, 443, 999, 1_000, 8_080, 9_999, 10_000, 65_535,
        ] {
            let mut text = String::new();
            crate::push_decimal(&mut text, u64::from(port));
            assert_eq!(text, port.to_string());
            assert_eq!(port_text_len(port), 1 + text.len());
        }
    }

    #[test]
    fn host_is_the_authority_without_its_port() {
        let id = identity(Version::HTTP_11, "/", &["[::1]:8080"]).unwrap();
        assert_eq!(id.authority().unwrap().as_str(), "[::1]:8080");
        assert_eq!(id.host(), Some("[::1]"));
        let id = identity(Version::HTTP_11, "/", &["Example.COM.:80"]).unwrap();
        assert_eq!(id.authority().unwrap().as_str(), "example.com");
        assert_eq!(id.host(), Some("example.com"));
        let id = identity(Version::HTTP_10, "/", &[]).unwrap();
        assert_eq!(id.host(), None);
        // Ports with leading zeros are numbers: the default one goes, another is rewritten.
        for (host, authority, bare) in [
            ("a.example:0080", "a.example", "a.example"),
            ("a.example:08080", "a.example:8080", "a.example"),
            ("[::A]", "[::a]", "[::a]"),
            ("[::A]:0443", "[::a]:443", "[::a]"),
            ("A.Example.:8080", "a.example:8080", "a.example"),
        ] {
            let id = identity(Version::HTTP_11, "/", &[host]).unwrap();
            assert_eq!(id.authority().unwrap().as_str(), authority, "{host}");
            assert_eq!(id.host(), Some(bare), "{host}");
            assert!(
                !id.host_header_agrees(&HeaderValue::from_str(host).unwrap()),
                "{host}"
            );
        }
    }

    #[test]
    fn host_header_agrees_only_with_the_normalized_authority() {
        let id = identity(Version::HTTP_11, "/", &["a.example:8080"]).unwrap();
        assert!(id.host_header_agrees(&HeaderValue::from_static("a.example:8080")));
        let id = identity(Version::HTTP_11, "/", &["A.example:80"]).unwrap();
        assert!(!id.host_header_agrees(&HeaderValue::from_static("A.example:80")));
        assert!(id.host_header_agrees(&id.host_header().unwrap()));
    }

    proptest::proptest! {
        /// The authority written in one pass is the old `format!("{host}:{port}")` of the
        /// lowercased host, without the scheme's default port; the host is its prefix.
        #[test]
        fn normalized_authority_matches_the_formatted_one(
            host in "[A-Za-z0-9][A-Za-z0-9.-]{0,20}[A-Za-z0-9]",
            port in proptest::option::of(proptest::prelude::any::<u16>()),
            https in proptest::prelude::any::<bool>(),
        ) {
            let scheme = if https { Scheme::HTTPS } else { Scheme::HTTP };
            let raw = match port {
                Some(port) => format!("{host}:{port}"),
                None => host.clone(),
            };
            let (authority, host_len) = normalize_authority(&raw, &scheme).unwrap();
            let lower = host.to_ascii_lowercase();
            let expected = match port {
                Some(port) if port != if https { 443 } else { 80 } => format!("{lower}:{port}"),
                _ => lower.clone(),
            };
            proptest::prop_assert_eq!(authority.as_str(), expected.as_str());
            proptest::prop_assert_eq!(authority.as_str().get(..host_len), Some(lower.as_str()));
        }

        /// Reusing the original path and query gives the target built from the identity.
        #[test]
        fn target_of_is_target_with_the_original_query(
            path in "/[a-zA-Z0-9._~%/;=-]{0,24}",
            query in proptest::option::of("[a-z0-9=&%]{0,12}"),
            absolute in proptest::prelude::any::<bool>(),
        ) {
            let target = match &query {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            };
            let uri_text = if absolute { format!("http://a.example{target}") } else { target };
            let Ok(uri) = uri_text.parse::<Uri>() else { return Ok(()); };
            let Ok(id) = identity(Version::HTTP_11, &uri_text, &["a.example"]) else {
                return Ok(());
            };
            let rebuilt = id.target_of(&uri).unwrap();
            proptest::prop_assert_eq!(rebuilt.clone(), id.target(uri.query()).unwrap());
            proptest::prop_assert_eq!(rebuilt.path(), id.canonical_path());
        }
    }
}
