#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod gcra;
pub mod store;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use gcra::{Decision, Evaluation, Quota, QuotaError};
pub use store::{Check, RateLimitStore, StoreError};
