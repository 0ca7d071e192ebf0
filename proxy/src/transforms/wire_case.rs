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
    // The map the parse gives depends on the header names alone, in their
    // order and spelling: a head with the same names as one parsed before
    // gets that map again (the connection's next requests, as a rule).
    let names = header_names(&patched);
    if let Some(ext) = PARSED.with_borrow(|m| m.get(&names).cloned()) {
        return Ok(ext);
    }
    let ext = parse_head(patched).await?;
    // A head of many or long names (a workload's, up to the head limit) is
    // not kept: the memo stays a few hundred KiB per worker thread at most.
    if names.len() <= PARSED_NAMES_MAX {
        PARSED.with_borrow_mut(|m| {
            if m.len() >= PARSED_KEPT {
                m.clear();
            }
            m.insert(names, ext.clone());
        });
    }
    Ok(ext)
}

/// How many parsed maps a worker thread keeps (all dropped when full).
const PARSED_KEPT: usize = 64;

/// The longest list of header names whose map is kept, in bytes: about
/// 100 ordinary names (the map holds each name once more).
const PARSED_NAMES_MAX: usize = 2048;

thread_local! {
    /// The extensions parsed from heads, by their header names
    /// ([`header_names`]): per worker thread, no lock.
    static PARSED: std::cell::RefCell<std::collections::HashMap<Vec<u8>, Extensions>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The header names of `head` as written, in order, each ended by `\n`
/// (the values, which may hold a credential, are left out).
fn header_names(head: &[u8]) -> Vec<u8> {
    let mut names = Vec::with_capacity(256);
    for line in head.split(|b| *b == b'\n').skip(1) {
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            names.extend_from_slice(&line[..colon]);
            names.push(b'\n');
        }
    }
    names
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with `headers` as a client spelled them (the listener's case map) and
    /// `X-Api-Key` added by a transform.
    async fn request(headers: &[(&str, &str)]) -> Request<Body> {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for (n, v) in headers {
            head.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let ext = parse_head(head).await.expect("parsed");
        let mut req = Request::new(crate::body::empty());
        for (n, v) in headers {
            req.headers_mut().append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        req.headers_mut()
            .insert("x-api-key", "real-key-value".parse().expect("value"));
        *req.extensions_mut() = ext;
        req
    }

    /// What the upstream client writes for `req`.
    async fn wire(req: &Request<Body>) -> String {
        String::from_utf8(write_head(req).await.expect("head")).expect("utf-8")
    }

    #[tokio::test]
    async fn the_configured_casing_and_the_clients_own_survive_a_kept_map() {
        let wanted = ["X-Api-Key".to_string()];
        let mut first = request(&[("Host", "a.test"), ("X-Trace", "1")]).await;
        set_header_case(&mut first, &wanted).await;
        let head = wire(&first).await;
        assert!(head.contains("\r\nX-Api-Key: real-key-value\r\n"), "{head}");
        assert!(head.contains("\r\nX-Trace: 1\r\n"), "{head}");

        // The same names spelled otherwise by the client: its spelling, not the kept one's.
        let mut other = request(&[("host", "a.test"), ("x-TRACE", "2")]).await;
        set_header_case(&mut other, &wanted).await;
        let head = wire(&other).await;
        assert!(head.contains("\r\nX-Api-Key: real-key-value\r\n"), "{head}");
        assert!(head.contains("\r\nx-TRACE: 2\r\n"), "{head}");

        // The first spelling again: the kept map, the same result.
        let mut again = request(&[("Host", "a.test"), ("X-Trace", "3")]).await;
        set_header_case(&mut again, &wanted).await;
        let head = wire(&again).await;
        assert!(head.contains("\r\nX-Api-Key: real-key-value\r\n"), "{head}");
        assert!(head.contains("\r\nX-Trace: 3\r\n"), "{head}");
        let kept = PARSED.with_borrow(|m| m.len());
        assert_eq!(kept, 2, "one map per spelling");
        // No value in a key.
        PARSED.with_borrow(|m| {
            assert!(m.keys().all(|k| !k.windows(4).any(|w| w == b"real")));
        });
    }

    /// A head of many names gets its casing, but its map is not kept (a workload's heads
    /// of distinct long names would otherwise hold megabytes per worker thread).
    #[tokio::test]
    async fn a_head_of_many_names_is_not_kept() {
        PARSED.with_borrow_mut(|m| m.clear());
        // 80 names of 32 bytes (hyper parses at most 100 fields).
        let names: Vec<String> = (0..80)
            .map(|i| format!("X-Long-Header-Name-Padding-{i:03}"))
            .collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        let mut req = request(&pairs).await;
        set_header_case(&mut req, &["X-Api-Key".to_string()]).await;
        let head = wire(&req).await;
        assert!(head.contains("\r\nX-Api-Key: real-key-value\r\n"), "{head}");
        assert!(
            head.contains("\r\nX-Long-Header-Name-Padding-079: v\r\n"),
            "{head}"
        );
        assert_eq!(PARSED.with_borrow(|m| m.len()), 0);
    }
}
