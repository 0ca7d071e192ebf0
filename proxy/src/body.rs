//! Body types used across the proxy: a boxed streaming body, and helpers to
//! buffer a body up to a cap without ever truncating silently.

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

pub mod budget;
pub mod decode;
mod park;

pub use park::{
    answer_after_upload, from_client_parked, gather_small, Answered, BodyPark, GATHER_BYTES,
    GATHER_TIME, LINGER_BYTES, LINGER_TIME,
};

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
    /// The peer sent nothing of the body for this long.
    #[error("no body bytes for {0:?}")]
    Idle(std::time::Duration),
    /// Holding the body would exceed `proxy.max_buffered_bytes`.
    #[error(transparent)]
    Budget(#[from] budget::Exhausted),
}

/// Boxes a body received by hyper.
pub fn incoming(b: hyper::body::Incoming) -> Body {
    CleanTrailers::new(b)
        .map_err(|e| -> BoxError { Box::new(e) })
        .boxed()
}

/// Fields a trailer section may not carry (RFC 9110 §6.5.1: framing,
/// routing and connection control; RFC 9113 §8.2.2: connection-specific
/// fields are malformed in HTTP/2). Passed on, an HTTP/2 peer resets the
/// stream or the connection, and an HTTP/1 peer may reframe the message.
static FORBIDDEN_TRAILERS: [http::header::HeaderName; 10] = [
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
    http::header::HeaderName::from_static("keep-alive"),
    http::header::HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::UPGRADE,
    http::header::HOST,
    http::header::TRAILER,
    http::header::CONTENT_ENCODING,
];

pin_project_lite::pin_project! {
    /// A body whose trailers lose the fields a trailer section may not
    /// carry (or, with `drop_all`, the whole trailer section); everything
    /// else (its size hint above all: a request's `Content-Length` is read
    /// from it) as the inner body has it. Not `map_frame`, which cannot
    /// know the mapped size and reports none.
    pub(crate) struct CleanTrailers<B> {
        #[pin]
        inner: B,
        drop_all: bool,
    }
}

impl<B> CleanTrailers<B> {
    pub(crate) fn new(inner: B) -> Self {
        CleanTrailers {
            inner,
            drop_all: false,
        }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for CleanTrailers<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        loop {
            let mut res = inner.as_mut().poll_frame(cx);
            if let std::task::Poll::Ready(Some(Ok(frame))) = &mut res {
                if let Some(t) = frame.trailers_mut() {
                    if *this.drop_all {
                        continue;
                    }
                    for name in &FORBIDDEN_TRAILERS {
                        t.remove(name);
                    }
                }
            }
            return res;
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `b` without its trailers: a request whose headers the proxy vouches for
/// (a credential it set, headers a `header_allowlist` filtered) carries no
/// fields from the client after them, where the transforms never looked (a
/// trailer beside an injected header, one the allowlist would have removed).
/// RFC 9110 §6.5.1 lets a recipient discard trailer fields.
pub fn without_trailers(b: Body) -> Body {
    CleanTrailers {
        inner: b,
        drop_all: true,
    }
    .boxed()
}

/// A failure of the client's request body (a malformed chunk, a connection
/// or stream the client ended mid-body), kept apart from the upstream's
/// failures so that it is audited as the client's fault, whoever reads it.
/// The cause is the source only (not repeated in the message), so that
/// [`crate::error_chain`] names it once.
#[derive(Debug, thiserror::Error)]
#[error("client request body")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// A body a transform cut on purpose, mid-stream, because the rest could not
/// be passed on safely: a request body `aws_auth` re-signs as it streams (a
/// malformed aws-chunked upload: the upstream never receives a complete
/// request, and the exchange is audited as that transform's rejection, 400),
/// or a response `mcp` could not filter (audited with `reason` rather than
/// `upstream_body_error`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct BodyRefused {
    /// The transform that refused (`rejected_by` for a request body).
    pub by: &'static str,
    /// The audit `reason`.
    pub reason: &'static str,
    /// What was wrong with the body; never a secret.
    pub detail: String,
}

/// Boxes a request body received from a client; its errors are
/// [`ClientBodyError`]s.
pub fn from_client(b: hyper::body::Incoming) -> Body {
    CleanTrailers::new(b)
        .map_err(|e| -> BoxError { Box::new(ClientBodyError(e)) })
        .boxed()
}

/// Buffers the whole body's data, failing with [`BufferError::TooLarge`] past
/// `limit` bytes (`0` means no limit). Trailers are dropped: use
/// [`collect_all`] where the body goes on.
pub async fn collect(body: Body, limit: usize) -> Result<Bytes, BufferError> {
    collect_all(body, limit).await.map(|c| c.bytes)
}

/// A whole body, buffered.
pub struct Collected {
    /// Its data.
    pub bytes: Bytes,
    /// Its trailers (gRPC's `grpc-status`, for one), if it had any.
    pub trailers: Option<http::HeaderMap>,
}

/// Buffers the whole body, data and trailers, failing with
/// [`BufferError::TooLarge`] past `limit` bytes of data (`0`: no limit).
pub async fn collect_all(body: Body, limit: usize) -> Result<Collected, BufferError> {
    collect_all_within(body, limit, None, None).await
}

/// [`collect_all`], failing with [`BufferError::Idle`] when the body yields
/// nothing for `idle` (a client that declared a body and stalls must not
/// hold its connection and buffer forever), and with
/// [`BufferError::Budget`] when `hold` cannot count a chunk read.
pub async fn collect_all_within(
    mut body: Body,
    limit: usize,
    idle: Option<std::time::Duration>,
    mut hold: Option<&mut budget::Hold>,
) -> Result<Collected, BufferError> {
    let mut buf = bytes::BytesMut::new();
    let mut trailers: Option<http::HeaderMap> = None;
    loop {
        let next = match idle {
            Some(d) => tokio::time::timeout(d, body.frame())
                .await
                .map_err(|_| BufferError::Idle(d))?,
            None => body.frame().await,
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(BufferError::Read)?;
        match frame.into_data() {
            Ok(data) => {
                if limit != 0 && buf.len() + data.len() > limit {
                    return Err(BufferError::TooLarge { limit });
                }
                if let Some(h) = hold.as_deref_mut() {
                    h.grow(data.len())?;
                }
                buf.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(http::HeaderMap::new).extend(t);
                }
            }
        }
    }
    Ok(Collected {
        bytes: buf.freeze(),
        trailers,
    })
}

pin_project_lite::pin_project! {
    /// A body that keeps its bytes counted in the buffering budget until it
    /// is dropped (sent, or abandoned).
    struct Counted {
        #[pin]
        inner: Body,
        hold: budget::Hold,
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, holding `hold` until it is dropped; `body` as it is when the hold
/// counts nothing.
pub fn counted(body: Body, hold: budget::Hold) -> Body {
    if hold.bytes() == 0 {
        return body;
    }
    Counted { inner: body, hold }.boxed()
}

/// A body of `bytes` followed by `trailers` (when there are any).
pub fn with_trailers(bytes: Bytes, trailers: Option<http::HeaderMap>) -> Body {
    match trailers {
        None => full(bytes),
        Some(t) => Prefixed::new(bytes, Some(t), None).boxed(),
    }
}

/// The start of a body, read for inspection, and what follows it.
pub struct Prefix {
    /// The bytes read: at least the amount asked for, unless the body ended.
    pub bytes: Bytes,
    /// The whole body again, to send on: `bytes` first, then the rest (the
    /// unread data and any trailers). Nothing read is lost.
    pub body: Body,
    /// Whether `bytes` is the whole body's data.
    pub complete: bool,
}

/// How long [`read_prefix`] waits for more of a body whose length is not
/// declared before it settles for what it has: a streaming request (a gRPC
/// stream, say) may send a little and then wait for the answer.
pub const PREFIX_IDLE: std::time::Duration = std::time::Duration::from_millis(250);

/// Reads the first `want` bytes of `body` (more when a chunk runs past them;
/// fewer when the body ends first, or when its length is not declared and
/// nothing more arrives within `idle`) without consuming the rest. A body
/// whose length is declared and that sends nothing for `stall` is an error
/// ([`BufferError::Idle`]): it owes those bytes.
pub async fn read_prefix(
    mut body: Body,
    want: usize,
    idle: std::time::Duration,
    stall: std::time::Duration,
) -> Result<Prefix, BufferError> {
    let mut buf = bytes::BytesMut::new();
    let mut trailers = None;
    let mut ended = false;
    // A declared length will arrive; an undeclared one may be a stream that
    // waits for the answer.
    let declared = body.size_hint().exact().is_some();
    while buf.len() < want.max(1) {
        let next = if declared {
            tokio::time::timeout(stall, body.frame())
                .await
                .map_err(|_| BufferError::Idle(stall))?
        } else {
            match tokio::time::timeout(idle, body.frame()).await {
                Ok(f) => f,
                Err(_) => break,
            }
        };
        match next {
            None => {
                ended = true;
                break;
            }
            Some(frame) => match frame.map_err(BufferError::Read)?.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                // Trailers end the data; they go on after it.
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    ended = true;
                    break;
                }
            },
        }
    }
    let bytes = buf.freeze();
    let complete = ended || body.is_end_stream();
    let rest = if ended { None } else { Some(body) };
    let body = Prefixed::new(bytes.clone(), trailers, rest);
    Ok(Prefix {
        bytes,
        body: body.boxed(),
        complete,
    })
}

/// A body that yields the frames in `ahead` (read from the body already, or
/// made here), then those of `rest`.
struct Prefixed {
    ahead: std::collections::VecDeque<Result<http_body::Frame<Bytes>, BoxError>>,
    rest: Option<Body>,
}

impl Prefixed {
    /// `first` (when not empty), then `trailers` (when there are any), then `rest`.
    fn new(first: Bytes, trailers: Option<http::HeaderMap>, rest: Option<Body>) -> Self {
        let ahead = (!first.is_empty())
            .then(|| http_body::Frame::data(first))
            .into_iter()
            .chain(trailers.map(http_body::Frame::trailers))
            .map(Ok)
            .collect();
        Prefixed { ahead, rest }
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.ahead.pop_front() {
            return std::task::Poll::Ready(Some(frame));
        }
        match self.rest.as_mut() {
            Some(rest) => std::pin::Pin::new(rest).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let ahead: u64 = self
            .ahead
            .iter()
            .filter_map(|f| f.as_ref().ok()?.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = match &self.rest {
            Some(r) => r.size_hint(),
            None => http_body::SizeHint::with_exact(0),
        };
        // Upper first: set_lower refuses a lower bound above the upper one.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + ahead);
        }
        hint.set_lower(hint.lower() + ahead);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stall limit no test reaches.
    const LONG: std::time::Duration = std::time::Duration::from_secs(3600);

    #[tokio::test]
    async fn clean_trailers_keep_the_size_and_lose_forbidden_fields() {
        let mut t = http::HeaderMap::new();
        t.insert("x-trailer-check", "done".parse().expect("value"));
        t.insert(http::header::CONTENT_LENGTH, "5".parse().expect("value"));
        t.insert(http::header::CONNECTION, "close".parse().expect("value"));
        // Data, then the trailers.
        let inner = Full::new(Bytes::from_static(b"abc")).with_trailers(async { Some(Ok(t)) });
        let sized = Full::new(Bytes::from_static(b"abc"));
        assert_eq!(CleanTrailers::new(sized).size_hint().exact(), Some(3));
        let collected = CleanTrailers::new(inner).collect().await.expect("body");
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers.len(), 1, "{trailers:?}");
        assert_eq!(trailers["x-trailer-check"], "done");
    }

    #[tokio::test]
    async fn dropped_trailers_keep_the_data_and_the_size() {
        let mut t = http::HeaderMap::new();
        t.insert("x-inj", "client-chosen".parse().expect("value"));
        t.insert("cookie", "session=abc".parse().expect("value"));
        let inner = Full::new(Bytes::from_static(b"hello"))
            .with_trailers(async { Some(Ok(t)) })
            .map_err(|e: std::convert::Infallible| -> BoxError { match e {} })
            .boxed();
        let collected = without_trailers(inner).collect().await.expect("body");
        assert!(collected.trailers().is_none(), "no trailers");
        assert_eq!(collected.to_bytes(), "hello");
        let sized = full(Bytes::from_static(b"abc"));
        assert_eq!(without_trailers(sized).size_hint().exact(), Some(3));
    }

    /// A body that declares `declared` bytes, sends `sent`, and then nothing.
    fn stalled(declared: u64, sent: &'static str) -> Body {
        struct Stalled(Option<Bytes>, u64);
        impl http_body::Body for Stalled {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
                match self.0.take() {
                    Some(b) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
                    None => std::task::Poll::Pending,
                }
            }
            fn size_hint(&self) -> http_body::SizeHint {
                http_body::SizeHint::with_exact(self.1)
            }
        }
        Stalled(Some(Bytes::from_static(sent.as_bytes())), declared).boxed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_declared_body_is_an_error_not_a_wait() {
        let d = std::time::Duration::from_secs(5);
        let err = collect_all_within(stalled(100, "abc"), 0, Some(d), None)
            .await
            .err()
            .expect("stalled");
        assert!(matches!(err, BufferError::Idle(x) if x == d), "{err:?}");
        let err = read_prefix(stalled(100, "abc"), 50, PREFIX_IDLE, d)
            .await
            .err()
            .expect("stalled");
        assert!(matches!(err, BufferError::Idle(x) if x == d), "{err:?}");
        // A body that keeps coming is read whole, however long it takes in all.
        let c = collect_all_within(chunked(&["ab", "cd"], None), 0, Some(d), None)
            .await
            .expect("whole");
        assert_eq!(&c.bytes[..], b"abcd");
    }

    /// A body of `chunks`, each its own frame, then optional trailers.
    fn chunked(chunks: &[&'static str], trailers: Option<http::HeaderMap>) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel(chunks.len() + 1);
        for c in chunks {
            let frame = http_body::Frame::data(Bytes::from_static(c.as_bytes()));
            tx.try_send(Ok(frame)).expect("room for every frame");
        }
        if let Some(t) = trailers {
            tx.try_send(Ok(http_body::Frame::trailers(t)))
                .expect("room for the trailers");
        }
        Channel(rx).boxed()
    }

    #[tokio::test]
    async fn a_prefix_is_read_and_the_whole_body_goes_on() {
        let p = read_prefix(chunked(&["abc", "def", "ghi"], None), 4, PREFIX_IDLE, LONG)
            .await
            .expect("prefix");
        assert_eq!(p.bytes, "abcdef", "whole chunks, at least 4 bytes");
        assert!(!p.complete);
        assert_eq!(collect(p.body, 0).await.expect("rest"), "abcdefghi");

        let p = read_prefix(chunked(&["abc"], None), 10, PREFIX_IDLE, LONG)
            .await
            .expect("short");
        assert_eq!(p.bytes, "abc");
        assert!(p.complete);
        assert_eq!(collect(p.body, 0).await.expect("rest"), "abc");

        let p = read_prefix(empty(), 10, PREFIX_IDLE, LONG)
            .await
            .expect("empty");
        assert!(p.complete && p.bytes.is_empty());
        assert!(p.body.is_end_stream());
    }

    #[tokio::test]
    async fn trailers_after_the_prefix_or_inside_it_are_kept() {
        let mut t = http::HeaderMap::new();
        t.insert("x-checksum", http::HeaderValue::from_static("42"));
        for (chunks, want) in [(&["ab", "cd"][..], 1), (&["ab", "cd"][..], 100)] {
            let p = read_prefix(chunked(chunks, Some(t.clone())), want, PREFIX_IDLE, LONG)
                .await
                .expect("prefix");
            let collected = p.body.collect().await.expect("body");
            assert_eq!(collected.trailers(), Some(&t), "want {want}");
            assert_eq!(collected.to_bytes(), "abcd", "want {want}");
        }
    }

    /// A body of undeclared length that sends `first`, then nothing until
    /// the rest is sent through the returned channel.
    fn stalling(first: &'static str) -> (Body, tokio::sync::oneshot::Sender<&'static str>) {
        type Item = Result<http_body::Frame<Bytes>, BoxError>;
        let (tx, rx) = tokio::sync::oneshot::channel::<&'static str>();
        let (ftx, frx) = tokio::sync::mpsc::channel::<Item>(4);
        tokio::spawn(async move {
            let data =
                |s: &'static str| Ok(http_body::Frame::data(Bytes::from_static(s.as_bytes())));
            let _ = ftx.send(data(first)).await;
            if let Ok(rest) = rx.await {
                let _ = ftx.send(data(rest)).await;
            }
        });
        (Channel(frx).boxed(), tx)
    }

    struct Channel(tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, BoxError>>);

    impl http_body::Body for Channel {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx)
        }
    }

    /// A body of known length `len` whose frames come from `rx`, counting the
    /// polls made after its last frame (that is, for its end).
    struct Sized {
        rx: tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, BoxError>>,
        len: u64,
        end_polls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl http_body::Body for Sized {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            let polled = self.rx.poll_recv(cx);
            if let std::task::Poll::Ready(None) = polled {
                self.end_polls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            polled
        }

        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.len)
        }
    }

    use std::sync::Arc;

    #[tokio::test]
    async fn a_small_early_answer_is_read_before_its_head_goes_out_but_not_ended() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let end_polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let body = Sized {
            rx,
            len: 10,
            end_polls: end_polls.clone(),
        }
        .boxed();
        tokio::spawn(async move {
            for part in ["hello", "world"] {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                let frame = http_body::Frame::data(Bytes::from_static(part.as_bytes()));
                let _ = tx.send(Ok(frame)).await;
            }
        });
        let mut gathered = gather_small(body).await;
        // Both frames are there at once, the end has not been asked for.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        for part in ["hello", "world"] {
            match std::pin::Pin::new(&mut gathered).poll_frame(&mut cx) {
                std::task::Poll::Ready(Some(Ok(f))) => {
                    assert_eq!(f.into_data().expect("data"), part)
                }
                other => panic!("{part} not ready: {:?}", other.is_ready()),
            }
        }
        assert_eq!(end_polls.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert!(gathered.frame().await.is_none(), "then the end");
    }

    #[tokio::test]
    async fn an_answer_of_unknown_or_large_length_is_not_waited_for() {
        for len in [None, Some(GATHER_BYTES + 1)] {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let body = match len {
                Some(len) => Sized {
                    rx,
                    len,
                    end_polls: Default::default(),
                }
                .boxed(),
                None => Channel(rx).boxed(),
            };
            let gathered = tokio::time::timeout(GATHER_TIME / 5, gather_small(body)).await;
            assert!(gathered.is_ok(), "{len:?}: returned without waiting");
            drop(tx);
        }
    }

    #[tokio::test]
    async fn a_stream_that_waits_for_its_answer_is_not_waited_for() {
        let (body, more) = stalling("hello");
        let idle = std::time::Duration::from_millis(50);
        let read = read_prefix(body, 1024, idle, LONG);
        let p = tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("the prefix read settles for what arrived")
            .expect("prefix");
        assert_eq!(p.bytes, "hello");
        assert!(!p.complete);
        more.send(" world").expect("send the rest");
        assert_eq!(collect(p.body, 0).await.expect("rest"), "hello world");
    }

    #[tokio::test]
    async fn a_buffered_body_keeps_its_trailers_when_it_goes_on() {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        let c = collect_all(chunked(&["ab", "cd"], Some(t.clone())), 0)
            .await
            .expect("collect");
        assert_eq!(c.bytes, "abcd");
        assert_eq!(c.trailers.as_ref(), Some(&t));
        let again = with_trailers(c.bytes, c.trailers)
            .collect()
            .await
            .expect("body");
        assert_eq!(again.trailers(), Some(&t));
        assert_eq!(again.to_bytes(), "abcd");
        let plain = with_trailers(Bytes::from_static(b"x"), None);
        assert_eq!(plain.size_hint().exact(), Some(1));
    }

    #[tokio::test]
    async fn the_size_hint_counts_the_prefix() {
        let p = read_prefix(full("hello world"), 3, PREFIX_IDLE, LONG)
            .await
            .expect("prefix");
        assert!(p.complete);
        assert_eq!(p.body.size_hint().exact(), Some(11));
    }

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
