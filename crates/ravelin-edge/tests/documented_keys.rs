//! The keys the documentation shows are the keys the crates read (issue 12).
//!
//! Each config type's keys are taken from the type itself (serde's list of expected fields,
//! which `deny_unknown_fields` prints for an unknown one) and compared with the first column of
//! the tables that document them: the module crates' READMEs (the one reference for their keys)
//! and `docs/configuration.md`. The example file, with every commented-out key uncommented,
//! must pass `--check`, so it shows no key that is not read.

use std::collections::BTreeSet;

use ravelin_edge::config::{
    AdminSection, IngressSection, ReloadSection, RouteSection, ServerSection, UpstreamSection,
};
use ravelin_edge::{
    BotScoreConfig, CacheConfig, CircuitConfig, ConfigSource, EdgeConfig, GuardConfig,
    ModuleSwitch, Overrides, check_config,
};
use ravelin_proxy::{DnsConfig, HealthConfig, OverloadConfig, RetryConfig};
use serde::de::DeserializeOwned;

const CONFIGURATION: &str = include_str!("../../../docs/configuration.md");
const EXAMPLE: &str = include_str!("../../../examples/edge-proxy.toml");
const CACHE_README: &str = include_str!("../../ravelin-cache/README.md");
const BOTSCORE_README: &str = include_str!("../../ravelin-botscore/README.md");
const FAILSAFE_README: &str = include_str!("../../ravelin-failsafe/README.md");
const RATELIMIT_README: &str = include_str!("../../ravelin-ratelimit/README.md");

/// The keys `T` reads, as serde lists them when refusing an unknown one.
#[allow(clippy::unwrap_used, clippy::panic)] // test helper: a panic is a failing test
fn keys<T: DeserializeOwned>() -> BTreeSet<String> {
    let error = toml::from_str::<T>("not_a_key_of_any_section = 1")
        .map(drop)
        .unwrap_err()
        .to_string();
    let expected = error
        .split("expected")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of keys in: {error}"));
    backticked(expected.lines().next().unwrap_or_default())
}

/// The `code spans` of `text`.
fn backticked(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The keys in the first column of the first table after `anchor` in `doc`: each `code span`
/// without its TOML brackets and without `prefix`, up to the first dot (`[[verified_bots.bots]]`
/// documents `verified_bots`, `[<module>.guard.circuit]` with prefix `<module>.guard.` documents
/// `circuit`).
#[allow(clippy::panic, clippy::indexing_slicing)] // test helper: a panic is a failing test
fn table(doc: &str, anchor: &str, prefix: &str) -> BTreeSet<String> {
    let start = doc
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor:?} is not in the document"));
    let rows = doc[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        // The header row and the |---| row.
        .skip(2);
    let mut keys = BTreeSet::new();
    for row in rows {
        let first = row.split('|').nth(1).unwrap_or_default();
        for span in backticked(first) {
            let bare = span.trim_start_matches('[').trim_end_matches(']');
            let bare = bare.strip_prefix(prefix).unwrap_or(bare);
            keys.insert(bare.split('.').next().unwrap_or_default().to_owned());
        }
    }
    assert!(!keys.is_empty(), "no table after {anchor:?}");
    keys
}

fn same(what: &str, documented: BTreeSet<String>, read: BTreeSet<String>) {
    let missing: Vec<_> = read.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&read).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{what}: keys read but not documented: {missing:?}; documented but not read: {unknown:?}"
    );
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[test]
fn the_module_crates_readmes_document_their_config_types() {
    same(
        "ravelin-cache README, Configuration",
        table(CACHE_README, "## Configuration", ""),
        keys::<CacheConfig>(),
    );
    same(
        "ravelin-botscore README, Configuration",
        table(BOTSCORE_README, "## Configuration", ""),
        keys::<BotScoreConfig>(),
    );
    same(
        "ravelin-failsafe README, GuardConfig",
        table(FAILSAFE_README, "## From configuration", ""),
        keys::<GuardConfig>(),
    );
    same(
        "ravelin-failsafe README, [circuit]",
        table(FAILSAFE_README, "`[circuit]` overrides", ""),
        keys::<CircuitConfig>(),
    );
    same(
        "ravelin-ratelimit README, Configuration",
        table(RATELIMIT_README, "## Configuration", ""),
        keys::<ravelin_ratelimit::RateLimitConfig>(),
    );
    same(
        "ravelin-ratelimit README, Rules",
        table(RATELIMIT_README, "## Rules", ""),
        keys::<ravelin_ratelimit::Rule>(),
    );
    same(
        "ravelin-ratelimit README, client_ip",
        table(RATELIMIT_README, "document's `client_ip`", ""),
        keys::<ravelin_ratelimit::ClientIp>(),
    );
}

#[test]
fn the_configuration_reference_documents_every_key_the_edge_reads() {
    let doc = CONFIGURATION;
    same(
        "top level",
        table(doc, "## Top level", ""),
        set(&["version"]),
    );
    // Every section of the document has its heading.
    for section in keys::<EdgeConfig>() {
        let headed = [
            format!("`[{section}]`"),
            format!("`[[{section}]]`"),
            format!("`[{section}."),
        ];
        assert!(
            section == "version" || headed.iter().any(|h| doc.contains(h.as_str())),
            "[{section}] has no section in docs/configuration.md"
        );
    }
    same(
        "[server]",
        table(doc, "## `[server]`", ""),
        keys::<ServerSection>(),
    );
    same(
        "[admin]",
        table(doc, "## `[admin]`", ""),
        keys::<AdminSection>(),
    );
    same(
        "[[upstreams]]",
        table(doc, "## `[[upstreams]]`", "upstreams."),
        keys::<UpstreamSection>(),
    );
    same(
        "[[routes]]",
        table(doc, "## `[[routes]]`", ""),
        keys::<RouteSection>(),
    );
    same(
        "[ingress]",
        table(doc, "## `[ingress]`", ""),
        keys::<IngressSection>(),
    );
    same(
        "[modules.<name>]",
        table(doc, "## `[modules.<name>]`", ""),
        keys::<ModuleSwitch>(),
    );
    same(
        "[<module>.guard]",
        table(doc, "## The failure policy of a guard", "<module>.guard."),
        keys::<GuardConfig>(),
    );
    same(
        "[<module>.guard.circuit]",
        table(doc, "`[<module>.guard.circuit]` (defaults", ""),
        keys::<CircuitConfig>(),
    );
    // The failure policy is documented once, above the [ratelimit] table.
    let mut ratelimit = table(doc, "## `[ratelimit]`", "ratelimit.");
    ratelimit.insert("guard".to_owned());
    same(
        "[ratelimit]",
        ratelimit,
        keys::<ravelin_ratelimit::RateLimitConfig>(),
    );
    same(
        "[ratelimit.client_ip]",
        table(doc, "`[ratelimit.client_ip]`:", ""),
        keys::<ravelin_ratelimit::ClientIp>(),
    );
    same(
        "[[ratelimit.rules]]",
        table(doc, "`[[ratelimit.rules]]` (all evaluated", ""),
        keys::<ravelin_ratelimit::Rule>(),
    );
    same(
        "[reload]",
        table(doc, "## `[reload]`", ""),
        keys::<ReloadSection>(),
    );
    same(
        "[rollout]",
        table(doc, "## `[rollout]`", ""),
        keys::<ravelin_edge::config::RolloutSection>(),
    );
    same(
        "[rollout.bot_bounds]",
        table(doc, "`[rollout.bot_bounds]` (", ""),
        keys::<ravelin_botscore::effect::EffectBounds>(),
    );
    same(
        "[rollout.ratelimit_bounds]",
        table(doc, "`[rollout.ratelimit_bounds]` (", ""),
        keys::<ravelin_ratelimit::effect::DenyBounds>(),
    );
    same(
        "[rollout.bot_features]",
        table(doc, "`[rollout.bot_features]` and `[rollout.config]` (", ""),
        keys::<ravelin_config::RolloutPolicy>(),
    );
    same(
        "[rollout.bot_features.bounds]",
        table(doc, "`[rollout.bot_features.bounds]` (", ""),
        keys::<ravelin_config::CohortBounds>(),
    );
    same(
        "[tls]",
        table(doc, "## `[tls]`", ""),
        keys::<ravelin_edge::config::TlsSection>(),
    );
    same(
        "[[tls.certificates]]",
        table(doc, "`[[tls.certificates]]` (chosen by SNI", ""),
        keys::<ravelin_tls::certs::CertificateConfig>(),
    );
    same(
        "[overload]",
        table(doc, "### `[overload]`", ""),
        keys::<OverloadConfig>(),
    );
    same(
        "[upstreams.health]",
        table(doc, "### `[upstreams.health]`", ""),
        keys::<HealthConfig>(),
    );
    same(
        "[upstreams.retry]",
        table(doc, "### `[upstreams.retry]`", ""),
        keys::<RetryConfig>(),
    );
    same(
        "[upstreams.dns]",
        table(doc, "### `[upstreams.dns]`", ""),
        keys::<DnsConfig>(),
    );
}

#[test]
fn the_module_sections_are_the_crates_own_types() {
    // [ratelimit], [botscore] and [cache] are the crates' types themselves; the rate limiter's
    // carries the keys of its `Rules` document as they are (the document's `version` is the
    // edge document's own top-level `version`).
    let section = keys::<ravelin_ratelimit::RateLimitConfig>();
    let mut rules = keys::<ravelin_ratelimit::Rules>();
    assert!(rules.remove("version"), "{rules:?}");
    assert!(rules.is_subset(&section), "{rules:?} ⊄ {section:?}");
    let defaults = EdgeConfig::default();
    assert_eq!(
        defaults.ratelimit,
        ravelin_ratelimit::RateLimitConfig::default()
    );
    assert_eq!(
        keys::<EdgeConfig>()
            .into_iter()
            .filter(|k| k == "ratelimit" || k == "botscore" || k == "cache")
            .count(),
        3
    );
}

/// The example with every commented-out key and table uncommented (`# key = …`, `# [table]`);
/// prose comments stay comments.
fn uncommented(example: &str) -> String {
    example
        .lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line.to_owned();
            };
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let is_key = !word.is_empty() && rest[word.len()..].starts_with(" = ");
            if is_key || rest.starts_with('[') {
                rest.to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_key_the_example_shows_is_read_and_valid() {
    let full = uncommented(EXAMPLE);
    assert!(
        full.lines().count() == EXAMPLE.lines().count() && full != EXAMPLE,
        "nothing was uncommented"
    );
    for key in [
        "\nfeature_file = ",
        "\nreasons_header = ",
        "\nfailure_body = ",
        "\n[ratelimit.guard.circuit]",
        "\n[[botscore.routes]]",
        "\n[upstreams.health]",
        "\nmax_recording_bytes = ",
    ] {
        assert!(full.contains(key), "{key:?} was not uncommented:\n{full}");
    }
    // The example's certificate paths, with a certificate made now for `localhost`.
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("edge.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("edge.key"), key.serialize_pem()).unwrap();
    assert!(full.contains("\n[tls]") && full.contains("/etc/ravelin/tls/"));
    let full = full.replace("/etc/ravelin/tls", &dir.path().display().to_string());
    check_config(ConfigSource::Text(full.clone()), &Overrides::default())
        .unwrap_or_else(|e| panic!("{e}\n{full}"));
    check_config(
        ConfigSource::Text(EXAMPLE.to_owned()),
        &Overrides::default(),
    )
    .unwrap();
}
