//! The assembled edge proxy, shared by the `edge-proxy` example binary and the end-to-end tests
//! (which include this module with `#[path]`), so both run exactly the same assembly.

// The binary and each test use different parts of the assembly (tests reach into handles the
// binary never needs), so unused items are expected in any one of them.
#![allow(dead_code)]

pub(crate) mod botscore;
pub(crate) mod cache;
pub(crate) mod config;
pub(crate) mod modules;
pub(crate) mod ratelimit;
pub(crate) mod runtime;
pub(crate) mod stack;
