//! Protocol upgrades (WebSocket): once the pipeline allowed the request and the
//! upstream answered 101, both sides are spliced byte for byte. The exchange is
//! audited once, when the upgraded connection ends, with the bytes moved.

use http::Response;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{self, Body};
use crate::exchange::AuditGuard;

/// Answers the client's upgrade with the upstream's 101 and splices the two
/// upgraded connections in a background task that owns the audit record.
pub fn splice(
    mut upstream: Response<Incoming>,
    client: OnUpgrade,
    mut guard: AuditGuard,
) -> Response<Body> {
    let upstream_up = hyper::upgrade::on(&mut upstream);
    let (parts, _) = upstream.into_parts();
    if let Some(r) = guard.record_mut() {
        r.status_code = 101;
    }
    tokio::spawn(async move {
        let (c, u) = match tokio::join!(client, upstream_up) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                if let Some(r) = guard.record_mut() {
                    let err = c
                        .err()
                        .or(u.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    r.error = Some(format!("upgrade failed: {err}"));
                }
                return;
            }
        };
        let mut c = TokioIo::new(c);
        let mut u = TokioIo::new(u);
        let result = tokio::io::copy_bidirectional(&mut c, &mut u).await;
        if let Some(r) = guard.record_mut() {
            match result {
                Ok((sent, received)) => {
                    r.bytes_sent = Some(sent);
                    r.bytes_received = Some(received);
                }
                Err(e) => r.error = Some(format!("upgraded connection: {e}")),
            }
        }
        drop(guard);
    });
    Response::from_parts(parts, body::empty())
}
