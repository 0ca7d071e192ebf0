//! `/ws`: a WebSocket echo (text and binary frames), on an HTTP/1.1 upgrade.

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::endpoints::{full, json_response, respond, Body};
use super::Shared;

/// Answers a WebSocket handshake with 101 and echoes messages on the upgraded connection.
pub(super) fn websocket(mut req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let is_ws = req
        .headers()
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return json_response(
            shared,
            StatusCode::BAD_REQUEST,
            &json!({"error": "not a websocket handshake"}),
        );
    };
    if !is_ws {
        return json_response(
            shared,
            StatusCode::BAD_REQUEST,
            &json!({"error": "not a websocket handshake"}),
        );
    }
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut rsp = respond(
        shared,
        StatusCode::SWITCHING_PROTOCOLS,
        None,
        full(Bytes::new()),
    );
    let h = rsp.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", v);
    }
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert("sec-websocket-protocol", p);
    }
    rsp
}
