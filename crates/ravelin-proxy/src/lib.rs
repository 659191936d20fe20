#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod body;
pub mod demo;
mod error;
mod forward;
pub mod headers;
pub mod ingress;
pub mod overload;
mod route;
mod server;

pub use admin::{Admin, AdminBuilder, ModuleStatus, Purge};
pub use body::{ForwardBody, ForwardBodyError};
pub use error::{ServerError, UpstreamError};
pub use forward::{BoxError, ClientScheme, Forward, Resolve, Target, Upstream, UpstreamBuilder};
pub use ingress::{
    Ingress, IngressBody, IngressConfig, IngressConfigError, IngressLayer, Refusal, RefusalKind,
    admit, admit_parts,
};
pub use overload::{LoadShed, LoadShedLayer, OverloadConfig};
pub use route::{Route, Routes, SharedRoutes, request_host};
pub use server::{ServeSummary, Server, ServerConfig, shutdown_signal};
