//! The backend client as the AWS SDK's HTTP client, so the credential chain's
//! calls (STS, SSO, ECS container credentials, IMDSv2) go the way every other
//! backend call goes: resolved with the data plane's resolver, refused when
//! they would reach one of the proxy's own listeners, servers verified
//! against the system roots.
//!
//! The SDK's bodies for these calls are small and in memory (a form, a JSON
//! document, nothing); a streaming body is refused rather than read. The
//! SDK's connect and read timeouts bound the whole call (IMDS's one-second
//! connect timeout is what keeps the chain quick off EC2).

use std::fmt;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient as SdkHttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body_util::Full;

use super::HttpClient;

/// Why an SDK request was not sent or its answer not handed back.
#[derive(Debug, thiserror::Error)]
pub enum SdkHttpError {
    /// The SDK gave a body that is not in memory.
    #[error("the AWS SDK request to {0} has a streaming body, which backend calls do not send")]
    StreamingBody(String),
    /// The SDK's request could not be made an HTTP request.
    #[error("the AWS SDK request could not be converted: {0}")]
    Request(String),
    /// Sending failed (resolution, an own listener, connect, TLS, reading).
    #[error("{0}")]
    Send(String),
    /// The call took longer than the SDK's connect plus read timeouts.
    #[error("no answer from {uri} within {after:?}")]
    Timeout {
        /// Where the call went.
        uri: String,
        /// The SDK's connect plus read timeout.
        after: Duration,
    },
    /// The answer could not be handed back to the SDK.
    #[error("the answer could not be converted: {0}")]
    Response(String),
}

/// [`HttpClient`] as an [`SdkHttpClient`].
#[derive(Clone)]
pub struct SdkHttp(pub HttpClient);

impl fmt::Debug for SdkHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SdkHttp")
    }
}

impl SdkHttpClient for SdkHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let limit = match (settings.connect_timeout(), settings.read_timeout()) {
            (None, None) => None,
            (c, r) => Some(c.unwrap_or_default() + r.unwrap_or_default()),
        };
        SharedHttpConnector::new(SdkConnector {
            client: self.0.clone(),
            limit,
        })
    }
}

/// One connector per set of timeouts the SDK asks for.
#[derive(Clone)]
struct SdkConnector {
    client: HttpClient,
    limit: Option<Duration>,
}

impl fmt::Debug for SdkConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkConnector")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl HttpConnector for SdkConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move {
            this.send(request).await.map_err(|e| match e {
                SdkHttpError::Timeout { .. } => ConnectorError::timeout(e.into()),
                SdkHttpError::Send(_) => ConnectorError::io(e.into()),
                other => ConnectorError::other(other.into(), None),
            })
        })
    }
}

impl SdkConnector {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, SdkHttpError> {
        let uri = request.uri().to_string();
        let body = match request.body().bytes() {
            Some(b) => Bytes::copy_from_slice(b),
            None => return Err(SdkHttpError::StreamingBody(uri)),
        };
        let request = request
            .try_into_http1x()
            .map_err(|e| SdkHttpError::Request(e.to_string()))?
            .map(|_| Full::new(body));
        let call = self.client.send_full(request);
        let answer = match self.limit {
            Some(after) => tokio::time::timeout(after, call)
                .await
                .map_err(|_| SdkHttpError::Timeout { uri, after })?,
            None => call.await,
        }
        .map_err(SdkHttpError::Send)?;
        // The SDK parses credentials out of this copy; the wiped buffer goes.
        let answer = answer.map(|b| SdkBody::from(b.to_vec()));
        HttpResponse::try_from(answer).map_err(|e| SdkHttpError::Response(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::http::{BackendNet, OwnListeners};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
    use std::convert::Infallible;

    fn connector(client: HttpClient, settings: HttpConnectorSettings) -> SharedHttpConnector {
        let components = RuntimeComponentsBuilder::for_tests()
            .build()
            .expect("test components");
        SdkHttp(client).http_connector(&settings, &components)
    }

    fn put(url: &str, body: &'static str) -> HttpRequest {
        let mut req = HttpRequest::new(SdkBody::from(body));
        *req.uri_mut() = url.try_into().expect("uri");
        req.set_method("PUT").expect("method");
        req.headers_mut()
            .insert("x-aws-ec2-metadata-token-ttl-seconds", "21600");
        req
    }

    /// A server answering every request with its method, header and body,
    /// and a response header the SDK reads (IMDS's token TTL).
    async fn echo() -> std::net::SocketAddr {
        let svc =
            hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                use http_body_util::BodyExt;
                let ttl = req.headers()["x-aws-ec2-metadata-token-ttl-seconds"].clone();
                let line = format!("{} ", req.method());
                let body = req.into_body().collect().await.expect("body").to_bytes();
                let rsp = http::Response::builder()
                    .status(201)
                    .header("x-aws-ec2-metadata-token-ttl-seconds", ttl)
                    .body(Full::new(Bytes::from([line.as_bytes(), &body].concat())))
                    .expect("response");
                Ok::<_, Infallible>(rsp)
            });
        crate::test_http::serve_http1(svc).await
    }

    #[tokio::test]
    async fn requests_and_answers_cross_whole() {
        let addr = echo().await;
        let rsp = connector(HttpClient::new(), HttpConnectorSettings::builder().build())
            .call(put(&format!("http://{addr}/latest/api/token"), "form=1"))
            .await
            .expect("answered");
        assert_eq!(rsp.status().as_u16(), 201);
        assert_eq!(
            rsp.headers().get("x-aws-ec2-metadata-token-ttl-seconds"),
            Some("21600")
        );
        assert_eq!(rsp.body().bytes(), Some(&b"PUT form=1"[..]));
    }

    #[tokio::test]
    async fn a_call_to_an_own_listener_is_refused() {
        let addr = echo().await;
        let own = OwnListeners::new();
        own.add_listener(addr);
        let client = HttpClient::with_net(BackendNet {
            resolver: None,
            own,
        });
        let err = connector(client, HttpConnectorSettings::builder().build())
            .call(put(&format!("http://{addr}/latest/api/token"), ""))
            .await
            .expect_err("refused");
        let text = crate::error_chain(&err);
        assert!(text.contains("own listener"), "{text}");
    }

    #[tokio::test]
    async fn the_sdks_timeouts_bound_the_call() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                conns.push(tcp);
            }
        });
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(Duration::from_millis(100))
            .read_timeout(Duration::from_millis(100))
            .build();
        let err = connector(HttpClient::new(), settings)
            .call(put(&format!("http://{addr}/"), ""))
            .await
            .expect_err("times out");
        assert!(err.is_timeout(), "{err:?}");
        held.abort();
    }

    #[tokio::test]
    async fn a_streaming_body_is_refused() {
        let addr = echo().await;
        let mut req = put(&format!("http://{addr}/"), "");
        *req.body_mut() = SdkBody::from_body_1_x(Full::new(Bytes::from_static(b"x")));
        let err = connector(HttpClient::new(), HttpConnectorSettings::builder().build())
            .call(req)
            .await
            .expect_err("refused");
        assert!(
            crate::error_chain(&err).contains("streaming body"),
            "{err:?}"
        );
    }
}
