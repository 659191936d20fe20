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
mod pool;
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

// The types of the crates this one is built on that appear in its signatures, re-exported so a
// user can name them without depending on those crates (issue 17): a config store's status on
// the admin API, the request-identity options and path-prefix errors of ingress and routes, the
// TLS acceptor the server takes, the clock, the kill switches and the validation vocabulary, and
// the CIDR type of trusted proxies.
pub use ipnet::IpNet;
pub use ravelin_config::Status as StoreStatus;
pub use ravelin_http::{IdentityOptions, PrefixError};
pub use ravelin_primitives::clock::{Clock, Nanos};
pub use ravelin_primitives::{Switchboard, Validate, Violations};
pub use ravelin_tls::acceptor::TlsAcceptor;
