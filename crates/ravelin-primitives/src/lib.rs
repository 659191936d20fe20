#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
mod enforcement;
mod failure;
mod log;
mod switch;
mod validate;

pub use enforcement::Enforcement;
pub use failure::{CircuitState, FailureMode};
pub use log::{LogLimiter, LogPermit};
pub use switch::{KillSwitch, Switchboard, UnknownSwitch};
pub use validate::{Validate, Violation, Violations};
