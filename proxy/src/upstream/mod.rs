//! The upstream side: name resolution, the deny list, dialing, and pooled
//! HTTP clients (one pool per scheme+host+port, header case preserved). The
//! upstream leg speaks the client's HTTP version where it can: an HTTP/2
//! client's request goes out as HTTP/2 when the upstream offers it through
//! ALPN (HTTP/1.1 otherwise); an HTTP/1 client's request always goes out as
//! HTTP/1.1, so upgrades such as WebSocket keep working.

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

/// The pooled upstream HTTP clients.
#[derive(Clone)]
pub struct Upstream {
    /// Offers h2 and http/1.1 (for HTTP/2 clients).
    client: Client<Dialer, Body>,
    /// Offers http/1.1 only (for HTTP/1 clients).
    client_h1: Client<Dialer, Body>,
    dialer: Dialer,
}

fn client(dialer: Dialer) -> Client<Dialer, Body> {
    Client::builder(TokioExecutor::new())
        .http1_preserve_header_case(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(dialer)
}

impl Upstream {
    /// A client over `dialer`.
    pub fn new(dialer: Dialer) -> Self {
        Upstream {
            client: client(dialer.clone()),
            client_h1: client(dialer.http1_only()),
            dialer,
        }
    }

    /// The dialer, for raw TCP legs (tunnels, passthrough, upgrades).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Sends `req` (absolute URI) and waits at most `header_timeout` for the response head.
    ///
    /// `req`'s version is the client's: HTTP/2 may go out as HTTP/2 (if the
    /// upstream agrees through ALPN), anything else goes out as HTTP/1.1.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        header_timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let client = if req.version() == http::Version::HTTP_2 {
            &self.client
        } else {
            &self.client_h1
        };
        // The pooled connection decides the wire version; HTTP/1.1 is what hyper
        // accepts on either kind.
        *req.version_mut() = http::Version::HTTP_11;
        match tokio::time::timeout(header_timeout, client.request(req)).await {
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
