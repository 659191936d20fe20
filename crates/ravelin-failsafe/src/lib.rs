#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod circuit;
mod clock;
mod config;
mod error;
pub mod future;
mod guard;
mod handle;
mod layer;
mod metrics;
mod panic;
mod policy;
mod service;
mod shared;

pub use body::GuardBody;
pub use circuit::{
    CircuitBreakerConfig, CircuitState, MAX_CIRCUIT_DURATION, MAX_HALF_OPEN_COUNT, MAX_WINDOW,
};
pub use config::{CircuitConfig, GuardConfig, MAX_FAILURE_BODY_BYTES, MAX_GUARD_TIMEOUT};
pub use error::ConfigError;
pub use guard::{
    Allow, Guard, GuardError, GuardErrorKind, GuardFn, RequestHead, SkipReason, Skipped, Verdict,
    guard_fn,
};
pub use handle::GuardHandle;
pub use layer::{
    DEFAULT_DURATION_SAMPLING, DEFAULT_LOG_LINES_PER_SECOND, DEFAULT_TIMEOUT, GuardLayer,
    GuardLayerBuilder,
};
pub use metrics::{CIRCUIT_STATE, DECISIONS_TOTAL, DURATION_SECONDS, Outcome};
pub use panic::install_panic_hook;
pub use policy::{FailureMode, FailurePolicy, X_RAVELIN_SKIPPED};
pub use service::GuardService;

// The shared primitives this crate's API takes or returns, re-exported so its users need no
// other dependency: the one clock abstraction, kill switches, the log limiter, the validation
// vocabulary (`GuardConfig: Validate`) and the peer address guards read.
pub use ravelin_http::PeerAddr;
pub use ravelin_primitives::clock::{Clock, ManualClock, MonotonicClock, Nanos, TokioClock};
pub use ravelin_primitives::{
    KillSwitch, LogLimiter, LogPermit, Switchboard, Validate, Violation, Violations,
};
