#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod gcra;
mod limiter;
mod memory;
pub mod store;
mod table;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use clock::{Clock, FakeClock, MonotonicClock};
pub use gcra::{Decision, Evaluation, Quota, QuotaError};
pub use limiter::{DirectLimiter, Limiter};
pub use memory::MemoryStore;
pub use store::{Check, RateLimitStore, StoreError};
pub use table::TableStats;
