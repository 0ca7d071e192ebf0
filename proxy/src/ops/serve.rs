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
//!
//! Deadlines alone do not bound how many connections are open: a client
//! that starts a request every few seconds on each of thousands of
//! connections keeps them all. Each endpoint therefore holds at most
//! [`MAX_CONNECTIONS`] connections, and one client address at most
//! [`MAX_PER_ADDRESS`] of them (a scraper needs a handful); a connection
//! beyond either is closed right after `accept(2)`, unread, with a warning
//! at most every 10 s.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::listen::accept::AcceptErrors;
use crate::listen::{http_builder, idle, read_first_bytes, FIRST_REQUEST_TIMEOUT};
use crate::ops::warn_every::WarnEvery;
use crate::tls::sniff::PrefixedStream;

#[cfg(doc)]
use crate::listen::HEADER_READ_TIMEOUT;

/// The most connections one endpoint holds at once.
pub const MAX_CONNECTIONS: usize = 256;
/// The most connections one client address holds on one endpoint.
pub const MAX_PER_ADDRESS: usize = 32;

/// Whom [`MAX_PER_ADDRESS`] counts a connection against: its IPv4 address,
/// or the /64 of its IPv6 address (one host gets a whole /64 to pick
/// addresses from).
fn client_of(ip: IpAddr) -> IpAddr {
    match crate::rules::canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The connections an endpoint holds, in all and by client address.
struct Held {
    max: usize,
    per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refused: WarnEvery,
}

/// One connection's place in [`Held`], given back on drop.
struct Slot {
    held: Arc<Held>,
    ip: IpAddr,
}

impl Held {
    fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Held {
            max,
            per_address,
            open: Mutex::new((0, HashMap::new())),
            refused: WarnEvery::new(Duration::from_secs(10)),
        })
    }

    /// A place for a connection from `ip`, or the bound it would pass.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_ip) = &mut *open;
        if *total >= self.max {
            return Err("connections in all");
        }
        let mine = by_ip.entry(ip).or_insert(0);
        if *mine >= self.per_address {
            return Err("connections from this address");
        }
        *mine += 1;
        *total += 1;
        Ok(Slot {
            held: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.held.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_ip) = &mut *open;
        *total -= 1;
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves. Connections
/// already open run on in their own tasks.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_within(
        listener,
        router,
        name,
        shutdown,
        MAX_CONNECTIONS,
        MAX_PER_ADDRESS,
    )
    .await
}

/// [`serve`] holding at most `max` connections, `per_address` from one
/// client address.
async fn serve_within(
    listener: TcpListener,
    router: Router,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    max: usize,
    per_address: usize,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut errors = AcceptErrors::new(name);
    let held = Held::new(max, per_address);
    loop {
        let (mut stream, remote) = tokio::select! {
            () = &mut shutdown => return,
            a = errors.accept(&listener) => a,
        };
        let slot = match held.admit(client_of(remote.ip())) {
            Ok(slot) => slot,
            Err(bound) => {
                if let Some(held_back) = held.refused.due(Instant::now()) {
                    tracing::warn!(
                        listener = name,
                        client = %remote,
                        bound,
                        max,
                        per_address,
                        refused_since_last_warning = held_back,
                        "closing a connection over the endpoint's bound"
                    );
                }
                drop(stream);
                continue;
            }
        };
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
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
    async fn connections_over_the_bounds_are_closed_unread_and_their_places_come_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/x", get(|| async { "x\n" }));
        tokio::spawn(serve_within(
            listener,
            router,
            "test",
            std::future::pending(),
            3,
            2,
        ));
        let open = |from: &'static str| async move {
            let s = tokio::net::TcpSocket::new_v4().expect("socket");
            s.bind(format!("{from}:0").parse().expect("addr"))
                .expect("bind");
            s.connect(addr).await.expect("connect")
        };
        // Held open: each starts a request head and waits.
        let mut held = Vec::new();
        for from in ["127.0.0.1", "127.0.0.1", "127.0.0.2"] {
            let mut c = open(from).await;
            c.write_all(b"GET /x HTTP/1.1\r\n").await.expect("write");
            held.push(c);
        }
        // A third from 127.0.0.1 is over its address's bound, one from .3 over the total.
        for from in ["127.0.0.1", "127.0.0.3"] {
            let mut c = open(from).await;
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("closed at once")
                .unwrap_or(0);
            assert_eq!(n, 0, "{from}: closed without an answer");
        }
        // A place freed is taken again.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = open("127.0.0.3").await;
        c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.expect("read");
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_of(ip("2001:db8:1:2:ffff::9")),
            client_of(ip("2001:db8:1:2::7"))
        );
        assert_eq!(client_of(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_of(ip("10.1.2.3")), ip("10.1.2.3"));
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
