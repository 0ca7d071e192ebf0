//! The HTTP(S) client secret sources use to reach their backends (AWS APIs,
//! 1Password Connect). It verifies servers against the system roots
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured) and dials directly: backend
//! traffic is the proxy's own, not the workload's, so the upstream deny list
//! does not apply to it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use zeroize::Zeroizing;

/// Largest backend response read (a secret is far smaller).
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

type Inner = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A lazily built, shared HTTP client.
#[derive(Clone, Default)]
pub struct HttpClient {
    inner: Arc<OnceLock<Result<Inner, String>>>,
}

impl HttpClient {
    /// A client built on first use.
    pub fn new() -> Self {
        HttpClient::default()
    }

    fn client(&self) -> Result<&Inner, String> {
        self.inner
            .get_or_init(|| {
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_native_roots(crate::tls::provider())
                    .map_err(|e| format!("loading system root certificates: {e}"))?
                    .https_or_http()
                    .enable_http1()
                    .enable_http2()
                    .build();
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
        let rsp = self
            .client()?
            .request(req)
            .await
            .map_err(|e| describe(&e))?;
        let status = rsp.status();
        let mut body = rsp.into_body();
        let mut buf = Zeroizing::new(Vec::new());
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading response: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > MAX_RESPONSE_BYTES {
                    return Err(format!("response larger than {MAX_RESPONSE_BYTES} bytes"));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok((status, buf))
    }
}

/// An error and its sources on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
