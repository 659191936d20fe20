//! The shared tier wired into the cache: two `CacheLayer`s (two proxies) sharing one real
//! `redis-server`. A fill on one is a shared-tier hit on the other with one origin request; a
//! variant another request would not select is a miss; a stale shared entry is validated with
//! the origin; Redis killed means misses go to the origin, never an error; purges reach Redis.
#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ravelin_cache::shared_tier::{Lookup, SharedTierConfig};
use ravelin_cache::{CacheConfig, CacheLayer, ManualClock};
use ravelin_test_support::redis::{RedisServer, unique_prefix};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const URL: &str = "http://example.com/p/1";

/// An origin that counts its requests and records the last `If-None-Match`.
#[derive(Clone, Default)]
struct Origin {
    requests: Arc<AtomicUsize>,
    conditional: Arc<AtomicUsize>,
}

impl Origin {
    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn service(
        &self,
        cache_control: &'static str,
    ) -> impl Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        let origin = self.clone();
        service_fn(move |req: Request<()>| {
            let origin = origin.clone();
            async move {
                origin.requests.fetch_add(1, Ordering::SeqCst);
                let date = httpdate::fmt_http_date(SystemTime::now());
                if req
                    .headers()
                    .get("if-none-match")
                    .is_some_and(|v| v == "\"v1\"")
                {
                    origin.conditional.fetch_add(1, Ordering::SeqCst);
                    return Ok::<_, Infallible>(
                        Response::builder()
                            .status(StatusCode::NOT_MODIFIED)
                            .header("cache-control", cache_control)
                            .header("etag", "\"v1\"")
                            .header("date", date)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    );
                }
                let lang = req
                    .headers()
                    .get("accept-language")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                Ok(Response::builder()
                    .header("cache-control", cache_control)
                    .header("etag", "\"v1\"")
                    .header("vary", "accept-language")
                    .header("surrogate-key", "product-1")
                    .header("date", date)
                    .body(Full::new(Bytes::from(format!("hello {lang}"))))
                    .unwrap())
            }
        })
    }
}

fn tier_config(server: &RedisServer, prefix: &str) -> SharedTierConfig {
    SharedTierConfig {
        prefix: prefix.to_string(),
        // Generous: the test machine is shared and busy.
        timeout: Duration::from_millis(500),
        ..SharedTierConfig::new(server.url())
    }
}

fn layer(tier: &SharedTierConfig, clock: Option<&ManualClock<SystemTime>>) -> CacheLayer {
    let cfg = CacheConfig {
        shared_tier: Some(tier.clone()),
        ..CacheConfig::default()
    };
    let mut b = CacheLayer::builder().config(cfg);
    if let Some(c) = clock {
        b = b.clock(c.clone());
    }
    b.build().unwrap()
}

fn get(lang: &str) -> Request<()> {
    Request::get(URL)
        .header("accept-language", lang)
        .body(())
        .unwrap()
}

/// Sends a request and reads the whole body (so a fill is stored and written through).
async fn send<S, B>(svc: &S, req: Request<()>) -> (StatusCode, String, String)
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let resp = svc.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let cs = resp
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, cs, String::from_utf8_lossy(&body).into_owned())
}

/// Waits (bounded) until the layer's tier has written `n` objects: puts are in the background.
async fn puts(layer: &CacheLayer, n: u64) {
    let handle = layer.handle();
    let tier = handle.shared_tier().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tier.status().puts < n {
        assert!(
            Instant::now() < deadline,
            "puts never reached {n}: {:?}",
            tier.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn whole_ms(t: SystemTime) -> SystemTime {
    let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis();
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap())
}

mod shared_tier {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fill_on_one_layer_is_a_shared_hit_on_another_with_one_origin_request() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = tier_config(&server, &unique_prefix("layer-hit"));
        let origin = Origin::default();
        let (a, b) = (layer(&cfg, None), layer(&cfg, None));
        let svc_a = ServiceBuilder::new()
            .layer(a.clone())
            .service(origin.service("max-age=60"));
        let svc_b = ServiceBuilder::new()
            .layer(b.clone())
            .service(origin.service("max-age=60"));

        let (status, cs, body) = send(&svc_a, get("en")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello en"));
        assert!(cs.contains("fwd=uri-miss"), "{cs}");
        puts(&a, 1).await;

        let (status, cs, body) = send(&svc_b, get("en")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello en"));
        assert!(cs.contains("hit") && cs.contains("detail=shared"), "{cs}");
        assert_eq!(origin.count(), 1);
        assert_eq!(b.handle().stats().shared_hits, 1);

        // Now a local hit on B, not a shared one.
        let (_, cs, _) = send(&svc_b, get("en")).await;
        assert_eq!(cs, "ravelin; hit; ttl=60");
        assert_eq!(b.handle().stats().shared_hits, 1);
        assert_eq!(origin.count(), 1);
        // A shared-tier hit is not written back.
        assert_eq!(b.handle().shared_tier().unwrap().status().puts, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_variant_the_request_does_not_select_is_a_miss() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = tier_config(&server, &unique_prefix("layer-vary"));
        let origin = Origin::default();
        let (a, b) = (layer(&cfg, None), layer(&cfg, None));
        let svc_a = ServiceBuilder::new()
            .layer(a.clone())
            .service(origin.service("max-age=60"));
        let svc_b = ServiceBuilder::new()
            .layer(b.clone())
            .service(origin.service("max-age=60"));

        send(&svc_a, get("en")).await;
        puts(&a, 1).await;
        let (_, cs, body) = send(&svc_b, get("fr")).await;
        assert_eq!(body, "hello fr");
        assert!(!cs.contains("shared"), "{cs}");
        assert_eq!(origin.count(), 2);
        assert_eq!(b.handle().stats().shared_hits, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_shared_entry_is_validated_with_the_origin() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = tier_config(&server, &unique_prefix("layer-stale"));
        let clock = ManualClock::at(whole_ms(SystemTime::now()));
        let origin = Origin::default();
        let cc = "max-age=1, stale-if-error=600";
        let (a, b) = (layer(&cfg, Some(&clock)), layer(&cfg, Some(&clock)));
        let svc_a = ServiceBuilder::new()
            .layer(a.clone())
            .service(origin.service(cc));
        let svc_b = ServiceBuilder::new()
            .layer(b.clone())
            .service(origin.service(cc));

        send(&svc_a, get("en")).await;
        puts(&a, 1).await;
        clock.advance(Duration::from_secs(30));
        let (status, cs, body) = send(&svc_b, get("en")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello en"));
        assert!(
            cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
            "{cs}"
        );
        assert_eq!(origin.count(), 2);
        assert_eq!(origin.conditional.load(Ordering::SeqCst), 1);
        // The refreshed entry is written through again.
        puts(&b, 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_killed_sends_misses_to_the_origin_without_errors() {
        let Some(mut server) = RedisServer::spawn() else {
            return;
        };
        let cfg = SharedTierConfig {
            timeout: Duration::from_millis(200),
            ..tier_config(&server, &unique_prefix("layer-kill"))
        };
        let origin = Origin::default();
        let (a, b) = (layer(&cfg, None), layer(&cfg, None));
        let svc_a = ServiceBuilder::new()
            .layer(a.clone())
            .service(origin.service("max-age=60"));
        let svc_b = ServiceBuilder::new()
            .layer(b.clone())
            .service(origin.service("max-age=60"));
        send(&svc_a, get("en")).await;
        puts(&a, 1).await;

        server.kill();
        for lang in ["en", "fr", "de"] {
            let (status, cs, body) = send(&svc_b, get(lang)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, format!("hello {lang}"));
            assert!(!cs.contains("shared"), "{cs}");
        }
        assert_eq!(origin.count(), 4);
        // Fills go on locally.
        let (_, cs, _) = send(&svc_b, get("de")).await;
        assert!(cs.starts_with("ravelin; hit"), "{cs}");
        assert!(b.handle().shared_tier().unwrap().status().unavailable >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purges_reach_the_shared_tier() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let cfg = tier_config(&server, &unique_prefix("layer-purge"));
        let origin = Origin::default();
        let a = layer(&cfg, None);
        let svc_a = ServiceBuilder::new()
            .layer(a.clone())
            .service(origin.service("max-age=60"));
        let handle = a.handle();
        let tier = handle.shared_tier().unwrap().clone();
        let key = handle.key_for(&URL.parse().unwrap(), &http::HeaderMap::new());

        send(&svc_a, get("en")).await;
        puts(&a, 1).await;
        assert!(matches!(tier.get(key.as_bytes()).await, Lookup::Hit(_)));
        // Awaited: the URL's entry is gone from Redis when it returns.
        assert_eq!(handle.purge_shared_url(URL).await.unwrap(), 1);
        assert_eq!(tier.get(key.as_bytes()).await, Lookup::Miss);

        // By tag, through the synchronous purge (in the background).
        handle.purge_url(URL).unwrap();
        send(&svc_a, get("en")).await;
        puts(&a, 2).await;
        assert!(handle.purge_tag("product-1") >= 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tier.get(key.as_bytes()).await != Lookup::Miss {
            assert!(
                Instant::now() < deadline,
                "the tag purge never reached Redis"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A local-only handle leaves Redis alone.
        send(&svc_a, get("en")).await;
        puts(&a, 3).await;
        assert!(handle.local_only().purge_url(URL).unwrap() >= 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(tier.get(key.as_bytes()).await, Lookup::Hit(_)));
    }
}
