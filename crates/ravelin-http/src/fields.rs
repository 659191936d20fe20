//! Field names more than one crate writes or reads, defined once.

use http::HeaderName;

/// `x-ravelin-skipped`: the request header a guard's failure policy usually marks a fail-open
/// pass with — one field naming every skipped guard and why (`ratelimit=timed_out,
/// botscore=killed`, an RFC 8941 dictionary), so the origin can tell "not checked" from
/// "checked and allowed". `ravelin-failsafe` writes it (and re-exports this constant); the
/// ingress stage of `ravelin-proxy` removes client copies, since only the edge may set it.
pub const X_RAVELIN_SKIPPED: HeaderName = HeaderName::from_static("x-ravelin-skipped");
