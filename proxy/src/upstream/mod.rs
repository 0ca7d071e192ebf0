//! The upstream side: name resolution, the deny list, dialing, and a pooled
//! HTTP client (one pool per scheme+host+port, HTTP/2 when the upstream offers
//! it through ALPN, HTTP/1.1 otherwise, header case preserved).

pub mod deny;
pub mod dial;
pub mod resolve;

use std::error::Error as _;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::Body;
pub use deny::DenyList;
pub use dial::{DialError, Dialer};
pub use resolve::Resolver;

/// Why a request to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream could not be reached.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The upstream did not start its response in time.
    #[error("upstream sent no response headers within {0:?}")]
    Timeout(Duration),
    /// The exchange failed after connecting.
    #[error("upstream exchange failed: {0}")]
    Http(String),
}

impl UpstreamError {
    /// The audit `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Dial(d) => d.reason(),
            UpstreamError::Timeout(_) => "upstream_timeout",
            UpstreamError::Http(_) => "upstream_error",
        }
    }

    /// The status the client gets: 504 for a timeout, 502 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            UpstreamError::Timeout(_) => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }
}

/// The pooled upstream HTTP client.
#[derive(Clone)]
pub struct Upstream {
    client: Client<Dialer, Body>,
    dialer: Dialer,
}

impl Upstream {
    /// A client over `dialer`.
    pub fn new(dialer: Dialer) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .http1_preserve_header_case(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(dialer.clone());
        Upstream { client, dialer }
    }

    /// The dialer, for raw TCP legs (tunnels, passthrough, upgrades).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Sends `req` (absolute URI) and waits at most `header_timeout` for the response head.
    pub async fn send(
        &self,
        req: Request<Body>,
        header_timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(header_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(header_timeout)),
            Ok(Ok(rsp)) => Ok(rsp),
            Ok(Err(e)) => {
                let mut src = e.source();
                while let Some(s) = src {
                    if let Some(d) = s.downcast_ref::<DialError>() {
                        return Err(UpstreamError::Dial(d.clone()));
                    }
                    src = s.source();
                }
                let mut detail = e.to_string();
                if let Some(s) = e.source() {
                    detail.push_str(": ");
                    detail.push_str(&s.to_string());
                }
                Err(UpstreamError::Http(detail))
            }
        }
    }
}
