//! [`RateLimitGuard`]: the rule set applied to requests, as a `ravelin_failsafe::Guard`.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HOST, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};
use ravelin_failsafe::{
    Allow, Guard, GuardError, GuardErrorKind, LogLimiter, RequestHead, Verdict,
};
use ravelin_http::{FixedResponse, MatchPath, RequestIdentity};
use ravelin_primitives::{Enforcement, KillSwitch};
use sha2::Digest as _;

use crate::future::CheckFuture;
use crate::gcra::Decision;
use crate::headers::{RATELIMIT, RATELIMIT_POLICY, list_value, ratelimit_item, retry_after_secs};
use crate::memory::MemoryStore;
use crate::response::{
    MissingPeer, ResponseTemplate, default_denied_response, missing_peer_response,
};
use crate::rules::{Compiled, CompiledRule, KeyPart, ResponseHeaders, Rules, RulesError};
use crate::store::{Check, MAX_KEY_LEN, RateLimitStore, StoreError};

/// The name a [`RateLimitGuard`] gives itself ([`Guard::name`]): the `guard` label of the
/// `ravelin_guard_*` metrics, its kill switch in a `Switchboard`, its key in
/// [`Skipped`](ravelin_failsafe::Skipped) and in `x-ravelin-skipped`.
pub const GUARD_NAME: &str = "ratelimit";

/// Applies a [`Rules`] set to each request: extracts each matching rule's key, asks the store,
/// and answers 429 when an enforcing rule is out of quota.
///
/// A guard, not a service, named [`GUARD_NAME`]: [`RateLimitLayer`](crate::RateLimitLayer)
/// wraps it in a [`GuardLayer`](ravelin_failsafe::GuardLayer) for its failure policy (open by
/// default: a store that fails lets requests through), timeout, panic containment, circuit
/// breaker and kill switch.
///
/// Clones share the rules and the store.
pub struct RateLimitGuard<S = MemoryStore> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: S,
    rules: Source,
    /// Shadow denials and misconfiguration warnings, a few lines per second at most.
    log: LogLimiter,
    /// Enforced denials at debug level: their own budget, so a flood of 429s cannot crowd out
    /// the shadow lines above.
    denial_log: LogLimiter,
    /// Where the rules' kill switches live (`ratelimit.rule.<name>`); `None`: each rule's
    /// `killed` as its document wrote it.
    switchboard: Option<ravelin_primitives::Switchboard>,
    /// Set in code ([`RateLimitGuard::missing_peer`]): wins over the rules document's.
    missing_peer: Option<MissingPeer>,
    /// Set in code ([`RateLimitGuard::denied_response`]): wins over the rules document's.
    denied: Option<FixedResponse>,
}

pub(crate) enum Source {
    Fixed(Arc<Compiled>),
    Reloadable(ravelin_config::Store<Rules>),
}

impl<S> Clone for RateLimitGuard<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> fmt::Debug for RateLimitGuard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = match &self.inner.rules {
            Source::Fixed(compiled) => compiled.rules.len(),
            Source::Reloadable(store) => store
                .current()
                .compiled()
                .map_or(0, |compiled| compiled.rules.len()),
        };
        f.debug_struct("RateLimitGuard")
            .field("rules", &rules)
            .field(
                "reloadable",
                &matches!(self.inner.rules, Source::Reloadable(_)),
            )
            .finish_non_exhaustive()
    }
}

// === impl RateLimitGuard ===

impl RateLimitGuard<MemoryStore> {
    /// A guard with fixed `rules` and an in-memory store of
    /// [`MemoryStore::DEFAULT_CAPACITY`] keys.
    ///
    /// # Errors
    /// The rule set's violations, by field (as [`Validate::validate`](ravelin_config::Validate::validate) reports them).
    pub fn new(rules: Rules) -> Result<Self, RulesError> {
        Ok(Self::with_source(
            MemoryStore::default(),
            Source::Fixed(compile(rules)?),
        ))
    }

    /// A guard reading its rules from a `ravelin-config` store: every installed document takes
    /// effect on the next request, and rules whose name and quota did not change keep their
    /// state (it is addressed by name and quota).
    pub fn reloadable(rules: ravelin_config::Store<Rules>) -> Self {
        Self::with_source(MemoryStore::default(), Source::Reloadable(rules))
    }
}

pub(crate) fn compile(rules: Rules) -> Result<Arc<Compiled>, RulesError> {
    let rules = rules.compile()?;
    rules
        .compiled()
        .cloned()
        .ok_or_else(|| RulesError::Invalid {
            violations: ravelin_config::Violations::one("", "the rule set could not be compiled"),
        })
}

impl<S: RateLimitStore> RateLimitGuard<S> {
    pub(crate) fn with_source(store: S, rules: Source) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                rules,
                log: LogLimiter::per_second(5),
                denial_log: LogLimiter::per_second(5),
                switchboard: None,
                missing_peer: None,
                denied: None,
            }),
        }
    }

    /// The same rules with state in `store` instead (e.g. a larger [`MemoryStore`], or Redis).
    pub fn with_store<T: RateLimitStore>(self, store: T) -> RateLimitGuard<T> {
        let rules = match &self.inner.rules {
            Source::Fixed(compiled) => Source::Fixed(Arc::clone(compiled)),
            Source::Reloadable(config) => Source::Reloadable(config.clone()),
        };
        let mut guard = RateLimitGuard::with_source(store, rules);
        if let Some(inner) = Arc::get_mut(&mut guard.inner) {
            inner.switchboard.clone_from(&self.inner.switchboard);
            inner.missing_peer = self.inner.missing_peer;
            inner.denied.clone_from(&self.inner.denied);
        }
        guard
    }

    /// What a rule keyed by `client_ip` does with a request that has no peer address, whatever
    /// the rules document says (default: the document's `missing_peer`, itself
    /// [`MissingPeer::Reject`] unless written).
    ///
    /// Call it on the guard as built, before it is cloned (as [`switchboard`](Self::switchboard)).
    #[must_use]
    pub fn missing_peer(mut self, missing_peer: MissingPeer) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.missing_peer = Some(missing_peer),
            None => tracing::error!(
                "RateLimitGuard::missing_peer on a shared guard: the rules document's setting stays"
            ),
        }
        self
    }

    /// Answers limited requests with `template` instead of the rules document's
    /// `denied_response` (`Retry-After` and the `RateLimit` fields are still added).
    ///
    /// Call it on the guard as built, before it is cloned.
    ///
    /// # Errors
    /// The template's violations, named under `denied_response` (a status outside 400..=599,
    /// a content type that is no header value, a body over [`MAX_BODY_BYTES`](crate::MAX_BODY_BYTES)).
    pub fn denied_response(mut self, template: &ResponseTemplate) -> Result<Self, RulesError> {
        // Compiled once: the violations are the compile error's problems, as `check` names them.
        let compiled = template.compile().map_err(|err| {
            let mut violations = ravelin_config::Violations::new();
            crate::response::record_problems("denied_response", &err, &mut violations);
            RulesError::Invalid { violations }
        })?;
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.denied = Some(compiled),
            None => tracing::error!(
                "RateLimitGuard::denied_response on a shared guard: the rules document's response stays"
            ),
        }
        Ok(self)
    }

    /// Reads each rule's kill switch from `switchboard`, under [`rule_switch_name`]
    /// (`ratelimit.rule.<name>`): a killed rule is skipped — not counted, not enforced —
    /// and counted as `outcome="skipped"`. The switchboard then owns the state: a document's
    /// `killed` is applied by whoever loads the documents, when it changes (the edge does).
    /// The switches of the rules in force are registered here, so they are listed at once.
    ///
    /// Call it on the guard as built, before it is cloned: clones share one state, and a
    /// guard already shared is returned unchanged (logged).
    ///
    /// [`rule_switch_name`]: crate::rule_switch_name
    #[must_use]
    pub fn switchboard(mut self, switchboard: &ravelin_primitives::Switchboard) -> Self {
        if let Some(compiled) = self.compiled() {
            for rule in &compiled.rules {
                switchboard.switch(&crate::rules::rule_switch_name(&rule.name));
            }
        }
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.switchboard = Some(switchboard.clone()),
            None => tracing::error!(
                "RateLimitGuard::switchboard on a shared guard: the rules keep their own switches"
            ),
        }
        self
    }

    /// The state store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    fn compiled(&self) -> Option<Arc<Compiled>> {
        match &self.inner.rules {
            Source::Fixed(compiled) => Some(Arc::clone(compiled)),
            Source::Reloadable(store) => store.current().compiled().cloned(),
        }
    }
}

/// Why a rule did not apply to a request.
pub(crate) enum Skip {
    /// The rule's match does not cover the request.
    NoMatch,
    /// A key part is missing (no peer address, no such header).
    NoKey,
}

/// What is derived from the request once, for every rule that needs it.
pub(crate) struct Derived<'h> {
    /// The client key (`None` inside: no peer address).
    client: Option<Option<IpAddr>>,
    /// The normalized path that prefixes and `path` keys use.
    path: Option<Cow<'h, MatchPath>>,
}

impl<'h> Derived<'h> {
    fn new() -> Self {
        Self {
            client: None,
            path: None,
        }
    }

    /// What a sampled head already carries ([`crate::effect::SampledHead`]): the client
    /// address as resolved when it was recorded (grouped here by the rules' prefixes) and the
    /// match path, so that [`write_key`] reads neither the URI nor the forwarding headers.
    pub(crate) fn resolved(
        client: Option<IpAddr>,
        path: &'h MatchPath,
        compiled: &Compiled,
    ) -> Self {
        Self {
            client: Some(client.map(|ip| compiled.client_ip.group(ip))),
            path: Some(Cow::Borrowed(path)),
        }
    }

    /// The request's match path, computed on first use: the ingress stage's when it ran,
    /// else the lenient normalization of the URI.
    fn path(&mut self, head: &RequestHead<'h>) -> &MatchPath {
        self.path
            .get_or_insert_with(|| MatchPath::of(head.uri, head.extensions))
    }
}

/// Appends `rule`'s key for the request to `buf`, each part as a tag, a length and the bytes.
/// The one key derivation: the guard's and the pre-activation estimate's
/// ([`crate::effect::estimate`]).
pub(crate) fn write_key<'h>(
    rule: &CompiledRule,
    head: &RequestHead<'h>,
    derived: &mut Derived<'h>,
    compiled: &Compiled,
    buf: &mut Vec<u8>,
) -> Result<(), Skip> {
    if !rule.methods.is_empty() && !rule.methods.contains(head.method) {
        return Err(Skip::NoMatch);
    }
    if let Some(prefix) = &rule.path_prefix
        && !prefix.matches(derived.path(head))
    {
        return Err(Skip::NoMatch);
    }
    let start = buf.len();
    for part in &rule.key {
        let (tag, bytes): (u8, &[u8]) = match part {
            KeyPart::ClientIp => {
                let ip = *derived
                    .client
                    .get_or_insert_with(|| compiled.client_ip.client_key(head.peer, head.headers));
                match ip {
                    Some(IpAddr::V4(v4)) => {
                        push_part(buf, b'4', &v4.octets());
                        continue;
                    }
                    Some(IpAddr::V6(v6)) => {
                        push_part(buf, b'6', &v6.octets());
                        continue;
                    }
                    None => return Err(Skip::NoKey),
                }
            }
            KeyPart::Method => (b'm', head.method.as_str().as_bytes()),
            KeyPart::Path => (b'p', derived.path(head).as_str().as_bytes()),
            KeyPart::Host => {
                push_host(buf, head);
                continue;
            }
            KeyPart::Header(name) => match head.headers.get(name) {
                Some(value) => (b'h', value.as_bytes()),
                None => return Err(Skip::NoKey),
            },
        };
        push_part(buf, tag, bytes);
    }
    if buf.len().saturating_sub(start) > MAX_KEY_LEN {
        // A long key (a huge header value) is replaced by its SHA-256: stores see bounded keys,
        // and, unlike a seeded hash, the digest is the same on every instance sharing a Redis.
        let digest = sha2::Sha256::digest(buf.get(start..).unwrap_or_default());
        buf.truncate(start);
        buf.push(b'#');
        buf.extend_from_slice(&digest);
    }
    Ok(())
}

/// The `host` key part: the identity's authority (already lowercased, without the default
/// port) when the ingress stage decided one, else the `Host` header or URI authority with
/// ASCII case folded, so `Example.COM` and `example.com` share a bucket.
fn push_host(buf: &mut Vec<u8>, head: &RequestHead<'_>) {
    if let Some(authority) = head
        .extensions
        .get::<RequestIdentity>()
        .and_then(RequestIdentity::authority)
    {
        push_part(buf, b'o', authority.as_str().as_bytes());
        return;
    }
    let raw = head
        .headers
        .get(HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| head.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default();
    push_part(buf, b'o', raw);
    // Fold the value just written (not its tag and length).
    let value_start = buf
        .len()
        .saturating_sub(raw.len().min(usize::from(u16::MAX)));
    if let Some(value) = buf.get_mut(value_start..) {
        value.make_ascii_lowercase();
    }
}

/// Appends one key part: its tag, its length (two bytes) and at most 65535 bytes of it.
fn push_part(buf: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    buf.push(tag);
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

impl<S: RateLimitStore> Guard for RateLimitGuard<S> {
    type Future = CheckFuture<S::Future>;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(GUARD_NAME)
    }

    fn check(&self, head: &RequestHead<'_>) -> Self::Future {
        let Some(compiled) = self.compiled() else {
            return CheckFuture::ready(Ok(Verdict::allow()));
        };
        let mut buf = Vec::with_capacity(64);
        let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(compiled.rules.len());
        let mut derived = Derived::new();
        let missing_peer = self.inner.missing_peer.unwrap_or(compiled.missing_peer);
        let switches = compiled.switches(self.inner.switchboard.as_ref());
        for (index, rule) in compiled.rules.iter().enumerate() {
            // A killed rule is skipped before anything is derived for it: an atomic load.
            if switches.get(index).is_some_and(KillSwitch::is_engaged) {
                rule.skipped.increment(1);
                continue;
            }
            let start = buf.len();
            match write_key(rule, head, &mut derived, &compiled, &mut buf) {
                Ok(()) => spans.push((index, start, buf.len())),
                Err(Skip::NoMatch) => {}
                Err(Skip::NoKey) => {
                    buf.truncate(start);
                    // Only a rule keyed by `client_ip` has the counter.
                    let Some(no_peer) = rule.missing_peer.as_ref().filter(|_| head.peer.is_none())
                    else {
                        // A missing header: the rule does not apply to this request.
                        rule.skipped.increment(1);
                        continue;
                    };
                    no_peer.increment(1);
                    // A shadow rule never blocks, whatever the setting: it reports and the
                    // request goes on.
                    if missing_peer == MissingPeer::Reject && rule.action == Enforcement::Enforce {
                        if let Some(permit) = self.inner.log.check() {
                            tracing::error!(
                                rule = %rule.name,
                                suppressed = permit.suppressed(),
                                "rate-limit rule keyed by client_ip cannot limit: the request has no PeerAddr extension; answered 500 (add ravelin_http::PeerAddrLayer in front of the rate limiter, or set missing_peer = \"skip\")"
                            );
                        }
                        return CheckFuture::ready(Ok(Verdict::Respond(missing_peer_response())));
                    }
                    rule.skipped.increment(1);
                    if let Some(permit) = self.inner.log.check() {
                        let message = "rate-limit rule keyed by client_ip skipped: the request has no PeerAddr extension (add ravelin_http::PeerAddrLayer in front of the rate limiter)";
                        if missing_peer == MissingPeer::Reject {
                            tracing::error!(rule = %rule.name, suppressed = permit.suppressed(), "{message}");
                        } else {
                            tracing::warn!(rule = %rule.name, suppressed = permit.suppressed(), "{message}");
                        }
                    }
                }
            }
        }
        if spans.is_empty() {
            return CheckFuture::ready(Ok(Verdict::allow()));
        }
        let checks: Vec<Check<'_>> = spans
            .iter()
            .filter_map(|&(index, start, end)| {
                let rule = compiled.rules.get(index)?;
                Some(Check {
                    rule: &rule.name,
                    key: buf.get(start..end)?,
                    quota: rule.quota,
                    cost: rule.cost,
                    enforce: rule.action == Enforcement::Enforce,
                })
            })
            .collect();
        let future = self.inner.store.check(&checks);
        // The spans go with the plan as they are (their rule indexes are what it needs): no
        // second vector per request (issue 13).
        let applied = spans;
        CheckFuture::waiting(
            future,
            Plan {
                compiled,
                applied,
                guard: Arc::clone(&self.inner) as Arc<dyn Logs>,
            },
        )
    }
}

/// What the future needs to turn decisions into a verdict.
pub(crate) struct Plan {
    compiled: Arc<Compiled>,
    /// The rules that were checked, in check order: `(rule index, key start, key end)`, only
    /// the index is read.
    applied: Vec<(usize, usize, usize)>,
    guard: Arc<dyn Logs>,
}

/// The guard's log limiter, without its store type.
trait Logs: Send + Sync {
    fn log(&self) -> &LogLimiter;
    fn denial_log(&self) -> &LogLimiter;
    /// The denial set in code, if any.
    fn denied(&self) -> Option<&FixedResponse>;
}

impl<S: Send + Sync> Logs for Inner<S> {
    fn log(&self) -> &LogLimiter {
        &self.log
    }

    fn denial_log(&self) -> &LogLimiter {
        &self.denial_log
    }

    fn denied(&self) -> Option<&FixedResponse> {
        self.denied.as_ref()
    }
}

impl Plan {
    pub(crate) fn verdict(
        self,
        decisions: Result<Vec<Decision>, StoreError>,
    ) -> Result<Verdict, GuardError> {
        let decisions = decisions?;
        if decisions.len() != self.applied.len() {
            return Err(GuardError::new(
                GuardErrorKind::Internal,
                format!(
                    "the rate-limit store returned {} decisions for {} checks",
                    decisions.len(),
                    self.applied.len()
                ),
            ));
        }
        let mut blocked = false;
        let mut retry_after = 0u64;
        // With one rule applied (the usual case) its precomputed policy value is used; the
        // policy string is built only for two or more. `state` is sized for a typical item so
        // it is allocated once (issue 13).
        let mut policy = String::new();
        let mut first: Option<&CompiledRule> = None;
        let mut items = 0usize;
        let mut state = String::with_capacity(64);
        for (&(index, _, _), decision) in self.applied.iter().zip(&decisions) {
            let Some(rule) = self.compiled.rules.get(index) else {
                continue;
            };
            if decision.allowed {
                rule.allowed.increment(1);
            } else {
                rule.denied.increment(1);
            }
            match rule.action {
                Enforcement::Shadow => {
                    if !decision.allowed
                        && let Some(permit) = self.guard.log().check()
                    {
                        tracing::info!(
                            rule = %rule.name,
                            retry_after_ms = u64::try_from(decision.retry_after.as_millis()).unwrap_or(u64::MAX),
                            suppressed = permit.suppressed(),
                            "shadow rate-limit rule would have limited this request"
                        );
                    }
                    continue;
                }
                Enforcement::Enforce => {
                    if !decision.allowed {
                        blocked = true;
                        retry_after = retry_after.max(retry_after_secs(decision));
                    }
                }
            }
            if items > 0 {
                state.push_str(", ");
            }
            match items {
                0 => first = Some(rule),
                1 => {
                    // A second rule: from here on the list is built.
                    if let Some(first) = first {
                        policy.push_str(&first.policy_item);
                    }
                    policy.push_str(", ");
                    policy.push_str(&rule.policy_item);
                }
                _ => {
                    policy.push_str(", ");
                    policy.push_str(&rule.policy_item);
                }
            }
            items += 1;
            ratelimit_item(&mut state, &rule.name, &rule.quota, decision);
        }
        let send_headers = match self.compiled.headers {
            ResponseHeaders::Always => true,
            ResponseHeaders::Denied => blocked,
            ResponseHeaders::Never => false,
        };
        let mut headers = HeaderMap::new();
        if send_headers && items > 0 {
            let value = match (items, first) {
                (1, Some(rule)) => rule.policy_value.clone(),
                _ => list_value(&policy),
            };
            if let Some(value) = value {
                headers.insert(RATELIMIT_POLICY.clone(), value);
            }
            if let Some(value) = list_value(&state) {
                headers.insert(RATELIMIT.clone(), value);
            }
        }
        if blocked {
            if tracing::enabled!(tracing::Level::DEBUG)
                && let Some(permit) = self.guard.denial_log().check()
            {
                tracing::debug!(
                    retry_after,
                    suppressed = permit.suppressed(),
                    "rate limited"
                );
            }
            // The edge's own short answer (the configured status, type and body; no-store,
            // nosniff), plus Retry-After and the RateLimit fields.
            let mut response = match self.guard.denied().or(self.compiled.denied.as_ref()) {
                Some(denied) => denied.to_response(),
                None => default_denied_response(),
            };
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
            response.headers_mut().extend(headers);
            return Ok(Verdict::Respond(response));
        }
        let mut allow = Allow::new();
        if !headers.is_empty() {
            *allow.response_headers_mut() = headers;
        }
        Ok(Verdict::Allow(allow))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use http::Request;
    use ravelin_failsafe::{Guard, RequestHead, Verdict};
    use ravelin_primitives::Switchboard;

    use super::RateLimitGuard;
    use crate::{KeyPart, ManualClock, MemoryStore, Rule, Rules, rule_switch_name};

    /// Two rules, one request a minute each, keyed by their own header.
    fn rules(alpha_killed: bool) -> Rules {
        Rules::new()
            .rule(
                Rule::new("alpha", 1, Duration::from_secs(60))
                    .key(KeyPart::Header(http::HeaderName::from_static("x-alpha")))
                    .killed(alpha_killed),
            )
            .rule(
                Rule::new("beta", 1, Duration::from_secs(60))
                    .key(KeyPart::Header(http::HeaderName::from_static("x-beta"))),
            )
    }

    async fn allowed<S: crate::RateLimitStore>(guard: &RateLimitGuard<S>, header: &str) -> bool {
        let request = Request::get("/").header(header, "k").body(()).unwrap();
        matches!(
            guard.check(&RequestHead::from_request(&request)).await,
            Ok(Verdict::Allow(_))
        )
    }

    #[tokio::test]
    async fn a_rule_killed_by_its_document_is_skipped_and_the_others_still_limit() {
        let clock = ManualClock::new();
        let guard = RateLimitGuard::new(rules(true))
            .unwrap()
            .with_store(MemoryStore::with_clock(1000, clock));
        for _ in 0..5 {
            assert!(
                allowed(&guard, "x-alpha").await,
                "a killed rule never limits"
            );
        }
        assert!(allowed(&guard, "x-beta").await);
        assert!(!allowed(&guard, "x-beta").await, "the live rule limits");
    }

    #[tokio::test]
    async fn with_a_switchboard_the_switch_decides_and_flips_at_once() {
        let board = Switchboard::new();
        let clock = ManualClock::new();
        // The document says killed, but the switchboard owns the state (its loader applies
        // the document's value when it changes).
        let guard = RateLimitGuard::new(rules(true))
            .unwrap()
            .switchboard(&board)
            .with_store(MemoryStore::with_clock(1000, clock));
        let switch = rule_switch_name("alpha");
        assert_eq!(switch, "ratelimit.rule.alpha");
        assert_eq!(board.is_engaged(&switch), Some(false), "registered at once");
        assert!(allowed(&guard, "x-alpha").await);
        assert!(!allowed(&guard, "x-alpha").await);
        board.set(&switch, true, "test").unwrap();
        for _ in 0..5 {
            assert!(allowed(&guard, "x-alpha").await, "killed: skipped");
        }
        assert!(allowed(&guard, "x-beta").await);
        assert!(
            !allowed(&guard, "x-beta").await,
            "the other rule still limits"
        );
        board.set(&switch, false, "test").unwrap();
        assert!(!allowed(&guard, "x-alpha").await, "revived: limits again");
    }
}
