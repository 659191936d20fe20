//! The rule set: named rules, each a matcher, a key, a quota, a cost and an action. Loaded from
//! TOML or JSON through `ravelin-config` (validated, hot-reloaded) or built in code.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::HeaderName;
use ipnet::IpNet;
use ravelin_config::{Validate, Violations};
use ravelin_http::{FixedResponse, PathPrefix};
use ravelin_primitives::Enforcement;
use serde::{Deserialize, Serialize};

use crate::client_ip::{ClientIpResolver, ForwardedHeader};
use crate::gcra::Quota;
use crate::response::{MissingPeer, ResponseTemplate};
use crate::store::MAX_CHECKS;

/// The most rules a rule set may hold.
pub const MAX_RULES: usize = MAX_CHECKS;
/// The longest rule name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The most parts a rule's key may have.
pub const MAX_KEY_PARTS: usize = 4;
/// The most trusted-proxy CIDRs.
pub const MAX_TRUSTED_PROXIES: usize = 1024;
/// The most methods a rule may match.
pub const MAX_METHODS: usize = 16;
/// The longest path prefix, in bytes.
pub const MAX_PATH_PREFIX_LEN: usize = ravelin_http::MAX_PREFIX_BYTES;
/// The largest limit or burst: a billion units.
pub const MAX_UNITS: u32 = 1_000_000_000;
/// The longest window: 366 days.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 86_400);

/// A rule set that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The rules break the limits documented on [`Rules`]; each violation names its field.
    #[error("invalid rate-limit rules: {violations}")]
    Invalid {
        /// What is wrong, field by field (`rules[2].limit: value 0 is outside 1..=1000000000`).
        violations: Violations,
    },
}

/// A rule set: the document behind a [`RateLimitGuard`](crate::RateLimitGuard).
///
/// A document, like the crates' other configuration types: plain data, read from TOML or JSON
/// (through a `ravelin_config::Store`, which validates it) or written in code with
/// [`Rules::new`] and its [`rule`](Self::rule) helpers. It does not build itself: whatever runs
/// it — [`RateLimitLayer::new`](crate::RateLimitLayer::new),
/// [`RateLimitLayer::builder`](crate::RateLimitLayer::builder),
/// [`RateLimitGuard::new`](crate::RateLimitGuard::new) — validates and compiles it, and
/// [`Validate::validate`] checks it without running it.
///
/// ```toml
/// version = 7
///
/// [client_ip]
/// trusted_proxies = ["10.0.0.0/8"]
/// header = "x-forwarded-for"
/// ipv6_prefix = 64
///
/// [[rules]]
/// name = "per-ip"
/// limit = 100
/// window = "1m"
/// key = ["client_ip"]
///
/// [[rules]]
/// name = "login"
/// limit = 5
/// window = "1m"
/// key = ["client_ip"]
/// match = { methods = ["POST"], path_prefix = "/login" }
///
/// [[rules]]
/// name = "per-api-key"
/// limit = 1000
/// window = "1h"
/// burst = 100
/// key = ["header:x-api-key"]
/// action = "shadow"
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// The document's generation, when it carries one: a reload never installs an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// How the client address is found.
    #[serde(default)]
    pub client_ip: ClientIp,
    /// When the `RateLimit` and `RateLimit-Policy` fields are sent.
    #[serde(default)]
    pub response_headers: ResponseHeaders,
    /// What a rule keyed by `client_ip` does with a request that has no peer address
    /// (default: answer 500 naming the fix; see [`MissingPeer`]).
    #[serde(default)]
    pub missing_peer: MissingPeer,
    /// The answer to a limited request (default 429 `too many requests`); `Retry-After` and
    /// the `RateLimit` fields are added to it.
    #[serde(default)]
    pub denied_response: ResponseTemplate,
    /// The rules, all evaluated for every request they match.
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(skip)]
    compiled: Option<Arc<Compiled>>,
}

/// How the client address is found; see the [`client_ip`](crate::client_ip) module.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientIp {
    /// CIDRs of the proxies whose forwarding header is believed (`"10.0.0.0/8"`, `"::1/128"`).
    /// Empty (the default): the socket peer is always the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The forwarding header: `"x-forwarded-for"` (default), `"forwarded"`, or the name of a
    /// single-address header such as `"x-real-ip"`.
    #[serde(default = "default_forwarded_header")]
    pub header: String,
    /// IPv4 clients are grouped by this prefix length (default 32: one key per address).
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4_prefix: u8,
    /// IPv6 clients are grouped by this prefix length (default 64).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

impl ClientIp {
    /// The resolver these settings describe, as the rate limiter builds it: the trusted
    /// proxies (unparsable entries left out: validation refuses them), the forwarding header
    /// (X-Forwarded-For when unknown), the grouping prefixes. For code that must find the
    /// client exactly as the limiter does (an edge keying its rollout cohorts).
    pub fn resolver(&self) -> ClientIpResolver {
        ClientIpResolver::new(
            self.trusted_proxies
                .iter()
                .filter_map(|c| parse_cidr(c))
                .collect(),
            forwarded_header(&self.header).unwrap_or(ForwardedHeader::XForwardedFor),
        )
        .ipv4_prefix(self.ipv4_prefix)
        .ipv6_prefix(self.ipv6_prefix)
    }
}

fn default_forwarded_header() -> String {
    "x-forwarded-for".to_owned()
}
fn default_ipv4_prefix() -> u8 {
    32
}
fn default_ipv6_prefix() -> u8 {
    64
}

impl Default for ClientIp {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header: default_forwarded_header(),
            ipv4_prefix: default_ipv4_prefix(),
            ipv6_prefix: default_ipv6_prefix(),
        }
    }
}

/// When the IETF `RateLimit` / `RateLimit-Policy` fields are added to responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseHeaders {
    /// On every response a rule applied to (default).
    #[default]
    Always,
    /// Only on 429 responses.
    Denied,
    /// Never (429 responses still carry `Retry-After`).
    Never,
}

/// One part of a rule's key. In documents, a string: `"client_ip"`, `"method"`, `"path"`,
/// `"host"`, or `"header:<name>"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeyPart {
    /// The client address, grouped by prefix (see [`ClientIp`]). A request without a peer
    /// address is refused (500) unless [`Rules::missing_peer`] says to skip the rule for it.
    ClientIp,
    /// The request method.
    Method,
    /// The request path (without the query), normalized as policies match it
    /// ([`ravelin_http::MatchPath`]): `/LOGIN`, `//login`, `/%6cogin` and `/login;a=b` are all
    /// `/login`, one key. Pair it with a `path_prefix` match: every distinct path is a key.
    Path,
    /// The host the request is for, lowercased: the ingress stage's
    /// [`RequestIdentity`](ravelin_http::RequestIdentity) authority when one is present, else
    /// the `Host` header, or the URI authority.
    Host,
    /// The value of a request header, e.g. an API key. A request without the header is not
    /// limited by the rule.
    Header(HeaderName),
}

impl TryFrom<String> for KeyPart {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "client_ip" => Ok(KeyPart::ClientIp),
            "method" => Ok(KeyPart::Method),
            "path" => Ok(KeyPart::Path),
            "host" => Ok(KeyPart::Host),
            other => match other.strip_prefix("header:") {
                Some(name) => HeaderName::from_bytes(name.as_bytes())
                    .map(KeyPart::Header)
                    .map_err(|_| format!("`{name}` is not a valid header name")),
                None => Err(format!(
                    "unknown key part `{other}`; expected client_ip, method, path, host or header:<name>"
                )),
            },
        }
    }
}

impl From<KeyPart> for String {
    fn from(part: KeyPart) -> Self {
        part.to_string()
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::ClientIp => f.write_str("client_ip"),
            KeyPart::Method => f.write_str("method"),
            KeyPart::Path => f.write_str("path"),
            KeyPart::Host => f.write_str("host"),
            KeyPart::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// Which requests a rule applies to. Empty: all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Only these methods (`["POST", "PUT"]`). Methods are case-sensitive (RFC 9110 §9.1):
    /// `"post"` would never match a `POST`, so a lowercase spelling of a standard method is
    /// refused at validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Only paths under this prefix, matched on whole segments ([`PathPrefix`]): `"/api"`
    /// covers `/api` and `/api/x`, not `/apiary`; `"/api/"` covers what is below `/api/`. The
    /// request's path is normalized first ([`ravelin_http::MatchPath`]: case folded, dot
    /// segments, repeated slashes, unreserved escapes and `;parameters` resolved), so `/LOGIN`,
    /// `//login`, `/x/../login` and `/%6cogin` are all under `"/login"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

/// One named limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within the rule set: the name in headers, metrics and logs, and part of the state's
    /// identity (a renamed rule starts afresh). `[A-Za-z0-9_.-]`, at most 64 bytes.
    pub name: String,
    /// Units per window.
    pub limit: u32,
    /// The window, in whole seconds (`"1s"`, `"1m"`, `"1h"`, `"1day"`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The most units spendable at once (default: `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Units each matching request spends (default 1).
    #[serde(default = "default_cost")]
    pub cost: u32,
    /// `enforce` (default: answer 429) or `shadow` (count and log what would have been
    /// limited; never block, never send headers).
    #[serde(default)]
    pub action: Enforcement,
    /// What the rule counts per: empty (the default) means one bucket for all requests.
    #[serde(default)]
    pub key: Vec<KeyPart>,
    /// Which requests the rule applies to (default: all).
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// The rule's kill switch as this document sets it: a killed rule is skipped (not counted,
    /// not enforced, counted as `outcome="skipped"`). A guard given a switchboard
    /// ([`RateLimitGuard::switchboard`](crate::RateLimitGuard::switchboard)) reads the switch
    /// named [`rule_switch_name`] there instead, and whoever loads the documents sets it from
    /// this value when it changes (the edge does), so an operator's flip survives unrelated
    /// reloads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub killed: bool,
}

/// The prefix of the rules' kill switches in a `Switchboard`: `ratelimit.rule.<name>`.
pub const RULE_SWITCH_PREFIX: &str = "ratelimit.rule.";

/// The name of rule `rule`'s kill switch in a `Switchboard` (`ratelimit.rule.login`).
pub fn rule_switch_name(rule: &str) -> String {
    format!("{RULE_SWITCH_PREFIX}{rule}")
}

fn default_cost() -> u32 {
    1
}

// === impl Rule ===

impl Rule {
    /// A rule allowing `limit` units per `window`, burst `limit`, cost 1, enforcing, one bucket
    /// for all requests. Add a key with [`key`](Self::key).
    pub fn new(name: impl Into<String>, limit: u32, window: Duration) -> Self {
        Self {
            name: name.into(),
            limit,
            window,
            burst: None,
            cost: 1,
            action: Enforcement::Enforce,
            key: Vec::new(),
            matches: Match::default(),
            killed: false,
        }
    }

    /// Sets the rule's kill switch as the document does (see [`Rule::killed`]).
    pub fn killed(mut self, killed: bool) -> Self {
        self.killed = killed;
        self
    }

    /// Counts per `part` as well (e.g. [`KeyPart::ClientIp`]).
    pub fn key(mut self, part: KeyPart) -> Self {
        self.key.push(part);
        self
    }

    /// Sets the burst.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Sets the cost per request.
    pub fn cost(mut self, cost: u32) -> Self {
        self.cost = cost;
        self
    }

    /// Only counts, logs and reports; never blocks.
    pub fn shadow(mut self) -> Self {
        self.action = Enforcement::Shadow;
        self
    }

    /// Applies only to `method`.
    pub fn method(mut self, method: Method) -> Self {
        self.matches.methods.push(method.as_str().to_owned());
        self
    }

    /// Applies only to paths under `prefix` (whole segments; see [`Match::path_prefix`]).
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.matches.path_prefix = Some(prefix.into());
        self
    }

    /// The rule's quota, if its numbers are valid.
    pub fn quota(&self) -> Option<Quota> {
        Quota::new(self.limit, self.window)
            .and_then(|q| q.with_burst(self.burst.unwrap_or(self.limit)))
            .ok()
    }
}

// === impl Rules ===

impl Rules {
    /// An empty rule set (trusting no proxy).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Trusts the forwarding header from proxies in `cidrs`.
    pub fn trusted_proxies<I, S>(mut self, cidrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client_ip.trusted_proxies = cidrs.into_iter().map(Into::into).collect();
        self
    }

    /// Sets when rate-limit header fields are sent.
    pub fn response_headers(mut self, when: ResponseHeaders) -> Self {
        self.response_headers = when;
        self
    }

    /// Sets what a `client_ip` rule does with a request without a peer address.
    pub fn missing_peer(mut self, missing_peer: MissingPeer) -> Self {
        self.missing_peer = missing_peer;
        self
    }

    /// Replaces the answer to a limited request.
    pub fn denied_response(mut self, template: ResponseTemplate) -> Self {
        self.denied_response = template;
        self
    }

    /// Validates and compiles the rule set for use outside a `ravelin_config::Store` (what
    /// [`RateLimitLayer::new`](crate::RateLimitLayer::new) and
    /// [`RateLimitGuard::new`](crate::RateLimitGuard::new) do with the rules they are given).
    ///
    /// # Errors
    /// Every broken rule, as [`Validate::validate`] reports them.
    pub(crate) fn compile(mut self) -> Result<Self, RulesError> {
        self.validate()
            .map_err(|violations| RulesError::Invalid { violations })?;
        self.prepare();
        Ok(self)
    }

    pub(crate) fn compiled(&self) -> Option<&Arc<Compiled>> {
        self.compiled.as_ref()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn forwarded_header(name: &str) -> Option<ForwardedHeader> {
    match name.to_ascii_lowercase().as_str() {
        "x-forwarded-for" => Some(ForwardedHeader::XForwardedFor),
        "forwarded" => Some(ForwardedHeader::Forwarded),
        other => HeaderName::from_bytes(other.as_bytes())
            .ok()
            .map(ForwardedHeader::Single),
    }
}

impl Validate for Rules {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        let ip = &self.client_ip;
        if v.check_count(
            "client_ip.trusted_proxies",
            "CIDRs",
            ip.trusted_proxies.len(),
            MAX_TRUSTED_PROXIES,
        ) {
            for (i, cidr) in ip.trusted_proxies.iter().enumerate() {
                if parse_cidr(cidr).is_none() {
                    v.push(
                        format!("client_ip.trusted_proxies[{i}]"),
                        format!("`{cidr}` is not an IP address or CIDR such as 10.0.0.0/8"),
                    );
                }
            }
        }
        if forwarded_header(&ip.header).is_none() {
            v.push(
                "client_ip.header",
                format!("`{}` is not a valid header name", ip.header),
            );
        }
        v.check_range("client_ip.ipv4_prefix", ip.ipv4_prefix, 1..=32);
        v.check_range("client_ip.ipv6_prefix", ip.ipv6_prefix, 1..=128);
        self.denied_response.check("denied_response", &mut v);

        if !v.check_count("rules", "rules", self.rules.len(), MAX_RULES) {
            return v.into_result();
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            if !valid_name(&rule.name) {
                v.push(
                    at("name"),
                    format!(
                        "`{}` must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - .",
                        rule.name
                    ),
                );
            }
            if let Some(first) = self.rules.iter().position(|r| r.name == rule.name)
                && first < i
            {
                v.push(
                    at("name"),
                    format!(
                        "`{}` is also the name of rules[{first}]; names must be unique",
                        rule.name
                    ),
                );
            }
            v.check_range(&at("limit"), rule.limit, 1..=MAX_UNITS);
            let burst = rule.burst.unwrap_or(rule.limit);
            if rule.burst.is_some() {
                v.check_range(&at("burst"), burst, 1..=MAX_UNITS);
            }
            if rule.window < Duration::from_secs(1) || rule.window > MAX_WINDOW {
                v.push(
                    at("window"),
                    format!("{:?} is outside 1s..=366days", rule.window),
                );
            } else if rule.window.subsec_nanos() != 0 {
                v.push(
                    at("window"),
                    format!("{:?} is not a whole number of seconds", rule.window),
                );
            } else if rule.limit >= 1 && burst >= 1 && rule.quota().is_none() {
                v.push(
                    at("window"),
                    format!(
                        "{} per {:?} with burst {burst} is not a usable rate",
                        rule.limit, rule.window
                    ),
                );
            }
            if rule.cost == 0 || rule.cost > burst {
                v.push(
                    at("cost"),
                    format!(
                        "{} is outside 1..={burst} (the burst): a request costing more than the burst is always denied",
                        rule.cost
                    ),
                );
            }
            if v.check_count(&at("key"), "key parts", rule.key.len(), MAX_KEY_PARTS) {
                for (j, part) in rule.key.iter().enumerate() {
                    if rule.key.iter().position(|p| p == part) != Some(j) {
                        v.push(
                            format!("rules[{i}].key[{j}]"),
                            format!("`{part}` is repeated"),
                        );
                    }
                }
            }
            if v.check_count(
                &at("match.methods"),
                "methods",
                rule.matches.methods.len(),
                MAX_METHODS,
            ) {
                for (j, method) in rule.matches.methods.iter().enumerate() {
                    if let Err(problem) = check_method(method) {
                        v.push(format!("rules[{i}].match.methods[{j}]"), problem);
                    }
                }
            }
            if let Some(prefix) = &rule.matches.path_prefix
                && let Err(error) = PathPrefix::new(prefix.as_str())
            {
                v.push(at("match.path_prefix"), error.to_string());
            }
        }
        v.into_result()
    }

    fn version(&self) -> Option<u64> {
        self.version
    }

    fn prepare(&mut self) {
        self.compiled = Some(Arc::new(Compiled::from_rules(self)));
    }
}

/// The methods a lowercase spelling is surely a mistake for (RFC 9110 §9 and PATCH).
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Why `method` can never match a request, if it cannot.
fn check_method(method: &str) -> Result<(), String> {
    if Method::from_bytes(method.as_bytes()).is_err() {
        return Err(format!(
            "`{method}` is not a valid method (a token such as POST)"
        ));
    }
    if let Some(standard) = STANDARD_METHODS
        .iter()
        .find(|standard| standard.eq_ignore_ascii_case(method) && **standard != method)
    {
        return Err(format!(
            "`{method}` never matches: methods are case-sensitive; write `{standard}`"
        ));
    }
    Ok(())
}

fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .map(|net| match net {
            // A mapped IPv4 range in IPv6 form matches canonical (IPv4) addresses too.
            IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some() && v6.prefix_len() >= 96 => {
                let v4 = v6
                    .addr()
                    .to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                ipnet::Ipv4Net::new(v4, v6.prefix_len().saturating_sub(96))
                    .map(IpNet::V4)
                    .unwrap_or(IpNet::V6(v6))
            }
            other => other.trunc(),
        })
}

/// A validated rule set in the form the request path uses.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) client_ip: ClientIpResolver,
    pub(crate) headers: ResponseHeaders,
    /// The document's [`MissingPeer`] (a builder's setting overrides it in the guard).
    pub(crate) missing_peer: MissingPeer,
    /// The document's denial, ready to clone; `None` (never, in practice: documents are
    /// validated before they are compiled) sends the built-in one.
    pub(crate) denied: Option<FixedResponse>,
    /// One kill switch per rule of `rules` (same order), looked up once per document by the
    /// first guard that runs it: its switchboard's `ratelimit.rule.<name>`, or, without one, a
    /// standalone switch set from the rule's `killed`. Reading one per request is an atomic
    /// load; the switchboard's lock is taken once per document, never per request.
    pub(crate) switches: std::sync::OnceLock<Box<[ravelin_primitives::KillSwitch]>>,
}

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) name: String,
    pub(crate) quota: Quota,
    pub(crate) cost: u32,
    pub(crate) action: Enforcement,
    pub(crate) key: Vec<KeyPart>,
    pub(crate) methods: Vec<Method>,
    /// Compiled once here, matched against each request's normalized path.
    pub(crate) path_prefix: Option<PathPrefix>,
    /// `"name";q=100;w=60`, ready for `RateLimit-Policy`.
    pub(crate) policy_item: String,
    /// The same as a field value, for a response that only this rule applied to: cloned
    /// (a reference count) instead of built per request (issue 13).
    pub(crate) policy_value: Option<http::HeaderValue>,
    pub(crate) allowed: metrics::Counter,
    pub(crate) denied: metrics::Counter,
    pub(crate) skipped: metrics::Counter,
    /// Requests without a peer address met by this rule (only for rules keyed by `client_ip`).
    pub(crate) missing_peer: Option<metrics::Counter>,
    /// `killed` as the document wrote it (the standalone switch's state without a switchboard).
    pub(crate) killed: bool,
}

impl Compiled {
    /// The rules' kill switches (see [`Compiled::switches`]).
    pub(crate) fn switches(
        &self,
        board: Option<&ravelin_primitives::Switchboard>,
    ) -> &[ravelin_primitives::KillSwitch] {
        self.switches.get_or_init(|| {
            self.rules
                .iter()
                .map(|rule| {
                    let name = rule_switch_name(&rule.name);
                    match board {
                        Some(board) => board.switch(&name),
                        None => {
                            let switch = ravelin_primitives::KillSwitch::standalone(name);
                            if rule.killed {
                                switch.engage("rules document");
                            }
                            switch
                        }
                    }
                })
                .collect()
        })
    }

    /// Compiles a validated rule set; rules that fail validation are left out (never reached:
    /// the store only prepares documents that passed).
    pub(crate) fn from_rules(rules: &Rules) -> Self {
        let resolver = rules.client_ip.resolver();
        let compiled = rules
            .rules
            .iter()
            .take(MAX_RULES)
            .filter_map(|rule| {
                let quota = rule.quota()?;
                // An unusable match leaves the rule out rather than widening it to every request.
                let path_prefix = match &rule.matches.path_prefix {
                    Some(prefix) => Some(PathPrefix::new(prefix.as_str()).ok()?),
                    None => None,
                };
                let methods = rule
                    .matches
                    .methods
                    .iter()
                    .map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect::<Option<Vec<_>>>()?;
                let counter = |outcome: &'static str| {
                    metrics::counter!(
                        "ravelin_ratelimit_decisions_total",
                        "rule" => rule.name.clone(),
                        "action" => rule.action.as_str(),
                        "outcome" => outcome,
                    )
                };
                let policy_item = format!(
                    "\"{}\";q={};w={}",
                    rule.name,
                    quota.limit(),
                    quota.window().as_secs()
                );
                Some(CompiledRule {
                    policy_value: crate::headers::list_value(&policy_item),
                    policy_item,
                    name: rule.name.clone(),
                    quota,
                    cost: rule.cost,
                    action: rule.action,
                    key: rule.key.clone(),
                    methods,
                    path_prefix,
                    allowed: counter("allowed"),
                    denied: counter("denied"),
                    skipped: counter("skipped"),
                    missing_peer: rule.key.contains(&KeyPart::ClientIp).then(|| {
                        metrics::counter!(
                            "ravelin_ratelimit_missing_peer_total",
                            "rule" => rule.name.clone(),
                        )
                    }),
                    killed: rule.killed,
                })
            })
            .collect();
        Self {
            rules: compiled,
            client_ip: resolver,
            headers: rules.response_headers,
            missing_peer: rules.missing_peer,
            // Validated before compiling; the built-in denial if it somehow was not.
            denied: rules.denied_response.compile().ok(),
            switches: std::sync::OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml_rules(text: &str) -> Result<Rules, String> {
        let rules: Rules = toml::from_str(text).map_err(|e| e.to_string())?;
        rules.compile().map_err(|v| v.to_string())
    }

    #[test]
    fn parses_the_documented_example() {
        let rules = toml_rules(
            r#"
            version = 7
            [client_ip]
            trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]
            ipv6_prefix = 56
            [[rules]]
            name = "per-ip"
            limit = 100
            window = "1m"
            key = ["client_ip"]
            [[rules]]
            name = "login"
            limit = 5
            window = "1m"
            key = ["client_ip", "header:x-api-key"]
            match = { methods = ["POST"], path_prefix = "/login" }
            action = "shadow"
            "#,
        )
        .unwrap();
        assert_eq!(rules.version, Some(7));
        let compiled = rules.compiled().unwrap();
        assert_eq!(compiled.rules.len(), 2);
        assert_eq!(compiled.rules[0].policy_item, r#""per-ip";q=100;w=60"#);
        assert_eq!(compiled.rules[1].action, Enforcement::Shadow);
        assert_eq!(compiled.rules[1].methods, vec![Method::POST]);
    }

    #[test]
    fn json_works_too() {
        let rules: Rules = serde_json::from_str(
            r#"{"rules":[{"name":"a","limit":10,"window":"10s","key":["method","path"]}]}"#,
        )
        .unwrap();
        assert!(rules.compile().is_ok());
    }

    #[test]
    fn rejects_broken_rules_with_paths() {
        let cases = [
            (
                r#"[[rules]]
                name = "a b"
                limit = 1
                window = "1s""#,
                "rules[0].name",
            ),
            (
                r#"[[rules]]
                name = "a"
                limit = 0
                window = "1s""#,
                "rules[0].limit",
            ),
            (
                r#"[[rules]]
                name = "a"
                limit = 1
                window = "500ms""#,
                "rules[0].window",
            ),
            (
                r#"[[rules]]
                name = "a"
                limit = 1
                window = "1500ms""#,
                "rules[0].window",
            ),
            (
                r#"[[rules]]
                name = "a"
                limit = 5
                window = "1s"
                cost = 6"#,
                "rules[0].cost",
            ),
            (
                r#"[[rules]]
                name = "a"
                limit = 5
                window = "1s"
                [[rules]]
                name = "a"
                limit = 5
                window = "1s""#,
                "rules[1].name",
            ),
            (
                r#"[client_ip]
                trusted_proxies = ["10.0.0.0/33"]"#,
                "client_ip.trusted_proxies[0]",
            ),
            (
                r#"[client_ip]
                ipv6_prefix = 0"#,
                "client_ip.ipv6_prefix",
            ),
            (
                r#"[[rules]]
                name = "a"
                limit = 5
                window = "1s"
                match = { path_prefix = "api" }"#,
                "rules[0].match.path_prefix",
            ),
            (
                r#"[[rules]]
                name = "a"
                limit = 5
                window = "1s"
                key = ["client_ip", "client_ip"]"#,
                "rules[0].key[1]",
            ),
        ];
        for (text, path) in cases {
            let err = toml_rules(text).unwrap_err();
            assert!(err.contains(path), "{path} not in: {err}");
        }
        // Prefixes are refused for what ravelin-http's PathPrefix refuses, naming the field.
        let rule = |matches: &str| {
            toml_rules(&format!(
                "[[rules]]\nname = \"a\"\nlimit = 5\nwindow = \"1s\"\nmatch = {matches}"
            ))
        };
        let err = rule(r#"{ path_prefix = "login" }"#).unwrap_err();
        assert!(
            err.contains(r#"rules[0].match.path_prefix: "login" must start with /"#),
            "{err}"
        );
        let err = rule(r#"{ path_prefix = "/login?next=/" }"#).unwrap_err();
        assert!(err.contains("rules[0].match.path_prefix"), "{err}");
        let err = rule(&format!(r#"{{ path_prefix = "/{}" }}"#, "a".repeat(1100))).unwrap_err();
        assert!(err.contains("rules[0].match.path_prefix"), "{err}");
        // Methods are case-sensitive: a lowercase standard method would never match.
        let err = rule(r#"{ methods = ["GET", "post"] }"#).unwrap_err();
        assert!(
            err.contains("rules[0].match.methods[1]: `post` never matches: methods are case-sensitive; write `POST`"),
            "{err}"
        );
        assert!(
            rule(r#"{ methods = ["Delete"] }"#)
                .unwrap_err()
                .contains("write `DELETE`")
        );
        let err = rule(r#"{ methods = ["PO ST"] }"#).unwrap_err();
        assert!(
            err.contains("rules[0].match.methods[0]: `PO ST` is not a valid method"),
            "{err}"
        );
        assert!(rule(r#"{ methods = [""] }"#).is_err());
        // An extension method is a token like any other, and a prefix may be the root.
        assert!(rule(r#"{ methods = ["PURGE"], path_prefix = "/" }"#).is_ok());
        // Parse-level errors name the field.
        assert!(
            toml_rules("[[rules]]\nname = \"a\"\nlimit = 1\nwindow = \"1s\"\nkey = [\"cookie\"]")
                .unwrap_err()
                .contains("unknown key part")
        );
        assert!(toml_rules("[[rules]]\nname = \"a\"\nlimt = 1\nwindow = \"1s\"").is_err());
    }

    #[test]
    fn bounds_rule_count() {
        let mut rules = Rules::new();
        for i in 0..=MAX_RULES {
            rules = rules.rule(Rule::new(format!("r{i}"), 1, Duration::from_secs(1)));
        }
        let err = rules.compile().unwrap_err().to_string();
        assert!(err.contains("33 rules exceeds limit 32"), "{err}");
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.0/8"),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("10.1.2.3/8"),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("192.0.2.1"),
            Some("192.0.2.1/32".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104"),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(parse_cidr("nope"), None);
    }
}
