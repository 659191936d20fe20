#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod clock;
mod config;
mod date;
pub mod directives;
mod engine;
mod entry;
mod error;
mod fill;
pub mod future;
mod handle;
mod headers;
mod key;
mod layer;
mod policy;
mod range;
mod service;
mod stats;
mod status;
mod store;

pub use body::CacheBody;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::CacheConfig;
pub use entry::{Object, StoredResponse, VaryRecord};
pub use error::{BodyError, ConfigError, PurgeError};
pub use handle::CacheHandle;
pub use key::{KeyConfig, QueryMode};
pub use layer::{CacheLayer, CacheLayerBuilder};
pub use service::Cache;
pub use stats::CacheStats;
pub use store::{MemoryStore, Storage, StorageUsage};
