//! Header-name casing on the HTTP/1.1 wire, for headers a transform writes.
//!
//! hyper lowercases header names, except that a server built with
//! `preserve_header_case` records the client's spellings in a private request
//! extension (`HeaderCaseMap`), which a client built with
//! `http1_preserve_header_case` uses when it writes the request upstream
//! (the listeners and the upstream client are built that way). The map's type
//! is not public, so it cannot be edited. [`set_header_case`] gets a new map
//! through public API only: it writes the request head through a hyper HTTP/1
//! client over an in-memory pipe (the current map applies), renames the
//! wanted header lines in those bytes, parses them back with a
//! case-preserving hyper server, and moves the parsed request's extensions
//! (the new map) onto the request.
//!
//! Result: headers named in `names` go out spelled as configured; every other
//! header keeps the client's spelling; `content-length`, `transfer-encoding`,
//! `connection` and `upgrade` are left out of the round trip and go out in
//! lowercase. HTTP/2 upstreams always get lowercase names (RFC 9113). If the
//! round trip fails the request is sent unchanged (casing is cosmetic:
//! header names are case-insensitive), and a debug line says why.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Extensions, Request, Response};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::body::Body;

const HEAD_LIMIT: usize = 256 * 1024;
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(2);

/// Makes the headers in `names` (as spelled there) go out with that casing
/// on HTTP/1.1, keeping the client's casing for the others.
pub async fn set_header_case(req: &mut Request<Body>, names: &[String]) {
    let wanted: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| req.headers().contains_key(*n))
        .collect();
    if wanted.is_empty() {
        return;
    }
    match tokio::time::timeout(ROUND_TRIP_TIMEOUT, case_map(req, &wanted)).await {
        Ok(Ok(ext)) => req.extensions_mut().extend(ext),
        Ok(Err(e)) => tracing::debug!(error = %e, "header casing left as is"),
        Err(_) => tracing::debug!("header casing left as is: timed out"),
    }
}

async fn case_map(req: &Request<Body>, wanted: &[&str]) -> Result<Extensions, String> {
    let head = write_head(req).await?;
    let patched = rename(&head, wanted);
    parse_head(patched).await
}

/// The request head as hyper's HTTP/1 client writes it, current casing applied.
async fn write_head(req: &Request<Body>) -> Result<Vec<u8>, String> {
    let mut synthetic = Request::builder()
        .method(http::Method::GET)
        .uri("/")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    *synthetic.headers_mut() = req.headers().clone();
    for h in [
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
    ] {
        synthetic.headers_mut().remove(h);
    }
    *synthetic.extensions_mut() = req.extensions().clone();
    let (ours, mut theirs) = tokio::io::duplex(HEAD_LIMIT);
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(ours))
        .await
        .map_err(|e| e.to_string())?;
    let _pending = sender.send_request(synthetic);
    // Read into the vector's spare room: a buffer on the stack would be
    // zeroed on every request and make the request hook's future (moved into
    // its box) that much larger to copy (docs/benchmarks.md, round 45).
    let read = async {
        let mut buf = Vec::with_capacity(2048);
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            buf.reserve(2048);
            let n = theirs.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 || buf.len() > HEAD_LIMIT {
                return Err("no complete head".to_string());
            }
        }
        Ok(buf)
    };
    tokio::select! {
        head = read => head,
        r = conn => Err(format!("client side ended: {r:?}")),
    }
}

/// Respells the header lines named in `wanted`.
fn rename(head: &[u8], wanted: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    for (i, line) in head.split_inclusive(|b| *b == b'\n').enumerate() {
        let colon = line.iter().position(|b| *b == b':');
        match (i, colon) {
            (1.., Some(c)) => {
                let name = &line[..c];
                match wanted
                    .iter()
                    .find(|w| w.as_bytes().eq_ignore_ascii_case(name))
                {
                    Some(w) => {
                        out.extend_from_slice(w.as_bytes());
                        out.extend_from_slice(&line[c..]);
                    }
                    None => out.extend_from_slice(line),
                }
            }
            _ => out.extend_from_slice(line),
        }
    }
    out
}

/// Parses a head with a case-preserving hyper server; returns the request's extensions.
async fn parse_head(head: Vec<u8>) -> Result<Extensions, String> {
    let (mut ours, theirs) = tokio::io::duplex(HEAD_LIMIT);
    ours.write_all(&head).await.map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let svc = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
        if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(r.extensions().clone());
        }
        async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(theirs), svc);
    tokio::select! {
        ext = rx => ext.map_err(|_| "server side dropped the request".to_string()),
        r = conn => Err(format!("server side ended: {r:?}")),
    }
}
