//! `ingress`: what the edge's trust boundary costs per request.
//!
//! - `canonical_path` / `match_path`: path normalization alone, for a plain path and for one
//!   that needs every rule (escapes, dot segments, doubled slashes, parameters);
//! - `identity`: `RequestIdentity::from_parts` (host checks and both paths);
//! - `admit_parts`: the whole ingress stage on a typical browser request head (14 fields):
//!   method check, header count, hop-by-hop removal, identity, Host and URI rewrite, owned and
//!   forwarding header removal, extension insert;
//! - `clone_head` (reference): cloning the same request head, the cost of one copy of it.
//!
//! Run: `cargo bench -p ravelin --bench ingress`

use std::hint::black_box;

use criterion::Criterion;
use http::Request;
use http::request::Parts;
use http::uri::Scheme;
use ravelin::http::{IdentityOptions, RequestIdentity, canonical_path, match_path};
use ravelin::proxy::{IngressConfig, admit_parts};

fn browser_head(path: &str) -> Parts {
    let (mut parts, ()) = Request::get(path)
        .header("host", "shop.example.com")
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")
        .header("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
        .header("accept-language", "en-GB,en;q=0.9")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("connection", "keep-alive")
        .header("cookie", "session=0123456789abcdef; theme=dark")
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-site", "none")
        .header("sec-ch-ua", "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"")
        .header("sec-ch-ua-mobile", "?0")
        .header("sec-ch-ua-platform", "\"Linux\"")
        .header("upgrade-insecure-requests", "1")
        .body(())
        .unwrap_or_default()
        .into_parts();
    parts.extensions.insert(ravelin::failsafe::PeerAddr(
        "203.0.113.7:50000"
            .parse()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()),
    ));
    parts
}

fn bench(c: &mut Criterion) {
    let plain = "/products/shoes/running?page=2";
    let messy = "//Products/./shoes/../shoes/%72unning;jsessionid=abc/";
    let mut group = c.benchmark_group("ingress");
    group.bench_function("canonical_path/plain", |b| {
        b.iter(|| canonical_path(black_box("/products/shoes/running")))
    });
    group.bench_function("canonical_path/messy", |b| {
        b.iter(|| {
            canonical_path(black_box(
                "//Products/./shoes/../shoes/%72unning;jsessionid=abc/",
            ))
        })
    });
    group.bench_function("match_path/plain", |b| {
        b.iter(|| match_path(black_box("/products/shoes/running"), true))
    });
    let options = IdentityOptions::default();
    for (name, path) in [("plain", plain), ("messy", messy)] {
        let head = browser_head(path);
        group.bench_function(format!("identity/{name}"), |b| {
            b.iter(|| RequestIdentity::from_parts(black_box(&head), Scheme::HTTP, &options))
        });
        let config = IngressConfig::new();
        group.bench_function(format!("admit_parts/{name}"), |b| {
            b.iter_batched_ref(
                || browser_head(path),
                |head| admit_parts(head, &config),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    let head = browser_head(plain);
    group.bench_function("clone_head (reference)", |b| {
        b.iter(|| {
            let mut copy = Request::new(());
            *copy.method_mut() = head.method.clone();
            *copy.uri_mut() = head.uri.clone();
            *copy.headers_mut() = head.headers.clone();
            black_box(copy)
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
