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
use crate::body::{self, Body, BoxError};

/// Emits its record exactly once, when dropped: at the end of the response
/// body, or when the client goes away.
pub struct AuditGuard {
    record: Option<AuditRecord>,
    sink: AuditSink,
    started: std::time::Instant,
}

impl AuditGuard {
    /// A guard for `record` of an exchange that began at `started`, so that
    /// `duration_ms` includes the request phase and the wait for the upstream.
    pub fn since(record: AuditRecord, sink: AuditSink, started: std::time::Instant) -> Self {
        AuditGuard {
            record: Some(record),
            sink,
            started,
        }
    }

    /// The record, for late changes.
    pub fn record_mut(&mut self) -> Option<&mut AuditRecord> {
        self.record.as_mut()
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

/// The record of an exchange still in its request phase or waiting for the
/// upstream. Taken ([`Pending::into_guard`]) when a response is chosen, it becomes that
/// response's [`AuditGuard`]; dropped before that (the client closed its
/// connection or stream while a transform, the judge or the upstream was
/// still working, so hyper dropped the exchange), it is written at once as
/// `client_closed`, status 0: a request that may have reached the upstream
/// with an injected credential never goes unrecorded.
pub(super) struct Pending {
    record: Option<AuditRecord>,
    sink: AuditSink,
    started: std::time::Instant,
}

impl Pending {
    pub(super) fn new(record: AuditRecord, sink: AuditSink, started: std::time::Instant) -> Self {
        Pending {
            record: Some(record),
            sink,
            started,
        }
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
            if self.sink.is_abandoning() {
                // Not the client: shutdown's grace period ran out.
                r.fail("shutdown", SHUTDOWN_BEFORE_RESPONSE.into(), 0);
            } else if r.reason.is_none() {
                r.fail(
                    "client_closed",
                    "the client closed the connection before the response began".into(),
                    0,
                );
            }
            drop(AuditGuard::since(r, self.sink.clone(), self.started));
        }
    }
}

/// `error` of an exchange cut by shutdown before its response began.
const SHUTDOWN_BEFORE_RESPONSE: &str =
    "iron-proxy shut down before the response began (its grace period ended)";

pin_project_lite::pin_project! {
    /// A response body that carries the audit guard until the body ends.
    struct AuditedBody {
        #[pin]
        inner: Body,
        guard: Option<AuditGuard>,
    }

    impl PinnedDrop for AuditedBody {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its end: the client went away (the record keeps
            // the response's status), or shutdown cut it, which the record says.
            let this = this.project();
            if let Some(g) = this.guard.as_mut() {
                if g.sink.is_abandoning() {
                    if let Some(r) = g.record_mut() {
                        let status = r.status_code;
                        r.fail(
                            "shutdown",
                            "iron-proxy shut down while the response body streamed (its grace period ended)".into(),
                            status,
                        );
                    }
                }
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
    if let Some(r) = guard.record_mut() {
        if r.status_code == 0 {
            r.status_code = rsp.status().as_u16();
        }
    }
    let (parts, inner) = rsp.into_parts();
    Response::from_parts(
        parts,
        body::boxed(AuditedBody {
            inner,
            guard: Some(guard),
        }),
    )
}
