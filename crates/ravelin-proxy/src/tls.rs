//! What the edge does with TLS beyond the handshake ([`Server::tls`](crate::Server::tls)): the
//! name the client's JA4 fingerprint is forwarded under (set by the ingress stage,
//! [`IngressConfig::ja4_header`](crate::IngressConfig::ja4_header)) and the plaintext listener's
//! redirect to HTTPS.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use http::header::{HeaderValue, LOCATION};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use ravelin_http::plain_text;
use tower_service::Service;

/// The header the client's JA4 fingerprint is forwarded in by default.
pub const DEFAULT_JA4_HEADER: &str = "x-ja4";

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
    use tower::ServiceExt;

    use super::*;

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
