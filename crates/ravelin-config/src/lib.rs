#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod store;
mod switch;

pub use error::{Format, Rejection, Source, Violation, Violations};
pub use store::{
    Digest, Meta, Outcome, RejectionRecord, Snapshot, Startup, Status, Store, StoreBuilder,
    Validate, WatchHandle,
};
pub use switch::{KillSwitch, Switchboard, UnknownSwitch};

#[cfg(test)]
mod tests;
