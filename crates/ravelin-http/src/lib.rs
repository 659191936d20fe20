#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod framing;
mod identity;
pub mod path;
mod prefix;
mod token;

pub use framing::CloseDelimited;
pub use identity::{IdentityError, IdentityOptions, RequestIdentity, effective_host};
pub use path::{MatchPath, PathError, canonical_path, canonical_path_lenient, match_path};
pub use prefix::{MAX_PREFIX_BYTES, PathPrefix, PrefixError};
pub use token::is_tchar;
