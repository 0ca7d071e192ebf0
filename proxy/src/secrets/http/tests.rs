//! The backend client against a local HTTP server, with names known only to a
//! test DNS server (the proxy's own, serving a static record).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Response;
use hyper_util::rt::TokioIo;

use super::*;
use crate::dns::{DnsServer, DnsSettings, StaticRecord};

/// A name no real resolver knows (`.test` is reserved for testing, RFC 6761).
const BACKEND: &str = "token-endpoint.iron-proxy.test";

/// An HTTP server on 127.0.0.1 answering `ok`; returns its address and a
/// count of the connections it accepted.
async fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    (addr, accepted)
}

/// A DNS server on 127.0.0.1 that knows `BACKEND` as 127.0.0.1 (and answers
/// every other name with an address nothing listens on).
async fn test_dns() -> DnsServer {
    DnsServer::start(DnsSettings {
        listen: vec![(Ipv4Addr::LOCALHOST, 0).into()],
        proxy_ip: Ipv4Addr::new(192, 0, 2, 1),
        proxy_ip6: None,
        upstream: None,
        passthrough: Vec::new(),
        records: vec![StaticRecord::A {
            name: BACKEND.into(),
            ip: Ipv4Addr::LOCALHOST,
        }],
        mark_as_proxy: false,
        clients: crate::client_acl::ClientAcl::new(None),
    })
    .await
    .expect("the test DNS server starts")
}

/// A client resolving with `dns` and refusing `own`.
fn client(dns: &DnsServer, own: OwnListeners) -> HttpClient {
    let resolver = Resolver::new(Some(dns.local_addrs()[0])).expect("resolver");
    HttpClient::with_net(BackendNet {
        resolver: Some(resolver),
        own,
    })
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

#[tokio::test]
async fn backend_names_resolve_with_the_configured_resolver() {
    let dns = test_dns().await;
    let (addr, accepted) = backend().await;
    let url = format!("http://{BACKEND}:{}/token", addr.port());

    let (status, body) = client(&dns, OwnListeners::new())
        .send(get(&url))
        .await
        .expect("the name resolves through the test DNS server");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // The OS resolver (getaddrinfo, /etc/resolv.conf) has never heard of it.
    let err = HttpClient::new()
        .send(get(&url))
        .await
        .expect_err("the OS resolver does not know the name");
    assert!(err.contains(BACKEND), "{err}");
}

#[tokio::test]
async fn a_backend_at_the_proxys_own_listener_is_refused_before_connecting() {
    let dns = test_dns().await;
    let (addr, accepted) = backend().await;
    let own = OwnListeners::new();
    // The "proxy" listens where the name points.
    own.add_listener(addr);
    let http = client(&dns, own);

    let by_name = format!("http://{BACKEND}:{}/token", addr.port());
    let err = http
        .send(get(&by_name))
        .await
        .expect_err("a name resolving to the proxy is refused");
    assert!(
        err.contains(&format!(
            "{BACKEND} resolves to iron-proxy's own listener {addr}; set dns.upstream_resolver"
        )),
        "{err}"
    );
    let literal = format!("http://{addr}/token");
    let err = http
        .send(get(&literal))
        .await
        .expect_err("the proxy's address written out is refused too");
    assert!(
        err.contains(&format!("resolves to iron-proxy's own listener {addr}")),
        "{err}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "no connection was made to the listener"
    );
}
