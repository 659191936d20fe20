#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod acceptor;
pub mod certs;
pub mod clienthello;
pub mod ja4;
pub mod replay;

pub use certs::{CertificateConfig, CertificateSet, CertificateStatus, ServerCertificate};

// The types of the crates this one is built on that appear in its signatures, re-exported so a
// user can name them without depending on those crates (issue 17): the config store certificates
// are reloaded through and its outcomes, the TLS facts a handshake leaves on a request, the clock
// and the validation vocabulary.
pub use ravelin_config::{Document, Outcome, Rejection, RejectionRecord, Store};
pub use ravelin_http::TlsInfo;
pub use ravelin_primitives::clock::Clock;
pub use ravelin_primitives::{Validate, Violations};
