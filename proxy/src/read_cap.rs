//! Reads of at most [`READ_CAP`] bytes, so that hyper's read buffers stay
//! small.
//!
//! hyper's HTTP/1 read buffer grows (doubling, up to about 400 KiB) whenever
//! a read fills it, and keeps that capacity for the connection's life, idle
//! ones included: 128 KiB or more per connection after 64 KiB bodies. With
//! reads of at most 32 KiB it stops at 64 KiB. 16 KiB would save more memory
//! but costs CPU on large bodies: smaller chunks mean more writes on the
//! other side (docs/benchmarks.md, round 7). A message head may still be as
//! large as hyper allows: it accumulates over reads.
//!
//! Upstream streams ([`crate::upstream::dial::Stream`]) cap their reads with
//! [`poll_read_capped`]; client connections are wrapped in [`ReadCap`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read returns: two TLS records' plaintext.
pub const READ_CAP: usize = 32 * 1024;

/// Reads from `inner` into at most [`READ_CAP`] bytes of `buf`.
pub fn poll_read_capped<R: AsyncRead + ?Sized>(
    inner: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if buf.remaining() <= READ_CAP {
        return inner.poll_read(cx, buf);
    }
    let mut capped = buf.take(READ_CAP);
    std::task::ready!(inner.poll_read(cx, &mut capped))?;
    let n = capped.filled().len();
    // SAFETY: `capped` views the start of `buf`'s unfilled part, and the read
    // initialized its first `n` bytes.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Poll::Ready(Ok(()))
}

/// An IO whose reads return at most [`READ_CAP`] bytes; writes pass
/// through unchanged.
pub struct ReadCap<T>(T);

impl<T> ReadCap<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        ReadCap(inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadCap<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_capped(Pin::new(&mut self.get_mut().0), cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadCap<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the far end, and our end wrapped in [`ReadCap`].
    async fn pair() -> (TcpStream, ReadCap<TcpStream>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(l.local_addr().unwrap());
        let (near, far) = tokio::join!(near, l.accept());
        (far.unwrap().0, ReadCap::new(near.unwrap()))
    }

    #[tokio::test]
    async fn one_read_returns_at_most_the_cap_and_nothing_is_lost() {
        let (mut far, mut near) = pair().await;
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        far.write_all(&sent).await.unwrap();
        far.shutdown().await.unwrap();
        // Wait until the kernel holds all of it, so a read could take more
        // than the cap.
        tokio::time::sleep(Duration::from_millis(50)).await;

        let mut big = vec![0u8; 64 * 1024];
        let n = near.read(&mut big).await.unwrap();
        assert_eq!(n, READ_CAP, "a 64 KiB buffer gets one capped read");
        let mut got = big[..n].to_vec();
        near.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes differ");
    }

    #[tokio::test]
    async fn a_small_buffer_is_filled_as_usual_and_writes_pass_through() {
        let (mut far, mut near) = pair().await;
        far.write_all(&[7u8; 3000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut small = [0u8; 1000];
        assert_eq!(near.read(&mut small).await.unwrap(), 1000);
        assert!(small.iter().all(|&b| b == 7));

        near.write_all(b"pong").await.unwrap();
        near.shutdown().await.unwrap();
        let mut back = Vec::new();
        far.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong");
    }
}
