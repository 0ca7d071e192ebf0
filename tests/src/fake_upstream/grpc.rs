//! A tiny gRPC service, framed by hand over HTTP/2 (any request with
//! `content-type: application/grpc...`). Messages are opaque bytes, so clients need no
//! generated code (grpcio's generic `unary_unary` / `unary_stream` with no serializers).
//!
//! | method | answer |
//! |---|---|
//! | `/test.Echo/Unary` | the request message echoed, then trailers `grpc-status: 0` and `x-echo-trailer: done` |
//! | `/test.Echo/Stream` | `n` messages `message i of n` (`n` = the request message as a decimal, default 3, at most 100), 50 ms apart, then `grpc-status: 0` |
//! | `/test.Echo/Fail` | no message; trailers `grpc-status: 7` (PERMISSION_DENIED), `grpc-message: denied by fake upstream` |
//! | anything else | `grpc-status: 12` (UNIMPLEMENTED) |

use std::convert::Infallible;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::endpoints::{respond, Body};
use super::Shared;

/// True for a gRPC request (by content type).
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The messages in a gRPC request body (length-prefixed, uncompressed).
fn messages(body: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(msg) = rest.get(5..5 + len) else {
            break;
        };
        out.push(Bytes::copy_from_slice(msg));
        rest = &rest[5 + len..];
    }
    out
}

fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

fn trailers(
    status: u32,
    message: Option<&str>,
    extra: &[(&'static str, &'static str)],
) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(status));
    if let Some(m) = message.and_then(|m| HeaderValue::from_str(m).ok()) {
        t.insert("grpc-message", m);
    }
    for (k, v) in extra {
        t.insert(*k, HeaderValue::from_static(v));
    }
    t
}

/// Answers one gRPC call whose request body is `body`.
pub(super) fn handle(path: &str, body: &[u8], shared: &Shared) -> Response<Body> {
    let request = messages(body).into_iter().next().unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Frame<Bytes>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let f = rx.recv().await?;
        Some((Ok::<_, Infallible>(f), rx))
    });
    let path = path.to_string();
    tokio::spawn(async move {
        let frames: Vec<Frame<Bytes>> = match path.as_str() {
            "/test.Echo/Unary" => vec![
                Frame::data(frame(&request)),
                Frame::trailers(trailers(0, None, &[("x-echo-trailer", "done")])),
            ],
            "/test.Echo/Stream" => {
                let n = std::str::from_utf8(&request)
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .unwrap_or(3)
                    .min(100);
                for i in 0..n {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let msg = format!("message {i} of {n}");
                    if tx.send(Frame::data(frame(msg.as_bytes()))).await.is_err() {
                        return;
                    }
                }
                vec![Frame::trailers(trailers(0, None, &[]))]
            }
            "/test.Echo/Fail" => vec![Frame::trailers(trailers(
                7,
                Some("denied by fake upstream"),
                &[],
            ))],
            _ => vec![Frame::trailers(trailers(12, Some("unknown method"), &[]))],
        };
        for f in frames {
            if tx.send(f).await.is_err() {
                return;
            }
        }
    });
    let mut rsp = respond(
        shared,
        StatusCode::OK,
        Some("application/grpc"),
        StreamBody::new(stream).boxed(),
    );
    // Clients check this before reading messages.
    rsp.headers_mut()
        .insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut body = frame(b"hello").to_vec();
        body.extend_from_slice(&frame(b""));
        assert_eq!(messages(&body), vec![Bytes::from("hello"), Bytes::new()]);
        assert!(messages(&[0, 0, 0, 0, 9, 1]).is_empty(), "truncated");
    }
}
