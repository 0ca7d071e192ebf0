//! The HTTP(S) client for the proxy's own backend calls: secret sources (AWS
//! APIs, 1Password Connect), OAuth2 and Google token mints, the LLM judge's
//! provider. It verifies servers against the system roots (`SSL_CERT_FILE` /
//! `SSL_CERT_DIR` honoured) and dials directly: backend traffic is the
//! proxy's own, not the workload's, so the upstream deny list does not apply
//! to it. Names resolve like the data plane's (the same [`Resolver`], so
//! `dns.upstream_resolver` and its cache), and a call that would reach one of
//! the proxy's own listeners is refused ([`OwnListeners`]).

mod connect;
mod own;
mod sdk;

pub use connect::{BackendConnector, ConnectError};
pub use own::OwnListeners;
pub use sdk::{SdkHttp, SdkHttpError};

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use zeroize::Zeroizing;

use crate::upstream::Resolver;

/// Largest backend response read (a secret is far smaller).
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

type Inner = Client<HttpsConnector<BackendConnector>, Full<Bytes>>;

/// How backend calls reach their servers.
#[derive(Clone, Default)]
pub struct BackendNet {
    /// The data plane's resolver. `None`: one from the OS configuration,
    /// built on first use (tests, tools).
    pub resolver: Option<Resolver>,
    /// The proxy's own listeners, which backend calls refuse to reach.
    pub own: OwnListeners,
}

/// A lazily built, shared HTTP client.
#[derive(Clone, Default)]
pub struct HttpClient {
    inner: Arc<OnceLock<Result<Inner, String>>>,
    resolver: Arc<OnceLock<Result<Resolver, String>>>,
    net: BackendNet,
}

impl HttpClient {
    /// A client built on first use, resolving with the OS configuration and
    /// refusing no address.
    pub fn new() -> Self {
        HttpClient::default()
    }

    /// A client built on first use, reaching backends through `net`.
    pub fn with_net(net: BackendNet) -> Self {
        HttpClient {
            net,
            ..HttpClient::default()
        }
    }

    /// The resolver backend names go through (for clients built elsewhere,
    /// such as the AWS SDK's).
    pub fn resolver(&self) -> Result<Resolver, String> {
        self.resolver
            .get_or_init(|| match &self.net.resolver {
                Some(r) => Ok(r.clone()),
                None => Resolver::new(None).map_err(|e| crate::error_chain(&e)),
            })
            .clone()
    }

    fn client(&self) -> Result<&Inner, String> {
        self.inner
            .get_or_init(|| {
                let connector = BackendConnector::new(self.resolver()?, self.net.own.clone());
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_native_roots(crate::tls::provider())
                    .map_err(|e| format!("loading system root certificates: {e}"))?
                    .https_or_http()
                    .enable_http1()
                    .enable_http2()
                    .wrap_connector(connector);
                Ok(Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(https))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Sends `req` and reads the whole response (at most [`MAX_RESPONSE_BYTES`])
    /// into a buffer that is wiped when dropped.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), String> {
        let rsp = self.send_full(req).await?;
        Ok((rsp.status(), rsp.into_body()))
    }

    /// [`send`](Self::send), keeping the response's head.
    pub async fn send_full(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Zeroizing<Vec<u8>>>, String> {
        self.send_limited(req, MAX_RESPONSE_BYTES).await
    }

    /// [`send_full`](Self::send_full) with a response of at most `max` bytes
    /// (a config file fetched from S3 may be larger than a secret).
    pub async fn send_limited(
        &self,
        req: Request<Full<Bytes>>,
        max: usize,
    ) -> Result<Response<Zeroizing<Vec<u8>>>, String> {
        let rsp = self
            .client()?
            .request(req)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        let (head, mut body) = rsp.into_parts();
        let mut buf = Zeroizing::new(Vec::new());
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading response: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max {
                    return Err(format!("response larger than {max} bytes"));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Response::from_parts(head, buf))
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
