//! Where rate-limit state lives: the [`RateLimitStore`] abstraction.
//!
//! The in-memory [`MemoryStore`](crate::MemoryStore) is the default; the `redis` feature adds a
//! store shared by a fleet. Both evaluate the same GCRA ([`Quota::decide`]) and the same batch
//! semantics, documented on [`RateLimitStore::check`].

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::gcra::{Decision, Quota};

/// The most checks one batch carries: one per rule, and a rule set holds at most this many rules.
pub const MAX_CHECKS: usize = 32;

/// The longest key, in bytes, a store is ever given. Extractors replace longer values by a
/// fixed-size digest, so an attacker cannot grow a store's keys with long header values.
pub const MAX_KEY_LEN: usize = 256;

/// One rule's question about one request: may `key` spend `cost` units of `quota`?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check<'a> {
    /// The rule's name. State is separate per (rule, quota, key): two rules never share state,
    /// and a rule whose quota changes starts afresh.
    pub rule: &'a str,
    /// The key the rule extracted (a client IP, an API key…), at most [`MAX_KEY_LEN`] bytes.
    pub key: &'a [u8],
    /// The quota. Its identity for state is the emission interval and the burst.
    pub quota: Quota,
    /// Units this request spends (`0` reads without spending).
    pub cost: u32,
    /// Whether a denial blocks the request (`true`, an enforcing rule) or is only reported
    /// (`false`, a shadow rule).
    pub enforce: bool,
}

/// A rate-limit state backend.
///
/// Implementations must make [`check`](RateLimitStore::check) behave exactly as documented there;
/// the property tests in this crate check the in-memory store against a reference model, and a
/// new backend should be run through the same model.
pub trait RateLimitStore: Send + Sync + 'static {
    /// The future of a batch's decisions.
    type Future: Future<Output = Result<Vec<Decision>, StoreError>> + Send + 'static;

    /// Decides every check of one request, all or nothing.
    ///
    /// Semantics (each step is GCRA as defined by [`Quota::decide`]):
    ///
    /// 1. Every check is evaluated against the state its `(rule, quota, key)` has before this
    ///    batch, at one instant `now` of the store's clock (the in-memory store: a monotonic
    ///    clock; Redis: the server's `TIME`). An absent key has TAT `0`, i.e. a full bucket.
    /// 2. If every check with `enforce == true` is allowed, the state of every *allowed* check
    ///    becomes its new TAT (denied shadow checks change nothing, as GCRA denials never do).
    ///    Otherwise **nothing** is written: a request denied by one rule spends nothing from any
    ///    other rule.
    /// 3. The result has one [`Decision`] per check, in order. An allowed check's `remaining` and
    ///    `reset_after` describe the state as if it had been written, also when step 2 wrote
    ///    nothing because another rule denied.
    ///
    /// The batch is atomic with respect to the decisions: a store that cannot write several keys
    /// atomically (the in-memory store uses one CAS per key) must undo its writes when a later
    /// enforcing check of the same batch turns out denied, so that a request reported denied has
    /// spent nothing once `check` returns.
    ///
    /// Callers pass at most [`MAX_CHECKS`] checks with distinct `(rule, quota, key)`.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot decide (unreachable, timed out, garbage reply); the
    /// guard's failure policy then applies (fail open by default).
    fn check(&self, checks: &[Check<'_>]) -> Self::Future;

    /// A short name for logs and metric labels (`"memory"`, `"redis"`).
    fn name(&self) -> &'static str {
        "custom"
    }
}

impl<S: RateLimitStore + ?Sized> RateLimitStore for Arc<S> {
    type Future = S::Future;

    fn check(&self, checks: &[Check<'_>]) -> Self::Future {
        (**self).check(checks)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}

/// A store could not decide. Policy answers are never errors: a denial is a [`Decision`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or refused the command.
    #[error("rate-limit store `{store}` is unavailable: {message}")]
    Unavailable {
        /// The store's [`name`](RateLimitStore::name).
        store: &'static str,
        /// What failed, for the operator.
        message: Cow<'static, str>,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend did not answer in time.
    #[error("rate-limit store `{store}` did not answer within {timeout:?}")]
    Timeout {
        /// The store's name.
        store: &'static str,
        /// The time budget that was exceeded.
        timeout: Duration,
    },
    /// The backend answered something this crate cannot interpret (a wrong script, a foreign
    /// value under one of its keys).
    #[error("rate-limit store `{store}` returned an invalid reply: {message}")]
    InvalidReply {
        /// The store's name.
        store: &'static str,
        /// What was wrong with the reply.
        message: Cow<'static, str>,
    },
}

impl StoreError {
    /// A short stable name of the kind of failure, for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Timeout { .. } => "timeout",
            StoreError::InvalidReply { .. } => "invalid_reply",
        }
    }

    /// The name of the store that failed.
    pub fn store(&self) -> &'static str {
        match self {
            StoreError::Unavailable { store, .. }
            | StoreError::Timeout { store, .. }
            | StoreError::InvalidReply { store, .. } => store,
        }
    }

    /// Whether trying again later may succeed (a transport failure), as opposed to a reply that
    /// will stay wrong until someone fixes the deployment.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::InvalidReply { .. })
    }
}

impl From<StoreError> for ravelin_failsafe::GuardError {
    fn from(error: StoreError) -> Self {
        ravelin_failsafe::GuardError::dependency("rate-limit store failed", error)
    }
}
