//! Body types used across the proxy: a boxed streaming body, and helpers to
//! buffer a body up to a cap without ever truncating silently.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Any error a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type every request and response inside the proxy uses.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body made of one chunk.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(|e| -> BoxError { e.into() }).boxed()
}

/// Why a body could not be buffered.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The body is larger than the cap; the caller answers 413 rather than truncating.
    #[error("body exceeds the {limit}-byte buffering limit")]
    TooLarge {
        /// The configured cap.
        limit: usize,
    },
    /// The peer failed while sending the body.
    #[error("reading body")]
    Read(#[source] BoxError),
}

/// Boxes a body received by hyper.
pub fn incoming(b: hyper::body::Incoming) -> Body {
    b.map_err(|e| -> BoxError { Box::new(e) }).boxed()
}

/// Buffers the whole body, failing with [`BufferError::TooLarge`] past `limit`
/// bytes (`0` means no limit).
pub async fn collect(mut body: Body, limit: usize) -> Result<Bytes, BufferError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BufferError::Read)?;
        if let Ok(data) = frame.into_data() {
            if limit != 0 && buf.len() + data.len() > limit {
                return Err(BufferError::TooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collect_refuses_past_limit() {
        assert_eq!(collect(full("hello"), 5).await.expect("fits"), "hello");
        assert!(matches!(
            collect(full("hello!"), 5).await,
            Err(BufferError::TooLarge { limit: 5 })
        ));
        assert_eq!(
            collect(full("hello!"), 0).await.expect("unlimited"),
            "hello!"
        );
    }
}
