//! Sends the MITM server's TLS 1.3 NewSessionTicket with the first response
//! instead of on its own.
//!
//! A TLS 1.3 server sends its session ticket after it reads the client's
//! Finished, and tokio-rustls flushes it as soon as the handshake is done:
//! one `writev` and one wake-up of the client for about 250 bytes the client
//! never waits for (clients send their request right behind their Finished,
//! and store the ticket whenever it comes). [`TicketHold`], the IO under the
//! client-facing TLS stream, keeps those bytes back during the handshake
//! and writes them in front of the next bytes the proxy sends: the response,
//! an HTTP/2 SETTINGS frame or the close_notify. One system call per new
//! connection less (docs/benchmarks.md, round 9).
//!
//! What it holds, exactly: while holding (the handshake, until
//! [`TicketHold::release`]), a write that starts with an application-data
//! record (type 23) after the client has sent one. In TLS 1.3 the client's
//! first encrypted record is its Finished, which it can send only after
//! reading the server's whole flight, so what the server writes after it is
//! post-handshake: the ticket (or an alert). TLS 1.2 handshakes send no
//! application-data record at all, so nothing is held. A client that sends
//! encrypted records before the server's flight (0-RTT data, which our
//! tickets never allow) is at worst delayed by its own bytes.
//!
//! Held bytes are exempt from `poll_flush`: hyper flushes after reading a
//! request, before the response exists, and flushing there would send the
//! ticket alone again. They leave with the next write or with
//! `poll_shutdown`; a connection dropped before either never sends its
//! ticket, which costs the client nothing but a later resumption.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// TLS record content type of application data (and of every encrypted
/// TLS 1.3 record).
const APPLICATION_DATA: u8 = 23;
/// TLS record header: type, version (2), length (2).
const HEADER: usize = 5;
/// The most slices one write passes down (hyper and rustls use at most 64).
const MAX_SLICES: usize = 64;

/// Follows record boundaries in the bytes the client sends during the
/// handshake, to notice its first encrypted record.
#[derive(Debug, Default)]
struct ClientRecords {
    header: [u8; HEADER],
    header_len: usize,
    body_left: usize,
    encrypted_seen: bool,
}

impl ClientRecords {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.encrypted_seen {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == HEADER {
                self.encrypted_seen = self.header[0] == APPLICATION_DATA;
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                self.header_len = 0;
            }
        }
    }
}

/// The IO under a client-facing TLS server stream; see the module docs.
#[derive(Debug)]
pub struct TicketHold<T> {
    inner: T,
    holding: bool,
    client: ClientRecords,
    /// Held bytes; `held[sent..]` is still to go.
    held: Vec<u8>,
    sent: usize,
}

impl<T> TicketHold<T> {
    /// Wraps `inner`, holding from the start (wrap before the handshake).
    pub fn new(inner: T) -> Self {
        TicketHold {
            inner,
            holding: true,
            client: ClientRecords::default(),
            held: Vec::new(),
            sent: 0,
        }
    }

    /// Ends holding: call when the handshake is done. Bytes already held go
    /// out in front of the next write (or at shutdown).
    pub fn release(&mut self) {
        self.holding = false;
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// How many held bytes are waiting.
    pub fn held(&self) -> usize {
        self.held.len() - self.sent
    }

    fn holds(&self, bufs: &[IoSlice<'_>]) -> bool {
        self.holding
            && self.client.encrypted_seen
            && bufs.iter().find(|b| !b.is_empty()).map(|b| b[0]) == Some(APPLICATION_DATA)
    }
}

impl<T: AsyncWrite + Unpin> TicketHold<T> {
    /// Writes held bytes and then as much of `bufs` as the IO takes, in one
    /// vectored write where the IO supports it. Returns how many bytes of
    /// `bufs` were written.
    fn poll_write_after_held(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            let held = self.held.len() - self.sent;
            if held == 0 {
                self.held = Vec::new();
                self.sent = 0;
                return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            slices[0] = IoSlice::new(&self.held[self.sent..]);
            let more = bufs.len().min(MAX_SLICES - 1);
            slices[1..=more].copy_from_slice(&bufs[..more]);
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..=more]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n > held {
                self.held = Vec::new();
                self.sent = 0;
                return Poll::Ready(Ok(n - held));
            }
            // Only (part of) the held bytes went: try again, so the caller's
            // bytes are either written or waiting on the IO's readiness.
            self.sent += n;
        }
    }

    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TicketHold<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.holding || this.client.encrypted_seen {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.client.feed(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TicketHold<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holds(bufs) {
            let before = this.held.len();
            for b in bufs {
                this.held.extend_from_slice(b);
            }
            return Poll::Ready(Ok(this.held.len() - before));
        }
        if this.sent == this.held.len() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        this.poll_write_after_held(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Held bytes stay held: see the module docs.
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
