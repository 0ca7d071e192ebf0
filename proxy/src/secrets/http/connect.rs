//! The TCP connector under the backend client: names are resolved with the
//! data plane's [`Resolver`] (so `dns.upstream_resolver` and its cache apply
//! to the proxy's own calls too), every resolved address is checked against
//! [`OwnListeners`], and only then does hyper's `HttpConnector` dial the
//! addresses (same connect behaviour as before: happy eyeballs, no timeout of
//! its own, TCP_NODELAY off).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::own::OwnListeners;
use crate::upstream::resolve::{ResolveError, Resolver};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a backend connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL names no host.
    #[error("the url {0} has no host")]
    NoHost(String),
    /// The host name did not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The host resolves to one of iron-proxy's own listeners: the call
    /// would go through the proxy itself, so it is refused.
    #[error(
        "{host} resolves to iron-proxy's own listener {listener}; set dns.upstream_resolver to a \
         resolver that answers with the backend's real address, or fix the backend address"
    )]
    OwnListener {
        /// The host as written in the URL.
        host: String,
        /// The listener it would reach.
        listener: SocketAddr,
    },
    /// Dialing the resolved addresses failed.
    #[error(transparent)]
    Dial(BoxError),
}

/// Resolves with [`Resolver`], refuses [`OwnListeners`], dials with hyper.
#[derive(Clone)]
pub struct BackendConnector {
    resolver: Resolver,
    own: OwnListeners,
}

impl BackendConnector {
    /// A connector resolving with `resolver` and refusing `own`.
    pub fn new(resolver: Resolver, own: OwnListeners) -> Self {
        BackendConnector { resolver, own }
    }

    /// The addresses to dial for `uri`, none of them the proxy's own.
    async fn addresses(&self, uri: &Uri) -> Result<Vec<SocketAddr>, ConnectError> {
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::NoHost(crate::redact_url::for_log(&uri.to_string())))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        // An IP literal resolves to itself.
        let addrs: Vec<SocketAddr> = self
            .resolver
            .lookup(host)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if let Some(listener) = addrs.iter().find_map(|a| self.own.find(*a)) {
            return Err(ConnectError::OwnListener {
                host: host.to_string(),
                listener,
            });
        }
        Ok(addrs)
    }

    async fn connect(self, uri: Uri) -> Result<TokioIo<TcpStream>, ConnectError> {
        let addrs = self.addresses(&uri).await?;
        // hyper dials what was checked: an IP literal it parses itself (the
        // same address), a name it "resolves" to exactly these addresses.
        let mut http = HttpConnector::new_with_resolver(Resolved(addrs));
        // The TLS layer above checks the scheme.
        http.enforce_http(false);
        http.call(uri)
            .await
            .map_err(|e| ConnectError::Dial(e.into()))
    }
}

impl Service<Uri> for BackendConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future =
        Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, ConnectError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A hyper resolver that answers every name with addresses already resolved
/// and checked.
#[derive(Clone)]
struct Resolved(Vec<SocketAddr>);

impl Service<Name> for Resolved {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _name: Name) -> Self::Future {
        std::future::ready(Ok(self.0.clone().into_iter()))
    }
}
