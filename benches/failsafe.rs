//! Placeholder: replaced by the crate that owns this bench.
fn main() {}
