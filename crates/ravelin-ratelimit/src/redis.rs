//! A [`RateLimitStore`] in Redis, so a fleet of proxies enforces one quota per key.
//!
//! [`RedisStore`] evaluates a request's whole batch of checks with one Lua script, atomically and
//! in one round trip, on the Redis server's clock. Every call is bounded by a short timeout
//! (20 ms by default, the default of Envoy's rate-limit RPC); failures and timeouts are
//! [`StoreError`]s, so the guard's failure policy (open by default) and circuit breaker decide what
//! a dead Redis costs. [`FallbackStore`] can instead keep enforcing the same quotas per proxy with
//! a local store while Redis is unavailable.
//!
//! # Consistency and failure model
//!
//! - **Atomic**: one `EVALSHA` decides every check of a request against the state before it and
//!   writes all or nothing (a request denied by one rule spends nothing from the others), exactly
//!   as [`RateLimitStore::check`] specifies. Two proxies can never both spend the last unit.
//! - **One clock**: instants come from the server's `TIME` inside the script, so proxies with
//!   skewed clocks agree. A server clock that steps backwards never grants extra units; a stored
//!   arrival time further ahead than one full refill is clamped to an empty bucket.
//! - **Bounded memory**: each key expires when its bucket would be full again, the moment it
//!   becomes indistinguishable from an absent key. Redis holds only keys active within one refill
//!   period.
//! - **Timeouts**: each call (waiting for a connection, the command and its reply) is bounded by
//!   [`timeout`](RedisStoreBuilder::timeout) and then fails with [`StoreError::Timeout`]. A reply
//!   that arrives later is discarded; whether the script ran is unknown, so at most that request's
//!   cost may have been spent without the request being counted as limited.
//! - **Connection**: one multiplexed connection per store ([`ConnectionManager`]), established in
//!   the background and re-established with jittered exponential backoff after it drops. A store
//!   can be built while Redis is down and starts working when Redis comes up; nothing blocks. A
//!   connection that was answering and goes silent without being closed (a vanished host, a
//!   moved address) is replaced after three timeouts in a row.
//! - **Untrusted replies**: a reply of the wrong shape or out of range is
//!   [`StoreError::InvalidReply`]; each decision is recomputed locally with
//!   [`Quota::decide`](crate::Quota::decide) and
//!   must agree with the script's. A key under the prefix holding a foreign value is treated as
//!   absent and overwritten; a key of another type is an error.
//!
//! # Keys and Redis Cluster
//!
//! Each check uses one key: `<prefix><rule length>:<rule>:<emission interval ns>:<burst>:<key>`,
//! e.g. `ravelin:rl:6:per-ip:600000000:20:203.0.113.9`. The value is the key's theoretical arrival
//! time in nanoseconds as a decimal string. A batch with several checks touches several keys in
//! one script, which Redis Cluster only allows within one hash slot: on a cluster, give the prefix a
//! hash tag (`{ravelin}:rl:`), which puts all rate-limit state on one shard. A single-rule batch
//! touches one key and is always in one slot. (This store speaks to one endpoint: a standalone
//! Redis, a primary behind Sentinel or a proxy, or one cluster node through a cluster-aware proxy.)
//!
//! # Replication and failover
//!
//! The script writes on the primary. Redis replicates asynchronously, so a failover to a replica
//! may lose the last moments of writes: affected keys then see up to one extra burst. Reads are
//! never served by replicas (a replica could not write the new TAT anyway).
//!
//! # Metrics
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `ravelin_ratelimit_redis_errors_total{kind}` | counter | failed checks, by [`StoreError::as_str`] |
//! | `ravelin_ratelimit_redis_script_loads_total` | counter | `NOSCRIPT` answered by sending the source |
//! | `ravelin_ratelimit_redis_reconnects_total` | counter | silent connections replaced |
//! | `ravelin_ratelimit_fallback_checks_total` | counter | batches answered by a [`FallbackStore`]'s fallback |
//! | `ravelin_ratelimit_fallback_active` | gauge | 1 while a [`FallbackStore`] is degraded |
//!
//! [`ConnectionManager`]: ::redis::aio::ConnectionManager

mod connection;
mod fallback;
mod script;

pub use fallback::FallbackStore;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionManagerConfig;
use ::redis::{Client, Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use crate::future::StoreFuture;
use crate::store::{Check, RateLimitStore, StoreError};

use connection::Connection;
use script::{STORE, Spec};

/// The default per-call timeout: Envoy's rate-limit RPC default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "ravelin:rl:";

/// The longest key prefix accepted.
pub const MAX_PREFIX_LEN: usize = 128;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(50);
const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(1);
/// Connection attempts in one reconnect round; a failed round ends with an error and the next
/// call starts a new one. Bounded so that a dropped store stops reconnecting.
const RECONNECT_ATTEMPTS: usize = 10;

/// A [`RedisStore`] could not be built: the configuration is wrong. (An unreachable Redis is not
/// a build error; the store connects in the background.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// The connection URL could not be parsed.
    #[error("Redis URL is invalid (expected redis://[user:password@]host[:port][/db]): {source}")]
    InvalidUrl {
        /// The parser's complaint.
        #[source]
        source: RedisError,
    },
    /// The key prefix is too long.
    #[error("Redis key prefix is {len} bytes; the limit is {max}")]
    PrefixTooLong {
        /// The prefix's length.
        len: usize,
        /// [`MAX_PREFIX_LEN`].
        max: usize,
    },
    /// A zero timeout would fail every call.
    #[error("Redis `{what}` must be longer than zero")]
    ZeroDuration {
        /// Which setting.
        what: &'static str,
    },
    /// The store must be built inside a Tokio runtime: its connection runs on it.
    #[error(
        "RedisStore::build must be called inside a Tokio runtime (its connection task runs there)"
    )]
    NoRuntime,
    /// The Redis client refused the configuration.
    #[error("Redis client configuration rejected: {source}")]
    Client {
        /// The client's error.
        #[source]
        source: RedisError,
    },
}

/// GCRA rate-limit state in Redis, shared by every proxy that points at the same server and
/// prefix. Cheap to clone: clones share one connection.
///
/// ```no_run
/// use std::time::Duration;
/// use ravelin_ratelimit::{Check, Quota, RateLimitStore};
/// use ravelin_ratelimit::redis::RedisStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .timeout(Duration::from_millis(20))
///     .build()?;
/// let quota = Quota::per_minute(100)?;
/// let decisions = store
///     .check(&[Check { rule: "per-ip", key: b"203.0.113.9", quota, cost: 1, enforce: true }])
///     .await?;
/// assert!(decisions[0].allowed);
/// # Ok(())
/// # }
/// ```
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    prefix: Box<[u8]>,
    timeout: Duration,
    sha: String,
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[derive(Debug)]
pub struct RedisStoreBuilder {
    client: Result<Client, RedisError>,
    prefix: Vec<u8>,
    timeout: Duration,
    connect_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

// === impl RedisStore ===

impl RedisStore {
    /// A builder for a store at `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://`
    /// when the `redis` crate's TLS feature is enabled).
    pub fn builder(url: impl AsRef<str>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Client::open(url.as_ref()))
    }

    /// A builder for a store using an already configured [`redis::Client`].
    pub fn builder_from_client(client: Client) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Ok(client))
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &[u8] {
        &self.inner.prefix
    }

    /// The Redis key holding the state of `check`: for operators inspecting Redis, and tests.
    pub fn key_of(&self, check: &Check<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        script::write_key(&mut out, &self.inner.prefix, check);
        out
    }

    /// Sends `PING` within the store's timeout: a readiness probe.
    ///
    /// # Errors
    /// [`StoreError::Timeout`] or [`StoreError::Unavailable`] when Redis cannot answer in time.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.inner.connection.get();
        let call = async move {
            ::redis::cmd("PING")
                .query_async::<Value>(&mut connection)
                .await
        };
        match tokio::time::timeout(self.inner.timeout, call).await {
            Err(_) => Err(self.inner.timed_out()),
            Ok(Err(e)) => Err(self.inner.failed(e)),
            Ok(Ok(_)) => {
                self.inner.connection.succeeded();
                Ok(())
            }
        }
    }
}

impl Clone for RedisStore {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &String::from_utf8_lossy(&self.inner.prefix))
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl RateLimitStore for RedisStore {
    type Future = StoreFuture;

    fn check(&self, checks: &[Check<'_>]) -> Self::Future {
        if checks.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let inner = Arc::clone(&self.inner);
        // Encode now: the future must not borrow the checks.
        let specs: Vec<Spec> = checks.iter().map(Spec::of).collect();
        let command = inner.evalsha(checks);
        Box::pin(async move {
            let result = match tokio::time::timeout(inner.timeout, inner.run(command)).await {
                Err(_) => Err(inner.timed_out()),
                Ok(Err(e)) => Err(inner.failed(e)),
                Ok(Ok(reply)) => {
                    inner.connection.succeeded();
                    script::parse_reply(&reply, &specs)
                }
            };
            if let Err(e) = &result {
                metrics::counter!("ravelin_ratelimit_redis_errors_total", "kind" => e.as_str())
                    .increment(1);
            }
            result
        })
    }

    fn name(&self) -> &'static str {
        STORE
    }
}

// === impl Inner ===

impl Inner {
    /// `EVALSHA sha n key… args…` for one batch.
    fn evalsha(&self, checks: &[Check<'_>]) -> Cmd {
        let mut command = ::redis::cmd("EVALSHA");
        command.arg(self.sha.as_str()).arg(checks.len());
        let mut key = Vec::with_capacity(self.prefix.len() + 64);
        for check in checks {
            key.clear();
            script::write_key(&mut key, &self.prefix, check);
            command.arg(key.as_slice());
        }
        for check in checks {
            for arg in script::args(check) {
                command.arg(arg);
            }
        }
        command
    }

    /// Runs the script by its SHA; on `NOSCRIPT` (a restarted or flushed server) sends the source
    /// with `EVAL`, which also caches it for the next `EVALSHA`.
    async fn run(&self, command: Cmd) -> Result<Value, RedisError> {
        let mut connection = self.connection.get();
        match command.query_async::<Value>(&mut connection).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                metrics::counter!("ravelin_ratelimit_redis_script_loads_total").increment(1);
                let mut eval = ::redis::cmd("EVAL");
                eval.arg(script::SOURCE);
                for arg in command.args_iter().skip(2) {
                    if let ::redis::Arg::Simple(bytes) = arg {
                        eval.arg(bytes);
                    }
                }
                eval.query_async::<Value>(&mut connection).await
            }
            other => other,
        }
    }

    fn failed(&self, error: RedisError) -> StoreError {
        let error = map_error(error);
        if matches!(error, StoreError::Unavailable { .. }) {
            self.connection.failed();
        }
        error
    }

    fn timed_out(&self) -> StoreError {
        self.connection.timed_out();
        StoreError::Timeout {
            store: STORE,
            timeout: self.timeout,
        }
    }
}

/// Classifies a client error: transport and server-state failures may pass (`Unavailable`); a
/// reply that will stay wrong until the deployment is fixed is `InvalidReply`.
fn map_error(error: RedisError) -> StoreError {
    let invalid = |message: Cow<'static, str>| StoreError::InvalidReply {
        store: STORE,
        message,
    };
    match (error.kind(), error.code()) {
        (_, Some("WRONGTYPE")) => invalid(Cow::Borrowed(
            "a key under the rate-limit prefix holds a non-string value (WRONGTYPE): another program uses the prefix; change `key_prefix` or delete those keys",
        )),
        (ErrorKind::Parse | ErrorKind::UnexpectedReturnType, _) => {
            invalid(Cow::Owned(format!("unparsable reply: {error}")))
        }
        (_, Some("ERR")) if error.detail().is_some_and(|d| d.contains("ravelin gcra")) => invalid(
            Cow::Owned(format!("the script rejected its arguments: {error}")),
        ),
        _ => StoreError::Unavailable {
            store: STORE,
            message: Cow::Owned(format!("Redis call failed: {error}")),
            source: Some(Box::new(error)),
        },
    }
}

// === impl RedisStoreBuilder ===

impl RedisStoreBuilder {
    fn new(client: Result<Client, RedisError>) -> Self {
        Self {
            client,
            prefix: DEFAULT_PREFIX.as_bytes().to_vec(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
        }
    }

    /// The prefix of every key (default `ravelin:rl:`). Give each independent fleet its own; on
    /// Redis Cluster, include a hash tag (`{ravelin}:rl:`) so that a batch's keys share a slot.
    pub fn key_prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most a call may take, including waiting for a (re)connection (default 20 ms). Then it
    /// fails with [`StoreError::Timeout`] and the guard's failure policy applies.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most one background connection attempt may take (default 1 s). Calls never wait
    /// longer than [`timeout`](Self::timeout) for it.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The jittered exponential backoff between reconnection attempts (default 50 ms to 1 s): the
    /// upper bound is how long limiting may take to resume after Redis comes back.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// Builds the store. Does not wait for Redis: the connection is made in the background, and
    /// calls made before it is up fail within the timeout.
    ///
    /// # Errors
    /// A malformed URL, a prefix over [`MAX_PREFIX_LEN`], a zero duration, or no Tokio runtime.
    pub fn build(self) -> Result<RedisStore, RedisConfigError> {
        let client = self
            .client
            .map_err(|source| RedisConfigError::InvalidUrl { source })?;
        if self.prefix.len() > MAX_PREFIX_LEN {
            return Err(RedisConfigError::PrefixTooLong {
                len: self.prefix.len(),
                max: MAX_PREFIX_LEN,
            });
        }
        for (what, d) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("reconnect_backoff", self.reconnect_min),
        ] {
            if d.is_zero() {
                return Err(RedisConfigError::ZeroDuration { what });
            }
        }
        // The connection manager spawns its task immediately; outside a runtime that would panic.
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RedisConfigError::NoRuntime)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            // Calls are bounded by this store's own timeout, which also covers connecting.
            .set_response_timeout(None)
            .set_min_delay(self.reconnect_min)
            .set_max_delay(self.reconnect_max)
            .set_number_of_retries(RECONNECT_ATTEMPTS);
        let _enter = runtime.enter();
        let connection = Connection::new(client, config, self.reconnect_max)
            .map_err(|source| RedisConfigError::Client { source })?;
        let sha = ::redis::Script::new(script::SOURCE).get_hash().to_owned();
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                prefix: self.prefix.into_boxed_slice(),
                timeout: self.timeout,
                sha,
            }),
        })
    }
}

/// Entry points for the fuzz targets in `fuzz/`: not part of the API.
#[doc(hidden)]
pub mod fuzz_logic {
    use std::time::Duration;

    use super::script::{Spec, parse_reply};
    use crate::gcra::Quota;

    /// Reads `data` as the GCRA script's reply to a batch of checks, the way the store does
    /// (untrusted: anything that answers on the Redis address, or another program's script).
    ///
    /// The first byte gives the number of checks (0 to 3), then three bytes per check: limit
    /// per second, burst and cost; the rest is the reply on the wire (RESP2 or RESP3). Never a
    /// panic. Returns whether an accepted reply gives one decision per check, each within its
    /// quota: `limit` is the burst, `remaining` at most the burst, an allowed decision has no
    /// retry wait and resets within the tolerance (the fuzz target asserts it).
    pub fn script_reply(data: &[u8]) -> bool {
        let Some((&count, mut rest)) = data.split_first() else {
            return true;
        };
        let mut specs = Vec::new();
        for _ in 0..count % 4 {
            let Some(([limit, burst, cost], tail)) = rest.split_first_chunk::<3>() else {
                return true;
            };
            rest = tail;
            let Ok(quota) =
                Quota::per_second(u32::from(*limit)).and_then(|q| q.with_burst(u32::from(*burst)))
            else {
                return true;
            };
            specs.push(Spec {
                quota,
                cost: u32::from(*cost),
            });
        }
        let Ok(reply) = ::redis::parse_redis_value(rest) else {
            return true;
        };
        match parse_reply(&reply, &specs) {
            Ok(decisions) => {
                decisions.len() == specs.len()
                    && decisions.iter().zip(&specs).all(|(d, spec)| {
                        let tolerance = Duration::from_nanos(spec.quota.tolerance_nanos());
                        d.limit == spec.quota.burst()
                            && d.remaining <= d.limit
                            && (!d.allowed
                                || (d.retry_after.is_zero() && d.reset_after <= tolerance))
                    })
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let err = RedisStore::builder("redis://127.0.0.1:1/")
            .build()
            .unwrap_err();
        assert!(matches!(err, RedisConfigError::NoRuntime), "{err}");
    }

    #[tokio::test]
    async fn configuration_errors() {
        let err = RedisStore::builder("http://nope").build().unwrap_err();
        assert!(matches!(err, RedisConfigError::InvalidUrl { .. }), "{err}");
        // The message never echoes the URL, which may carry a password.
        let err = RedisStore::builder("redis://user:s3cret@[::1")
            .build()
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");

        let err = RedisStore::builder("redis://127.0.0.1:1/")
            .key_prefix(vec![b'x'; MAX_PREFIX_LEN + 1])
            .build()
            .unwrap_err();
        assert!(
            matches!(err, RedisConfigError::PrefixTooLong { len: 129, max: 128 }),
            "{err}"
        );

        let err = RedisStore::builder("redis://127.0.0.1:1/")
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, RedisConfigError::ZeroDuration { what: "timeout" }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn builds_without_a_server_and_fails_within_the_timeout() {
        // Nothing listens on port 1: building succeeds, calls fail fast, nothing panics.
        let store = RedisStore::builder("redis://127.0.0.1:1/")
            .timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let check = Check {
            rule: "r",
            key: b"k",
            quota: crate::Quota::per_second(1).unwrap(),
            cost: 1,
            enforce: true,
        };
        let err = store.check(&[check]).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(err.store(), "redis");
        assert_eq!(
            store.key_of(&check),
            b"ravelin:rl:1:r:1000000000:1:k".to_vec()
        );
        assert!(format!("{store:?}").contains("ravelin:rl:"));
    }

    #[test]
    fn error_classification() {
        let wrongtype = ::redis::make_extension_error(
            "WRONGTYPE".to_owned(),
            Some("Operation against a key holding the wrong kind of value".to_owned()),
        );
        let err = map_error(wrongtype);
        assert!(matches!(err, StoreError::InvalidReply { .. }), "{err}");

        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let err = map_error(io);
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(err.is_retryable());
    }
}
