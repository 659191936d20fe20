#![doc = include_str!("../README.md")]

mod botscore;
mod cache;
pub mod config;
mod modules;
mod ratelimit;
mod rollout;
mod runtime;
mod stack;

pub use config::{
    BotScoreConfig, CacheConfig, CircuitConfig, EdgeConfig, FailureMode, GuardConfig, ModuleSwitch,
    ModulesSection, Overrides,
};
pub use modules::ExtraGuard;
pub use runtime::{
    ConfigSource, Edge, EdgeOptions, MAX_CONFIG_BYTES, Running, StartError, check_config, start,
    try_build,
};
pub use stack::BoxGuard;
