//! Streaming uploads: the `STREAMING-*` payload modes a workload's SDK names
//! in `x-amz-content-sha256` (S3's aws-chunked bodies), and the body that
//! re-signs a signed one as it goes upstream.
//!
//! - `STREAMING-UNSIGNED-PAYLOAD-TRAILER` (boto3's default `put_object` over
//!   HTTPS): only the headers are signed; the body streams through untouched.
//! - `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: the chunk (and trailer)
//!   signatures are made again with the real key ([`chunked`]).
//! - anything else `STREAMING-*` (SigV4a's `STREAMING-AWS4-ECDSA-P256-SHA256-*`)
//!   is refused: it cannot be re-signed here.
//!
//! In every mode the literal is the payload hash of the header signature, and
//! the body is never buffered whole.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use super::chunked::{ChunkSigner, ChunkedError, Resigner};
use crate::body::{Body, BodyRefused, BoxError};

/// The audit reason of a signed aws-chunked body that cannot be re-signed.
pub const MALFORMED: &str = "aws_chunked_malformed";

const UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
const SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
const SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";

/// How the workload's `x-amz-content-sha256` says the body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Not a streaming upload: the body is hashed (or `UNSIGNED-PAYLOAD`).
    Plain,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: only the headers are signed.
    UnsignedTrailer,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: signed chunks, and a
    /// signed trailer when `trailer`.
    SignedChunks {
        /// The `-TRAILER` form.
        trailer: bool,
    },
}

impl Payload {
    /// The payload mode `headers` declare; `Err` with the value for a
    /// `STREAMING-*` mode that cannot be re-signed.
    pub fn of(headers: &HeaderMap) -> Result<Payload, String> {
        let Some(value) = headers.get("x-amz-content-sha256") else {
            return Ok(Payload::Plain);
        };
        let value = String::from_utf8_lossy(value.as_bytes());
        let value = value.trim();
        match value {
            UNSIGNED_TRAILER => Ok(Payload::UnsignedTrailer),
            SIGNED => Ok(Payload::SignedChunks { trailer: false }),
            SIGNED_TRAILER => Ok(Payload::SignedChunks { trailer: true }),
            v if v.starts_with("STREAMING-") => Err(v.chars().take(80).collect()),
            _ => Ok(Payload::Plain),
        }
    }

    /// True for the streaming modes (the body is not buffered).
    pub fn is_streaming(self) -> bool {
        self != Payload::Plain
    }

    /// The literal payload hash of the header signature.
    pub fn literal(self) -> Option<&'static str> {
        match self {
            Payload::Plain => None,
            Payload::UnsignedTrailer => Some(UNSIGNED_TRAILER),
            Payload::SignedChunks { trailer: false } => Some(SIGNED),
            Payload::SignedChunks { trailer: true } => Some(SIGNED_TRAILER),
        }
    }
}

/// `inner`, an aws-chunked body, with its signatures made again by `signer`.
/// A body whose framing does not parse fails with a [`BodyRefused`]
/// (`aws_chunked_malformed`), so the upstream never gets all of it.
pub fn resigned(
    inner: Body,
    signer: ChunkSigner,
    trailer: bool,
    decoded_length: Option<u64>,
) -> Body {
    crate::body::boxed(Resigned {
        inner,
        resigner: Resigner::new(signer, trailer, decoded_length),
        out: VecDeque::new(),
        http_trailers: None,
        ended: false,
    })
}

struct Resigned {
    inner: Body,
    resigner: Resigner,
    /// Re-signed bytes ready to go.
    out: VecDeque<Bytes>,
    /// HTTP trailers of the inner body, sent after the last data.
    http_trailers: Option<HeaderMap>,
    /// The inner body ended (or failed): nothing more is read from it.
    ended: bool,
}

fn refusal(e: ChunkedError) -> BoxError {
    Box::new(BodyRefused {
        by: "aws_auth",
        reason: MALFORMED,
        detail: format!("aws_auth cannot re-sign the aws-chunked body: {e}"),
    })
}

impl http_body::Body for Resigned {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.ended {
                return Poll::Ready(this.http_trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(e) = this.resigner.feed(&data, &mut this.out) {
                            this.ended = true;
                            this.out.clear();
                            this.http_trailers = None;
                            return Poll::Ready(Some(Err(refusal(e))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.http_trailers
                                .get_or_insert_with(HeaderMap::new)
                                .extend(t);
                        }
                    }
                },
                Some(Err(e)) => {
                    this.ended = true;
                    this.out.clear();
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.ended = true;
                    if let Err(e) = this.resigner.finish() {
                        this.out.clear();
                        this.http_trailers = None;
                        return Poll::Ready(Some(Err(refusal(e))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.out.is_empty() && self.http_trailers.is_none()
    }

    /// The same length as the inner body: signatures keep their length.
    fn size_hint(&self) -> SizeHint {
        if self.ended {
            let n = self.out.iter().map(|b| b.len() as u64).sum();
            return SizeHint::with_exact(n);
        }
        let held = (self.resigner.held() + self.out.iter().map(Bytes::len).sum::<usize>()) as u64;
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;
    use http_body_util::BodyExt as _;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-amz-content-sha256", value.parse().expect("value"));
        h
    }

    #[test]
    fn payload_modes() {
        assert_eq!(Payload::of(&HeaderMap::new()), Ok(Payload::Plain));
        assert_eq!(
            Payload::of(&headers("UNSIGNED-PAYLOAD")),
            Ok(Payload::Plain)
        );
        assert_eq!(Payload::of(&headers(&"ab".repeat(32))), Ok(Payload::Plain));
        assert_eq!(
            Payload::of(&headers("STREAMING-UNSIGNED-PAYLOAD-TRAILER")),
            Ok(Payload::UnsignedTrailer)
        );
        assert_eq!(
            Payload::of(&headers("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")),
            Ok(Payload::SignedChunks { trailer: false })
        );
        assert_eq!(
            Payload::of(&headers("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")),
            Ok(Payload::SignedChunks { trailer: true })
        );
        assert_eq!(
            Payload::of(&headers("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD")),
            Err("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD".to_string())
        );
        for p in [
            Payload::UnsignedTrailer,
            Payload::SignedChunks { trailer: false },
            Payload::SignedChunks { trailer: true },
        ] {
            let literal = p.literal().expect("streaming");
            assert_eq!(Payload::of(&headers(literal)), Ok(p));
            assert!(p.is_streaming());
        }
    }

    fn signer() -> ChunkSigner {
        ChunkSigner::new(
            "secret",
            std::time::UNIX_EPOCH,
            "us-east-1",
            "s3",
            "0".repeat(64),
        )
    }

    #[tokio::test]
    async fn a_malformed_body_fails_with_the_transforms_refusal() {
        let body = crate::body::full("5;chunk-signature=nope\r\nhello\r\n");
        let err = resigned(body, signer(), false, None)
            .collect()
            .await
            .expect_err("refused");
        let r = err.downcast_ref::<BodyRefused>().expect("a BodyRefused");
        assert_eq!((r.by, r.reason), ("aws_auth", MALFORMED));
        assert!(r.detail.contains("chunk header"), "{}", r.detail);
    }

    #[tokio::test]
    async fn a_body_keeps_its_length_and_its_http_trailers() {
        let sig = "a".repeat(64);
        let text = format!("5;chunk-signature={sig}\r\nhello\r\n0;chunk-signature={sig}\r\n\r\n");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-extra", "1".parse().expect("value"));
        let body = crate::body::with_trailers(Bytes::from(text.clone()), Some(trailers.clone()));
        let b = resigned(body, signer(), false, Some(5));
        assert_eq!(b.size_hint().exact(), Some(text.len() as u64));
        let c = b.collect().await.expect("re-signed");
        assert_eq!(c.trailers(), Some(&trailers));
        let out = c.to_bytes();
        assert_eq!(out.len(), text.len());
        assert!(out.starts_with(b"5;chunk-signature="), "{out:?}");
        assert!(!String::from_utf8_lossy(&out).contains(&sig));
    }
}
