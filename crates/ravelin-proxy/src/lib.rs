#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod body;
pub mod demo;
pub mod dns;
mod error;
mod exchange;
mod forward;
pub mod headers;
pub mod health;
pub mod ingress;
mod jitter;
pub mod overload;
pub mod retry;
mod route;
mod server;
pub mod tls;
mod upgrade;
mod upstream_tls;
mod worker;

pub use admin::{Admin, AdminBuilder, ModuleStatus, Purge};
pub use body::{ForwardBody, ForwardBodyError};
pub use dns::{DnsConfig, NameResolver, SystemResolver};
pub use error::{ServerError, UpstreamError};
pub use forward::{BoxError, ClientScheme, Forward, Resolve, Target, Upstream, UpstreamBuilder};
pub use health::HealthConfig;
pub use ingress::{
    Ingress, IngressBody, IngressConfig, IngressConfigError, IngressLayer, Refusal, RefusalKind,
    admit, admit_parts,
};
pub use overload::{LoadShed, LoadShedLayer, OverloadConfig};
pub use retry::RetryConfig;
pub use route::{Route, Routes, SharedRoutes, request_host};
pub use server::{RuntimeModel, ServeSummary, Server, ServerConfig, shutdown_signal};
