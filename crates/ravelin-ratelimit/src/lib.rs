#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod client_ip;
mod clock;
pub mod future;
mod gcra;
mod guard;
pub mod headers;
mod layer;
mod limiter;
mod memory;
pub mod rules;
pub mod store;
mod table;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use client_ip::{ClientIpResolver, ForwardedHeader};
pub use clock::{Clock, FakeClock, MonotonicClock};
pub use gcra::{Decision, Evaluation, Quota, QuotaError};
pub use guard::{GUARD_NAME, RateLimitGuard};
pub use layer::{BuildError, RateLimit, RateLimitLayer, RateLimitLayerBuilder, RulesSource};
pub use limiter::{DirectLimiter, Limiter};
pub use memory::MemoryStore;
pub use rules::{
    Action, ClientIp, KeyPart, MAX_KEY_PARTS, MAX_RULES, Match, ResponseHeaders, Rule, Rules,
    RulesError,
};
pub use store::{Check, RateLimitStore, StoreError};
pub use table::TableStats;
