//! The store's connection: a reconnecting multiplexed connection, replaced when it goes silent.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use ::redis::Client;
use ::redis::Value;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Consecutive timeouts after which the connection is presumed dead.
pub(crate) const STALE_AFTER_TIMEOUTS: u32 = 3;

/// [`ConnectionManager`] reconnects when the socket reports an error. A connection whose peer
/// vanished without a reset (a host that died, a failover that moved an address, a firewall that
/// dropped the flow) reports nothing until the kernel gives up retransmitting, which takes many
/// minutes; meanwhile every call would time out. So after [`STALE_AFTER_TIMEOUTS`] timeouts in a
/// row, with no success between them, a fresh manager replaces the old one (at most once per
/// `replace_interval`). A merely slow server costs one reconnect per interval, which is cheap.
pub(crate) struct Connection {
    client: Client,
    config: ConnectionManagerConfig,
    // A read lock and an `Arc` clone per call; writers only replace a silent connection, at most
    // once per interval, so readers practically never wait.
    current: RwLock<ConnectionManager>,
    consecutive_timeouts: AtomicU32,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last replacement (or creation).
    replaced_at: AtomicU64,
    replace_interval: Duration,
}

impl Connection {
    /// A lazily connecting manager; the first connection attempt starts right away in the
    /// background. Must be called inside a Tokio runtime.
    pub(crate) fn new(
        client: Client,
        config: ConnectionManagerConfig,
        replace_interval: Duration,
    ) -> Result<Self, ::redis::RedisError> {
        let manager = Self::open(&client, &config)?;
        Ok(Self {
            client,
            config,
            current: RwLock::new(manager),
            consecutive_timeouts: AtomicU32::new(0),
            epoch: Instant::now(),
            replaced_at: AtomicU64::new(0),
            replace_interval,
        })
    }

    fn open(
        client: &Client,
        config: &ConnectionManagerConfig,
    ) -> Result<ConnectionManager, ::redis::RedisError> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        // Connect now rather than on the first request. The attempt is bounded by the manager's
        // retry count, so the task ends even if Redis never comes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut warm = manager.clone();
            runtime.spawn(async move {
                let _ = ::redis::cmd("PING").query_async::<Value>(&mut warm).await;
            });
        }
        Ok(manager)
    }

    /// The current connection (a cheap handle to the shared multiplexed connection).
    pub(crate) fn get(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records an answered call.
    pub(crate) fn succeeded(&self) {
        if self.consecutive_timeouts.load(Ordering::Relaxed) != 0 {
            self.consecutive_timeouts.store(0, Ordering::Relaxed);
        }
    }

    /// Records a timed-out call; replaces the connection when it looks dead.
    pub(crate) fn timed_out(&self) {
        let count = self
            .consecutive_timeouts
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if count < STALE_AFTER_TIMEOUTS {
            return;
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.replaced_at.load(Ordering::Acquire);
        let interval = u64::try_from(self.replace_interval.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < interval {
            return;
        }
        // One caller wins the replacement.
        if self
            .replaced_at
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        match Self::open(&self.client, &self.config) {
            Ok(fresh) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                self.consecutive_timeouts.store(0, Ordering::Relaxed);
                metrics::counter!("ravelin_ratelimit_redis_reconnects_total").increment(1);
                tracing::warn!(
                    timeouts = count,
                    "Redis connection timed out {count} times in a row; opened a fresh connection"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "Redis connection looks dead but a new one could not be set up");
            }
        }
    }
}
