//! An HTTP/1.1 server on loopback for unit tests that need a peer to talk to.

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves HTTP/1.1 with `svc` on a fresh `127.0.0.1` port, each connection in a task of its
/// own, for as long as the runtime runs; returns the address.
pub(crate) async fn serve_http1<S, B>(svc: S) -> SocketAddr
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc.clone()),
            );
        }
    });
    addr
}
