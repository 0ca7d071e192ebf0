use super::*;
use crate::h2_frames::*;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
/// `CANCEL`, the error code clients reset a stream they no longer want with.
const CANCEL: u32 = 0x8;

/// A `Counts` and a start time for tests that count by hand.
fn counts() -> (Counts, Instant) {
    (Counts::default(), Instant::now())
}

#[test]
fn a_burst_of_early_cancellations_is_allowed_and_one_more_is_not() {
    let (mut c, t0) = counts();
    let early = Duration::from_millis(5);
    for i in 0..BURST {
        assert!(c.cancelled(t0, early).is_none(), "cancellation {i}");
        assert_eq!(c.verdict, Verdict::Serve, "cancellation {i}");
    }
    c.cancelled(t0, early);
    assert_eq!(c.verdict, Verdict::GoAway);
}

#[test]
fn the_bucket_refills_at_the_rate() {
    let (mut c, t0) = counts();
    let early = Duration::from_millis(5);
    for _ in 0..BURST {
        c.cancelled(t0, early);
    }
    // A second later: a second's worth more, and no more.
    let t1 = t0 + Duration::from_secs(1);
    for i in 0..PER_SECOND {
        c.cancelled(t1, early);
        assert_eq!(c.verdict, Verdict::Serve, "cancellation {i} after a second");
    }
    c.cancelled(t1, early);
    assert_eq!(c.verdict, Verdict::GoAway);
}

#[test]
fn cancelling_at_the_rate_goes_on_for_ever() {
    let (mut c, t0) = counts();
    let early = Duration::from_millis(5);
    // A full burst first, then exactly the rate for an hour.
    for _ in 0..BURST {
        c.cancelled(t0, early);
    }
    let step = Duration::from_secs(1) / PER_SECOND;
    for i in 1..=3600 * PER_SECOND {
        c.cancelled(t0 + step * i, early);
    }
    assert_eq!(c.verdict, Verdict::Serve);
}

#[test]
fn streams_cancelled_late_do_not_count() {
    let (mut c, t0) = counts();
    for i in 0..10 * BURST {
        c.cancelled(t0, PREMATURE);
        assert_eq!(c.verdict, Verdict::Serve, "cancellation {i}");
    }
}

#[test]
fn after_the_goaway_a_client_still_cancelling_is_closed() {
    let (mut c, t0) = counts();
    let early = Duration::from_millis(5);
    for _ in 0..=BURST {
        c.cancelled(t0, early);
    }
    assert_eq!(c.verdict, Verdict::GoAway);
    // The streams it had open at the GOAWAY may still go.
    for _ in 0..H2_MAX_CONCURRENT_STREAMS {
        c.cancelled(t0, early);
    }
    assert_eq!(c.verdict, Verdict::GoAway);
    c.cancelled(t0, early);
    assert_eq!(c.verdict, Verdict::Close);
}

#[test]
fn streams_dropped_with_their_connection_do_not_count() {
    let (mut c, t0) = counts();
    c.ended = true;
    for _ in 0..10 * BURST {
        c.cancelled(t0, Duration::ZERO);
    }
    assert_eq!(c.verdict, Verdict::Serve);
}

/// Serves one connection on 127.0.0.1 as `serve_http` does (hyper's
/// builder, the idle bound and [`watch`]), every request held unanswered
/// for ever unless its path is `/fast`; returns the address.
async fn serve_one() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (tcp, remote) = listener.accept().await.expect("accept");
        let started = idle::Started::default();
        let counter = started.clone();
        let cancels = Cancels::new(remote);
        let tracker = cancels.clone();
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            counter.one();
            let fast = req.uri().path() == "/fast";
            tracker.track(req.version(), async move {
                if !fast {
                    std::future::pending::<()>().await;
                }
                Ok::<_, std::convert::Infallible>(hyper::Response::new(crate::body::empty()))
            })
        });
        let builder = super::super::http_builder();
        let conn = builder.serve_connection(TokioIo::new(tcp), svc);
        let _ = watch(idle::bounded(conn, started), Some(cancels)).await;
    });
    addr
}

/// `GET http://a/` (HPACK: `:method GET`, `:scheme http`, `:path /`, and a
/// literal `:authority a`).
const SLOW: [u8; 6] = [0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
/// `GET http://a/fast`.
const FAST: [u8; 12] = [
    0x82, 0x86, 0x44, 0x05, b'/', b'f', b'a', b's', b't', 0x41, 0x01, b'a',
];

/// What a raw HTTP/2 client saw of the server.
#[derive(Debug, Default)]
struct Seen {
    /// Streams it reset after the server had taken them.
    cancelled: u32,
    /// Responses it got (`/fast`).
    answered: u32,
    /// The GOAWAY's error code, if one came.
    goaway: Option<u32>,
    /// The server closed the connection.
    closed: bool,
}

/// The error code of a GOAWAY frame.
fn goaway_code(f: &Frame) -> Option<u32> {
    let code: [u8; 4] = f.payload.get(4..8)?.try_into().ok()?;
    Some(u32::from_be_bytes(code))
}

/// A client on `addr` that, `rounds` times, opens `slow` streams the
/// server holds plus `fast` ones it answers, waits for its PING's answer
/// (so the server has taken every stream opened before it), and resets
/// the slow ones. Stops early at a GOAWAY, then reads until the server
/// closes; without one, reads until every fast stream is answered. Either
/// wait ends after 10 s.
async fn client(addr: std::net::SocketAddr, rounds: u32, slow: u32, fast: u32) -> Seen {
    let mut io = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut hello = super::super::H2_PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    io.write_all(&hello).await.expect("preface");
    let mut seen = Seen::default();
    let mut next = 1u32;
    'rounds: for round in 0..rounds {
        let mut out = Vec::new();
        let mut held = Vec::new();
        for i in 0..slow + fast {
            let block: &[u8] = if i < slow { &SLOW } else { &FAST };
            out.extend(frame(HEADERS, END_STREAM | END_HEADERS, next, block));
            if i < slow {
                held.push(next);
            }
            next += 2;
        }
        let ping = u64::from(round).to_be_bytes();
        out.extend(frame(PING, 0, 0, &ping));
        if io.write_all(&out).await.is_err() {
            break;
        }
        loop {
            let Some(f) = read_frame(&mut io).await else {
                seen.closed = true;
                break 'rounds;
            };
            match f.kind {
                PING if f.flags & ACK != 0 && f.payload == ping => break,
                HEADERS => seen.answered += 1,
                GOAWAY => {
                    seen.goaway = goaway_code(&f);
                    break 'rounds;
                }
                _ => {}
            }
        }
        let mut resets = Vec::new();
        for id in held {
            resets.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            seen.cancelled += 1;
        }
        if io.write_all(&resets).await.is_err() {
            break;
        }
    }
    let answers = rounds * fast;
    // The PINGs the server sends go unanswered: a graceful shutdown would
    // wait for the answer, so a close comes from the connection's deadline.
    let rest = async {
        while !seen.closed && (seen.goaway.is_some() || seen.answered < answers) {
            let Some(f) = read_frame(&mut io).await else {
                seen.closed = true;
                break;
            };
            match f.kind {
                HEADERS => seen.answered += 1,
                GOAWAY if seen.goaway.is_none() => seen.goaway = goaway_code(&f),
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), rest).await;
    seen
}

/// A client that resets stream after stream the server took on gets a
/// GOAWAY and its connection closed soon after it goes over the bound, and
/// the connection is counted.
#[tokio::test]
async fn a_client_resetting_streams_it_opened_is_sent_goaway_and_closed() {
    let before = closed_connections();
    let addr = serve_one().await;
    // Far more than the bound, as fast as the server answers PINGs.
    let seen = client(addr, 100, 50, 0).await;
    assert_eq!(seen.goaway, Some(0), "a GOAWAY (NO_ERROR): {seen:?}");
    assert!(seen.closed, "the server closed the connection: {seen:?}");
    // Over the burst, well short of what the client would have sent.
    assert!(
        seen.cancelled > BURST && seen.cancelled < 100 * 50,
        "{seen:?}"
    );
    assert!(closed_connections() > before, "the close is counted");
}

/// A client that cancels some streams among many it lets finish is served
/// to the end: every answer comes, the server never says GOAWAY.
#[tokio::test]
async fn a_client_cancelling_a_few_streams_among_many_is_served() {
    let addr = serve_one().await;
    // 20 rounds of 5 cancelled and 40 answered: 100 cancellations, 800 answers.
    let seen = client(addr, 20, 5, 40).await;
    assert_eq!(seen.cancelled, 100, "{seen:?}");
    assert_eq!(seen.answered, 800, "{seen:?}");
    assert_eq!(seen.goaway, None, "{seen:?}");
    assert!(!seen.closed, "{seen:?}");
}
