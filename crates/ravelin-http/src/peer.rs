//! [`PeerAddr`]: who is on the other end of the connection.

use std::net::SocketAddr;

/// The client's socket address, set as a request extension by the server that accepted the
/// connection (`ravelin-proxy`'s server does), or by [`PeerAddrLayer`](crate::PeerAddrLayer)
/// from the server's own connection information (axum's `ConnectInfo`, a hyper accept loop's
/// address).
///
/// Guards read it (as `RequestHead::peer` in `ravelin-failsafe`), the rate limiter keys clients
/// by it, and the ingress stage decides from it whether forwarding headers can be believed.
///
/// ```
/// use ravelin_http::PeerAddr;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(PeerAddr("192.0.2.7:40000".parse().unwrap()));
/// assert_eq!(PeerAddr::of(request.extensions()).map(|p| p.port()), Some(40000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

impl PeerAddr {
    /// The peer address in `extensions`, when the server set one.
    pub fn of(extensions: &http::Extensions) -> Option<SocketAddr> {
        extensions.get::<PeerAddr>().map(|p| p.0)
    }
}
