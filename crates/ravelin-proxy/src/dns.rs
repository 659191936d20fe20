//! Upstream host names, resolved with a last good address set.
//!
//! An upstream URL with an IP address is connected to as written. One with a host name is
//! looked up through a [`NameResolver`] ([`SystemResolver`], the operating system's resolver,
//! by default):
//!
//! - the first connection waits for the first lookup (bounded by `lookup_timeout`); until one
//!   succeeds, connections fail as connect errors (502, retried like any connect failure);
//! - after that, connections never wait for DNS: they use the set in hand, and a connection
//!   opened when the set is older than `refresh` starts one lookup in the background;
//! - a lookup that fails, times out or returns no address **keeps the last good set** (a
//!   dependency's empty "success" must not empty the upstream); it is counted in
//!   `ravelin_proxy_upstream_dns_lookups_total{upstream,result}` and logged at most a few times
//!   a second;
//! - at most [`MAX_ADDRESSES`] addresses are kept, and connections start from each of them in
//!   turn (round robin), trying the others in order when one cannot be reached.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper_util::client::legacy::connect::dns::Name;
use ravelin_primitives::clock::Nanos;
use ravelin_primitives::{LogLimiter, Validate, Violations};
use serde::{Deserialize, Serialize};
use tower_service::Service;

use crate::health::SharedClock;

/// The most addresses kept for one upstream name: a DNS answer cannot grow the set (and the
/// connection attempts walking it) without bound.
pub const MAX_ADDRESSES: usize = 64;

/// A boxed lookup future.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Looks up the addresses of a host name. Implement it to resolve upstream names another way
/// (a service registry, a fixed table in tests).
pub trait NameResolver: Send + Sync + fmt::Debug + 'static {
    /// The addresses of `host`, with `port` set on each.
    fn lookup(&self, host: &str, port: u16) -> Lookup;
}

impl<R: NameResolver + ?Sized> NameResolver for Arc<R> {
    fn lookup(&self, host: &str, port: u16) -> Lookup {
        (**self).lookup(host, port)
    }
}

/// The operating system's resolver (`getaddrinfo`, through [`tokio::net::lookup_host`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl NameResolver for SystemResolver {
    fn lookup(&self, host: &str, port: u16) -> Lookup {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// How an upstream's host name is kept resolved.
///
/// | key | default | bounds |
/// |---|---|---|
/// | `refresh` | 30 s | 1 s to 1 h |
/// | `lookup_timeout` | 2 s | 10 ms to 60 s |
///
/// ```
/// use ravelin_proxy::DnsConfig;
/// use ravelin_primitives::Validate;
///
/// let dns: DnsConfig = serde_json::from_str(r#"{ "refresh": "10s" }"#).unwrap();
/// dns.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// A set older than this is looked up again (in the background) when a connection opens.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// The longest one lookup may take; then it counts as failed.
    #[serde(with = "humantime_serde")]
    pub lookup_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(30),
            lookup_timeout: Duration::from_secs(2),
        }
    }
}

impl DnsConfig {
    /// The shortest `refresh`.
    pub const MIN_REFRESH: Duration = Duration::from_secs(1);
    /// The longest `refresh`.
    pub const MAX_REFRESH: Duration = Duration::from_secs(3600);
    /// The shortest `lookup_timeout`.
    pub const MIN_LOOKUP_TIMEOUT: Duration = Duration::from_millis(10);
    /// The longest `lookup_timeout`.
    pub const MAX_LOOKUP_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Validate for DnsConfig {
    fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        for (field, value, min, max) in [
            (
                "refresh",
                self.refresh,
                Self::MIN_REFRESH,
                Self::MAX_REFRESH,
            ),
            (
                "lookup_timeout",
                self.lookup_timeout,
                Self::MIN_LOOKUP_TIMEOUT,
                Self::MAX_LOOKUP_TIMEOUT,
            ),
        ] {
            if value < min || value > max {
                v.push(
                    field,
                    format!("must be between {min:?} and {max:?}, got {value:?}"),
                );
            }
        }
        v.into_result()
    }
}

// === Addresses ===

/// The outcome of one lookup: the `result` label of `ravelin_proxy_upstream_dns_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookupResult {
    Ok,
    Error,
    Empty,
    Timeout,
}

impl LookupResult {
    const ALL: [Self; 4] = [Self::Ok, Self::Error, Self::Empty, Self::Timeout];

    const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Empty => "empty",
            Self::Timeout => "timeout",
        }
    }
}

/// The resolved addresses of one upstream name.
pub(crate) struct Addresses {
    upstream: Arc<str>,
    host: Box<str>,
    port: u16,
    config: DnsConfig,
    resolver: Arc<dyn NameResolver>,
    clock: SharedClock,
    /// The last good set; `None` until a lookup succeeds.
    current: ArcSwapOption<Vec<SocketAddr>>,
    /// When `current` was last looked up (successfully or not), as clock nanoseconds.
    looked_up_at: AtomicU64,
    /// One lookup at a time.
    looking_up: AtomicBool,
    /// Serializes first lookups, so a burst of first connections makes one query.
    first: tokio::sync::Mutex<()>,
    /// The next starting address (round robin).
    next: AtomicUsize,
    lookups: [metrics::Counter; LookupResult::ALL.len()],
    size: metrics::Gauge,
    log: LogLimiter,
}

impl fmt::Debug for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Addresses")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

impl Addresses {
    pub(crate) fn new(
        upstream: &Arc<str>,
        host: &str,
        port: u16,
        config: DnsConfig,
        resolver: Arc<dyn NameResolver>,
        clock: SharedClock,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            config,
            resolver,
            clock,
            current: ArcSwapOption::empty(),
            looked_up_at: AtomicU64::new(0),
            looking_up: AtomicBool::new(false),
            first: tokio::sync::Mutex::new(()),
            next: AtomicUsize::new(0),
            lookups: LookupResult::ALL.map(|result| {
                metrics::counter!(
                    "ravelin_proxy_upstream_dns_lookups_total",
                    "upstream" => Arc::clone(upstream),
                    "result" => result.as_str()
                )
            }),
            size: metrics::gauge!("ravelin_proxy_upstream_addresses", "upstream" => Arc::clone(upstream)),
            log: LogLimiter::per_second(2),
            upstream: Arc::clone(upstream),
        }
    }

    /// The last good set, if a lookup ever succeeded.
    pub(crate) fn current(&self) -> Option<Arc<Vec<SocketAddr>>> {
        self.current.load_full()
    }

    fn counter(&self, result: LookupResult) -> Option<&metrics::Counter> {
        self.lookups.get(result as usize)
    }

    /// One lookup; installs a good answer, keeps the last good set otherwise.
    async fn look_up(&self) -> Option<Arc<Vec<SocketAddr>>> {
        let lookup = self.resolver.lookup(&self.host, self.port);
        let answer = tokio::time::timeout(self.config.lookup_timeout, lookup).await;
        self.looked_up_at
            .store(self.clock.now().as_u64(), Ordering::Release);
        let (result, error) = match answer {
            Ok(Ok(mut addresses)) if !addresses.is_empty() => {
                addresses.truncate(MAX_ADDRESSES);
                for address in &mut addresses {
                    address.set_port(self.port);
                }
                let addresses = Arc::new(addresses);
                if let Some(counter) = self.counter(LookupResult::Ok) {
                    counter.increment(1);
                }
                // usize → f64: at most MAX_ADDRESSES.
                self.size.set(addresses.len() as f64);
                self.current.store(Some(Arc::clone(&addresses)));
                return Some(addresses);
            }
            Ok(Ok(_)) => (LookupResult::Empty, None),
            Ok(Err(error)) => (LookupResult::Error, Some(error)),
            Err(_elapsed) => (LookupResult::Timeout, None),
        };
        if let Some(counter) = self.counter(result) {
            counter.increment(1);
        }
        let kept = self.current();
        if let Some(permit) = self.log.check() {
            tracing::warn!(
                upstream = &*self.upstream,
                host = &*self.host,
                result = result.as_str(),
                error = error.as_ref().map(tracing::field::display),
                kept = kept.as_ref().map_or(0, |set| set.len()),
                suppressed = permit.suppressed(),
                "upstream name lookup failed; keeping the last good addresses"
            );
        }
        kept
    }

    /// The addresses a new connection tries, in order.
    async fn resolve(self: &Arc<Self>) -> io::Result<Vec<SocketAddr>> {
        let set = match self.current() {
            Some(set) => {
                self.refresh_if_stale();
                set
            }
            None => {
                let _first = self.first.lock().await;
                match self.current() {
                    Some(set) => set,
                    None => self.look_up().await.ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("no address for upstream host {:?} yet", &*self.host),
                        )
                    })?,
                }
            }
        };
        // Round robin: each connection starts from the next address, then tries the others.
        let start = self.next.fetch_add(1, Ordering::Relaxed) % set.len().max(1);
        Ok(set
            .iter()
            .skip(start)
            .chain(set.iter().take(start))
            .copied()
            .collect())
    }

    /// Starts a background lookup when the set is older than `refresh` and none is running.
    fn refresh_if_stale(self: &Arc<Self>) {
        let now = self.clock.now();
        let last = Nanos::new(self.looked_up_at.load(Ordering::Acquire));
        if now - last < self.config.refresh || self.looking_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            // The upstream may be gone (a reload replaced it): then there is nothing to refresh.
            if let Some(this) = weak.upgrade() {
                this.look_up().await;
                this.looking_up.store(false, Ordering::Release);
            }
        });
    }
}

// === the connector's resolver ===

/// What hyper-util's `HttpConnector` calls to resolve the upstream's host: the upstream's
/// [`Addresses`]. (The connector does not call it for an IP address.)
#[derive(Clone, Debug)]
pub(crate) struct ConnectorResolver {
    addresses: Option<Arc<Addresses>>,
}

impl ConnectorResolver {
    pub(crate) fn new(addresses: Option<Arc<Addresses>>) -> Self {
        Self { addresses }
    }
}

impl Service<Name> for ConnectorResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let addresses = self.addresses.clone();
        Box::pin(async move {
            match addresses {
                Some(addresses) if addresses.host.eq_ignore_ascii_case(name.as_str()) => {
                    Ok(addresses.resolve().await?.into_iter())
                }
                // The client only asks for its upstream's host; anything else is a bug, and
                // connecting to an unvetted name is not the answer.
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("no resolver for host {:?}", name.as_str()),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ravelin_primitives::clock::ManualClock;

    use super::*;

    /// Answers from a script, then repeats the last answer.
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<io::Result<Vec<SocketAddr>>>>);

    impl NameResolver for Scripted {
        fn lookup(&self, _: &str, _: u16) -> Lookup {
            let mut script = self.0.lock().unwrap();
            let answer = if script.len() > 1 {
                script.remove(0)
            } else {
                match script.first() {
                    Some(Ok(set)) => Ok(set.clone()),
                    _ => Err(io::Error::other("down")),
                }
            };
            Box::pin(async move { answer })
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bounds_name_the_field() {
        DnsConfig::default().validate().unwrap();
        let bad = DnsConfig {
            refresh: Duration::ZERO,
            lookup_timeout: Duration::from_secs(61),
        };
        let text = bad.validate().unwrap_err().to_string();
        assert!(
            text.contains("refresh") && text.contains("lookup_timeout"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn failures_and_empty_answers_keep_the_last_good_set() {
        let clock = ManualClock::new();
        let resolver = Scripted(Mutex::new(vec![
            Err(io::Error::other("not yet")),
            Ok(vec![addr("10.0.0.1:1"), addr("10.0.0.2:1")]),
            Ok(vec![]),
            Err(io::Error::other("down")),
        ]));
        let name: Arc<str> = Arc::from("web");
        let addresses = Arc::new(Addresses::new(
            &name,
            "origin.test",
            8080,
            DnsConfig::default(),
            Arc::new(resolver),
            Arc::new(clock.clone()),
        ));
        // No good answer yet: the connection fails.
        assert!(addresses.resolve().await.is_err());
        // The first good answer, with the upstream's port, round robin.
        let first = addresses.resolve().await.unwrap();
        assert_eq!(first, vec![addr("10.0.0.1:8080"), addr("10.0.0.2:8080")]);
        let second = addresses.resolve().await.unwrap();
        assert_eq!(second, vec![addr("10.0.0.2:8080"), addr("10.0.0.1:8080")]);
        // Stale: the empty answer and the error are looked up in the background and change
        // nothing.
        for _ in 0..2 {
            clock.advance(Duration::from_secs(31));
            addresses.resolve().await.unwrap();
            while addresses.looking_up.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
            }
            assert_eq!(addresses.current().unwrap().len(), 2);
        }
    }

    #[tokio::test]
    async fn answers_are_capped() {
        let many: Vec<SocketAddr> = (0..200_u16)
            .map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1)))
            .collect();
        let name: Arc<str> = Arc::from("web");
        let addresses = Arc::new(Addresses::new(
            &name,
            "origin.test",
            80,
            DnsConfig::default(),
            Arc::new(Scripted(Mutex::new(vec![Ok(many)]))),
            Arc::new(ManualClock::new()),
        ));
        assert_eq!(addresses.resolve().await.unwrap().len(), MAX_ADDRESSES);
    }
}
