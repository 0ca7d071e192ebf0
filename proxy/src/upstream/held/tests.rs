use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::*;
use crate::upstream::{
    DenyList, DialError, Dialer, Resolver, Upstream, UpstreamError, REPLAY_AFTER,
};

/// The client the requests of these tests are sent for.
const ANYONE: &crate::intercept::Client = &crate::intercept::Client::UNKNOWN;

/// A plain HTTP/1 origin on loopback that answers `conn <n> <target> <host>`
/// and counts the connections it accepted. `close_idle` closes every
/// connection after its first response.
struct Origin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

/// An origin on loopback that serves each accepted connection (the `n`th,
/// from 1) with `serve`, counting them.
async fn origin_serving<F, Fut>(serve: F) -> Origin
where
    F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(serve(tcp, n));
        }
    });
    Origin { addr, accepted }
}

/// Reads one request head from `tcp`; false when the connection ends first.
async fn read_head(tcp: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    true
}

/// `HTTP/1.1 200` with the body `conn N`.
fn conn_answer(n: usize) -> String {
    let body = format!("conn {n}");
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn origin(close_after_one: bool) -> Origin {
    origin_serving(move |tcp, n| async move {
        let svc = service_fn(
            move |req: http::Request<hyper::body::Incoming>| async move {
                let host = req
                    .headers()
                    .get(http::header::HOST)
                    .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                    .unwrap_or_default();
                let text = format!("conn {n} {} {host}", req.uri());
                Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(text),
                )))
            },
        );
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(!close_after_one)
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    })
    .await
}

fn upstream() -> Upstream {
    let provider = crate::tls::provider();
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let deny = Arc::new(arc_swap::ArcSwap::from_pointee(DenyList::new(Vec::new())));
    Upstream::new(Dialer::new(
        Resolver::new(None).expect("resolver"),
        deny,
        Arc::new(tls),
    ))
}

fn get(addr: SocketAddr, path: &str) -> http::Request<Body> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(crate::body::empty())
        .expect("request")
}

/// Sends `req` through `slot` in a task that drives the slot, as a client
/// connection's task does; returns the body text.
async fn send(up: &Upstream, slot: &HeldSlot, req: http::Request<Body>) -> String {
    let fut = async {
        let rsp = up
            .send(req, Duration::from_secs(5), Some(slot), ANYONE)
            .await
            .expect("upstream answers");
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    };
    drive(slot.clone(), fut).await
}

#[tokio::test]
async fn one_client_connection_keeps_one_upstream_connection() {
    let o = origin(false).await;
    let up = upstream();
    let slot = HeldSlot::default();
    let first = send(&up, &slot, get(o.addr, "/a?x=1")).await;
    let second = send(&up, &slot, get(o.addr, "/b")).await;
    assert_eq!(
        first,
        format!("conn 1 /a?x=1 {}", o.addr),
        "origin form plus Host"
    );
    assert_eq!(second, format!("conn 1 /b {}", o.addr));
    assert_eq!(o.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_finished_client_connection_hands_its_upstream_connection_to_the_next() {
    let o = origin(false).await;
    let up = upstream();
    let slot = HeldSlot::default();
    send(&up, &slot, get(o.addr, "/")).await;
    drop(slot);
    assert_eq!(
        up.idle.len(),
        1,
        "the idle connection went back to the pool"
    );

    let next = HeldSlot::default();
    assert_eq!(
        send(&up, &next, get(o.addr, "/")).await,
        format!("conn 1 / {}", o.addr)
    );
    drop(next);
    assert_eq!(up.idle.len(), 1, "one connection, back in the pool");
    assert_eq!(o.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced() {
    let o = origin(true).await;
    let up = upstream();
    let slot = HeldSlot::default();
    for n in 1..=3 {
        assert_eq!(
            send(&up, &slot, get(o.addr, "/")).await,
            format!("conn {n} / {}", o.addr)
        );
    }
    drop(slot);
    assert_eq!(up.idle.len(), 0, "closed connections never reach the pool");
}

#[tokio::test]
async fn another_upstream_gets_its_own_connection() {
    let a = origin(false).await;
    let b = origin(false).await;
    let up = upstream();
    let slot = HeldSlot::default();
    send(&up, &slot, get(a.addr, "/")).await;
    assert_eq!(
        send(&up, &slot, get(b.addr, "/")).await,
        format!("conn 1 / {}", b.addr)
    );
    assert_eq!(
        send(&up, &slot, get(a.addr, "/")).await,
        format!("conn 1 / {}", a.addr),
        "and is taken back from there"
    );
    assert_eq!(a.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

/// Two connection workers (current-thread runtimes) and an origin on a
/// runtime of its own: the pool hands each runtime its own connections
/// first, and moves one from elsewhere to the caller's runtime instead of
/// dialing a new one.
/// A runtime for an origin and two single-threaded ones, as two connection
/// workers: idle connections of one taken by the other.
fn origin_and_two_workers() -> (
    tokio::runtime::Runtime,
    tokio::runtime::Runtime,
    tokio::runtime::Runtime,
) {
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let origin_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("origin runtime");
    (origin_rt, rt(), rt())
}

#[test]
fn idle_connections_go_to_their_own_runtime_first_and_move_when_taken_elsewhere() {
    let (origin_rt, a, b) = origin_and_two_workers();
    let o = origin_rt.block_on(origin(false));
    let up = upstream();
    let on = |rt: &tokio::runtime::Runtime| {
        let slot = HeldSlot::default();
        let text = rt.block_on(send(&up, &slot, get(o.addr, "/")));
        drop(slot);
        text
    };

    // Two connections, both dialed on a.
    let (s1, s2) = (HeldSlot::default(), HeldSlot::default());
    a.block_on(async {
        tokio::join!(
            send(&up, &s1, get(o.addr, "/")),
            send(&up, &s2, get(o.addr, "/"))
        )
    });
    drop((s1, s2));
    assert_eq!(up.idle.len(), 2);
    assert_eq!(o.accepted.load(Ordering::SeqCst), 2);

    // b has none of its own: it takes one of a's rather than dialing.
    let b_conn = on(&b);
    for _ in 0..3 {
        assert_eq!(on(&b), b_conn, "b keeps the one it moved");
        assert_ne!(on(&a), b_conn, "a takes the one still its own");
    }
    assert_eq!(o.accepted.load(Ordering::SeqCst), 2, "nothing was dialed");

    // The moved connection is registered with b's reactor: it works with
    // a's runtime gone, which a connection still registered there would not.
    drop(a);
    assert_eq!(on(&b), b_conn);
    assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
}

/// An idle connection taken by another client connection, on its own
/// runtime or moved to another, is dropped, not used, when the upstream sent
/// something while it was idle: the new request went out on it and took
/// those bytes for its response (a review's reproduction: `SMUGGLED!`
/// answered another client connection's request).
#[test]
fn bytes_sent_on_an_idle_connection_are_never_another_client_connections_answer() {
    for moved in [false, true] {
        bytes_sent_while_idle_are_not_an_answer(moved);
    }
}

fn bytes_sent_while_idle_are_not_an_answer(moved: bool) {
    let (origin_rt, a, b) = origin_and_two_workers();
    let send_extra = Arc::new(Notify::new());
    let extra_sent = Arc::new(Notify::new());
    let (go, sent) = (send_extra.clone(), extra_sent.clone());
    let o = origin_rt.block_on(origin_serving(move |mut tcp, n| {
        let (go, sent) = (go.clone(), sent.clone());
        async move {
            use tokio::io::AsyncWriteExt;
            while read_head(&mut tcp).await {
                if n > 1 {
                    let _ = tcp.write_all(conn_answer(n).as_bytes()).await;
                    continue;
                }
                // The first connection answers, then, once told, sends a
                // second response nobody asked for, and stays open.
                let _ = tcp.write_all(conn_answer(1).as_bytes()).await;
                go.notified().await;
                let extra = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nSMUGGLED!";
                let _ = tcp.write_all(extra.as_bytes()).await;
                sent.notify_one();
            }
        }
    }));
    let up = upstream();
    let on = |rt: &tokio::runtime::Runtime| {
        let slot = HeldSlot::default();
        let text = rt.block_on(send(&up, &slot, get(o.addr, "/")));
        drop(slot);
        text
    };
    assert_eq!(on(&a), "conn 1");
    assert_eq!(up.idle.len(), 1);
    send_extra.notify_one();
    origin_rt.block_on(extra_sent.notified());
    // On loopback the bytes are in the proxy's socket once written.
    let next = if moved { on(&b) } else { on(&a) };
    assert_eq!(
        next, "conn 2",
        "a new connection answers, not the idle one's bytes (moved: {moved})"
    );
    assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_dial_is_a_dial_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let up = upstream();
    let slot = HeldSlot::default();
    let err = drive(
        slot.clone(),
        up.send(get(addr, "/"), Duration::from_secs(5), Some(&slot), ANYONE),
    )
    .await
    .expect_err("nothing listens");
    assert!(
        matches!(err, UpstreamError::Dial(DialError::Connect { .. })),
        "{err:?}"
    );
    assert_eq!(err.reason(), "connect_failed");
}

/// A future that wakes itself `n` times before it completes.
struct SelfWaking {
    left: usize,
    polls: Arc<AtomicUsize>,
}

impl Future for SelfWaking {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.left == 0 {
            return Poll::Ready(());
        }
        self.left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Counts how often the task was woken.
struct CountWake(AtomicUsize);

impl Wake for CountWake {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn wake_ups_during_a_poll_are_served_in_that_poll() {
    let polls = Arc::new(AtomicUsize::new(0));
    let inner = SelfWaking {
        left: 3,
        polls: polls.clone(),
    };
    let mut driven = Box::pin(drive(HeldSlot::default(), inner));
    let count = Arc::new(CountWake(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(
        driven.as_mut().poll(&mut cx).is_ready(),
        "one poll of the task"
    );
    assert_eq!(polls.load(Ordering::SeqCst), 4);
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        0,
        "the task was never rescheduled"
    );

    let polls = Arc::new(AtomicUsize::new(0));
    let inner = SelfWaking {
        left: MAX_SELF_POLLS + 2,
        polls: polls.clone(),
    };
    let mut driven = Box::pin(drive(HeldSlot::default(), inner));
    assert!(
        driven.as_mut().poll(&mut cx).is_pending(),
        "a busy future yields"
    );
    assert_eq!(polls.load(Ordering::SeqCst), MAX_SELF_POLLS);
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "and asks to run again");
    assert!(driven.as_mut().poll(&mut cx).is_ready());
}

/// A future that never completes: it counts its polls and keeps the waker
/// of the last one.
struct Waiting {
    polls: Arc<AtomicUsize>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl Future for Waiting {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        *self.waker.lock().expect("lock") = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[test]
fn only_the_part_woken_is_polled_again() {
    let polls = Arc::new(AtomicUsize::new(0));
    let inner_waker = Arc::new(Mutex::new(None));
    let slot = HeldSlot::default();
    let mut driven = Box::pin(drive(
        slot.clone(),
        Waiting {
            polls: polls.clone(),
            waker: inner_waker.clone(),
        },
    ));
    let count = Arc::new(CountWake(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(driven.as_mut().poll(&mut cx).is_pending());
    assert_eq!(polls.load(Ordering::SeqCst), 1, "the first poll polls it");

    // The upstream part woken, as its socket's readiness would: the task
    // runs again, the client connection is not polled.
    let held_waker = slot
        .inner
        .waker
        .lock()
        .expect("lock")
        .clone()
        .expect("set by drive");
    held_waker.wake_by_ref();
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "the task was woken");
    assert!(driven.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        polls.load(Ordering::SeqCst),
        1,
        "not polled for the upstream"
    );

    // Its own wake-up polls it.
    let own = inner_waker
        .lock()
        .expect("lock")
        .take()
        .expect("registered");
    own.wake();
    assert_eq!(count.0.load(Ordering::SeqCst), 2, "the task was woken");
    assert!(driven.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        polls.load(Ordering::SeqCst),
        2,
        "polled for its own wake-up"
    );
}

#[tokio::test]
async fn a_wake_up_from_elsewhere_reaches_the_task() {
    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    let waiter = tokio::spawn(drive(HeldSlot::default(), async move {
        n.notified().await;
    }));
    tokio::task::yield_now().await;
    notify.notify_one();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the driven task woke up")
        .expect("no panic");
}

#[tokio::test]
async fn an_idle_client_connection_holds_no_upstream_connection() {
    let o = origin(false).await;
    let up = upstream();
    let slot = HeldSlot::default();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let (go_on_tx, go_on) = tokio::sync::oneshot::channel::<()>();
    let client = {
        let (up, slot) = (up.clone(), slot.clone());
        tokio::spawn(drive(slot.clone(), async move {
            let rsp = up
                .send(
                    get(o.addr, "/"),
                    Duration::from_secs(5),
                    Some(&slot),
                    ANYONE,
                )
                .await
                .expect("upstream answers");
            rsp.into_body().collect().await.expect("body");
            let _ = done_tx.send(());
            // The client connection now waits for its next request.
            let _ = go_on.await;
        }))
    };
    done.await.expect("response read");
    // The driven task parks the finished connection on its next poll.
    let mut parked = false;
    for _ in 0..100 {
        if up.idle.len() == 1 {
            parked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(parked, "the finished upstream connection went to the pool");
    assert!(
        slot.lock().is_none(),
        "the idle client connection holds none"
    );
    let _ = go_on_tx.send(());
    client.await.expect("no panic");
}

/// An origin that answers one request per connection and then closes it
/// without saying so (no `Connection: close`): a pooled connection to it is
/// dead by the time it is reused.
async fn silently_closing_origin() -> Origin {
    closing_origin(None).await
}

/// Like [`silently_closing_origin`], closing each connection only once
/// `close` is notified when one is given.
async fn closing_origin(close: Option<Arc<Notify>>) -> Origin {
    use tokio::io::AsyncWriteExt;
    origin_serving(move |mut tcp, n| {
        let close = close.clone();
        async move {
            if !read_head(&mut tcp).await {
                return;
            }
            let _ = tcp.write_all(conn_answer(n).as_bytes()).await;
            if let Some(close) = close {
                close.notified().await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_request_on_a_connection_closed_while_idle_goes_out_on_a_new_one() {
    let o = silently_closing_origin().await;
    let up = upstream();
    let first = HeldSlot::default();
    assert_eq!(send(&up, &first, get(o.addr, "/")).await, "conn 1");
    drop(first);
    // Let the origin's close arrive; the pooled connection does not know yet.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = HeldSlot::default();
    assert_eq!(
        send(&up, &next, get(o.addr, "/")).await,
        "conn 2",
        "sent again on a new connection, not failed"
    );
    assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_closed_here_without_further_use() {
    let close = Arc::new(Notify::new());
    let o = closing_origin(Some(close.clone())).await;
    let up = upstream();
    let slot = HeldSlot::default();
    assert_eq!(send(&up, &slot, get(o.addr, "/")).await, "conn 1");
    drop(slot);
    assert_eq!(up.idle.len(), 1, "parked after its response");
    // The origin closes its end; nothing uses the pool from here on. A
    // sweeper faster than the production one stands in for the passing time.
    close.notify_waiters();
    IdlePool::start_sweeper(&up.idle, Duration::from_millis(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.idle.len() > 0 {
        assert!(
            Instant::now() < deadline,
            "the closed connection is still parked (it would sit in CLOSE_WAIT)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(o.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_sweeper_leaves_open_connections_and_idle_ones_do_not_keep_the_pool_alive() {
    let o = origin(false).await;
    let up = upstream();
    let slot = HeldSlot::default();
    send(&up, &slot, get(o.addr, "/")).await;
    drop(slot);
    let pool = up.idle.clone();
    IdlePool::start_sweeper(&pool, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.len(), 1, "an open idle connection stays");
    let weak = Arc::downgrade(&pool);
    drop((pool, up));
    assert!(
        weak.upgrade().is_none(),
        "neither the parked connection nor the sweepers hold the pool"
    );
}

/// Reads are capped at 32 KiB (`read_cap::READ_CAP`): a response head of
/// 100 KiB and a 300 KiB body still arrive whole.
#[tokio::test]
async fn a_head_and_a_body_larger_than_one_read_arrive_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
    // 50 headers of 2 KB: hyper allows at most 100 headers.
    for i in 0..50 {
        response.extend_from_slice(format!("x-big-{i}: {}\r\n", "v".repeat(2000)).as_bytes());
    }
    response.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    response.extend_from_slice(&body);
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "request ended early");
            seen.extend_from_slice(&buf[..n]);
        }
        tcp.write_all(&response).await.expect("write");
    });
    let up = upstream();
    let slot = HeldSlot::default();
    let fut = async {
        let rsp = up
            .send(get(addr, "/"), Duration::from_secs(5), Some(&slot), ANYONE)
            .await
            .expect("upstream answers");
        let headers = rsp.headers().clone();
        let got = rsp.into_body().collect().await.expect("body").to_bytes();
        (headers, got)
    };
    let (headers, got) = drive(slot.clone(), fut).await;
    assert_eq!(headers.len(), 51, "50 large headers and content-length");
    assert_eq!(headers["x-big-49"].len(), 2000);
    assert_eq!(got.len(), body.len());
    assert!(got[..] == body[..], "body bytes differ");
}

/// An origin whose idle timeout fires as the next request arrives: it
/// answers the first request of each connection, then reads the next one
/// and closes without a byte of an answer (the close crossed the request).
async fn idle_closing_origin() -> Origin {
    use tokio::io::AsyncWriteExt;
    origin_serving(|mut tcp, n| async move {
        // The first request is answered; the next is read, then the close.
        if read_head(&mut tcp).await {
            let _ = tcp.write_all(conn_answer(n).as_bytes()).await;
            read_head(&mut tcp).await;
        }
    })
    .await
}

/// Sends `req` through `slot` as [`send`] does; the error's text when it fails.
async fn try_send(
    up: &Upstream,
    slot: &HeldSlot,
    req: http::Request<Body>,
) -> Result<String, String> {
    let fut = async {
        match up
            .send(req, Duration::from_secs(5), Some(slot), ANYONE)
            .await
        {
            Ok(rsp) => {
                let body = rsp.into_body().collect().await.expect("body").to_bytes();
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    drive(slot.clone(), fut).await
}

#[tokio::test]
async fn a_get_the_idle_timeout_crossed_is_sent_again_and_a_post_is_not() {
    let o = idle_closing_origin().await;
    let up = upstream();
    let slot = HeldSlot::default();
    assert_eq!(send(&up, &slot, get(o.addr, "/")).await, "conn 1");
    // Idle past REPLAY_AFTER: the next GET meets the close and goes out again.
    tokio::time::sleep(REPLAY_AFTER + Duration::from_millis(50)).await;
    let fut = up.send(
        get(o.addr, "/again"),
        Duration::from_secs(5),
        Some(&slot),
        ANYONE,
    );
    let rsp = drive(slot.clone(), fut).await.expect("sent again");
    assert!(
        rsp.extensions()
            .get::<crate::upstream::Replayed>()
            .is_some(),
        "the response says it was sent twice"
    );
    let body = drive(slot.clone(), rsp.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"conn 2", "sent again on a new connection");
    assert_eq!(o.accepted.load(Ordering::SeqCst), 2);

    // A POST may have been acted on: it is not sent twice.
    tokio::time::sleep(REPLAY_AFTER + Duration::from_millis(50)).await;
    let post = http::Request::post(format!("http://{}/post", o.addr))
        .body(crate::body::full("x"))
        .expect("request");
    assert!(try_send(&up, &slot, post).await.is_err());
    assert_eq!(o.accepted.load(Ordering::SeqCst), 2, "no second connection");
}

/// A body of unknown length (sent chunked over HTTP/1.1): one chunk.
struct OneChunk(Option<bytes::Bytes>);

impl http_body::Body for OneChunk {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

fn chunked_body(text: &'static str) -> Body {
    crate::body::boxed(OneChunk(Some(bytes::Bytes::from_static(text.as_bytes()))))
}

/// An origin whose connections (the `n`th, from 1, where `raw` does not take
/// it) answer each request with `describe`'s text of it (its head, and its
/// body read whole).
async fn echo_origin<R, D>(raw: R, describe: D) -> Origin
where
    R: Fn(usize) -> bool + Send + Sync + Copy + 'static,
    D: Fn(usize, &http::request::Parts, &[u8]) -> String + Send + Sync + Copy + 'static,
{
    origin_serving(move |mut tcp, n| async move {
        use tokio::io::AsyncWriteExt;
        if raw(n) {
            // HTTP/1.0 with keep-alive, to every request on the connection.
            while read_head(&mut tcp).await {
                let answer =
                    "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 6\r\n\r\nconn 1";
                if tcp.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            return;
        }
        let svc = service_fn(
            move |req: http::Request<hyper::body::Incoming>| async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let text = describe(n, &parts, &body);
                Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(text),
                )))
            },
        );
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    })
    .await
}

/// An upstream that answers its first connection's request in HTTP/1.0 with
/// keep-alive: hyper then sends every later request on that connection as
/// HTTP/1.0, and a body of unknown length went out without its body. The
/// connection is closed after that exchange instead, and the upload goes out
/// whole, chunked, on a new one.
#[tokio::test]
async fn a_connection_answered_in_http_1_0_is_not_reused() {
    let o = echo_origin(
        |n| n == 1,
        |n, head, body| {
            let body = String::from_utf8_lossy(body);
            format!("conn {n} {:?} {body}", head.version)
        },
    )
    .await;
    let up = upstream();
    let slot = HeldSlot::default();
    assert_eq!(send(&up, &slot, get(o.addr, "/old")).await, "conn 1");
    let post = http::Request::post(format!("http://{}/upload", o.addr))
        .body(chunked_body("hello world"))
        .expect("request");
    assert_eq!(send(&up, &slot, post).await, "conn 2 HTTP/1.1 hello world");
    assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
}

/// A GET (or HEAD) whose body has no length the upstream can be told in
/// advance (the client sent it chunked) goes out chunked: hyper sends these
/// methods without a body unless told, and the body was dropped. A GET
/// without a body goes out as before, with no framing header.
#[tokio::test]
async fn a_get_with_a_chunked_body_keeps_its_body() {
    let o = echo_origin(
        |_| false,
        |_, head, body| {
            let te = head.headers.contains_key(http::header::TRANSFER_ENCODING);
            format!("te={te} body={}", String::from_utf8_lossy(body))
        },
    )
    .await;
    let up = upstream();
    let slot = HeldSlot::default();
    let search = http::Request::get(format!("http://{}/_search", o.addr))
        .body(chunked_body(r#"{"q":"abc"}"#))
        .expect("request");
    assert_eq!(
        send(&up, &slot, search).await,
        r#"te=true body={"q":"abc"}"#
    );
    assert_eq!(
        send(&up, &slot, get(o.addr, "/plain")).await,
        "te=false body="
    );
}

#[test]
fn the_idle_cap_is_a_tenth_of_the_open_file_limit_within_its_range() {
    assert_eq!(idle_cap_for(Some(1024)), 102);
    assert_eq!(idle_cap_for(Some(100)), IDLE_CAP_RANGE.0);
    assert_eq!(idle_cap_for(Some(1 << 20)), IDLE_CAP_RANGE.1);
    assert_eq!(idle_cap_for(None), IDLE_CAP_RANGE.1);
}

/// A workload allowed many hosts (a wildcard, `"*"`, a CIDR) asks for one
/// after another: each leaves an idle connection, but no more than the cap
/// stay, the least recently parked going first.
#[tokio::test]
async fn idle_connections_over_all_hosts_are_capped_the_least_recently_parked_going_first() {
    let cap = 16;
    let extra = 4;
    let mut up = upstream();
    up.idle = Arc::new(IdlePool::with_cap(cap));
    let mut origins = Vec::new();
    for _ in 0..cap + extra {
        origins.push(origin(false).await);
    }
    let slot = HeldSlot::default();
    for o in &origins {
        send(&up, &slot, get(o.addr, "/")).await;
    }
    drop(slot);
    assert_eq!(up.idle.len(), cap, "idle connections over all hosts");

    let slot = HeldSlot::default();
    let newest = &origins[cap + extra - 1];
    send(&up, &slot, get(newest.addr, "/")).await;
    assert_eq!(
        newest.accepted.load(Ordering::SeqCst),
        1,
        "the newest is reused"
    );
    let oldest = &origins[0];
    send(&up, &slot, get(oldest.addr, "/")).await;
    assert_eq!(
        oldest.accepted.load(Ordering::SeqCst),
        2,
        "the least recently parked was closed"
    );
}

/// An HTTP/1 origin that answers `x` after `delay`.
async fn slow_origin(delay: Duration) -> Origin {
    origin_serving(move |tcp, _n| async move {
        let svc = service_fn(
            move |_req: http::Request<hyper::body::Incoming>| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"x"),
                )))
            },
        );
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    })
    .await
}

/// Sends `n` HTTP/2 requests to `addr` at once through `slot`'s own client;
/// how many were answered.
async fn send_h2_at_once(up: &Upstream, slot: &HeldSlot, addr: SocketAddr, n: usize) -> usize {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (up, slot) = (up.clone(), slot.clone());
        let mut req = get(addr, "/");
        *req.version_mut() = http::Version::HTTP_2;
        set.spawn(async move {
            let rsp = up
                .send(req, Duration::from_secs(10), Some(&slot), ANYONE)
                .await;
            match rsp {
                Ok(rsp) => rsp.into_body().collect().await.is_ok(),
                Err(_) => false,
            }
        });
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        ok += usize::from(r.expect("task"));
    }
    ok
}

/// An HTTP/2 client connection's streams to an upstream that speaks only
/// HTTP/1.1: each stream in flight wanted a connection of its own (100
/// streams, 100 upstream sockets). They share a bounded few, and every one
/// is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_to_an_http1_upstream_share_a_bounded_few_connections() {
    let o = slow_origin(Duration::from_millis(50)).await;
    let up = upstream();
    let slot = HeldSlot::default();
    let ok = send_h2_at_once(&up, &slot, o.addr, 100).await;
    assert_eq!(ok, 100, "every request answered");
    let opened = o.accepted.load(Ordering::SeqCst);
    assert!(
        opened <= crate::upstream::own_h2::limit::MAX_OPEN_PER_HOST,
        "one client connection opened {opened} upstream connections"
    );
}

/// The bound is per host: one host's busy connections do not hold up a
/// request to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_at_its_bound_does_not_hold_up_another() {
    let slow = slow_origin(Duration::from_secs(3)).await;
    let quick = origin(false).await;
    let up = upstream();
    let slot = HeldSlot::default();
    let busy = {
        let (up, slot) = (up.clone(), slot.clone());
        tokio::spawn(async move { send_h2_at_once(&up, &slot, slow.addr, 12).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = tokio::time::Instant::now();
    assert_eq!(send_h2_at_once(&up, &slot, quick.addr, 1).await, 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} behind another host",
        started.elapsed()
    );
    assert_eq!(busy.await.expect("task"), 12);
}
