//! Cache keys: the primary key (scheme, host, path and normalised query — RFC 9111 §2) and the
//! secondary key built from a response's `Vary` (§4.1).
//!
//! GET and HEAD share a primary key, because a stored GET answers a HEAD (§4, RFC 9110 §9.3.2).
//! Keys are hashed to `u64` for the store, and every stored object keeps its full key and is
//! compared on lookup, so a hash collision is a miss, never a wrong response.

use std::hash::{BuildHasher, Hash, Hasher};

use http::header::{self, HeaderName};
use http::uri::Authority;
use http::{HeaderMap, Uri};
use ravelin_http::RequestIdentity;
use serde::{Deserialize, Serialize};

use crate::headers::{selecting_value, split_list};

/// How the query string takes part in the cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryMode {
    /// The query as received (minus dropped parameters).
    #[default]
    Keep,
    /// Parameters sorted, so `?b=2&a=1` and `?a=1&b=2` share an entry.
    Sort,
    /// The query is not part of the key at all (every query shares one entry).
    Ignore,
}

/// The cache-key rules, part of [`CacheConfig`](crate::CacheConfig).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// Query handling.
    pub query: QueryMode,
    /// Query parameters left out of the key, by exact name or by prefix with a trailing `*`
    /// (`utm_*`). The origin still receives them, so it must not vary its response on them.
    /// A parameter whose text holds a `;` is kept whatever its name: origins that split on `;`
    /// would read a second parameter from it.
    pub drop_query_params: Vec<String>,
    /// Whether the host is part of the key. Turn off only when one origin serves every host.
    pub include_host: bool,
    /// The scheme assumed when the request URI has none (HTTP/1.1 origin-form requests).
    pub default_scheme: String,
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            query: QueryMode::Keep,
            drop_query_params: Vec::new(),
            include_host: true,
            default_scheme: "http".to_string(),
        }
    }
}

impl KeyConfig {
    fn drops(&self, name: &str) -> bool {
        self.drop_query_params
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == p,
            })
    }
}

/// Builds the primary key of a request: `scheme://host/path?query`, in one allocation (it runs
/// on every request).
///
/// When the ingress stage decided a [`RequestIdentity`], the key is built from it — its scheme,
/// effective authority and canonical path, with the URI's query — so the cache keys exactly the
/// resource the proxy forwards to (the one `Host` it sends), never a URI authority or path
/// spelling the proxy did not use. Otherwise the URI's scheme and authority (else `Host`) and
/// its path as received.
pub(crate) fn primary_key(
    uri: &Uri,
    headers: &HeaderMap,
    cfg: &KeyConfig,
    identity: Option<&RequestIdentity>,
) -> String {
    if let Some(id) = identity {
        return key_of(
            id.scheme().as_str(),
            id.authority().map(Authority::as_str).unwrap_or_default(),
            id.canonical_path(),
            uri.query(),
            cfg,
        );
    }
    let scheme = uri.scheme_str().unwrap_or(cfg.default_scheme.as_str());
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or_default();
    key_of(scheme, host, uri.path(), uri.query(), cfg)
}

/// The key of `path` and `query` on `scheme://host`, normalised as every key is: scheme and host
/// lowercased, userinfo and the scheme's default port dropped, the host left out unless
/// `include_host`, the query per [`KeyConfig`].
pub(crate) fn key_of(
    scheme: &str,
    host: &str,
    path: &str,
    query: Option<&str>,
    cfg: &KeyConfig,
) -> String {
    let host = if cfg.include_host { host } else { "" };
    // Userinfo never identifies a resource; drop it, then the default port.
    let host = host.rsplit('@').next().unwrap_or_default();
    let host = if scheme.eq_ignore_ascii_case("http") {
        host.strip_suffix(":80").unwrap_or(host)
    } else if scheme.eq_ignore_ascii_case("https") {
        host.strip_suffix(":443").unwrap_or(host)
    } else {
        host
    };
    let path = match path {
        "" => "/",
        p => p,
    };
    let q = query.unwrap_or_default();
    let mut key = String::with_capacity(scheme.len() + host.len() + path.len() + q.len() + 4);
    // Appended whole and lowercased in place, not a `char` at a time (issue 13).
    key.push_str(scheme);
    key.push_str("://");
    key.push_str(host);
    key.make_ascii_lowercase();
    key.push_str(path);
    if let Some(query) = query {
        push_query(&mut key, query, cfg);
    }
    key
}

fn push_query(key: &mut String, query: &str, cfg: &KeyConfig) {
    match cfg.query {
        QueryMode::Ignore => {}
        QueryMode::Keep if cfg.drop_query_params.is_empty() => {
            key.push('?');
            key.push_str(query);
        }
        mode => {
            let mut params: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty())
                // A piece with `;` is never dropped: origins that also split parameters on `;`
                // (Rack before 3.0, Python before 3.9.2, Tornado) read `utm_x=1;callback=evil`
                // as two, and a dropped piece would hide the second from the key (parameter
                // cloaking). Kept, it only splits the key.
                .filter(|p| p.contains(';') || !cfg.drops(p.split('=').next().unwrap_or_default()))
                .collect();
            if mode == QueryMode::Sort {
                if params.is_empty() {
                    return;
                }
                params.sort_unstable();
            }
            key.push('?');
            for (i, p) in params.iter().enumerate() {
                if i > 0 {
                    key.push('&');
                }
                key.push_str(p);
            }
        }
    }
}

/// The normalised request values of a response's selecting header fields, in `Vary` order.
///
/// Hashing and matching walk the list members of the request's field lines directly, without
/// building normalised strings: they run on every lookup of a URL that varies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variant {
    pub(crate) names: Box<[HeaderName]>,
    pub(crate) values: Box<[Option<Box<[u8]>>]>,
}

impl Variant {
    pub(crate) fn of(names: &[HeaderName], request: &HeaderMap) -> Variant {
        Variant {
            names: names.into(),
            values: names
                .iter()
                .map(|n| selecting_value(request, n).map(Vec::into_boxed_slice))
                .collect(),
        }
    }

    /// Whether `request` selects this variant (§4.1).
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        self.names
            .iter()
            .zip(self.values.iter())
            .all(
                |(name, stored)| match (stored, request.contains_key(name)) {
                    (None, present) => !present,
                    (Some(_), false) => false,
                    (Some(stored), true) => {
                        let mut have = split_list(stored);
                        let mut want = request
                            .get_all(name)
                            .iter()
                            .flat_map(|v| split_list(v.as_bytes()));
                        loop {
                            match (have.next(), want.next()) {
                                (None, None) => return true,
                                (Some(a), Some(b)) if a == b => {}
                                _ => return false,
                            }
                        }
                    }
                },
            )
    }

    fn hash_into(&self, h: &mut impl Hasher) {
        for (name, value) in self.names.iter().zip(self.values.iter()) {
            hash_field(h, name, value.as_deref().map(split_list));
        }
    }
}

/// One selecting field into the hash: the name, whether present, and each list member. Stored
/// variants and incoming requests feed the same sequence of writes.
fn hash_field<'a>(
    h: &mut impl Hasher,
    name: &HeaderName,
    members: Option<impl Iterator<Item = &'a [u8]>>,
) {
    h.write(name.as_str().as_bytes());
    match members {
        None => h.write_u8(0),
        Some(members) => {
            h.write_u8(1);
            for m in members {
                h.write(m);
                h.write_u8(b',');
            }
        }
    }
}

/// Hashes keys with a per-process random seed, so that collisions cannot be precomputed.
#[derive(Clone)]
pub(crate) struct KeyHasher {
    state: foldhash::quality::RandomState,
}

impl KeyHasher {
    pub(crate) fn new() -> Self {
        Self {
            state: foldhash::quality::RandomState::default(),
        }
    }

    pub(crate) fn primary(&self, key: &str) -> u64 {
        let mut h = self.state.build_hasher();
        0u8.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    pub(crate) fn variant(&self, key: &str, variant: &Variant) -> u64 {
        let mut h = self.state.build_hasher();
        1u8.hash(&mut h);
        key.hash(&mut h);
        variant.hash_into(&mut h);
        h.finish()
    }

    /// The same hash as [`variant`](Self::variant) for the variant `request` would select,
    /// computed without building it.
    pub(crate) fn variant_of(&self, key: &str, names: &[HeaderName], request: &HeaderMap) -> u64 {
        let mut h = self.state.build_hasher();
        1u8.hash(&mut h);
        key.hash(&mut h);
        for name in names {
            let members = request.contains_key(name).then(|| {
                request
                    .get_all(name)
                    .iter()
                    .flat_map(|v| split_list(v.as_bytes()))
            });
            hash_field(&mut h, name, members);
        }
        h.finish()
    }

    /// The group of every object stored under one URL (for purges and for replacing variants).
    pub(crate) fn url_group(&self, key: &str) -> u64 {
        let mut h = self.state.build_hasher();
        2u8.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    /// The group of every object carrying one surrogate tag.
    pub(crate) fn tag_group(&self, tag: &str) -> u64 {
        let mut h = self.state.build_hasher();
        3u8.hash(&mut h);
        tag.hash(&mut h);
        h.finish()
    }
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key(uri: &str, host: Option<&str>, cfg: &KeyConfig) -> String {
        let uri: Uri = uri.parse().unwrap();
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        primary_key(&uri, &h, cfg, None)
    }

    #[test]
    fn rfc9111_2_primary_key_is_the_target_uri() {
        let cfg = KeyConfig::default();
        assert_eq!(
            key("/a?x=1", Some("Example.COM"), &cfg),
            "http://example.com/a?x=1"
        );
        assert_eq!(
            key("https://example.com:443/a", None, &cfg),
            "https://example.com/a"
        );
        assert_eq!(
            key("http://example.com:80/", None, &cfg),
            "http://example.com/"
        );
        assert_eq!(
            key("http://example.com:8080/", None, &cfg),
            "http://example.com:8080/"
        );
        assert_ne!(
            key("/a?x=1", Some("h"), &cfg),
            key("/a?x=2", Some("h"), &cfg)
        );
        assert_ne!(key("/a", Some("one"), &cfg), key("/a", Some("two"), &cfg));
    }

    fn identity(uri: &str, host: &str) -> (Uri, RequestIdentity) {
        let (parts, ()) = http::Request::get(uri)
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts();
        let id = RequestIdentity::from_parts(
            &parts,
            http::uri::Scheme::HTTPS,
            &ravelin_http::IdentityOptions::default(),
        )
        .unwrap();
        (parts.uri, id)
    }

    #[test]
    fn the_identity_names_the_resource_when_present() {
        let cfg = KeyConfig::default();
        // The identity says evil.example (the Host the proxy forwards with); the URI's authority
        // says victim.example. The key must follow the identity.
        let (_, evil) = identity("/a/./b?x=1", "evil.example");
        let victim: Uri = "http://victim.example/a/b?x=1".parse().unwrap();
        assert_eq!(
            primary_key(&victim, &HeaderMap::new(), &cfg, Some(&evil)),
            "https://evil.example/a/b?x=1"
        );
        // Without an identity: the URI authority, as before.
        assert_eq!(
            primary_key(&victim, &HeaderMap::new(), &cfg, None),
            "http://victim.example/a/b?x=1"
        );
        // Spellings the identity normalises share a key; the query still goes through KeyConfig.
        let (uri, id) = identity("/a//%62?x=1", "EVIL.example.:443");
        assert_eq!(
            primary_key(&uri, &HeaderMap::new(), &cfg, Some(&id)),
            "https://evil.example/a/b?x=1"
        );
        let ignore = KeyConfig {
            query: QueryMode::Ignore,
            include_host: false,
            ..KeyConfig::default()
        };
        assert_eq!(
            primary_key(&uri, &HeaderMap::new(), &ignore, Some(&id)),
            "https:///a/b"
        );
    }

    #[test]
    fn query_normalisation_is_configurable() {
        let sort = KeyConfig {
            query: QueryMode::Sort,
            drop_query_params: vec!["utm_*".into(), "fbclid".into()],
            ..KeyConfig::default()
        };
        assert_eq!(
            key("/a?b=2&utm_source=x&a=1&fbclid=9", Some("h"), &sort),
            "http://h/a?a=1&b=2"
        );
        assert_eq!(key("/a?utm_x=1", Some("h"), &sort), "http://h/a");
        // Parameter cloaking: a dropped name cannot carry a `;`-separated parameter out of the
        // key.
        assert_eq!(
            key("/page?utm_content=x;callback=alert(1)", Some("h"), &sort),
            "http://h/page?utm_content=x;callback=alert(1)"
        );
        assert_eq!(
            key(
                "/page?a=1&utm_content=x;callback=y&utm_source=z",
                Some("h"),
                &sort
            ),
            "http://h/page?a=1&utm_content=x;callback=y"
        );
        let ignore = KeyConfig {
            query: QueryMode::Ignore,
            ..KeyConfig::default()
        };
        assert_eq!(key("/a?b=2", Some("h"), &ignore), "http://h/a");
        let keep = KeyConfig::default();
        assert_eq!(key("/a?b=2&a=1", Some("h"), &keep), "http://h/a?b=2&a=1");
    }

    proptest::proptest! {
        #[test]
        fn sorted_keys_ignore_parameter_order(
            mut params in proptest::collection::vec("[a-c]{1,2}=[0-9]{0,2}", 0..6),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let sort = KeyConfig { query: QueryMode::Sort, ..KeyConfig::default() };
            let a = key(&format!("/p?{}", params.join("&")), Some("h"), &sort);
            // A deterministic shuffle.
            let n = params.len().max(1);
            params.rotate_left((seed as usize) % n);
            params.reverse();
            let b = key(&format!("/p?{}", params.join("&")), Some("h"), &sort);
            proptest::prop_assert_eq!(&a, &b);
            let keep = KeyConfig::default();
            let kept = key(&format!("/p?{}", params.join("&")), Some("h"), &keep);
            proptest::prop_assert_eq!(kept, format!("http://h/p?{}", params.join("&")));
        }
    }

    fn request_with(lines: &[(usize, String)]) -> HeaderMap {
        let names = ["accept-encoding", "accept-language"];
        let mut h = HeaderMap::new();
        for (i, v) in lines {
            h.append(names[i % 2], HeaderValue::from_str(v).unwrap());
        }
        h
    }

    proptest::proptest! {
        /// The streamed hash and match agree with the built variant (the reference), and two
        /// requests select the same variant exactly when their normalised values are equal.
        #[test]
        fn streamed_variant_hash_matches_the_built_one(
            a in proptest::collection::vec((0usize..2, "[a-z ,]{0,10}"), 0..4),
            b in proptest::collection::vec((0usize..2, "[a-z ,]{0,10}"), 0..4),
        ) {
            let names = [HeaderName::from_static("accept-encoding"), HeaderName::from_static("accept-language")];
            let (ra, rb) = (request_with(&a), request_with(&b));
            let hasher = KeyHasher::new();
            let va = Variant::of(&names, &ra);
            let vb = Variant::of(&names, &rb);
            proptest::prop_assert_eq!(hasher.variant("k", &va), hasher.variant_of("k", &names, &ra));
            proptest::prop_assert!(va.matches(&ra));
            proptest::prop_assert_eq!(va.matches(&rb), va == vb);
            if va == vb {
                proptest::prop_assert_eq!(hasher.variant("k", &va), hasher.variant_of("k", &names, &rb));
            }
        }
    }

    #[test]
    fn variants_compare_normalised_values() {
        let names = [HeaderName::from_static("foo")];
        let mut a = HeaderMap::new();
        a.insert("foo", HeaderValue::from_static("1, 2"));
        let mut b = HeaderMap::new();
        b.append("foo", HeaderValue::from_static("1"));
        b.append("foo", HeaderValue::from_static("2"));
        let v = Variant::of(&names, &a);
        assert!(v.matches(&b));
        assert!(!v.matches(&HeaderMap::new()));
        let hasher = KeyHasher::new();
        assert_eq!(
            hasher.variant("k", &v),
            hasher.variant("k", &Variant::of(&names, &b))
        );
        assert_eq!(hasher.variant("k", &v), hasher.variant_of("k", &names, &a));
        assert_eq!(hasher.variant("k", &v), hasher.variant_of("k", &names, &b));
        assert_ne!(
            hasher.variant("k", &v),
            hasher.variant_of("k", &names, &HeaderMap::new())
        );
        let mut empty = HeaderMap::new();
        empty.insert("foo", HeaderValue::from_static(""));
        assert!(!v.matches(&empty));
        let absent = Variant::of(&names, &HeaderMap::new());
        assert!(absent.matches(&HeaderMap::new()));
        assert!(!absent.matches(&empty));
        assert_ne!(
            hasher.variant("k", &absent),
            hasher.variant_of("k", &names, &empty)
        );
    }
}
