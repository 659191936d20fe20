// The crate docs are written for docs.rs (absolute links, a feature table, one example per
// crate behind its feature), not the repository README, whose relative links break there.
#![doc = include_str!("docs.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "botscore")]
#[cfg_attr(docsrs, doc(cfg(feature = "botscore")))]
#[doc(inline)]
pub use ravelin_botscore as botscore;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
#[doc(inline)]
pub use ravelin_cache as cache;

#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
#[doc(inline)]
pub use ravelin_config as config;

#[cfg(feature = "failsafe")]
#[cfg_attr(docsrs, doc(cfg(feature = "failsafe")))]
#[doc(inline)]
pub use ravelin_failsafe as failsafe;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[doc(inline)]
pub use ravelin_http as http;

#[cfg(feature = "primitives")]
#[cfg_attr(docsrs, doc(cfg(feature = "primitives")))]
#[doc(inline)]
pub use ravelin_primitives as primitives;

#[cfg(feature = "proxy")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
#[doc(inline)]
pub use ravelin_proxy as proxy;

#[cfg(feature = "ratelimit")]
#[cfg_attr(docsrs, doc(cfg(feature = "ratelimit")))]
#[doc(inline)]
pub use ravelin_ratelimit as ratelimit;

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
#[doc(inline)]
pub use ravelin_tls as tls;
