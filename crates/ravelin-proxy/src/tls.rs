//! What the edge does with TLS beyond the handshake ([`Server::tls`](crate::Server::tls)):
//! the client's JA4 fingerprint forwarded in a header of the edge's own, and the plaintext
//! listener's redirect to HTTPS.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue, LOCATION};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use ravelin_http::{TlsInfo, plain_text};
use tower_layer::Layer;
use tower_service::Service;

/// The header the client's JA4 fingerprint is forwarded in by default.
pub const DEFAULT_JA4_HEADER: &str = "x-ja4";

/// Removes `header` from every client request and, on a TLS connection whose ClientHello was
/// fingerprinted, sets it to the client's JA4 (from the request's [`TlsInfo`]): the origin
/// and every module below see the edge's fingerprint, never one a client wrote.
///
/// ```
/// use ravelin_proxy::tls::Ja4HeaderLayer;
/// use tower::ServiceBuilder;
///
/// let service = ServiceBuilder::new()
///     .layer(Ja4HeaderLayer::new(http::HeaderName::from_static("x-ja4")))
///     .service_fn(|request: http::Request<()>| async move {
///         // A client's own `x-ja4` never arrives here.
///         assert!(request.headers().get("x-ja4").is_none());
///         Ok::<_, std::convert::Infallible>(http::Response::new(()))
///     });
/// # drop(service);
/// ```
#[derive(Debug, Clone)]
pub struct Ja4HeaderLayer {
    header: HeaderName,
}

impl Ja4HeaderLayer {
    /// Forwards the JA4 in `header`.
    pub fn new(header: HeaderName) -> Self {
        Self { header }
    }
}

impl<S> Layer<S> for Ja4HeaderLayer {
    type Service = Ja4Header<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Ja4Header {
            inner,
            header: self.header.clone(),
        }
    }
}

/// The service of [`Ja4HeaderLayer`]; its future is the inner service's.
#[derive(Debug, Clone)]
pub struct Ja4Header<S> {
    inner: S,
    header: HeaderName,
}

impl<S, B> Service<Request<B>> for Ja4Header<S>
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
        let ja4 = TlsInfo::of(request.extensions())
            .and_then(|tls| tls.ja4.as_deref())
            .and_then(|ja4| HeaderValue::from_str(ja4).ok());
        let headers = request.headers_mut();
        headers.remove(&self.header);
        if let Some(ja4) = ja4 {
            headers.insert(self.header.clone(), ja4);
        }
        self.inner.call(request)
    }
}

/// Answers every request with `308 Permanent Redirect` to the same URL over HTTPS: the
/// plaintext listener of an edge whose `[tls] plaintext = "redirect"`.
///
/// Put it behind the [ingress stage](crate::ingress): the redirect's host is then the
/// request's validated effective authority (a request without a valid host is the ingress
/// stage's 400), and the path its canonical form. The port is the TLS listener's (left out
/// when 443).
#[derive(Debug, Clone)]
pub struct HttpsRedirect {
    port: u16,
}

impl HttpsRedirect {
    /// Redirects to port `port` (the TLS listener's).
    pub fn new(port: u16) -> Self {
        Self { port }
    }

    /// The HTTPS URL for `uri`, if it has a host.
    pub fn location(&self, uri: &Uri) -> Option<Uri> {
        let host = uri.host()?;
        let authority = if self.port == 443 {
            Authority::try_from(host).ok()?
        } else {
            Authority::try_from(format!("{host}:{}", self.port)).ok()?
        };
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(authority)
            .path_and_query(path)
            .build()
            .ok()
    }
}

impl<B> Service<Request<B>> for HttpsRedirect {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let location = self
            .location(request.uri())
            .and_then(|uri| HeaderValue::from_str(&uri.to_string()).ok());
        let response = match location {
            Some(location) => {
                let mut response = plain_text(
                    StatusCode::PERMANENT_REDIRECT,
                    "this site is served over HTTPS\n".to_owned(),
                );
                response.headers_mut().insert(LOCATION, location);
                response
            }
            None => plain_text(
                StatusCode::BAD_REQUEST,
                "the request names no host to redirect to\n".to_owned(),
            ),
        };
        ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_client_supplied_ja4_is_replaced_or_removed() {
        let echo = tower::service_fn(|request: Request<()>| async move {
            Ok::<_, Infallible>(
                request
                    .headers()
                    .get("x-ja4")
                    .map(|v| v.to_str().unwrap_or_default().to_owned()),
            )
        });
        let service = Ja4HeaderLayer::new(HeaderName::from_static("x-ja4")).layer(echo);

        let forged = Request::builder()
            .header("x-ja4", "forged")
            .body(())
            .unwrap();
        assert_eq!(service.clone().oneshot(forged).await.unwrap(), None);

        let mut tls = Request::builder()
            .header("x-ja4", "forged")
            .body(())
            .unwrap();
        tls.extensions_mut().insert(TlsInfo {
            ja4: Some(Arc::from("t13d1516h2_8daaf6152771_e5627efa2ab1")),
            ..TlsInfo::default()
        });
        assert_eq!(
            service.oneshot(tls).await.unwrap().as_deref(),
            Some("t13d1516h2_8daaf6152771_e5627efa2ab1")
        );
    }

    #[tokio::test]
    async fn plaintext_is_redirected_to_the_same_url_over_https() {
        let redirect = HttpsRedirect::new(8443);
        let request = Request::get("http://a.example/p/q?x=1").body(()).unwrap();
        let response = redirect.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            response.headers()[LOCATION],
            "https://a.example:8443/p/q?x=1"
        );

        let on_443 = HttpsRedirect::new(443)
            .oneshot(Request::get("http://a.example:80/").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(on_443.headers()[LOCATION], "https://a.example/");

        let hostless = redirect
            .oneshot(Request::get("/p").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(hostless.status(), StatusCode::BAD_REQUEST);
    }
}
