//! Bot scores of real clients over the edge's TLS, with the default model: headless Chromium
//! with a regular Chrome User-Agent scores as a person; headless Chromium as itself, and curl
//! and Python copying Chrome's User-Agent *and* headers, score as automated, the copies because
//! their TLS stack is not Chrome's (`ja4_stack_mismatch_chrome` in the reasons).
//!
//! The clients are the real programs: Debian's `chromium`, `curl`, `python3` (and, for the
//! capture below, `node`). A missing one is a printed skip, and a failure under `CI=true`.
//!
//! `capture_ja4_clients` (ignored) is how `crates/ravelin-botscore/data/ja4-clients.json` is
//! made: it starts the same edge, has every client fetch `/echo` by name (SNI) and by address,
//! and writes the JA4 each one got. To refresh the data (and then the model):
//!
//! ```text
//! RAVELIN_JA4_CAPTURE_OUT=crates/ravelin-botscore/data/ja4-clients.json \
//!   cargo test --test edge_browser_tls -- --ignored capture_ja4_clients --nocapture
//! cargo run -p ravelin-botscore --features cli --bin botscore -- \
//!   train --data crates/ravelin-botscore/data -o crates/ravelin-botscore/model/default.json
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ravelin_test_support::edge::{Harness, config};
use ravelin_tls::acceptor::crypto_provider;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// A bound on each client run (Chromium's first start on a cold machine included): a hang is a
/// failure, not a timing measurement.
const BOUND: Duration = Duration::from_secs(90);

/// The Chrome version the copying clients claim.
const COPIED_CHROME_MAJOR: u32 = 156;

/// The edge under test: TLS with a certificate made at test time, plaintext beside it, the
/// default bot model, reasons forwarded to the origin.
const CONFIG: &str = r#"
[tls]
listen = "127.0.0.1:0"

[[tls.certificates]]
cert_file = "{dir}/edge.pem"
key_file = "{dir}/edge.key"

[botscore]
reasons_header = "x-bot-score-reasons"
"#;

/// A test CA and the edge's certificate for `localhost` and `127.0.0.1`.
struct Certificates {
    root: CertificateDer<'static>,
    leaf_pem: String,
    key_pem: String,
}

fn certificates() -> Certificates {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Ravelin browser-test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(30);
    let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
    Certificates {
        root: ca.der().clone(),
        leaf_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    }
}

struct Edge {
    harness: Harness,
    root: CertificateDer<'static>,
}

impl Edge {
    async fn start() -> Self {
        let certs = certificates();
        let harness = Harness::start_with_files(
            &config(CONFIG),
            &[
                ("edge.pem", certs.leaf_pem.as_bytes()),
                ("edge.key", certs.key_pem.as_bytes()),
            ],
            None,
        )
        .await;
        Self {
            harness,
            root: certs.root,
        }
    }

    fn port(&self) -> u16 {
        self.harness
            .running()
            .tls_addr
            .expect("a TLS listener")
            .port()
    }

    /// `https://{host}:{port}/echo`.
    fn echo_url(&self, host: &str) -> String {
        format!("https://{host}:{}/echo", self.port())
    }

    async fn stop(self) {
        self.harness.stop().await;
    }
}

// === the clients ===

/// `name` from `PATH` (or `$RAVELIN_<NAME>`): `None` after printing a skip, or a panic under
/// `CI=true` (see `ravelin_test_support::tools`).
fn tool(name: &str) -> Option<PathBuf> {
    ravelin_test_support::tools::find_tool(name)
}

/// Runs `program` within [`BOUND`] (see `ravelin_test_support::tools::run_bounded`).
async fn run(program: &PathBuf, args: &[String]) -> String {
    ravelin_test_support::tools::run_bounded(program, args, BOUND).await
}

/// A Chrome User-Agent on Linux for `major`.
fn chrome_user_agent(major: u32) -> String {
    format!(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
    )
}

/// The headers Chromium sends for a top-level navigation, in its order (as it sent them to the
/// edge's `/echo`), with a Chrome User-Agent: what a scraper copies from the browser's devtools.
fn chrome_headers(major: u32) -> Vec<(&'static str, String)> {
    vec![
        (
            "sec-ch-ua",
            format!("\"Not:A-Brand\";v=\"8\", \"Chromium\";v=\"{major}\""),
        ),
        ("sec-ch-ua-mobile", "?0".into()),
        ("sec-ch-ua-platform", "\"Linux\"".into()),
        ("upgrade-insecure-requests", "1".into()),
        ("user-agent", chrome_user_agent(major)),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7".into(),
        ),
        ("sec-fetch-site", "none".into()),
        ("sec-fetch-mode", "navigate".into()),
        ("sec-fetch-user", "?1".into()),
        ("sec-fetch-dest", "document".into()),
        ("accept-encoding", "gzip, deflate, br, zstd".into()),
        ("accept-language", "en-US,en;q=0.9".into()),
        ("priority", "u=0, i".into()),
    ]
}

struct Chromium {
    path: PathBuf,
    major: u32,
    version: String,
}

async fn chromium() -> Option<Chromium> {
    let path = tool("chromium")?;
    // "Chromium 156.0.8078.129 built on Debian GNU/Linux 12 (bookworm)"
    let version = run(&path, &["--version".into()]).await.trim().to_owned();
    let major = version
        .split_whitespace()
        .find_map(|word| word.split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no version in {version:?}"));
    Some(Chromium {
        path,
        major,
        version,
    })
}

impl Chromium {
    /// Loads `url` headless (with `user_agent` when given) and returns the page's text: what
    /// `/echo` answered.
    async fn fetch(&self, url: &str, user_agent: Option<&str>) -> String {
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
            "--ignore-certificate-errors",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        if let Some(ua) = user_agent {
            args.push(format!("--user-agent={ua}"));
        }
        args.extend(["--dump-dom".to_owned(), url.to_owned()]);
        let dom = run(&self.path, &args).await;
        // Chromium shows a JSON response as text in a <pre>, HTML-escaped.
        let text = dom
            .split_once("<pre>")
            .and_then(|(_, rest)| rest.split_once("</pre>"))
            .map(|(text, _)| text)
            .unwrap_or_else(|| panic!("no <pre> in the page Chromium shows: {dom}"));
        text.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }
}

/// curl with `headers`, certificate checks off (`-k`), HTTP/2 or HTTP/1.1.
async fn curl(curl: &PathBuf, url: &str, headers: &[(&str, String)], h2: bool) -> String {
    let mut args = vec![
        "-sSk".to_owned(),
        if h2 { "--http2" } else { "--http1.1" }.to_owned(),
        "--max-time".into(),
        "30".into(),
    ];
    for (name, value) in headers {
        args.extend(["-H".to_owned(), format!("{name}: {value}")]);
    }
    args.push(url.to_owned());
    run(curl, &args).await
}

/// Python's urllib over its ssl module (certificate checks off), sending `headers` in order.
const PYTHON_CLIENT: &str = r#"
import json, ssl, sys, urllib.request
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
request = urllib.request.Request(sys.argv[1])
for name, value in json.loads(sys.argv[2]):
    request.add_header(name, value)
with urllib.request.urlopen(request, context=context, timeout=30) as response:
    sys.stdout.write(response.read().decode())
"#;

async fn python(python: &PathBuf, url: &str, headers: &[(&str, String)]) -> String {
    let headers = serde_json::to_string(headers).unwrap();
    run(
        python,
        &["-c".into(), PYTHON_CLIENT.into(), url.into(), headers],
    )
    .await
}

/// What `/echo` received: a header's values.
fn echoed(body: &str, name: &str) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("/echo did not answer JSON ({e}): {body}"));
    json["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .filter_map(|pair| pair[1].as_str().map(str::to_owned))
        .collect()
}

/// The score, the reasons and the JA4 the origin saw.
#[derive(Debug)]
struct Verdict {
    score: u8,
    reasons: String,
    ja4: Option<String>,
}

fn verdict(body: &str) -> Verdict {
    let scores = echoed(body, "x-bot-score");
    assert_eq!(scores.len(), 1, "one score: {body}");
    Verdict {
        score: scores[0].parse().unwrap(),
        reasons: echoed(body, "x-bot-score-reasons").join(", "),
        ja4: echoed(body, "x-ja4").pop(),
    }
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_with_a_chrome_user_agent_scores_human() {
    let Some(chromium) = chromium().await else {
        return;
    };
    let edge = Edge::start().await;
    let ua = chrome_user_agent(chromium.major);
    for host in ["127.0.0.1", "localhost"] {
        let page = chromium.fetch(&edge.echo_url(host), Some(&ua)).await;
        let seen = verdict(&page);
        eprintln!("{} as Chrome via {host}: {seen:?}", chromium.version);
        let ja4 = seen
            .ja4
            .as_deref()
            .expect("the edge's JA4 reaches the origin");
        assert!(ja4.starts_with("t13"), "{ja4}");
        assert!(
            !seen.reasons.contains("ja4_stack_mismatch"),
            "Chromium's own stack is Chrome's: {seen:?}"
        );
        assert!(seen.score >= 30, "a person's browser: {seen:?}");
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_as_itself_scores_automated() {
    let Some(chromium) = chromium().await else {
        return;
    };
    let edge = Edge::start().await;
    let page = chromium.fetch(&edge.echo_url("127.0.0.1"), None).await;
    assert!(
        echoed(&page, "user-agent")[0].contains("HeadlessChrome/"),
        "{page}"
    );
    let seen = verdict(&page);
    eprintln!("{} as itself: {seen:?}", chromium.version);
    assert!(seen.score <= 29, "headless: {seen:?}");
    assert!(
        !seen.reasons.contains("ja4_stack_mismatch"),
        "its TLS stack is Chrome's; headlessness is what gives it away: {seen:?}"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_python_copying_chrome_score_automated_for_their_tls_stack() {
    let (Some(curl_path), Some(python_path)) = (tool("curl"), tool("python3")) else {
        return;
    };
    let edge = Edge::start().await;
    let headers = chrome_headers(COPIED_CHROME_MAJOR);

    // Control: the same copy over plaintext has no fingerprint to contradict it, and passes for
    // a browser. What gives it away below is the TLS stack alone.
    let plaintext = curl(&curl_path, &edge.harness.url("/echo"), &headers, false).await;
    let seen = verdict(&plaintext);
    eprintln!("curl copying Chrome, plaintext: {seen:?}");
    assert!(seen.ja4.is_none(), "{seen:?}");
    assert!(seen.score >= 30, "{seen:?}");

    let url = edge.echo_url("localhost");
    for (client, body) in [
        ("curl --http2", curl(&curl_path, &url, &headers, true).await),
        (
            "curl --http1.1",
            curl(&curl_path, &url, &headers, false).await,
        ),
        ("python3 urllib", python(&python_path, &url, &headers).await),
    ] {
        assert_eq!(
            echoed(&body, "user-agent"),
            vec![chrome_user_agent(COPIED_CHROME_MAJOR)],
            "{client}"
        );
        assert_eq!(
            echoed(&body, "sec-fetch-mode"),
            vec!["navigate"],
            "{client}"
        );
        let seen = verdict(&body);
        eprintln!("{client} copying Chrome over TLS: {seen:?}");
        assert!(seen.ja4.is_some(), "{client}: {seen:?}");
        assert!(seen.score <= 29, "{client}: {seen:?}");
        assert!(
            seen.reasons.contains("ja4_stack_mismatch_chrome="),
            "{client}: the reasons name the fingerprint mismatch: {seen:?}"
        );
    }
    edge.stop().await;
}

// === the capture of crates/ravelin-botscore/data/ja4-clients.json ===

/// Node's `https` module (certificate checks off), printing the body.
const NODE_CLIENT: &str = r#"
const https = require("https");
https.get(process.argv[1], { rejectUnauthorized: false }, (response) => {
  let body = "";
  response.on("data", (chunk) => (body += chunk));
  response.on("end", () => process.stdout.write(body));
}).on("error", (e) => { console.error(e); process.exit(1); });
"#;

/// One GET with rustls (ring provider, the workspace's version), ALPN h2 and http/1.1, over a
/// fresh connection.
async fn rustls_get(edge: &Edge, host: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(edge.root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", edge.port()))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(edge.echo_url(host))
        .body(Empty::<Bytes>::new())
        .unwrap();
    *request.version_mut() = Version::HTTP_2;
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The workspace's rustls version, from Cargo.lock.
fn rustls_version() -> String {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"rustls\"\n"))
        .and_then(|p| p.split("version = \"").nth(1))
        .and_then(|v| v.split('"').next())
        .unwrap();
    format!("rustls {version} (ring provider), tokio-rustls, hyper h2 client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "capture procedure: regenerates crates/ravelin-botscore/data/ja4-clients.json"]
async fn capture_ja4_clients() {
    let chromium = chromium().await.expect("chromium");
    let curl_path = tool("curl").expect("curl");
    let python_path = tool("python3").expect("python3");
    let node_path = tool("node").expect("node");
    let first_line = |s: String| s.lines().next().unwrap_or_default().trim().to_owned();
    let curl_version = first_line(run(&curl_path, &["--version".into()]).await);
    let python_version = first_line(
        run(
            &python_path,
            &[
                "-c".into(),
                "import ssl, sys; print('Python', sys.version.split()[0], 'urllib,', ssl.OPENSSL_VERSION)".into(),
            ],
        )
        .await,
    );
    let node_version = first_line(
        run(
            &node_path,
            &[
                "-p".into(),
                "'Node ' + process.version + ' https module, OpenSSL ' + process.versions.openssl"
                    .into(),
            ],
        )
        .await,
    );

    let edge = Edge::start().await;
    let mut clients = Vec::new();
    for host in ["localhost", "127.0.0.1"] {
        let url = edge.echo_url(host);
        let ua = chrome_user_agent(chromium.major);
        let bodies = [
            (
                "chromium",
                Some("chrome"),
                chromium.version.clone(),
                chromium.fetch(&url, Some(&ua)).await,
            ),
            (
                "curl",
                None,
                curl_version.clone(),
                curl(&curl_path, &url, &[], true).await,
            ),
            (
                "python3-urllib",
                None,
                python_version.clone(),
                python(&python_path, &url, &[]).await,
            ),
            (
                "node-https",
                None,
                node_version.clone(),
                run(&node_path, &["-e".into(), NODE_CLIENT.into(), url.clone()]).await,
            ),
            (
                "rustls",
                None,
                rustls_version(),
                rustls_get(&edge, host).await,
            ),
        ];
        for (client, family, version, body) in bodies {
            let ja4 = echoed(&body, "x-ja4").pop().expect("a JA4");
            clients.push(serde_json::json!({
                "client": client,
                "version": version,
                "family": family,
                "url": format!("https://{host}/echo"),
                "ja4": ja4,
            }));
        }
    }
    edge.stop().await;
    let file = serde_json::json!({
        "about": "JA4 fingerprints of real clients, captured on one machine by the edge's TLS terminator; provenance in README.md",
        "captured": time::OffsetDateTime::now_utc().date().to_string(),
        "procedure": "RAVELIN_JA4_CAPTURE_OUT=crates/ravelin-botscore/data/ja4-clients.json cargo test --test edge_browser_tls -- --ignored capture_ja4_clients --nocapture",
        "clients": clients,
    });
    let text = serde_json::to_string_pretty(&file).unwrap() + "\n";
    match std::env::var_os("RAVELIN_JA4_CAPTURE_OUT") {
        Some(path) => {
            std::fs::write(&path, &text).unwrap();
            eprintln!("wrote {}", PathBuf::from(path).display());
        }
        None => print!("{text}"),
    }
}
