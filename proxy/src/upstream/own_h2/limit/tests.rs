//! The bound over all hosts on one client connection's own upstream
//! connections, against plain HTTP/1 origins on many ports of 127.0.0.1
//! (each port its own pool key) that report every connection they accept
//! and see closed. Nothing is timed: the tests wait for events, counts and
//! answers, with a deadline only to fail rather than hang.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::MAX_OPEN;
use crate::upstream::own_h2::{OwnDialer, Spares};
use crate::upstream::{DenyList, Dialer, HeldSlot, Resolver, Upstream};

/// The client the requests of these tests are sent for.
const ANYONE: &crate::intercept::Client = &crate::intercept::Client::UNKNOWN;

/// A connection an origin accepted or saw closed, by the origin's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Accepted(usize),
    Closed(usize),
}

/// What an origin's shut gate holds back.
#[derive(Clone, Copy)]
enum Gate {
    /// The answer: its head waits.
    Head,
    /// The end of the body: the head and `origin <i>` are sent at once.
    BodyEnd,
    /// Any answer: requests are refused (an HTTP/2 stream is reset).
    Refuse,
}

/// Plain HTTP/1 origins on 127.0.0.1, a port each, answering `origin <i>`.
struct Origins {
    addrs: Vec<SocketAddr>,
    /// While an origin's gate is shut, its answers wait.
    gates: Vec<watch::Sender<bool>>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Connections accepted and seen closed, by origin, as reported so far.
    accepted: Vec<usize>,
    closed: Vec<usize>,
}

impl Origins {
    /// `n` plain HTTP/1 origins whose gates are `open` or shut.
    async fn start(n: usize, open: bool) -> Origins {
        Self::serving(n, open, Gate::Head, None).await
    }

    /// `n` plain HTTP/1 origins whose bodies do not end until released.
    async fn streaming(n: usize) -> Origins {
        Self::serving(n, false, Gate::BodyEnd, None).await
    }

    /// `n` HTTPS origins speaking HTTP/2 only (ALPN h2) whose gates hold
    /// `holds` and are `open` or shut, sharing a certificate for 127.0.0.1;
    /// and the root to trust.
    async fn start_h2(n: usize, holds: Gate, open: bool) -> (Origins, rustls::RootCertStore) {
        let (roots, acceptor) = crate::upstream::tests::h2_acceptor();
        (Self::serving(n, open, holds, Some(acceptor)).await, roots)
    }

    async fn serving(
        n: usize,
        open: bool,
        holds: Gate,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Origins {
        let (tx, events) = mpsc::unbounded_channel();
        let mut addrs = Vec::new();
        let mut gates = Vec::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            let (gate, shut) = watch::channel(open);
            gates.push(gate);
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let _ = tx.send(Event::Accepted(i));
                    let (tx, shut, tls) = (tx.clone(), shut.clone(), tls.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                            let mut shut = shut.clone();
                            async move {
                                let text = bytes::Bytes::from(format!("origin {i}"));
                                let body = match holds {
                                    Gate::Head => {
                                        let _ = shut.wait_for(|open| *open).await;
                                        Gated::done(text)
                                    }
                                    Gate::BodyEnd => Gated::until(text, shut),
                                    Gate::Refuse if !*shut.borrow() => {
                                        return Err(std::io::Error::other("refused"));
                                    }
                                    Gate::Refuse => Gated::done(text),
                                };
                                Ok(http::Response::new(body))
                            }
                        });
                        match tls {
                            None => {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(tcp), svc)
                                    .await;
                            }
                            Some(tls) => {
                                if let Ok(io) = tls.accept(tcp).await {
                                    let _ = hyper::server::conn::http2::Builder::new(
                                        TokioExecutor::new(),
                                    )
                                    .serve_connection(TokioIo::new(io), svc)
                                    .await;
                                }
                            }
                        }
                        let _ = tx.send(Event::Closed(i));
                    });
                }
            });
        }
        Origins {
            addrs,
            gates,
            events,
            accepted: vec![0; n],
            closed: vec![0; n],
        }
    }

    fn count(&mut self, event: Event) -> Event {
        match event {
            Event::Accepted(i) => self.accepted[i] += 1,
            Event::Closed(i) => self.closed[i] += 1,
        }
        event
    }

    /// The next connection accepted or closed.
    async fn next(&mut self) -> Event {
        let event = tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("no origin accepted or saw closed a connection within 10 s")
            .expect("the origins run as long as the test");
        self.count(event)
    }

    /// Counts what the origins reported so far, without waiting.
    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.count(event);
        }
    }

    /// Connections open at the origins, as reported so far.
    fn open(&self) -> usize {
        self.accepted.iter().sum::<usize>() - self.closed.iter().sum::<usize>()
    }

    fn release(&self, i: usize) {
        self.gates[i].send_replace(true);
    }
}

/// A response body of one chunk that ends once its gate opens.
struct Gated {
    chunk: Option<bytes::Bytes>,
    open: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Gated {
    fn done(chunk: bytes::Bytes) -> Self {
        Gated {
            chunk: Some(chunk),
            open: Box::pin(std::future::ready(())),
        }
    }

    fn until(chunk: bytes::Bytes, mut gate: watch::Receiver<bool>) -> Self {
        Gated {
            chunk: Some(chunk),
            open: Box::pin(async move {
                let _ = gate.wait_for(|open| *open).await;
            }),
        }
    }
}

impl http_body::Body for Gated {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunk.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        self.open.as_mut().poll(cx).map(|()| None)
    }
}

fn upstream() -> Upstream {
    upstream_trusting(rustls::RootCertStore::empty())
}

/// An upstream side offering h2 and http/1.1, trusting `roots`.
fn upstream_trusting(roots: rustls::RootCertStore) -> Upstream {
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let deny = Arc::new(arc_swap::ArcSwap::from_pointee(DenyList::new(Vec::new())));
    Upstream::new(Dialer::new(
        Resolver::new(None).expect("resolver"),
        deny,
        Arc::new(tls),
    ))
}

/// An HTTP/2 client's GET of `/` from `addr` on `slot`'s own client (the
/// upstream answers in HTTP/1.1); the body, read to its end.
async fn h2_get(up: &Upstream, slot: &HeldSlot, addr: SocketAddr) -> String {
    get(up, slot, &format!("http://{addr}/")).await
}

/// An HTTP/2 client's GET of `uri` on `slot`'s own client; the body, read
/// to its end.
async fn get(up: &Upstream, slot: &HeldSlot, uri: &str) -> String {
    let mut req = http::Request::get(uri)
        .body(crate::body::empty())
        .expect("request");
    *req.version_mut() = http::Version::HTTP_2;
    let rsp = up
        .send(req, Duration::from_secs(30), Some(slot), ANYONE)
        .await
        .expect("answered");
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The dialer of `slot`'s own client, once a request made it.
fn own_dialer(slot: &HeldSlot) -> OwnDialer {
    slot.h2_client(|| Err(()))
        .ok()
        .flatten()
        .map(|own| own.dialer.clone())
        .expect("the slot has its own client")
}

/// Waits until `cond` holds; fails with `what` after 10 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One client connection's streams to more hosts than its bound, all held
/// waiting for their answers: only the bound's worth of connections open,
/// the other streams wait for a place (before, each opened its own: 100
/// streams to 400 hosts were 400 descriptors). Each answer that ends makes
/// its connection the idle one closed for a waiting stream, and every
/// stream is answered.
#[tokio::test]
async fn a_client_connection_holds_at_most_its_bound_of_connections_over_all_hosts() {
    let extra = 8;
    let n = MAX_OPEN + extra;
    let mut origins = Origins::start(n, false).await;
    let up = upstream();
    let slot = HeldSlot::default();
    let mut answers = tokio::task::JoinSet::new();
    for (i, addr) in origins.addrs.iter().copied().enumerate() {
        let (up, slot) = (up.clone(), slot.clone());
        answers.spawn(async move { (i, h2_get(&up, &slot, addr).await) });
    }
    for _ in 0..MAX_OPEN {
        let event = origins.next().await;
        assert!(
            matches!(event, Event::Accepted(_)),
            "a connection closed while its stream waited for its answer: {event:?}"
        );
    }
    let dialer = own_dialer(&slot);
    until("the streams beyond the bound wait for a place", || {
        dialer.waiting() == extra
    })
    .await;
    // Every stream has a connection or waits for a place: no dial is left.
    origins.drain();
    assert_eq!(origins.open(), MAX_OPEN, "connections open at the origins");
    assert_eq!(dialer.connections(), MAX_OPEN);

    // One answer ends: its connection, idle, is closed for a waiting stream.
    let first = (0..n)
        .find(|&i| origins.accepted[i] == 1)
        .expect("an origin with a connection");
    origins.release(first);
    let (i, body) = answers.join_next().await.expect("an answer").expect("task");
    assert_eq!((i, body), (first, format!("origin {first}")));
    let mut seen = [origins.next().await, origins.next().await];
    seen.sort_by_key(|e| matches!(e, Event::Accepted(_)));
    assert_eq!(seen[0], Event::Closed(first), "the idle connection closed");
    assert!(
        matches!(seen[1], Event::Accepted(j) if origins.accepted[j] == 1 && j != first),
        "a waiting stream's host got the place: {seen:?}"
    );

    for i in 0..n {
        origins.release(i);
    }
    let mut answered = 1;
    while let Some(answer) = answers.join_next().await {
        let (i, body) = answer.expect("task");
        assert_eq!(body, format!("origin {i}"));
        answered += 1;
    }
    assert_eq!(answered, n, "every stream answered");
    origins.drain();
    assert_eq!(origins.accepted, vec![1; n], "one connection per host");
    // What stays open idle is the bound's worth.
    until("the client keeps its bound of idle connections", || {
        origins.drain();
        origins.open() == MAX_OPEN
    })
    .await;
    assert_eq!(dialer.connections(), MAX_OPEN);
}

/// At its bound, a client connection needing a connection to another host
/// closes its least recently used idle one (not another), and one used
/// since stays.
#[tokio::test]
async fn the_least_recently_used_idle_connection_is_closed_to_make_room() {
    let mut origins = Origins::start(MAX_OPEN + 1, true).await;
    let up = upstream();
    let slot = HeldSlot::default();
    let addrs = origins.addrs.clone();
    for addr in &addrs[..MAX_OPEN] {
        h2_get(&up, &slot, *addr).await;
    }
    // The first is used again: the second is now the least recently used.
    assert_eq!(h2_get(&up, &slot, addrs[0]).await, "origin 0");
    assert_eq!(
        h2_get(&up, &slot, addrs[MAX_OPEN]).await,
        format!("origin {MAX_OPEN}")
    );
    loop {
        match origins.next().await {
            Event::Closed(i) => {
                assert_eq!(i, 1, "closed origin {i}'s connection, not the LRU one");
                break;
            }
            Event::Accepted(_) => {}
        }
    }
    origins.drain();
    assert_eq!(origins.closed.iter().sum::<usize>(), 1, "one closed");
    assert_eq!(origins.accepted, vec![1; MAX_OPEN + 1]);
    assert_eq!(own_dialer(&slot).connections(), MAX_OPEN);

    // The first was kept; the second is dialed again (closing the third's).
    h2_get(&up, &slot, addrs[0]).await;
    h2_get(&up, &slot, addrs[1]).await;
    origins.drain();
    assert_eq!(origins.accepted[0], 1, "origin 0's connection was reused");
    assert_eq!(origins.accepted[1], 2, "origin 1 was dialed again");
    while origins.closed.iter().sum::<usize>() < 2 {
        origins.next().await;
    }
    assert_eq!(
        origins.closed[2], 1,
        "then the least recently used was origin 2's: {:?}",
        origins.closed
    );
}

/// At its bound, with every connection carrying a response whose body is
/// still to end: none is idle, so a stream to another host waits rather
/// than cut one, and every body ends whole.
#[tokio::test]
async fn a_connection_whose_body_is_still_read_is_not_closed_to_make_room() {
    let mut origins = Origins::streaming(MAX_OPEN + 1).await;
    let up = upstream();
    let slot = HeldSlot::default();
    let addrs = origins.addrs.clone();
    let mut reading = Vec::new();
    for addr in &addrs[..MAX_OPEN] {
        let mut req = http::Request::get(format!("http://{addr}/"))
            .body(crate::body::empty())
            .expect("request");
        *req.version_mut() = http::Version::HTTP_2;
        let rsp = up
            .send(req, Duration::from_secs(30), Some(&slot), ANYONE)
            .await
            .expect("the head");
        reading.push(rsp.into_body());
    }
    let dialer = own_dialer(&slot);
    let last = {
        let (up, slot, addr) = (up.clone(), slot.clone(), addrs[MAX_OPEN]);
        tokio::spawn(async move { h2_get(&up, &slot, addr).await })
    };
    until("the stream to another host waits for a place", || {
        dialer.waiting() == 1
    })
    .await;
    // The least recently used body ends whole: its connection was not cut.
    origins.release(0);
    let first = reading
        .remove(0)
        .collect()
        .await
        .expect("body 0")
        .to_bytes();
    assert_eq!(first, "origin 0");
    // Then its connection, idle, makes room.
    origins.release(MAX_OPEN);
    assert_eq!(last.await.expect("task"), format!("origin {MAX_OPEN}"));
    for i in 1..MAX_OPEN {
        origins.release(i);
    }
    for (i, body) in reading.into_iter().enumerate() {
        let body = body.collect().await.expect("a body cut").to_bytes();
        assert_eq!(body, format!("origin {}", i + 1));
    }
    origins.drain();
    assert_eq!(origins.accepted, vec![1; MAX_OPEN + 1]);
    assert_eq!(
        origins.closed[1..].iter().sum::<usize>(),
        0,
        "{:?}",
        origins.closed
    );
}

/// Client connections that each used several hosts end: their clients,
/// kept as spares, hold at most the spares' cap of connections together,
/// the least recently put going first, its connections closed.
#[tokio::test]
async fn spares_hold_at_most_their_cap_of_connections() {
    let per_client = 4;
    let clients = 4;
    let cap = 10;
    let mut origins = Origins::start(per_client * clients, true).await;
    let mut up = upstream();
    up.spares = Arc::new(Spares::with_cap(cap));
    let addrs = origins.addrs.clone();
    for (c, hosts) in addrs.chunks(per_client).enumerate() {
        let slot = HeldSlot::default();
        for addr in hosts {
            h2_get(&up, &slot, *addr).await;
        }
        assert_eq!(own_dialer(&slot).connections(), per_client);
        // The client connection ends: its client becomes a spare.
        drop(slot);
        let held = up.spare_connections();
        assert!(held <= cap, "after client {c}: spares hold {held}");
        assert_eq!(held, per_client * (c + 1).min(cap / per_client));
    }
    // The first two were evicted: every connection of theirs closes.
    let evicted = 2 * per_client;
    let mut closed = Vec::new();
    while closed.len() < evicted {
        if let Event::Closed(i) = origins.next().await {
            closed.push(i);
        }
    }
    closed.sort_unstable();
    assert_eq!(closed, (0..evicted).collect::<Vec<_>>());
}

/// HTTP/2 upstreams (one connection per host, every stream on it): at its
/// bound, the client closes its least recently used idle one, which hyper's
/// pool never hands out again: the next request to that host dials anew
/// and is answered.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_to_make_room_and_not_reused() {
    let (mut origins, roots) = Origins::start_h2(MAX_OPEN + 1, Gate::Head, true).await;
    let up = upstream_trusting(roots);
    let slot = HeldSlot::default();
    let ports: Vec<u16> = origins.addrs.iter().map(SocketAddr::port).collect();
    let https = |i: usize| format!("https://127.0.0.1:{}/", ports[i]);
    for i in 0..=MAX_OPEN {
        assert_eq!(get(&up, &slot, &https(i)).await, format!("origin {i}"));
    }
    loop {
        if let Event::Closed(i) = origins.next().await {
            assert_eq!(i, 0, "closed origin {i}'s connection, not the LRU one");
            break;
        }
    }
    assert_eq!(get(&up, &slot, &https(0)).await, "origin 0");
    origins.drain();
    assert_eq!(origins.accepted[0], 2, "origin 0 was dialed again");
    assert_eq!(
        origins.accepted[1..],
        vec![1; MAX_OPEN],
        "the others dialed once"
    );
}

/// An HTTP/2 connection whose only stream failed (no response came to say
/// which connection it went out on) is still closed to make room when it
/// is the least recently used.
#[tokio::test]
async fn an_http2_connection_whose_stream_failed_is_closed_to_make_room() {
    let (mut origins, roots) = Origins::start_h2(MAX_OPEN + 1, Gate::Refuse, false).await;
    for i in 1..=MAX_OPEN {
        origins.release(i);
    }
    let up = upstream_trusting(roots);
    let slot = HeldSlot::default();
    let ports: Vec<u16> = origins.addrs.iter().map(SocketAddr::port).collect();
    let https = |i: usize| format!("https://127.0.0.1:{}/", ports[i]);
    let mut req = http::Request::get(https(0))
        .body(crate::body::empty())
        .expect("request");
    *req.version_mut() = http::Version::HTTP_2;
    let refused = up
        .send(req, Duration::from_secs(30), Some(&slot), ANYONE)
        .await;
    assert!(refused.is_err(), "origin 0 answered");
    for i in 1..=MAX_OPEN {
        assert_eq!(get(&up, &slot, &https(i)).await, format!("origin {i}"));
    }
    loop {
        if let Event::Closed(i) = origins.next().await {
            assert_eq!(i, 0, "closed origin {i}'s connection, not the LRU one");
            break;
        }
    }
}
