//! The response body of an exchange in which credential transforms put
//! values into the request, scrubbed of those values as it streams to the
//! workload ([`crate::secrets::body_scrub`]): a reflected credential (an echo
//! endpoint, an error message quoting the key or the bearer token) is
//! masked, same length, so the body's framing holds.
//!
//! A body with a `Content-Encoding` the proxy decodes (`gzip`, `x-gzip`,
//! `deflate`, `br`, `zstd`, stacked up to [`MAX_LAYERS`]) is decoded as it
//! streams ([`crate::body::decode`]), scrubbed, and forwarded decoded, with
//! `Content-Encoding` and `Content-Length` removed (identity is acceptable
//! to every client; HTTP/1.1 then frames it chunked) and a strong `ETag`
//! made weak (it named the coded bytes). A coded body the proxy cannot
//! decode (another coding, a 206 range of a coded representation) is
//! refused before its head goes out (502, `response_body_unscrubbable`):
//! it could hold the credential in a form no search sees. A decode error
//! mid-body ends the body there, as an error (the client sees a cut body or
//! a reset stream; the record says `response_body_undecodable`), so no byte
//! that was not scrubbed goes out.
//!
//! Out of reach: a WebSocket's frames after its 101 (a splice, not a body),
//! and a value split across two range (206) responses.
//!
//! The trace entry gets `response_body_redacted` (the number of matches
//! masked, when the record is written) and, when the body was decoded to be
//! scrubbed, `response_body_decoded` (the codings undone).
//!
//! [`MAX_LAYERS`]: crate::body::decode::MAX_LAYERS

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, ETAG};
use http::{HeaderValue, Response, StatusCode};
use http_body::Frame;
use serde_json::Value;

use crate::body::decode::{DecodeError, Decoder, Step};
use crate::body::{self, Body, BodyRefused, BoxError};
use crate::pipeline::{Flow, TransformError};
use crate::secrets::body_scrub::BodyScrubber;
use crate::transforms::body_capture::{codings, content_encodings};

/// The audit `reason` of a body cut because it could not be decoded.
const UNDECODABLE: &str = "response_body_undecodable";

/// Wraps `rsp`'s body in the scrub of the values put in this request
/// (`scrubber` searches for them; the caller builds it only when there is
/// one of at least `MIN_SECRET_LEN` bytes), when the response has a body.
/// `by`: the transform named in the refusal of a body cut mid-way.
pub(super) fn scrub(
    rsp: &mut Response<Body>,
    cx: &mut Flow,
    scrubber: BodyScrubber,
    by: &'static str,
) -> Result<(), TransformError> {
    if !has_body(rsp, cx) {
        return Ok(());
    }
    let coded = codings(&content_encodings(rsp.headers()));
    let decoder = if coded.is_empty() {
        None
    } else {
        if rsp.status() == StatusCode::PARTIAL_CONTENT {
            return Err(unscrubbable(format!(
                "a range (206) of a {} coded representation cannot be decoded to be scrubbed",
                coded.join(", ")
            )));
        }
        let d = Decoder::new(&coded).map_err(|e| unscrubbable(e.to_string()))?;
        let h = rsp.headers_mut();
        h.remove(CONTENT_ENCODING);
        h.remove(CONTENT_LENGTH);
        if let Some(weak) = h.get(ETAG).and_then(weakened) {
            h.insert(ETAG, weak);
        }
        cx.annotate("response_body_decoded", coded);
        Some(d)
    };
    let trailers_changed = trailer_tally(cx);
    let found = Arc::new(AtomicU64::new(0));
    let tally = found.clone();
    cx.annotate_late(
        "response_body_redacted",
        Arc::new(move || Some(Value::from(tally.load(Ordering::Relaxed)))),
    );
    let inner = std::mem::replace(rsp.body_mut(), body::empty());
    *rsp.body_mut() = body::boxed(ScrubbedBody {
        inner,
        scrubber,
        decoder,
        by,
        found,
        counted: 0,
        state: State::Streaming,
        trailers: None,
        trailers_changed,
        input_done: false,
        decoded_end: false,
    });
    Ok(())
}

/// Wraps `rsp`'s body so that its trailers, if any, are scrubbed as headers
/// are: for a response whose body is left as it is
/// (`scrub_response_bodies: false`). A gRPC error's `grpc-message` trailer
/// quoting the request would otherwise hand the value back.
pub(super) fn scrub_trailers(rsp: &mut Response<Body>, cx: &mut Flow, search: BodyScrubber) {
    if !has_body(rsp, cx) {
        return;
    }
    let changed = trailer_tally(cx);
    let inner = std::mem::replace(rsp.body_mut(), body::empty());
    *rsp.body_mut() = body::boxed(TrailersScrubbed {
        inner,
        search,
        changed,
    });
}

/// The trailer fields changed, for the record's `response_trailers_redacted`
/// (set when the trailers go by; no field when none was changed).
type TrailerTally = Arc<std::sync::OnceLock<Vec<String>>>;

fn trailer_tally(cx: &mut Flow) -> TrailerTally {
    let tally = TrailerTally::default();
    let seen = tally.clone();
    cx.annotate_late(
        "response_trailers_redacted",
        Arc::new(move || seen.get().map(|v| Value::from(v.clone()))),
    );
    tally
}

/// Trailers scrubbed as headers are ([`super::headers::redact_headers`]).
fn redact_trailers(t: &mut http::HeaderMap, search: &BodyScrubber, tally: &TrailerTally) {
    let changed = super::headers::redact_headers(t, search);
    if !changed.is_empty() {
        let _ = tally.set(changed);
    }
}

pin_project_lite::pin_project! {
    /// A response body passed on as it is, but for its trailers.
    struct TrailersScrubbed {
        #[pin]
        inner: Body,
        search: BodyScrubber,
        changed: TrailerTally,
    }
}

impl http_body::Body for TrailersScrubbed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        Poll::Ready(frame.map(|f| {
            f.map(|f| match f.into_trailers() {
                Ok(mut t) => {
                    redact_trailers(&mut t, this.search, this.changed);
                    Frame::trailers(t)
                }
                Err(f) => f,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether the response carries a body to the client: not the answer to a
/// HEAD, nor a 1xx, 204 or 304, nor one already at its end.
fn has_body(rsp: &Response<Body>, cx: &Flow) -> bool {
    let s = rsp.status();
    !(cx.method.eq_ignore_ascii_case("HEAD")
        || s.is_informational()
        || s == StatusCode::NO_CONTENT
        || s == StatusCode::NOT_MODIFIED
        || http_body::Body::is_end_stream(rsp.body()))
}

/// A strong validator made weak (`"x"` → `W/"x"`); `None` when already weak.
fn weakened(etag: &HeaderValue) -> Option<HeaderValue> {
    let b = etag.as_bytes();
    if b.starts_with(b"W/") {
        return None;
    }
    HeaderValue::from_bytes(&[b"W/", b].concat()).ok()
}

pub(super) fn unscrubbable(detail: String) -> TransformError {
    TransformError {
        status: StatusCode::BAD_GATEWAY,
        reason: "response_body_unscrubbable",
        detail: format!(
            "the response cannot be searched for the credentials this request was given: \
             {detail}"
        ),
    }
}

fn undecodable(by: &'static str, e: DecodeError) -> BoxError {
    Box::new(BodyRefused {
        by,
        reason: UNDECODABLE,
        detail: format!(
            "the response body could not be decoded to be scrubbed of credentials, so it was \
             cut: {e}"
        ),
    })
}

enum State {
    Streaming,
    /// The body ended: the held bytes go, then these trailers, if any.
    Finishing(Option<http::HeaderMap>),
    /// The trailers go next.
    Trailers(http::HeaderMap),
    Done,
}

pin_project_lite::pin_project! {
    /// A response body with reflected credentials masked (decoded first
    /// when it is coded).
    #[project = ScrubbedBodyProj]
    struct ScrubbedBody {
        #[pin]
        inner: Body,
        scrubber: BodyScrubber,
        decoder: Option<Decoder>,
        // The transform named in the refusal of a body cut mid-way.
        by: &'static str,
        // What the record reads when it is written.
        found: Arc<AtomicU64>,
        // What `found` and the metric were told so far.
        counted: u64,
        state: State,
        // The upstream's trailers, to go after the last bytes.
        trailers: Option<http::HeaderMap>,
        // The trailer fields scrubbed, for the record.
        trailers_changed: TrailerTally,
        // The upstream's body ended (its end or its trailers came).
        input_done: bool,
        // The coded stream ended.
        decoded_end: bool,
    }
}

impl ScrubbedBody {
    /// Tells the record and the metric about matches found since the last call.
    fn tally(counted: &mut u64, scrubber: &BodyScrubber, found: &AtomicU64) {
        let now = scrubber.found();
        if now > *counted {
            crate::traffic::TRAFFIC.body_redacted(now - *counted);
            *counted = now;
            found.store(now, Ordering::Relaxed);
        }
    }
}

impl http_body::Body for ScrubbedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            match std::mem::replace(this.state, State::Streaming) {
                State::Done => {
                    *this.state = State::Done;
                    return Poll::Ready(None);
                }
                State::Trailers(t) => {
                    *this.state = State::Done;
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                State::Finishing(t) => {
                    let rest = this.scrubber.finish();
                    Self::tally(this.counted, this.scrubber, this.found);
                    *this.state = match t {
                        Some(t) => State::Trailers(t),
                        None => State::Done,
                    };
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    continue;
                }
                State::Streaming => {}
            }
            // Decoded bytes waiting come first, at most one step at a time.
            if let Some(d) = this.decoder.as_mut() {
                if !*this.decoded_end {
                    match d.pull() {
                        Ok(Step::Data(b)) => {
                            let out = this.scrubber.push(b);
                            Self::tally(this.counted, this.scrubber, this.found);
                            if !out.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                            continue;
                        }
                        Ok(Step::End) => *this.decoded_end = true,
                        Ok(Step::NeedInput) if !*this.input_done => {}
                        Ok(Step::NeedInput) => *this.decoded_end = true,
                        Err(e) => {
                            *this.state = State::Done;
                            return Poll::Ready(Some(Err(undecodable(this.by, e))));
                        }
                    }
                }
                if *this.decoded_end && *this.input_done {
                    *this.state = State::Finishing(this.trailers.take());
                    continue;
                }
            }
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match this.decoder.as_mut() {
                        // Bytes after the end of the coded stream are dropped.
                        Some(_) if *this.decoded_end => {}
                        Some(d) => d.push(&data),
                        None => {
                            let out = this.scrubber.push(data);
                            Self::tally(this.counted, this.scrubber, this.found);
                            if !out.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                        }
                    },
                    Err(frame) => {
                        // Trailers end the body; they go after its last bytes,
                        // scrubbed as headers are.
                        *this.trailers = frame.into_trailers().ok();
                        if let Some(t) = this.trailers.as_mut() {
                            redact_trailers(t, this.scrubber, this.trailers_changed);
                        }
                        Self::input_ended(&mut this);
                    }
                },
                Some(Err(e)) => {
                    // The upstream broke off: what is held (the start of a
                    // possible match) is dropped, not released.
                    *this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                None => Self::input_ended(&mut this),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // Masks keep the length; decoding changes it.
        match (&self.decoder, &self.state) {
            (None, State::Streaming) if self.scrubber.held() == 0 => self.inner.size_hint(),
            _ => http_body::SizeHint::default(),
        }
    }
}

impl ScrubbedBody {
    /// The upstream's body ended: what is coded is decoded to its end (the
    /// next polls), what is held is released.
    fn input_ended(this: &mut ScrubbedBodyProj<'_>) {
        *this.input_done = true;
        match this.decoder.as_mut() {
            Some(d) => d.end_input(),
            None => *this.state = State::Finishing(this.trailers.take()),
        }
    }
}

#[cfg(test)]
mod tests;
