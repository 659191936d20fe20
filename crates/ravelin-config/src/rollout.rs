//! Staged activation of a new document: pre-activation check → canary → promoted or rolled
//! back.
//!
//! A document that passes the store's validation is not yet trusted with all traffic. With a
//! [`RolloutPolicy`] ([`StoreBuilder::rollout`](crate::StoreBuilder::rollout)) the store keeps
//! it beside the active one as a **canary**: a stable share of clients (by a hash of their
//! [`CohortKey`], salted per candidate, so one client sees one version for the whole rollout)
//! gets it from [`Store::load_for`](crate::Store::load_for), everyone else the active document.
//! Whoever serves traffic reports how each request went ([`Store::observe`]); the store compares
//! the canary cohort with the baseline cohort and, on [`Store::tick`], **rolls the candidate
//! back** as soon as it is measurably worse ([`CohortBounds`]), or **promotes** it once it has
//! baked ([`RolloutPolicy::bake`]) within bounds. Before any of that, a pre-activation check
//! ([`StoreBuilder::check`](crate::StoreBuilder::check)) can refuse the candidate outright by
//! its effect on a sample of recent requests.
//!
//! [`Store::observe`]: crate::Store::observe
//! [`Store::tick`]: crate::Store::tick

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ravelin_primitives::Validate;
use ravelin_primitives::Violations;
use ravelin_primitives::clock::Nanos;
use serde::Deserialize;

use crate::store::{Digest, Meta, Snapshot};

/// How a store rolls out a document that passed validation and the pre-activation check.
///
/// Deserializes from a config table (every key optional, unknown keys refused):
///
/// ```
/// use std::time::Duration;
/// use ravelin_config::RolloutPolicy;
///
/// let policy: RolloutPolicy = toml::from_str(r#"
///     share = 0.1
///     bake = "2m"
///     min_requests = 50
///     [bounds]
///     max_failure_increase = 0.02
/// "#).unwrap();
/// assert_eq!(policy.bake, Duration::from_secs(120));
/// assert!(policy.canary);
/// assert_eq!(policy.bounds.max_origin_5xx_increase, 0.02);
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutPolicy {
    /// Whether candidates go through a canary at all (default `true`). `false` installs a
    /// candidate for everyone as soon as it passes validation and the pre-activation check.
    pub canary: bool,
    /// The share of clients that get the candidate during the canary (default 0.05; more than
    /// 0, less than 1).
    pub share: f64,
    /// How long the canary runs before it can be promoted (default 5 minutes).
    #[serde(with = "humantime_serde")]
    pub bake: Duration,
    /// The canary requests needed before the cohorts are compared (default 200): below it
    /// nothing is rolled back or promoted on evidence.
    pub min_requests: u64,
    /// A canary that has not seen `min_requests` by this time is promoted on time, with a log
    /// line saying there was too little traffic to compare (default 30 minutes; at least
    /// `bake`). It passed validation and the pre-activation check, and nothing spoke against
    /// it: waiting forever would leave a quiet site on the old document for good.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// How much worse than the baseline the canary cohort may be.
    pub bounds: CohortBounds,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            canary: true,
            share: 0.05,
            bake: Duration::from_secs(300),
            min_requests: 200,
            max_wait: Duration::from_secs(1800),
            bounds: CohortBounds::default(),
        }
    }
}

impl RolloutPolicy {
    /// The policy of a store that installs every candidate at once (no canary).
    pub fn immediate() -> Self {
        Self {
            canary: false,
            ..Self::default()
        }
    }
}

/// The longest bake or wait a policy accepts: one week.
const MAX_ROLLOUT_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Validate for RolloutPolicy {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        if !(self.share.is_finite() && self.share > 0.0 && self.share < 1.0) {
            v.push(
                "share",
                format!("{} is not a share above 0 and below 1", self.share),
            );
        }
        if self.bake > MAX_ROLLOUT_DURATION {
            v.push("bake", "is longer than a week");
        }
        if self.max_wait > MAX_ROLLOUT_DURATION {
            v.push("max_wait", "is longer than a week");
        }
        if self.max_wait < self.bake {
            v.push(
                "max_wait",
                format!("{:?} is shorter than bake ({:?})", self.max_wait, self.bake),
            );
        }
        if self.min_requests == 0 {
            v.push("min_requests", "must be at least 1");
        }
        if let Err(inner) = self.bounds.validate() {
            v.merge_under("bounds", inner);
        }
        v.into_result()
    }
}

/// How much worse than the baseline cohort the canary cohort may do before the candidate is
/// rolled back. Each bound is an increase of a share of requests, in absolute terms (0.01 =
/// one percentage point): a canary whose requests fail 3 % of the time against 0.5 % in the
/// baseline crosses a bound of 0.01.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CohortBounds {
    /// Guard failures, panics and timeouts (default 0.01).
    pub max_failure_increase: f64,
    /// Responses the edge answered itself instead of the origin: blocks, challenges, limits,
    /// a fail-closed guard (default 0.05).
    pub max_answered_increase: f64,
    /// Origin 5xx (or the proxy's own 502/504) among the requests that reached it (default
    /// 0.02).
    pub max_origin_5xx_increase: f64,
    /// The largest difference between the cohorts' mean observed value (a bot score: 1 to 99),
    /// in the value's own units (default 15).
    pub max_value_shift: f64,
    /// Whether observed values are compared (default `true`).
    pub compare_values: bool,
}

impl Default for CohortBounds {
    fn default() -> Self {
        Self {
            max_failure_increase: 0.01,
            max_answered_increase: 0.05,
            max_origin_5xx_increase: 0.02,
            max_value_shift: 15.0,
            compare_values: true,
        }
    }
}

impl Validate for CohortBounds {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        for (field, value) in [
            ("max_failure_increase", self.max_failure_increase),
            ("max_answered_increase", self.max_answered_increase),
            ("max_origin_5xx_increase", self.max_origin_5xx_increase),
        ] {
            if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
                v.push(field, format!("{value} is not a share from 0 to 1"));
            }
        }
        if !(self.max_value_shift.is_finite() && self.max_value_shift >= 0.0) {
            v.push(
                "max_value_shift",
                format!(
                    "{} is not a finite non-negative number",
                    self.max_value_shift
                ),
            );
        }
        v.into_result()
    }
}

/// What picks a client's cohort: a hash of a stable client identity (its address, an account
/// id). Whoever serves traffic sets it as a request extension, so every module that reads a
/// rolled-out document puts the same client in the same cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CohortKey(u64);

impl CohortKey {
    /// The key of an opaque client identity.
    pub fn of(identity: &[u8]) -> Self {
        CohortKey(FIXED.hash_one(identity))
    }

    /// The key of a client address (IPv4-mapped IPv6 addresses are the IPv4 address).
    pub fn of_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::of(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of(&v4.octets()),
                None => Self::of(&v6.octets()),
            },
        }
    }

    /// The raw hash.
    pub fn value(self) -> u64 {
        self.0
    }
}

/// A hasher with fixed keys: the same identity gives the same key in every process, so a
/// client keeps its cohort across the workers of one proxy.
const FIXED: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher> =
    std::hash::BuildHasherDefault::new();

/// Which version a client is served during a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cohort {
    /// The active document.
    Baseline,
    /// The candidate.
    Canary,
}

impl Cohort {
    /// `baseline` or `canary`, for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Cohort::Baseline => "baseline",
            Cohort::Canary => "canary",
        }
    }
}

/// A client's cohort in one rollout, as [`Store::load_for`](crate::Store::load_for) decided
/// it: what [`Store::observe`](crate::Store::observe) files an observation under. An
/// assignment from a rollout that has ended is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub(crate) rollout: u64,
    /// The cohort.
    pub cohort: Cohort,
}

impl Assignment {
    /// The rollout this assignment belongs to ([`Store::rollout_id`](crate::Store::rollout_id)).
    pub fn rollout_id(&self) -> u64 {
        self.rollout
    }
}

/// How one request went, for the cohort comparison. Counted once per request by whoever sees
/// its response; a value computed for the request (a bot score) comes separately from the
/// module that computed it ([`Store::observe_value`](crate::Store::observe_value)).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    /// A guard returned an error for it (fail-open or fail-closed).
    pub guard_failed: bool,
    /// A guard panicked on it.
    pub panicked: bool,
    /// A guard timed out on it.
    pub timed_out: bool,
    /// The edge answered it itself (a block, a challenge, a limit, a fail-closed guard).
    pub answered_by_edge: bool,
    /// It reached the origin, which answered 5xx (or the proxy could not reach it).
    pub origin_5xx: bool,
}

/// One cohort's health during a rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CohortHealth {
    /// Requests observed.
    pub requests: u64,
    /// Requests a guard failed on.
    pub guard_failures: u64,
    /// Requests a guard panicked on.
    pub panics: u64,
    /// Requests a guard timed out on.
    pub timeouts: u64,
    /// Requests the edge answered itself.
    pub answered_by_edge: u64,
    /// Requests the origin answered 5xx.
    pub origin_5xx: u64,
    /// Values observed.
    pub values: u64,
    /// Their mean, when there is one.
    pub value_mean: Option<f64>,
}

impl CohortHealth {
    /// Requests with a guard failure, panic or timeout.
    pub fn failures(&self) -> u64 {
        self.guard_failures
            .saturating_add(self.panics)
            .saturating_add(self.timeouts)
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "request counts far below 2^52; a share needs no more precision"
)]
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The largest value filed ([`CohortCounters::observe_value`]).
const MAX_VALUE: f64 = 1_000_000.0;

/// Atomic counters of one cohort.
#[derive(Debug, Default)]
pub(crate) struct CohortCounters {
    requests: AtomicU64,
    guard_failures: AtomicU64,
    panics: AtomicU64,
    timeouts: AtomicU64,
    answered_by_edge: AtomicU64,
    origin_5xx: AtomicU64,
    /// Count and sum (in thousandths) of the values: lock-free, as every scored request of a
    /// rollout adds one.
    values: AtomicU64,
    value_milli_sum: AtomicU64,
}

impl CohortCounters {
    pub(crate) fn observe(&self, observation: &Observation) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        for (flag, counter) in [
            (observation.guard_failed, &self.guard_failures),
            (observation.panicked, &self.panics),
            (observation.timed_out, &self.timeouts),
            (observation.answered_by_edge, &self.answered_by_edge),
            (observation.origin_5xx, &self.origin_5xx),
        ] {
            if flag {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Files a value: finite and from 0 to 1,000,000 (a bot score is 1 to 99); others are
    /// ignored.
    pub(crate) fn observe_value(&self, value: f64) {
        if !(value.is_finite() && (0.0..=MAX_VALUE).contains(&value)) {
            return;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "value is in 0..=1e6 (checked), so thousandths fit a u64"
        )]
        let milli = (value * 1000.0).round() as u64;
        self.value_milli_sum.fetch_add(milli, Ordering::Relaxed);
        self.values.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn health(&self) -> CohortHealth {
        let values = self.values.load(Ordering::Relaxed);
        let sum = self.value_milli_sum.load(Ordering::Relaxed);
        #[expect(
            clippy::cast_precision_loss,
            reason = "counts and sums far below 2^52; a mean needs no more precision"
        )]
        let value_mean = (values > 0).then(|| sum as f64 / 1000.0 / values as f64);
        CohortHealth {
            requests: self.requests.load(Ordering::Relaxed),
            guard_failures: self.guard_failures.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            answered_by_edge: self.answered_by_edge.load(Ordering::Relaxed),
            origin_5xx: self.origin_5xx.load(Ordering::Relaxed),
            values,
            value_mean,
        }
    }
}

/// The candidate under canary, shared with readers.
pub(crate) struct Canary<T> {
    pub(crate) id: u64,
    pub(crate) snapshot: Arc<Snapshot<T>>,
    /// The candidate's bytes, persisted when it is promoted.
    pub(crate) bytes: Vec<u8>,
    /// Clients whose salted key is below this get the candidate.
    threshold: u64,
    salt: u64,
    pub(crate) policy: RolloutPolicy,
    pub(crate) started: Nanos,
    pub(crate) started_wall: SystemTime,
    pub(crate) baseline: CohortCounters,
    pub(crate) canary: CohortCounters,
}

impl<T> Canary<T> {
    pub(crate) fn new(
        id: u64,
        snapshot: Arc<Snapshot<T>>,
        bytes: Vec<u8>,
        policy: RolloutPolicy,
        started: Nanos,
    ) -> Self {
        let salt = u64::from_le_bytes(
            snapshot
                .meta()
                .digest
                .as_bytes()
                .first_chunk::<8>()
                .copied()
                .unwrap_or_default(),
        );
        // `as` saturates: a share of 0.999… gives a threshold just under 2^64.
        #[expect(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "share is in (0, 1) (validated); the product is a fraction of 2^64"
        )]
        let threshold = (policy.share * u64::MAX as f64) as u64;
        Self {
            id,
            snapshot,
            bytes,
            threshold,
            salt,
            policy,
            started,
            started_wall: SystemTime::now(),
            baseline: CohortCounters::default(),
            canary: CohortCounters::default(),
        }
    }

    /// The cohort of `key` in this rollout: the key mixed with the candidate's digest, so each
    /// rollout picks its own slice of clients.
    pub(crate) fn cohort(&self, key: CohortKey) -> Cohort {
        if FIXED.hash_one((key.0, self.salt)) < self.threshold {
            Cohort::Canary
        } else {
            Cohort::Baseline
        }
    }

    pub(crate) fn counters(&self, cohort: Cohort) -> &CohortCounters {
        match cohort {
            Cohort::Baseline => &self.baseline,
            Cohort::Canary => &self.canary,
        }
    }
}

/// What the comparison of the cohorts says now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Judgement {
    /// The canary is measurably worse: roll back, for this reason.
    Worse(String),
    /// Within bounds, with enough canary requests to say so.
    Within,
    /// Too few canary requests to compare.
    TooFew,
}

/// Compares the cohorts under `policy`.
pub(crate) fn judge(
    policy: &RolloutPolicy,
    canary: &CohortHealth,
    baseline: &CohortHealth,
) -> Judgement {
    // Both cohorts need the evidence: a baseline of a handful of requests is no yardstick.
    if canary.requests < policy.min_requests || baseline.requests < policy.min_requests {
        return Judgement::TooFew;
    }
    let bounds = &policy.bounds;
    let mut reasons = Vec::new();
    for (what, c, b, bound) in [
        (
            "guard failures, panics or timeouts",
            canary.failures(),
            baseline.failures(),
            bounds.max_failure_increase,
        ),
        (
            "answered by the edge",
            canary.answered_by_edge,
            baseline.answered_by_edge,
            bounds.max_answered_increase,
        ),
        (
            "origin 5xx",
            canary.origin_5xx,
            baseline.origin_5xx,
            bounds.max_origin_5xx_increase,
        ),
    ] {
        let (canary_share, baseline_share) =
            (share(c, canary.requests), share(b, baseline.requests));
        if canary_share - baseline_share > bound {
            reasons.push(format!(
                "{what}: {:.1}% of {} canary requests against {:.1}% of {} baseline (bound +{:.1} points)",
                canary_share * 100.0,
                canary.requests,
                baseline_share * 100.0,
                baseline.requests,
                bound * 100.0
            ));
        }
    }
    if bounds.compare_values
        && let (Some(c), Some(b)) = (canary.value_mean, baseline.value_mean)
        && (c - b).abs() > bounds.max_value_shift
    {
        reasons.push(format!(
            "mean value {c:.1} in the canary against {b:.1} in the baseline (bound ±{:.1})",
            bounds.max_value_shift
        ));
    }
    if reasons.is_empty() {
        Judgement::Within
    } else {
        Judgement::Worse(reasons.join("; "))
    }
}

/// Where a rollout stands, for status pages.
#[derive(Debug, Clone)]
pub struct RolloutStatus {
    /// The candidate's metadata.
    pub candidate: Meta,
    /// The share of clients it serves.
    pub share: f64,
    /// How long it has served them.
    pub elapsed: Duration,
    /// The bake period.
    pub bake: Duration,
    /// Canary requests needed to compare.
    pub min_requests: u64,
    /// When the canary began.
    pub started_at: SystemTime,
    /// The canary cohort's health.
    pub canary: CohortHealth,
    /// The baseline cohort's health.
    pub baseline: CohortHealth,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutEnd {
    /// Promoted on evidence: baked within bounds.
    Promoted,
    /// Promoted after `max_wait` with too few requests to compare.
    PromotedOnTime,
    /// Promoted by hand ([`Store::promote`](crate::Store::promote)).
    PromotedByHand,
    /// Rolled back because the canary cohort did worse; the reason names the bound.
    RolledBack(String),
    /// Aborted by hand ([`Store::abort`](crate::Store::abort)).
    Aborted(String),
    /// Replaced by a newer candidate before it finished.
    Superseded,
}

impl RolloutEnd {
    /// A short stable name, for metric labels and `/status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RolloutEnd::Promoted => "promoted",
            RolloutEnd::PromotedOnTime => "promoted_on_time",
            RolloutEnd::PromotedByHand => "promoted_by_hand",
            RolloutEnd::RolledBack(_) => "rolled_back",
            RolloutEnd::Aborted(_) => "aborted",
            RolloutEnd::Superseded => "superseded",
        }
    }

    /// The reason of a rollback or abort.
    pub fn reason(&self) -> Option<&str> {
        match self {
            RolloutEnd::RolledBack(reason) | RolloutEnd::Aborted(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether the candidate became the active document.
    pub fn promoted(&self) -> bool {
        matches!(
            self,
            RolloutEnd::Promoted | RolloutEnd::PromotedOnTime | RolloutEnd::PromotedByHand
        )
    }
}

/// A finished rollout, as `/status` shows the last one.
#[derive(Debug, Clone)]
pub struct RolloutRecord {
    /// The candidate's version, when it carries one.
    pub version: Option<u64>,
    /// The candidate's digest.
    pub digest: Digest,
    /// How it ended.
    pub end: RolloutEnd,
    /// When it ended.
    pub at: SystemTime,
    /// How long the canary ran.
    pub elapsed: Duration,
    /// The canary cohort's health at the end.
    pub canary: CohortHealth,
    /// The baseline cohort's health at the end.
    pub baseline: CohortHealth,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(requests: u64, failures: u64, answered: u64) -> CohortHealth {
        CohortHealth {
            requests,
            guard_failures: failures,
            answered_by_edge: answered,
            ..CohortHealth::default()
        }
    }

    #[test]
    fn too_few_canary_requests_decide_nothing() {
        let policy = RolloutPolicy {
            min_requests: 10,
            ..RolloutPolicy::default()
        };
        assert_eq!(
            judge(&policy, &health(9, 9, 0), &health(1000, 0, 0)),
            Judgement::TooFew
        );
    }

    #[test]
    fn a_canary_failing_more_than_the_bound_is_worse_and_says_why() {
        let policy = RolloutPolicy {
            min_requests: 10,
            ..RolloutPolicy::default()
        };
        let Judgement::Worse(reason) = judge(&policy, &health(100, 5, 0), &health(1000, 10, 0))
        else {
            panic!("5% against 1% is past +1 point");
        };
        assert!(reason.starts_with("guard failures, panics or timeouts: 5.0% of 100 canary requests against 1.0% of 1000 baseline"), "{reason}");
        assert_eq!(
            judge(&policy, &health(100, 1, 0), &health(1000, 10, 0)),
            Judgement::Within
        );
    }

    #[test]
    fn edge_answers_and_value_shift_are_compared() {
        let policy = RolloutPolicy {
            min_requests: 1,
            ..RolloutPolicy::default()
        };
        let mut canary = health(100, 0, 60);
        let baseline = health(100, 0, 2);
        assert!(
            matches!(judge(&policy, &canary, &baseline), Judgement::Worse(r) if r.starts_with("answered by the edge"))
        );
        canary.answered_by_edge = 2;
        canary.value_mean = Some(3.0);
        let baseline = CohortHealth {
            value_mean: Some(80.0),
            ..baseline
        };
        assert!(
            matches!(judge(&policy, &canary, &baseline), Judgement::Worse(r) if r.starts_with("mean value 3.0"))
        );
        let off = RolloutPolicy {
            bounds: CohortBounds {
                compare_values: false,
                ..CohortBounds::default()
            },
            ..policy
        };
        assert_eq!(judge(&off, &canary, &baseline), Judgement::Within);
    }

    #[test]
    fn a_client_keeps_its_cohort_and_the_share_is_respected() {
        let snapshot = Arc::new(Snapshot::for_tests(b"candidate"));
        let policy = RolloutPolicy {
            share: 0.25,
            ..RolloutPolicy::default()
        };
        let canary = Canary::new(1, snapshot, Vec::new(), policy, Nanos::ZERO);
        let mut in_canary = 0u32;
        for client in 0u32..4000 {
            let key = CohortKey::of(&client.to_be_bytes());
            let cohort = canary.cohort(key);
            assert_eq!(cohort, canary.cohort(key), "stable for one rollout");
            if cohort == Cohort::Canary {
                in_canary += 1;
            }
        }
        assert!(
            (800..1200).contains(&in_canary),
            "{in_canary} of 4000 at 25%"
        );
    }

    #[test]
    fn policies_are_validated() {
        assert!(RolloutPolicy::default().validate().is_ok());
        let bad = RolloutPolicy {
            share: 1.0,
            max_wait: Duration::from_secs(1),
            min_requests: 0,
            ..RolloutPolicy::default()
        };
        let message = bad.validate().unwrap_err().to_string();
        for field in ["share", "max_wait", "min_requests"] {
            assert!(message.contains(field), "{message}");
        }
        let text = "share = 0.5\nbake = \"1s\"\nmax_wait = \"2s\"\nsurprise = 1\n";
        assert!(toml::from_str::<RolloutPolicy>(text).is_err());
    }

    #[test]
    fn mapped_ipv4_addresses_are_the_same_client() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(CohortKey::of_ip(v4), CohortKey::of_ip(mapped));
    }
}
