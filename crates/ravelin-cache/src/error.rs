//! Errors: configuration the cache cannot be built from, and a shared body that failed.
//!
//! Cache decisions (a hit, a 504 for `only-if-cached`) are responses, and the inner service's
//! errors pass through unchanged; these types cover only what an operator or a body reader must
//! act on.

/// A cache configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One or more fields are out of range; the message names each field and its limit.
    #[error("invalid cache configuration: {0}")]
    Invalid(ravelin_primitives::Violations),
}

/// A type-erased error, as hyper, tower and `http-body-util` take it (`tower::BoxError`): what
/// [`BodyError::Origin`] holds.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error from a [`CacheBody`](crate::CacheBody).
///
/// Not generic over the origin body's error: it holds that error boxed, so a `CacheBody` is a
/// body hyper can serve whatever the inner body's error is (anything `Into<BoxError>`, a
/// `BoxError` itself included), and this type is always a `std::error::Error + Send + Sync`.
/// The origin's error is kept as it was given: [`BodyError::Origin`] gives it back, and
/// `downcast_ref` reaches its concrete type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The origin's body failed; the error is the inner body's own, boxed.
    #[error("origin body failed: {0}")]
    Origin(#[source] BoxError),
    /// This response was shared from another request's fetch (request coalescing), and that
    /// fetch failed or was abandoned before the body was complete. The client sees a truncated
    /// response, exactly as the first client did.
    #[error("the shared (coalesced) origin fetch failed before the body was complete")]
    SharedFetchFailed,
}

impl BodyError {
    /// Wraps an origin body's error.
    pub(crate) fn origin(error: impl Into<BoxError>) -> Self {
        BodyError::Origin(error.into())
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
