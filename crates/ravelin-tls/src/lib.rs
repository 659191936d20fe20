#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod certs;
pub mod clienthello;
pub mod ja4;

pub use certs::{CertificateConfig, CertificateSet, CertificateStatus, ServerCertificate};
