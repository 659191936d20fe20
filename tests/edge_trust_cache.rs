//! The cache as a trust boundary, end to end over real sockets: what one client's request can
//! make the edge store, serve to others, or evict; and that `Cache-Status` says only what is
//! true. Each test drives the assembled edge proxy in front of a recording origin that counts
//! the requests reaching it, so "served from cache" and "went to the origin" are facts, not
//! inferences from headers.
//!
//! Every test here fails on 2919dc7, the code before the edge-safe defaults (ravelin-cache
//! 821f1bc, `CloseDelimited` in forward 81bd7b4, the ingress stage cd12f86, the `[cache]`
//! settings ab94635); each says what the old code did. Tests of a `[cache]` setting fail there
//! because the key was refused as unknown.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use origin::{Origin, Seen, chunked, full};
use ravelin_test_support::edge as support;
use ravelin_test_support::edge::{GENEROUS_RATELIMIT, Harness, Reply, config};

/// A recording origin (hyper 1 over hyper-util) and a fixed-answer one (raw TCP), plus a raw
/// HTTP/1.1 exchange for requests the client library will not send (absolute form).
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod origin {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{HeaderMap, Method, Request, Response};
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::{Frame, Incoming};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::support::BOUND;

    /// The body every origin answer has.
    pub(crate) type OriginBody = BoxBody<Bytes, Infallible>;

    /// One request as the origin received it.
    #[derive(Debug, Clone)]
    pub(crate) struct Seen {
        pub(crate) method: Method,
        pub(crate) path: String,
        pub(crate) headers: HeaderMap,
        /// The request's content, as received.
        pub(crate) body: Bytes,
    }

    impl Seen {
        /// The value of `name`, if present once or more (the first).
        pub(crate) fn header(&self, name: &str) -> Option<String> {
            self.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        }
    }

    /// A known-length body (`Content-Length`).
    pub(crate) fn full(text: impl Into<Bytes>) -> OriginBody {
        Full::new(text.into()).boxed()
    }

    /// A body of several frames without a length (`Transfer-Encoding: chunked`).
    pub(crate) fn chunked(parts: &[&'static str]) -> OriginBody {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    type Answer = Arc<dyn Fn(&Seen) -> Response<OriginBody> + Send + Sync>;

    /// An HTTP origin on 127.0.0.1:0 that records every request before answering it with
    /// `answer`, so a count read after a response arrived includes that response's request.
    pub(crate) struct Origin {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        /// While `false`, requests are recorded but not answered.
        gate: Arc<tokio::sync::watch::Sender<bool>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Origin {
        pub(crate) async fn spawn<F>(answer: F) -> Self
        where
            F: Fn(&Seen) -> Response<OriginBody> + Send + Sync + 'static,
        {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let answer: Answer = Arc::new(answer);
            let gate = Arc::new(tokio::sync::watch::Sender::new(true));
            let recorded = Arc::clone(&seen);
            let gate_rx = gate.subscribe();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (seen, answer) = (Arc::clone(&recorded), Arc::clone(&answer));
                    let gate = gate_rx.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (seen, answer) = (Arc::clone(&seen), Arc::clone(&answer));
                            let mut gate = gate.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                // Read the request body (a POST's) before answering.
                                let body = body
                                    .collect()
                                    .await
                                    .map(http_body_util::Collected::to_bytes)
                                    .unwrap_or_default();
                                let request = Seen {
                                    method: parts.method,
                                    path: parts.uri.path().to_owned(),
                                    headers: parts.headers,
                                    body,
                                };
                                seen.lock().unwrap().push(request.clone());
                                let _ = gate.wait_for(|open| *open).await;
                                Ok::<_, Infallible>(answer(&request))
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Self {
                addr,
                seen,
                gate,
                task,
            }
        }

        /// Holds every answer (requests are still recorded) until [`open`](Self::open).
        pub(crate) fn hold(&self) {
            self.gate.send_replace(false);
        }

        pub(crate) fn open(&self) {
            self.gate.send_replace(true);
        }

        pub(crate) fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// Every request for `path` with `method`, in arrival order.
        pub(crate) fn requests(&self, method: &Method, path: &str) -> Vec<Seen> {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.method == *method && s.path == path)
                .cloned()
                .collect()
        }

        /// How many `GET path` reached the origin.
        pub(crate) fn gets(&self, path: &str) -> usize {
            self.requests(&Method::GET, path).len()
        }
    }

    impl Drop for Origin {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A raw TCP origin that writes one fixed answer and closes: for responses hyper's server
    /// will not produce, such as a body framed by connection close and cut short.
    pub(crate) struct RawOrigin {
        addr: SocketAddr,
        requests: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl RawOrigin {
        /// Answers every request with `answer`, byte for byte, then closes the connection.
        pub(crate) async fn spawn(answer: &'static str) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let requests = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&requests);
            let task = tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let counted = Arc::clone(&counted);
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.write_all(answer.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
            });
            Self {
                addr,
                requests,
                task,
            }
        }

        pub(crate) fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub(crate) fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    impl Drop for RawOrigin {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A response read off a raw socket.
    #[derive(Debug)]
    pub(crate) struct RawReply {
        pub(crate) status: u16,
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) body: Vec<u8>,
    }

    impl RawReply {
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// Writes `request` (which must ask for `Connection: close`) to `addr` byte for byte and
    /// reads the whole answer.
    pub(crate) async fn raw_exchange(addr: SocketAddr, request: &str) -> RawReply {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).await.unwrap();
            bytes
        };
        let bytes = tokio::time::timeout(BOUND, exchange)
            .await
            .expect("the proxy answers and closes");
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete head");
        let head = std::str::from_utf8(&bytes[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let rest = &bytes[end + 4..];
        let chunked = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_vec()
        };
        RawReply {
            status,
            headers,
            body,
        }
    }

    fn dechunk(mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let eol = data.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = std::str::from_utf8(&data[..eol]).unwrap();
            let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
            data = &data[eol + 2..];
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&data[..size]);
            data = &data[size + 2..];
        }
    }
}

// === helpers ===

/// Starts the edge in front of `origin_url`; `upstream` is added to its `[[upstreams]]` entry,
/// `cache` is the `[cache]` section's body (empty: every cache default).
async fn edge(origin_url: &str, upstream: &str, cache: &str) -> Harness {
    let text = config(&format!(
        "{GENEROUS_RATELIMIT}\n[[upstreams]]\nname = \"origin\"\nurl = \"{origin_url}\"\n{upstream}\n\n[cache]\n{cache}\n"
    ));
    Harness::start(&text, None).await
}

/// `method path` through the edge with extra request header fields.
#[allow(clippy::unwrap_used)] // test helper: a panic is a failing test
async fn request(h: &Harness, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(h.url(path))
        .header("user-agent", "ravelin-e2e/1.0");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = Full::new(Bytes::from_static(b""));
    h.send(builder.body(body).unwrap()).await.unwrap()
}

async fn get(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(h, Method::GET, path, headers).await
}

/// This cache's `Cache-Status` member (`ravelin; …`); empty when there is none.
#[allow(clippy::unwrap_used)] // test helper: a panic is a failing test
fn cache_status(reply: &Reply) -> String {
    reply
        .headers
        .get_all("cache-status")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(str::trim)
        .find(|m| m.starts_with("ravelin"))
        .unwrap_or_default()
        .to_owned()
}

/// The parameters of a `Cache-Status` member: `["hit", "ttl=60"]` for `ravelin; hit; ttl=60`.
fn params(status: &str) -> Vec<String> {
    status
        .split(';')
        .skip(1)
        .map(|p| p.trim().to_owned())
        .collect()
}

fn is_hit(reply: &Reply) -> bool {
    params(&cache_status(reply)).iter().any(|p| p == "hit")
}

/// Whether the member has the parameter `param`: `stored`, `detail=storing`, ….
fn claims(reply: &Reply, param: &str) -> bool {
    params(&cache_status(reply)).iter().any(|p| p == param)
}

#[allow(clippy::unwrap_used)] // test helper: a panic is a failing test
fn set_cookies(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A response with the given header fields and a known-length body.
#[allow(clippy::unwrap_used)] // test helper: a panic is a failing test
fn answer(
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> http::Response<origin::OriginBody> {
    let mut response = http::Response::builder().status(200);
    for (name, value) in headers {
        response = response.header(*name, value.as_str());
    }
    response.body(full(body)).unwrap()
}

// === 1. Set-Cookie ===

/// An origin that logs in whoever asks: `Set-Cookie: session=<x-user>` on every answer, with
/// `Cache-Control` chosen by path.
async fn cookie_origin() -> Origin {
    Origin::spawn(|seen: &Seen| {
        let user = seen.header("x-user").unwrap_or_else(|| "nobody".into());
        let cache_control = match seen.path.as_str() {
            "/public" => "public, max-age=60",
            _ => "max-age=60",
        };
        answer(
            &[
                ("cache-control", cache_control.into()),
                ("set-cookie", format!("session={user}; Path=/; HttpOnly")),
            ],
            format!("page for {}", seen.path),
        )
    })
    .await
}

// Old code (RFC 9111 §7.3 as written): `max-age=60` + `Set-Cookie` was stored with the cookie,
// and bob's request was a hit that handed him `session=alice` — alice's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_set_cookie_is_never_served_to_another() {
    let origin = cookie_origin().await;
    let h = edge(&origin.url(), "", "").await;

    // Plain max-age: browsers read it too, so it says nothing about sharing. Not stored.
    let alice = get(&h, "/private", &[("x-user", "alice")]).await;
    assert_eq!(alice.status, 200);
    assert_eq!(set_cookies(&alice), ["session=alice; Path=/; HttpOnly"]);
    let bob = get(&h, "/private", &[("x-user", "bob")]).await;
    assert_eq!(bob.status, 200);
    let cookies = set_cookies(&bob);
    assert!(cookies.iter().all(|c| !c.contains("alice")), "{cookies:?}");
    assert_eq!(cookies, ["session=bob; Path=/; HttpOnly"]);
    assert_eq!(
        origin.gets("/private"),
        2,
        "bob's request reached the origin"
    );
    assert!(!is_hit(&bob), "{}", cache_status(&bob));
    // And the first answer said why it was not kept.
    let status = cache_status(&alice);
    assert!(status.contains("detail=set-cookie"), "{status}");
    assert!(
        !claims(&alice, "stored") && !claims(&alice, "detail=storing"),
        "{status}"
    );

    // `public`: addressed to shared caches. Stored without the cookie; alice keeps hers.
    let alice = get(&h, "/public", &[("x-user", "alice")]).await;
    assert_eq!(set_cookies(&alice), ["session=alice; Path=/; HttpOnly"]);
    assert!(claims(&alice, "detail=storing"), "{}", cache_status(&alice));
    let bob = get(&h, "/public", &[("x-user", "bob")]).await;
    assert!(is_hit(&bob), "{}", cache_status(&bob));
    assert_eq!(bob.text(), "page for /public");
    assert_eq!(origin.gets("/public"), 1, "bob was served from the cache");
    assert!(set_cookies(&bob).is_empty(), "{:?}", bob.headers);
    h.stop().await;
}

// Old code: as above — the leader's response, `Set-Cookie: session=alice` included, was stored,
// and a request coalesced behind it got alice's cookie along with the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_follower_never_gets_the_leaders_cookie() {
    let origin = cookie_origin().await;
    let h = std::sync::Arc::new(edge(&origin.url(), "", "").await);
    for path in ["/private", "/public"] {
        // alice's request reaches the origin and is held there; bob's arrives meanwhile and
        // (most likely) waits behind it. Whether or not it did, he must not get her cookie.
        origin.hold();
        let as_user = |user: &'static str| {
            let h = std::sync::Arc::clone(&h);
            tokio::spawn(async move { get(&h, path, &[("x-user", user)]).await })
        };
        let alice = as_user("alice");
        support::eventually("alice's request reaches the origin", || async {
            origin.gets(path) == 1
        })
        .await;
        let bob = as_user("bob");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        origin.open();
        let (alice, bob) = (alice.await.unwrap(), bob.await.unwrap());
        assert_eq!(alice.status, 200, "{path}");
        assert_eq!(
            set_cookies(&alice),
            ["session=alice; Path=/; HttpOnly"],
            "{path}"
        );
        assert_eq!(bob.status, 200, "{path}");
        let cookies = set_cookies(&bob);
        assert!(
            cookies.iter().all(|c| !c.contains("alice")),
            "{path}: {cookies:?}"
        );
        if origin.gets(path) == 1 {
            // Served from alice's fetch: the shared copy, without any cookie.
            assert!(cookies.is_empty(), "{path}: {cookies:?}");
            assert_eq!(path, "/public", "{}", cache_status(&bob));
        } else {
            assert_eq!(cookies, ["session=bob; Path=/; HttpOnly"], "{path}");
        }
    }
    std::sync::Arc::try_unwrap(h).ok().unwrap().stop().await;
}

// Old code: there was no `set_cookie` setting (the key was refused as unknown), and the cache
// stored both responses, cookies included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_never_refuses_even_public_responses() {
    let origin = cookie_origin().await;
    let h = edge(&origin.url(), "", "set_cookie = \"never\"").await;
    let alice = get(&h, "/public", &[("x-user", "alice")]).await;
    assert_eq!(set_cookies(&alice), ["session=alice; Path=/; HttpOnly"]);
    let status = cache_status(&alice);
    assert!(status.contains("detail=set-cookie"), "{status}");
    assert!(
        !claims(&alice, "stored") && !claims(&alice, "detail=storing"),
        "{status}"
    );
    let bob = get(&h, "/public", &[("x-user", "bob")]).await;
    assert!(!is_hit(&bob), "{}", cache_status(&bob));
    assert_eq!(origin.gets("/public"), 2);
    assert_eq!(set_cookies(&bob), ["session=bob; Path=/; HttpOnly"]);
    h.stop().await;
}

// === 2. Heuristic freshness ===

/// Every answer has `Last-Modified` in 2001 and no explicit freshness: a heuristic lifetime of
/// 10 % of 25 years, capped at 24 h.
async fn last_modified_origin() -> Origin {
    Origin::spawn(|seen: &Seen| {
        answer(
            &[("last-modified", "Mon, 01 Jan 2001 00:00:00 GMT".into())],
            format!("dashboard {}", seen.path),
        )
    })
    .await
}

// Old code: the heuristic applied whatever the request carried, so a page personalised by
// `Cookie` (the origin said nothing about caching it) was stored for up to 24 h and the second
// request was a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_is_not_given_to_requests_with_cookies() {
    let origin = last_modified_origin().await;
    let h = edge(&origin.url(), "", "").await;

    let cookie = [("cookie", "session=alice")];
    let first = get(&h, "/with-cookie", &cookie).await;
    assert_eq!(first.status, 200);
    let second = get(&h, "/with-cookie", &cookie).await;
    assert!(!is_hit(&second), "{}", cache_status(&second));
    assert_eq!(
        origin.gets("/with-cookie"),
        2,
        "not reused for a request with Cookie"
    );

    // The same kind of response to anonymous requests is reused (the heuristic is on).
    let _ = get(&h, "/anonymous", &[]).await;
    let again = get(&h, "/anonymous", &[]).await;
    assert!(is_hit(&again), "{}", cache_status(&again));
    assert_eq!(origin.gets("/anonymous"), 1);
    h.stop().await;
}

// Old code: `[cache] heuristic_freshness` was refused as an unknown key; the heuristic could not
// be turned off from the edge's config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_can_be_switched_off() {
    let origin = last_modified_origin().await;
    let h = edge(&origin.url(), "", "heuristic_freshness = false").await;
    let _ = get(&h, "/anonymous", &[]).await;
    let again = get(&h, "/anonymous", &[]).await;
    assert!(!is_hit(&again), "{}", cache_status(&again));
    assert_eq!(origin.gets("/anonymous"), 2);
    h.stop().await;
}

// === 3. Request directives ===

async fn fresh_origin() -> Origin {
    Origin::spawn(|seen: &Seen| {
        answer(
            &[("cache-control", "max-age=60".into())],
            format!("fresh {}", seen.path),
        )
    })
    .await
}

// Old code: request `Cache-Control: no-cache` and `Pragma: no-cache` (RFC 9111 §5.2.1, §5.4)
// forced an origin fetch, so any client could send every request to the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_force_origin_fetches_by_default() {
    let origin = fresh_origin().await;
    let h = edge(&origin.url(), "", "").await;
    let first = get(&h, "/fresh", &[]).await;
    assert_eq!(first.status, 200);
    for forcing in [
        [("cache-control", "no-cache")],
        [("pragma", "no-cache")],
        [("cache-control", "max-age=0")],
    ] {
        let reply = get(&h, "/fresh", &forcing).await;
        assert!(is_hit(&reply), "{forcing:?}: {}", cache_status(&reply));
        assert_eq!(reply.body, first.body);
        assert_eq!(origin.gets("/fresh"), 1, "{forcing:?}");
    }
    h.stop().await;
}

// Old code: `[cache] request_directives` was refused as an unknown key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_directives_restore_the_rfc_behaviour() {
    let origin = fresh_origin().await;
    let h = edge(&origin.url(), "", "request_directives = true").await;
    let _ = get(&h, "/fresh", &[]).await;
    let reply = get(&h, "/fresh", &[("cache-control", "no-cache")]).await;
    assert!(!is_hit(&reply), "{}", cache_status(&reply));
    assert!(
        cache_status(&reply).contains("fwd=request"),
        "{}",
        cache_status(&reply)
    );
    assert_eq!(origin.gets("/fresh"), 2);
    let reply = get(&h, "/fresh", &[("pragma", "no-cache")]).await;
    assert!(!is_hit(&reply), "{}", cache_status(&reply));
    assert_eq!(origin.gets("/fresh"), 3);
    // Without a directive the stored copy still answers.
    assert!(is_hit(&get(&h, "/fresh", &[]).await));
    assert_eq!(origin.gets("/fresh"), 3);
    h.stop().await;
}

// === 4. Unsafe methods ===

/// `GET /hot*` answers the original page (fresh for 60 s); a `POST` answers 200, and with
/// `claim` names the target as its `Content-Location` with freshness of its own (RFC 9110
/// §9.3.3: "this is what a GET would now return").
async fn unsafe_origin(claim: bool) -> Origin {
    Origin::spawn(move |seen: &Seen| {
        if seen.method == Method::GET {
            return answer(
                &[("cache-control", "max-age=60".into())],
                format!("original {}", seen.path),
            );
        }
        let headers = if claim {
            vec![
                ("cache-control", "max-age=60".into()),
                ("content-location", seen.path.clone()),
            ]
        } else {
            Vec::new()
        };
        answer(&headers, "posted by anyone")
    })
    .await
}

// Old code: RFC 9111 §4.4 — the POST's 200 invalidated the stored object, so one anonymous
// request per TTL sent the next GET (and a stampede behind it) to the origin; and a POST
// response naming the URL in `Content-Location` replaced the stored page for every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_post_neither_evicts_nor_replaces_a_hot_object() {
    let origin = unsafe_origin(true).await;
    let h = edge(&origin.url(), "", "").await;
    let first = get(&h, "/hot", &[]).await;
    assert_eq!(first.text(), "original /hot");
    let post = request(&h, Method::POST, "/hot", &[]).await;
    assert_eq!(post.status, 200);
    assert_eq!(post.text(), "posted by anyone");
    assert_eq!(
        origin.requests(&Method::POST, "/hot").len(),
        1,
        "the POST passed"
    );
    let after = get(&h, "/hot", &[]).await;
    assert!(is_hit(&after), "{}", cache_status(&after));
    assert_eq!(after.text(), "original /hot");
    assert_eq!(origin.gets("/hot"), 1);
    h.stop().await;
}

// Old code: `[cache] invalidate_on_unsafe` was refused as an unknown key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_on_unsafe_restores_rfc_invalidation() {
    let origin = unsafe_origin(false).await;
    let h = edge(&origin.url(), "", "invalidate_on_unsafe = true").await;
    let _ = get(&h, "/hot", &[]).await;
    assert!(is_hit(&get(&h, "/hot", &[]).await));
    let post = request(&h, Method::POST, "/hot", &[]).await;
    assert_eq!(post.status, 200);
    let after = get(&h, "/hot", &[]).await;
    assert!(!is_hit(&after), "{}", cache_status(&after));
    assert_eq!(
        origin.gets("/hot"),
        2,
        "the POST invalidated the stored object"
    );
    h.stop().await;

    // RFC 9110 §9.3.3: a POST response naming its own URI answers later GETs.
    let origin = unsafe_origin(true).await;
    let h = edge(&origin.url(), "", "invalidate_on_unsafe = true").await;
    let _ = get(&h, "/hot", &[]).await;
    let post = request(&h, Method::POST, "/hot", &[]).await;
    assert_eq!(post.status, 200);
    let after = get(&h, "/hot", &[]).await;
    assert!(is_hit(&after), "{}", cache_status(&after));
    assert_eq!(after.text(), "posted by anyone");
    assert_eq!(origin.gets("/hot"), 1);
    h.stop().await;
}

// === 5. Truncated bodies ===

/// A cacheable head and a body framed by connection close, cut short: the connection dropped
/// after "partial bo". On the wire this is indistinguishable from a whole body.
const CUT_CLOSE_DELIMITED: &str =
    "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nConnection: close\r\n\r\npartial bo";

/// The same cut with a length: 10 of 100 promised bytes.
const CUT_WITH_LENGTH: &str =
    "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\npartial bo";

// Old code: the forwarder did not mark a close-delimited response, the cache could not tell a
// cut-off body from a whole one, stored "partial bo" for 60 s (the first head said `stored`) and
// served it as a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_body_is_never_cached() {
    let origin = origin::RawOrigin::spawn(CUT_CLOSE_DELIMITED).await;
    let h = edge(&origin.url(), "", "").await;
    let first = get(&h, "/article", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "partial bo");
    let status = cache_status(&first);
    assert!(!claims(&first, "stored"), "{status}");
    assert!(!claims(&first, "detail=storing"), "{status}");
    assert!(claims(&first, "detail=close-delimited"), "{status}");
    let second = get(&h, "/article", &[]).await;
    assert_eq!(second.status, 200);
    assert!(!is_hit(&second), "{}", cache_status(&second));
    assert_eq!(
        origin.requests(),
        2,
        "the second request went to the origin again"
    );
    h.stop().await;

    // A body shorter than its Content-Length fails at the client, and is not stored either.
    let origin = origin::RawOrigin::spawn(CUT_WITH_LENGTH).await;
    let h = edge(&origin.url(), "", "").await;
    for round in 1..=2 {
        let request = Request::get(h.url("/article"))
            .header("user-agent", "ravelin-e2e/1.0")
            .body(Full::default())
            .unwrap();
        let reply = h.send(request).await;
        assert!(reply.is_err(), "round {round}: {reply:?}");
        assert_eq!(origin.requests(), round, "round {round}");
    }
    h.stop().await;
}

// === 6. Honest Cache-Status ===

const STREAMED: &[&str] = &["first part, ", "second part, ", "last part"];

// Old code: the miss's head said `stored` before a byte of the body had been read (the body
// could still fail, stall or pass the object limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_miss_says_storing_and_the_next_request_is_a_hit() {
    let big = "x".repeat(256 * 1024);
    let origin = Origin::spawn(move |seen: &Seen| {
        let response = |cache_control: &str| {
            http::Response::builder()
                .status(200)
                .header("cache-control", cache_control)
        };
        match seen.path.as_str() {
            "/length" => response("public, max-age=60").body(full(big.clone())),
            "/chunked" => response("public, max-age=60").body(chunked(STREAMED)),
            _ => response("no-store").body(full("not for keeping")),
        }
        .unwrap()
    })
    .await;
    let h = edge(&origin.url(), "", "").await;
    for path in ["/length", "/chunked"] {
        let miss = get(&h, path, &[]).await;
        assert_eq!(miss.status, 200);
        let status = cache_status(&miss);
        assert!(status.contains("fwd=uri-miss"), "{path}: {status}");
        assert!(claims(&miss, "detail=storing"), "{path}: {status}");
        assert!(!claims(&miss, "stored"), "{path}: {status}");
        let hit = get(&h, path, &[]).await;
        assert!(is_hit(&hit), "{path}: {}", cache_status(&hit));
        assert_eq!(hit.body, miss.body, "{path}");
        assert_eq!(origin.gets(path), 1, "{path}: stored");
    }
    assert_eq!(
        get(&h, "/chunked", &[]).await.text(),
        "first part, second part, last part"
    );

    // `no-store`: passed on, never stored, and never said to be.
    for round in 1..=2 {
        let reply = get(&h, "/nostore", &[]).await;
        let status = cache_status(&reply);
        assert!(!status.is_empty(), "{:?}", reply.headers);
        assert!(!claims(&reply, "stored"), "{status}");
        assert!(!claims(&reply, "detail=storing"), "{status}");
        assert_eq!(origin.gets("/nostore"), round);
    }
    h.stop().await;
}

// === 7. The key is what is forwarded ===

// Old code: `GET http://victim.example/p` with `Host: evil.example` was keyed by the target's
// authority (victim.example) while the forwarder sent `Host: evil.example` upstream: evil's page
// was stored under victim's key and served to every later visitor of victim.example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_key_the_origin_host_and_x_forwarded_host_agree() {
    let origin = Origin::spawn(|seen: &Seen| {
        let host = seen.header("host").unwrap_or_default();
        let forwarded = seen.header("x-forwarded-host").unwrap_or_default();
        answer(
            &[("cache-control", "public, max-age=60".into())],
            format!("page of {host} (x-forwarded-host {forwarded})"),
        )
    })
    .await;
    // preserve_host: the origin answers by the Host it receives, as virtual hosts do.
    let h = edge(&origin.url(), "preserve_host = true", "").await;
    let victim_page = "page of victim.example (x-forwarded-host victim.example)";
    let evil_page = "page of evil.example (x-forwarded-host evil.example)";

    // The attack: absolute form naming the victim, Host naming the attacker.
    let raw = origin::raw_exchange(
        h.running().proxy_addr,
        "GET http://victim.example/p HTTP/1.1\r\nHost: evil.example\r\n\
         User-Agent: ravelin-e2e/1.0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 200, "{raw:?}");
    // RFC 9112 §3.2.2: the target's authority wins; the origin was asked for victim's page.
    assert_eq!(raw.text(), victim_page, "{:?}", raw.header("cache-status"));

    // Whatever was cached, it is victim's page under victim's key.
    let victim = get(&h, "/p", &[("host", "victim.example")]).await;
    assert!(is_hit(&victim), "{}", cache_status(&victim));
    assert_eq!(victim.text(), victim_page);
    // evil.example never gets victim's copy: its own fetch, its own page.
    let evil = get(&h, "/p", &[("host", "evil.example")]).await;
    assert!(!is_hit(&evil), "{}", cache_status(&evil));
    assert_eq!(evil.text(), evil_page);
    let evil = get(&h, "/p", &[("host", "evil.example")]).await;
    assert!(is_hit(&evil), "{}", cache_status(&evil));
    assert_eq!(evil.text(), evil_page);
    // Spellings of the same host share its key (lowercase, no trailing dot, no default port).
    let victim = get(&h, "/p", &[("host", "VICTIM.Example.:80")]).await;
    assert!(is_hit(&victim), "{}", cache_status(&victim));
    assert_eq!(victim.text(), victim_page);

    let seen = origin.requests(&Method::GET, "/p");
    let hosts: Vec<(Option<String>, Option<String>)> = seen
        .iter()
        .map(|s| (s.header("host"), s.header("x-forwarded-host")))
        .collect();
    assert_eq!(
        hosts,
        [
            (Some("victim.example".into()), Some("victim.example".into())),
            (Some("evil.example".into()), Some("evil.example".into())),
        ],
        "one origin fetch per host, each told one host"
    );
    for s in &seen {
        assert_eq!(s.headers.get_all("host").iter().count(), 1, "{s:?}");
        assert_eq!(
            s.headers.get_all("x-forwarded-host").iter().count(),
            1,
            "{s:?}"
        );
    }
    h.stop().await;
}

// === Requests with content ===

/// An origin that reads parameters from a GET's content, as Rack, Express's body parsers and
/// Elasticsearch do, and marks the answer cacheable.
async fn body_reading_origin() -> Origin {
    Origin::spawn(|seen: &Seen| {
        answer(
            &[("cache-control", "max-age=60".into())],
            format!("results for [{}]", String::from_utf8_lossy(&seen.body)),
        )
    })
    .await
}

// Old code: a GET with content was planned like any GET: its answer, which the origin built
// from the content, was stored under the URL and served to every later client (a "fat GET"
// poisoning the cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_content_is_neither_stored_nor_served_from_the_cache() {
    let origin = body_reading_origin().await;
    let h = edge(&origin.url(), "", "").await;
    let fat_get = |content: &'static str| {
        Request::get(h.url("/search"))
            .header("user-agent", "ravelin-e2e/1.0")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(content.as_bytes())))
            .unwrap()
    };

    let poisoned = h.send(fat_get("q=<script>")).await.unwrap();
    assert_eq!(poisoned.text(), "results for [q=<script>]");
    assert_eq!(
        cache_status(&poisoned),
        "ravelin; fwd=bypass; detail=request-content"
    );
    // The next client's plain GET is not served the answer to the content.
    let plain = get(&h, "/search", &[]).await;
    assert_eq!(plain.text(), "results for []");
    assert!(!is_hit(&plain));
    let again = get(&h, "/search", &[]).await;
    assert!(is_hit(&again), "{}", cache_status(&again));
    assert_eq!(again.text(), "results for []");
    // And a GET with content is not answered from what is stored for the URL.
    let other = h.send(fat_get("q=other")).await.unwrap();
    assert_eq!(other.text(), "results for [q=other]");
    assert_eq!(origin.gets("/search"), 3);
    h.stop().await;
}

// Old code: as above, over HTTP/2, where nothing in the header fields announces the content
// (DATA frames, no Content-Length): the edge's server now marks such a request for the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_get_with_unannounced_content_is_not_stored() {
    use http_body_util::BodyExt as _;

    let origin = body_reading_origin().await;
    let h = edge(&origin.url(), "", "").await;
    // A body of unknown length: hyper's HTTP/2 client then sends no Content-Length.
    type Streamed = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
    let client: hyper_util::client::legacy::Client<_, Streamed> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let content = http_body_util::StreamBody::new(futures_util::stream::iter([Ok::<
        _,
        std::convert::Infallible,
    >(
        hyper::body::Frame::data(Bytes::from_static(b"q=h2")),
    )]))
    .boxed();
    let request = Request::get(h.url("/search"))
        .header("user-agent", "ravelin-e2e/1.0")
        .body(content)
        .unwrap();
    let response = tokio::time::timeout(support::BOUND, client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let status = response
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    // (What reaches an HTTP/1.1 origin is hyper's client's choice: it sends a GET body of
    // unknown length as no body at all. An HTTP/2 upstream receives it.)
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(status, "ravelin; fwd=bypass; detail=request-content");

    // Its answer was not stored: the next plain GET goes to the origin.
    let plain = get(&h, "/search", &[]).await;
    assert!(!is_hit(&plain), "{}", cache_status(&plain));
    assert_eq!(origin.gets("/search"), 2);
    h.stop().await;
}
