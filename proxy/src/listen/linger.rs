//! Lingering close for client connections.
//!
//! When the proxy ends a connection while the client is still sending (a
//! request body refused with 413 halfway, an error response before the body
//! was read), closing the socket with unread bytes in its receive queue makes
//! the kernel answer with a reset. The client's next `send` then fails, and it
//! may never read the response that explains why. So a connection the proxy
//! closes first is not closed at once: its write side is shut (the client
//! sees the end of the response), and what the client still sends is read
//! and thrown away until it closes too, or for at most [`LINGER_FOR`], like
//! nginx's `lingering_close`.
//!
//! A connection the client closed first (a read returned end of stream) has
//! nothing left to drain and is closed at once, which is the common case. So
//! is one whose reads failed (a reset, or a TLS client that closed its socket
//! without `close_notify`, as Python's `ssl` does): nothing more will arrive,
//! and no answer can reach the client any more. A connection whose write
//! side cannot be shut because the client has gone (`ENOTCONN`) is not
//! read from either.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The longest a closed connection keeps draining the client's bytes.
pub const LINGER_FOR: Duration = Duration::from_secs(10);
/// The longest it waits for the client's next bytes while draining.
const LINGER_QUIET: Duration = Duration::from_secs(2);

/// A client connection that drains before it closes; see the module docs.
pub struct Linger<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<I>,
    /// A read returned end of stream (the client is done sending) or failed
    /// (nothing more will arrive): there is nothing to drain.
    eof: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Linger<I> {
    /// Wraps `io`.
    pub fn new(io: I) -> Self {
        Linger {
            io: Some(io),
            eof: false,
        }
    }

    fn io(&mut self) -> Pin<&mut I> {
        Pin::new(
            self.io
                .as_mut()
                .expect("the stream is taken only when the wrapper drops"),
        )
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Linger<I> {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else {
            return;
        };
        if self.eof {
            return;
        }
        // Outside a runtime (a test dropping a stream), just close.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(drain(io));
        }
    }
}

/// Shuts `io`'s write side, then reads and discards until the peer closes,
/// goes quiet for [`LINGER_QUIET`], or [`LINGER_FOR`] has passed. Returns the
/// bytes thrown away.
pub async fn drain<I: AsyncRead + AsyncWrite + Unpin>(mut io: I) -> u64 {
    let until = tokio::time::Instant::now() + LINGER_FOR;
    // The shutdown flushes what is buffered (a TLS stream's close_notify):
    // a client that stops reading would hold it forever (session 47's
    // review), so it shares the bound.
    match tokio::time::timeout(LINGER_FOR, io.shutdown()).await {
        // The client has gone (it reset, or closed before our shutdown):
        // there is no one left to send anything.
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotConnected => return 0,
        Err(_) => return 0,
        Ok(_) => {}
    }
    let mut discarded = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let wait = until
            .saturating_duration_since(tokio::time::Instant::now())
            .min(LINGER_QUIET);
        match tokio::time::timeout(wait, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n as u64,
            // End of stream, an error, or time is up.
            _ => return discarded,
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Linger<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        let polled = self.io().poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if wanted && buf.filled().len() == before => self.eof = true,
            Poll::Ready(Err(_)) => self.eof = true,
            _ => {}
        }
        polled
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Linger<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
