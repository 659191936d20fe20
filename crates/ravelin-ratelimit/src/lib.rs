#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod client_ip;
mod config;
pub mod effect;
pub mod future;
mod gcra;
mod guard;
pub mod headers;
mod layer;
mod limiter;
mod memory;
mod response;
pub mod rules;
pub mod store;
mod table;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use client_ip::{ClientIpResolver, ForwardedHeader};
pub use config::{MAX_CAPACITY, MAX_REDIS_TIMEOUT, RateLimitConfig, StoreConfig};
pub use effect::{DenyBounds, DenyEstimate, HeadSample, SampledHead};
pub use gcra::{Decision, Evaluation, Quota, QuotaError};
pub use guard::{GUARD_NAME, RateLimitGuard};
pub use layer::{BuildError, RateLimit, RateLimitLayer, RateLimitLayerBuilder, RulesSource};
pub use limiter::{DirectLimiter, Limiter};
pub use memory::MemoryStore;
pub use response::{MAX_BODY_BYTES, MISSING_PEER_BODY, MissingPeer, ResponseTemplate};
pub use rules::{
    ClientIp, KeyPart, MAX_KEY_PARTS, MAX_RULES, Match, RULE_SWITCH_PREFIX, ResponseHeaders, Rule,
    Rules, RulesError, rule_switch_name,
};
pub use store::{Check, RateLimitStore, StoreError};
pub use table::TableStats;

// The shared primitives this crate's API takes: the one clock abstraction (limiters read a
// `Clock<Instant = Nanos>`, by default the TSC-backed `MonotonicClock`; tests use `ManualClock`)
// and the enforce/shadow switch of a rule (`Rule::action`). Re-exported so users need no other
// dependency.
pub use ravelin_primitives::Enforcement;
pub use ravelin_primitives::clock::{Clock, ManualClock, MonotonicClock, Nanos};

// The request extension `client_ip` rules read and the layer that sets it from the connection:
// re-exported here, where a user wiring the rate limiter looks for them.
pub use ravelin_http::{ConnectionPeer, PeerAddr, PeerAddrLayer};

// The types of the crates this one is built on that appear in its signatures, re-exported so a
// user can name them without depending on those crates (issue 17): the guard layer a
// `RateLimitLayer` is (`RateLimit<S>` = `GuardService<S, RateLimitGuard>`) with its
// configuration, handle and verdicts; the config store reloadable rules are read from; the
// path matcher of `Match`; the CIDR type of trusted proxies. `ravelin_failsafe::ConfigError` is
// renamed: here it is the guard's.
pub use ipnet::IpNet;
pub use ravelin_config::Store;
pub use ravelin_failsafe::{
    CircuitBreakerConfig, ConfigError as GuardConfigError, FailurePolicy, Guard, GuardConfig,
    GuardError, GuardHandle, GuardLayer, GuardService, Verdict,
};
pub use ravelin_http::MatchPath;
pub use ravelin_primitives::{KillSwitch, Switchboard, Validate, Violations};
