//! The transform pipeline: a flat, ordered list of transforms, each with a
//! request phase and a response phase. The first reject short-circuits.
//! A [`Pipeline`] is immutable; reloads build a new one and swap it in (see
//! `crate::state`), so in-flight requests finish on the pipeline they started with.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{Request, Response, StatusCode};
use serde_json::{Map, Value};

use crate::audit::TransformTrace;
use crate::body::{self, Body};
use crate::rules::{Scheme, Target};

/// A transform's decision.
pub enum Verdict {
    /// Go on to the next transform (or upstream).
    Continue,
    /// Refuse the request; nothing reaches the upstream.
    Reject(Rejection),
    /// Answer the request locally with this response (for example a stubbed token endpoint).
    Stub(Response<Body>),
}

/// A policy refusal: a result, not an error.
pub struct Rejection {
    /// Status returned to the client (403 unless the transform says otherwise).
    pub status: StatusCode,
    /// Machine-readable reason for the audit record.
    pub reason: String,
    /// Short human-readable message for the response body.
    pub message: String,
    /// The response to send instead of the standard refusal body (a
    /// protocol-level refusal, such as a JSON-RPC error envelope).
    pub answer: Option<Box<Response<Body>>>,
}

impl Rejection {
    /// A 403 with the standard iron-proxy body.
    pub fn forbidden(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
            message: message.into(),
            answer: None,
        }
    }

    /// The response the client sees: the transform's own answer, else a body
    /// that says plainly that iron-proxy policy refused the request, so agents
    /// stop retrying with other tricks.
    pub fn into_response(self) -> Response<Body> {
        match self.answer {
            Some(rsp) => *rsp,
            None => policy_response(self.status, &self.message),
        }
    }
}

/// A plain-text response whose body names iron-proxy policy as the cause.
pub fn policy_response(status: StatusCode, message: &str) -> Response<Body> {
    let text = format!(
        "Blocked by iron-proxy policy: {message}\nThis request was refused by the egress proxy; retrying by another route will not help.\n"
    );
    let mut rsp = Response::new(body::full(text));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp.headers_mut()
        .insert("x-iron-proxy-blocked", http::HeaderValue::from_static("1"));
    rsp
}

/// The appliance failed inside a transform; the request fails closed.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct TransformError {
    /// Status returned to the client (502 for upstream-ish failures, 500 otherwise).
    pub status: StatusCode,
    /// Machine-readable reason for the audit record.
    pub reason: &'static str,
    /// Human-readable detail; must never contain a secret value.
    pub detail: String,
}

/// The normalized destination of a request, owned.
#[derive(Debug, Clone)]
pub struct Dest {
    /// Lowercase host without port or trailing dot.
    pub host: String,
    /// The host as an IP literal, when it is one.
    pub ip: Option<IpAddr>,
    /// Destination port.
    pub port: u16,
    /// Whether the upstream leg uses TLS: the request's scheme as rules
    /// match it (see [`Scheme`]).
    pub tls: bool,
}

/// Per-request context handed to every transform (pingora's `CTX`).
pub struct Flow {
    /// Where the request goes.
    pub dest: Dest,
    /// Uppercase method (empty for host-only requests).
    pub method: String,
    /// Request path without query (empty for host-only requests).
    pub path: String,
    /// The methods the request asks the server to perform instead of
    /// `method` ([`crate::exchange::method_overrides`]); rules that restrict
    /// methods must allow them too.
    pub method_overrides: Box<[String]>,
    /// When the request started.
    pub started: Instant,
    /// Fields added to the top level of the audit record (for example `body_capture`).
    pub audit_extra: Map<String, Value>,
    /// A host-only check of a tunnel target whose inner requests will be
    /// checked again in full: a rule's host alone is enough to continue.
    pub precheck: bool,
    /// State a transform carries from its request phase to its response phase.
    pub ext: http::Extensions,
    /// The client connection, when the exchange came from a listener.
    pub conn: Option<Arc<crate::exchange::ConnInfo>>,
    /// Audit fields completed only when the exchange ends (what a streamed
    /// response showed); the exchange moves them into its record.
    pub late_audit: Vec<crate::audit::LateField>,
    annotations: Map<String, Value>,
    /// Request headers a credential transform set in this request.
    credential_headers: Vec<http::HeaderName>,
    /// Query parameters a credential transform set in this request.
    credential_query: Vec<String>,
    /// The credential values transforms put into this request (`secrets`:
    /// headers, query, swapped into the path or body; `oauth_token` and
    /// `gcp_auth`: the minted token; `hmac_sign`: the credentials its header
    /// templates render; `aws_auth`: the session token), in pipeline order:
    /// the response is scrubbed of them ([`crate::scrub_response`]), and a
    /// later judge keeps them out of what it records.
    secret_values: Vec<NotedValue>,
    /// The index of the transform whose request hook runs now, for
    /// [`Flow::note_secret_value`].
    running: usize,
    /// A `header_allowlist` filtered this request's headers.
    headers_filtered: bool,
}

impl Flow {
    /// A context for a request to `dest`.
    pub fn new(dest: Dest, method: String, path: String) -> Self {
        Flow {
            dest,
            method,
            path,
            method_overrides: Box::default(),
            started: Instant::now(),
            audit_extra: Map::new(),
            precheck: false,
            ext: http::Extensions::new(),
            conn: None,
            late_audit: Vec::new(),
            annotations: Map::new(),
            credential_headers: Vec::new(),
            credential_query: Vec::new(),
            secret_values: Vec::new(),
            running: 0,
            headers_filtered: false,
        }
    }

    /// Records that a `header_allowlist` decided which of this request's
    /// headers go on.
    pub fn mark_headers_filtered(&mut self) {
        self.headers_filtered = true;
    }

    /// Whether the proxy vouches for this request's headers: a credential
    /// transform set one, or a `header_allowlist` filtered them. Its
    /// client's trailers are then dropped ([`crate::body::without_trailers`]).
    pub fn vouches_for_headers(&self) -> bool {
        self.headers_filtered || !self.credential_headers.is_empty()
    }

    /// The view that rules match against.
    pub fn target(&self) -> Target<'_> {
        Target {
            host: &self.dest.host,
            ip: self.dest.ip,
            method: &self.method,
            method_overrides: &self.method_overrides,
            path: &self.path,
            scheme: Scheme::of_tls(self.dest.tls),
        }
    }

    /// Adds an annotation to the current transform's trace entry.
    pub fn annotate(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.annotations.insert(key.into(), value.into());
    }

    /// Adds an annotation to the current transform's trace entry that is
    /// computed when the exchange's record is written (what a streamed
    /// response body held): `value` then gives it, or `None` to leave it out.
    pub fn annotate_late(&mut self, key: &'static str, value: crate::audit::LateValue) {
        self.late_audit
            .push(crate::audit::LateField::annotation(key, value));
    }

    /// Mutable access to the current transform's annotations (for list-valued keys).
    pub fn annotations_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.annotations
    }

    /// Records that a credential transform (`secrets`, `oauth_token`,
    /// `gcp_auth`, `aws_auth`, `hmac_sign`) set request header `name` to a
    /// real credential or a value derived from one, so that a later transform
    /// that copies headers into the audit record (`annotate`) leaves its
    /// value out: secrets never reach the audit log, whatever the order.
    pub fn mark_credential_header(&mut self, name: &http::HeaderName) {
        if !self.credential_headers.contains(name) {
            self.credential_headers.push(name.clone());
        }
    }

    /// Whether a credential transform set request header `name` in this request.
    ///
    /// Credential transforms also use it for precedence: when two of them
    /// would set the same header, the first in config order wins, and the
    /// later one leaves the request alone ([`Flow::note_already_set`]).
    pub fn is_credential_header(&self, name: &http::HeaderName) -> bool {
        self.credential_headers.contains(name)
    }

    /// Records that a credential transform set query parameter `name`.
    pub fn mark_credential_query(&mut self, name: &str) {
        if !self.is_credential_query(name) {
            self.credential_query.push(name.to_string());
        }
    }

    /// Whether a credential transform set query parameter `name` in this request.
    pub fn is_credential_query(&self, name: &str) -> bool {
        self.credential_query.iter().any(|n| n == name)
    }

    /// Records that credential transform `transform` (its name: `secrets`,
    /// `oauth_token`, `gcp_auth`, `hmac_sign`, `aws_auth`), whose request hook runs now, put `value`
    /// into this request, wherever it went (a header, the query, the path or
    /// the body). The response's headers are scrubbed of it, and its body
    /// too when some transform that noted a value has `scrub_body` (its
    /// `scrub_response_bodies`): see [`crate::scrub_response`].
    pub fn note_secret_value(
        &mut self,
        value: &crate::secrets::SecretValue,
        transform: &'static str,
        scrub_body: bool,
    ) {
        self.secret_values.push(NotedValue {
            value: value.clone(),
            by: self.running,
            transform,
            scrub_body,
        });
    }

    /// The values [`Flow::note_secret_value`] recorded. Use them only to keep
    /// them out of what the workload gets or what is recorded
    /// ([`crate::secrets::scrub`], [`crate::scrub_response`]).
    pub fn secret_values(&self) -> impl Iterator<Item = &str> {
        self.secret_values.iter().map(|v| v.value.expose())
    }

    /// `text` with every value noted so far masked (in any letter case, and
    /// in the forms [`crate::secrets::scrub::Scrubber`] knows: encoded, cut
    /// short to any 8 bytes of it), or `None` when it holds none. For the
    /// proxy's own answers that may quote the request as earlier transforms
    /// changed it (a refusal's message or JSON-RPC answer, an error's
    /// detail): a workload may put a placeholder where a later transform
    /// quotes it (cut to a length it chooses the padding for), and the
    /// response scrub never sees the proxy's own answers. Only refusals and
    /// failures take this path, so the scrubber is built each time.
    pub fn redact_noted(&self, text: &str) -> Option<String> {
        if self.secret_values.is_empty() {
            return None;
        }
        let forms: Vec<String> = self
            .secret_values()
            .flat_map(|v| [v.to_owned(), v.to_ascii_lowercase(), v.to_ascii_uppercase()])
            .collect();
        let scrubber = crate::secrets::scrub::Scrubber::new(forms.iter().map(String::as_str));
        match scrubber.redact(text) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(s) => Some(s),
        }
    }

    /// [`Flow::redact_noted`] for the record's annotations and the MCP
    /// section, which every request with a noted value writes: only a string
    /// that holds a value's first or last [`REDACT_EDGE`] bytes, in any
    /// case (the whole value, when shorter), is searched. Fewer would find a
    /// value that starts with a word (`passphrase-...`) in a name that merely
    /// shares it (`x-echo-passphrase`, the response scrub's own annotation).
    fn redact_noted_record(&self, text: &str) -> Option<String> {
        let holds = self.secret_values().any(|v| {
            let v = v.as_bytes();
            let n = v.len().min(REDACT_EDGE);
            n > 0
                && (contains_any_case(text, &v[..n]) || contains_any_case(text, &v[v.len() - n..]))
        });
        if holds {
            self.redact_noted(text)
        } else {
            None
        }
    }

    /// [`Flow::redact_noted_record`] over every string in `value`.
    pub fn redact_noted_json(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some(r) = self.redact_noted_record(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_noted_json(v)),
            Value::Object(m) => m.values_mut().for_each(|v| self.redact_noted_json(v)),
            _ => {}
        }
    }

    /// Where the response's scrub runs: at the response hook of the first
    /// transform, in config order, that noted a value (its index and name),
    /// none when no value was noted.
    pub(crate) fn scrub_slot(&self) -> Option<(usize, &'static str)> {
        // Noted in pipeline order: the first is the earliest transform's.
        self.secret_values.first().map(|v| (v.by, v.transform))
    }

    /// Whether the response body is scrubbed too: some transform that put
    /// a value in this request has `scrub_response_bodies` on.
    pub(crate) fn scrubs_response_body(&self) -> bool {
        self.secret_values.iter().any(|v| v.scrub_body)
    }

    /// Adds `location` (`header:Authorization`, `query:key`) to the current
    /// transform's `already_set` annotation: an earlier credential transform
    /// set it in this request, so this one leaves it alone (the first in
    /// config order wins).
    pub fn note_already_set(&mut self, location: String) {
        let entry = self
            .annotations
            .entry("already_set")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(location));
        }
    }
}

/// A credential value a transform put into the request ([`Flow::note_secret_value`]).
struct NotedValue {
    value: crate::secrets::SecretValue,
    /// The index of the transform that put it there.
    by: usize,
    /// That transform's name.
    transform: &'static str,
    /// That transform's `scrub_response_bodies`.
    scrub_body: bool,
}

/// One step of the pipeline.
#[async_trait]
pub trait Transform: Send + Sync {
    /// Name shown in the audit trace.
    fn name(&self) -> &str;

    /// Whether the audit trace lists this transform when it continued without
    /// annotating anything. A stage that applies to few requests (the MCP
    /// interceptor) says no, and annotates when it applies.
    fn traced_when_idle(&self) -> bool {
        true
    }

    /// True when this transform refuses every request to `t`'s host,
    /// whatever its method and path (`t` is host-only). The MITM listeners
    /// then keep the connection's leaf out of the main leaf cache
    /// (`tls::cache`): made-up names no rule allows take no other client's
    /// place. A hint for where a leaf is kept, never a decision: every
    /// request is still checked in full.
    fn refuses_host(&self, _t: &Target<'_>) -> bool {
        false
    }

    /// True when this transform may answer a request to `t`'s host itself
    /// (a [`Verdict::Stub`]) before the transforms after it run: their
    /// refusal of the host ([`Transform::refuses_host`]) then does not count.
    fn may_answer_host(&self, _t: &Target<'_>) -> bool {
        false
    }

    /// Whether this transform needs the whole request body buffered for this request.
    fn wants_request_body(&self, _cx: &Flow, _req: &http::request::Parts) -> bool {
        false
    }

    /// How many leading bytes of this request's body this transform reads,
    /// when it needs only a prefix (it never rewrites the body). The pipeline
    /// reads that much (at most `proxy.max_request_body_bytes`) and streams
    /// the rest on after the request phase; see [`body_view`].
    fn request_body_prefix(&self, _cx: &Flow, _req: &http::request::Parts) -> Option<usize> {
        None
    }

    /// The transform that signs the buffered body of this request, if this
    /// one does: a body over `proxy.max_request_body_bytes` is then refused
    /// as `body_truncated` (what a signer reports), not as
    /// `request_body_too_large`.
    fn signs_request_body(&self, _cx: &Flow, _req: &http::request::Parts) -> bool {
        false
    }

    /// Whether this transform needs the whole response body buffered.
    fn wants_response_body(&self, _cx: &Flow) -> bool {
        false
    }

    /// Request phase. A buffered body is available as `Full` bytes through [`body_bytes`].
    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError>;

    /// Response phase.
    async fn on_response(
        &self,
        _rsp: &mut Response<Body>,
        _cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        Ok(Verdict::Continue)
    }
}

/// The outcome of a pipeline phase.
pub enum PhaseOutcome {
    /// Every transform continued.
    Continue,
    /// A transform rejected; its name and the rejection.
    Reject(String, Rejection),
    /// A transform answered locally.
    Stub(String, Response<Body>),
    /// A transform failed; the request fails closed.
    Fail(String, TransformError),
}

/// An immutable, ordered list of transforms.
#[derive(Default, Clone)]
pub struct Pipeline {
    transforms: Vec<Arc<dyn Transform>>,
    /// Each transform's duration histogram, by the transform's index; empty
    /// without metrics.
    timers: Vec<crate::ops::metrics::TransformTimer>,
}

impl Pipeline {
    /// A pipeline running `transforms` in this order.
    pub fn new(transforms: Vec<Arc<dyn Transform>>) -> Self {
        Pipeline {
            transforms,
            timers: Vec::new(),
        }
    }

    /// Records each transform's duration in `iron_proxy_transform_duration_seconds`
    /// (each transform's series is looked up here, once, not per request).
    pub fn with_metrics(mut self, metrics: Arc<crate::ops::Metrics>) -> Self {
        self.timers = self
            .transforms
            .iter()
            .map(|t| metrics.transform_timer(t.name()))
            .collect();
        self
    }

    /// The transforms, in order.
    pub fn transforms(&self) -> &[Arc<dyn Transform>] {
        &self.transforms
    }

    /// True when every request to `t`'s host (host-only) is refused,
    /// whatever its method and path: a transform refuses the host
    /// ([`Transform::refuses_host`]) and none before it may answer such a
    /// request itself. A few hash lookups with an allowlist, no allocation.
    pub fn refuses_host(&self, t: &Target<'_>) -> bool {
        for transform in &self.transforms {
            if transform.may_answer_host(t) {
                return false;
            }
            if transform.refuses_host(t) {
                return true;
            }
        }
        false
    }

    /// True when some transform needs the request body of this request.
    pub fn wants_request_body(&self, cx: &Flow, parts: &http::request::Parts) -> bool {
        self.transforms
            .iter()
            .any(|t| t.wants_request_body(cx, parts))
    }

    /// How much of this request's body the transforms read: all of it when
    /// one wants it whole, else the longest prefix one asks for.
    pub fn body_need(&self, cx: &Flow, parts: &http::request::Parts) -> BodyNeed {
        if self.wants_request_body(cx, parts) {
            return BodyNeed::Full;
        }
        self.transforms
            .iter()
            .filter_map(|t| t.request_body_prefix(cx, parts))
            .max()
            .map_or(BodyNeed::None, BodyNeed::Prefix)
    }

    /// The name of the first transform that signs this request's body, if any.
    pub fn body_signer(&self, cx: &Flow, parts: &http::request::Parts) -> Option<&str> {
        self.transforms
            .iter()
            .find(|t| t.signs_request_body(cx, parts))
            .map(|t| t.name())
    }

    /// The first transform that needs this request's whole body: a body over
    /// `proxy.max_request_body_bytes` is refused on its behalf
    /// (`request_body_too_large`, `rejected_by` this name).
    pub fn body_wanter(&self, cx: &Flow, parts: &http::request::Parts) -> Option<&str> {
        self.transforms
            .iter()
            .find(|t| t.wants_request_body(cx, parts))
            .map(|t| t.name())
    }

    /// True when some transform needs the response body.
    pub fn wants_response_body(&self, cx: &Flow) -> bool {
        self.transforms.iter().any(|t| t.wants_response_body(cx))
    }

    /// Runs the request phase, appending to `trace`.
    pub async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
        trace: &mut Vec<TransformTrace>,
    ) -> PhaseOutcome {
        for (i, t) in self.transforms.iter().enumerate() {
            cx.annotations = Map::new();
            cx.running = i;
            let started = Instant::now();
            let result = t.on_request(req, cx).await;
            self.time(i, false, started);
            if let Some(o) = self.settle(t.as_ref(), result, cx, trace, true) {
                return o;
            }
        }
        PhaseOutcome::Continue
    }

    /// Runs the response phase, appending to `trace` only the transforms that
    /// did something in it.
    ///
    /// When transforms put credential values in the request, the response is
    /// scrubbed of all of them once ([`crate::scrub_response`]), just before
    /// the response hook of the first of those transforms in config order:
    /// its trace entry carries the scrub's annotations, the hooks after it
    /// (and the client) see the scrubbed response. A request given no value
    /// pays one look at an empty list.
    pub async fn on_response(
        &self,
        rsp: &mut Response<Body>,
        cx: &mut Flow,
        trace: &mut Vec<TransformTrace>,
    ) -> PhaseOutcome {
        let scrub = cx.scrub_slot();
        for (i, t) in self.transforms.iter().enumerate() {
            cx.annotations = Map::new();
            let started = Instant::now();
            let result = match scrub {
                Some((at, by)) if at == i => match crate::scrub_response::scrub(rsp, cx, by) {
                    Ok(()) => t.on_response(rsp, cx).await,
                    Err(e) => Err(e),
                },
                _ => t.on_response(rsp, cx).await,
            };
            self.time(i, true, started);
            if let Some(o) = self.settle(t.as_ref(), result, cx, trace, false) {
                return o;
            }
        }
        PhaseOutcome::Continue
    }

    /// Records how long the transform at index `i` ran in one phase
    /// (`response`: its response hook), with metrics.
    fn time(&self, i: usize, response: bool, started: Instant) {
        if let Some(timer) = self.timers.get(i) {
            timer.observe(response, started.elapsed());
        }
    }

    /// Records one transform's outcome (trace entry) and says whether
    /// the phase stops here.
    fn settle(
        &self,
        t: &dyn Transform,
        result: Result<Verdict, TransformError>,
        cx: &mut Flow,
        trace: &mut Vec<TransformTrace>,
        always_trace: bool,
    ) -> Option<PhaseOutcome> {
        let name = || t.name().to_string();
        let (action, mut outcome) = match result {
            Ok(Verdict::Continue) => ("continue", None),
            Ok(Verdict::Reject(r)) => ("reject", Some(PhaseOutcome::Reject(name(), r))),
            Ok(Verdict::Stub(rsp)) => ("stub", Some(PhaseOutcome::Stub(name(), rsp))),
            Err(e) => ("error", Some(PhaseOutcome::Fail(name(), e))),
        };
        if !cx.secret_values.is_empty() {
            // What this transform wrote may quote a header or parameter an
            // earlier one put a credential in.
            let text = match &mut outcome {
                Some(PhaseOutcome::Reject(_, r)) => Some(&mut r.message),
                Some(PhaseOutcome::Fail(_, e)) => Some(&mut e.detail),
                _ => None,
            };
            if let Some(text) = text {
                if let Some(r) = cx.redact_noted(text) {
                    *text = r;
                }
            }
            let mut notes = std::mem::take(&mut cx.annotations);
            notes.values_mut().for_each(|v| cx.redact_noted_json(v));
            cx.annotations = notes;
        }
        let traced = always_trace && t.traced_when_idle();
        // An annotation computed when the exchange ends needs the entry.
        let late = cx.late_audit.iter().any(|f| f.awaits_trace());
        if traced || late || action != "continue" || !cx.annotations.is_empty() {
            if late {
                let index = trace.len();
                for f in cx.late_audit.iter_mut() {
                    f.place_in_trace(!always_trace, index);
                }
            }
            trace.push(TransformTrace {
                name: name(),
                action,
                annotations: std::mem::take(&mut cx.annotations),
            });
        }
        outcome
    }
}

/// How much of a noted value's start or end the proxy's own text must hold
/// for [`Flow::redact_noted`] to search it.
const REDACT_EDGE: usize = 16;

/// Whether `text` holds `needle`, ASCII letters in either case.
fn contains_any_case(text: &str, needle: &[u8]) -> bool {
    text.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The buffered bytes of a body, when the pipeline buffered it.
///
/// The pipeline replaces a buffered body with a `Full` body and records the
/// bytes in the request extensions, so transforms can read and rewrite them.
#[derive(Clone, Debug)]
pub struct BufferedBody(pub bytes::Bytes);

/// The buffered request body, if the pipeline buffered it for this request.
pub fn body_bytes<T>(msg: &http::Request<T>) -> Option<&bytes::Bytes> {
    msg.extensions().get::<BufferedBody>().map(|b| &b.0)
}

/// How much of a request body the pipeline reads before the request phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyNeed {
    /// None: the body streams through.
    None,
    /// The first bytes (at least this many, when the body has them); the
    /// rest streams on after the request phase.
    Prefix(usize),
    /// All of it, buffered ([`BufferedBody`]).
    Full,
}

/// The first bytes of a request body the pipeline read for transforms that
/// need only a prefix. Unlike [`BufferedBody`] it is never the body that is
/// sent: rewriting it would cut the body short, so only readers use it.
#[derive(Clone, Debug)]
pub struct BodyPrefix {
    /// The bytes read.
    pub bytes: bytes::Bytes,
    /// Whether they are the whole body.
    pub complete: bool,
}

/// The request body as far as the pipeline read it: the buffered body
/// (complete), or the prefix read for [`Transform::request_body_prefix`]
/// and whether it is complete.
pub fn body_view<T>(msg: &http::Request<T>) -> Option<(&bytes::Bytes, bool)> {
    if let Some(b) = body_bytes(msg) {
        return Some((b, true));
    }
    msg.extensions()
        .get::<BodyPrefix>()
        .map(|p| (&p.bytes, p.complete))
}

/// The request body as the client sent it, before any transform rewrote it.
/// It never holds a real credential (the workload has none), so it is what
/// may be echoed back or written to the audit record.
#[derive(Clone, Debug)]
pub struct OriginalBody(pub bytes::Bytes);

/// The buffered request body as the client sent it (see [`OriginalBody`]).
pub fn original_body_bytes<T>(msg: &http::Request<T>) -> Option<&bytes::Bytes> {
    msg.extensions().get::<OriginalBody>().map(|b| &b.0)
}

/// A flow to `host` on port 443 over TLS, for transform tests.
#[cfg(test)]
pub(crate) fn test_flow(host: &str, method: &str, path: &str) -> Flow {
    Flow::new(
        Dest {
            host: host.into(),
            ip: None,
            port: 443,
            tls: true,
        },
        method.into(),
        path.into(),
    )
}

/// The trailers of a buffered body, kept so that a rewritten body still
/// ends with them.
#[derive(Clone, Debug)]
pub struct BodyTrailers(pub http::HeaderMap);

/// Replaces a buffered request body (keeps the extension, the trailers and
/// Content-Length in step).
pub fn set_body_bytes(req: &mut Request<Body>, bytes: bytes::Bytes) {
    let len = bytes.len();
    req.extensions_mut().insert(BufferedBody(bytes.clone()));
    let trailers = req.extensions().get::<BodyTrailers>().map(|t| t.0.clone());
    *req.body_mut() = body::with_trailers(bytes, trailers);
    if req.headers().contains_key(http::header::CONTENT_LENGTH) {
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
}

#[cfg(test)]
mod redact_tests;

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, fn() -> Verdict);
    #[async_trait]
    impl Transform for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        async fn on_request(
            &self,
            _req: &mut Request<Body>,
            cx: &mut Flow,
        ) -> Result<Verdict, TransformError> {
            cx.annotate("seen", true);
            Ok((self.1)())
        }
    }

    fn flow() -> Flow {
        Flow::new(
            Dest {
                host: "a.test".into(),
                ip: None,
                port: 80,
                tls: false,
            },
            "GET".into(),
            "/".into(),
        )
    }

    #[tokio::test]
    async fn first_reject_short_circuits() {
        let p = Pipeline::new(vec![
            Arc::new(Fixed("one", || Verdict::Continue)),
            Arc::new(Fixed("two", || {
                Verdict::Reject(Rejection::forbidden("no", "no"))
            })),
            Arc::new(Fixed("three", || Verdict::Continue)),
        ]);
        let mut req = Request::new(body::empty());
        let mut trace = Vec::new();
        let out = p.on_request(&mut req, &mut flow(), &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Reject(ref n, _) if n == "two"));
        let names: Vec<_> = trace.iter().map(|t| (t.name.as_str(), t.action)).collect();
        assert_eq!(names, [("one", "continue"), ("two", "reject")]);
        assert_eq!(trace[0].annotations["seen"], true);
    }

    /// Answers requests to `token.test` itself (as `oauth_token` does its endpoint's).
    struct Answers;
    #[async_trait]
    impl Transform for Answers {
        fn name(&self) -> &str {
            "answers"
        }
        fn may_answer_host(&self, t: &Target<'_>) -> bool {
            t.host == "token.test"
        }
        async fn on_request(
            &self,
            _req: &mut Request<Body>,
            _cx: &mut Flow,
        ) -> Result<Verdict, TransformError> {
            Ok(Verdict::Continue)
        }
    }

    #[test]
    fn a_host_is_refused_unless_a_transform_before_may_answer_it() {
        let allow: Arc<dyn Transform> = Arc::new(crate::transforms::allowlist::Allowlist::new(
            vec!["a.test".parse().expect("pattern")],
            vec![],
            vec![],
            false,
        ));
        let t = |h| crate::rules::target(h, "", "");
        let before = Pipeline::new(vec![Arc::new(Answers), allow.clone()]);
        assert!(!before.refuses_host(&t("a.test")));
        assert!(before.refuses_host(&t("b.test")));
        assert!(
            !before.refuses_host(&t("token.test")),
            "answered before the allowlist runs"
        );
        let after = Pipeline::new(vec![allow, Arc::new(Answers)]);
        assert!(
            after.refuses_host(&t("token.test")),
            "refused before it is answered"
        );
        assert!(
            !Pipeline::default().refuses_host(&t("b.test")),
            "no allowlist, nothing refused"
        );
    }

    /// With metrics, each transform's run is timed into its own series, one
    /// per phase: the series are resolved when the pipeline is built, by
    /// the transform's index.
    #[tokio::test]
    async fn each_transform_is_timed_in_its_own_series() {
        let metrics = Arc::new(crate::ops::Metrics::new());
        let p = Pipeline::new(vec![
            Arc::new(Fixed("one", || Verdict::Continue)),
            Arc::new(Fixed("two", || Verdict::Continue)),
        ])
        .with_metrics(metrics.clone());
        let (mut trace, mut cx) = (Vec::new(), flow());
        for _ in 0..3 {
            let mut req = Request::new(body::empty());
            let out = p.on_request(&mut req, &mut cx, &mut trace).await;
            assert!(matches!(out, PhaseOutcome::Continue));
        }
        let mut rsp = Response::new(body::empty());
        let out = p.on_response(&mut rsp, &mut cx, &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Continue));
        let text = metrics.encode_prometheus();
        for name in ["one", "two"] {
            for (phase, n) in [("request", 3), ("response", 1)] {
                let line = format!(
                    "iron_proxy_transform_duration_seconds_count{{transform=\"{name}\",phase=\"{phase}\"}} {n}"
                );
                assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
            }
        }
    }
}
