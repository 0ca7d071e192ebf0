//! The timer on tokio's paused clock, against a body fed by a fake client and
//! read by a fake connection that polls it the way hyper does.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(1);

/// A request whose body the returned sender feeds, one chunk at a time; the
/// body ends when the sender drops.
fn uploading() -> (mpsc::Sender<Bytes>, Request<Body>) {
    let (tx, rx) = mpsc::channel(1);
    let body = Channel(rx).boxed();
    (
        tx,
        Request::post("http://up.test/upload")
            .body(body)
            .expect("request"),
    )
}

struct Channel(mpsc::Receiver<Bytes>);

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
    }
}

/// A client sending `chunks` chunks, `every` apart, then ending the body.
fn slow_client(tx: mpsc::Sender<Bytes>, chunks: usize, every: Duration) {
    tokio::spawn(async move {
        for _ in 0..chunks {
            if tx.send(Bytes::from_static(b"0123456789")).await.is_err() {
                return;
            }
            sleep(every).await;
        }
    });
}

/// Reads the whole body as a connection would; returns when it ended.
async fn read_all(mut body: Body) -> Instant {
    while let Some(frame) = body.frame().await {
        frame.expect("frame");
    }
    Instant::now()
}

#[tokio::test(start_paused = true)]
async fn a_slow_upload_is_not_timed() {
    let (tx, req) = uploading();
    let (req, timer) = HeadTimer::start(req, TIMEOUT);
    slow_client(tx, 5, Duration::from_millis(900));
    let started = Instant::now();
    let answered = timer
        .run(async move {
            read_all(req.into_body()).await;
            // The upstream thinks for a little less than the timeout.
            sleep(TIMEOUT - Duration::from_millis(100)).await;
            "200"
        })
        .await
        .expect("a 4.5 s upload with a 1 s header timeout was cut off");
    assert_eq!(answered, "200");
    assert!(
        started.elapsed() >= Duration::from_millis(4500),
        "the upload was not slow"
    );
}

#[tokio::test(start_paused = true)]
async fn the_clock_starts_when_the_body_is_sent() {
    let (tx, req) = uploading();
    let (req, timer) = HeadTimer::start(req, TIMEOUT);
    slow_client(tx, 5, Duration::from_millis(900));
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let err = timer
        .run(async move {
            let _ = ended_tx.send(read_all(req.into_body()).await);
            // Reads everything, then never answers.
            std::future::pending::<()>().await
        })
        .await
        .expect_err("an upstream that never answers timed out");
    assert!(matches!(err, UpstreamError::Timeout(TIMEOUT)), "{err:?}");
    let ended = ended.await.expect("the body ended");
    assert_eq!(Instant::now() - ended, TIMEOUT, "timed from the body's end");
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_stops_taking_the_body_times_out() {
    let (tx, req) = uploading();
    let (req, timer) = HeadTimer::start(req, TIMEOUT);
    // A fast client: the upstream is the one that stalls.
    slow_client(tx, 100, Duration::ZERO);
    let (took_tx, took) = tokio::sync::oneshot::channel();
    let err = timer
        .run(async move {
            let mut body = req.into_body();
            body.frame().await.expect("a frame").expect("data");
            let _ = took_tx.send(Instant::now());
            // Holds the body and reads no more of it, nor answers.
            std::future::pending::<()>().await
        })
        .await
        .expect_err("an upstream that stopped reading timed out");
    assert!(matches!(err, UpstreamError::Stalled(TIMEOUT)), "{err:?}");
    assert_eq!(err.reason(), "upstream_timeout");
    assert_eq!(err.status(), http::StatusCode::GATEWAY_TIMEOUT);
    let took = took.await.expect("a chunk was taken");
    assert_eq!(
        Instant::now() - took,
        TIMEOUT,
        "timed from the last chunk taken"
    );
}

#[tokio::test(start_paused = true)]
async fn an_early_answer_ends_the_wait_mid_upload() {
    let (tx, req) = uploading();
    let (req, timer) = HeadTimer::start(req, TIMEOUT);
    slow_client(tx, 100, Duration::from_secs(1));
    let started = Instant::now();
    let answered = timer
        .run(async move {
            let mut body = req.into_body();
            body.frame().await.expect("a frame").expect("data");
            sleep(Duration::from_millis(10)).await;
            "413"
        })
        .await
        .expect("the early answer");
    assert_eq!(answered, "413");
    assert!(started.elapsed() < TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_unfinished_starts_the_clock() {
    let (_tx, req) = uploading();
    let (req, timer) = HeadTimer::start(req, TIMEOUT);
    let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
    let err = timer
        .run(async move {
            let mut body = req.into_body();
            // Asks for more (the client has none yet), then gives up on the body.
            let asked = tokio::time::timeout(Duration::from_millis(10), body.frame()).await;
            assert!(asked.is_err(), "the client sent nothing");
            drop(body);
            let _ = dropped_tx.send(Instant::now());
            std::future::pending::<()>().await
        })
        .await
        .expect_err("waiting on a dropped body's client would hang forever");
    assert!(matches!(err, UpstreamError::Timeout(TIMEOUT)), "{err:?}");
    let dropped = dropped.await.expect("dropped");
    assert_eq!(Instant::now() - dropped, TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_body_is_timed_from_the_start_unwrapped() {
    let req = Request::get("http://up.test/get")
        .body(crate::body::empty())
        .expect("request");
    let (req, timer) = HeadTimer::start(req, TIMEOUT);
    assert!(
        timer.upload.is_none(),
        "a bodiless request's body was wrapped"
    );
    assert!(req.body().is_end_stream());
    let started = Instant::now();
    let err = timer
        .run(std::future::pending::<()>())
        .await
        .expect_err("no answer");
    assert!(matches!(err, UpstreamError::Timeout(TIMEOUT)), "{err:?}");
    assert_eq!(started.elapsed(), TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn connecting_counts_before_the_body_is_asked_for() {
    let (_tx, req) = uploading();
    let (_req, timer) = HeadTimer::start(req, TIMEOUT);
    let started = Instant::now();
    // A dial that never completes: the body is never asked for.
    let err = timer
        .run(std::future::pending::<()>())
        .await
        .expect_err("a hanging dial timed out");
    assert!(matches!(err, UpstreamError::Timeout(TIMEOUT)), "{err:?}");
    assert_eq!(started.elapsed(), TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_sending_its_body_gets_408() {
    let (tx, req) = uploading();
    let (req, timer) = HeadTimer::start(req, TIMEOUT);
    tx.send(Bytes::from_static(b"the start"))
        .await
        .expect("send");
    let (took_tx, took) = tokio::sync::oneshot::channel();
    let err = timer
        .run(async move {
            let mut body = req.into_body();
            body.frame().await.expect("a frame").expect("data");
            let _ = took_tx.send(Instant::now());
            // Asks for the rest, which never comes; the client holds on.
            read_all(body).await;
            unreachable!("the client never ends its body");
        })
        .await
        .expect_err("a client that went silent mid-body timed out");
    assert!(matches!(err, UpstreamError::ClientIdle(TIMEOUT)), "{err:?}");
    assert_eq!(err.reason(), "client_body_timeout");
    assert_eq!(err.status(), http::StatusCode::REQUEST_TIMEOUT);
    let took = took.await.expect("a chunk was taken");
    assert_eq!(Instant::now() - took, TIMEOUT, "timed from the last chunk");
    drop(tx);
}
