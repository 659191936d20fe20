//! `allocs`: heap allocations per forwarded request, counted, not timed (issue 13).
//!
//! A counting global allocator (`stats_alloc` around the system allocator) counts every
//! allocation in the process while sequential `GET /api` requests (a browser-like head of eight
//! fields) go from a hyper client, over one loopback keep-alive connection, through the edge
//! as `ravelin_edge::start` assembles it, to an in-process origin answering 1 KiB with
//! `Cache-Control: no-store` (so the cache can neither answer nor store: its pass-through).
//! Everything runs on one current-thread runtime, so the counts barely move between runs.
//!
//! Configurations: the client talking to the origin directly (`origin`, the baseline the other
//! rows subtract), the edge with every module off (`bare`: ingress, request id, panic catching,
//! forwarding), each module alone, and every module on (`all`, the stack `benches/load.sh`
//! measures). A Prometheus recorder is installed, as in the `edge-proxy` binary; no tracing
//! subscriber is.
//!
//! Run: `cargo bench -p ravelin --bench allocs` (`ALLOCS_REQUESTS=<n>` to change the count,
//! `ALLOCS_ONLY=<text>` to measure only the configurations whose name contains it).

// A bench binary: a failed setup step or request is a failed run.
#![allow(clippy::unwrap_used, missing_docs)]

use std::alloc::System;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ravelin_test_support::edge::{Harness, send};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The edge's configurations, by name: the module switches appended to the common part.
const CONFIGS: &[(&str, &str)] = &[
    ("bare (no modules)", MODULES_OFF),
    ("ratelimit only", RATELIMIT_ON),
    ("botscore only", BOTSCORE_ON),
    ("cache only (pass-through)", CACHE_ON),
    ("all modules", ALL_ON),
];

const MODULES_OFF: &str = "[modules.ratelimit]\nenabled = false\n[modules.botscore]\nenabled = false\n[modules.cache]\nenabled = false\n";
const RATELIMIT_ON: &str = "[modules.ratelimit]\nenabled = true\n[modules.botscore]\nenabled = false\n[modules.cache]\nenabled = false\n";
const BOTSCORE_ON: &str = "[modules.ratelimit]\nenabled = false\n[modules.botscore]\nenabled = true\n[modules.cache]\nenabled = false\n";
const CACHE_ON: &str = "[modules.ratelimit]\nenabled = false\n[modules.botscore]\nenabled = false\n[modules.cache]\nenabled = true\n";
const ALL_ON: &str = "[modules.ratelimit]\nenabled = true\n[modules.botscore]\nenabled = true\n[modules.cache]\nenabled = true\n";

/// What `benches/edge-proxy-load.toml` sets, with the upstream filled in: a rate limit no
/// request reaches, no file watching (its polling would be counted).
fn edge_config(origin: SocketAddr, modules: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "origin"
url = "http://{origin}"

[ratelimit]
[[ratelimit.rules]]
name = "per-ip"
limit = 1000000
window = "1s"
key = ["client_ip"]

[reload]
watch_interval = "0s"

{modules}
"#
    )
}

/// The origin: 1 KiB, not storable.
async fn origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(vec![b'x'; 1024]);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                    let response = Response::builder()
                        .header("content-type", "application/json")
                        .header("cache-control", "no-store")
                        .body(Full::new(body.clone()))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One browser-like request for `/api` at `base`.
fn request(base: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{base}/api"))
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")
        .header("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
        .header("accept-language", "en-GB,en;q=0.9")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-site", "none")
        .header("sec-fetch-dest", "document")
        .header("upgrade-insecure-requests", "1")
        .body(Full::default())
        .unwrap()
}

/// Allocations and bytes allocated per request over `n` requests to `base` (after a warm-up
/// of as many, so pools, tables and lazily built state are in place).
async fn measure(harness: &Harness, base: &str, n: u64) -> (f64, f64) {
    for _ in 0..n {
        let reply = send(&harness.client, request(base)).await.unwrap();
        assert_eq!(reply.status, 200, "warm-up request failed");
    }
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        let reply = send(&harness.client, request(base)).await.unwrap();
        assert_eq!(reply.status, 200);
    }
    let stats = region.change();
    let allocs = (stats.allocations + stats.reallocations) as f64 / n as f64;
    let bytes = stats.bytes_allocated as f64 / n as f64;
    (allocs, bytes)
}

fn main() {
    let n: u64 = std::env::var("ALLOCS_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let origin = origin().await;
        let mut rows = Vec::new();
        // The baseline: the client and the origin alone (the harness's client, no edge).
        let direct = Harness::start(&edge_config(origin, MODULES_OFF), None).await;
        let baseline = measure(&direct, &format!("http://{origin}"), n).await;
        direct.stop().await;
        let only = std::env::var("ALLOCS_ONLY").unwrap_or_default();
        for (name, modules) in CONFIGS.iter().filter(|(name, _)| name.contains(&*only)) {
            let harness = Harness::start(&edge_config(origin, modules), None).await;
            let base = format!("http://{}", harness.running().proxy_addr);
            rows.push((*name, measure(&harness, &base, n).await));
            harness.stop().await;
        }
        println!("allocations per request, {n} sequential GET /api (1 KiB, no-store)");
        println!(
            "client + origin alone: {:.1} allocations, {:.0} bytes per request (subtracted below)",
            baseline.0, baseline.1
        );
        println!();
        println!("| edge configuration | allocations / request | bytes / request |");
        println!("|---|---:|---:|");
        for (name, (allocs, bytes)) in rows {
            println!(
                "| {name} | {:.1} | {:.0} |",
                allocs - baseline.0,
                bytes - baseline.1
            );
        }
    });
}
