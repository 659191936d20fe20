#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "botscore")]
#[doc(inline)]
pub use ravelin_botscore as botscore;
#[cfg(feature = "cache")]
#[doc(inline)]
pub use ravelin_cache as cache;
#[cfg(feature = "config")]
#[doc(inline)]
pub use ravelin_config as config;
#[cfg(feature = "failsafe")]
#[doc(inline)]
pub use ravelin_failsafe as failsafe;
#[cfg(feature = "http")]
#[doc(inline)]
pub use ravelin_http as http;
#[cfg(feature = "primitives")]
#[doc(inline)]
pub use ravelin_primitives as primitives;
#[cfg(feature = "proxy")]
#[doc(inline)]
pub use ravelin_proxy as proxy;
#[cfg(feature = "ratelimit")]
#[doc(inline)]
pub use ravelin_ratelimit as ratelimit;
