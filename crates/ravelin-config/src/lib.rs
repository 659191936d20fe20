#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod decode;
mod error;
mod persist;
pub mod rollout;
mod store;

pub use decode::Document;
pub use error::{Format, Rejection, Source};
// The validation vocabulary and the kill switches live in ravelin-primitives (crates that only
// declare rules or read a switch need no store); re-exported so every existing path still works.
pub use ravelin_primitives::{
    KillSwitch, Switchboard, UnknownSwitch, Validate, Violation, Violations,
};
// The clock a store reads (`StoreBuilder::clock`), re-exported for the same reason.
pub use ravelin_primitives::clock::{Clock, Nanos};
pub use rollout::{
    Assignment, Cohort, CohortBounds, CohortHealth, CohortKey, Observation, RolloutEnd,
    RolloutPolicy, RolloutRecord, RolloutStatus,
};
pub use store::{
    Current, Digest, Meta, Outcome, RejectionRecord, Snapshot, Startup, Status, Store,
    StoreBuilder, WatchHandle,
};

#[cfg(test)]
mod tests;
