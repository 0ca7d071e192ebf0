//! The accept loop of the metrics and management endpoints.
//!
//! `axum::serve` puts no deadline on a connection: a client that connects and
//! sends nothing, or half a request head, holds its socket for as long as it
//! likes. The metrics listener defaults to every interface (`:9090`), so any
//! workload could reach it and hold the proxy's file descriptors until the
//! data plane could accept nothing. These endpoints are therefore served like
//! the data plane's listeners ([`crate::listen::serve_http`]'s bounds): the
//! first bytes within [`FIRST_REQUEST_TIMEOUT`], a whole HTTP/1 head (and a
//! keep-alive pause) within [`HEADER_READ_TIMEOUT`], HTTP/2 clients PINGed.

use std::future::Future;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::listen::accept::AcceptErrors;
use crate::listen::{http_builder, idle, read_first_bytes, FIRST_REQUEST_TIMEOUT};
use crate::tls::sniff::PrefixedStream;

#[cfg(doc)]
use crate::listen::HEADER_READ_TIMEOUT;

/// Serves `router` on `listener` until `shutdown` resolves. Connections
/// already open run on in their own tasks.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut errors = AcceptErrors::new(name);
    loop {
        let (mut stream, remote) = tokio::select! {
            () = &mut shutdown => return,
            a = errors.accept(&listener) => a,
        };
        let router = router.clone();
        tokio::spawn(async move {
            let Some(first) = read_first_bytes(&mut stream, FIRST_REQUEST_TIMEOUT).await else {
                tracing::debug!(client = %remote, listener = name, "no request within {FIRST_REQUEST_TIMEOUT:?}; closing");
                return;
            };
            let io = TokioIo::new(PrefixedStream::new(first, stream));
            // Counted, so that a connection that starts no request is closed.
            let started = idle::Started::default();
            let counter = started.clone();
            let inner = TowerToHyperService::new(router);
            let svc = hyper::service::service_fn(move |req| {
                counter.one();
                hyper::service::Service::call(&inner, req)
            });
            let builder = http_builder();
            let served = builder.serve_connection_with_upgrades(io, svc);
            if let Err(e) = idle::bounded(served, started).await {
                tracing::debug!(client = %remote, listener = name, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/x", get(|| async { "x\n" }));
        tokio::spawn(serve(listener, router, "test", std::future::pending()));
        addr
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed() {
        let addr = server().await;
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 16];
        // Paused time: the read waits until the server's deadline closes the connection.
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
    }

    #[tokio::test(start_paused = true)]
    async fn half_a_request_head_is_answered_with_408_or_closed() {
        let addr = server().await;
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got).await;
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 408"),
            "closed, or told the head took too long: {got:?}"
        );
    }

    #[tokio::test]
    async fn a_request_is_served() {
        let addr = server().await;
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.expect("read");
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("x\n"), "{got}");
    }
}
