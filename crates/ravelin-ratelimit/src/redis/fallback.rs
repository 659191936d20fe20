//! Keep limiting, per proxy, while the shared store is unavailable.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::gcra::Quota;
use crate::store::{Check, RateLimitStore, StoreError};

use crate::future::StoreFuture;

const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A store that asks `primary` (e.g. [`RedisStore`](super::RedisStore)) and, when it fails,
/// answers from `fallback` (e.g. the in-memory store) instead of failing the check.
///
/// While the primary is down each proxy enforces the same quotas on its own traffic: with `n`
/// proxies a key may get up to `n` times its quota, instead of unlimited (fail open) or nothing
/// (fail closed). After a failure the primary is skipped for the
/// [`retry_interval`](Self::retry_interval) (default 1 s); then exactly one check probes it while
/// the others keep using the fallback. So a dead primary costs one timeout per interval, not one
/// per request, and limiting returns to the shared state within an interval of the primary
/// recovering.
///
/// Fallback state is independent of the primary's: when the primary returns, keys continue from
/// their shared state, and what they spent locally meanwhile is not carried over.
///
/// Errors of the fallback itself are returned as they are, for the guard's failure policy.
pub struct FallbackStore<P, F> {
    inner: Arc<Inner<P, F>>,
}

struct Inner<P, F> {
    primary: P,
    fallback: F,
    retry_interval: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` until which the primary is skipped, plus one; 0 while healthy.
    down_until: AtomicU64,
}

/// A check with owned rule and key, for asking the fallback after the caller's borrow ended.
struct OwnedCheck {
    rule: String,
    key: Vec<u8>,
    quota: Quota,
    cost: u32,
    enforce: bool,
}

impl<P, F> FallbackStore<P, F>
where
    P: RateLimitStore,
    F: RateLimitStore,
{
    /// Asks `primary`, and `fallback` while `primary` fails.
    pub fn new(primary: P, fallback: F) -> Self {
        Self {
            inner: Arc::new(Inner {
                primary,
                fallback,
                retry_interval: DEFAULT_RETRY_INTERVAL,
                epoch: Instant::now(),
                down_until: AtomicU64::new(0),
            }),
        }
    }

    /// How long to skip the primary after it failed (default 1 s; at least 1 ms).
    ///
    /// Call before cloning: clones share their state and settings.
    #[must_use]
    pub fn retry_interval(self, interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.retry_interval = interval;
                Self {
                    inner: Arc::new(inner),
                }
            }
            // Already shared: keep the shared state rather than fork it.
            Err(inner) => Self { inner },
        }
    }

    /// The primary store.
    pub fn primary(&self) -> &P {
        &self.inner.primary
    }

    /// The fallback store.
    pub fn fallback(&self) -> &F {
        &self.inner.fallback
    }

    /// Whether checks currently go to the fallback.
    pub fn is_degraded(&self) -> bool {
        self.inner.down_until.load(Ordering::Acquire) != 0
    }
}

impl<P, F> Inner<P, F>
where
    P: RateLimitStore,
    F: RateLimitStore,
{
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn interval_ms(&self) -> u64 {
        u64::try_from(self.retry_interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks the primary down from now; logs once per outage.
    fn mark_down(&self, error: &StoreError) {
        let until = self
            .now_ms()
            .saturating_add(self.interval_ms())
            .saturating_add(1);
        let previous = self.down_until.swap(until, Ordering::AcqRel);
        if previous == 0 {
            metrics::gauge!("ravelin_ratelimit_fallback_active").set(1.0);
            tracing::warn!(
                primary = self.primary.name(),
                fallback = self.fallback.name(),
                %error,
                "rate-limit store failed; enforcing quotas per proxy with the fallback store until it recovers"
            );
        }
    }

    fn mark_up(&self) {
        if self.down_until.swap(0, Ordering::AcqRel) != 0 {
            metrics::gauge!("ravelin_ratelimit_fallback_active").set(0.0);
            tracing::info!(
                primary = self.primary.name(),
                "rate-limit store recovered; shared limiting resumed"
            );
        }
    }

    fn ask_fallback(&self, checks: &[Check<'_>]) -> F::Future {
        metrics::counter!("ravelin_ratelimit_fallback_checks_total").increment(1);
        self.fallback.check(checks)
    }

    /// Whether this check should try the primary: it is healthy, or it is time to probe and this
    /// caller won the probe.
    fn should_try_primary(&self) -> bool {
        let state = self.down_until.load(Ordering::Acquire);
        if state == 0 {
            return true;
        }
        let now = self.now_ms();
        if now.saturating_add(1) < state {
            return false;
        }
        let next = now.saturating_add(self.interval_ms()).saturating_add(1);
        self.down_until
            .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl<P, F> RateLimitStore for FallbackStore<P, F>
where
    P: RateLimitStore,
    F: RateLimitStore,
{
    type Future = StoreFuture;

    fn check(&self, checks: &[Check<'_>]) -> Self::Future {
        if !self.inner.should_try_primary() {
            return Box::pin(self.inner.ask_fallback(checks));
        }
        let owned: Vec<OwnedCheck> = checks
            .iter()
            .map(|c| OwnedCheck {
                rule: c.rule.to_owned(),
                key: c.key.to_vec(),
                quota: c.quota,
                cost: c.cost,
                enforce: c.enforce,
            })
            .collect();
        let primary = self.inner.primary.check(checks);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            match primary.await {
                Ok(decisions) => {
                    inner.mark_up();
                    Ok(decisions)
                }
                Err(error) => {
                    inner.mark_down(&error);
                    let checks: Vec<Check<'_>> = owned
                        .iter()
                        .map(|c| Check {
                            rule: &c.rule,
                            key: &c.key,
                            quota: c.quota,
                            cost: c.cost,
                            enforce: c.enforce,
                        })
                        .collect();
                    let fallback = inner.ask_fallback(&checks);
                    fallback.await
                }
            }
        })
    }

    fn name(&self) -> &'static str {
        self.inner.primary.name()
    }
}

impl<P, F> Clone for FallbackStore<P, F> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<P: fmt::Debug, F: fmt::Debug> fmt::Debug for FallbackStore<P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackStore")
            .field("primary", &self.inner.primary)
            .field("fallback", &self.inner.fallback)
            .field("retry_interval", &self.inner.retry_interval)
            .field(
                "degraded",
                &(self.inner.down_until.load(Ordering::Relaxed) != 0),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::gcra::Decision;

    /// A store that answers from a script of results and counts its calls.
    #[derive(Debug, Default)]
    struct Scripted {
        name: &'static str,
        fail: Mutex<bool>,
        calls: AtomicUsize,
        seen: Mutex<Vec<(String, Vec<u8>, u32)>>,
    }

    impl Scripted {
        fn new(name: &'static str) -> Arc<Self> {
            Arc::new(Self {
                name,
                ..Self::default()
            })
        }
        fn set_failing(&self, fail: bool) {
            *self.fail.lock().unwrap() = fail;
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl RateLimitStore for Scripted {
        type Future = std::future::Ready<Result<Vec<Decision>, StoreError>>;

        fn check(&self, checks: &[Check<'_>]) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.seen.lock().unwrap().extend(
                checks
                    .iter()
                    .map(|c| (c.rule.to_owned(), c.key.to_vec(), c.cost)),
            );
            if *self.fail.lock().unwrap() {
                return std::future::ready(Err(StoreError::Timeout {
                    store: self.name,
                    timeout: Duration::from_millis(20),
                }));
            }
            std::future::ready(Ok(checks
                .iter()
                .map(|c| c.quota.decide(0, 0, c.cost).decision)
                .collect()))
        }

        fn name(&self) -> &'static str {
            self.name
        }
    }

    fn check() -> Check<'static> {
        Check {
            rule: "per-ip",
            key: b"10.0.0.1",
            quota: Quota::per_second(10).unwrap(),
            cost: 2,
            enforce: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn uses_primary_while_healthy() {
        let (p, f) = (Scripted::new("p"), Scripted::new("f"));
        let store = FallbackStore::new(p.clone(), f.clone());
        for _ in 0..3 {
            assert_eq!(store.check(&[check()]).await.unwrap().len(), 1);
        }
        assert_eq!((p.calls(), f.calls()), (3, 0));
        assert!(!store.is_degraded());
    }

    #[tokio::test(start_paused = true)]
    async fn falls_back_and_probes_once_per_interval() {
        let (p, f) = (Scripted::new("p"), Scripted::new("f"));
        let store = FallbackStore::new(p.clone(), f.clone()).retry_interval(Duration::from_secs(1));
        p.set_failing(true);

        // The failing call is answered by the fallback with the same checks.
        let decisions = store.check(&[check()]).await.unwrap();
        assert!(decisions[0].allowed);
        assert_eq!((p.calls(), f.calls()), (1, 1));
        assert_eq!(
            f.seen.lock().unwrap()[0],
            ("per-ip".to_owned(), b"10.0.0.1".to_vec(), 2)
        );
        assert!(store.is_degraded());

        // Within the interval the primary is not asked at all.
        for _ in 0..50 {
            store.check(&[check()]).await.unwrap();
        }
        assert_eq!((p.calls(), f.calls()), (1, 51));

        // After it, one probe; still failing, so back to the fallback for another interval.
        tokio::time::advance(Duration::from_millis(1001)).await;
        store.check(&[check()]).await.unwrap();
        store.check(&[check()]).await.unwrap();
        assert_eq!((p.calls(), f.calls()), (2, 53));

        // Recovered: the next probe succeeds and the primary takes over again.
        p.set_failing(false);
        tokio::time::advance(Duration::from_millis(1001)).await;
        store.check(&[check()]).await.unwrap();
        assert!(!store.is_degraded());
        store.check(&[check()]).await.unwrap();
        assert_eq!((p.calls(), f.calls()), (4, 53));
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_concurrent_probe() {
        let (p, f) = (Scripted::new("p"), Scripted::new("f"));
        let store = FallbackStore::new(p.clone(), f.clone());
        p.set_failing(true);
        store.check(&[check()]).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        // Futures created together: only the first may probe.
        let futures: Vec<_> = (0..10).map(|_| store.check(&[check()])).collect();
        for fut in futures {
            fut.await.unwrap();
        }
        assert_eq!(p.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn fallback_errors_pass_through() {
        let (p, f) = (Scripted::new("p"), Scripted::new("f"));
        let store = FallbackStore::new(p.clone(), f.clone());
        p.set_failing(true);
        f.set_failing(true);
        let err = store.check(&[check()]).await.unwrap_err();
        assert_eq!(err.store(), "f");
        assert_eq!(store.name(), "p");
    }
}
