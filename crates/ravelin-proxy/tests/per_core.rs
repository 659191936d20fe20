//! The per-core runtime model (issue 13) over real loopback sockets: worker threads, each with
//! its own current-thread runtime and `SO_REUSEPORT` listener, serve many concurrent
//! connections; graceful shutdown drains every worker; `max_connections` and the per-IP limit
//! hold across workers.
//!
//! No assertion is on timing: requests are held in the service until the test releases them,
//! and every wait has a generous bound ([`BOUND`]), so a slow machine makes a test slower,
//! never wrong.
// Test code, helpers included: a panic is a failing test (as clippy.toml allows in #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ravelin_proxy::{RuntimeModel, ServeSummary, Server, ServerConfig, ServerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// A bound on every wait: a hang is a failure, not a timing measurement.
const BOUND: Duration = Duration::from_secs(10);
/// A timeout long enough never to fire during a test.
const LONG: Duration = Duration::from_secs(60);

/// A per-core server whose service answers `/` at once and holds `/held` until
/// [`Harness::release`], each answer naming the worker thread that served it.
struct Harness {
    addr: SocketAddr,
    /// One message per `/held` request that reached the service, with its thread's name.
    arrived: mpsc::UnboundedReceiver<String>,
    release: watch::Sender<bool>,
    threads: Arc<Mutex<BTreeSet<String>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ServeSummary>,
}

impl Harness {
    async fn start(config: ServerConfig) -> Self {
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            config.runtime(RuntimeModel::PerCore),
        )
        .await
        .unwrap();
        Self::serve(server)
    }

    fn serve(server: Server) -> Self {
        let addr = server.local_addr().unwrap();
        let (arrived_tx, arrived) = mpsc::unbounded_channel::<String>();
        let (release, released) = watch::channel(false);
        let threads = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = Arc::clone(&threads);
        let service = tower::service_fn(move |request: Request<Incoming>| {
            let arrived_tx = arrived_tx.clone();
            let mut released = released.clone();
            let seen = Arc::clone(&seen);
            async move {
                let thread = std::thread::current()
                    .name()
                    .unwrap_or("unnamed")
                    .to_owned();
                seen.lock().unwrap().insert(thread.clone());
                if request.uri().path() == "/held" {
                    arrived_tx.send(thread.clone()).unwrap();
                    while !*released.borrow_and_update() {
                        released.changed().await.unwrap();
                    }
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(thread))))
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(service, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            arrived,
            release,
            threads,
            stop: Some(stop),
            task,
        }
    }

    /// Waits until `n` more `/held` requests have reached the service; their threads.
    async fn held(&mut self, n: usize) -> BTreeSet<String> {
        let mut threads = BTreeSet::new();
        for _ in 0..n {
            let thread = tokio::time::timeout(BOUND, self.arrived.recv())
                .await
                .unwrap()
                .unwrap();
            threads.insert(thread);
        }
        threads
    }

    fn release(&self) {
        self.release.send_replace(true);
    }

    fn threads(&self) -> BTreeSet<String> {
        self.threads.lock().unwrap().clone()
    }

    fn shut_down(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    async fn stopped(self) -> ServeSummary {
        tokio::time::timeout(BOUND, self.task)
            .await
            .unwrap()
            .unwrap()
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(stream: TcpStream) -> Sender {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends `GET path` and returns the status, the `Retry-After` value and the body.
async fn get(sender: &mut Sender, path: &str) -> (StatusCode, Option<String>, String) {
    let request = Request::get(path)
        .header("host", "x")
        .body(Empty::new())
        .unwrap();
    let response = tokio::time::timeout(BOUND, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = tokio::time::timeout(BOUND, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (
        status,
        retry_after,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the peer closes (EOF or reset), bounded. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {BOUND:?}; read so far: {seen:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn workers(threads: &BTreeSet<String>) -> BTreeSet<String> {
    threads
        .iter()
        .filter(|t| t.starts_with("ravelin-worker-"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn two_workers_serve_many_concurrent_connections() {
    let mut harness = Harness::start(ServerConfig::default().workers(2)).await;
    // 64 connections at once, every one holding a request until all have arrived: they are
    // concurrent, and the kernel spreads them over both listeners.
    let mut clients = Vec::new();
    for _ in 0..64 {
        let addr = harness.addr;
        clients.push(tokio::spawn(async move {
            let mut sender = connect(TcpStream::connect(addr).await.unwrap()).await;
            let held = get(&mut sender, "/held").await;
            let quick = get(&mut sender, "/").await;
            (held, quick)
        }));
    }
    let threads = harness.held(64).await;
    harness.release();
    for client in clients {
        let ((status, _, body), (quick, _, quick_body)) = client.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(quick, StatusCode::OK);
        // A connection stays on the worker that accepted it.
        assert_eq!(body, quick_body);
        assert!(body.starts_with("ravelin-worker-"), "{body}");
    }
    // With 64 connections hashed over two sockets, both serve (all on one: odds 2^-63).
    assert_eq!(
        workers(&threads),
        BTreeSet::from(["ravelin-worker-0".to_owned(), "ravelin-worker-1".to_owned()])
    );
    assert_eq!(workers(&harness.threads()).len(), 2);
    harness.shut_down();
    let summary = harness.stopped().await;
    assert_eq!(summary.connections, 64);
    assert_eq!(summary.forced_closed, 0);
}

#[tokio::test]
async fn graceful_shutdown_drains_every_worker() {
    let mut harness =
        Harness::start(ServerConfig::default().workers(2).shutdown_timeout(LONG)).await;
    let mut clients = Vec::new();
    for _ in 0..32 {
        let addr = harness.addr;
        clients.push(tokio::spawn(async move {
            let mut sender = connect(TcpStream::connect(addr).await.unwrap()).await;
            get(&mut sender, "/held").await
        }));
    }
    let threads = harness.held(32).await;
    assert_eq!(workers(&threads).len(), 2, "in flight on both workers");
    harness.shut_down();
    // Every request is still in flight, and the deadline is a minute away: serving cannot end.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !harness.task.is_finished(),
        "returned with requests in flight"
    );
    harness.release();
    for client in clients {
        let (status, _, body) = client.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("ravelin-worker-"), "{body}");
    }
    let summary = harness.stopped().await;
    assert_eq!(summary.connections, 32);
    assert_eq!(summary.forced_closed, 0, "every worker drained");
}

#[tokio::test]
async fn shutdown_deadline_closes_what_every_worker_still_holds() {
    let mut harness = Harness::start(
        ServerConfig::default()
            .workers(2)
            .shutdown_timeout(Duration::ZERO),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..16 {
        let addr = harness.addr;
        clients.push(tokio::spawn(async move {
            let mut sender = connect(TcpStream::connect(addr).await.unwrap()).await;
            let request = Request::get("/held")
                .header("host", "x")
                .body(Empty::new())
                .unwrap();
            tokio::time::timeout(BOUND, sender.send_request(request))
                .await
                .unwrap()
                .is_err()
        }));
    }
    harness.held(16).await;
    harness.shut_down();
    let summary = harness.stopped().await;
    assert_eq!(summary.connections, 16);
    assert_eq!(summary.forced_closed, 16);
    for client in clients {
        assert!(
            client.await.unwrap(),
            "a request cut by the deadline got an answer"
        );
    }
}

#[tokio::test]
async fn max_connections_holds_across_workers() {
    // Four slots for two workers; past them, 503 (nothing to reclaim: every slot is busy).
    let mut harness = Harness::start(
        ServerConfig::default()
            .workers(2)
            .max_connections(4)
            .max_connections_per_ip(0)
            .overflow_connections(16),
    )
    .await;
    // Up to the limit, every connection is served, however the kernel spreads them: a worker
    // never keeps a slot for connections it has not accepted.
    let mut held = Vec::new();
    for _ in 0..4 {
        let addr = harness.addr;
        held.push(tokio::spawn(async move {
            let mut sender = connect(TcpStream::connect(addr).await.unwrap()).await;
            get(&mut sender, "/held").await
        }));
    }
    harness.held(4).await;
    // Past it, on whichever worker, an immediate 503 with Retry-After.
    let mut shed = 0;
    for _ in 0..12 {
        let mut sender = connect(TcpStream::connect(harness.addr).await.unwrap()).await;
        let (status, retry_after, _) = get(&mut sender, "/").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after.is_some());
        shed += 1;
    }
    assert_eq!(shed, 12);
    // Only the four held requests reached the service.
    assert!(harness.arrived.try_recv().is_err());
    harness.release();
    for client in held {
        assert_eq!(client.await.unwrap().0, StatusCode::OK);
    }
    // Their slots are free again (the held connections close as their tasks end).
    let mut sender = connect(TcpStream::connect(harness.addr).await.unwrap()).await;
    let mut served = get(&mut sender, "/").await.0;
    for _ in 0..1000 {
        if served == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        sender = connect(TcpStream::connect(harness.addr).await.unwrap()).await;
        served = get(&mut sender, "/").await.0;
    }
    assert_eq!(served, StatusCode::OK);
    drop(sender);
    harness.shut_down();
    harness.stopped().await;
}

#[tokio::test]
async fn under_max_connections_every_worker_serves_without_shedding() {
    // As many slots as workers and connections: none may be answered 503, whichever worker
    // accepts it. A worker that took a slot before accepting would keep one idle while the
    // other accepted both connections (half the rounds), and the second would be shed.
    for _ in 0..8 {
        let mut harness = Harness::start(
            ServerConfig::default()
                .workers(2)
                .max_connections(2)
                .max_connections_per_ip(0)
                .overflow_connections(16),
        )
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let addr = harness.addr;
            held.push(tokio::spawn(async move {
                let mut sender = connect(TcpStream::connect(addr).await.unwrap()).await;
                get(&mut sender, "/held").await
            }));
        }
        harness.held(2).await;
        harness.release();
        for client in held {
            assert_eq!(client.await.unwrap().0, StatusCode::OK);
        }
        harness.shut_down();
        assert_eq!(harness.stopped().await.connections, 2);
    }
}

#[tokio::test]
async fn per_ip_limit_holds_across_workers() {
    let mut harness = Harness::start(
        ServerConfig::default()
            .workers(2)
            .max_connections(100)
            .max_connections_per_ip(2),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let addr = harness.addr;
        held.push(tokio::spawn(async move {
            let stream = connect_from("127.0.0.2", addr).await;
            let mut sender = connect(stream).await;
            get(&mut sender, "/held").await
        }));
    }
    harness.held(2).await;
    // Eight more from the same address, spread over both workers: each closed unanswered.
    for _ in 0..8 {
        let mut stream = connect_from("127.0.0.2", harness.addr).await;
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let served = read_until_closed(&mut stream).await;
        assert!(
            served.is_empty(),
            "third connection from one IP served: {served:?}"
        );
    }
    // Another address has its own budget.
    let mut other = connect(connect_from("127.0.0.3", harness.addr).await).await;
    assert_eq!(get(&mut other, "/").await.0, StatusCode::OK);
    drop(other);
    harness.release();
    for client in held {
        assert_eq!(client.await.unwrap().0, StatusCode::OK);
    }
    harness.shut_down();
    assert_eq!(harness.stopped().await.connections, 3);
}

#[tokio::test]
async fn workers_can_share_one_given_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::from_listener(
        listener,
        ServerConfig::default()
            .runtime(RuntimeModel::PerCore)
            .workers(2),
    )
    .unwrap();
    assert_eq!(server.accept_loops(), 2);
    let mut harness = Harness::serve(server);
    let mut sender = connect(TcpStream::connect(harness.addr).await.unwrap()).await;
    let (status, _, body) = get(&mut sender, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("ravelin-worker-"), "{body}");
    drop(sender);
    harness.shut_down();
    assert_eq!(harness.stopped().await.connections, 1);
}

#[tokio::test]
async fn workers_bound_is_checked() {
    let error = ServerConfig::default()
        .runtime(RuntimeModel::PerCore)
        .workers(ServerConfig::MAX_WORKERS_LIMIT + 1)
        .check()
        .unwrap_err();
    assert!(
        matches!(
            error,
            ServerError::Config {
                field: "workers",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        ServerConfig::default()
            .workers(ServerConfig::MAX_WORKERS_LIMIT)
            .check()
            .is_ok()
    );
    // 0 is the available parallelism, at least one worker.
    assert!(ServerConfig::default().workers(0).worker_count() >= 1);
    assert_eq!(ServerConfig::default().workers(3).worker_count(), 3);
    // multi_thread stays the default.
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default())
        .await
        .unwrap();
    assert_eq!(server.accept_loops(), 1);
}
