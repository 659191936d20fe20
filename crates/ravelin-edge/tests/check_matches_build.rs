//! `--check` refuses everything building the modules refuses (issue 12).
//!
//! `check_config` is what `edge-proxy --check`, startup and every reload run: the store's parse
//! and the document's `Validate`, which is each module's own checks (`Module::check`).
//! `try_build` is the build path alone — the server limits, ingress, upstreams and routes, and
//! every module's layer through the module crates' own builders — with no validation first. The
//! tests hold the two together:
//!
//! - `every_build_refusal_is_a_check_refusal_naming_the_field`: a table of bad documents
//!   (`REFUSED`), one per check the build performs; each is refused by the build *and* by
//!   `check_config`, whose message names the field.
//! - `check_and_build_agree_on_every_knob`: every knob (`KNOBS`), at values on both sides of its
//!   bounds; whatever the build refuses, `check_config` refuses naming the knob, and whatever
//!   `check_config` accepts, the build accepts.
//! - `counted_lists_are_bounded_by_check_and_build`: every bounded list and text, at its bound
//!   (accepted, builds) and one past it (refused, naming the field).
//! - `documents_check_accepts_start_and_serve`: every accepted document of those enumerations
//!   (and the example file) starts the edge, which answers a request.
//! - `policy_checks_refuse_what_the_build_would_run`: the checks that are the edge's policy
//!   rather than a build failure, each with its reason.
//! - `the_tables_cover_every_module`: every module of the registry has rows here.
//!
//! Adding a module means adding its checks to `REFUSED` and its knobs to `KNOBS`
//! (`docs/architecture.md`, "How to add a module").

use std::collections::BTreeSet;

use ravelin_edge::{ConfigSource, EdgeConfig, Overrides, check_config, try_build};
use ravelin_test_support::edge::Harness;

/// `check_config` on `text` (with the demo origin asked for, see [`with_demo`]), as
/// `edge-proxy --check` runs it.
fn check(text: &str) -> Result<EdgeConfig, String> {
    check_raw(&with_demo(text))
}

/// `check_config` on `text` as it is.
fn check_raw(text: &str) -> Result<EdgeConfig, String> {
    check_config(ConfigSource::Text(text.to_owned()), &Overrides::default())
}

/// The document parsed without validation, for the build path; `None` when it does not parse
/// (then `check_config` refuses it at the parse, which needs no build to agree with).
fn parse(text: &str) -> Option<EdgeConfig> {
    toml::from_str(&with_demo(text)).ok()
}

/// `text` asking for the demo origin unless it says whether it wants it: most rows name no
/// upstream, which a document may only do with `[demo] enabled = true` (issue 15).
fn with_demo(text: &str) -> String {
    if text.contains("[demo]") {
        text.to_owned()
    } else {
        format!("{text}\n[demo]\nenabled = true\n")
    }
}

/// An upstream for the sections that need one (nothing listens on port 1: nothing here sends a
/// request to it, and starting the edge does not connect).
const UPSTREAM: &str = "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n";

/// One bad document per check the build performs: the field `check_config` must name, and the
/// document. Every row is refused by `try_build`, too (asserted).
const REFUSED: &[(&str, &str)] = &[
    // --- server: `ServerConfig::check`, which `Server::bind` runs ---
    ("server.max_connections", "[server]\nmax_connections = 0\n"),
    (
        "server.max_connections",
        "[server]\nmax_connections = 1000001\n",
    ),
    (
        "server.max_connections_per_ip",
        "[server]\nmax_connections = 10\nmax_connections_per_ip = 11\n",
    ),
    (
        "server.per_ip_ipv4_prefix_len",
        "[server]\nper_ip_ipv4_prefix_len = 33\n",
    ),
    (
        "server.per_ip_ipv6_prefix_len",
        "[server]\nper_ip_ipv6_prefix_len = 0\n",
    ),
    ("server.max_headers", "[server]\nmax_headers = 1025\n"),
    (
        "server.max_header_bytes",
        "[server]\nmax_header_bytes = 8191\n",
    ),
    (
        "server.max_header_bytes",
        "[server]\nmax_header_bytes = 1048577\n",
    ),
    (
        "server.max_concurrent_streams",
        "[server]\nmax_concurrent_streams = 0\n",
    ),
    (
        "server.header_read_timeout",
        "[server]\nheader_read_timeout = \"0s\"\n",
    ),
    (
        "server.request_head_timeout",
        "[server]\nrequest_head_timeout = \"0s\"\n",
    ),
    ("server.idle_timeout", "[server]\nidle_timeout = \"2h\"\n"),
    ("server.send_timeout", "[server]\nsend_timeout = \"0s\"\n"),
    (
        "server.http2_keep_alive_interval",
        "[server]\nhttp2_keep_alive_interval = \"0s\"\n",
    ),
    (
        "server.http2_keep_alive_timeout",
        "[server]\nhttp2_keep_alive_timeout = \"0s\"\n",
    ),
    // --- overload: ravelin-proxy's OverloadConfig (the server and the load shedder) ---
    (
        "overload.overflow_connections",
        "[overload]\noverflow_connections = 10001\n",
    ),
    ("overload.retry_after", "[overload]\nretry_after = \"0s\"\n"),
    // --- ingress: the trusted networks ---
    (
        "ingress.trusted_proxies[1]",
        "[ingress]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
    ),
    (
        "ingress.trusted_proxies[0]",
        "[ingress]\ntrusted_proxies = [\"proxy.example\"]\n",
    ),
    // --- upstreams: `Upstream::builder(..).build()` ---
    (
        "upstreams[0].url",
        "[[upstreams]]\nname = \"origin\"\nurl = \"ftp://127.0.0.1:1\"\n",
    ),
    (
        "upstreams[0].url",
        "[[upstreams]]\nname = \"origin\"\nurl = \"not a url\"\n",
    ),
    (
        "upstreams[0].connect_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nconnect_timeout = \"0s\"\n",
    ),
    (
        "upstreams[0].response_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nresponse_timeout = \"0s\"\n",
    ),
    (
        "upstreams[0].body_idle_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nbody_idle_timeout = \"0s\"\n",
    ),
    (
        "upstreams[0].max_idle_connections",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nmax_idle_connections = 10001\n",
    ),
    (
        "upstreams[0].health.open_for",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.health]\nopen_for = \"1ms\"\n",
    ),
    (
        "upstreams[0].retry.max_retries",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.retry]\nmax_retries = 6\n",
    ),
    (
        "upstreams[0].dns.refresh",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.dns]\nrefresh = \"0s\"\n",
    ),
    (
        "upstreams[0].upgrade_idle_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nupgrade_idle_timeout = \"0s\"\n",
    ),
    (
        "upstreams[0].max_upgraded_connections",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nmax_upgraded_connections = 10001\n",
    ),
    // --- upstream TLS: the files are read by the build, and by the check ---
    (
        "upstreams[0].ca_file",
        "[[upstreams]]\nname = \"origin\"\nurl = \"https://127.0.0.1:1\"\nca_file = \"/nonexistent/ravelin/ca.pem\"\n",
    ),
    (
        "upstreams[0].ca_file",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nca_file = \"/nonexistent/ravelin/ca.pem\"\n",
    ),
    (
        "upstreams[0].client_cert_file",
        "[[upstreams]]\nname = \"origin\"\nurl = \"https://127.0.0.1:1\"\nclient_cert_file = \"/nonexistent/ravelin/client.pem\"\nclient_key_file = \"/nonexistent/ravelin/client.key\"\n",
    ),
    (
        "upstreams[0].client_key_file",
        "[[upstreams]]\nname = \"origin\"\nurl = \"https://127.0.0.1:1\"\nclient_cert_file = \"/nonexistent/ravelin/client.pem\"\n",
    ),
    (
        "upstreams[0].tls_server_name",
        "[[upstreams]]\nname = \"origin\"\nurl = \"https://127.0.0.1:1\"\ntls_server_name = \"not a name!\"\n",
    ),
    // --- tls: the certificates (read and checked by both: a file that does not exist is as
    // refused as a bad one), the acceptor's bounds, the JA4 header ---
    (
        "tls.certificates",
        "[tls]\nlisten = \"127.0.0.1:0\"\ncertificates = []\n",
    ),
    (
        "tls.certificates",
        "[tls]\nlisten = \"127.0.0.1:0\"\n[[tls.certificates]]\ncert_file = \"/nonexistent/edge.pem\"\nkey_file = \"/nonexistent/edge.key\"\n",
    ),
    (
        "tls.handshake_timeout",
        "[tls]\nlisten = \"127.0.0.1:0\"\nhandshake_timeout = \"0s\"\n[[tls.certificates]]\ncert_file = \"/nonexistent/edge.pem\"\nkey_file = \"/nonexistent/edge.key\"\n",
    ),
    (
        "tls.max_handshakes",
        "[tls]\nlisten = \"127.0.0.1:0\"\nmax_handshakes = 65537\n[[tls.certificates]]\ncert_file = \"/nonexistent/edge.pem\"\nkey_file = \"/nonexistent/edge.key\"\n",
    ),
    (
        "tls.ja4_header",
        "[tls]\nlisten = \"127.0.0.1:0\"\nja4_header = \"x ja4\"\n[[tls.certificates]]\ncert_file = \"/nonexistent/edge.pem\"\nkey_file = \"/nonexistent/edge.key\"\n",
    ),
    (
        "tls.certificates[0].server_names[0]",
        "[tls]\nlisten = \"127.0.0.1:0\"\n[[tls.certificates]]\ncert_file = \"/nonexistent/edge.pem\"\nkey_file = \"/nonexistent/edge.key\"\nserver_names = [\"Not A Name\"]\n",
    ),
    // --- routes ---
    (
        "routes[0].upstream",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"elsewhere\"\n",
    ),
    (
        "routes[0].path_prefix",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\npath_prefix = \"api\"\nupstream = \"origin\"\n",
    ),
    (
        "routes[0].host",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\nhost = \"api.example:8080\"\npath_prefix = \"/\"\nupstream = \"origin\"\n",
    ),
    (
        "routes[0].host",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\nhost = \"\"\npath_prefix = \"/\"\nupstream = \"origin\"\n",
    ),
    // --- ratelimit: the module's own bounds, the rule store, the Redis store, the guard ---
    ("ratelimit.capacity", "[ratelimit]\ncapacity = 0\n"),
    ("ratelimit.capacity", "[ratelimit]\ncapacity = 100000001\n"),
    (
        "ratelimit.redis_timeout",
        "[ratelimit]\nredis_timeout = \"0s\"\n",
    ),
    (
        "ratelimit.redis_timeout",
        "[ratelimit]\nredis_timeout = \"30ms\"\n[ratelimit.guard]\ntimeout = \"20ms\"\n",
    ),
    ("ratelimit.store", "[ratelimit]\nstore = \"redis://[::1\"\n"),
    (
        "ratelimit.rules[0].limit",
        "[[ratelimit.rules]]\nname = \"r\"\nlimit = 0\nwindow = \"1s\"\n",
    ),
    (
        "ratelimit.rules[0].window",
        "[[ratelimit.rules]]\nname = \"r\"\nlimit = 1\nwindow = \"0s\"\n",
    ),
    (
        "ratelimit.rules[0].name",
        "[[ratelimit.rules]]\nname = \"\"\nlimit = 1\nwindow = \"1s\"\n",
    ),
    (
        "ratelimit.rules[1].name",
        "[[ratelimit.rules]]\nname = \"r\"\nlimit = 1\nwindow = \"1s\"\n\
         [[ratelimit.rules]]\nname = \"r\"\nlimit = 2\nwindow = \"1s\"\n",
    ),
    (
        "ratelimit.rules[0].match",
        "[[ratelimit.rules]]\nname = \"r\"\nlimit = 1\nwindow = \"1s\"\n\
         match = { path_prefix = \"login\" }\n",
    ),
    (
        "ratelimit.client_ip.ipv4_prefix",
        "[ratelimit.client_ip]\nipv4_prefix = 33\n",
    ),
    (
        "ratelimit.client_ip.trusted_proxies",
        "[ratelimit.client_ip]\ntrusted_proxies = [\"not a network\"]\n",
    ),
    (
        "ratelimit.guard.timeout",
        "[ratelimit.guard]\ntimeout = \"0s\"\n",
    ),
    (
        "ratelimit.guard.failure_status",
        "[ratelimit.guard]\nfailure_status = 200\n",
    ),
    (
        "ratelimit.guard.circuit",
        "[ratelimit.guard.circuit]\nfailure_rate = 1.5\n",
    ),
    // --- botscore: `BotScoreConfig::guard` and the guard layer ---
    (
        "botscore.score_header",
        "[botscore]\nscore_header = \"a b\"\n",
    ),
    (
        "botscore.reasons_header",
        "[botscore]\nreasons_header = \"\"\n",
    ),
    (
        "botscore.verified_header",
        "[botscore]\nverified_header = \"a:b\"\n",
    ),
    (
        "botscore.fingerprint_header",
        "[botscore]\nfingerprint_header = \"x y\"\n",
    ),
    (
        "botscore.watch_interval",
        "[botscore]\nwatch_interval = \"1ms\"\n",
    ),
    (
        "botscore.watch_interval",
        "[botscore]\nwatch_interval = \"2h\"\n",
    ),
    (
        "botscore.routes[0].prefix",
        "[[botscore.routes]]\nprefix = \"login\"\n",
    ),
    (
        "botscore.routes[0]",
        "[[botscore.routes]]\nprefix = \"/login\"\nchallenge_at_or_below = 100\n",
    ),
    (
        "botscore.default_route",
        "[botscore.default_route]\nprefix = \"/\"\nblock_at_or_below = 0\n",
    ),
    (
        "botscore.verified_bots.bots[0]",
        "[[botscore.verified_bots.bots]]\nname = \"x\"\nuser_agent_token = \"X\"\nranges = []\n",
    ),
    (
        "botscore.guard.timeout",
        "[botscore.guard]\ntimeout = \"61s\"\n",
    ),
    (
        "botscore.guard.failure_status",
        "[botscore.guard]\nfailure_status = 99\n",
    ),
    (
        "botscore.guard.circuit",
        "[botscore.guard.circuit]\nwindow = 0\n",
    ),
    // --- cache: `CacheLayer::builder().config(..).build()` ---
    (
        "cache.max_capacity_bytes",
        "[cache]\nmax_capacity_bytes = 0\n",
    ),
    (
        "cache.max_capacity_bytes",
        "[cache]\nmax_capacity_bytes = 17179869185\n",
    ),
    ("cache.max_object_bytes", "[cache]\nmax_object_bytes = 0\n"),
    (
        "cache.max_object_bytes",
        "[cache]\nmax_capacity_bytes = 1048576\nmax_object_bytes = 1048577\n",
    ),
    (
        "cache.max_recording_bytes",
        "[cache]\nmax_recording_bytes = 1\n",
    ),
    (
        "cache.range_fill_max_bytes",
        "[cache]\nmax_object_bytes = 1024\nrange_fill_max_bytes = 1025\n",
    ),
    (
        "cache.coalesce_timeout",
        "[cache]\ncoalesce_timeout = \"0s\"\n",
    ),
    (
        "cache.coalesce_timeout",
        "[cache]\ncoalesce_timeout = \"301s\"\n",
    ),
    (
        "cache.background_timeout",
        "[cache]\nbackground_timeout = \"0s\"\n",
    ),
    (
        "cache.heuristic_fraction",
        "[cache]\nheuristic_fraction = 1.5\n",
    ),
    ("cache.max_inflight", "[cache]\nmax_inflight = 0\n"),
    (
        "cache.max_tags_per_object",
        "[cache]\nmax_tags_per_object = 1025\n",
    ),
    (
        "cache.targeted_fields[0]",
        "[cache]\ntargeted_fields = [\"a b\"]\n",
    ),
    ("cache.name", "[cache]\nname = \"1cache\"\n"),
    // --- cache.purge_bus (issue 16): the bus is built with the cache ---
    (
        "cache.purge_bus.redis_url",
        "[cache.purge_bus]\nredis_url = \"\"\n",
    ),
    (
        "cache.purge_bus.redis_url",
        "[cache.purge_bus]\nredis_url = \"http://127.0.0.1:6379\"\n",
    ),
    (
        "cache.purge_bus.max_len",
        "[cache.purge_bus]\nredis_url = \"redis://127.0.0.1:6379\"\nmax_len = 0\n",
    ),
    (
        "cache.purge_bus.timeout",
        "[cache.purge_bus]\nredis_url = \"redis://127.0.0.1:6379\"\ntimeout = \"0s\"\n",
    ),
    (
        "cache.purge_bus.instance",
        "[cache.purge_bus]\nredis_url = \"redis://127.0.0.1:6379\"\ninstance = \"a b\"\n",
    ),
    // --- cache.shared_tier (issue 16): the tier is built with the cache layer ---
    (
        "cache.shared_tier.redis_url",
        "[cache.shared_tier]\nredis_url = \"\"\n",
    ),
    (
        "cache.shared_tier.redis_url",
        "[cache.shared_tier]\nredis_url = \"http://127.0.0.1:6379\"\n",
    ),
    (
        "cache.shared_tier.timeout",
        "[cache.shared_tier]\nredis_url = \"redis://127.0.0.1:6379\"\ntimeout = \"0s\"\n",
    ),
    (
        "cache.shared_tier.min_object_bytes",
        "[cache.shared_tier]\nredis_url = \"redis://127.0.0.1:6379\"\nmax_object_bytes = 4096\nmin_object_bytes = 4096\n",
    ),
    (
        "cache.shared_tier.max_puts_in_flight",
        "[cache.shared_tier]\nredis_url = \"redis://127.0.0.1:6379\"\nmax_puts_in_flight = 0\n",
    ),
    // --- cache.warm_restart (issue 16): checked with the cache's config, no feature ---
    (
        "cache.warm_restart.path",
        "[cache.warm_restart]\npath = \"relative/cache.snapshot\"\n",
    ),
    ("cache.warm_restart.path", "[cache.warm_restart]\n"),
    (
        "cache.warm_restart.max_entries",
        "[cache.warm_restart]\npath = \"/tmp/ravelin-cache.snapshot\"\nmax_entries = 0\n",
    ),
    (
        "cache.warm_restart.max_bytes",
        "[cache]\nmax_capacity_bytes = 67108864\n[cache.warm_restart]\npath = \"/tmp/ravelin-cache.snapshot\"\n",
    ),
    (
        "cache.warm_restart.save_timeout",
        "[cache.warm_restart]\npath = \"/tmp/ravelin-cache.snapshot\"\nsave_timeout = \"0s\"\n",
    ),
    // --- bot routes' kill switches (issue 15): names a switch and a URL segment can hold ---
    (
        "botscore.routes[0].name",
        "[[botscore.routes]]\nprefix = \"/a\"\nname = \"a b\"\n",
    ),
    (
        "botscore.routes[1].name",
        "[[botscore.routes]]\nprefix = \"/a\"\nname = \"x\"\n[[botscore.routes]]\nprefix = \"/b\"\nname = \"x\"\n",
    ),
    (
        "botscore.default_route.killed",
        "[botscore.default_route]\nprefix = \"/\"\nkilled = true\n",
    ),
];

/// A knob of the document: the field `check_config` must name when it refuses a value, the
/// document with `{v}` where the value goes, and values on both sides of its bounds.
struct Knob {
    field: &'static str,
    template: &'static str,
    values: &'static [&'static str],
    /// Whether some value is out of bounds (else every value must be accepted).
    bounded: bool,
}

/// A knob with bounds: among `values`, at least one is accepted and one refused.
const fn knob(
    field: &'static str,
    template: &'static str,
    values: &'static [&'static str],
) -> Knob {
    Knob {
        field,
        template,
        values,
        bounded: true,
    }
}

/// A knob every one of whose `values` is accepted, however odd (a missing feature file: the
/// compiled-in model serves).
const fn unbounded(
    field: &'static str,
    template: &'static str,
    values: &'static [&'static str],
) -> Knob {
    Knob {
        field,
        template,
        values,
        bounded: false,
    }
}

const DURATIONS: &[&str] = &["\"0s\"", "\"1ms\"", "\"1s\"", "\"1h\"", "\"61m\""];

/// The server's durations: no 1 ms here, since the started edge must still answer a request
/// whose head takes longer than that to arrive.
const SERVER_DURATIONS: &[&str] = &["\"0s\"", "\"1s\"", "\"1h\"", "\"61m\""];

/// Every setting whose value the build looks at, at values on both sides of its bounds. Each
/// knob must have at least one accepted and one refused value (asserted), so the enumeration
/// exercises a bound rather than a default.
const KNOBS: &[Knob] = &[
    // server
    knob(
        "server.max_connections",
        "[server]\nmax_connections = {v}\n",
        &["0", "1", "1000000", "1000001"],
    ),
    knob(
        "server.max_connections_per_ip",
        "[server]\nmax_connections = 100\nmax_connections_per_ip = {v}\n",
        &["0", "1", "100", "101"],
    ),
    knob(
        "server.per_ip_ipv4_prefix_len",
        "[server]\nper_ip_ipv4_prefix_len = {v}\n",
        &["0", "1", "32", "33"],
    ),
    knob(
        "server.per_ip_ipv6_prefix_len",
        "[server]\nper_ip_ipv6_prefix_len = {v}\n",
        &["0", "1", "128", "129"],
    ),
    knob(
        "server.max_headers",
        "[server]\nmax_headers = {v}\n",
        &["0", "2", "1024", "1025"],
    ),
    knob(
        "server.max_header_bytes",
        "[server]\nmax_header_bytes = {v}\n",
        &["0", "8191", "8192", "1048576", "1048577"],
    ),
    knob(
        "server.max_concurrent_streams",
        "[server]\nmax_concurrent_streams = {v}\n",
        &["0", "1", "10000", "10001"],
    ),
    knob(
        "server.header_read_timeout",
        "[server]\nheader_read_timeout = {v}\n",
        SERVER_DURATIONS,
    ),
    knob(
        "server.request_head_timeout",
        "[server]\nrequest_head_timeout = {v}\n",
        SERVER_DURATIONS,
    ),
    knob(
        "server.idle_timeout",
        "[server]\nidle_timeout = {v}\n",
        SERVER_DURATIONS,
    ),
    knob(
        "server.http2_keep_alive_interval",
        "[server]\nhttp2_keep_alive_interval = {v}\n",
        SERVER_DURATIONS,
    ),
    knob(
        "server.http2_keep_alive_timeout",
        "[server]\nhttp2_keep_alive_timeout = {v}\n",
        SERVER_DURATIONS,
    ),
    knob(
        "server.shutdown_timeout",
        "[server]\nshutdown_timeout = {v}\n",
        &["\"0s\"", "\"1s\"", "\"1h\"", "\"2h\""],
    ),
    // overload
    knob(
        "overload.max_requests",
        "[overload]\nmax_requests = {v}\n",
        &["0", "1", "1000000", "1000001"],
    ),
    knob(
        "overload.overflow_connections",
        "[overload]\noverflow_connections = {v}\n",
        &["0", "1", "10000", "10001"],
    ),
    knob(
        "overload.retry_after",
        "[overload]\nretry_after = {v}\n",
        &[
            "\"0s\"",
            "\"999ms\"",
            "\"1s\"",
            "\"1500ms\"",
            "\"1h\"",
            "\"61m\"",
        ],
    ),
    // ingress
    knob(
        "ingress.trusted_proxies",
        "[ingress]\ntrusted_proxies = [{v}]\n",
        &[
            "\"10.0.0.0/8\"",
            "\"::1\"",
            "\"192.0.2.1\"",
            "\"10.0.0.0/33\"",
            "\"fe80::/129\"",
            "\"proxy.example\"",
            "\"\"",
        ],
    ),
    // upstreams
    knob(
        "upstreams[0].url",
        "[[upstreams]]\nname = \"origin\"\nurl = {v}\n",
        &[
            "\"http://127.0.0.1:1\"",
            "\"http://127.0.0.1:1/base\"",
            "\"http://localhost:1\"",
            "\"https://127.0.0.1:1\"",
            "\"ftp://127.0.0.1:1\"",
            "\"http://\"",
            "\"127.0.0.1:1\"",
            "\"http://127.0.0.1:1/?q=1\"",
            "\"\"",
        ],
    ),
    knob(
        "upstreams[0].connect_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nconnect_timeout = {v}\n",
        DURATIONS,
    ),
    knob(
        "upstreams[0].response_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nresponse_timeout = {v}\n",
        DURATIONS,
    ),
    knob(
        "upstreams[0].body_idle_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nbody_idle_timeout = {v}\n",
        DURATIONS,
    ),
    knob(
        "upstreams[0].upgrade_idle_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nupgrade_idle_timeout = {v}\n",
        DURATIONS,
    ),
    knob(
        "upstreams[0].max_upgraded_connections",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nmax_upgraded_connections = {v}\n",
        &["0", "1", "1000", "10000", "10001"],
    ),
    knob(
        "upstreams[0].tls_server_name",
        "[[upstreams]]\nname = \"origin\"\nurl = \"https://127.0.0.1:1\"\ntls_server_name = {v}\n",
        &["\"origin.test\"", "\"127.0.0.1\"", "\"\"", "\"a b\""],
    ),
    knob(
        "upstreams[0].max_idle_connections",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\nmax_idle_connections = {v}\n",
        &["0", "1", "64", "100000", "100000000"],
    ),
    knob(
        "upstreams[0].name",
        "[[upstreams]]\nname = {v}\nurl = \"http://127.0.0.1:1\"\n",
        &["\"origin\"", "\"\"", "\"a b\""],
    ),
    knob(
        "upstreams[0].health.consecutive_failures",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.health]\nconsecutive_failures = {v}\n",
        &["0", "1", "1000", "1001"],
    ),
    knob(
        "upstreams[0].health.open_for",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.health]\nopen_for = {v}\n",
        &["\"0s\"", "\"99ms\"", "\"100ms\"", "\"60s\"", "\"61m\""],
    ),
    knob(
        "upstreams[0].health.max_open_for",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.health]\nopen_for = \"5s\"\nmax_open_for = {v}\n",
        &["\"4s\"", "\"5s\"", "\"1h\"", "\"61m\""],
    ),
    knob(
        "upstreams[0].retry.max_retries",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.retry]\nmax_retries = {v}\n",
        &["0", "1", "5", "6"],
    ),
    knob(
        "upstreams[0].retry.budget_ratio",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.retry]\nbudget_ratio = {v}\n",
        &["-0.1", "0.0", "0.1", "1.0", "1.1", "nan"],
    ),
    knob(
        "upstreams[0].retry.min_retries_per_second",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.retry]\nmin_retries_per_second = {v}\n",
        &["0", "3", "1000", "1001"],
    ),
    knob(
        "upstreams[0].retry.backoff_base",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.retry]\nbackoff_max = \"30s\"\nbackoff_base = {v}\n",
        &["\"0s\"", "\"25ms\"", "\"10s\"", "\"11s\""],
    ),
    knob(
        "upstreams[0].retry.backoff_max",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.retry]\nbackoff_base = \"25ms\"\nbackoff_max = {v}\n",
        &["\"24ms\"", "\"25ms\"", "\"30s\"", "\"31s\""],
    ),
    knob(
        "upstreams[0].dns.refresh",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.dns]\nrefresh = {v}\n",
        &["\"0s\"", "\"999ms\"", "\"1s\"", "\"1h\"", "\"61m\""],
    ),
    knob(
        "upstreams[0].dns.lookup_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n[upstreams.dns]\nlookup_timeout = {v}\n",
        &["\"0s\"", "\"9ms\"", "\"10ms\"", "\"60s\"", "\"61s\""],
    ),
    // routes
    knob(
        "routes[0].path_prefix",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\nupstream = \"origin\"\npath_prefix = {v}\n",
        &[
            "\"/\"",
            "\"/api\"",
            "\"/api/\"",
            "\"api\"",
            "\"\"",
            "\"/a?b\"",
            "\"/a#b\"",
            "\"/a/../b\"",
        ],
    ),
    knob(
        "routes[0].host",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\nupstream = \"origin\"\npath_prefix = \"/\"\nhost = {v}\n",
        &[
            "\"api.example\"",
            "\"api.example.\"",
            "\"[::1]\"",
            "\"127.0.0.1\"",
            "\"api.example:80\"",
            "\"\"",
            "\"a b\"",
            "\"[::1\"",
        ],
    ),
    knob(
        "routes[0].response_timeout",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\nupstream = \"origin\"\npath_prefix = \"/\"\nresponse_timeout = {v}\n",
        DURATIONS,
    ),
    knob(
        "routes[0].upstream",
        "[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = {v}\n",
        &["\"origin\"", "\"\"", "\"other\""],
    ),
    // ratelimit
    knob(
        "ratelimit.capacity",
        "[ratelimit]\ncapacity = {v}\n",
        &["0", "1", "1000000", "100000001"],
    ),
    knob(
        "ratelimit.redis_timeout",
        "[ratelimit]\nredis_timeout = {v}\n",
        &["\"0s\"", "\"1ms\"", "\"20ms\"", "\"21ms\"", "\"2m\""],
    ),
    knob(
        "ratelimit.redis_timeout",
        "[ratelimit]\nredis_timeout = {v}\n[ratelimit.guard]\ntimeout = \"60s\"\n",
        &["\"1ms\"", "\"60s\"", "\"61s\""],
    ),
    knob(
        "ratelimit.store",
        "[ratelimit]\nstore = {v}\n",
        &[
            "\"memory\"",
            "\"redis://127.0.0.1:1/0\"",
            "\"redis://127.0.0.1:1\"",
            "\"redis://user:secret@127.0.0.1:1/0\"",
            "\"redis://[::1\"",
            "\"redis://127.0.0.1:1/x\"",
            "\"redis://127.0.0.1:99999\"",
        ],
    ),
    knob(
        "ratelimit.rules[0].limit",
        "[[ratelimit.rules]]\nname = \"r\"\nwindow = \"1s\"\nlimit = {v}\n",
        &["0", "1", "1000000000", "1000000001"],
    ),
    knob(
        "ratelimit.rules[0].window",
        "[[ratelimit.rules]]\nname = \"r\"\nlimit = 1\nwindow = {v}\n",
        &[
            "\"0s\"",
            "\"1s\"",
            "\"1500ms\"",
            "\"366days\"",
            "\"367days\"",
        ],
    ),
    knob(
        "ratelimit.rules[0].burst",
        "[[ratelimit.rules]]\nname = \"r\"\nlimit = 10\nwindow = \"1s\"\nburst = {v}\n",
        &["0", "1", "10", "1000000000", "1000000001"],
    ),
    knob(
        "ratelimit.rules[0].cost",
        "[[ratelimit.rules]]\nname = \"r\"\nlimit = 10\nwindow = \"1s\"\ncost = {v}\n",
        &["0", "1", "10", "11"],
    ),
    knob(
        "ratelimit.rules[0].key",
        "[[ratelimit.rules]]\nname = \"r\"\nlimit = 10\nwindow = \"1s\"\nkey = {v}\n",
        &[
            "[]",
            "[\"client_ip\", \"method\", \"path\", \"host\"]",
            "[\"header:x-api-key\"]",
            "[\"client_ip\", \"method\", \"path\", \"host\", \"header:x-a\"]",
            "[\"client_ip\", \"client_ip\"]",
        ],
    ),
    knob(
        "ratelimit.rules[0].name",
        "[[ratelimit.rules]]\nlimit = 10\nwindow = \"1s\"\nname = {v}\n",
        &[
            "\"per-ip\"",
            "\"\"",
            "\"a b\"",
            "\"a\\\"b\"",
            "\"a,b\"",
            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
        ],
    ),
    knob(
        "ratelimit.rules[0].match",
        "[[ratelimit.rules]]\nname = \"r\"\nlimit = 10\nwindow = \"1s\"\nmatch = {v}\n",
        &[
            "{ methods = [\"POST\"], path_prefix = \"/login\" }",
            "{ methods = [] }",
            "{ methods = [\"post\"] }",
            "{ methods = [\"PO ST\"] }",
            "{ path_prefix = \"login\" }",
            "{ path_prefix = \"/a?b\" }",
        ],
    ),
    knob(
        "ratelimit.client_ip",
        "[ratelimit.client_ip]\nipv4_prefix = {v}\n",
        &["0", "1", "32", "33"],
    ),
    knob(
        "ratelimit.client_ip",
        "[ratelimit.client_ip]\nipv6_prefix = {v}\n",
        &["0", "1", "128", "129"],
    ),
    knob(
        "ratelimit.client_ip",
        "[ratelimit.client_ip]\nheader = {v}\n",
        &[
            "\"x-forwarded-for\"",
            "\"forwarded\"",
            "\"x-real-ip\"",
            "\"\"",
            "\"a b\"",
        ],
    ),
    knob(
        "ratelimit.client_ip.trusted_proxies",
        "[ratelimit.client_ip]\ntrusted_proxies = [{v}]\n",
        &["\"10.0.0.0/8\"", "\"::1\"", "\"10.0.0.0/33\"", "\"x\""],
    ),
    // the guard policy, failsafe's GuardConfig (the same type under every guard module)
    knob(
        "ratelimit.guard.timeout",
        "[ratelimit]\nredis_timeout = \"1ms\"\n[ratelimit.guard]\ntimeout = {v}\n",
        &["\"0s\"", "\"1ms\"", "\"60s\"", "\"61s\""],
    ),
    knob(
        "botscore.guard.timeout",
        "[botscore.guard]\ntimeout = {v}\n",
        &["\"0s\"", "\"1ms\"", "\"60s\"", "\"61s\""],
    ),
    knob(
        "botscore.guard.failure_status",
        "[botscore.guard]\nfailure_status = {v}\n",
        &["0", "200", "399", "400", "429", "503", "599", "600"],
    ),
    knob(
        "ratelimit.guard.circuit",
        "[ratelimit.guard.circuit]\nfailure_rate = {v}\n",
        &["-0.1", "0.0", "0.01", "0.5", "1.0", "1.5", "nan", "inf"],
    ),
    knob(
        "ratelimit.guard.circuit",
        "[ratelimit.guard.circuit]\nwindow = {v}\n",
        &["0", "1", "20", "100", "4096", "4097"],
    ),
    knob(
        "ratelimit.guard.circuit",
        "[ratelimit.guard.circuit]\nminimum_calls = {v}\n",
        &["0", "1", "100", "101", "4097"],
    ),
    knob(
        "ratelimit.guard.circuit",
        "[ratelimit.guard.circuit]\nopen_for = {v}\n",
        &[
            "\"0s\"",
            "\"1ms\"",
            "\"10s\"",
            "\"1h\"",
            "\"2h\"",
            "\"400days\"",
        ],
    ),
    knob(
        "ratelimit.guard.circuit",
        "[ratelimit.guard.circuit]\nhalf_open_probes = {v}\n",
        &["0", "1", "3", "1024", "1025", "100000"],
    ),
    knob(
        "ratelimit.guard.circuit",
        "[ratelimit.guard.circuit]\nhalf_open_successes = {v}\n",
        &["0", "1", "3", "1024", "1025", "100000"],
    ),
    knob(
        "ratelimit.guard.circuit",
        "[ratelimit.guard.circuit]\nmax_half_open = {v}\n",
        &[
            "\"0s\"",
            "\"1ms\"",
            "\"30s\"",
            "\"1h\"",
            "\"2h\"",
            "\"400days\"",
        ],
    ),
    knob(
        "botscore.guard.circuit",
        "[botscore.guard.circuit]\ndisabled = true\nwindow = {v}\n",
        &["0", "20", "4096", "4097"],
    ),
    // botscore
    knob(
        "botscore.watch_interval",
        "[botscore]\nwatch_interval = {v}\n",
        &[
            "\"0s\"", "\"1ms\"", "\"9ms\"", "\"10ms\"", "\"1h\"", "\"61m\"",
        ],
    ),
    unbounded(
        "botscore.feature_file",
        "[botscore]\nfeature_file = {v}\n",
        &[
            "\"{dir}/missing.json\"",
            "\"{dir}\"",
            "\"/nonexistent/bot.json\"",
            "\"\"",
        ],
    ),
    knob(
        "botscore.score_header",
        "[botscore]\nscore_header = {v}\n",
        &[
            "\"x-bot-score\"",
            "\"x-edge-score\"",
            "\"X-Upper\"",
            "\"\"",
            "\"a b\"",
            "\"é\"",
        ],
    ),
    knob(
        "botscore.reasons_header",
        "[botscore]\nreasons_header = {v}\n",
        &["\"x-bot-score-reasons\"", "\"\"", "\"a b\""],
    ),
    knob(
        "botscore.verified_header",
        "[botscore]\nverified_header = {v}\n",
        &["\"x-bot-verified\"", "\"\"", "\"a b\""],
    ),
    knob(
        "botscore.fingerprint_header",
        "[botscore]\nfingerprint_header = {v}\n",
        &["\"x-ja4\"", "\"\"", "\"a b\""],
    ),
    knob(
        "botscore.routes[0]",
        "[[botscore.routes]]\nprefix = \"/login\"\nmode = \"enforce\"\nchallenge_at_or_below = {v}\n",
        &["0", "1", "50", "99", "100"],
    ),
    knob(
        "botscore.routes[0]",
        "[[botscore.routes]]\nprefix = \"/login\"\nmode = \"enforce\"\nblock_at_or_below = {v}\n",
        &["0", "1", "99", "100"],
    ),
    knob(
        "botscore.routes[0].prefix",
        "[[botscore.routes]]\nprefix = {v}\n",
        &[
            "\"/\"",
            "\"/login\"",
            "\"login\"",
            "\"\"",
            "\"/a?b\"",
            "\"/a#b\"",
        ],
    ),
    knob(
        "botscore.routes[0].block",
        "[[botscore.routes]]\nprefix = \"/login\"\n[botscore.routes.block]\nstatus = {v}\n",
        &["0", "200", "403", "429", "599", "600"],
    ),
    knob(
        "botscore.routes[0].challenge",
        "[[botscore.routes]]\nprefix = \"/login\"\n[botscore.routes.challenge]\nstatus = 403\ncontent_type = {v}\n",
        &[
            "\"text/html\"",
            "\"text/html; charset=utf-8\"",
            "\"\"",
            "\"a\\nb\"",
        ],
    ),
    knob(
        "botscore.default_route",
        "[botscore.default_route]\nprefix = \"/\"\nchallenge_at_or_below = {v}\n",
        &["0", "1", "99", "100"],
    ),
    knob(
        "botscore.verified_bots.bots[0]",
        "[[botscore.verified_bots.bots]]\nname = \"x\"\nuser_agent_token = \"Examplebot\"\nranges = [{v}]\n",
        &[
            "\"66.249.64.0/19\"",
            "\"2001:4860:4801::/48\"",
            "\"66.249.64.0/33\"",
            "\"x\"",
        ],
    ),
    knob(
        "botscore.verified_bots.bots[0]",
        "[[botscore.verified_bots.bots]]\nranges = [\"66.249.64.0/19\"]\nname = \"x\"\nuser_agent_token = {v}\n",
        &[
            "\"Googlebot\"",
            "\"Abc\"",
            "\"Ab\"",
            "\"\"",
            "\"Bot with\\nnewline\"",
        ],
    ),
    // cache
    knob(
        "cache.max_capacity_bytes",
        "[cache]\nmax_object_bytes = 1024\nmax_capacity_bytes = {v}\n",
        &["0", "1048575", "1048576", "268435456", "17179869185"],
    ),
    knob(
        "cache.max_object_bytes",
        "[cache]\nmax_capacity_bytes = 1048576\nmax_object_bytes = {v}\n",
        &["0", "1", "262144", "1048576", "1048577"],
    ),
    knob(
        "cache.max_object_bytes",
        "[cache]\nmax_capacity_bytes = 17179869184\nmax_object_bytes = {v}\n",
        &["1", "1073741824", "1073741825"],
    ),
    knob(
        "cache.max_recording_bytes",
        "[cache]\nmax_recording_bytes = {v}\n",
        &["0", "1", "8388607", "8388608", "4294967296", "4294967297"],
    ),
    knob(
        "cache.range_fill_max_bytes",
        "[cache]\nmax_object_bytes = 1024\nrange_fill_max_bytes = {v}\n",
        &["0", "1", "1024", "1025"],
    ),
    knob(
        "cache.heuristic_fraction",
        "[cache]\nheuristic_fraction = {v}\n",
        &["-0.1", "0.0", "0.1", "1.0", "1.1", "nan", "inf"],
    ),
    knob(
        "cache.heuristic_max",
        "[cache]\nheuristic_max = {v}\n",
        &[
            "\"0s\"",
            "\"1d\"",
            "\"365days\"",
            "\"367days\"",
            "\"100years\"",
        ],
    ),
    knob(
        "cache.stale_while_revalidate",
        "[cache]\nstale_while_revalidate = {v}\n",
        &["\"0s\"", "\"10s\"", "\"367days\"", "\"100years\""],
    ),
    knob(
        "cache.stale_if_error",
        "[cache]\nstale_if_error = {v}\n",
        &["\"0s\"", "\"5m\"", "\"367days\"", "\"100years\""],
    ),
    knob(
        "cache.stale_if_error_timeout",
        "[cache]\nstale_if_error_timeout = {v}\n",
        &["\"0s\"", "\"1ms\"", "\"300s\"", "\"301s\""],
    ),
    knob(
        "cache.coalesce_timeout",
        "[cache]\ncoalesce_timeout = {v}\n",
        &["\"0s\"", "\"1ms\"", "\"300s\"", "\"301s\""],
    ),
    knob(
        "cache.coalesce_timeout",
        "[cache]\ncoalesce = false\ncoalesce_timeout = {v}\n",
        &["\"0s\"", "\"1s\""],
    ),
    knob(
        "cache.max_inflight",
        "[cache]\nmax_inflight = {v}\n",
        &["0", "1", "65536", "65537"],
    ),
    knob(
        "cache.background_timeout",
        "[cache]\nbackground_timeout = {v}\n",
        &["\"0s\"", "\"1ms\"", "\"3600s\"", "\"3601s\""],
    ),
    knob(
        "cache.max_tags_per_object",
        "[cache]\nmax_tags_per_object = {v}\n",
        &["0", "1", "1024", "1025"],
    ),
    knob(
        "cache.targeted_fields",
        "[cache]\ntargeted_fields = [{v}]\n",
        &[
            "\"cdn-cache-control\"",
            "\"ravelin-cache-control\"",
            "\"\"",
            "\"a b\"",
            "\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\"",
        ],
    ),
    knob(
        "cache.surrogate_key_fields",
        "[cache]\nsurrogate_key_fields = [{v}]\n",
        &["\"surrogate-key\"", "\"\"", "\"a b\""],
    ),
    knob(
        "cache.name",
        "[cache]\nname = {v}\n",
        &[
            "\"ravelin\"",
            "\"edge-1\"",
            "\"\"",
            "\"1edge\"",
            "\"a b\"",
            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
        ],
    ),
];

/// A list or text with a bound on its length: the field `check_config` must name, the bound,
/// and the document with `n` entries (or bytes). At the bound the document is accepted and
/// builds; one past it, `check_config` refuses it (asserted).
struct Counted {
    field: &'static str,
    limit: usize,
    document: fn(usize) -> String,
}

/// `n` TOML strings, `[...]`-ready: `"<f(0)>", "<f(1)>", …`.
fn strings(n: usize, f: impl Fn(usize) -> String) -> String {
    (0..n)
        .map(|i| format!("\"{}\"", f(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `i`-th of many distinct networks.
fn network(i: usize) -> String {
    format!("10.{}.{}.0/24", i / 256, i % 256)
}

fn counted() -> Vec<Counted> {
    vec![
        Counted {
            field: "upstreams",
            limit: ravelin_edge::config::MAX_UPSTREAMS,
            document: |n| {
                (0..n)
                    .map(|i| {
                        format!("[[upstreams]]\nname = \"u{i}\"\nurl = \"http://127.0.0.1:1\"\n")
                    })
                    .collect()
            },
        },
        Counted {
            field: "routes",
            limit: ravelin_edge::config::MAX_ROUTES,
            document: |n| {
                let routes: String = (0..n)
                    .map(|i| {
                        format!("[[routes]]\npath_prefix = \"/r{i}\"\nupstream = \"origin\"\n")
                    })
                    .collect();
                format!("{UPSTREAM}{routes}")
            },
        },
        Counted {
            field: "routes[0].path_prefix",
            limit: ravelin_http::MAX_PREFIX_BYTES,
            document: |n| {
                format!(
                    "{UPSTREAM}[[routes]]\npath_prefix = \"/{}\"\nupstream = \"origin\"\n",
                    "a".repeat(n - 1)
                )
            },
        },
        Counted {
            field: "ingress.trusted_proxies",
            limit: 1024,
            document: |n| format!("[ingress]\ntrusted_proxies = [{}]\n", strings(n, network)),
        },
        Counted {
            field: "admin.allowed_hosts",
            limit: 64,
            document: |n| {
                format!(
                    "[admin]\nallowed_hosts = [{}]\n",
                    strings(n, |i| format!("h{i}.example"))
                )
            },
        },
        Counted {
            field: "ratelimit.rules",
            limit: ravelin_ratelimit::MAX_RULES,
            document: |n| {
                (0..n)
                    .map(|i| {
                        format!(
                            "[[ratelimit.rules]]\nname = \"r{i}\"\nlimit = 1\nwindow = \"1s\"\n"
                        )
                    })
                    .collect()
            },
        },
        Counted {
            field: "ratelimit.rules[0].match",
            // ravelin-ratelimit's MAX_METHODS (not exported).
            limit: 16,
            document: |n| {
                format!(
                    "[[ratelimit.rules]]\nname = \"r\"\nlimit = 1\nwindow = \"1s\"\n\
                     match = {{ methods = [{}] }}\n",
                    strings(n, |i| format!("M{i}"))
                )
            },
        },
        Counted {
            field: "ratelimit.rules[0].match",
            limit: ravelin_http::MAX_PREFIX_BYTES,
            document: |n| {
                format!(
                    "[[ratelimit.rules]]\nname = \"r\"\nlimit = 1\nwindow = \"1s\"\n\
                     match = {{ path_prefix = \"/{}\" }}\n",
                    "a".repeat(n - 1)
                )
            },
        },
        Counted {
            field: "ratelimit.client_ip.trusted_proxies",
            // ravelin-ratelimit's MAX_TRUSTED_PROXIES (not exported).
            limit: 1024,
            document: |n| {
                format!(
                    "[ratelimit.client_ip]\ntrusted_proxies = [{}]\n",
                    strings(n, network)
                )
            },
        },
        Counted {
            field: "ratelimit.guard.failure_body",
            limit: ravelin_failsafe::MAX_FAILURE_BODY_BYTES,
            document: |n| format!("[ratelimit.guard]\nfailure_body = \"{}\"\n", "x".repeat(n)),
        },
        Counted {
            field: "botscore.guard.failure_body",
            limit: ravelin_failsafe::MAX_FAILURE_BODY_BYTES,
            document: |n| format!("[botscore.guard]\nfailure_body = \"{}\"\n", "x".repeat(n)),
        },
        Counted {
            field: "botscore.routes",
            limit: ravelin_botscore::MAX_ROUTES,
            document: |n| {
                (0..n)
                    .map(|i| format!("[[botscore.routes]]\nprefix = \"/r{i}\"\n"))
                    .collect()
            },
        },
        Counted {
            field: "botscore.routes[0].prefix",
            limit: ravelin_http::MAX_PREFIX_BYTES,
            document: |n| format!("[[botscore.routes]]\nprefix = \"/{}\"\n", "a".repeat(n - 1)),
        },
        Counted {
            field: "botscore.routes[0].block.body",
            limit: ravelin_botscore::MAX_BODY_BYTES,
            document: |n| {
                format!(
                    "[[botscore.routes]]\nprefix = \"/x\"\n[botscore.routes.block]\nstatus = 403\n\
                     body = \"{}\"\n",
                    "x".repeat(n)
                )
            },
        },
        Counted {
            field: "botscore.verified_bots.bots",
            limit: ravelin_botscore::MAX_VERIFIED_BOTS,
            document: |n| {
                (0..n)
                    .map(|i| {
                        format!(
                            "[[botscore.verified_bots.bots]]\nname = \"b{i}\"\n\
                             user_agent_token = \"Bot{i}x\"\nranges = [\"{}\"]\n",
                            network(i)
                        )
                    })
                    .collect()
            },
        },
        Counted {
            field: "botscore.verified_bots.bots[0].ranges",
            limit: ravelin_botscore::MAX_RANGES_PER_BOT,
            document: |n| {
                format!(
                    "[[botscore.verified_bots.bots]]\nname = \"b\"\nuser_agent_token = \"Examplebot\"\n\
                     ranges = [{}]\n",
                    strings(n, network)
                )
            },
        },
    ]
}

/// The document of `knob` at `value`.
fn document(knob: &Knob, value: &str) -> String {
    knob.template.replace("{v}", value)
}

/// `{dir}` in a document (a feature-file path) for the checks without a harness: a directory
/// that exists, as the harness's temporary directory does.
fn without_harness(text: &str) -> String {
    text.replace("{dir}", &std::env::temp_dir().display().to_string())
}

#[tokio::test]
async fn every_build_refusal_is_a_check_refusal_naming_the_field() {
    for (field, text) in REFUSED {
        let config = parse(text).unwrap_or_else(|| panic!("the table's documents parse:\n{text}"));
        let built = try_build(&config);
        assert!(
            built.is_err(),
            "the build accepts a document the table says it refuses ({field}):\n{text}"
        );
        let checked = check(text).map(drop);
        let Err(message) = checked else {
            panic!(
                "--check accepts a document the build refuses ({:?}):\n{text}",
                built
            );
        };
        assert!(
            message.contains(field),
            "--check refuses, but does not name {field}: {message}\n(build: {built:?})\n{text}"
        );
    }
}

#[tokio::test]
async fn check_and_build_agree_on_every_knob() {
    let mut failures = Vec::new();
    for knob in KNOBS {
        let (mut accepted, mut refused) = (0, 0);
        for value in knob.values {
            let text = without_harness(&document(knob, value));
            let checked = check(&text).map(drop);
            let Some(config) = parse(&text) else {
                // Refused by the parse (an unknown variant, a negative count): `check_config`
                // parses the same way, and nothing reaches the build.
                assert!(checked.is_err(), "{text}");
                refused += 1;
                continue;
            };
            let built = try_build(&config);
            match (&checked, &built) {
                (Ok(()), Ok(())) => accepted += 1,
                (Err(message), _) if !message.contains(knob.field) => failures.push(format!(
                    "{} = {value}: --check refuses without naming {}: {message}",
                    knob.field, knob.field
                )),
                (Err(_), _) => refused += 1,
                (Ok(()), Err(reason)) => failures.push(format!(
                    "{} = {value}: --check accepts what the build refuses: {reason}",
                    knob.field
                )),
            }
        }
        if accepted == 0 || (refused == 0) == knob.bounded {
            failures.push(format!(
                "{} ({:?}): {accepted} value(s) accepted, {refused} refused; {}",
                knob.field,
                knob.template,
                if knob.bounded {
                    "a bounded knob needs both"
                } else {
                    "an unbounded knob refuses none"
                }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn counted_lists_are_bounded_by_check_and_build() {
    for list in counted() {
        let at = (list.document)(list.limit);
        check(&at).unwrap_or_else(|e| panic!("{} at its bound ({}): {e}", list.field, list.limit));
        try_build(&parse(&at).unwrap())
            .unwrap_or_else(|e| panic!("{} at its bound ({}): {e}", list.field, list.limit));
        let over = (list.document)(list.limit + 1);
        let message = check(&over)
            .map(drop)
            .expect_err(&format!("{} past its bound ({})", list.field, list.limit));
        assert!(
            message.contains(list.field),
            "{} past its bound: {message}",
            list.field
        );
    }
}

#[tokio::test]
async fn documents_check_accepts_start_and_serve() {
    let mut documents = BTreeSet::new();
    documents.insert(include_str!("../../../examples/edge-proxy.toml").to_owned());
    for knob in KNOBS {
        for value in knob.values {
            let text = document(knob, value);
            if check(&without_harness(&text)).is_ok() {
                documents.insert(text);
            }
        }
    }
    for list in counted() {
        documents.insert((list.document)(list.limit));
    }
    assert!(documents.len() > 100, "{} documents", documents.len());
    for text in documents {
        let harness = Harness::start(&with_demo(&text), None).await;
        // The stack serves: an answer of any status (the upstream on port 1 refuses to connect,
        // a one-header limit answers 431), never a connection the edge drops.
        let reply = harness
            .send(
                http::Request::get(harness.url("/"))
                    .body(http_body_util::Full::default())
                    .unwrap(),
            )
            .await;
        assert!(reply.is_ok(), "no answer: {reply:?}\n{text}");
        let status = harness.status().await;
        assert!(status["modules"].is_array(), "{status}\n{text}");
        harness.stop().await;
    }
}

/// The checks that are the edge's policy, not a build failure: `check_config` refuses each
/// (naming the field) although the build would run it — with the reason the edge refuses it.
#[tokio::test]
async fn policy_checks_refuse_what_the_build_would_run() {
    let policy: &[(&str, &str, &str)] = &[
        (
            "admin.listen",
            "[admin]\nlisten = \"0.0.0.0:9901\"\n",
            "the admin API is loopback-only unless admin.allow_remote says a firewall guards it",
        ),
        (
            "admin.listen",
            "[server]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"\n",
            "one address cannot serve both listeners",
        ),
        (
            "admin.allowed_hosts",
            "[admin]\nallowed_hosts = [\"admin.example:9901\"]\n",
            "a Host is compared without its port; this name could never match",
        ),
        (
            "ratelimit.client_ip.trusted_proxies",
            "[ingress]\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
             [ratelimit.client_ip]\ntrusted_proxies = [\"192.168.0.0/16\"]\n",
            "the proxies in front are named once: two lists that disagree are a mistake",
        ),
        (
            "ratelimit.redis_timeout",
            "[ratelimit]\nredis_timeout = \"61s\"\n[ratelimit.guard]\ntimeout = \"60s\"\n",
            "a Redis call longer than a minute is an outage, not a budget (also: > guard)",
        ),
        (
            "modules.cahce",
            "[modules.cahce]\nenabled = false\n",
            "a table for a module that does not exist is a typo that would leave the cache on",
        ),
        (
            "reload.watch_interval",
            "[reload]\nwatch_interval = \"1ms\"\n",
            "polling the config file every millisecond is a busy loop",
        ),
        (
            "reload.watch_interval",
            "[reload]\nwatch_interval = \"2h\"\n",
            "a file pushed to fix an incident must not wait hours",
        ),
        (
            "upstreams[1].name",
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
             [[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:2\"\n",
            "routes name upstreams: two with one name make a route ambiguous",
        ),
    ];
    // Documents that say nothing of the demo origin, checked as they are (issue 15): naming no
    // upstream is refused unless `demo_origin = true`, although the build would start the demo.
    let raw: &[(&str, &str, &str)] = &[
        (
            "upstreams",
            "[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nallow_remote = false\n",
            "a file cut short before [[upstreams]] must not send traffic to the demo origin",
        ),
        (
            "upstreams",
            "upstreams = []\n",
            "an empty upstream list from a generator is not a request for the demo origin",
        ),
        (
            "no settings",
            "# generated: nothing\n\n# end\n",
            "a comment-only document is no configuration (it parses to every default)",
        ),
    ];
    for (field, text, why) in raw {
        let message = check_raw(text).map(drop).expect_err(why);
        assert!(message.contains(field), "{field} ({why}): {message}");
        let config: EdgeConfig = toml::from_str(text).unwrap();
        try_build(&config).unwrap_or_else(|e| panic!("{field}: the build refuses: {e}"));
    }
    for (field, text, why) in policy {
        let message = check(text).map(drop).expect_err(why);
        assert!(message.contains(field), "{field} ({why}): {message}");
        let config = parse(text).unwrap();
        // Not a build failure: the check is there for the reason given, not to keep the
        // build from failing.
        if let Err(reason) = try_build(&config) {
            assert!(
                reason.contains(field),
                "{field}: the build refuses for another reason: {reason}"
            );
        }
    }
}

#[test]
fn the_tables_cover_every_module() {
    // The registry's names, as validation lists them for a table naming no module: a module
    // added to the registry without rows here would leave its build unchecked.
    let message = check("[modules.none]\n").map(drop).unwrap_err();
    let names = message
        .split("the modules are ")
        .nth(1)
        .unwrap_or_else(|| panic!("{message}"));
    let modules: Vec<&str> = names
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|name| !name.is_empty())
        .collect();
    assert!(modules.contains(&"cache"), "{message}");
    let fields: BTreeSet<&str> = REFUSED
        .iter()
        .map(|(field, _)| *field)
        .chain(KNOBS.iter().map(|knob| knob.field))
        .collect();
    for module in modules {
        assert!(
            fields.iter().any(|f| f.starts_with(&format!("{module}."))),
            "no row for the {module} module"
        );
    }
}

#[tokio::test]
async fn an_upstream_section_is_what_the_rows_expect() {
    // The rows' upstream (port 1) builds, so a row that refuses refuses for its own field.
    let config = parse(UPSTREAM).unwrap();
    try_build(&config).unwrap();
    check(UPSTREAM).unwrap();
}
