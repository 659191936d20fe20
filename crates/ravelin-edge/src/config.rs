//! The edge-proxy configuration file (TOML), validated through `ravelin_config::Validate`.
//!
//! Every table denies unknown keys, so a typo is an error that names the key, not a setting
//! silently ignored. The modules' sections are the module crates' own config types — `[cache]`
//! *is* [`CacheConfig`], `[botscore]` *is* [`BotScoreConfig`], every `[<module>.guard]` *is*
//! [`GuardConfig`] — so their keys, defaults and checks are written once, in those crates. See
//! `docs/configuration.md` for the reference.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use ravelin_botscore::BotScoreConfig;
pub use ravelin_cache::CacheConfig;
use ravelin_config::{Validate, Violations};
pub use ravelin_failsafe::{CircuitConfig, FailureMode, GuardConfig};
pub use ravelin_proxy::{DnsConfig, HealthConfig, OverloadConfig, RetryConfig};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Optional generation number; when present, an older one is refused on reload.
    #[serde(default)]
    pub version: Option<u64>,
    /// The proxy listener.
    #[serde(default)]
    pub server: ServerSection,
    /// The admin listener.
    #[serde(default)]
    pub admin: AdminSection,
    /// `[demo]`: the embedded demo origin, served only when asked for.
    #[serde(default)]
    pub demo: DemoSection,
    /// `[lists]`: how the document's lists are checked against the one in force.
    #[serde(default)]
    pub lists: ListsSection,
    /// Upstream origins; none is refused unless `[demo] enabled = true`.
    #[serde(default)]
    pub upstreams: Vec<UpstreamSection>,
    /// Host/path routes to upstreams; none means: everything to the first upstream.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// `[modules.<name>]`: which modules are in the stack, and their kill switches.
    #[serde(default)]
    pub modules: ModulesSection,
    /// The rate limiter.
    #[serde(default)]
    pub ratelimit: ravelin_ratelimit::RateLimitConfig,
    /// The bot scorer: ravelin-botscore's own configuration.
    #[serde(default)]
    pub botscore: BotScoreConfig,
    /// The HTTP cache: ravelin-cache's own configuration.
    #[serde(default)]
    pub cache: CacheConfig,
    /// How config files are watched.
    #[serde(default)]
    pub reload: ReloadSection,
    /// The ingress stage: path normalization, trusted proxies.
    #[serde(default)]
    pub ingress: IngressSection,
    /// `[overload]`: load shedding, ravelin-proxy's own [`OverloadConfig`] (requests in
    /// flight, connections past `server.max_connections`, the `Retry-After` of both answers).
    /// Applied at start, as `[server]` is.
    #[serde(default)]
    pub overload: OverloadConfig,
    /// `[rollout]`: how new documents are staged — the sample of recent requests the
    /// pre-activation checks score, those checks' bounds, and the bot feature file's canary.
    #[serde(default)]
    pub rollout: RolloutSection,
    /// `[tls]`: a TLS listener with its certificates; absent, the edge speaks plaintext only.
    /// Applied at start, as `[server]` is; the certificate files are followed and reloaded.
    #[serde(default)]
    pub tls: Option<TlsSection>,
}

/// `[tls]`: TLS termination (issue 14). See `docs/operations.md` → *Certificates*.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Address of the TLS listener (the same limits as `[server]` apply to it).
    pub listen: SocketAddr,
    /// What `[server] listen` does beside it: `serve` (plaintext too, the default),
    /// `redirect` (answers `308` to the same URL over HTTPS), or `off` (not bound).
    #[serde(default)]
    pub plaintext: PlaintextMode,
    /// The certificates, chosen by SNI (exact name, then wildcard); the first is the default
    /// for clients that send no name or one no certificate covers. 1 to [`MAX_CERTIFICATES`].
    pub certificates: Vec<ravelin_tls::certs::CertificateConfig>,
    /// The whole handshake must finish within this (1 ms to 60 s).
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; one past it is closed (1 to 65,536).
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Read each ClientHello and compute the client's JA4 fingerprint (for guards and the
    /// origin header).
    #[serde(default = "yes")]
    pub fingerprint: bool,
    /// The request header the JA4 is forwarded to the origin in (a client's own is always
    /// removed); empty: not forwarded.
    #[serde(default = "default_ja4_header")]
    pub ja4_header: String,
}

/// `[rollout]`: staged activation of new documents (issue 15). See `docs/operations.md` →
/// *Rollouts*.
///
/// Every new main config and bot feature file is first checked against a bounded sample of
/// recent request heads beside the document in force (the *pre-activation check*); a bot
/// feature file that passes then serves a share of clients as a *canary* and is promoted or
/// rolled back on its own. The main config does the same when `[rollout.config]` is present:
/// its canary clients run on a second stack built from the candidate.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutSection {
    /// Request heads kept for the checks (default 2,000; at most 10,000). Applied at start.
    pub sample_capacity: usize,
    /// At most this many request heads are sampled a second (default 20, at most 10,000);
    /// `0`: none, and the checks pass for want of evidence. By time, not one in N requests, so
    /// the sample's cost does not grow with traffic.
    pub samples_per_second: u32,
    /// Whether a new bot feature file is checked against the sample (default `true`).
    pub bot_check: bool,
    /// `[rollout.bot_bounds]`: how far a new bot model may move the sample
    /// (ravelin-botscore's `EffectBounds`).
    pub bot_bounds: ravelin_botscore::effect::EffectBounds,
    /// `[rollout.bot_features]`: the bot feature file's canary (ravelin-config's
    /// `RolloutPolicy`; `canary = false` installs a file that passed its checks at once).
    pub bot_features: ravelin_config::RolloutPolicy,
    /// `[rollout.config]`: the main config's canary (a `RolloutPolicy`). Absent (the default):
    /// a config that passes its checks is applied for everyone at once. Present: its clients'
    /// share runs on a second stack built from the candidate — its routes, upstreams and modules
    /// (state shared with the running ones where their settings are unchanged) — until it is
    /// promoted or rolled back. Read at start and on every applied config.
    pub config: Option<ravelin_config::RolloutPolicy>,
    /// Whether new rate-limit rules are checked against the sample (default `true`).
    pub ratelimit_check: bool,
    /// `[rollout.ratelimit_bounds]`: how many sampled requests new rate-limit rules may deny
    /// (ravelin-ratelimit's `DenyBounds`).
    pub ratelimit_bounds: ravelin_ratelimit::effect::DenyBounds,
}

impl Default for RolloutSection {
    fn default() -> Self {
        Self {
            sample_capacity: crate::rollout::DEFAULT_SAMPLE_CAPACITY,
            samples_per_second: crate::rollout::DEFAULT_SAMPLES_PER_SECOND,
            bot_check: true,
            bot_bounds: ravelin_botscore::effect::EffectBounds::default(),
            bot_features: ravelin_config::RolloutPolicy::default(),
            config: None,
            ratelimit_check: true,
            ratelimit_bounds: ravelin_ratelimit::effect::DenyBounds::default(),
        }
    }
}

impl RolloutSection {
    fn check(&self, v: &mut Violations) {
        if self.sample_capacity > ravelin_botscore::effect::MAX_SAMPLE_CAPACITY {
            v.push(
                "rollout.sample_capacity",
                format!(
                    "{} is more than {}",
                    self.sample_capacity,
                    ravelin_botscore::effect::MAX_SAMPLE_CAPACITY
                ),
            );
        }
        if self.samples_per_second > crate::rollout::MAX_SAMPLES_PER_SECOND {
            v.push(
                "rollout.samples_per_second",
                format!(
                    "{} is more than {}",
                    self.samples_per_second,
                    crate::rollout::MAX_SAMPLES_PER_SECOND
                ),
            );
        }
        if let Err(inner) = Validate::validate(&self.bot_features) {
            v.merge_under("rollout.bot_features", inner);
        }
        if let Some(policy) = &self.config
            && let Err(inner) = Validate::validate(policy)
        {
            v.merge_under("rollout.config", inner);
        }
        if let Err(inner) = Validate::validate(&self.bot_bounds) {
            v.merge_under("rollout.bot_bounds", inner);
        }
        if let Err(inner) = Validate::validate(&self.ratelimit_bounds) {
            v.merge_under("rollout.ratelimit_bounds", inner);
        }
    }
}

/// `[demo]`: the embedded demo origin (issue 15).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DemoSection {
    /// Serve the embedded demo origin when `[[upstreams]]` names none. Off by default: a
    /// document naming no upstream is refused unless it asks for the demo, so a file cut short
    /// before `[[upstreams]]`, a comment-only file or `upstreams = []` never sends production
    /// traffic to it. Ignored when upstreams are named.
    #[serde(default)]
    pub enabled: bool,
}

/// `[lists]`: the checks of the document's lists against the one in force (issue 15).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListsSection {
    /// On reload, let a list that had entries in the document in force become empty (or, for
    /// `[[ratelimit.rules]]`, vanish back to its default): `[[upstreams]]`, `[[routes]]`,
    /// `[[ratelimit.rules]]`, `[[botscore.routes]]`. Off by default: such a document is refused
    /// and the one in force stays (see [`EdgeConfig::check_against`]).
    #[serde(default)]
    pub allow_empty: bool,
}

/// The most `[[tls.certificates]]` entries.
pub const MAX_CERTIFICATES: usize = 64;

/// `[tls] plaintext`: what the plaintext listener does when TLS is on.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlaintextMode {
    /// Serve plaintext HTTP as well.
    #[default]
    Serve,
    /// Answer every plaintext request with `308` to the same URL over HTTPS.
    Redirect,
    /// Do not bind `[server] listen` at all.
    Off,
}

impl TlsSection {
    /// The acceptor bounds this section asks for.
    pub fn acceptor_config(&self) -> ravelin_tls::acceptor::AcceptorConfig {
        ravelin_tls::acceptor::AcceptorConfig {
            handshake_timeout: self.handshake_timeout,
            max_handshakes: self.max_handshakes,
            fingerprint: self.fingerprint,
        }
    }

    /// The JA4 header, when it is forwarded (`None` for `""`).
    ///
    /// # Errors
    /// When `ja4_header` is not a header name, or names a field the proxy manages itself
    /// (a hop-by-hop field, `Host`).
    pub fn ja4_header_name(&self) -> Result<Option<http::HeaderName>, String> {
        if self.ja4_header.is_empty() {
            return Ok(None);
        }
        let name = http::HeaderName::from_bytes(self.ja4_header.as_bytes())
            .map_err(|_| format!("{:?} is not a header name", self.ja4_header))?;
        if ravelin_http::is_hop_by_hop(&name) || name == http::header::HOST {
            return Err(format!(
                "{:?} is a field the proxy manages itself",
                self.ja4_header
            ));
        }
        Ok(Some(name))
    }

    fn check(&self, server: &ServerSection, admin: &AdminSection, v: &mut Violations) {
        if self.listen == server.listen
            && self.listen.port() != 0
            && self.plaintext != PlaintextMode::Off
        {
            v.push("tls.listen", "must differ from server.listen");
        }
        if self.listen == admin.listen && self.listen.port() != 0 {
            v.push("tls.listen", "must differ from admin.listen");
        }
        if self.certificates.is_empty() {
            v.push(
                "tls.certificates",
                "at least one [[tls.certificates]] entry is needed",
            );
        }
        if v.check_count(
            "tls.certificates",
            "certificates",
            self.certificates.len(),
            MAX_CERTIFICATES,
        ) {
            for (i, certificate) in self.certificates.iter().enumerate() {
                if let Err(violations) = certificate.validate() {
                    v.merge_under(&format!("tls.certificates[{i}]"), violations);
                }
            }
        }
        if let Err(violations) = self.acceptor_config().violations() {
            v.merge_under("tls", violations);
        }
        if let Err(reason) = self.ja4_header_name() {
            v.push("tls.ja4_header", reason);
        }
    }
}

/// `[modules]`: one `[modules.<name>]` table per module that is not at its defaults (on, not
/// killed). The names are the modules' (`ratelimit`, `botscore`, `cache`); any other is
/// refused by validation.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ModulesSection(BTreeMap<String, ModuleSwitch>);

impl ModulesSection {
    /// The settings of module `name` (on and not killed when the file has no table for it).
    pub fn get(&self, name: &str) -> ModuleSwitch {
        self.0.get(name).copied().unwrap_or_default()
    }

    /// Sets the settings of module `name`.
    pub fn set(&mut self, name: impl Into<String>, settings: ModuleSwitch) {
        self.0.insert(name.into(), settings);
    }

    /// The module names the file has a table for.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// `[modules.<name>]`: whether module `<name>` runs, and its kill switch.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModuleSwitch {
    /// Put the module in the stack at all (`false`: it is not built and not in `/status`; its
    /// section is still checked, so turning it back on cannot fail).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The kill switch as set by this file: applied at startup and whenever this value changes,
    /// so an operator's `POST /modules/<name>/kill` survives unrelated reloads.
    #[serde(default)]
    pub killed: bool,
}

impl Default for ModuleSwitch {
    fn default() -> Self {
        Self {
            enabled: true,
            killed: false,
        }
    }
}

/// `[ingress]`: how requests are admitted (see docs/security.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngressSection {
    /// Fold ASCII case in the path policies match on.
    #[serde(default = "yes")]
    pub fold_case: bool,
    /// CIDRs of proxies in front of the edge whose forwarding headers (`Forwarded`,
    /// `X-Forwarded-*`, `X-Real-IP`) and `x-request-id` are kept; from anyone else they are
    /// removed. Also the rate limiter's trusted proxies when `[ratelimit.client_ip]` names none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl Default for IngressSection {
    fn default() -> Self {
        Self {
            fold_case: true,
            trusted_proxies: Vec::new(),
        }
    }
}

impl IngressSection {
    /// The trusted networks.
    ///
    /// # Errors
    /// The first entry that is not a network, named by its field path.
    pub fn trusted_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, text)| {
                parse_network(text).map_err(|e| format!("ingress.trusted_proxies[{i}]: {e}"))
            })
            .collect()
    }
}

/// A CIDR, or a single address as its /32 or /128.
fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP network (write 10.0.0.0/8 or 2001:db8::/32)"))
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Open connections at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections per client IP (0 = no limit).
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Header fields per request.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Bytes of request head.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time for a client to send its request head.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// How long shutdown drains in-flight requests.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Time from accept until the first request head is complete (silent sockets are closed).
    #[serde(default = "default_request_head_timeout", with = "humantime_serde")]
    pub request_head_timeout: Duration,
    /// How long a connection with no request in flight stays open (HTTP/1.1 and HTTP/2).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long the socket may take no byte while a response is being written (a client that
    /// stopped reading) before the connection is dropped (nginx's `send_timeout`).
    #[serde(default = "default_send_timeout", with = "humantime_serde")]
    pub send_timeout: Duration,
    /// HTTP/2 keep-alive ping interval.
    #[serde(default = "default_h2_ping", with = "humantime_serde")]
    pub http2_keep_alive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    #[serde(default = "default_h2_ping", with = "humantime_serde")]
    pub http2_keep_alive_timeout: Duration,
    /// IPv4 clients share a per-IP connection budget by this prefix length.
    #[serde(default = "default_ipv4_prefix_len")]
    pub per_ip_ipv4_prefix_len: u8,
    /// IPv6 clients share a per-IP connection budget by this prefix length (one customer
    /// usually holds a /64).
    #[serde(default = "default_ipv6_prefix_len")]
    pub per_ip_ipv6_prefix_len: u8,
    /// How connections are scheduled: `per_core` (default: the edge's measured winner, issue 13)
    /// or `multi_thread`. (`ravelin_proxy::ServerConfig`'s own default stays `multi_thread`: a
    /// library serves on its caller's runtime unless asked to start threads.)
    #[serde(default = "default_runtime")]
    pub runtime: ravelin_proxy::RuntimeModel,
    /// Worker threads for `runtime = "per_core"` (0 = the available parallelism).
    #[serde(default)]
    pub workers: usize,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin listener (keep it on loopback unless a firewall guards it).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Allows a non-loopback admin address; off by default so a typo cannot expose it.
    #[serde(default)]
    pub allow_remote: bool,
    /// The bearer token for mutating endpoints (prefer `token_env`).
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding the token.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Host names the admin API answers to besides IP literals and `localhost` (any other
    /// `Host` gets 421: DNS-rebinding protection).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// `[[upstreams]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Name routes refer to.
    pub name: String,
    /// `http://host[:port][/base]` or `https://host[:port][/base]`.
    pub url: String,
    /// Speak HTTP/2: with prior knowledge over `http://`, by ALPN (`h2`) over `https://`.
    #[serde(default)]
    pub http2: bool,
    /// Send the client's Host instead of the upstream's authority.
    #[serde(default)]
    pub preserve_host: bool,
    /// Connect timeout.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Request sent → response head.
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Idle pooled connections kept.
    #[serde(default = "default_max_idle")]
    pub max_idle_connections: usize,
    /// The longest wait for the next piece of a response body (nginx's `proxy_read_timeout`):
    /// a stalled body is then cut, freeing the client and every coalesced follower.
    #[serde(default = "default_body_idle_timeout", with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// `https://` only: trust only the CA certificates in this PEM file instead of the
    /// public roots (read when the upstream is built).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `https://` only: the client certificate chain (PEM) presented to the upstream (mTLS).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// `https://` only: the private key (PEM) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// `https://` only: the name the upstream's certificate must carry (and the SNI sent),
    /// instead of the URL's host.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// An upgraded (WebSocket) connection silent this long either way is closed.
    #[serde(default = "default_upgrade_idle_timeout", with = "humantime_serde")]
    pub upgrade_idle_timeout: Duration,
    /// Upgraded (WebSocket) connections open at once to this upstream; past it, 503. 0 turns
    /// upgrade pass-through off for it.
    #[serde(default = "default_max_upgraded_connections")]
    pub max_upgraded_connections: usize,
    /// `[upstreams.health]`: the upstream's circuit, ravelin-proxy's own [`HealthConfig`].
    #[serde(default)]
    pub health: HealthConfig,
    /// `[upstreams.retry]`: retries of failed connection attempts, ravelin-proxy's own
    /// [`RetryConfig`].
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[upstreams.dns]`: how a host name in `url` is kept resolved, ravelin-proxy's own
    /// [`DnsConfig`].
    #[serde(default)]
    pub dns: DnsConfig,
}

fn default_body_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_upgrade_idle_timeout() -> Duration {
    ravelin_proxy::UpstreamBuilder::DEFAULT_UPGRADE_IDLE_TIMEOUT
}

fn default_max_upgraded_connections() -> usize {
    ravelin_proxy::UpstreamBuilder::DEFAULT_MAX_UPGRADED_CONNECTIONS
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Name for logs (default: the path prefix).
    #[serde(default)]
    pub name: Option<String>,
    /// Only requests for this host (without port).
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, segment-aligned (default `/`).
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Upstream name.
    pub upstream: String,
    /// Overrides the upstream's response timeout.
    #[serde(default, with = "humantime_serde")]
    pub response_timeout: Option<Duration>,
}

/// `[reload]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReloadSection {
    /// How often the config file is checked for changes (`0s` = only SIGHUP and the admin API).
    #[serde(default = "default_watch", with = "humantime_serde")]
    pub watch_interval: Duration,
    /// Where the last good config is persisted (`<state_dir>/edge-proxy.lkg`), so that a
    /// restart whose file is missing or rejected starts from it, degraded, instead of refusing
    /// to start; an absolute path. None (the default): nothing is persisted. Applied at start
    /// (read from the file even when the rest of it is rejected: see [`ReloadSection::peek`]).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// A changed config file more than this many times the size of the one in force (once that
    /// is at least 1 KiB) is refused before it is parsed; `0` = no bound. 1 to 1,000,000, or 0;
    /// default 4. Applied at start.
    #[serde(default = "default_max_growth")]
    pub max_growth: f64,
}

// === impl ReloadSection ===

impl ReloadSection {
    /// The `[reload]` settings the config store is built with, read from the config file's
    /// text before — and whether or not — the whole document passes, so that a restart with a
    /// rejected file still finds the persisted last good config: the `[reload]` table of the
    /// file parsed as TOML (other tables' keys and values are not looked at), or, when the file
    /// is not TOML at all (cut short, half-written), its `[reload]` table's lines as far as
    /// they go. A value out of range, or missing, is the default's; the document's own check
    /// then refuses it as usual.
    pub fn peek(text: &[u8]) -> Self {
        #[derive(Deserialize, Default)]
        struct Document {
            #[serde(default)]
            reload: Lenient,
        }
        #[derive(Deserialize, Default)]
        struct Lenient {
            #[serde(default)]
            state_dir: Option<toml_value::Loose>,
            #[serde(default)]
            max_growth: Option<toml_value::Loose>,
        }
        let lenient = match ravelin_config::Format::Toml.parse::<Document>(text) {
            Ok(document) => document.reload,
            Err(_) => {
                // Line by line through the `[reload]` table: each `key = value` line is a TOML
                // document of its own.
                let mut lenient = Lenient::default();
                let mut in_reload = false;
                for line in String::from_utf8_lossy(text).lines() {
                    let line = line.trim();
                    if line.starts_with('[') {
                        in_reload = line.split('#').next().map(str::trim) == Some("[reload]");
                    } else if in_reload
                        && let Ok(one) =
                            ravelin_config::Format::Toml.parse::<Lenient>(line.as_bytes())
                    {
                        lenient.state_dir = one.state_dir.or(lenient.state_dir);
                        lenient.max_growth = one.max_growth.or(lenient.max_growth);
                    }
                }
                lenient
            }
        };
        let mut section = Self::default();
        if let Some(toml_value::Loose::Text(dir)) = lenient.state_dir {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                section.state_dir = Some(dir);
            }
        }
        match lenient.max_growth {
            Some(toml_value::Loose::Float(factor)) if max_growth_ok(factor) => {
                section.max_growth = factor;
            }
            Some(toml_value::Loose::Integer(factor)) if max_growth_ok(factor as f64) => {
                section.max_growth = factor as f64;
            }
            _ => {}
        }
        section
    }

    /// [`peek`](Self::peek) at the file at `path` (at most `max_bytes` of it); the defaults when
    /// it cannot be read.
    pub fn peek_file(path: &std::path::Path, max_bytes: u64) -> Self {
        use std::io::Read as _;
        let mut text = Vec::new();
        match std::fs::File::open(path) {
            Ok(file) => match file.take(max_bytes).read_to_end(&mut text) {
                Ok(_) => Self::peek(&text),
                Err(_) => Self::default(),
            },
            Err(_) => Self::default(),
        }
    }

    /// This section with the command line's state directory, when it names one (it wins over
    /// the file's).
    #[must_use]
    pub fn overridden(mut self, overrides: &Overrides) -> Self {
        if let Some(dir) = &overrides.state_dir {
            if self.state_dir.as_ref().is_some_and(|file| file != dir) {
                tracing::warn!(
                    file = ?self.state_dir,
                    flag = %dir.display(),
                    "[reload] state_dir differs from --state-dir: the flag's is used"
                );
            }
            self.state_dir = Some(dir.clone());
        }
        self
    }

    /// `builder` with this section's store settings: the growth bound and the state directory.
    pub fn configure<T: ravelin_config::Document>(
        &self,
        builder: ravelin_config::StoreBuilder<T>,
    ) -> ravelin_config::StoreBuilder<T> {
        let factor = (self.max_growth > 0.0).then_some(self.max_growth);
        let builder = builder.max_growth(factor);
        match &self.state_dir {
            Some(dir) => builder.state_dir(dir),
            None => builder,
        }
    }
}

/// Whether `factor` is a valid `[reload] max_growth`: 0 (off), or 1 to 1,000,000.
fn max_growth_ok(factor: f64) -> bool {
    factor == 0.0 || (1.0..=1_000_000.0).contains(&factor)
}

/// The few TOML value shapes [`ReloadSection::peek`] reads, without failing on the others.
mod toml_value {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    pub(super) enum Loose {
        Integer(i64),
        Float(f64),
        Text(String),
        #[allow(dead_code)] // read only to be ignored
        Other(serde::de::IgnoredAny),
    }
}

// === defaults ===

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_handshakes() -> usize {
    1024
}
fn default_ja4_header() -> String {
    ravelin_proxy::tls::DEFAULT_JA4_HEADER.to_owned()
}
fn default_runtime() -> ravelin_proxy::RuntimeModel {
    ravelin_proxy::RuntimeModel::PerCore
}
fn yes() -> bool {
    true
}
fn default_prefix() -> String {
    "/".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
fn default_token_env() -> String {
    "RAVELIN_ADMIN_TOKEN".into()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_ip() -> usize {
    256
}
fn default_max_headers() -> usize {
    100
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_concurrent_streams() -> u32 {
    100
}
fn default_request_head_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_send_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_h2_ping() -> Duration {
    Duration::from_secs(20)
}
fn default_ipv4_prefix_len() -> u8 {
    32
}
fn default_ipv6_prefix_len() -> u8 {
    64
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_idle() -> usize {
    64
}
fn default_watch() -> Duration {
    Duration::from_secs(1)
}
fn default_max_growth() -> f64 {
    ravelin_config::StoreBuilder::<EdgeConfig>::DEFAULT_MAX_GROWTH
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            max_headers: default_max_headers(),
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout: default_header_read_timeout(),
            max_concurrent_streams: default_max_concurrent_streams(),
            shutdown_timeout: default_shutdown_timeout(),
            request_head_timeout: default_request_head_timeout(),
            idle_timeout: default_idle_timeout(),
            send_timeout: default_send_timeout(),
            http2_keep_alive_interval: default_h2_ping(),
            http2_keep_alive_timeout: default_h2_ping(),
            per_ip_ipv4_prefix_len: default_ipv4_prefix_len(),
            per_ip_ipv6_prefix_len: default_ipv6_prefix_len(),
            runtime: default_runtime(),
            workers: 0,
        }
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            allow_remote: false,
            token: None,
            token_env: default_token_env(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl Default for ReloadSection {
    fn default() -> Self {
        Self {
            watch_interval: default_watch(),
            state_dir: None,
            max_growth: default_max_growth(),
        }
    }
}

/// The longest timeout or interval any setting accepts: past an hour a timer is a mistake.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// `value` must be greater than zero and at most `max`.
pub(crate) fn check_duration(v: &mut Violations, path: &str, value: Duration, max: Duration) {
    if value.is_zero() {
        v.push(path, "must be greater than zero");
    } else if value > max {
        v.push(
            path,
            format!(
                "{} is longer than the limit of {}",
                humantime_serde::re::humantime::format_duration(value),
                humantime_serde::re::humantime::format_duration(max)
            ),
        );
    }
}

/// A refusal of `ServerConfig::check` under the key it is about: `[server]`'s, or
/// `[overload]`'s for the two settings the server reads from there.
pub(crate) fn server_violation(error: ravelin_proxy::ServerError) -> (String, String) {
    match error {
        ravelin_proxy::ServerError::Config { field, reason } => {
            let section = match field {
                "overflow_connections" | "retry_after" => "overload",
                _ => "server",
            };
            (format!("{section}.{field}"), reason)
        }
        other => ("server".to_owned(), other.to_string()),
    }
}

/// The upstream builder with every setting of `section` (the build path and validation use
/// the same one).
pub(crate) fn upstream_builder(section: &UpstreamSection) -> ravelin_proxy::UpstreamBuilder {
    let builder = ravelin_proxy::Upstream::builder(&section.name, &section.url)
        .http2(section.http2)
        .preserve_host(section.preserve_host)
        .connect_timeout(section.connect_timeout)
        .response_timeout(section.response_timeout)
        .max_idle_per_host(section.max_idle_connections)
        .body_idle_timeout(section.body_idle_timeout)
        .upgrade_idle_timeout(section.upgrade_idle_timeout)
        .max_upgraded_connections(section.max_upgraded_connections)
        .health(section.health.clone())
        .retry(section.retry.clone())
        .dns(section.dns.clone());
    let builder = match &section.ca_file {
        Some(path) => builder.ca_file(path),
        None => builder,
    };
    let builder = match &section.client_cert_file {
        Some(path) => builder.client_cert_file(path),
        None => builder,
    };
    let builder = match &section.client_key_file {
        Some(path) => builder.client_key_file(path),
        None => builder,
    };
    match &section.tls_server_name {
        Some(name) => builder.tls_server_name(name),
        None => builder,
    }
}

/// A refusal of the upstream builder under the `[[upstreams]]` keys it is about (`path` is
/// `upstreams[i]`): the builder's `max_idle_per_host` is the file's `max_idle_connections`, and
/// its health, retry and DNS violations are `upstreams[i].health.…` and so on.
pub(crate) fn upstream_violations(path: &str, error: ravelin_proxy::UpstreamError) -> Violations {
    use ravelin_proxy::UpstreamError;
    let key = |field: &str| match field {
        "max_idle_per_host" => "max_idle_connections".to_owned(),
        other => other.to_owned(),
    };
    let mut v = Violations::new();
    match error {
        UpstreamError::InvalidUrl { url, reason, .. } => {
            v.push(format!("{path}.url"), format!("{url:?}: {reason}"));
        }
        UpstreamError::ZeroTimeout { field, .. } => {
            v.push(
                format!("{path}.{}", key(field)),
                "must be greater than zero",
            );
        }
        UpstreamError::TooLarge {
            field,
            limit,
            value,
            ..
        } => {
            v.push(
                format!("{path}.{}", key(field)),
                format!("must be at most {limit}, got {value}"),
            );
        }
        UpstreamError::Policy { violations, .. } => v.merge_under(path, violations),
        // The field is the file's key (`ca_file`, `client_key_file`, `tls_server_name`, …).
        UpstreamError::Tls { field, reason, .. } => v.push(format!("{path}.{field}"), reason),
    }
    v
}

/// A route host: a DNS name or IP literal without port; a trailing dot is allowed and ignored.
/// Validation reports it; building the routes refuses it (a route that could never match).
pub(crate) fn route_host(host: &str) -> Result<(), String> {
    let bare = host.strip_suffix('.').unwrap_or(host);
    let literal = bare
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
    if bare.is_empty() {
        Err(format!("{host:?} is not a host name"))
    } else if !literal && bare.contains(':') {
        Err(format!(
            "{host:?} has a port; route hosts match the host without its port"
        ))
    } else if !literal
        && !bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        Err(format!("{host:?} is not a host name"))
    } else {
        Ok(())
    }
}

/// Limits on list lengths, so a generated config cannot grow the proxy without bound.
pub const MAX_UPSTREAMS: usize = 64;
/// See [`MAX_UPSTREAMS`].
pub const MAX_ROUTES: usize = 1024;

impl EdgeConfig {
    /// The checks of a document against the one in force (`previous`), which a document alone
    /// cannot answer: a list that had entries and has none now — `[[upstreams]]`,
    /// `[[routes]]`, `[[ratelimit.rules]]` (emptied, or gone so that the default per-ip rule
    /// would replace them), `[[botscore.routes]]` — is refused unless the new document says
    /// `[lists] allow_empty = true`. An empty list from a generator or a file cut short must never read
    /// as "allow all" or "send everything to the first upstream".
    ///
    /// # Errors
    /// Every list that would empty, named by its key, with what it held.
    pub fn check_against(&self, previous: &EdgeConfig) -> Result<(), Violations> {
        let mut v = Violations::new();
        if self.lists.allow_empty {
            return Ok(());
        }
        let hint = "set [lists] allow_empty = true in the new document if this is intended";
        let mut emptied = |key: &str, before: usize, now: usize, what: &str| {
            if before > 0 && now == 0 {
                v.push(
                    key,
                    format!("the document in force has {before} {what} and this one has none; refused, the running config stays ({hint})"),
                );
            }
        };
        emptied(
            "upstreams",
            previous.upstreams.len(),
            self.upstreams.len(),
            "upstreams",
        );
        emptied("routes", previous.routes.len(), self.routes.len(), "routes");
        emptied(
            "ratelimit.rules",
            previous.ratelimit.rules.len(),
            self.ratelimit.rules.len(),
            "rate-limit rules",
        );
        emptied(
            "botscore.routes",
            previous.botscore.routes.len(),
            self.botscore.routes.len(),
            "bot routes",
        );
        let old = &previous.ratelimit;
        let new = &self.ratelimit;
        if old.rules_written() && !old.rules.is_empty() && !new.rules_written() {
            v.push(
                "ratelimit.rules",
                format!(
                    "the document in force writes {} rate-limit rules and this one none: [[ratelimit.rules]] is gone (a file cut short?), so the default per-ip rule would replace them; refused, the running config stays (write the rules, or {hint})",
                    old.rules.len()
                ),
            );
        }
        v.into_result()
    }
}

impl Validate for EdgeConfig {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        // A document with no settings (empty, or comments only: TOML parses it to every
        // default) is never a configuration: refused outright, so a file truncated to nothing
        // or a generator's empty output leaves the running config in force.
        if *self == EdgeConfig::default() {
            v.push(
                "",
                "the document has no settings (empty, comments only, or only empty lists); refused — a config names its [[upstreams]] (or sets [demo] enabled = true)",
            );
            return v.into_result();
        }
        if self.upstreams.is_empty() && !self.demo.enabled {
            v.push(
                "upstreams",
                "no [[upstreams]]: name the origin(s) to forward to, or set [demo] enabled = true to serve the embedded demo origin (never implied: a file cut short before [[upstreams]] must not send traffic to the demo)",
            );
        }
        // The server's own checks, on the same ServerConfig the proxy binds with: every limit
        // and timeout with its upper bound (max_connections ≤ 1,000,000, max_headers ≤ 1024, …).
        let s = &self.server;
        if let Err(e) = super::runtime::server_limits(self).check() {
            let (path, message) = server_violation(e);
            v.push(path, message);
        }
        // The overload section's own checks (what `ServerConfig::overload` and
        // `LoadShedLayer` read from it).
        if let Err(violations) = self.overload.validate() {
            v.merge_under("overload", violations);
        }
        for host in &self.admin.allowed_hosts {
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                v.push(
                    "admin.allowed_hosts",
                    format!("{host:?} is not a host name (no port)"),
                );
            }
        }
        v.check_count(
            "admin.allowed_hosts",
            "names",
            self.admin.allowed_hosts.len(),
            64,
        );
        if !self.admin.listen.ip().is_loopback() && !self.admin.allow_remote {
            v.push(
                "admin.listen",
                format!("{} is not a loopback address; set admin.allow_remote = true if a firewall guards it", self.admin.listen),
            );
        }
        if self.admin.listen == s.listen && s.listen.port() != 0 {
            v.push("admin.listen", "must differ from server.listen");
        }
        if let Some(tls) = &self.tls {
            tls.check(s, &self.admin, &mut v);
        }
        self.rollout.check(&mut v);

        let mut names = HashSet::new();
        if v.check_count(
            "upstreams",
            "upstreams",
            self.upstreams.len(),
            MAX_UPSTREAMS,
        ) {
            for (i, u) in self.upstreams.iter().enumerate() {
                let path = format!("upstreams[{i}]");
                if u.name.is_empty() {
                    v.push(format!("{path}.name"), "must not be empty");
                }
                if !names.insert(u.name.as_str()) {
                    v.push(
                        format!("{path}.name"),
                        format!("duplicate upstream name {:?}", u.name),
                    );
                }
                if let Err(e) = upstream_builder(u).check() {
                    v.merge(upstream_violations(&path, e));
                }
            }
        }
        if v.check_count("routes", "routes", self.routes.len(), MAX_ROUTES) {
            for (i, r) in self.routes.iter().enumerate() {
                let path = format!("routes[{i}]");
                if !names.contains(r.upstream.as_str()) {
                    v.push(
                        format!("{path}.upstream"),
                        format!(
                            "unknown upstream {:?}; define it under [[upstreams]]",
                            r.upstream
                        ),
                    );
                }
                if let Err(e) = ravelin_http::PathPrefix::new(r.path_prefix.as_str()) {
                    v.push(format!("{path}.path_prefix"), e.to_string());
                }
                if let Some(timeout) = r.response_timeout {
                    check_duration(
                        &mut v,
                        &format!("{path}.response_timeout"),
                        timeout,
                        MAX_TIMEOUT,
                    );
                }
                if let Some(host) = &r.host
                    && let Err(reason) = route_host(host)
                {
                    v.push(format!("{path}.host"), reason);
                }
            }
        }

        for (i, text) in self.ingress.trusted_proxies.iter().enumerate() {
            if let Err(reason) = parse_network(text) {
                v.push(format!("ingress.trusted_proxies[{i}]"), reason);
            }
        }
        v.check_count(
            "ingress.trusted_proxies",
            "networks",
            self.ingress.trusted_proxies.len(),
            1024,
        );

        // The modules: each one's own checks, which refuse everything building it refuses
        // (`crate::modules::Module::check`), and no table for a module that does not exist.
        let known = crate::modules::configurable_names();
        for name in self.modules.names() {
            if !known.iter().any(|k| k == name) {
                v.push(
                    format!("modules.{name}"),
                    format!("unknown module; the modules are {}", known.join(", ")),
                );
            }
        }
        crate::modules::check_all(self, &mut v);

        if self.reload.watch_interval > MAX_TIMEOUT {
            v.push("reload.watch_interval", "must be at most 1h");
        }
        if self.reload.watch_interval < Duration::from_millis(10)
            && !self.reload.watch_interval.is_zero()
        {
            v.push("reload.watch_interval", "must be 0s (off) or at least 10ms");
        }
        if !max_growth_ok(self.reload.max_growth) {
            v.push(
                "reload.max_growth",
                format!(
                    "{} must be 0 (off) or from 1 to 1000000",
                    self.reload.max_growth
                ),
            );
        }
        if let Some(dir) = &self.reload.state_dir
            && !dir.is_absolute()
        {
            v.push(
                "reload.state_dir",
                format!("{} must be an absolute path", dir.display()),
            );
        }
        v.into_result()
    }

    fn version(&self) -> Option<u64> {
        self.version
    }
}

/// Command-line settings that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin`.
    pub admin: Option<SocketAddr>,
    /// `--admin-allow-remote`.
    pub admin_allow_remote: bool,
    /// `--upstream`: replaces the upstream list with this one URL and drops the routes.
    pub upstream: Option<String>,
    /// `--state-dir` (or `RAVELIN_STATE_DIR`): where the last known good documents persist,
    /// in place of the file's `[reload] state_dir`. Preferred: the config file is generated,
    /// untrusted input, and the directory the process writes to is the operator's choice.
    pub state_dir: Option<PathBuf>,
}

impl Overrides {
    /// The configuration in force: the file's, with the flags applied.
    pub fn apply(&self, file: &EdgeConfig) -> EdgeConfig {
        let mut config = file.clone();
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(admin) = self.admin {
            // The address alone never implies remote access: exposing the admin API takes its
            // own explicit flag (or the file's admin.allow_remote).
            config.admin.listen = admin;
        }
        if self.admin_allow_remote {
            config.admin.allow_remote = true;
        }
        if let Some(dir) = &self.state_dir {
            config.reload.state_dir = Some(dir.clone());
        }
        if let Some(url) = &self.upstream {
            let template = file.upstreams.first().cloned();
            config.upstreams = vec![UpstreamSection {
                name: "origin".into(),
                url: url.clone(),
                ..template.unwrap_or_else(|| UpstreamSection {
                    name: String::new(),
                    url: String::new(),
                    http2: false,
                    preserve_host: false,
                    connect_timeout: default_connect_timeout(),
                    response_timeout: default_response_timeout(),
                    max_idle_connections: default_max_idle(),
                    body_idle_timeout: default_body_idle_timeout(),
                    ca_file: None,
                    client_cert_file: None,
                    client_key_file: None,
                    tls_server_name: None,
                    upgrade_idle_timeout: default_upgrade_idle_timeout(),
                    max_upgraded_connections: default_max_upgraded_connections(),
                    health: HealthConfig::default(),
                    retry: RetryConfig::default(),
                    dns: DnsConfig::default(),
                })
            }];
            config.routes.clear();
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` with the demo origin asked for (the tests below name no upstream).
    fn parse(text: &str) -> Result<EdgeConfig, String> {
        parse_raw(&format!("{text}\n[demo]\nenabled = true\n"))
    }

    fn parse_raw(text: &str) -> Result<EdgeConfig, String> {
        let config: EdgeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|v| v.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_example_file_is_valid() {
        parse_raw(include_str!("../../../examples/edge-proxy.toml")).unwrap();
    }

    #[test]
    fn an_empty_or_comment_only_document_is_refused() {
        for text in ["", "# only a comment\n", "\n# a\n\n# b\n"] {
            let err = parse_raw(text).unwrap_err();
            assert!(err.contains("no settings"), "{text:?}: {err}");
        }
        let demo = parse_raw("[demo]\nenabled = true\n").unwrap();
        assert_eq!(
            demo,
            EdgeConfig {
                demo: DemoSection { enabled: true },
                ..EdgeConfig::default()
            }
        );
    }

    #[test]
    fn no_upstream_needs_the_demo_asked_for() {
        for text in [
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            "upstreams = []\n",
            "[ratelimit]\n[[ratelimit.rules]]\nname = \"a\"\nlimit = 1\nwindow = \"1s\"\n",
        ] {
            let err = parse_raw(text).unwrap_err();
            assert!(
                err.contains("[[upstreams]]") && err.contains("[demo] enabled"),
                "{text:?}: {err}"
            );
        }
        parse_raw("upstreams = []\n[demo]\nenabled = true\n").unwrap();
        // With upstreams, [demo] changes nothing.
        parse_raw(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[demo]\nenabled = true\n",
        )
        .unwrap();
    }

    #[test]
    fn lists_that_empty_on_reload_are_refused_unless_allowed() {
        let active = parse_raw(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
             [[routes]]\nupstream = \"a\"\n\
             [[ratelimit.rules]]\nname = \"r\"\nlimit = 1\nwindow = \"1s\"\n\
             [[botscore.routes]]\nprefix = \"/login\"\n",
        )
        .unwrap();
        active.check_against(&active).unwrap();
        let cases = [
            ("[demo]\nenabled = true\n", "upstreams"),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
                "routes",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[ratelimit]\nrules = []\n",
                "ratelimit.rules",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
                "[[ratelimit.rules]] is gone",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
                "botscore.routes",
            ),
        ];
        for (text, named) in cases {
            let next = parse_raw(text).unwrap();
            let err = next.check_against(&active).unwrap_err().to_string();
            assert!(err.contains(named), "{text:?}: {err}");
            let allowed = parse_raw(&format!("{text}\n[lists]\nallow_empty = true\n")).unwrap();
            allowed.check_against(&active).unwrap();
        }
        // From a document that had none, nothing is refused.
        let demo = parse_raw("[demo]\nenabled = true\n").unwrap();
        demo.check_against(&demo).unwrap();
        active.check_against(&demo).unwrap();
    }

    #[test]
    fn runtime_model_and_workers_are_read_and_bounded() {
        // The edge's default is the measured winner (docs/performance.md); the library's own
        // ServerConfig keeps serving on its caller's runtime.
        assert_eq!(
            EdgeConfig::default().server.runtime,
            ravelin_proxy::RuntimeModel::PerCore
        );
        let config = parse("[server]\nruntime = \"multi_thread\"\n").unwrap();
        assert_eq!(
            config.server.runtime,
            ravelin_proxy::RuntimeModel::MultiThread
        );
        let config = parse("[server]\nruntime = \"per_core\"\nworkers = 2\n").unwrap();
        assert_eq!(config.server.runtime, ravelin_proxy::RuntimeModel::PerCore);
        assert_eq!(config.server.workers, 2);
        let err = parse("[server]\nruntime = \"per_thread\"\n").unwrap_err();
        assert!(err.contains("per_thread"), "{err}");
        let err = parse("[server]\nruntime = \"per_core\"\nworkers = 257\n").unwrap_err();
        assert!(err.contains("server.workers"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nmax_conections = 5\n").unwrap_err();
        assert!(err.contains("max_conections"), "{err}");
        let err = parse("[botscore]\nfeature_fil = \"x\"\n").unwrap_err();
        assert!(err.contains("feature_fil"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        let err =
            parse("[[upstreams]]\nname = \"a\"\nurl = \"ftp://x\"\n[[routes]]\nupstream = \"b\"\n")
                .unwrap_err();
        assert!(err.contains("upstreams[0].url"), "{err}");
        assert!(err.contains("routes[0].upstream"), "{err}");
        let err = parse("[ratelimit.guard]\ntimeout = \"0s\"\n[[ratelimit.rules]]\nname = \"x\"\nlimit = 0\nwindow = \"1s\"\n").unwrap_err();
        assert!(
            err.contains("ratelimit.guard.timeout") && err.contains("ratelimit.rules[0].limit"),
            "{err}"
        );
        // The old flat keys are errors that name them, not settings silently ignored.
        let err = parse("[ratelimit]\ntimeout = \"20ms\"\n").unwrap_err();
        assert!(err.contains("timeout") && err.contains("guard"), "{err}");
        let err = parse(
            "[[ratelimit.rules]]\nname = \"x\"\nlimit = 1\nwindow = \"1s\"\nkey = [\"cookie\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("cookie"), "{err}");
        let err = parse("[admin]\nlisten = \"0.0.0.0:9901\"\n").unwrap_err();
        assert!(err.contains("admin.listen"), "{err}");
        let err = parse("[ratelimit]\nstore = \"mongodb://x\"\n").unwrap_err();
        assert!(err.contains("store"), "{err}");
        let err = parse("[botscore.guard]\nfailure_mode = \"sideways\"\n").unwrap_err();
        assert!(err.contains("sideways"), "{err}");
    }

    #[test]
    fn the_module_sections_are_the_crates_own_types() {
        // One set of names and defaults: an absent section is the crate's default, and the
        // example file (which shows the defaults) says exactly that.
        let empty = parse("").unwrap();
        assert_eq!(empty.cache, CacheConfig::default());
        assert_eq!(empty.botscore, BotScoreConfig::default());
        let example = parse_raw(include_str!("../../../examples/edge-proxy.toml")).unwrap();
        assert_eq!(example.cache, CacheConfig::default());
        assert_eq!(example.botscore, BotScoreConfig::default());
        assert_eq!(
            example.ratelimit,
            ravelin_ratelimit::RateLimitConfig::default()
        );
        assert_eq!(example.overload, OverloadConfig::default());
        assert_eq!(example.modules.names().count(), 3);
        for name in ["ratelimit", "botscore", "cache"] {
            assert_eq!(example.modules.get(name), ModuleSwitch::default());
        }
        // The crates' keys reach the crates.
        let config = parse(
            "[cache]\nmax_capacity_bytes = 16777216\nstale_if_error = \"5m\"\n\
             [botscore]\nreasons_header = \"x-why\"\n[botscore.guard]\ntimeout = \"7ms\"\n",
        )
        .unwrap();
        assert_eq!(config.cache.max_capacity_bytes, 16 * 1024 * 1024);
        assert_eq!(config.cache.stale_if_error, Duration::from_secs(300));
        assert_eq!(config.botscore.reasons_header.as_deref(), Some("x-why"));
        assert_eq!(config.botscore.guard.timeout, Duration::from_millis(7));
    }

    #[test]
    fn renamed_keys_are_refused_by_name() {
        let renamed = [
            ("[cache]\nmax_bytes = 67108864\n", "max_bytes"),
            ("[cache]\nenabled = false\n", "enabled"),
            ("[cache]\nkilled = true\n", "killed"),
            ("[cache]\nfailure_mode = \"open\"\n", "failure_mode"),
            (
                "[cache]\ndefault_stale_if_error = \"5m\"\n",
                "default_stale_if_error",
            ),
            (
                "[cache]\ndefault_stale_while_revalidate = \"5s\"\n",
                "default_stale_while_revalidate",
            ),
            ("[botscore]\nenabled = false\n", "enabled"),
            ("[botscore]\nkilled = true\n", "killed"),
            ("[botscore]\nforward_reasons = true\n", "forward_reasons"),
            ("[botscore]\nmodel = \"x.json\"\n", "model"),
            ("[botscore]\ntimeout = \"5ms\"\n", "timeout"),
            ("[ratelimit]\nenabled = false\n", "enabled"),
            ("[ratelimit]\nkilled = true\n", "killed"),
        ];
        for (text, key) in renamed {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains("unknown field") && err.contains(key),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn module_tables_name_modules() {
        let config =
            parse("[modules.cache]\nenabled = false\n[modules.botscore]\nkilled = true\n").unwrap();
        assert!(!config.modules.get("cache").enabled);
        assert!(config.modules.get("botscore").killed && config.modules.get("botscore").enabled);
        assert_eq!(config.modules.get("ratelimit"), ModuleSwitch::default());
        let err = parse("[modules.cahce]\nenabled = false\n").unwrap_err();
        assert!(
            err.contains(
                "modules.cahce: unknown module; the modules are ratelimit, botscore, cache"
            ),
            "{err}"
        );
        let err = parse("[modules.cache]\nenable = false\n").unwrap_err();
        assert!(
            err.contains("unknown field") && err.contains("enable"),
            "{err}"
        );
        // A module that is off is still checked: switching it on cannot fail later.
        let err = parse("[modules.cache]\nenabled = false\n[cache]\nmax_capacity_bytes = 0\n")
            .unwrap_err();
        assert!(err.contains("cache.max_capacity_bytes"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse("[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nconnect_timeout = \"2s\"\n[[routes]]\nupstream = \"a\"\n").unwrap();
        let flags = Overrides {
            listen: Some("127.0.0.1:18080".parse().unwrap()),
            admin: None,
            admin_allow_remote: false,
            upstream: Some("http://127.0.0.1:2".into()),
            state_dir: None,
        };
        let config = flags.apply(&file);
        assert_eq!(config.server.listen.port(), 18080);
        assert_eq!(config.upstreams.len(), 1);
        assert_eq!(config.upstreams[0].url, "http://127.0.0.1:2");
        assert_eq!(config.upstreams[0].connect_timeout, Duration::from_secs(2));
        assert!(config.routes.is_empty());
        config.validate().unwrap();
    }
}
