//! What the HTTP/2 server the listeners use ([`super::http_builder`], hyper
//! over h2) does with streams reset before it took them and with trailers
//! that carry pseudo-header fields, seen from a client writing raw frames.

use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::h2_frames::*;

const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// `GET http://a/` in HPACK (static-table `:method`, `:scheme`, `:path`,
/// and a literal `:authority`).
const GET: [u8; 6] = [0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
/// `POST http://a/`.
const POST: [u8; 6] = [0x83, 0x86, 0x84, 0x41, 0x01, b'a'];

/// Serves one connection on 127.0.0.1 with the listeners' builder; each
/// request is read to its end and answered 200, the names of its trailer
/// fields sent on `trailers`. Returns a client that has sent the preface
/// and an empty SETTINGS frame.
async fn serve_one(
    trailers: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
) -> tokio::net::TcpStream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let trailers = trailers.clone();
            async move {
                use http_body_util::BodyExt;
                if let Ok(body) = req.into_body().collect().await {
                    let names = body
                        .trailers()
                        .map(|t| t.keys().map(|k| k.to_string()).collect())
                        .unwrap_or_default();
                    let _ = trailers.send(names);
                }
                Ok::<_, std::convert::Infallible>(hyper::Response::new(crate::body::empty()))
            }
        });
        let _ = super::http_builder()
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    });
    let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut hello = super::H2_PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    client.write_all(&hello).await.expect("preface");
    client
}

/// How a stream's wait ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Its response head came.
    Answered,
    /// A GOAWAY came first, with this error code.
    GoAway(u32),
    /// The connection ended with neither.
    Closed,
}

/// Reads frames until stream `id`'s response head, a GOAWAY or the end of
/// the connection.
async fn answer_of(client: &mut tokio::net::TcpStream, id: u32) -> Ended {
    let read = async {
        while let Some(f) = read_frame(client).await {
            if f.kind == GOAWAY {
                let code: [u8; 4] = f
                    .payload
                    .get(4..8)
                    .and_then(|c| c.try_into().ok())
                    .expect("a GOAWAY's error code");
                return Ended::GoAway(u32::from_be_bytes(code));
            }
            if f.kind == HEADERS && f.stream == id {
                return Ended::Answered;
            }
        }
        Ended::Closed
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer, a GOAWAY or the end within 10 s")
}

/// Streams opened and reset in one go, before the server could take them
/// (the original Rapid Reset), wait in h2's accept queue; past
/// [`super::H2_MAX_PENDING_ACCEPT_RESETS`] of them the connection ends with
/// GOAWAY `ENHANCE_YOUR_CALM`. Fewer are no error: a request after them is
/// answered.
#[tokio::test]
async fn streams_reset_before_they_are_taken_are_bounded_by_h2() {
    for (resets, expect) in [
        (5, Ended::Answered),
        (
            4 * super::H2_MAX_PENDING_ACCEPT_RESETS as u32,
            Ended::GoAway(ENHANCE_YOUR_CALM),
        ),
    ] {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut client = serve_one(tx).await;
        let mut out = Vec::new();
        for i in 0..resets {
            let id = 1 + 2 * i;
            out.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &GET));
            out.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        let last = 1 + 2 * resets;
        out.extend(frame(HEADERS, END_STREAM | END_HEADERS, last, &GET));
        client.write_all(&out).await.expect("streams");
        assert_eq!(
            answer_of(&mut client, last).await,
            expect,
            "{resets} streams opened and reset at once"
        );
    }
}

/// A trailer section with a pseudo-header field is malformed (RFC 9113
/// §8.1: the stream must be treated as a stream error of type
/// PROTOCOL_ERROR), but h2 (0.4.20) takes it: the pseudo field is dropped
/// as the block is decoded (`Headers::into_fields`), and hyper hands the
/// request over with the other trailer fields; nothing in hyper's API shows
/// that there was one. So the proxy cannot refuse such a request: it is
/// served, without the pseudo field, which therefore never reaches a
/// transform or the upstream (docs/security.md). If this test fails, h2
/// started refusing such trailers: update the docs.
#[tokio::test]
async fn a_pseudo_header_in_trailers_is_dropped_by_h2_unseen() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut client = serve_one(tx).await;
    let mut out = frame(HEADERS, END_HEADERS, 1, &POST);
    out.extend(frame(DATA, 0, 1, b"body"));
    // `:path /x` (literal, indexed name 4) then `x-t: 1` (literal, new
    // name), neither indexed.
    let trailers = [
        0x04, 0x02, b'/', b'x', 0x00, 0x03, b'x', b'-', b't', 0x01, b'1',
    ];
    out.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &trailers));
    client.write_all(&out).await.expect("request");
    let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the request within 10 s");
    assert_eq!(seen, Some(vec!["x-t".to_string()]));
    assert_eq!(answer_of(&mut client, 1).await, Ended::Answered);
}
