#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod acceptor;
pub mod certs;
pub mod clienthello;
pub mod ja4;
pub mod replay;

pub use certs::{CertificateConfig, CertificateSet, CertificateStatus, ServerCertificate};
