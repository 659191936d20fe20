//! The store's connection: a reconnecting multiplexed connection, replaced when it goes silent.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
/// minutes; meanwhile every call would time out. So when a connection that was answering turns
/// silent — [`STALE_AFTER_TIMEOUTS`] timeouts in a row since its last success, and no transport
/// error (which would mean the manager already knows and is reconnecting) — a fresh manager
/// replaces it. Once per silence: the next replacement needs a success first, so an unreachable
/// host never causes a reconnect storm, and a stalled server costs one reconnect per stall.
pub(crate) struct Connection {
    client: Client,
    config: ConnectionManagerConfig,
    // A read lock and an `Arc` clone per call; writers only replace a silent connection, at most
    // once per interval, so readers practically never wait.
    current: RwLock<ConnectionManager>,
    consecutive_timeouts: AtomicU32,
    /// A call succeeded since the last transport error or replacement.
    answered: AtomicBool,
    epoch: Instant,
    /// Milliseconds since `epoch` before which no replacement may happen.
    next_replace_at: AtomicU64,
    replacements: AtomicU64,
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
            answered: AtomicBool::new(false),
            epoch: Instant::now(),
            next_replace_at: AtomicU64::new(0),
            replacements: AtomicU64::new(0),
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
        if !self.answered.load(Ordering::Relaxed) {
            self.answered.store(true, Ordering::Relaxed);
        }
    }

    /// Records a transport error: the manager has seen it and reconnects by itself.
    pub(crate) fn failed(&self) {
        if self.answered.load(Ordering::Relaxed) {
            self.answered.store(false, Ordering::Relaxed);
        }
    }

    /// Records a timed-out call; replaces the connection when it looks dead.
    pub(crate) fn timed_out(&self) {
        let count = self
            .consecutive_timeouts
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if count < STALE_AFTER_TIMEOUTS || !self.answered.load(Ordering::Relaxed) {
            return;
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let allowed_at = self.next_replace_at.load(Ordering::Acquire);
        if now < allowed_at {
            return;
        }
        let interval = u64::try_from(self.replace_interval.as_millis()).unwrap_or(u64::MAX);
        // One caller wins the replacement.
        if self
            .next_replace_at
            .compare_exchange(
                allowed_at,
                now.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        match Self::open(&self.client, &self.config) {
            Ok(fresh) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                self.consecutive_timeouts.store(0, Ordering::Relaxed);
                self.answered.store(false, Ordering::Relaxed);
                self.replacements.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(replace_interval: Duration) -> Connection {
        // Nothing listens on port 1: the manager never connects, which these tests do not need.
        let client = Client::open("redis://127.0.0.1:1/").unwrap();
        let config = ConnectionManagerConfig::new().set_number_of_retries(0);
        Connection::new(client, config, replace_interval).unwrap()
    }

    fn replacements(c: &Connection) -> u64 {
        c.replacements.load(Ordering::Relaxed)
    }

    fn timeouts(c: &Connection, n: u32) {
        for _ in 0..n {
            c.timed_out();
        }
    }

    #[tokio::test]
    async fn never_answered_is_never_replaced() {
        // Unreachable from the start: the manager's own reconnecting is all there is to do.
        let c = connection(Duration::ZERO);
        timeouts(&c, 10);
        assert_eq!(replacements(&c), 0);
    }

    #[tokio::test]
    async fn silence_after_answers_replaces_once() {
        let c = connection(Duration::ZERO);
        c.succeeded();
        timeouts(&c, STALE_AFTER_TIMEOUTS - 1);
        assert_eq!(replacements(&c), 0);
        c.timed_out();
        assert_eq!(replacements(&c), 1);
        // The fresh connection must answer once before it can be replaced in turn.
        timeouts(&c, 10);
        assert_eq!(replacements(&c), 1);
        c.succeeded();
        timeouts(&c, STALE_AFTER_TIMEOUTS);
        assert_eq!(replacements(&c), 2);
    }

    #[tokio::test]
    async fn a_success_or_a_transport_error_resets_the_count() {
        let c = connection(Duration::ZERO);
        c.succeeded();
        timeouts(&c, STALE_AFTER_TIMEOUTS - 1);
        c.succeeded();
        timeouts(&c, STALE_AFTER_TIMEOUTS - 1);
        assert_eq!(replacements(&c), 0);
        // A transport error: the manager knows and reconnects; timeouts after it are the wait.
        c.failed();
        timeouts(&c, 10);
        assert_eq!(replacements(&c), 0);
    }

    #[tokio::test]
    async fn at_most_once_per_interval() {
        let c = connection(Duration::from_secs(3600));
        c.succeeded();
        timeouts(&c, STALE_AFTER_TIMEOUTS);
        assert_eq!(replacements(&c), 1);
        c.succeeded();
        timeouts(&c, 10);
        assert_eq!(replacements(&c), 1);
    }
}
