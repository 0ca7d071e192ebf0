//! HTTP/2 uploads the exchange lets go of before their end: parked, then read
//! out before the response's end instead of reset (see [`BodyPark`]).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::BodyExt;

use super::{Body, BoxError, ClientBodyError};

/// What becomes of an HTTP/2 request body that the exchange lets go of before
/// the client has sent all of it: it is read to its end (and thrown away),
/// for a while, so that the stream ends cleanly instead of being reset.
///
/// Dropping an HTTP/2 request body mid-stream makes h2 reset the stream once
/// the response has been sent (RST_STREAM NO_ERROR, which RFC 9113 §8.1 gives
/// a server that answered early to stop the upload). Clients still uploading
/// then lose the answer, against that RFC: libcurl before 8 (curl 7.88 in
/// Debian 12, so git there) fails the transfer ("Stream error in the HTTP/2
/// framing layer"; git: "RPC failed; curl 92", then "Everything up-to-date"),
/// and httpx's HTTP/2 waits for flow-control credit until it times out. And a
/// response that ends while the client is still sending fails in undici's
/// HTTP/2 ("stream half-closed (remote)"). So the response's end (its last
/// frame, which carries END_STREAM) waits until the upload has been read out.
/// The exchange lets go of an unfinished body when it answers a request
/// itself (a refusal) and when the upstream client drops it (the upstream
/// answered, or failed, before reading it all).
///
/// A body from [`from_client_parked`] moves into its park when dropped before
/// its end. [`answer_after_upload`] wraps the response body: at the response's
/// end (unless trailers end it), a parked body is read first (up to
/// [`LINGER_TIME`] and [`LINGER_BYTES`], then dropped). [`Answered`] (held by
/// the response body) marks the response sent when it drops; a body parked
/// after that is read on its own task, within the same limits. An upload the
/// upstream client lets go of only after the upstream's response has ended
/// is thus read after the end: undici's HTTP/2 still fails on that one.
///
/// It also tells the exchange's record whether the upload was read to its
/// end ([`BodyPark::upload_ended`]): a client that resets its stream before
/// that left its request body incomplete (`client_body_error`).
#[derive(Clone, Default)]
pub struct BodyPark(Arc<ParkState>);

#[derive(Default)]
struct ParkState {
    park: Mutex<Park>,
    /// The upload's end (or its trailers) was read.
    ended: AtomicBool,
}

#[derive(Default)]
enum Park {
    /// The response is not sent yet: a body let go of waits here.
    #[default]
    Waiting,
    Parked(hyper::body::Incoming),
    /// The response has been sent.
    Answered,
}

/// How long the rest of an upload is read after the response was sent.
pub const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(30);
/// How much of the rest of an upload is read after the response was sent.
pub const LINGER_BYTES: usize = 64 << 20;

impl std::fmt::Debug for BodyPark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyPark")
    }
}

impl BodyPark {
    /// The guard the response body holds: dropping it marks the response sent.
    pub fn answered_on_drop(&self) -> Answered {
        Answered(self.clone())
    }

    /// True once the proxy has read the upload to its end.
    pub fn upload_ended(&self) -> bool {
        self.0.ended.load(Ordering::Relaxed)
    }

    /// Marks the upload read to its end (as reading it does).
    #[cfg(test)]
    pub(crate) fn mark_upload_ended(&self) {
        self.0.ended.store(true, Ordering::Relaxed);
    }

    /// The body parked so far, if any.
    fn take_parked(&self) -> Option<hyper::body::Incoming> {
        let mut park = self.0.park.lock().ok()?;
        match std::mem::take(&mut *park) {
            Park::Parked(b) => Some(b),
            other => {
                *park = other;
                None
            }
        }
    }

    /// Whether a body is parked.
    fn has_parked(&self) -> bool {
        self.0
            .park
            .lock()
            .is_ok_and(|park| matches!(*park, Park::Parked(_)))
    }

    /// Keeps `b` until the response is sent, or reads it out now if it was.
    fn park(&self, b: hyper::body::Incoming) {
        // A poisoned lock only means a holder panicked: the body is then
        // dropped here (reset), as it was before parking existed.
        let Ok(mut park) = self.0.park.lock() else {
            return;
        };
        match *park {
            Park::Answered => {
                drop(park);
                linger(b);
            }
            _ => *park = Park::Parked(b),
        }
    }
}

/// Marks the response of a [`BodyPark`] sent when dropped.
pub struct Answered(BodyPark);

impl Drop for Answered {
    fn drop(&mut self) {
        let Ok(mut park) = self.0 .0.park.lock() else {
            return;
        };
        if let Park::Parked(b) = std::mem::replace(&mut *park, Park::Answered) {
            drop(park);
            linger(b);
        }
    }
}

/// A response body whose end waits until a request body parked in `park` has
/// been read out (see [`BodyPark`]).
pub fn answer_after_upload(inner: Body, park: BodyPark) -> Body {
    AnswerAfterUpload {
        inner,
        park,
        upload: None,
        last: None,
    }
    .boxed()
}

/// See [`answer_after_upload`].
struct AnswerAfterUpload {
    inner: Body,
    park: BodyPark,
    /// The parked upload being read, what was read of it, and until when.
    upload: Option<(hyper::body::Incoming, usize, Pin<Box<tokio::time::Sleep>>)>,
    /// The response's end, held while reading.
    last: Option<Option<Result<http_body::Frame<Bytes>, BoxError>>>,
}

impl http_body::Body for AnswerAfterUpload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some((upload, read, until)) = this.upload.as_mut() {
                // Giving up drops the body: h2 resets the stream (NO_ERROR)
                // once the response has ended, as without this wrapper.
                match Pin::new(upload).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        *read += frame.data_ref().map_or(0, Bytes::len);
                        if *read <= LINGER_BYTES {
                            continue;
                        }
                    }
                    Poll::Ready(_) => {}
                    Poll::Pending => {
                        if until.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                }
                this.upload = None;
            }
            if let Some(last) = this.last.take() {
                return Poll::Ready(last);
            }
            // Only an end without trailers is held. Trailers end a gRPC call:
            // its client may stream until it sees them, so holding them for
            // the upload to end could hold them for the whole LINGER_TIME; a
            // body parked by then is read after them instead (`Answered`).
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => None,
                other => return other,
            };
            match this.park.take_parked() {
                Some(b) => {
                    let until = Box::pin(tokio::time::sleep(LINGER_TIME));
                    this.upload = Some((b, 0, until));
                    this.last = Some(frame);
                }
                None => return Poll::Ready(frame),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upload.is_none()
            && self.last.is_none()
            && self.inner.is_end_stream()
            && !self.park.has_parked()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The largest response body [`gather_small`] reads before the head goes out.
pub const GATHER_BYTES: u64 = 64 << 10;
/// How long [`gather_small`] waits for that body.
pub const GATHER_TIME: std::time::Duration = std::time::Duration::from_millis(500);

/// A response that came while its HTTP/2 upload is still arriving, with a
/// small body (a known length of at most [`GATHER_BYTES`]) read first, for at
/// most [`GATHER_TIME`], so that hyper sends the body with the head instead
/// of after it. A client that gives up its upload on such an answer may end
/// its stream short of its `content-length` (curl does on a 401: END_STREAM
/// on an empty DATA frame); h2 resets that malformed stream at once (RFC 9113
/// §8.1.1, PROTOCOL_ERROR), and a body not yet sent by then never reaches
/// the client (curl: "stream 1 was not closed cleanly: PROTOCOL_ERROR",
/// exit 92). Frames are read, not the end: the body's end, which writes the
/// record and which [`answer_after_upload`] holds, comes as before.
pub async fn gather_small(mut body: Body) -> Body {
    let Some(len) = body.size_hint().exact() else {
        return body;
    };
    if len == 0 || len > GATHER_BYTES {
        return body;
    }
    let mut frames = std::collections::VecDeque::new();
    let mut got = 0;
    let _ = tokio::time::timeout(GATHER_TIME, async {
        while got < len {
            match body.frame().await {
                Some(Ok(frame)) => {
                    got += frame.data_ref().map_or(0, |d| d.len() as u64);
                    frames.push_back(Ok(frame));
                }
                Some(Err(e)) => {
                    frames.push_back(Err(e));
                    break;
                }
                None => break,
            }
        }
    })
    .await;
    if frames.is_empty() {
        return body;
    }
    super::Prefixed {
        ahead: frames,
        rest: Some(body),
    }
    .boxed()
}

/// Reads what is left of an answered upload on its own task (see
/// [`BodyPark`]); without a runtime, drops it.
fn linger(mut b: hyper::body::Incoming) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut read = 0;
        let _ = tokio::time::timeout(LINGER_TIME, async {
            while let Some(Ok(frame)) = b.frame().await {
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                    if read > LINGER_BYTES {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

/// Like [`from_client`], for a body that goes to `park` when dropped before
/// its end (see [`BodyPark`]).
pub fn from_client_parked(b: hyper::body::Incoming, park: BodyPark) -> Body {
    super::CleanTrailers::new(Parked {
        inner: Some(b),
        park,
    })
    .map_err(|e| -> BoxError { Box::new(ClientBodyError(e)) })
    .boxed()
}

/// A client's request body that parks itself when dropped unfinished.
struct Parked {
    inner: Option<hyper::body::Incoming>,
    park: BodyPark,
}

impl http_body::Body for Parked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(b) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let res = Pin::new(&mut *b).poll_frame(cx);
        let ended = match &res {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(f))) => f.is_trailers() || b.is_end_stream(),
            _ => false,
        };
        if ended {
            this.park.0.ended.store(true, Ordering::Relaxed);
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some(b) = self.inner.take().filter(|b| !b.is_end_stream()) {
            self.park.park(b);
        }
    }
}
