//! [`CacheLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ravelin_primitives::KillSwitch;
use ravelin_primitives::clock::{Clock, WallClock};
use tower_layer::Layer;

use crate::config::{CacheConfig, SetCookie, Settings};
use crate::engine::{Engine, WallTime};
use crate::error::ConfigError;
use crate::handle::CacheHandle;
use crate::key::{KeyConfig, QueryMode};
use crate::service::Cache;
use crate::stats::Stats;
use crate::store::{MemoryStore, Storage};

/// A shared HTTP cache (RFC 9111) as a tower layer.
///
/// Every service the layer wraps shares one store, one coalescing registry and one set of
/// counters, so the layer can be applied per connection. Build it once, keep its
/// [`handle`](CacheLayer::handle) for purging and statistics.
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use ravelin_cache::CacheLayer;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = CacheLayer::builder()
///     .max_capacity_bytes(64 * 1024 * 1024)
///     .stale_if_error(Duration::from_secs(3600))
///     .build()?;
/// let purge = layer.handle();
///
/// let origin = service_fn(|_req: Request<()>| async {
///     Ok::<_, Infallible>(
///         Response::builder()
///             .header("cache-control", "max-age=60")
///             .header("surrogate-key", "product-7")
///             .body(Full::new(Bytes::from_static(b"hello")))
///             .unwrap(),
///     )
/// });
/// let svc = ServiceBuilder::new().layer(layer).service(origin);
///
/// let req = || Request::get("http://example.com/p/7").body(()).unwrap();
/// let miss = svc.clone().oneshot(req()).await?;
/// // Stored once the body is complete, which the head cannot know yet.
/// assert_eq!(miss.headers()["cache-status"], "ravelin; fwd=uri-miss; ttl=60; detail=storing");
/// drop(http_body_util::BodyExt::collect(miss.into_body()).await?); // stored once read
///
/// let hit = svc.clone().oneshot(req()).await?;
/// assert_eq!(hit.headers()["cache-status"], "ravelin; hit; ttl=60");
///
/// assert_eq!(purge.purge_tag("product-7"), 1);
/// # Ok(())
/// # }
/// ```
///
/// # Requirements on the inner service
///
/// The wrapped [`Cache<S>`](crate::Cache) is a `Service<Request<ReqBody>>` when:
///
/// - `S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static`:
///   `Clone` because the cache is always ready and calls a clone of `S` (awaiting that clone's
///   readiness inside the response future), and clones it again for background revalidation;
/// - `S::Future: Send + 'static` and `S::Error: Send + 'static` (fills run on spawned tasks;
///   the error passes through unchanged);
/// - `ReqBody: Send + 'static`;
/// - `ResBody: http_body::Body<Data = Bytes> + Send + 'static`;
/// - `ResBody::Error: Into<`[`BoxError`](crate::BoxError)`> + Send + 'static`: any body error,
///   a `BoxError` itself included. The response body is [`CacheBody<ResBody>`](crate::CacheBody),
///   whose error, [`BodyError`](crate::BodyError), is always an `Error + Send + Sync`, so hyper
///   serves it.
///
/// A service that is not `Clone` does not compile: the error (E0599 or E0277) says the trait
/// bounds of `Cache<S>: Service` are not met, without naming `Clone`. Make the service `Clone`
/// (share its state behind an `Arc`), or put `tower::buffer::BufferLayer` under the cache: a
/// `Buffer` is `Clone` and drives one instance of the service through a channel.
///
/// ```compile_fail
/// use std::convert::Infallible;
/// use std::future::{Ready, ready};
/// use std::task::{Context, Poll};
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use ravelin_cache::CacheLayer;
/// use tower::{Layer, ServiceExt};
///
/// /// Not `Clone`: owns something it cannot share.
/// struct Origin;
///
/// impl tower::Service<Request<()>> for Origin {
///     type Response = Response<Full<Bytes>>;
///     type Error = Infallible;
///     type Future = Ready<Result<Self::Response, Infallible>>;
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
///         Poll::Ready(Ok(()))
///     }
///     fn call(&mut self, _: Request<()>) -> Self::Future {
///         ready(Ok(Response::new(Full::new(Bytes::from_static(b"hi")))))
///     }
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = CacheLayer::builder().build()?.layer(Origin);
/// // error[E0599]: the method `oneshot` exists for struct `Cache<Origin>`, but its trait
/// // bounds were not satisfied (`Origin: Clone` is the one missing).
/// let _ = svc.oneshot(Request::new(())).await;
/// # Ok(())
/// # }
/// ```
///
/// The same origin behind a buffer (`tower`'s `buffer` feature) is served:
///
/// ```
/// # use std::convert::Infallible;
/// # use std::future::{Ready, ready};
/// # use std::task::{Context, Poll};
/// # use bytes::Bytes;
/// # use http::{Request, Response};
/// # use http_body_util::Full;
/// # use ravelin_cache::CacheLayer;
/// # use tower::{ServiceBuilder, ServiceExt};
/// # struct Origin;
/// # impl tower::Service<Request<()>> for Origin {
/// #     type Response = Response<Full<Bytes>>;
/// #     type Error = Infallible;
/// #     type Future = Ready<Result<Self::Response, Infallible>>;
/// #     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
/// #         Poll::Ready(Ok(()))
/// #     }
/// #     fn call(&mut self, _: Request<()>) -> Self::Future {
/// #         ready(Ok(Response::new(Full::new(Bytes::from_static(b"hi")))))
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let svc = ServiceBuilder::new()
///     .layer(CacheLayer::builder().build()?)
///     .buffer(1024) // a `Buffer` is `Clone`; its worker task owns `Origin`
///     .service(Origin);
/// let response = svc.oneshot(Request::new(())).await?;
/// assert_eq!(response.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    engine: Arc<Engine>,
}

impl CacheLayer {
    /// A layer with the given configuration, the wall clock and an in-memory store.
    pub fn new(config: CacheConfig) -> Result<Self, ConfigError> {
        Self::builder().config(config).build()
    }

    /// A builder starting from [`CacheConfig::default`].
    pub fn builder() -> CacheLayerBuilder {
        CacheLayerBuilder::default()
    }

    /// The handle for purging and statistics (cheap to clone; usable from an admin endpoint).
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(self.engine.clone())
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self.engine.clone())
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("engine", &self.engine)
            .finish()
    }
}

/// Builds a [`CacheLayer`]; every setting maps to a [`CacheConfig`] field.
#[derive(Default)]
pub struct CacheLayerBuilder {
    cfg: CacheConfig,
    clock: Option<WallTime>,
    storage: Option<Arc<dyn Storage>>,
    kill_switch: Option<KillSwitch>,
}

impl CacheLayerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, cfg: CacheConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// The name in `Cache-Status` and metric labels.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.cfg.name = name.into();
        self
    }

    /// Memory capacity in bytes.
    pub fn max_capacity_bytes(mut self, bytes: u64) -> Self {
        self.cfg.max_capacity_bytes = bytes;
        self
    }

    /// The largest response stored.
    pub fn max_object_bytes(mut self, bytes: u64) -> Self {
        self.cfg.max_object_bytes = bytes;
        self
    }

    /// The most bytes buffered at once by responses being recorded into the store.
    pub fn max_recording_bytes(mut self, bytes: u64) -> Self {
        self.cfg.max_recording_bytes = Some(bytes);
        self
    }

    /// The largest object a range miss fetches whole to store it (0: range misses go forward
    /// with their `Range`); unset: `max_object_bytes`.
    pub fn range_fill_max_bytes(mut self, bytes: u64) -> Self {
        self.cfg.range_fill_max_bytes = Some(bytes);
        self
    }

    /// Cache-key rules.
    pub fn key(mut self, key: KeyConfig) -> Self {
        self.cfg.key = key;
        self
    }

    /// Query handling in the cache key.
    pub fn query(mut self, mode: QueryMode) -> Self {
        self.cfg.key.query = mode;
        self
    }

    /// Query parameters left out of the cache key (exact names, or prefixes ending in `*`).
    pub fn drop_query_params<I, T>(mut self, params: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.cfg.key.drop_query_params = params.into_iter().map(Into::into).collect();
        self
    }

    /// Default `stale-while-revalidate` for responses that send none.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.cfg.stale_while_revalidate = window;
        self
    }

    /// Default `stale-if-error` for responses that send none.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.cfg.stale_if_error = window;
        self
    }

    /// How long to wait for the origin before serving an available stale copy.
    pub fn stale_if_error_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.stale_if_error_timeout = Some(timeout);
        self
    }

    /// Turns request coalescing on or off.
    pub fn coalesce(mut self, on: bool) -> Self {
        self.cfg.coalesce = on;
        self
    }

    /// How long a coalesced request waits before going to the origin itself.
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.coalesce_timeout = timeout;
        self
    }

    /// Heuristic freshness (RFC 9111 §4.2.2): on/off, fraction of the `Last-Modified` age, cap.
    pub fn heuristic(mut self, enabled: bool, fraction: f64, max: Duration) -> Self {
        self.cfg.heuristic_freshness = enabled;
        self.cfg.heuristic_fraction = fraction;
        self.cfg.heuristic_max = max;
        self
    }

    /// Whether heuristic freshness also applies to responses to requests with `Cookie` or
    /// `Authorization` (default off).
    pub fn heuristic_with_credentials(mut self, on: bool) -> Self {
        self.cfg.heuristic_with_credentials = on;
        self
    }

    /// Whether request `Cache-Control` directives and `Pragma: no-cache` are honoured (default
    /// off: clients cannot force origin fetches). On gives RFC 9111 §5.2.1 behaviour.
    pub fn request_directives(mut self, honour: bool) -> Self {
        self.cfg.request_directives = honour;
        self
    }

    /// Whether unsafe methods invalidate stored responses (RFC 9111 §4.4) and POST responses may
    /// be stored for GETs (RFC 9110 §9.3.3). Default off: anonymous clients cannot evict.
    pub fn invalidate_on_unsafe(mut self, on: bool) -> Self {
        self.cfg.invalidate_on_unsafe = on;
        self
    }

    /// What to do with responses carrying `Set-Cookie` (default [`SetCookie::Explicit`]).
    pub fn set_cookie(mut self, mode: SetCookie) -> Self {
        self.cfg.set_cookie = mode;
        self
    }

    /// Targeted cache-control fields (RFC 9213), most specific first.
    pub fn targeted_fields<I, T>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.cfg.targeted_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Response fields carrying surrogate tags.
    pub fn surrogate_key_fields<I, T>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.cfg.surrogate_key_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Whether surrogate-tag fields reach clients.
    pub fn expose_surrogate_keys(mut self, expose: bool) -> Self {
        self.cfg.expose_surrogate_keys = expose;
        self
    }

    /// Whether `Cache-Status` is added to responses.
    pub fn cache_status(mut self, on: bool) -> Self {
        self.cfg.cache_status = on;
        self
    }

    /// The wall clock freshness is computed against (default [`WallClock`]; tests inject a
    /// [`ManualClock`](crate::ManualClock)`<SystemTime>` and move time explicitly).
    pub fn clock(mut self, clock: impl Clock<Instant = SystemTime>) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// A custom storage tier instead of the in-memory store.
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// A runtime switch: while engaged, every request bypasses the cache.
    pub fn kill_switch(mut self, switch: KillSwitch) -> Self {
        self.kill_switch = Some(switch);
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<CacheLayer, ConfigError> {
        let settings = Settings::new(self.cfg)?;
        let stats = Arc::new(Stats::new(&settings.cfg.name));
        let storage = match self.storage {
            Some(s) => s,
            None => {
                let hook_stats = stats.clone();
                let hook: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| hook_stats.evicted(n));
                Arc::new(MemoryStore::with_eviction_hook(
                    settings.cfg.max_capacity_bytes,
                    settings.cfg.max_object_bytes,
                    Some(hook),
                ))
            }
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(WallClock));
        // One tier for the layer: its clones, its services and its handle share the connection,
        // the breaker and the counters (built eagerly, connecting on first use).
        #[cfg(feature = "redis")]
        let shared = match &settings.cfg.shared_tier {
            Some(st) => Some(
                crate::shared_tier::SharedTier::new(&settings.cfg.name, st).map_err(|e| {
                    ConfigError::Invalid(ravelin_primitives::Violations::one(
                        "shared_tier",
                        e.to_string(),
                    ))
                })?,
            ),
            None => None,
        };
        #[cfg(not(feature = "redis"))]
        if settings.cfg.shared_tier.is_some() {
            return Err(ConfigError::Invalid(ravelin_primitives::Violations::one(
                "shared_tier",
                "needs ravelin-cache's `redis` feature",
            )));
        }
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut engine = Engine::new(settings, storage, clock, stats, self.kill_switch);
        #[cfg(feature = "redis")]
        {
            engine.shared = shared;
        }
        Ok(CacheLayer {
            engine: Arc::new(engine),
        })
    }
}

impl fmt::Debug for CacheLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("config", &self.cfg)
            .field("custom_clock", &self.clock.is_some())
            .field("custom_storage", &self.storage.is_some())
            .field(
                "kill_switch",
                &self.kill_switch.as_ref().map(KillSwitch::name),
            )
            .finish()
    }
}
