//! A body that never ends, for tests that check how far the proxy pulls a
//! body whose other end takes nothing: 32 KiB chunks (the proxy reads
//! upstreams 32 KiB at a time), with a count of the bytes pulled so far.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;

/// The size of each chunk.
pub(crate) const CHUNK: usize = 32 * 1024;

/// An endless body of [`CHUNK`]-sized chunks; the counter it shares grows by
/// each chunk pulled.
pub(crate) struct Endless(pub Arc<AtomicUsize>);

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.fetch_add(CHUNK, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; CHUNK])))))
    }
}

/// Waits until `pulled` stops growing (it has not moved for 50 ms, after
/// at least one chunk), at most 5 s; returns the count then.
pub(crate) async fn settled(pulled: &AtomicUsize) -> usize {
    let mut last = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = pulled.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    pulled.load(Ordering::SeqCst)
}
