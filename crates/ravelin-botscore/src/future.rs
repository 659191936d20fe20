//! The futures of this crate, named for what they resolve to (after tower-http's `future`
//! modules). The guard decides synchronously ([`std::future::Ready`]), so the only one is the
//! response future of a [`BotScoring`](crate::BotScoring) service.

use crate::guard::BotGuard;

/// The guard layer's response future, generic over the guard: what [`ResponseFuture`] is with
/// the guard fixed (re-exported so the alias can be followed without ravelin-failsafe).
pub use ravelin_failsafe::future::ResponseFuture as GuardResponseFuture;

/// The response future of a [`BotScoring`](crate::BotScoring) service: the guard layer's
/// ([`ravelin_failsafe::future::ResponseFuture`]) around a [`BotGuard`], for inner service
/// `Svc` and request body `B`.
pub type ResponseFuture<Svc, B> = ravelin_failsafe::future::ResponseFuture<Svc, BotGuard, B>;
