#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod fields;
mod framing;
mod hop;
mod identity;
pub mod list;
pub mod path;
mod peer;
mod peer_layer;
mod prefix;
mod response;
mod tls;
mod token;

pub use fields::{X_RAVELIN_SKIPPED, push_decimal};
pub use framing::{CloseDelimited, UnframedContent, headers_have_content, request_has_content};
pub use hop::{HOP_BY_HOP, MAX_CONNECTION_OPTIONS, connection_options, is_hop_by_hop};
pub use identity::{IdentityError, IdentityOptions, RequestIdentity, effective_host};
pub use list::{split_list, trim_ows};
pub use path::{MatchPath, PathError, canonical_path, canonical_path_lenient, match_path};
pub use peer::PeerAddr;
pub use peer_layer::{ConnectionPeer, PeerAddrLayer, SetPeerAddr};
pub use prefix::{MAX_PREFIX_BYTES, PathPrefix, PrefixError};
pub use response::{
    FixedResponse, FixedResponseError, FixedResponseProblem, MAX_FIXED_BODY_BYTES, TEXT_PLAIN_UTF8,
    plain_text,
};
pub use tls::TlsInfo;
pub use token::is_tchar;
