//! Requests hyper's HTTP/1 parser refuses before the pipeline sees them.
//!
//! A request head hyper cannot parse (a bad or duplicate `Content-Length`,
//! an unknown `Transfer-Encoding`, a space before a header's colon, a CR or
//! NUL in a value, an unknown version, a head or URI over hyper's limits) is
//! answered by hyper itself with 400, 414 or 431, and the connection then
//! ends with a parse error. The service never runs, so no exchange writes
//! the audit record the request is owed; [`audit`] writes it from the error
//! the connection ended with. A connection that ends any other way (the
//! client reset or closed it, an idle keep-alive timed out) refused no
//! request and gets no record.

use std::error::Error as StdError;

use crate::exchange::ConnInfo;
use crate::state::Shared;

/// hyper's description of `Parse::UriTooLong`, the one parse error it
/// answers with 414; `is_parse_too_large` does not tell it from a head too
/// large (431). Pinned by a test below against a real hyper connection.
const URI_TOO_LONG: &str = "URI too long";
/// The start of hyper's description of `Parse::Internal`, which it answers
/// with no response at all.
const INTERNAL: &str = "internal error";

/// A request hyper refused while parsing its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseRefusal {
    /// The status hyper answered with; 0 when it closed without a response.
    pub status: u16,
    /// The audit `reason`.
    pub reason: &'static str,
    /// hyper's description of what was wrong: a fixed text, never request bytes.
    pub error: String,
}

impl ParseRefusal {
    /// The refusal behind a client connection's error, or `None` when the
    /// connection ended some other way. The status follows hyper's server
    /// role (`on_error` in `proto/h1/role.rs`): a URI over its limit 414,
    /// a head over its size or header-count limit 431, an HTTP/2 preface
    /// after an HTTP/1 request (or an internal error) no response, any
    /// other parse error 400.
    pub fn of(err: &(dyn StdError + 'static)) -> Option<Self> {
        let e = hyper_error(err)?;
        if !e.is_parse() {
            return None;
        }
        let error = e.to_string();
        let (status, reason) = if error == URI_TOO_LONG {
            (414, "uri_too_long")
        } else if e.is_parse_too_large() {
            (431, "request_header_too_large")
        } else if e.is_parse_version_h2() || e.is_parse_status() || error.starts_with(INTERNAL) {
            (0, "malformed_request")
        } else {
            (400, "malformed_request")
        };
        Some(ParseRefusal {
            status,
            reason,
            error,
        })
    }
}

/// The hyper error in `err` or in its chain of sources.
fn hyper_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a hyper::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return Some(h);
        }
        cur = e.source();
    }
    None
}

/// Writes the audit record of the request hyper refused, when `err` (what
/// serving `conn` ended with) is such a refusal. Returns whether it was.
pub fn audit(shared: &Shared, conn: &ConnInfo, err: &(dyn StdError + 'static)) -> bool {
    let Some(refusal) = ParseRefusal::of(err) else {
        return false;
    };
    let mut rec = conn.record();
    // The head was not parsed, so the only name known is the connection's.
    rec.host = conn
        .sni()
        .or(conn.expected_host())
        .unwrap_or_default()
        .to_string();
    rec.reject(None, refusal.reason, refusal.status);
    rec.error = Some(format!(
        "request refused by the HTTP parser: {}",
        refusal.error
    ));
    shared.audit.emit(&rec);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection served by the listeners' server builder (every request
    /// answered 200, empty), and the client's end of it; the task ends with
    /// what the connection ended with.
    fn connection() -> (
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<Option<ParseRefusal>>,
    ) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let svc = service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(crate::body::empty()))
        });
        let conn = tokio::spawn(async move {
            super::super::http_builder()
                .serve_connection_with_upgrades(TokioIo::new(server), svc)
                .await
                .err()
                .and_then(|e| ParseRefusal::of(&*e))
        });
        (client, conn)
    }

    /// Serves `request`; returns what the client read and what the connection
    /// ended with.
    async fn serve(request: Vec<u8>) -> (String, Option<ParseRefusal>) {
        let (mut client, conn) = connection();
        client.write_all(&request).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut reply = Vec::new();
        let _ = client.read_to_end(&mut reply).await;
        let refusal = conn.await.expect("server task");
        (String::from_utf8_lossy(&reply).into_owned(), refusal)
    }

    async fn assert_refused(request: Vec<u8>, status: u16, reason: &str) {
        let shown = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        let (reply, refusal) = serve(request).await;
        let refusal = refusal.unwrap_or_else(|| panic!("{shown:?}: no parse refusal"));
        assert_eq!(
            (refusal.status, refusal.reason),
            (status, reason),
            "{shown:?}"
        );
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status} ")),
            "{shown:?}: hyper answered {reply:?}, the record says {status}"
        );
    }

    #[tokio::test]
    async fn the_status_is_the_one_hyper_answered_with() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_refused(bad.to_vec(), 400, "malformed_request").await;
        }
        let mut long_uri = b"GET /".to_vec();
        long_uri.resize(100 * 1024, b'a');
        long_uri.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_refused(long_uri, 414, "uri_too_long").await;
        // A head over the size limit, with fewer fields than
        // `listen::H1_MAX_HEADERS`.
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..150 {
            big.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(1024)).as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        assert!(big.len() > super::super::H1_MAX_BUF);
        assert_refused(big, 431, "request_header_too_large").await;
    }

    #[tokio::test]
    async fn a_connection_that_just_ends_refused_nothing() {
        // A complete request, then the client closes its side (which hyper
        // takes for the end of the connection): no refusal.
        let (_, refusal) = serve(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()).await;
        assert_eq!(refusal, None);
        // Half a head, then EOF: hyper answers nothing and reports an
        // incomplete message, not a parse error.
        let (reply, refusal) = serve(b"GET / HTTP/1.1\r\nHos".to_vec()).await;
        assert_eq!(reply, "");
        assert_eq!(refusal, None);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(ParseRefusal::of(&io), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_that_times_out_refused_nothing() {
        let (mut client, conn) = connection();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = client.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 "), "{:?}", &buf[..n]);
        // The client stays connected and silent until the keep-alive times out.
        let limit = super::super::HEADER_READ_TIMEOUT * 2;
        let ended = tokio::time::timeout(limit, conn)
            .await
            .expect("the idle connection ends")
            .expect("server task");
        assert_eq!(ended, None);
    }
}
