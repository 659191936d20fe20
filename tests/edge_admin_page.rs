//! The admin page (`GET /` on the admin listener) against the assembled edge: served
//! self-contained with a strict policy, readable without a token, and, rendered by a real
//! headless Chromium, showing what `/status` and `/metrics` say — modules with their failure
//! modes and kill switches, document versions, live charts — and a kill made through the API.
//!
//! The browser is Debian's `chromium` (`$RAVELIN_CHROMIUM` overrides it). Missing, the browser
//! tests are a printed skip, and a failure under `CI=true` (`.ci/run` installs chromium).
//!
//! `screenshot` (ignored) remakes `docs/images/admin-page.png`:
//!
//! ```text
//! cargo test --test edge_admin_page -- --ignored screenshot
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use ravelin_proxy::demo::{self, DemoHandle};
use ravelin_test_support::edge::{
    GENEROUS_RATELIMIT, Harness, Reply, config, feature_file, write_atomically,
};

/// A bound on each Chromium run (its first start on a cold machine included): a hang is a
/// failure, not a timing measurement.
const BROWSER_BOUND: Duration = Duration::from_secs(90);

/// The config version the page must show.
const VERSION: u64 = 42;

/// The feature file version the page must show.
const FEATURES_VERSION: u64 = 5;

/// The name of the bot feature file's store in `/status` and the rollout commands.
const BOT_FEATURES: &str = "bot-features";

/// A canary policy for the bot feature file that never ends on its own within a test: only a
/// command ends it. Clients behind the loopback proxy are told apart by `X-Forwarded-For`, so
/// the screenshot's traffic fills both cohorts.
const ROLLOUT: &str = "\n[ingress]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n\
                       [rollout.bot_features]\nbake = \"1h\"\nmax_wait = \"2h\"\n";

/// Every module in the stack, a versioned config and a followed bot feature file, in front of
/// a demo origin started here (kept alive by the returned handle).
async fn start() -> (Harness, DemoHandle) {
    start_with(FEATURES_VERSION, "").await
}

/// [`start`] with the feature file at `features_version` and `extra` appended to the config.
async fn start_with(features_version: u64, extra: &str) -> (Harness, DemoHandle) {
    let origin = demo::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let text = format!(
        "version = {VERSION}\n{}",
        config(&format!(
            "{GENEROUS_RATELIMIT}\n[[upstreams]]\nname = \"origin\"\nurl = \"{}\"\n\n\
             [botscore]\nfeature_file = \"{{dir}}/bot.json\"\nwatch_interval = \"0s\"\n{extra}",
            origin.url()
        ))
    );
    let features = feature_file(features_version, 60, 3.0);
    let harness =
        Harness::start_with_files(&text, &[("bot.json", features.as_bytes())], None).await;
    (harness, origin)
}

/// `GET` on the admin listener with `headers`, no token.
async fn admin_get(harness: &Harness, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(harness.admin_url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    harness
        .send(request.body(Full::default()).unwrap())
        .await
        .unwrap()
}

/// Every `src=`/`href=`/`action=` value in `html`.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=", "href=", "action="] {
        for (at, _) in html.match_indices(attribute) {
            let rest = &html[at + attribute.len()..];
            let quote = rest.chars().next().unwrap();
            let value = rest[1..].split(quote).next().unwrap();
            found.push(value.to_owned());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_self_contained_strict_and_needs_no_token() {
    let (harness, _origin) = start().await;
    let browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let reply = admin_get(&harness, "/", &[("accept", browser_accept)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-frame-options"), "DENY");
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-"), "{csp}");

    let html = reply.text();
    assert!(html.starts_with("<!doctype html>"), "{html:.80}");
    assert_eq!(html.matches("<script").count(), 1, "one inline script");
    assert!(!html.contains("<script src"));
    let references = references(&html);
    assert!(!references.is_empty());
    for reference in &references {
        assert!(
            reference.starts_with("data:")
                || (reference.starts_with('/') && !reference.starts_with("//")),
            "an external reference: {reference:?}"
        );
    }
    assert!(!html.contains("localStorage"), "the token is never stored");
    assert!(html.contains("type=\"password\""));

    // curl's `*/*` gets the page too; asking for JSON still lists the endpoints.
    let reply = admin_get(&harness, "/", &[("accept", "*/*")]).await;
    assert_eq!(reply.text(), html);
    let reply = admin_get(&harness, "/", &[("accept", "application/json")]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["endpoints"].is_array(), "{}", reply.text());

    // DNS rebinding: a foreign name gets no page.
    let reply = admin_get(&harness, "/", &[("host", "admin.attacker.example")]).await;
    assert_eq!(reply.status, 421, "{}", reply.text());

    // What the page reads needs no token either; what it changes does.
    assert_eq!(admin_get(&harness, "/status", &[]).await.status, 200);
    assert_eq!(admin_get(&harness, "/metrics", &[]).await.status, 200);
    let unauthorized = harness
        .send(
            Request::post(harness.admin_url("/modules/cache/kill"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(unauthorized.status, 401);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_modules_versions_charts_and_a_kill() {
    let Some(chromium) = chromium() else {
        return;
    };
    let (harness, _origin) = start().await;
    for _ in 0..5 {
        assert_eq!(harness.get("/").await.status, 200);
    }
    let status = harness.status().await;
    let modules = status["modules"].as_array().unwrap().clone();
    let names: Vec<&str> = modules.iter().filter_map(|m| m["name"].as_str()).collect();
    for expected in ["ratelimit", "botscore", "cache"] {
        assert!(names.contains(&expected), "{expected} in {status:#}");
    }

    let dom = dump_dom(&chromium, &harness.admin_url("/")).await;
    for module in &modules {
        let name = module["name"].as_str().unwrap();
        let mode = module["failure_mode"].as_str().unwrap();
        let (tag, cells) = row(&dom, &format!("data-module=\"{name}\""));
        assert!(
            tag.contains(&format!("data-failure-mode=\"{mode}\"")),
            "{name}: {tag}"
        );
        assert!(tag.contains("data-killed=\"false\""), "{name}: {tag}");
        assert!(cells.contains(&format!(">fail {mode}<")), "{name}: {cells}");
        assert!(cells.contains(">running<"), "{name}: {cells}");
    }
    let (tag, cells) = row(&dom, "data-document=\"edge-proxy\"");
    assert!(
        tag.contains(&format!("data-version=\"{VERSION}\"")),
        "{tag}"
    );
    assert!(cells.contains(&format!(">{VERSION}")), "{cells}");
    let digest = status["configs"][0]["digest"].as_str().unwrap();
    assert!(cells.contains(digest), "the digest {digest}: {cells}");
    let feature_files = status["feature_files"][0]["name"].as_str().unwrap();
    let (tag, _) = row(&dom, &format!("data-document=\"{feature_files}\""));
    assert!(
        tag.contains(&format!("data-version=\"{FEATURES_VERSION}\"")),
        "{tag}"
    );
    assert!(dom.contains("no rollout in progress"), "{dom}");
    assert!(dom.contains("no TLS listener configured"), "{dom}");
    for chart in ["responses", "guards", "rejections"] {
        assert!(
            dom.contains(&format!("<figure class=\"chart\" data-chart=\"{chart}\"")),
            "{chart} chart: {dom}"
        );
    }
    let (_, responses) = row_of(&dom, "data-chart=\"responses\"", "</figure>");
    assert!(
        responses.contains("<svg class=\"spark\"") && responses.contains("data-series=\"2xx\""),
        "a 2xx sparkline: {responses}"
    );
    assert!(
        dom.contains("<span class=\"meta\" id=\"updated\""),
        "every fetch worked (no stale banner): {dom}"
    );

    // A kill through the API shows on the next load.
    let reply = harness.admin_post("/modules/botscore/kill").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let dom = dump_dom(&chromium, &harness.admin_url("/")).await;
    let (tag, cells) = row(&dom, "data-module=\"botscore\"");
    assert!(tag.contains("data-killed=\"true\""), "{tag}");
    assert!(
        cells.contains(">killed<") && cells.contains(">Revive<"),
        "{cells}"
    );
    let (tag, _) = row(&dom, "data-module=\"ratelimit\"");
    assert!(tag.contains("data-killed=\"false\""), "{tag}");
    harness.admin_post("/modules/botscore/revive").await;
    harness.stop().await;
}

/// Stages version 2 of the bot feature file (version 1 serves) as a canary: the reload's
/// answer says so.
async fn stage_version_2(harness: &Harness) {
    write_atomically(
        &harness.path("bot.json"),
        feature_file(2, 60, 2.9).as_bytes(),
    );
    let reply = harness.admin_post("/config/reload").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["bot_feature_file"],
        "canary",
        "{}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_a_rollout_and_its_promotion_by_hand() {
    let Some(chromium) = chromium() else {
        return;
    };
    let (harness, _origin) = start_with(1, ROLLOUT).await;
    stage_version_2(&harness).await;
    for _ in 0..5 {
        assert_eq!(harness.get("/").await.status, 200);
    }

    let dom = dump_dom(&chromium, &harness.admin_url("/")).await;
    let (tag, cells) = row(&dom, &format!("data-document=\"{BOT_FEATURES}\""));
    assert!(
        tag.contains("data-version=\"1\""),
        "version 1 still serves: {tag}"
    );
    assert!(tag.contains("data-stage=\"canary\""), "{tag}");
    assert!(
        cells.contains(">canary<") && cells.contains(">candidate 2 on "),
        "{cells}"
    );
    let (tag, card) = row_of(
        &dom,
        &format!("data-rollout=\"{BOT_FEATURES}\""),
        "</table>",
    );
    assert!(tag.contains("data-candidate-version=\"2\""), "{tag}");
    assert!(card.contains(">version 2<"), "the candidate: {card}");
    assert!(card.contains(" of clients<"), "the canary share: {card}");
    assert!(card.contains("<progress "), "the bake's progress: {card}");
    let (_, cohorts) = row_of(
        &dom,
        &format!("data-cohorts=\"{BOT_FEATURES}\""),
        "</table>",
    );
    assert!(
        cohorts.contains(">Canary<") && cohorts.contains(">Baseline<"),
        "{cohorts}"
    );
    for metric in [
        "requests",
        "failure_share",
        "answered_by_edge_share",
        "origin_5xx_share",
        "value_mean",
    ] {
        let (_, cells) = row(cohorts, &format!("data-metric=\"{metric}\""));
        assert_eq!(
            cells.matches("data-cohort=").count(),
            2,
            "{metric}: {cells}"
        );
    }
    let (_, buttons) = row_of(&dom, "data-action=\"rollout-promote\"", "</div>");
    assert!(
        buttons.contains(">Promote<") && buttons.contains(">Abort<"),
        "{buttons}"
    );
    assert!(!dom.contains("data-rollout=\"none\""), "{dom}");

    // A promotion through the API shows on the next load.
    let reply = harness
        .admin_post(&format!("/commands/rollout-promote?store={BOT_FEATURES}"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["end"], "promoted_by_hand", "{}", reply.text());
    let dom = dump_dom(&chromium, &harness.admin_url("/")).await;
    let (tag, cells) = row(&dom, &format!("data-document=\"{BOT_FEATURES}\""));
    assert!(tag.contains("data-version=\"2\""), "{tag}");
    assert!(tag.contains("data-stage=\"promoted\""), "{tag}");
    assert!(
        cells.contains("data-last-rollout=\"promoted_by_hand\"")
            && cells.contains(">promoted by hand<")
            && cells.contains(" version 2"),
        "{cells}"
    );
    assert!(
        dom.contains("data-rollout=\"none\""),
        "no rollout in progress: {dom}"
    );
    assert!(!dom.contains("<table class=\"cohorts\""), "{dom}");
    harness.stop().await;
}

/// Remakes the screenshot in docs/images with some traffic from many clients, a rollout of
/// the bot feature file in progress and a killed module, so every part of the page has
/// something to show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "remakes docs/images/admin-page.png"]
async fn screenshot() {
    let chromium = chromium().expect("chromium");
    let (harness, _origin) = start_with(1, ROLLOUT).await;
    stage_version_2(&harness).await;
    harness.admin_post("/modules/cache/kill").await;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images/admin-page.png");
    let traffic = async {
        for i in 0..600u32 {
            let path = if i % 9 == 0 { "/missing" } else { "/" };
            let client = format!("198.51.100.{}", i % 64 + 1);
            let request = Request::get(harness.url(path))
                .header("x-forwarded-for", client)
                .body(Full::default())
                .unwrap();
            harness.send(request).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (args, _profile) = browser_args(
        &[
            "--virtual-time-budget=40000".into(),
            "--window-size=1280,1330".into(),
            "--hide-scrollbars".into(),
            format!("--screenshot={}", out.display()),
        ],
        &harness.admin_url("/"),
    );
    let shot = run(&chromium, &args);
    tokio::join!(traffic, shot);
    eprintln!("wrote {}", out.display());
    harness.stop().await;
}

// === the browser ===

/// Chromium from `$RAVELIN_CHROMIUM` or `PATH`: `None` after printing a skip, a panic under
/// `CI=true`.
fn chromium() -> Option<PathBuf> {
    ravelin_test_support::tools::find_tool("chromium")
}

/// Chromium's arguments for one headless run of `url` with a fresh profile (returned too, so
/// it lives until the run ends).
fn browser_args(extra: &[String], url: &str) -> (Vec<String>, tempfile::TempDir) {
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    args.extend_from_slice(extra);
    args.push(url.to_owned());
    (args, profile)
}

/// The DOM after the page's script ran its first refreshes (`--virtual-time-budget` lets its
/// timers and fetches run before the dump, without waiting in real time).
async fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let (args, _profile) = browser_args(
        &["--virtual-time-budget=5000".into(), "--dump-dom".into()],
        url,
    );
    let dom = run(chromium, &args).await;
    assert!(dom.contains("data-refreshed="), "the script ran: {dom}");
    dom
}

/// The opening tag of the `<tr>` carrying `marker`, and the whole row.
fn row<'a>(dom: &'a str, marker: &str) -> (&'a str, &'a str) {
    row_of(dom, marker, "</tr>")
}

/// The opening tag of the element carrying `marker`, and the text up to `end`.
fn row_of<'a>(dom: &'a str, marker: &str, end: &str) -> (&'a str, &'a str) {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the page: {dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let tag_end = at + dom[at..].find('>').unwrap() + 1;
    let row_end = at + dom[at..].find(end).unwrap() + end.len();
    (&dom[start..tag_end], &dom[start..row_end])
}

/// Runs `program` within [`BROWSER_BOUND`] (see `ravelin_test_support::tools::run_bounded`).
async fn run(program: &PathBuf, args: &[String]) -> String {
    ravelin_test_support::tools::run_bounded(program, args, BROWSER_BOUND).await
}
