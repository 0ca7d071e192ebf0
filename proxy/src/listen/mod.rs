//! Listeners: each accepts connections, works out what it can about the
//! client and destination, and hands HTTP to [`serve_http`].

pub mod http;
pub mod https;
pub mod sniffed;
pub mod transparent;
pub mod tunnel;

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::exchange::{self, ConnInfo};
use crate::state::Shared;

/// Serves HTTP/1.1 and HTTP/2 (by preface or ALPN) on `io` through the pipeline.
pub async fn serve_http<I>(shared: Arc<Shared>, conn: ConnInfo, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let remote = conn.remote;
    let svc = service_fn(move |req| -> exchange::HandleFuture {
        Box::pin(exchange::handle(shared.clone(), conn.clone(), req))
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().preserve_header_case(true).keep_alive(true);
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(client = %remote, error = %e, "client connection ended with an error");
    }
}
