//! One definition of a path prefix, shared by every module that matches on paths.

use crate::path::{MatchPath, canonical_path_lenient, match_path};

/// The longest prefix accepted, in bytes.
pub const MAX_PREFIX_BYTES: usize = 1024;

/// Why a configured prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrefixError {
    /// The prefix does not start with `/`.
    #[error("{prefix:?} must start with /")]
    NotAbsolute {
        /// The prefix as configured.
        prefix: String,
    },
    /// The prefix is longer than [`MAX_PREFIX_BYTES`].
    #[error("{len} bytes is longer than the limit of {MAX_PREFIX_BYTES}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The prefix holds a query or fragment delimiter, which a path never contains.
    #[error(
        "{prefix:?} contains {delimiter:?}; a path prefix matches the path only, never the query"
    )]
    HasQuery {
        /// The prefix as configured.
        prefix: String,
        /// `?` or `#`.
        delimiter: char,
    },
}

/// A path prefix, matched on segment boundaries against a request's [`MatchPath`]:
///
/// - `/` matches every path;
/// - `/api` matches `/api`, `/api/` and `/api/x`, never `/apiary`;
/// - `/api/` (ending in `/`) matches `/api/` and everything below it, not `/api` itself.
///
/// The configured text is normalized exactly as request paths are (dot segments, repeated
/// slashes, escapes, `;parameters`), so `/%6cogin` and `/login` are the same prefix; against a
/// case-folded path the prefix compares case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPrefix {
    configured: String,
    exact: String,
    folded: String,
}

impl PathPrefix {
    /// Parses a configured prefix.
    ///
    /// # Errors
    /// [`PrefixError`] when it does not start with `/`, is longer than [`MAX_PREFIX_BYTES`], or
    /// holds `?` or `#`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, PrefixError> {
        let configured = prefix.into();
        if !configured.starts_with('/') {
            return Err(PrefixError::NotAbsolute { prefix: configured });
        }
        if configured.len() > MAX_PREFIX_BYTES {
            return Err(PrefixError::TooLong {
                len: configured.len(),
            });
        }
        if let Some(delimiter) = configured.chars().find(|c| matches!(c, '?' | '#')) {
            return Err(PrefixError::HasQuery {
                prefix: configured,
                delimiter,
            });
        }
        let canonical = canonical_path_lenient(&configured);
        let exact = match_path(&canonical, false).as_str().to_owned();
        let folded = exact.to_ascii_lowercase();
        Ok(Self {
            configured,
            exact,
            folded,
        })
    }

    /// The prefix as configured.
    pub fn as_configured(&self) -> &str {
        &self.configured
    }

    /// The normalized prefix compared against paths that were not case folded.
    pub fn normalized(&self) -> &str {
        &self.exact
    }

    /// Whether `path` lies under this prefix.
    pub fn matches(&self, path: &MatchPath) -> bool {
        let prefix = if path.is_case_folded() {
            &self.folded
        } else {
            &self.exact
        };
        if prefix == "/" {
            return true;
        }
        match path.as_str().strip_prefix(prefix.as_str()) {
            Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// The prefix's length in bytes of its normalized form: longer is more specific.
    pub fn specificity(&self) -> usize {
        self.exact.len()
    }
}

impl std::fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.configured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::canonical_path;

    fn path(raw: &str) -> MatchPath {
        match_path(&canonical_path(raw).unwrap(), true)
    }

    #[test]
    fn segment_aligned() {
        let api = PathPrefix::new("/api").unwrap();
        assert!(api.matches(&path("/api")));
        assert!(api.matches(&path("/api/")));
        assert!(api.matches(&path("/api/x")));
        assert!(api.matches(&path("/API/x")));
        assert!(!api.matches(&path("/apiary")));
        assert!(!api.matches(&path("/")));
        let dir = PathPrefix::new("/api/").unwrap();
        assert!(dir.matches(&path("/api/x")));
        assert!(!dir.matches(&path("/api")));
        assert!(PathPrefix::new("/").unwrap().matches(&path("/anything")));
    }

    #[test]
    fn configured_spelling_is_normalized() {
        let login = PathPrefix::new("/%6cogin").unwrap();
        assert_eq!(login.normalized(), "/login");
        assert!(login.matches(&path("/LOGIN;x=1")));
        let unfolded = match_path(&canonical_path("/LOGIN").unwrap(), false);
        assert!(!login.matches(&unfolded));
        assert!(PathPrefix::new("/Login").unwrap().matches(&path("/login")));
    }

    #[test]
    fn bad_prefixes_are_named() {
        assert!(matches!(
            PathPrefix::new("login"),
            Err(PrefixError::NotAbsolute { .. })
        ));
        assert!(matches!(
            PathPrefix::new("/a?b"),
            Err(PrefixError::HasQuery { .. })
        ));
        assert!(matches!(
            PathPrefix::new("/".repeat(2000)),
            Err(PrefixError::TooLong { .. })
        ));
    }
}
