#![doc = include_str!("../README.md")]
// Test-harness code, shared by integration tests and benches: a setup failure must stop the run
// loudly, and clippy.toml's test exemptions only cover `#[test]` functions themselves.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

pub mod redis;
