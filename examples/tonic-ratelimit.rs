//! A tonic gRPC service behind `ravelin-ratelimit`, limited per client address.
//!
//! ```text
//! cargo run --example tonic-ratelimit
//! ```
//!
//! It serves `helloworld.Greeter/SayHello` on a loopback port and calls it four times from the
//! same address: with three calls a minute per client, the fourth is refused. The limiter answers
//! HTTP `429` with an empty `application/grpc` body (its `denied_response`), which gRPC clients
//! read as `UNAVAILABLE` (the gRPC-over-HTTP/2 status mapping), a retryable code; `Retry-After`
//! and the `RateLimit` fields come with it.
//!
//! The only wiring is the peer layer: tonic's server records each connection as
//! `TcpConnectInfo` (what `Request::remote_addr` reads), and
//! `PeerAddrLayer::from_fn(|ext| ext.get::<TcpConnectInfo>()?.remote_addr())` copies it into the
//! `PeerAddr` extension `client_ip` rules key by. Layers added with `Server::layer` run inside
//! tonic's own connection layer, so they see it.
//!
//! No `protoc`: the two messages are written by hand with prost's derive, and the service glue
//! `tonic-build` would generate is written by hand against `tonic::server::Grpc` (one unary
//! method, so it is short).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::PathAndQuery;
use ravelin_ratelimit::{KeyPart, PeerAddrLayer, RateLimitLayer, ResponseTemplate, Rule, Rules};
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService};
use tonic::transport::server::TcpConnectInfo;
use tonic::transport::{Channel, Server};
use tonic_prost::ProstCodec;

// === messages (what prost-build would generate from the .proto) ===

/// `message HelloRequest { string name = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `message HelloReply { string message = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
}

const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

// === the service (what tonic-build would generate, for one unary method) ===

/// `service Greeter { rpc SayHello (HelloRequest) returns (HelloReply); }`
#[derive(Clone, Default)]
struct GreeterServer;

impl NamedService for GreeterServer {
    const NAME: &'static str = "helloworld.Greeter";
}

impl<B> Service<http::Request<B>> for GreeterServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SAY_HELLO {
            return Box::pin(async {
                Ok(tonic::Status::unimplemented("no such method").into_http())
            });
        }
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
            Ok(grpc.unary(SayHello, request).await)
        })
    }
}

/// The method itself.
struct SayHello;

impl tonic::server::UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = BoxFuture<tonic::Response<HelloReply>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<HelloRequest>) -> Self::Future {
        let from = request
            .remote_addr()
            .map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
        let name = request.into_inner().name;
        Box::pin(async move {
            Ok(tonic::Response::new(HelloReply {
                message: format!("hello {name} (from {from})"),
            }))
        })
    }
}

// === the server and a client ===

/// The peer address tonic recorded for the connection (`Request::remote_addr` reads the same).
fn tcp_peer(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions.get::<TcpConnectInfo>()?.remote_addr()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three calls a minute per client address.
    let rules =
        Rules::new().rule(Rule::new("per-ip", 3, Duration::from_secs(60)).key(KeyPart::ClientIp));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        // Outermost, so the guard sees the peer address.
        .layer(PeerAddrLayer::from_fn(tcp_peer))
        .layer(
            RateLimitLayer::builder(rules)
                // No body: a gRPC client reads the HTTP status (429 → UNAVAILABLE) instead of
                // trying to decode the default text as a gRPC message.
                .denied_response(
                    ResponseTemplate::new(http::StatusCode::TOO_MANY_REQUESTS, "")
                        .content_type("application/grpc"),
                )
                .build()?,
        )
        .add_service(GreeterServer)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);
    println!("serving helloworld.Greeter on {addr}");

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = tonic::client::Grpc::new(channel);
    for call in 1..=4 {
        client.ready().await?;
        let reply = client
            .unary(
                tonic::Request::new(HelloRequest {
                    name: format!("call {call}"),
                }),
                PathAndQuery::from_static(SAY_HELLO),
                ProstCodec::<HelloRequest, HelloReply>::default(),
            )
            .await;
        match reply {
            Ok(reply) => println!("call {call}: {}", reply.into_inner().message),
            Err(status) => println!(
                "call {call}: refused, {:?}: {}",
                status.code(),
                status.message()
            ),
        }
    }
    server.abort();
    Ok(())
}
