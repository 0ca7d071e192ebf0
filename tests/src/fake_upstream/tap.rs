//! A read tap that recovers HTTP/1 header names with the casing the client sent.
//!
//! hyper keeps the original casing only in a crate-private extension, so the fake upstream
//! parses request heads itself as bytes flow in: it follows message framing (Content-Length,
//! chunked) to find each head on a keep-alive connection and queues what it saw. The service
//! pops one head per HTTP/1 request, in order. HTTP/2 prefaces, upgrades and anything it does
//! not understand switch the tap off; the echo then falls back to hyper's lowercase names.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One request head as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawHead {
    /// Request method.
    pub method: String,
    /// Request target.
    pub target: String,
    /// Header fields in order, names in their original case.
    pub headers: Vec<(String, String)>,
}

/// Heads parsed on one connection, waiting for the service to claim them.
pub type HeadQueue = Arc<Mutex<VecDeque<RawHead>>>;

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    Trailers,
    Off,
}

/// Wraps a connection's IO; every byte read also feeds the head parser.
#[derive(Debug)]
pub struct Tap<IO> {
    io: IO,
    buf: Vec<u8>,
    state: State,
    heads: HeadQueue,
}

impl<IO> Tap<IO> {
    /// Taps `io`, queueing heads into `heads`.
    pub fn new(io: IO, heads: HeadQueue) -> Self {
        Self {
            io,
            buf: Vec::new(),
            state: State::Head,
            heads,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if matches!(self.state, State::Off) {
            return;
        }
        self.buf.extend_from_slice(data);
        while self.step() {}
        if matches!(self.state, State::Off) || self.buf.len() > 256 * 1024 {
            self.state = State::Off;
            self.buf = Vec::new();
        }
    }

    /// Advances the state machine once; false when it needs more bytes.
    fn step(&mut self) -> bool {
        match self.state {
            State::Off => false,
            State::Head => self.head(),
            State::Body(rem) | State::ChunkData(rem) => {
                if self.buf.is_empty() {
                    return false;
                }
                let take = usize::try_from(rem)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                self.buf.drain(..take);
                let left = rem - take as u64;
                self.state = match (&self.state, left) {
                    (State::Body(_), 0) => State::Head,
                    (State::Body(_), n) => State::Body(n),
                    (_, 0) => State::ChunkSize,
                    (_, n) => State::ChunkData(n),
                };
                true
            }
            State::ChunkSize => {
                let Some(line) = self.take_line() else {
                    return false;
                };
                let hex = line.split(';').next().unwrap_or("").trim();
                self.state = match u64::from_str_radix(hex, 16) {
                    Ok(0) => State::Trailers,
                    Ok(n) => State::ChunkData(n.saturating_add(2)),
                    Err(_) => State::Off,
                };
                true
            }
            State::Trailers => {
                let Some(line) = self.take_line() else {
                    return false;
                };
                if line.is_empty() {
                    self.state = State::Head;
                }
                true
            }
        }
    }

    fn take_line(&mut self) -> Option<String> {
        let end = self.buf.windows(2).position(|w| w == b"\r\n")?;
        let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 2);
        Some(line)
    }

    fn head(&mut self) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        if b"PRI * HTTP/2.0".starts_with(&self.buf[..self.buf.len().min(14)]) {
            // An HTTP/2 preface (or the start of one): nothing for us here.
            if self.buf.len() >= 3 {
                self.state = State::Off;
            }
            return false;
        }
        let mut fields = vec![httparse::EMPTY_HEADER; super::MAX_HEADERS];
        let mut req = httparse::Request::new(&mut fields);
        let n = match req.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return false,
            Err(_) => {
                self.state = State::Off;
                return false;
            }
        };
        let head = RawHead {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_string(), value)
                })
                .collect(),
        };
        let find = |name: &str| {
            head.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let chunked = find("transfer-encoding")
            .iter()
            .any(|v| v.contains("chunked"));
        let length = find("content-length")
            .first()
            .and_then(|v| v.trim().parse().ok());
        let upgrade = !find("upgrade").is_empty() || head.method == "CONNECT";
        self.state = if upgrade {
            State::Off
        } else if chunked {
            State::ChunkSize
        } else {
            match length {
                Some(0) | None => State::Head,
                Some(n) => State::Body(n),
            }
        };
        self.buf.drain(..n);
        self.heads.lock().expect("head queue lock").push_back(head);
        true
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tap<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let fresh = buf.filled()[before..].to_vec();
            self.feed(&fresh);
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tap<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap() -> Tap<()> {
        Tap::new((), HeadQueue::default())
    }

    fn names(t: &Tap<()>) -> Vec<Vec<String>> {
        let q = t.heads.lock().expect("lock");
        q.iter()
            .map(|h| h.headers.iter().map(|(k, _)| k.clone()).collect())
            .collect()
    }

    #[test]
    fn keeps_case_across_keep_alive_bodies_and_split_reads() {
        let mut t = tap();
        let wire = b"POST /a HTTP/1.1\r\nHost: x\r\nX-Mixed-Case: 1\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHOST: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nTrailer-A: 1\r\n\r\n\
GET /c HTTP/1.1\r\nhost: x\r\n\r\n";
        for chunk in wire.chunks(7) {
            t.feed(chunk);
        }
        assert_eq!(
            names(&t),
            vec![
                vec!["Host", "X-Mixed-Case", "Content-Length"],
                vec!["HOST", "Transfer-Encoding"],
                vec!["host"],
            ]
        );
        let q = t.heads.lock().expect("lock");
        assert_eq!(q[1].target, "/b");
    }

    #[test]
    fn turns_off_for_http2_and_upgrades() {
        let mut t = tap();
        t.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(matches!(t.state, State::Off));
        let mut t = tap();
        t.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
        assert!(matches!(t.state, State::Off));
        assert_eq!(names(&t).len(), 1);
    }
}
