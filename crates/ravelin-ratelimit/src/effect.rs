//! The pre-activation check: what a new rule set *would deny*, estimated on a sample of recent
//! request heads before it goes live.
//!
//! A [`HeadSample`] keeps a bounded ring of recent [`SampledHead`]s (1 request in `every`;
//! an unsampled request costs one relaxed atomic increment). Before installing a candidate
//! [`Rules`] document, [`estimate`] both it and the active one on the same sample and let
//! [`DenyBounds::check`] refuse the candidate when the share of sampled requests it would deny
//! moves past a bound:
//!
//! ```
//! use std::net::IpAddr;
//! use std::time::Duration;
//! use ravelin_ratelimit::effect::{DenyBounds, HeadSample};
//! use ravelin_ratelimit::{KeyPart, Nanos, Rule, Rules};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sample = HeadSample::new(10_000, 1);
//! // On the request path: one call per request (the client as the rules resolve it).
//! for i in 0..500u64 {
//!     let request = http::Request::post("/login").body(())?;
//!     let client: IpAddr = format!("192.0.2.{}", i % 5).parse()?;
//!     sample.record(&request, Some(client), Nanos::new(i * 100_000_000));
//! }
//!
//! let per_ip = Rule::new("per-ip", 100, Duration::from_secs(60)).key(KeyPart::ClientIp);
//! let active = Rules::new().rule(per_ip.clone());
//! let candidate = Rules::new()
//!     .rule(per_ip)
//!     .rule(Rule::new("login", 1, Duration::from_secs(60)).key(KeyPart::ClientIp));
//!
//! let bounds = DenyBounds::default();
//! let refused = bounds
//!     .compare(&active, &candidate, &sample.snapshot(), sample.every())
//!     .unwrap_err();
//! assert!(refused.to_string().contains("mostly rule `login`"), "{refused}");
//! // The active rules against themselves: nothing moves.
//! assert!(bounds.compare(&active, &active, &sample.snapshot(), sample.every()).is_ok());
//! # Ok(())
//! # }
//! ```
//!
//! # What the estimate is
//!
//! For each enforcing rule that is not killed, the sampled requests it applies to are grouped by
//! the rule's key — matched and keyed by the guard's own code, so a path prefix, a method list, a
//! missing header or a missing client address mean here what they mean to the guard. Each key's
//! traffic over the sample's time span is estimated as `count × every`; GCRA lets at most
//! `burst + span / emission interval` units through in that span (a bucket starting full, the
//! most any arrival pattern can get), so the key's excess over that, divided by `every` again,
//! is its estimated number of denied *sampled* requests, spread evenly over the key's requests.
//!
//! Approximations, all on the side of estimating fewer denials than the live guard would make
//! (the check refuses only what is clearly too much):
//!
//! - buckets start full: the state keys already have in the live store is not known;
//! - arrivals are assumed spread as evenly as GCRA needs; bursts of the real traffic that a
//!   rule would cut are not seen;
//! - a request that several rules would deny counts once, with the largest of its rules'
//!   denied fractions (the union of the rules' denials is at least that; at most their sum);
//! - kill switches are each rule's `killed` as the document writes it (a switchboard's state is
//!   the caller's to copy into the documents); shadow rules deny nothing;
//! - the client address is the one resolved when the request was recorded (normally by the
//!   active rules' `client_ip`); a candidate's own `ipv4_prefix` / `ipv6_prefix` grouping is
//!   applied, a change of trusted proxies or forwarding header is not;
//! - 1 in `every` requests is kept, so a key seen a few times is a noisy estimate: keep
//!   `every` small enough that the sample holds a few hundred requests or more
//!   ([`DenyBounds::min_samples`] passes smaller ones unchecked).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[cfg(test)]
use http::HeaderName;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method};
use ravelin_failsafe::RequestHead;
use ravelin_http::{MatchPath, RequestIdentity};
use ravelin_primitives::Enforcement;
use ravelin_primitives::clock::Nanos;
use sha2::Digest as _;

use crate::guard::{Derived, write_key};
use crate::rules::{Compiled, Rules, RulesError};

/// The most heads a [`HeadSample`] holds; larger capacities are clamped to it.
pub const MAX_SAMPLE_CAPACITY: usize = 10_000;
/// The longest match path a [`SampledHead`] keeps, in bytes; a request with a longer one is not
/// sampled.
pub const MAX_SAMPLED_PATH_LEN: usize = 2048;
/// The most header fields a [`SampledHead`] keeps; a request with more is not sampled.
pub const MAX_SAMPLED_HEADERS: usize = 32;
/// The most bytes of header names and (digested) values a [`SampledHead`] keeps; a request
/// with more is not sampled.
pub const MAX_SAMPLED_HEADER_BYTES: usize = 4096;
/// The longest `Host` a [`SampledHead`] keeps (RFC 1035's 255 and a port); a request with a
/// longer one is not sampled.
pub const MAX_SAMPLED_HOST_LEN: usize = 262;

// === impl SampledHead ===

/// One sampled request head, owned and bounded: what the rules' matches and keys read, and when
/// it arrived.
///
/// Header values other than `Host` are kept as a digest (`#` and 32 hex digits, the first 16
/// bytes of their SHA-256), never as sent: two requests share a key exactly when their values
/// are equal, which is all an estimate needs, and no API key or cookie sits in the sample. The
/// `Host` is kept as the `host` key part reads it (the ingress stage's authority, else the
/// `Host` header or the URI authority), lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledHead {
    at: Nanos,
    method: Method,
    path: MatchPath,
    client: Option<IpAddr>,
    headers: HeaderMap,
}

impl SampledHead {
    /// The head of `request`, with `client` the client address as the rules resolve it
    /// (ungrouped; see [`ClientIpResolver::resolve`](crate::ClientIpResolver::resolve)) and
    /// `at` its arrival on the caller's clock ([`Nanos`], as limiters read it). `None` when it
    /// is over one of the caps ([`MAX_SAMPLED_PATH_LEN`], [`MAX_SAMPLED_HEADERS`],
    /// [`MAX_SAMPLED_HEADER_BYTES`], [`MAX_SAMPLED_HOST_LEN`]).
    pub fn from_request<B>(
        request: &http::Request<B>,
        client: Option<IpAddr>,
        at: Nanos,
    ) -> Option<Self> {
        Self::from_head(
            request.method(),
            request.uri(),
            request.headers(),
            request.extensions(),
            client,
            at,
        )
    }

    /// [`from_request`](Self::from_request) for a request already split into parts.
    pub fn from_parts(
        parts: &http::request::Parts,
        client: Option<IpAddr>,
        at: Nanos,
    ) -> Option<Self> {
        Self::from_head(
            &parts.method,
            &parts.uri,
            &parts.headers,
            &parts.extensions,
            client,
            at,
        )
    }

    fn from_head(
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        extensions: &http::Extensions,
        client: Option<IpAddr>,
        at: Nanos,
    ) -> Option<Self> {
        let path = MatchPath::of(uri, extensions);
        if path.as_str().len() > MAX_SAMPLED_PATH_LEN {
            return None;
        }
        let mut kept = HeaderMap::new();
        let mut bytes = 0usize;
        // The host as the `host` key part reads it (guard.rs `push_host`), folded here.
        let host = extensions
            .get::<RequestIdentity>()
            .and_then(RequestIdentity::authority)
            .map(|authority| authority.as_str().as_bytes())
            .or_else(|| headers.get(HOST).map(HeaderValue::as_bytes))
            .or_else(|| uri.authority().map(|a| a.as_str().as_bytes()));
        if let Some(host) = host {
            if host.len() > MAX_SAMPLED_HOST_LEN {
                return None;
            }
            let value = HeaderValue::from_bytes(&host.to_ascii_lowercase()).ok()?;
            bytes = bytes.saturating_add(HOST.as_str().len() + value.len());
            kept.append(HOST, value);
        }
        let mut count = 0usize;
        for (name, value) in headers {
            if name == HOST {
                continue;
            }
            count = count.saturating_add(1);
            let value = digest(value.as_bytes())?;
            bytes = bytes.saturating_add(name.as_str().len() + value.len());
            if count > MAX_SAMPLED_HEADERS || bytes > MAX_SAMPLED_HEADER_BYTES {
                return None;
            }
            kept.append(name.clone(), value);
        }
        Some(Self {
            at,
            method: method.clone(),
            path: path.into_owned(),
            client,
            headers: kept,
        })
    }

    /// When the request arrived, on the caller's clock.
    pub fn at(&self) -> Nanos {
        self.at
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request's match path (what path prefixes and the `path` key part read).
    pub fn path(&self) -> &MatchPath {
        &self.path
    }

    /// The client address as resolved when the request was recorded (not yet grouped).
    pub fn client(&self) -> Option<IpAddr> {
        self.client
    }

    /// The header fields kept: `Host` lowercased, every other value as its digest.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// `#` and the first 16 bytes of `value`'s SHA-256 in hex: equal exactly when the values are
/// (but for a 2^-128 chance), and 33 bytes whatever was sent.
fn digest(value: &[u8]) -> Option<HeaderValue> {
    let hash = sha2::Sha256::digest(value);
    let mut text = String::with_capacity(33);
    text.push('#');
    for byte in hash.iter().take(16) {
        text.push_str(&format!("{byte:02x}"));
    }
    HeaderValue::from_str(&text).ok()
}

// === impl HeadSample ===

/// A bounded ring of recent [`SampledHead`]s: 1 request in [`every`](Self::every) is kept, the
/// oldest dropped beyond [`capacity`](Self::capacity).
///
/// Share it behind an `Arc`. On the request path, [`record`](Self::record) costs one relaxed
/// atomic increment for a request that is not sampled; a sampled one is copied
/// ([`SampledHead::from_request`]) and pushed under a mutex, taken by 1 request in `every` and by
/// [`snapshot`](Self::snapshot), never held while anything else runs.
#[derive(Debug)]
pub struct HeadSample {
    capacity: usize,
    every: u64,
    seen: AtomicU64,
    ring: Mutex<VecDeque<SampledHead>>,
}

impl HeadSample {
    /// A sample of at most `capacity` heads (clamped to [`MAX_SAMPLE_CAPACITY`]; 0 keeps none)
    /// keeping 1 request in `every` (0 is taken as 1: every request).
    pub fn new(capacity: usize, every: u64) -> Self {
        Self {
            capacity: capacity.min(MAX_SAMPLE_CAPACITY),
            every: every.max(1),
            seen: AtomicU64::new(0),
            // Grows to `capacity` as heads arrive; never beyond.
            ring: Mutex::new(VecDeque::new()),
        }
    }

    /// The most heads held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// 1 request in `every` is kept: the factor [`estimate`] scales sampled counts by.
    pub fn every(&self) -> u64 {
        self.every
    }

    /// Requests recorded so far, sampled or not.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Counts one request and says whether it is the 1 in `every` to keep: one relaxed atomic
    /// increment. [`record`](Self::record) calls it; use it directly to build the
    /// [`SampledHead`] only when it is true.
    pub fn tick(&self) -> bool {
        self.seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.every)
    }

    /// Records one request: counted, and kept if it is the 1 in `every` (and within the
    /// [`SampledHead`] caps). Returns whether it was kept.
    pub fn record<B>(&self, request: &http::Request<B>, client: Option<IpAddr>, at: Nanos) -> bool {
        self.tick()
            && SampledHead::from_request(request, client, at)
                .map(|head| self.push(head))
                .is_some()
    }

    /// [`record`](Self::record) for a request already split into parts.
    pub fn record_parts(
        &self,
        parts: &http::request::Parts,
        client: Option<IpAddr>,
        at: Nanos,
    ) -> bool {
        self.tick()
            && SampledHead::from_parts(parts, client, at)
                .map(|head| self.push(head))
                .is_some()
    }

    /// Keeps `head` (whatever `every` says), dropping the oldest beyond the capacity.
    pub fn push(&self, head: SampledHead) {
        if self.capacity == 0 {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        while ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(head);
    }

    /// A copy of the heads held, oldest first.
    pub fn snapshot(&self) -> Vec<SampledHead> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().cloned().collect()
    }

    /// The number of heads held.
    pub fn len(&self) -> usize {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no head is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every head held (the count of [`seen`](Self::seen) requests stays).
    pub fn clear(&self) {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

// === impl DenyEstimate ===

/// What a rule set would deny of a sample, from [`estimate`].
#[derive(Debug, Clone, PartialEq)]
pub struct DenyEstimate {
    /// The sampled requests.
    pub samples: usize,
    /// Sampled requests the rules would deny, estimated (fractional: a key's denials are spread
    /// over its requests); at most `samples`.
    pub denied: f64,
    /// Per rule of the document, in order: the sampled requests it would deny on its own (0 for
    /// killed and shadow rules). A request denied by several rules counts in each.
    pub per_rule: Vec<(String, f64)>,
    /// The time the sample covers, from its first arrival to its last.
    pub span: Duration,
    /// The sampling factor the counts were scaled by.
    pub every: u64,
}

impl DenyEstimate {
    /// The share of sampled requests denied, in `[0, 1]` (0 for an empty sample).
    pub fn denied_share(&self) -> f64 {
        if self.samples == 0 {
            return 0.0;
        }
        (self.denied / self.samples as f64).clamp(0.0, 1.0)
    }

    /// The rule denying the most sampled requests, if any denies one.
    pub fn worst_rule(&self) -> Option<(&str, f64)> {
        self.per_rule
            .iter()
            .filter(|(_, denied)| *denied > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(name, denied)| (name.as_str(), *denied))
    }
}

/// Estimates what `rules` would deny of `sample`, a sample keeping 1 request in `every` (see
/// the [module docs](self) for the method and its approximations).
///
/// # Errors
/// `rules` fails validation (as a `ravelin_config::Store` or
/// [`RateLimitLayer::new`](crate::RateLimitLayer::new) would refuse it).
pub fn estimate(
    rules: &Rules,
    sample: &[SampledHead],
    every: u64,
) -> Result<DenyEstimate, RulesError> {
    let compiled = compile(rules)?;
    Ok(estimate_compiled(&compiled, sample, every.max(1)))
}

/// Validates and compiles `rules` without registering its rules' metrics: a candidate that is
/// refused leaves no counters behind.
fn compile(rules: &Rules) -> Result<Arc<Compiled>, RulesError> {
    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        crate::guard::compile(rules.clone())
    })
}

fn estimate_compiled(compiled: &Compiled, sample: &[SampledHead], every: u64) -> DenyEstimate {
    let span_nanos = span(sample);
    // The largest denied fraction any rule gives each sampled request.
    let mut denied_fraction = vec![0.0f64; sample.len()];
    let mut per_rule = Vec::with_capacity(compiled.rules.len());
    // The guard's `RequestHead` for a sampled head: the match path and the client come
    // pre-resolved in `Derived`, so the URI and extensions are never read.
    let uri = http::Uri::default();
    let extensions = http::Extensions::new();
    let mut buf = Vec::with_capacity(64);
    for rule in &compiled.rules {
        if rule.killed || rule.action == Enforcement::Shadow {
            per_rule.push((rule.name.clone(), 0.0));
            continue;
        }
        // Key -> the indexes of the sampled requests with it.
        let mut keys: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for (index, head) in sample.iter().enumerate() {
            let request = RequestHead {
                method: &head.method,
                uri: &uri,
                version: http::Version::HTTP_11,
                headers: &head.headers,
                extensions: &extensions,
                peer: None,
            };
            let mut derived = Derived::resolved(head.client, &head.path, compiled);
            buf.clear();
            if write_key(rule, &request, &mut derived, compiled, &mut buf).is_ok() {
                keys.entry(buf.clone()).or_default().push(index);
            }
        }
        // GCRA over the span, starting full: at most burst + span / T units.
        let interval = rule.quota.emission_interval_nanos().max(1) as f64;
        let allowed_units = f64::from(rule.quota.burst()) + span_nanos as f64 / interval;
        let allowed = (allowed_units / f64::from(rule.cost.max(1))).floor();
        let mut rule_denied = 0.0;
        for indexes in keys.values() {
            let count = indexes.len() as f64;
            let estimated = count * every as f64;
            let denied = ((estimated - allowed).max(0.0) / every as f64).min(count);
            if denied <= 0.0 {
                continue;
            }
            rule_denied += denied;
            let fraction = denied / count;
            for &index in indexes {
                if let Some(slot) = denied_fraction.get_mut(index) {
                    *slot = slot.max(fraction);
                }
            }
        }
        per_rule.push((rule.name.clone(), rule_denied));
    }
    let denied = denied_fraction.iter().sum::<f64>().min(sample.len() as f64);
    DenyEstimate {
        samples: sample.len(),
        denied,
        per_rule,
        span: Duration::from_nanos(span_nanos),
        every,
    }
}

/// Nanoseconds from the sample's first arrival to its last (in whatever order it is given).
fn span(sample: &[SampledHead]) -> u64 {
    let first = sample.iter().map(|head| head.at.as_u64()).min();
    let last = sample.iter().map(|head| head.at.as_u64()).max();
    match (first, last) {
        (Some(first), Some(last)) => last.saturating_sub(first),
        _ => 0,
    }
}

// === impl DenyBounds ===

/// How much more a candidate rule set may deny than the active one, on the same sample.
///
/// A candidate that denies no larger a share than the active rules always passes (unchanged
/// rules, a loosening); one that denies more is refused when its share exceeds the active one's
/// by more than [`max_increase`](Self::max_increase), or exceeds
/// [`max_denied_share`](Self::max_denied_share). A sample smaller than
/// [`min_samples`](Self::min_samples) passes unchecked: too few requests to judge.
///
/// Deserializes from a config table (every key optional, unknown keys refused) and
/// [validates](ravelin_config::Validate) as one: shares finite in 0..=1, `min_samples` at most
/// [`MAX_SAMPLE_CAPACITY`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenyBounds {
    /// The largest share of sampled requests a candidate may deny (default 0.05).
    pub max_denied_share: f64,
    /// The most the denied share may grow over the active rules' (default 0.02).
    pub max_increase: f64,
    /// Below this many sampled requests the check passes (default 100).
    pub min_samples: usize,
}

impl Default for DenyBounds {
    fn default() -> Self {
        Self {
            max_denied_share: 0.05,
            max_increase: 0.02,
            min_samples: 100,
        }
    }
}

impl ravelin_config::Validate for DenyBounds {
    fn validate(&self) -> Result<(), ravelin_config::Violations> {
        let mut v = ravelin_config::Violations::new();
        for (field, value) in [
            ("max_denied_share", self.max_denied_share),
            ("max_increase", self.max_increase),
        ] {
            if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
                v.push(field, format!("{value} is not a share from 0 to 1"));
            }
        }
        if self.min_samples > MAX_SAMPLE_CAPACITY {
            v.push(
                "min_samples",
                format!(
                    "{} is more than the sample can hold ({MAX_SAMPLE_CAPACITY})",
                    self.min_samples
                ),
            );
        }
        v.into_result()
    }
}

/// Shares closer than this are equal (the estimates are sums of floating-point fractions).
const EPSILON: f64 = 1e-9;

impl DenyBounds {
    /// Passes `candidate` or refuses it, comparing it with `active` (both estimated on the same
    /// sample).
    ///
    /// # Errors
    /// [`DenyRefusal`]: the candidate denies too much more; its message names the shares, the
    /// bounds and the rule denying most.
    pub fn check(
        &self,
        active: &DenyEstimate,
        candidate: &DenyEstimate,
    ) -> Result<(), DenyRefusal> {
        if candidate.samples < self.min_samples {
            return Ok(());
        }
        let active_share = active.denied_share();
        let candidate_share = candidate.denied_share();
        let grew = candidate_share > active_share + EPSILON;
        let too_much_more = candidate_share - active_share > self.max_increase + EPSILON;
        let too_much = candidate_share > self.max_denied_share + EPSILON;
        if grew && (too_much_more || too_much) {
            return Err(DenyRefusal {
                samples: candidate.samples,
                candidate_share,
                active_share,
                bounds: *self,
                worst_rule: candidate
                    .worst_rule()
                    .map(|(name, denied)| (name.to_owned(), denied)),
            });
        }
        Ok(())
    }

    /// Estimates `active` and `candidate` on `sample` (keeping 1 request in `every`) and
    /// [`check`](Self::check)s them: the candidate's estimate when it passes.
    ///
    /// # Errors
    /// Either rule set is invalid, or the candidate is refused.
    pub fn compare(
        &self,
        active: &Rules,
        candidate: &Rules,
        sample: &[SampledHead],
        every: u64,
    ) -> Result<DenyEstimate, CompareError> {
        let active = estimate(active, sample, every).map_err(CompareError::Active)?;
        let candidate = estimate(candidate, sample, every).map_err(CompareError::Candidate)?;
        self.check(&active, &candidate)?;
        Ok(candidate)
    }

    /// The pre-activation check of a `ravelin_config::Store<Rules>` (its builder's `check`):
    /// each candidate document is [`compare`](Self::compare)d with the active one on a
    /// [`snapshot`](HeadSample::snapshot) of `sample`, and refused with the reason
    /// [`DenyRefusal`] (or the rules' error) gives. It runs under the store's reload lock: at
    /// most [`MAX_SAMPLE_CAPACITY`] heads, each keyed once per rule of the two documents.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ravelin_config::Store;
    /// use ravelin_ratelimit::Rules;
    /// use ravelin_ratelimit::effect::{DenyBounds, HeadSample};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let sample = Arc::new(HeadSample::new(10_000, 10));
    /// let store: Store<Rules> = Store::builder("ratelimit")
    ///     .default_value(Rules::new())
    ///     .check(DenyBounds::default().store_check(Arc::clone(&sample)))
    ///     .build()?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn store_check(
        self,
        sample: Arc<HeadSample>,
    ) -> impl Fn(&Rules, &Rules) -> Result<(), String> + Send + Sync + 'static {
        move |active, candidate| {
            self.compare(active, candidate, &sample.snapshot(), sample.every())
                .map(|_| ())
                .map_err(|error| error.to_string())
        }
    }
}

/// A candidate rule set refused by [`DenyBounds::check`]. Its message reads
/// "candidate rules would deny 62.0% of 500 sampled requests (active rules: 0.4%; bound +2.0%,
/// at most 5.0%), mostly rule `login`".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct DenyRefusal {
    /// The sampled requests.
    pub samples: usize,
    /// The share of them the candidate would deny.
    pub candidate_share: f64,
    /// The share the active rules deny.
    pub active_share: f64,
    /// The bounds it broke.
    pub bounds: DenyBounds,
    /// The candidate's rule denying the most, with its estimated denied sampled requests.
    pub worst_rule: Option<(String, f64)>,
}

impl fmt::Display for DenyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "candidate rules would deny {:.1}% of {} sampled requests (active rules: {:.1}%; bound +{:.1}%, at most {:.1}%)",
            self.candidate_share * 100.0,
            self.samples,
            self.active_share * 100.0,
            self.bounds.max_increase * 100.0,
            self.bounds.max_denied_share * 100.0,
        )?;
        if let Some((rule, _)) = &self.worst_rule {
            write!(f, ", mostly rule `{rule}`")?;
        }
        Ok(())
    }
}

/// Why [`DenyBounds::compare`] did not pass a candidate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// The active rules are invalid.
    #[error("active rules: {0}")]
    Active(RulesError),
    /// The candidate rules are invalid.
    #[error("candidate rules: {0}")]
    Candidate(RulesError),
    /// The candidate would deny too much.
    #[error(transparent)]
    Refused(#[from] DenyRefusal),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{KeyPart, Rule};
    use proptest::prelude::*;

    const SECOND: u64 = 1_000_000_000;

    /// Equal but for the rounding of a sum of fractions.
    #[track_caller]
    fn close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
    }

    fn head(method: Method, path: &str, client: Option<IpAddr>, at_nanos: u64) -> SampledHead {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("x-api-key", "k")
            .body(())
            .unwrap();
        SampledHead::from_request(&request, client, Nanos::new(at_nanos)).unwrap()
    }

    fn ip(i: u64) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, u8::try_from(i % 256).unwrap()]))
    }

    /// 500 requests from 5 clients over 50 seconds.
    fn five_clients(method: Method, path: &str) -> Vec<SampledHead> {
        (0..500)
            .map(|i| head(method.clone(), path, ip(i % 5), i * SECOND / 10))
            .collect()
    }

    fn per_ip(limit: u32) -> Rule {
        Rule::new("per-ip", limit, Duration::from_secs(60)).key(KeyPart::ClientIp)
    }

    fn login() -> Rule {
        Rule::new("login", 1, Duration::from_secs(60)).key(KeyPart::ClientIp)
    }

    #[test]
    fn a_tight_rule_is_refused_and_unchanged_rules_pass() {
        let sample = five_clients(Method::POST, "/login");
        let active = Rules::new().rule(per_ip(1000));
        let candidate = Rules::new().rule(per_ip(1000)).rule(login());
        let bounds = DenyBounds::default();

        let a = estimate(&active, &sample, 1).unwrap();
        assert_eq!(a.denied, 0.0);
        assert_eq!(a.samples, 500);
        assert_eq!(a.span, Duration::from_millis(49_900));
        let c = estimate(&candidate, &sample, 1).unwrap();
        // Each client: 100 requests, 1 + 49.9 s / 60 s -> 1 allowed, 99 denied.
        close(c.denied, 495.0);
        assert_eq!(
            c.per_rule,
            vec![("per-ip".to_owned(), 0.0), ("login".to_owned(), 495.0)]
        );
        assert!((c.denied_share() - 0.99).abs() < 1e-12);

        let refusal = bounds.check(&a, &c).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "candidate rules would deny 99.0% of 500 sampled requests (active rules: 0.0%; bound +2.0%, at most 5.0%), mostly rule `login`"
        );
        let err = bounds.compare(&active, &candidate, &sample, 1).unwrap_err();
        assert!(matches!(err, CompareError::Refused(_)));
        assert_eq!(err.to_string(), refusal.to_string());

        // The same rules on both sides, or a loosening, pass.
        assert!(bounds.check(&c, &c).is_ok());
        assert!(bounds.check(&c, &a).is_ok());
        assert!(bounds.compare(&candidate, &candidate, &sample, 1).is_ok());
    }

    #[test]
    fn both_bounds_apply() {
        let estimate = |denied: f64| DenyEstimate {
            samples: 1000,
            denied,
            per_rule: vec![("r".to_owned(), denied)],
            span: Duration::from_secs(10),
            every: 1,
        };
        let bounds = DenyBounds::default();
        // +1% up to 1%: passes; +3% up to 3%: over the increase; 4% -> 6%: over the share.
        assert!(bounds.check(&estimate(0.0), &estimate(10.0)).is_ok());
        assert!(bounds.check(&estimate(0.0), &estimate(30.0)).is_err());
        assert!(bounds.check(&estimate(40.0), &estimate(60.0)).is_err());
        assert!(bounds.check(&estimate(40.0), &estimate(50.0)).is_ok());
        // Already over 5%: the same or less passes, more is refused.
        assert!(bounds.check(&estimate(100.0), &estimate(100.0)).is_ok());
        assert!(bounds.check(&estimate(100.0), &estimate(90.0)).is_ok());
        let refusal = bounds
            .check(&estimate(100.0), &estimate(101.0))
            .unwrap_err();
        assert_eq!(refusal.worst_rule, Some(("r".to_owned(), 101.0)));
    }

    #[test]
    fn a_small_sample_passes() {
        let sample = five_clients(Method::POST, "/login");
        let sample = sample.get(..99).unwrap();
        let bounds = DenyBounds::default();
        let c = estimate(&Rules::new().rule(login()), sample, 1).unwrap();
        assert!(c.denied_share() > 0.9);
        assert!(
            bounds
                .compare(&Rules::new(), &Rules::new().rule(login()), sample, 1)
                .is_ok()
        );
        let strict = DenyBounds {
            min_samples: 10,
            ..DenyBounds::default()
        };
        assert!(
            strict
                .compare(&Rules::new(), &Rules::new().rule(login()), sample, 1)
                .is_err()
        );
        // And nothing at all.
        let empty = estimate(&Rules::new().rule(login()), &[], 1).unwrap();
        assert_eq!(
            (empty.samples, empty.denied, empty.denied_share()),
            (0, 0.0, 0.0)
        );
    }

    #[test]
    fn killed_and_shadow_rules_deny_nothing() {
        let sample = five_clients(Method::POST, "/login");
        for rule in [login().killed(true), login().shadow()] {
            let e = estimate(&Rules::new().rule(rule), &sample, 1).unwrap();
            assert_eq!(e.denied, 0.0);
            assert_eq!(e.per_rule, vec![("login".to_owned(), 0.0)]);
        }
    }

    #[test]
    fn matches_as_the_guard_does() {
        let mut sample = five_clients(Method::GET, "/login");
        sample.extend(five_clients(Method::POST, "/loginx"));
        sample.extend(five_clients(Method::POST, "/LOGIN/./sso"));
        let rules = |rule: Rule| Rules::new().rule(rule);
        // Only POSTs under /login (whole segments, normalized: `/LOGIN/./sso`, not `/loginx`):
        // 100 requests per client, 1 allowed.
        let e = estimate(
            &rules(login().method(Method::POST).path_prefix("/login")),
            &sample,
            1,
        )
        .unwrap();
        close(e.denied, 495.0);
        // Only GETs.
        let e = estimate(&rules(login().method(Method::GET)), &sample, 1).unwrap();
        close(e.denied, 495.0);
        // Both: 300 requests per client.
        let e = estimate(&rules(login()), &sample, 1).unwrap();
        close(e.denied, 1495.0);
        // A key part a request lacks: the rule does not apply.
        let keyed = login().key(KeyPart::Header(HeaderName::from_static("x-other")));
        assert_eq!(estimate(&rules(keyed), &sample, 1).unwrap().denied, 0.0);
        // No client address: not limited by a client_ip rule; one bucket for a keyless rule.
        let anonymous: Vec<_> = (0..200).map(|i| head(Method::GET, "/", None, i)).collect();
        assert_eq!(
            estimate(&rules(login()), &anonymous, 1).unwrap().denied,
            0.0
        );
        let global = Rule::new("all", 100, Duration::from_secs(60));
        close(
            estimate(&rules(global), &anonymous, 1).unwrap().denied,
            100.0,
        );
        // Keys by header and by path group as the guard's keys do.
        let by_key = Rule::new("k", 1, Duration::from_secs(60))
            .key(KeyPart::Header(HeaderName::from_static("x-api-key")))
            .key(KeyPart::Path);
        // 3 paths ("/login", "/loginx", "/login/sso"), one API key: 3 allowed.
        close(estimate(&rules(by_key), &sample, 1).unwrap().denied, 1497.0);
    }

    #[test]
    fn client_groups_follow_the_rules() {
        // 100 IPv6 clients in one /64, 1 request each.
        let sample: Vec<_> = (0..100u16)
            .map(|i| {
                let client = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i]);
                head(Method::GET, "/", Some(client), u64::from(i))
            })
            .collect();
        let mut rules =
            Rules::new().rule(Rule::new("r", 10, Duration::from_secs(60)).key(KeyPart::ClientIp));
        close(estimate(&rules, &sample, 1).unwrap().denied, 90.0);
        rules.client_ip.ipv6_prefix = 128;
        assert_eq!(estimate(&rules, &sample, 1).unwrap().denied, 0.0);
    }

    #[test]
    fn every_scales_counts() {
        // 100 requests from one client over 99 s, each standing for 10: about 1000 in 99 s
        // against 100 + 99 s x 100/60 s = 265 allowed -> 735 denied, 73.5 of the sampled.
        let sample: Vec<_> = (0..100)
            .map(|i| head(Method::GET, "/", ip(1), i * SECOND))
            .collect();
        let rules = Rules::new().rule(per_ip(100));
        let one = estimate(&rules, &sample, 1).unwrap();
        assert_eq!(one.denied, 0.0);
        let ten = estimate(&rules, &sample, 10).unwrap();
        assert_eq!(ten.every, 10);
        assert!((ten.denied - 73.5).abs() < 1e-9, "{}", ten.denied);
        // `every` 0 is 1.
        assert_eq!(estimate(&rules, &sample, 0).unwrap().every, 1);
    }

    #[test]
    fn a_request_denied_by_two_rules_counts_once() {
        let sample = five_clients(Method::POST, "/login");
        let two = Rules::new()
            .rule(login())
            .rule(Rule::new("login2", 1, Duration::from_secs(60)).key(KeyPart::ClientIp));
        let e = estimate(&two, &sample, 1).unwrap();
        close(e.denied, 495.0);
        close(e.per_rule.iter().map(|r| r.1).sum::<f64>(), 990.0);
    }

    #[test]
    fn a_store_refuses_a_candidate_that_denies_too_much() {
        let sample = Arc::new(HeadSample::new(1000, 1));
        for head in five_clients(Method::POST, "/login") {
            sample.push(head);
        }
        let store: ravelin_config::Store<Rules> = ravelin_config::Store::builder("ratelimit")
            .format(ravelin_config::Format::Toml)
            .default_value(Rules::new())
            .check(DenyBounds::default().store_check(Arc::clone(&sample)))
            .build()
            .unwrap();
        let loose = b"version = 1\n[[rules]]\nname = \"per-ip\"\nlimit = 1000\nwindow = \"1m\"\nkey = [\"client_ip\"]\n";
        store.submit(loose, "admin").unwrap();
        let tight = b"version = 2\n[[rules]]\nname = \"login\"\nlimit = 1\nwindow = \"1m\"\nkey = [\"client_ip\"]\n";
        let err = store.submit(tight, "admin").unwrap_err().to_string();
        assert!(
            err.contains(
                "candidate rules would deny 99.0% of 500 sampled requests (active rules: 0.0%"
            ),
            "{err}"
        );
        assert_eq!(store.current().version, Some(1));
    }

    #[test]
    fn invalid_rules_are_errors() {
        let bad = Rules::new().rule(Rule::new("bad name", 0, Duration::from_secs(1)));
        assert!(estimate(&bad, &[], 1).is_err());
        let err = DenyBounds::default()
            .compare(&Rules::new(), &bad, &[], 1)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("candidate rules: invalid rate-limit rules"),
            "{err}"
        );
    }

    #[test]
    fn sampled_heads_are_bounded_and_digested() {
        let request = http::Request::get("http://Example.COM/a/../B?q=1")
            .header("x-api-key", "secret")
            .body(())
            .unwrap();
        let head = SampledHead::from_request(&request, ip(7), Nanos::new(5)).unwrap();
        assert_eq!(head.path().as_str(), "/b");
        assert_eq!(head.headers()[HOST], "example.com");
        let key = head.headers()["x-api-key"].to_str().unwrap();
        assert!(key.starts_with('#') && key.len() == 33 && !key.contains("secret"));
        assert_eq!(
            (head.at(), head.client(), head.method()),
            (Nanos::new(5), ip(7), &Method::GET)
        );

        let (parts, ()) = request.into_parts();
        assert_eq!(
            SampledHead::from_parts(&parts, ip(7), Nanos::new(5)),
            Some(head)
        );

        let long = format!("/{}", "a".repeat(MAX_SAMPLED_PATH_LEN));
        let request = http::Request::get(long).body(()).unwrap();
        assert!(SampledHead::from_request(&request, None, Nanos::ZERO).is_none());
        let mut request = http::Request::get("/").body(()).unwrap();
        for i in 0..=MAX_SAMPLED_HEADERS {
            request.headers_mut().append("x-many", HeaderValue::from(i));
        }
        assert!(SampledHead::from_request(&request, None, Nanos::ZERO).is_none());
        request.headers_mut().remove("x-many");
        request
            .headers_mut()
            .insert(HOST, HeaderValue::from_str(&"h".repeat(300)).unwrap());
        assert!(SampledHead::from_request(&request, None, Nanos::ZERO).is_none());
    }

    #[test]
    fn the_ring_keeps_one_in_every_up_to_capacity() {
        let sample = HeadSample::new(10, 3);
        assert_eq!((sample.capacity(), sample.every()), (10, 3));
        let request = http::Request::get("/").body(()).unwrap();
        let kept = (0..100u64)
            .filter(|&i| sample.record(&request, ip(i), Nanos::new(i)))
            .collect::<Vec<_>>();
        // Requests 0, 3, 6, …, 99: 34 kept, the last 10 held.
        assert_eq!(kept.len(), 34);
        assert_eq!(sample.seen(), 100);
        assert_eq!(sample.len(), 10);
        let held: Vec<u64> = sample.snapshot().iter().map(|h| h.at().as_u64()).collect();
        assert_eq!(held, (72..=99).step_by(3).collect::<Vec<_>>());

        let (parts, ()) = request.into_parts();
        assert!(!sample.record_parts(&parts, None, Nanos::ZERO));
        sample.clear();
        assert!(sample.is_empty());

        assert_eq!(
            HeadSample::new(usize::MAX, 0).capacity(),
            MAX_SAMPLE_CAPACITY
        );
        assert_eq!(HeadSample::new(usize::MAX, 0).every(), 1);
        let none = HeadSample::new(0, 1);
        assert!(none.tick());
        none.push(head(Method::GET, "/", None, 0));
        assert!(none.is_empty());
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (
            1u32..50,
            1u64..600,
            proptest::option::of(1u32..50),
            1u32..4,
            proptest::sample::subsequence(vec![0usize, 1, 2, 3, 4], 0..=4),
            proptest::option::of(prop_oneof![Just("/"), Just("/a"), Just("/a/b")]),
            proptest::option::of(prop_oneof![Just(Method::GET), Just(Method::POST)]),
            0u8..4,
        )
            .prop_map(|(limit, window, burst, cost, key, prefix, method, mode)| {
                let burst = burst.unwrap_or(limit);
                let mut rule = Rule::new("r", limit, Duration::from_secs(window))
                    .burst(burst)
                    .cost(cost.min(burst));
                for part in key {
                    rule = rule.key(match part {
                        0 => KeyPart::ClientIp,
                        1 => KeyPart::Method,
                        2 => KeyPart::Path,
                        3 => KeyPart::Host,
                        _ => KeyPart::Header(HeaderName::from_static("x-api-key")),
                    });
                }
                if let Some(prefix) = prefix {
                    rule = rule.path_prefix(prefix);
                }
                if let Some(method) = method {
                    rule = rule.method(method);
                }
                match mode {
                    0 => rule.shadow(),
                    1 => rule.killed(true),
                    _ => rule,
                }
            })
    }

    fn arb_head() -> impl Strategy<Value = SampledHead> {
        (
            0u64..(1 << 40),
            prop_oneof![Just(Method::GET), Just(Method::POST)],
            prop_oneof![Just("/"), Just("/a"), Just("/a/b"), Just("/b")],
            proptest::option::of(0u64..8),
        )
            .prop_map(|(at, method, path, client)| head(method, path, client.and_then(ip), at))
    }

    proptest! {
        #[test]
        fn the_estimate_is_bounded(
            rules in proptest::collection::vec(arb_rule(), 0..5),
            sample in proptest::collection::vec(arb_head(), 0..300),
            every in 0u64..1000,
        ) {
            let mut document = Rules::new();
            for (i, mut rule) in rules.into_iter().enumerate() {
                rule.name = format!("r{i}");
                document = document.rule(rule);
            }
            let e = estimate(&document, &sample, every).unwrap();
            prop_assert_eq!(e.samples, sample.len());
            prop_assert!(e.denied >= 0.0 && e.denied <= sample.len() as f64);
            prop_assert!((0.0..=1.0).contains(&e.denied_share()));
            for (_, denied) in &e.per_rule {
                prop_assert!(*denied >= 0.0 && *denied <= sample.len() as f64 + 1e-9);
                prop_assert!(e.denied + 1e-9 >= *denied);
            }
            // A rule set never refuses itself.
            prop_assert!(DenyBounds::default().check(&e, &e).is_ok());
        }
    }
}

#[cfg(test)]
mod bounds_from_a_file {
    use ravelin_config::Validate;

    use super::DenyBounds;

    #[test]
    fn bounds_read_from_toml_are_validated_and_unknown_keys_refused() {
        let bounds: DenyBounds = toml::from_str("max_increase = 0.1").unwrap();
        assert_eq!(bounds.max_increase, 0.1);
        assert_eq!(
            bounds.max_denied_share,
            DenyBounds::default().max_denied_share
        );
        assert!(bounds.validate().is_ok());
        let bad: DenyBounds =
            toml::from_str("max_denied_share = 1.5\nmin_samples = 20000").unwrap();
        let message = bad.validate().unwrap_err().to_string();
        assert!(message.contains("max_denied_share"), "{message}");
        assert!(message.contains("min_samples"), "{message}");
        assert!(toml::from_str::<DenyBounds>("max_share = 0.1").is_err());
    }
}
