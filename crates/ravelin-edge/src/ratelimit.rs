//! The rate-limit module: `ravelin-ratelimit`'s guard (memory or Redis store) in its failure
//! policy. Rules live in a `ravelin-config` store of their own, so a reload that changes them
//! keeps the state of every rule whose name and quota did not change.

use std::time::Duration;

use hyper::body::Incoming;
use ravelin_config::{Format, Store, Validate, Violations};
use ravelin_failsafe::GuardLayer;
use ravelin_proxy::ModuleStatus;
use ravelin_ratelimit::redis::{FallbackStore, RedisStore};
use ravelin_ratelimit::{MemoryStore, RateLimitConfig, RateLimitGuard, Rules, StoreConfig};
use serde_json::json;

use crate::config::{EdgeConfig, GuardConfig};
use crate::modules::{Apply, Module, Stop, guard_layer, guard_status};
use crate::stack::{BoxGuard, EdgeService, Slot, layered};

/// The module name: the guard's own ([`ravelin_ratelimit::GUARD_NAME`]), which names its kill
/// switch, metric label and skip-header key.
pub(crate) const NAME: &str = ravelin_ratelimit::GUARD_NAME;

/// The label of the rule documents the edge hands the rule store.
const RULES_SOURCE: &str = "edge-proxy config";

/// What decides where the buckets live: a change starts a new (empty) store.
#[derive(Clone, PartialEq)]
struct StoreKey {
    store: StoreConfig,
    capacity: usize,
    redis_timeout: Duration,
    local_fallback: bool,
}

impl StoreKey {
    fn of(section: &RateLimitConfig) -> Self {
        Self {
            store: section.store.clone(),
            capacity: section.capacity,
            redis_timeout: section.redis_timeout,
            local_fallback: section.local_fallback,
        }
    }
}

/// The rate-limit module.
#[derive(Clone, Default)]
pub(crate) struct RateLimitModule {
    state: Option<State>,
    /// A rule document for the running rule store, handed over at commit.
    pending_rules: Option<Vec<u8>>,
    /// The rules' kill switches (`ratelimit.rule.<name>`) to register at commit, each with the
    /// file's `killed` when it changed (or is new): an operator's flip survives unrelated
    /// reloads, as the modules' switches do.
    pending_switches: Vec<(String, Option<bool>)>,
    /// Where the rules' switches live (the edge's one switchboard).
    switchboard: Option<ravelin_config::Switchboard>,
}

#[derive(Clone)]
struct State {
    rules: Store<Rules>,
    store_key: StoreKey,
    /// The buckets, shared by every guard over them (a main config's canary stack limits its
    /// clients by the candidate's rules over the same buckets).
    buckets: Buckets,
    guard: BoxGuard,
    policy: GuardConfig,
    layer: GuardLayer<BoxGuard>,
}

/// The rule document of `config` (rules, client address, response headers), as the rule store
/// reads it.
fn rules_document(config: &EdgeConfig) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&edge_rules(config)).map_err(|e| format!("ratelimit rules: {e}"))
}

/// The rule document of `config` as the edge installs it: `[ratelimit]`'s, with the proxies in
/// front named once — when `[ratelimit.client_ip]` names none, the rate limiter believes the
/// ones ingress keeps forwarding headers from.
fn edge_rules(config: &EdgeConfig) -> Rules {
    let mut rules = config.ratelimit.rules_document();
    if rules.client_ip.trusted_proxies.is_empty() {
        rules.client_ip.trusted_proxies = config.ingress.trusted_proxies.clone();
    }
    rules
}

/// How the rate limiter of `config` finds the client: the edge keys its rollout cohorts and
/// its request sample by the same address.
pub(crate) fn client_resolver(config: &EdgeConfig) -> ravelin_ratelimit::ClientIpResolver {
    edge_rules(config).client_ip.resolver()
}

/// A rule store holding `document`: the store's own parse and validation, as every later
/// document it is handed gets.
fn rule_store(document: Vec<u8>) -> Result<Store<Rules>, String> {
    Store::<Rules>::builder("ratelimit-rules")
        .format(Format::Json)
        .initial_bytes(document, RULES_SOURCE)
        .build()
        .map_err(|e| format!("ratelimit rules: {e}"))
}

/// A bucket store of any kind `[ratelimit]` can ask for; clones share the buckets.
#[derive(Clone)]
enum Buckets {
    Memory(MemoryStore),
    Redis(RedisStore),
    Fallback(FallbackStore<RedisStore, MemoryStore>),
}

impl Buckets {
    /// A new bucket store as `section` asks for.
    fn new(section: &RateLimitConfig) -> Result<Self, String> {
        Ok(match &section.store {
            StoreConfig::Memory => Buckets::Memory(MemoryStore::new(section.capacity)),
            StoreConfig::Redis(url) => {
                let redis = RedisStore::builder(url)
                    .timeout(section.redis_timeout)
                    .build()
                    .map_err(|e| format!("ratelimit.store: {e}"))?;
                if section.local_fallback {
                    let local = MemoryStore::new(section.capacity);
                    Buckets::Fallback(FallbackStore::new(redis, local))
                } else {
                    Buckets::Redis(redis)
                }
            }
        })
    }

    /// A guard reading `rules` over these buckets.
    fn guard(&self, rules: &Store<Rules>, switchboard: &ravelin_config::Switchboard) -> BoxGuard {
        let reloadable = RateLimitGuard::reloadable(rules.clone()).switchboard(switchboard);
        match self {
            Buckets::Memory(store) => BoxGuard::new(reloadable.with_store(store.clone())),
            Buckets::Redis(store) => BoxGuard::new(reloadable.with_store(store.clone())),
            Buckets::Fallback(store) => BoxGuard::new(reloadable.with_store(store.clone())),
        }
    }
}

impl RateLimitModule {
    /// The guard over a new bucket store, with the buckets.
    fn guard(
        section: &RateLimitConfig,
        rules: &Store<Rules>,
        switchboard: &ravelin_config::Switchboard,
    ) -> Result<(Buckets, BoxGuard), String> {
        let buckets = Buckets::new(section)?;
        let guard = buckets.guard(rules, switchboard);
        Ok((buckets, guard))
    }
}

impl Module for RateLimitModule {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, config: &EdgeConfig, v: &mut Violations) {
        let section = &config.ratelimit;
        // Every check building the limiter performs, as the crate declares them.
        if let Err(violations) = section.validate() {
            v.merge_under("ratelimit", violations);
        }
        // The proxies in front are named once (a policy of the edge, not a build check).
        let ingress = &config.ingress.trusted_proxies;
        let own = &section.client_ip.trusted_proxies;
        if !own.is_empty() && !ingress.is_empty() && own != ingress {
            v.push(
                "ratelimit.client_ip.trusted_proxies",
                "differs from ingress.trusted_proxies: name the proxies in front once, under [ingress]",
            );
        }
        // Borrowed from [ingress], the proxies must also suit the rate limiter's resolver.
        if own.is_empty()
            && !ingress.is_empty()
            && let Err(rule_violations) = edge_rules(config).validate()
        {
            for violation in rule_violations.iter() {
                if violation.path.starts_with("client_ip") {
                    v.push(
                        format!("ratelimit.{}", violation.path),
                        violation.message.clone(),
                    );
                }
            }
        }
    }

    fn update(&mut self, apply: &Apply<'_>) -> Result<(), String> {
        let section = &apply.config.ratelimit;
        section.validate().map_err(|violations| {
            let mut named = Violations::new();
            named.merge_under("ratelimit", violations);
            named.to_string()
        })?;
        let document = rules_document(apply.config)?;
        let store_key = StoreKey::of(section);
        let policy = section.guard.clone();
        self.switchboard = Some(apply.switchboard.clone());
        self.pending_switches = section
            .rules
            .iter()
            .map(|rule| {
                let before = apply
                    .previous
                    .and_then(|p| p.ratelimit.rules.iter().find(|r| r.name == rule.name))
                    .map(|r| r.killed);
                let set = (before != Some(rule.killed)).then_some(rule.killed);
                (ravelin_ratelimit::rule_switch_name(&rule.name), set)
            })
            .collect();

        if let Some(running) = self.state.as_ref().filter(|_| apply.previous.is_some())
            && running.store_key == store_key
        {
            // Same buckets: the running rule store gets the new rules at commit (rules whose
            // name and quota did not change keep their state). Refused here, as the store
            // would refuse them.
            let candidate_rules = rule_store(document.clone())?;
            if !apply.env.live {
                // A canary's stack is never committed: its guard reads the candidate's rules
                // itself, over the running buckets.
                let guard = running.buckets.guard(&candidate_rules, apply.switchboard);
                let layer = guard_layer(guard.clone(), &policy, apply.switchboard)?;
                self.state = Some(State {
                    rules: candidate_rules,
                    guard,
                    policy,
                    layer,
                    ..running.clone()
                });
                self.pending_rules = None;
                return Ok(());
            }
            let layer = if running.policy == policy {
                running.layer.clone()
            } else {
                guard_layer(running.guard.clone(), &policy, apply.switchboard)?
            };
            self.state = Some(State {
                policy,
                layer,
                ..running.clone()
            });
            self.pending_rules = Some(document);
            return Ok(());
        }

        let rules = rule_store(document)?;
        let (buckets, guard) = Self::guard(section, &rules, apply.switchboard)?;
        let layer = guard_layer(guard.clone(), &policy, apply.switchboard)?;
        self.state = Some(State {
            rules,
            store_key,
            buckets,
            guard,
            policy,
            layer,
        });
        self.pending_rules = None;
        Ok(())
    }

    fn commit(&mut self) {
        if let Some(board) = &self.switchboard {
            for (name, set) in self.pending_switches.drain(..) {
                let switch = board.switch(&name);
                if let Some(killed) = set {
                    switch.set(killed, "config");
                }
            }
        }
        if let (Some(state), Some(document)) = (&self.state, self.pending_rules.take())
            && let Err(rejection) = state.rules.submit(&document, RULES_SOURCE)
        {
            // Unreachable in practice: `update` had the same document accepted by a store
            // of the same kind. Logged (and shown in /status) rather than ignored.
            tracing::error!(%rejection, "the rate-limit rules were not installed");
        }
    }

    fn stop(&mut self, _: Stop) {
        self.state = None;
        self.pending_rules = None;
        self.pending_switches.clear();
    }

    fn slot(&self) -> Option<Slot<Incoming>> {
        let layer = self.state.as_ref()?.layer.clone();
        Some(Box::new(move |inner: EdgeService<Incoming>| {
            layered(layer, inner)
        }))
    }

    fn status(&self) -> Option<ModuleStatus> {
        let state = self.state.as_ref()?;
        let rules = state.rules.load();
        let store = match &state.store_key.store {
            StoreConfig::Memory => "memory".to_owned(),
            StoreConfig::Redis(url) => format!("redis ({})", redact(url)),
        };
        let killed: Vec<String> = self.switchboard.as_ref().map_or_else(Vec::new, |board| {
            rules
                .value()
                .rules
                .iter()
                .filter(|r| {
                    board.is_engaged(&ravelin_ratelimit::rule_switch_name(&r.name)) == Some(true)
                })
                .map(|r| r.name.clone())
                .collect()
        });
        Some(guard_status(
            &state.layer.handle(),
            json!({
                "store": store,
                "capacity": state.store_key.capacity,
                "rules": rules.value().rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
                "killed_rules": killed,
                "rules_generation": rules.meta().generation,
            }),
        ))
    }

    fn clone_module(&self) -> Box<dyn Module> {
        Box::new(self.clone())
    }
}

/// A Redis URL without its password, for status pages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!(
                "{}://***{}",
                url.get(..scheme).unwrap_or(""),
                url.get(at..).unwrap_or("")
            )
        }
        _ => url.to_owned(),
    }
}

/// The pre-activation check of new rate-limit rules (issue 15): the rules of `candidate` and of
/// `active` estimated on the request sample, refused when the candidate would deny too many
/// more sampled requests (`[rollout.ratelimit_bounds]` of the config in force, never the
/// candidate's own). Rules of a module switched off deny
/// nothing.
///
/// # Errors
/// The refusal, with the shares and the rule denying most.
pub(crate) fn check_effect(
    active: &EdgeConfig,
    candidate: &EdgeConfig,
    rollouts: &crate::rollout::Rollouts,
) -> Result<(), String> {
    let on = |config: &EdgeConfig| config.modules.get(NAME).enabled;
    if (on(active), &active.ratelimit) == (on(candidate), &candidate.ratelimit) {
        return Ok(());
    }
    let rules = |config: &EdgeConfig| {
        if on(config) {
            config.ratelimit.rules_document()
        } else {
            Rules::new()
        }
    };
    let (before, after) = (rules(active), rules(candidate));
    // The bounds of the config in force: a candidate cannot loosen its own check.
    active
        .rollout
        .ratelimit_bounds
        .compare(
            &before,
            &after,
            &rollouts.head_sample.snapshot(),
            rollouts.every(),
        )
        .map(drop)
        .map_err(|e| format!("ratelimit.rules: {e}"))
}
