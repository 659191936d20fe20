//! Errors: configuration the cache cannot be built from, and a shared body that failed.
//!
//! Cache decisions (a hit, a 504 for `only-if-cached`) are responses, and the inner service's
//! errors pass through unchanged; these types cover only what an operator or a body reader must
//! act on.

use std::fmt;

/// A cache configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One or more fields are out of range; the message names each field and its limit.
    #[error("invalid cache configuration: {0}")]
    Invalid(ravelin_primitives::Violations),
}

/// An error from a [`CacheBody`](crate::CacheBody).
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyError<E> {
    /// The origin's body failed; the error is the inner body's own.
    Origin(E),
    /// This response was shared from another request's fetch (request coalescing), and that
    /// fetch failed or was abandoned before the body was complete. The client sees a truncated
    /// response, exactly as the first client did.
    SharedFetchFailed,
}

impl<E: fmt::Display> fmt::Display for BodyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Origin(e) => write!(f, "origin body failed: {e}"),
            BodyError::SharedFetchFailed => f.write_str(
                "the shared (coalesced) origin fetch failed before the body was complete",
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BodyError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Origin(e) => Some(e),
            BodyError::SharedFetchFailed => None,
        }
    }
}

/// A purge request the cache cannot act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// The URL does not parse, or lacks the scheme and host the cache key needs.
    #[error("cannot purge {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
