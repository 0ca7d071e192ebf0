//! The exchange's one audit record: [`Pending`] while the request phase and
//! the upstream run (written as `client_closed` if the client leaves first),
//! then an [`AuditGuard`] that rides on the response body and writes the
//! record when the body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::Frame;

use crate::audit::{AuditRecord, AuditSink};
use crate::body::{self, Body, BodyPark, BoxError};

use super::target::NamedHost;

/// Emits its record exactly once, when dropped: at the end of the response
/// body, or when the client goes away.
pub struct AuditGuard {
    /// Boxed, as in [`Pending`]: the guard rides in the response body and
    /// the exchange's future, which are moved whole.
    record: Option<Box<AuditRecord>>,
    sink: AuditSink,
    started: std::time::Instant,
}

impl AuditGuard {
    /// A guard for `record` of an exchange that began at `started`, so that
    /// `duration_ms` includes the request phase and the wait for the upstream.
    pub fn since(
        record: impl Into<Box<AuditRecord>>,
        sink: AuditSink,
        started: std::time::Instant,
    ) -> Self {
        AuditGuard {
            record: Some(record.into()),
            sink,
            started,
        }
    }

    /// The record, for late changes.
    pub fn record_mut(&mut self) -> Option<&mut AuditRecord> {
        self.record.as_deref_mut()
    }

    /// True once shutdown's grace period is over: an exchange dropped now
    /// was cut by the proxy.
    pub fn is_abandoning(&self) -> bool {
        self.sink.is_abandoning()
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            let elapsed = self.started.elapsed();
            r.duration_ms = elapsed.as_millis() as u64;
            r.duration_us = elapsed.as_micros() as u64;
            r.settle_late();
            self.sink.emit(&r);
        }
    }
}

/// The record of a connection-level step that may be cut before it writes
/// one itself: a CONNECT or SOCKS5 target being checked (hyper drops a
/// CONNECT's answer when its client leaves), a SOCKS5 handshake, a granted
/// tunnel waiting for its first bytes, a TLS handshake. Dropped unfinished it
/// is written at once: `shutdown` when shutdown's grace period is over (the
/// proxy cut it), else the step's own reason. [`Unfinished::finish`] hands
/// the record back to the step, which writes it as it ends.
pub struct Unfinished {
    record: Option<Box<AuditRecord>>,
    sink: AuditSink,
    /// What the step waits for, which says what its record is when the
    /// client cuts it.
    awaits: Awaits,
}

/// What an [`Unfinished`] step waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaits {
    /// The proxy's own answer (a target's check): cut, it is `client_closed`.
    Answer,
    /// The client's bytes (a handshake, a granted tunnel's first bytes): cut,
    /// it is `no_client_data`.
    ClientData,
}

impl Unfinished {
    /// Arms `record` for a step that waits for `awaits`.
    pub fn new(record: AuditRecord, sink: &AuditSink, awaits: Awaits) -> Self {
        Unfinished {
            record: Some(Box::new(record)),
            sink: sink.clone(),
            awaits,
        }
    }

    /// The record, for the step to fill in.
    pub fn record_mut(&mut self) -> &mut AuditRecord {
        // Only `finish` takes the record, and it consumes the guard.
        self.record.as_mut().expect("unfinished record present")
    }

    /// The step ended: its record, for it to write or drop.
    pub fn finish(mut self) -> AuditRecord {
        *self.record.take().expect("unfinished record present")
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(mut r) = self.record.take() else {
            return;
        };
        if self.sink.is_abandoning() {
            r.fail("shutdown", SHUTDOWN_BEFORE_ANSWER.into(), 0);
        } else {
            match self.awaits {
                Awaits::Answer => r.fail(
                    "client_closed",
                    "the client closed the connection before it was answered".into(),
                    0,
                ),
                Awaits::ClientData => {
                    r.reject(None, "no_client_data", 0);
                    r.error =
                        Some("the connection ended before the client sent its request".into());
                }
            }
        }
        self.sink.emit(&r);
    }
}

/// `error` of a connection-level step cut by shutdown.
const SHUTDOWN_BEFORE_ANSWER: &str =
    "iron-proxy shut down before the connection was answered or used (its grace period ended)";

/// The record of an exchange still in its request phase or waiting for the
/// upstream. Taken ([`Pending::into_guard`]) when a response is chosen, it becomes that
/// response's [`AuditGuard`]; dropped before that (the client closed its
/// connection or stream while a transform, the judge or the upstream was
/// still working, so hyper dropped the exchange), it is written at once as
/// `client_closed`, status 0: a request that may have reached the upstream
/// with an injected credential never goes unrecorded. It exists from the
/// moment hyper hands the request over, so an exchange hyper drops before
/// ever running it (the client closed right after its request) has its
/// record too. An HTTP/2 client that resets its stream before the proxy read
/// its whole request body is `client_body_error` instead, as an HTTP/1
/// client that closes mid-body is.
pub(super) struct Pending {
    /// Boxed: the record is some 560 bytes, and a `Pending` is part of the
    /// request's future, which hyper boxes and which moves whole between
    /// its phases; a pointer keeps those moves small.
    record: Option<Box<AuditRecord>>,
    sink: AuditSink,
    started: std::time::Instant,
    /// The request's HTTP/2 upload, when it has a body.
    upload: Option<BodyPark>,
    /// The host the request names, for a record written before it was checked.
    named: NamedHost,
}

impl Pending {
    pub(super) fn new(record: AuditRecord, sink: AuditSink, started: std::time::Instant) -> Self {
        Pending {
            record: Some(Box::new(record)),
            sink,
            started,
            upload: None,
            named: NamedHost::default(),
        }
    }

    /// Remembers where the request names its host and its HTTP/2 upload.
    pub(super) fn of_request(mut self, named: NamedHost, upload: Option<BodyPark>) -> Self {
        self.named = named;
        self.upload = upload;
        self
    }
}

impl std::ops::Deref for Pending {
    type Target = AuditRecord;
    fn deref(&self) -> &AuditRecord {
        // Only `From<Pending>` takes the record, and it consumes the Pending.
        self.record.as_ref().expect("pending record present")
    }
}

impl std::ops::DerefMut for Pending {
    fn deref_mut(&mut self) -> &mut AuditRecord {
        self.record.as_mut().expect("pending record present")
    }
}

impl Pending {
    /// The guard of the response chosen for this exchange; `duration_ms`
    /// counts from the exchange's start.
    pub(super) fn into_guard(mut self) -> AuditGuard {
        let record = self.record.take().expect("pending record present");
        AuditGuard::since(record, self.sink.clone(), self.started)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            if r.host.is_empty() {
                r.host = self.named.host().unwrap_or_default();
            }
            if self.sink.is_abandoning() {
                // Not the client: shutdown's grace period ran out.
                r.fail("shutdown", SHUTDOWN_BEFORE_RESPONSE.into(), 0);
            } else if r.reason.is_none() {
                if self.upload.as_ref().is_some_and(|u| !u.upload_ended()) {
                    // 400 as for an HTTP/1 body that breaks off, whichever
                    // noticed first: the upstream leg reading the body, or this.
                    r.fail("client_body_error", UPLOAD_CUT.into(), 400);
                } else {
                    r.fail(
                        "client_closed",
                        "the client closed the connection (or reset its HTTP/2 stream) before the response began".into(),
                        0,
                    );
                }
            }
            drop(AuditGuard::since(r, self.sink.clone(), self.started));
        }
    }
}

/// `error` of an HTTP/2 exchange whose client ended its stream (a reset, or
/// the connection closed) before the proxy had read its whole request body.
const UPLOAD_CUT: &str = "client request body: the client reset its HTTP/2 stream (or closed the \
                          connection) before the request body was complete";

/// `error` of an exchange cut by shutdown before its response began.
const SHUTDOWN_BEFORE_RESPONSE: &str =
    "iron-proxy shut down before the response began (its grace period ended)";

pin_project_lite::pin_project! {
    /// A response body that carries the audit guard until the body ends.
    struct AuditedBody {
        #[pin]
        inner: Body,
        guard: Option<AuditGuard>,
        // Body bytes handed to the client's connection so far.
        sent: u64,
        // How many body bytes the client is owed, when known (its
        // Content-Length; 0 for a response to HEAD, a 204, a 304): hyper
        // drops the body once that much went out, or unread.
        owed: Option<u64>,
    }

    impl PinnedDrop for AuditedBody {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its end: the client went away (the record keeps
            // the response's status and decision, and says how much of the
            // body went out), or shutdown cut it, which the record says.
            let this = this.project();
            let Some(g) = this.guard.as_mut() else { return };
            let abandoning = g.sink.is_abandoning();
            let Some(r) = g.record_mut() else { return };
            let status = r.status_code;
            if abandoning {
                r.fail(
                    "shutdown",
                    "iron-proxy shut down while the response body streamed (its grace period ended)".into(),
                    status,
                );
                r.bytes_received = Some(*this.sent);
            } else if !http_body::Body::is_end_stream(&*this.inner)
                && this.owed.is_none_or(|n| *this.sent < n)
            {
                let cut = format!(
                    "the client went away before the response body was complete: it closed the \
                     connection or reset the stream after {} body bytes were sent",
                    this.sent
                );
                r.error = Some(match r.error.take() {
                    Some(e) => format!("{e}; {cut}"),
                    None => cut,
                });
                r.bytes_received = Some(*this.sent);
            }
        }
    }
}

impl http_body::Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let res = this.inner.poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                *this.sent += n;
                // The same count as the record's: the metrics agree with it.
                if n > 0 {
                    crate::traffic::TRAFFIC.response_body_sent(n);
                }
                if frame.is_trailers() {
                    // Trailers end the body: the server may not poll again.
                    this.guard.take();
                }
            }
            Poll::Ready(None) => {
                this.guard.take();
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(r) = this.guard.as_mut().and_then(|g| g.record_mut()) {
                    let detail = format!("response body: {}", crate::error_chain(e.as_ref()));
                    if let Some(b) = crate::find_in_chain::<body::BodyRefused>(e.as_ref()) {
                        // A transform cut the body on purpose: its reason.
                        let status = r.status_code;
                        r.fail(b.reason, detail, status);
                    } else if r.reason.is_none() {
                        // The head went out, the body broke off (the upstream
                        // closed or reset mid-body): the client got less than
                        // it was promised, so the record is an error too.
                        let status = r.status_code;
                        r.fail("upstream_body_error", detail, status);
                    } else {
                        r.error = Some(detail);
                    }
                }
                this.guard.take();
            }
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `rsp` with `guard` riding on its body: the record is written when the body
/// ends or is dropped, with the response's status unless one was set.
pub(super) fn finish(rsp: Response<Body>, mut guard: AuditGuard) -> Response<Body> {
    let status = rsp.status();
    let mut bodiless = status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
        || status.is_informational();
    let mut head = false;
    if let Some(r) = guard.record_mut() {
        if r.status_code == 0 {
            r.status_code = status.as_u16();
        }
        head = r.method == "HEAD";
    }
    bodiless |= head;
    let owed = if bodiless {
        Some(0)
    } else {
        rsp.headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
    };
    let (mut parts, mut inner) = rsp.into_parts();
    if head {
        inner = without_body(&mut parts, inner);
    } else if bodiless {
        // A 204 or 304 ends with its head (RFC 9110 §15.3.5, §15.4.5), but
        // an HTTP/2 upstream can send DATA after it, and hyper's HTTP/2
        // server would pass them on: a malformed response (RFC 9113
        // §8.1.1), and one whose bytes no response transform looked at
        // (`secrets` scrubs only the bodies a response may have).
        inner = body::empty();
    }
    Response::from_parts(
        parts,
        body::boxed(AuditedBody {
            inner,
            guard: Some(guard),
            sent: 0,
            owed,
        }),
    )
}

/// The response to a HEAD without its body (RFC 9110 §9.3.2): hyper's HTTP/1
/// server leaves a body unsent, its HTTP/2 server would send it as DATA frames,
/// a malformed response a client refuses (RFC 9113 §8.1.1; h2, nghttp2). So the
/// proxy's own answers (a refusal, an error page) and an upstream that sends a
/// body anyway reach the client as headers only. The headers stay as a GET
/// would get them: a body of the proxy's own, of known length, gets its
/// Content-Length (an upstream's HEAD answer has its own, or none, and an empty
/// body there).
fn without_body(parts: &mut http::response::Parts, body: Body) -> Body {
    let len = http_body::Body::size_hint(&body).exact();
    let may_have_length =
        !(parts.status == http::StatusCode::NO_CONTENT || parts.status.is_informational());
    if let Some(len) = len.filter(|n| *n > 0 && may_have_length) {
        parts
            .headers
            .entry(http::header::CONTENT_LENGTH)
            .or_insert_with(|| http::HeaderValue::from(len));
    }
    body::empty()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt as _;

    use super::*;
    use crate::audit::{AuditObserver, Mode};

    /// Collects every record the sink writes.
    #[derive(Default)]
    struct Seen(Mutex<Vec<AuditRecord>>);

    impl AuditObserver for Seen {
        fn observe(&self, record: &AuditRecord) {
            self.0.lock().expect("test lock").push(record.clone());
        }
    }

    fn observed() -> (AuditSink, Arc<Seen>) {
        let sink = AuditSink::to_writer(Box::new(std::io::sink())).expect("sink");
        let seen = Arc::new(Seen::default());
        sink.add_observer(seen.clone());
        (sink, seen)
    }

    fn guard(sink: &AuditSink, method: &str) -> AuditGuard {
        let mut r = AuditRecord::new(Mode::Http, "127.0.0.1:1".into());
        r.method = method.into();
        AuditGuard::since(r, sink.clone(), std::time::Instant::now())
    }

    /// A body of `chunks` that then never ends (an upstream still streaming).
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.0.pop_front() {
                Some(c) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(c))))),
                None => Poll::Pending,
            }
        }
    }

    /// A response of `chunks`, streamed (no Content-Length), that never ends.
    fn streaming(chunks: &[&'static [u8]]) -> Response<Body> {
        Response::new(body::boxed(Chunks(chunks.iter().copied().collect())))
    }

    fn only(seen: &Seen) -> AuditRecord {
        let all = seen.0.lock().expect("test lock");
        assert_eq!(all.len(), 1, "one record: {:?}", all.len());
        all[0].clone()
    }

    #[tokio::test]
    async fn a_response_body_dropped_mid_stream_is_marked_with_what_went_out() {
        let (sink, seen) = observed();
        let rsp = finish(streaming(&[b"hello", b" world"]), guard(&sink, "GET"));
        let mut body = rsp.into_body();
        for _ in 0..2 {
            body.frame().await.expect("a frame").expect("data");
        }
        // The client goes away: hyper drops the body before its end.
        drop(body);
        let r = only(&seen);
        assert_eq!(r.status_code, 200);
        assert!(r.reason.is_none(), "the decision stays: {:?}", r.reason);
        assert_eq!(r.bytes_received, Some(11));
        let e = r.error.expect("an error marker");
        assert!(
            e.contains("before the response body was complete") && e.contains("11 body bytes"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_response_body_read_to_its_end_or_owed_nothing_is_not_marked() {
        // Read to its end.
        let (sink, seen) = observed();
        let rsp = finish(Response::new(body::full("whole")), guard(&sink, "GET"));
        let got = rsp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&got[..], b"whole");
        let r = only(&seen);
        assert!(r.error.is_none() && r.bytes_received.is_none(), "{r:?}");

        // All of its Content-Length went out, then hyper dropped it (as it does
        // without polling for the end).
        let (sink, seen) = observed();
        let mut rsp = streaming(&[b"12345"]);
        rsp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(5));
        let mut body = finish(rsp, guard(&sink, "GET")).into_body();
        body.frame().await.expect("a frame").expect("data");
        drop(body);
        let r = only(&seen);
        assert!(r.error.is_none() && r.bytes_received.is_none(), "{r:?}");

        // An answer to HEAD, dropped unread.
        let (sink, seen) = observed();
        drop(finish(streaming(&[b"12345"]), guard(&sink, "HEAD")));
        let r = only(&seen);
        assert!(r.error.is_none() && r.bytes_received.is_none(), "{r:?}");
    }

    #[tokio::test]
    async fn an_answer_to_head_has_the_headers_and_no_body() {
        // The proxy's own page (a refusal): its length, no DATA (hyper's HTTP/2
        // server would send the body it is given).
        let (sink, seen) = observed();
        let mut page = Response::new(body::full("iron-proxy: refused\n"));
        *page.status_mut() = http::StatusCode::FORBIDDEN;
        let rsp = finish(page, guard(&sink, "HEAD"));
        assert_eq!(rsp.headers()[http::header::CONTENT_LENGTH], "20");
        let body = rsp.into_body();
        assert!(http_body::Body::is_end_stream(&body));
        assert!(body.collect().await.expect("body").to_bytes().is_empty());
        let r = only(&seen);
        assert_eq!(r.status_code, 403);
        assert!(r.error.is_none() && r.bytes_received.is_none(), "{r:?}");

        // An upstream's: its own Content-Length stays, a body it sent anyway is not.
        let (sink, _seen) = observed();
        let mut rsp = streaming(&[b"12345"]);
        rsp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(99));
        let rsp = finish(rsp, guard(&sink, "HEAD"));
        assert_eq!(rsp.headers()[http::header::CONTENT_LENGTH], "99");
        assert!(http_body::Body::is_end_stream(rsp.body()));

        // None where there is no content (a 204), nor on an empty answer.
        for status in [http::StatusCode::NO_CONTENT, http::StatusCode::OK] {
            let (sink, _seen) = observed();
            let body = match status {
                http::StatusCode::OK => body::empty(),
                _ => body::full("x"),
            };
            let mut rsp = Response::new(body);
            *rsp.status_mut() = status;
            let rsp = finish(rsp, guard(&sink, "HEAD"));
            assert!(
                rsp.headers().get(http::header::CONTENT_LENGTH).is_none(),
                "{status}"
            );
        }

        // A GET keeps its body.
        let (sink, _seen) = observed();
        let rsp = finish(Response::new(body::full("whole")), guard(&sink, "GET"));
        assert_eq!(
            &rsp.into_body().collect().await.expect("body").to_bytes()[..],
            b"whole"
        );
    }

    #[test]
    fn a_pending_record_dropped_with_an_unfinished_upload_is_a_client_body_error() {
        let req = http::Request::get("/up")
            .header(http::header::HOST, "Api.Test:8443")
            .body(())
            .expect("request");
        for (ended, reason, status) in [
            (false, "client_body_error", 400),
            (true, "client_closed", 0),
        ] {
            let (sink, seen) = observed();
            let park = BodyPark::default();
            if ended {
                park.mark_upload_ended();
            }
            let rec = AuditRecord::new(Mode::Https, "127.0.0.1:1".into());
            drop(
                Pending::new(rec, sink.clone(), std::time::Instant::now())
                    .of_request(NamedHost::of(&req), Some(park)),
            );
            let r = only(&seen);
            assert_eq!(r.reason.as_deref(), Some(reason), "{r:?}");
            assert_eq!(r.status_code, status, "{r:?}");
            // Dropped before the request was checked: the host it names.
            assert_eq!(r.host, "api.test");
        }
    }
}
