//! The futures of this crate, named for what they resolve to (after tower-http's `future`
//! modules). The guard decides synchronously ([`std::future::Ready`]), so the only one is the
//! response future of a [`BotScoring`](crate::BotScoring) service.

use crate::guard::BotGuard;

/// The response future of a [`BotScoring`](crate::BotScoring) service: the guard layer's
/// ([`ravelin_failsafe::future::ResponseFuture`]) around a [`BotGuard`], for inner service
/// `Svc` and request body `B`.
pub type ResponseFuture<Svc, B> = ravelin_failsafe::future::ResponseFuture<Svc, BotGuard, B>;
