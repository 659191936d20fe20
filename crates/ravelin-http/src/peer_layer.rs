//! [`PeerAddrLayer`]: sets the [`PeerAddr`] extension from the connection a request came on.
//!
//! Servers know the client's address in their own type: axum's `ConnectInfo<SocketAddr>`,
//! tonic's `TcpConnectInfo`, or only the address a hyper accept loop was handed. Guards read
//! one type, [`PeerAddr`]; this layer is the one place that converts, so no application writes
//! that glue by hand (and no `client_ip` rate-limit rule is left without a key because it was
//! forgotten).
//!
//! # Why a trait and features, not a dependency on every server
//!
//! The server types are read through [`ConnectionPeer`], implemented here for axum's
//! `ConnectInfo<SocketAddr>` behind the optional `axum` feature. `ravelin-http` is the small
//! vocabulary every Ravelin crate depends on; making axum (or tonic, which brings hyper, h2 and
//! a TLS stack) a normal dependency would put it into every build, including a plain hyper or
//! pingora one. With the trait, an application that already uses axum turns on one feature and
//! writes [`PeerAddrLayer::new`]; one on another server names its type with
//! [`PeerAddrLayer::from_extension`] (a type it owns implementing [`ConnectionPeer`]) or
//! [`PeerAddrLayer::from_fn`] (any conversion, e.g. tonic's `TcpConnectInfo::remote_addr`),
//! and an accept loop that only has the address uses [`PeerAddrLayer::fixed`]. The layer
//! itself is one small non-generic type either way, so its docs read the same on docs.rs.

use std::fmt;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use http::{Extensions, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::PeerAddr;

/// A connection-information type a server stores in request extensions, from which the peer's
/// socket address can be read.
///
/// Implemented for axum's `ConnectInfo<SocketAddr>` (feature `axum`), for [`SocketAddr`]
/// itself (a server that inserts the bare address) and for [`PeerAddr`]. Implement it for a
/// connection type of your own and read it with [`PeerAddrLayer::from_extension`]; for a type
/// you do not own, use [`PeerAddrLayer::from_fn`].
pub trait ConnectionPeer: Send + Sync + 'static {
    /// The peer's socket address, if this connection has one (a Unix socket has none).
    fn peer_addr(&self) -> Option<SocketAddr>;
}

impl ConnectionPeer for SocketAddr {
    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(*self)
    }
}

impl ConnectionPeer for PeerAddr {
    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.0)
    }
}

/// What `into_make_service_with_connect_info::<SocketAddr>()` inserts into every request.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl ConnectionPeer for axum::extract::ConnectInfo<SocketAddr> {
    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.0)
    }
}

/// The connection types [`PeerAddrLayer::new`] looks for, in order.
fn known(extensions: &Extensions) -> Option<SocketAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return info.peer_addr();
    }
    extensions.get::<SocketAddr>().copied()
}

/// Reads `T` from the extensions.
fn extension<T: ConnectionPeer>(extensions: &Extensions) -> Option<SocketAddr> {
    extensions.get::<T>().and_then(T::peer_addr)
}

/// Where a [`PeerAddrLayer`] takes the address from.
#[derive(Clone, Copy)]
enum Source {
    /// The one address of the connection this service was built for.
    Fixed(SocketAddr),
    /// Read from the request's extensions (a function pointer: the layer stays one
    /// non-generic `Copy` type whatever server it reads).
    Extensions(fn(&Extensions) -> Option<SocketAddr>),
}

/// Sets the [`PeerAddr`] request extension from the connection, for guards and the rate
/// limiter, unless the request already carries one (the edge's server sets it; an inner
/// server's guess never overwrites it).
///
/// - [`PeerAddrLayer::new`]: from the connection information the server stored in the request:
///   axum's `ConnectInfo<SocketAddr>` (feature `axum`; serve with
///   `into_make_service_with_connect_info::<SocketAddr>()`), or a bare [`SocketAddr`].
/// - [`PeerAddrLayer::fixed`]: a hyper (or hyper-util) accept loop builds the per-connection
///   service with the address `accept()` returned.
/// - [`PeerAddrLayer::from_extension`] / [`PeerAddrLayer::from_fn`]: any other server's type,
///   e.g. tonic's `TcpConnectInfo`:
///   `PeerAddrLayer::from_fn(|ext| ext.get::<TcpConnectInfo>()?.remote_addr())`.
///
/// A request for which no address is found goes on without one; a rate-limit rule keyed by
/// `client_ip` then answers it with an error naming this layer (see `ravelin-ratelimit`'s
/// `MissingPeer`). Always ready; it adds no future of its own.
///
/// ```
/// use std::convert::Infallible;
/// use std::net::SocketAddr;
/// use ravelin_http::{PeerAddr, PeerAddrLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Infallible> {
/// // In a hyper accept loop: `let (stream, addr) = listener.accept().await?;`
/// let addr: SocketAddr = "192.0.2.7:40000".parse().unwrap();
/// let service = ServiceBuilder::new()
///     .layer(PeerAddrLayer::fixed(addr))
///     .service(service_fn(|request: http::Request<()>| async move {
///         Ok::<_, Infallible>(PeerAddr::of(request.extensions()))
///     }));
/// assert_eq!(service.oneshot(http::Request::new(())).await?, Some(addr));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct PeerAddrLayer {
    source: Source,
}

// === impl PeerAddrLayer ===

impl PeerAddrLayer {
    /// Reads the connection information servers store in requests: axum's
    /// `ConnectInfo<SocketAddr>` with the `axum` feature, else a bare [`SocketAddr`]
    /// extension.
    pub const fn new() -> Self {
        Self {
            source: Source::Extensions(known),
        }
    }

    /// Every request gets `addr`: for a service built per connection, with the address the
    /// listener accepted it from.
    pub const fn fixed(addr: SocketAddr) -> Self {
        Self {
            source: Source::Fixed(addr),
        }
    }

    /// Reads the extension of type `T` (a connection type implementing [`ConnectionPeer`]).
    pub fn from_extension<T: ConnectionPeer>() -> Self {
        Self {
            source: Source::Extensions(extension::<T>),
        }
    }

    /// Reads the address with `read`, for a server type this crate does not know. A closure
    /// that captures nothing is accepted:
    /// `PeerAddrLayer::from_fn(|ext| ext.get::<TcpConnectInfo>()?.remote_addr())`.
    pub const fn from_fn(read: fn(&Extensions) -> Option<SocketAddr>) -> Self {
        Self {
            source: Source::Extensions(read),
        }
    }

    /// The address for a request with `extensions`, or `None`.
    fn peer(&self, extensions: &Extensions) -> Option<SocketAddr> {
        match self.source {
            Source::Fixed(addr) => Some(addr),
            Source::Extensions(read) => read(extensions),
        }
    }
}

impl Default for PeerAddrLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PeerAddrLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("PeerAddrLayer");
        match self.source {
            Source::Fixed(addr) => debug.field("fixed", &addr),
            Source::Extensions(_) => debug.field("from", &"extensions"),
        };
        debug.finish()
    }
}

impl<S> Layer<S> for PeerAddrLayer {
    type Service = SetPeerAddr<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetPeerAddr {
            inner,
            layer: *self,
        }
    }
}

// === impl SetPeerAddr ===

/// The service of a [`PeerAddrLayer`]: sets [`PeerAddr`] on each request that has none, then
/// calls the inner service (its future and error unchanged).
#[derive(Clone, Debug)]
pub struct SetPeerAddr<S> {
    inner: S,
    layer: PeerAddrLayer,
}

impl<S> SetPeerAddr<S> {
    /// Wraps `inner` with `layer`'s source.
    pub fn new(inner: S, layer: PeerAddrLayer) -> Self {
        Self { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for SetPeerAddr<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let extensions = request.extensions_mut();
        if extensions.get::<PeerAddr>().is_none()
            && let Some(addr) = self.layer.peer(extensions)
        {
            extensions.insert(PeerAddr(addr));
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::convert::Infallible;
    use std::net::SocketAddr;

    use http::Request;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::{ConnectionPeer, PeerAddrLayer};
    use crate::PeerAddr;

    async fn peer_through(layer: PeerAddrLayer, request: Request<()>) -> Option<SocketAddr> {
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|request: Request<()>| async move {
                Ok::<_, Infallible>(PeerAddr::of(request.extensions()))
            }))
            .oneshot(request)
            .await
            .unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn fixed_sets_the_accepted_address() {
        let a = addr("192.0.2.1:1000");
        assert_eq!(
            peer_through(PeerAddrLayer::fixed(a), Request::new(())).await,
            Some(a)
        );
    }

    #[tokio::test]
    async fn an_existing_peer_addr_is_left_untouched() {
        let edge = addr("198.51.100.9:443");
        let mut request = Request::new(());
        request.extensions_mut().insert(PeerAddr(edge));
        request.extensions_mut().insert(addr("10.0.0.1:1"));
        for layer in [
            PeerAddrLayer::fixed(addr("192.0.2.1:1000")),
            PeerAddrLayer::new(),
        ] {
            let mut copy = Request::new(());
            *copy.extensions_mut() = request.extensions().clone();
            assert_eq!(peer_through(layer, copy).await, Some(edge), "{layer:?}");
        }
    }

    #[tokio::test]
    async fn new_reads_a_bare_socket_addr_and_finds_nothing_else() {
        let a = addr("[2001:db8::1]:5000");
        let mut request = Request::new(());
        request.extensions_mut().insert(a);
        assert_eq!(peer_through(PeerAddrLayer::new(), request).await, Some(a));
        assert_eq!(
            peer_through(PeerAddrLayer::new(), Request::new(())).await,
            None
        );
    }

    #[derive(Clone)]
    struct MyConnection {
        remote: Option<SocketAddr>,
    }

    impl ConnectionPeer for MyConnection {
        fn peer_addr(&self) -> Option<SocketAddr> {
            self.remote
        }
    }

    #[tokio::test]
    async fn from_extension_and_from_fn_read_other_servers_types() {
        let a = addr("192.0.2.3:3");
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(MyConnection { remote: Some(a) });
        assert_eq!(
            peer_through(PeerAddrLayer::from_extension::<MyConnection>(), request).await,
            Some(a)
        );
        let mut unix = Request::new(());
        unix.extensions_mut().insert(MyConnection { remote: None });
        assert_eq!(
            peer_through(PeerAddrLayer::from_extension::<MyConnection>(), unix).await,
            None
        );
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(MyConnection { remote: Some(a) });
        let layer = PeerAddrLayer::from_fn(|ext| ext.get::<MyConnection>()?.remote);
        assert_eq!(peer_through(layer, request).await, Some(a));
    }

    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn new_reads_axums_connect_info() {
        let a = addr("192.0.2.4:4");
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(a));
        assert_eq!(peer_through(PeerAddrLayer::new(), request).await, Some(a));
    }
}
