//! Origins for end-to-end tests of the cache over real sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An origin whose every answer is cacheable for five minutes and tagged `t-<path>`
/// (`Surrogate-Key`); its body is `<path> #<n>` with `n` counting every request, and it counts
/// the requests for each path. Stops when dropped.
#[derive(Debug)]
pub struct TaggedOrigin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TaggedOrigin {
    /// Listens on a loopback port.
    pub async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let counter = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, counter) = (Arc::clone(&recorded), Arc::clone(&counter));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let path = req.uri().path().to_owned();
                        seen.lock().unwrap().push(path.clone());
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let tag = format!("t-{}", path.trim_start_matches('/'));
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("cache-control", "max-age=300")
                                    .header("surrogate-key", tag)
                                    .body(Full::new(Bytes::from(format!("{path} #{n}"))))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests for `path` it has answered.
    pub fn gets(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

impl Drop for TaggedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
