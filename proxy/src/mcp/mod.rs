//! MCP interception (the top-level `mcp:` block): a default-deny tool
//! allowlist for Streamable HTTP MCP servers. It runs as the last stage of the
//! pipeline, after every configured transform, so the allowlist has already
//! admitted the host and `secrets` has already swapped proxy tokens:
//!
//! - request: the JSON-RPC body of a request a server policy covers is parsed
//!   strictly; a `tools/call` the policy does not allow is answered with the
//!   configured JSON-RPC error (same id) and never reaches the server. A
//!   batch with one denied call is refused whole. A body that is not JSON-RPC
//!   is refused too (fail closed: the server might read it otherwise).
//! - response: `tools/list` answers lose the tools the policy denies, in
//!   JSON bodies and, event by event, in `text/event-stream`. It fails
//!   closed: an answer read as clients read it (`media.rs`, `ids.rs`) that
//!   the filter cannot judge is refused (`mcp_unfilterable_response`), never
//!   passed on.
//! - audit: the record gets a top-level `mcp` section with the server policy
//!   and one entry per JSON-RPC message seen. Ids, tool names and error
//!   envelopes come from the body as the client sent it, never from the
//!   rewritten one: a proxy token swapped into an id must not come back to the
//!   workload (or reach the log) as the real credential.

pub mod filter;
pub mod ids;
pub mod jsonrpc;
pub mod media;
pub mod policy;
pub mod sse;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::audit::LateField;
use crate::body::{self, Body, BufferError};
use crate::config::{McpConfig, McpErrorConfig};
use crate::pipeline::{
    body_bytes, original_body_bytes, Flow, Rejection, Transform, TransformError, Verdict,
};
use filter::{ListId, Want};
use jsonrpc::Message;
use media::Kind;
use policy::{Decision, ServerPolicy};

/// The largest answer (a JSON answer, decoded, or one event of a stream)
/// the filter holds while `proxy.max_response_body_bytes` is 0 (unlimited):
/// the filter has to hold it whole, and a server is not trusted to bound it.
const HELD_LIMIT: usize = 16 << 20;

/// Audit entries kept per exchange; the rest are counted.
const MAX_ENTRIES: usize = 64;

/// The audit reason of an answer the interceptor could not filter.
pub const UNFILTERABLE_REASON: &str = "mcp_unfilterable_response";

/// The JSON-RPC error message a client gets for such an answer.
pub const UNFILTERABLE: &str = "iron-proxy: the MCP server's answer could not be filtered";

/// The interceptor, built from the `mcp:` block.
pub struct McpInterceptor {
    servers: Vec<Arc<ServerPolicy>>,
    error: McpErrorConfig,
    max_request: usize,
    max_response: usize,
}

/// What the request phase leaves for the response phase.
#[derive(Clone)]
struct McpState {
    server: Arc<ServerPolicy>,
    want: Option<Want>,
    log: Arc<McpLog>,
}

/// The `mcp` section of one audit record, filled as messages go by (a
/// streamed response adds to it until it ends).
pub struct McpLog {
    server: String,
    entries: Mutex<(Vec<Value>, usize)>,
}

impl McpLog {
    /// An empty section for the policy `server`.
    pub fn new(server: &str) -> Self {
        McpLog {
            server: server.to_string(),
            entries: Mutex::new((Vec::new(), 0)),
        }
    }

    /// Adds one message entry (counted only, past [`MAX_ENTRIES`]).
    pub fn push(&self, entry: Value) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.0.len() < MAX_ENTRIES {
            e.0.push(entry);
        } else {
            e.1 += 1;
        }
    }

    /// The section as it stands.
    pub fn to_value(&self) -> Value {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut v = json!({"server": self.server, "messages": e.0});
        if e.1 > 0 {
            v["messages_omitted"] = Value::from(e.1);
        }
        v
    }

    fn late_field(self: &Arc<Self>) -> LateField {
        let log = self.clone();
        LateField::top("mcp", Arc::new(move || Some(log.to_value())))
    }
}

impl McpInterceptor {
    /// The interceptor for `cfg`, with the proxy's body limits (0: none).
    pub fn new(cfg: &McpConfig, max_request: usize, max_response: usize) -> Self {
        McpInterceptor {
            servers: cfg
                .servers
                .iter()
                .map(|s| Arc::new(ServerPolicy::new(s)))
                .collect(),
            error: cfg.error.clone(),
            max_request,
            max_response,
        }
    }

    /// The first server policy covering this request.
    fn server_for(&self, cx: &Flow) -> Option<&Arc<ServerPolicy>> {
        if cx.precheck {
            return None;
        }
        let t = cx.target();
        self.servers.iter().find(|s| s.covers(&t))
    }

    /// A JSON response refusing the request. Its text may quote the request
    /// as earlier transforms left it (an id, a header): any credential they
    /// put in it is masked (`Flow::redact_noted`).
    fn refuse(
        cx: &Flow,
        status: StatusCode,
        reason: &str,
        message: String,
        body: String,
    ) -> Verdict {
        let message = cx.redact_noted(&message).unwrap_or(message);
        let body = cx.redact_noted(&body).unwrap_or(body);
        let mut rsp = Response::new(body::full(body));
        *rsp.status_mut() = status;
        let h = rsp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-iron-proxy-blocked", HeaderValue::from_static("1"));
        Verdict::Reject(Rejection {
            status,
            reason: reason.into(),
            message,
            answer: Some(Box::new(rsp)),
        })
    }

    /// Refuses a body that is not JSON-RPC the interceptor can judge.
    fn refuse_unreadable(cx: &mut Flow, log: &McpLog, code: i64, detail: String) -> Verdict {
        let detail = cx.redact_noted(&detail).unwrap_or(detail);
        cx.annotate("rejected", "mcp_invalid_request");
        log.push(json!({"from": "client", "decision": "deny", "reason": detail}));
        Self::refuse(
            cx,
            StatusCode::BAD_REQUEST,
            "mcp_invalid_request",
            detail.clone(),
            jsonrpc::error(None, code, &format!("iron-proxy: {detail}")),
        )
    }
}

/// Why a request to a covered path cannot be inspected as the server will
/// read it, if it cannot (found by session 47's review):
///
/// - an upgrade (WebSocket): the connection would be spliced, and an SDK's
///   WebSocket transport would carry calls the filter never sees;
/// - a GET with a body: a GET opens the server's stream, whose answers are
///   filtered by their shape only when it carries nothing (the body would
///   be taken for the request, and a replayed `tools/list` passed whole);
/// - a `charset` other than UTF-8 on the body: the TypeScript SDK and
///   `express.json()` decode the body in the charset the request names
///   (UTF-7 included), so the server would read other JSON than the filter
///   parses (`"name"` twice, the second hidden in UTF-7).
fn uninspectable(req: &Request<Body>, method: &str, body: &Bytes) -> Option<String> {
    if req.headers().contains_key(http::header::UPGRADE) {
        return Some("an upgrade (WebSocket) to an MCP endpoint is not inspected".into());
    }
    if method == "GET" && !body.is_empty() {
        return Some("a GET to an MCP endpoint carries no body".into());
    }
    if !body.is_empty() {
        if let Some(charset) = media::other_charset(req.headers()) {
            return Some(format!(
                "the request body's charset {charset:?} is not UTF-8, which the filter reads"
            ));
        }
    }
    None
}

/// Asks the server for an answer without content coding: `identity`
/// explicitly, since a request without `Accept-Encoding` accepts any coding
/// (RFC 9110 §12.5.3). A server that compresses anyway is still decoded.
fn ask_identity(req: &mut Request<Body>) {
    req.headers_mut()
        .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
}

/// A request or response body (`what`) decoded per its `Content-Encoding`
/// (none, gzip, deflate, br, zstd), at most `cap` bytes (`0`: no cap), the
/// setting named `limit`.
/// The most the filter holds of a body the proxy limits by `proxy.{key}`
/// (`configured`, 0 for no limit): that limit, or [`HELD_LIMIT`]; and how
/// to name it in an error.
fn held_limit(configured: usize, key: &str) -> (usize, String) {
    match configured {
        0 => (
            HELD_LIMIT,
            format!(
                "the {} MiB the MCP filter holds (proxy.{key} is 0)",
                HELD_LIMIT >> 20
            ),
        ),
        n => (n, format!("proxy.{key} ({n} bytes)")),
    }
}

fn decoded(
    headers: &http::HeaderMap,
    bytes: &Bytes,
    cap: usize,
    what: &str,
    limit: &str,
) -> Result<Bytes, String> {
    let enc = crate::transforms::body_capture::content_encodings(headers);
    if enc.is_empty() {
        return Ok(bytes.clone());
    }
    let out = crate::transforms::body_capture::decode(bytes, &enc, cap)
        .map_err(|e| format!("the {what} cannot be decoded ({e})"))?;
    if out.len() > cap {
        return Err(format!("the decoded {what} exceeds {limit}"));
    }
    Ok(Bytes::from(out))
}

#[async_trait]
impl Transform for McpInterceptor {
    fn name(&self) -> &str {
        "mcp"
    }

    fn traced_when_idle(&self) -> bool {
        false
    }

    fn wants_request_body(&self, cx: &Flow, _req: &http::request::Parts) -> bool {
        self.server_for(cx).is_some()
    }

    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        let Some(server) = self.server_for(cx).cloned() else {
            return Ok(Verdict::Continue);
        };
        cx.annotate("server", server.name.clone());
        let log = Arc::new(McpLog::new(&server.name));
        cx.late_audit.push(log.late_field());
        let body = body_bytes(req).cloned().unwrap_or_default();
        if let Some(why) = uninspectable(req, &cx.method, &body) {
            return Ok(Self::refuse_unreadable(
                cx,
                &log,
                jsonrpc::INVALID_REQUEST,
                why,
            ));
        }
        let sent = original_body_bytes(req)
            .cloned()
            .unwrap_or_else(|| body.clone());
        let mut state = McpState {
            server: server.clone(),
            want: None,
            log: log.clone(),
        };
        if body.is_empty() {
            // A GET opens the server's stream: answers there cannot be matched
            // to a request this proxy saw, so they are judged by their shape.
            if cx.method == "GET" {
                state.want = Some(Want::Shape);
                ask_identity(req);
            }
            cx.ext.insert(state);
            return Ok(Verdict::Continue);
        }
        // The body as sent is decoded again only when a transform rewrote it.
        let decode = |b: &Bytes| {
            let (cap, limit) = held_limit(self.max_request, "max_request_body_bytes");
            decoded(req.headers(), b, cap, "request body", &limit)
        };
        let (text, sent_text) = match decode(&body).and_then(|t| {
            let s = if sent == body {
                t.clone()
            } else {
                decode(&sent)?
            };
            Ok((t, s))
        }) {
            Ok(pair) => pair,
            Err(e) => return Ok(Self::refuse_unreadable(cx, &log, jsonrpc::PARSE_ERROR, e)),
        };
        let parsed = match jsonrpc::parse(&text) {
            Ok(p) => p,
            Err(e) => {
                let code = match e {
                    jsonrpc::ParseError::Json(_) => jsonrpc::PARSE_ERROR,
                    jsonrpc::ParseError::Shape(_) => jsonrpc::INVALID_REQUEST,
                };
                return Ok(Self::refuse_unreadable(cx, &log, code, e.to_string()));
            }
        };
        // Labels (ids, names) from the body as sent; see the module doc.
        let labels = if sent_text == text {
            Some(parsed.clone())
        } else {
            jsonrpc::parse(&sent_text)
                .ok()
                .filter(|l| l.messages.len() == parsed.messages.len())
        };
        let label = |i: usize| labels.as_ref().and_then(|l| l.messages.get(i));
        // Ids to echo, as raw text: a large number must come back digit for digit.
        let raw_ids = labels
            .as_ref()
            .and_then(|_| jsonrpc::raw_ids(&sent_text))
            .filter(|ids| ids.len() == parsed.messages.len());
        let raw_id = |i: usize| raw_ids.as_ref().and_then(|ids| ids.get(i)?.as_deref());
        let mut denied = 0;
        let mut list_ids = Vec::new();
        for (i, msg) in parsed.messages.iter().enumerate() {
            let shown = label(i);
            let mut entry = json!({
                "from": "client",
                "kind": msg.kind(),
                "decision": "forward",
            });
            if let Some(m) = shown.and_then(Message::method) {
                entry["method"] = Value::from(m);
            }
            if let Some(id) = shown.map(Message::id).filter(|id| !id.is_null()) {
                entry["id"] = recorded_id(id, raw_id(i));
            }
            match msg {
                Message::Request { method, params, .. }
                | Message::Notification { method, params }
                    if method == "tools/call" =>
                {
                    let tool = params.get("name").and_then(Value::as_str);
                    let shown_tool = shown.and_then(|m| match m {
                        Message::Request { params, .. } | Message::Notification { params, .. } => {
                            params.get("name").and_then(Value::as_str)
                        }
                        Message::Response { .. } => None,
                    });
                    if let Some(t) = shown_tool {
                        entry["tool"] = Value::from(t);
                    }
                    let args = params.get("arguments").unwrap_or(&Value::Null);
                    let decision = match tool {
                        Some(t) => server.decide(t, args),
                        None => Decision::Deny("the call names no tool".into()),
                    };
                    match decision {
                        Decision::Allow => entry["decision"] = Value::from("allow"),
                        Decision::Deny(why) => {
                            denied += 1;
                            entry["decision"] = Value::from("deny");
                            entry["reason"] = Value::from(why);
                        }
                    }
                }
                Message::Request { id, method, .. } if method == "tools/list" => {
                    list_ids.push(ListId {
                        id: id.clone(),
                        sent: raw_id(i).unwrap_or(RawValue::NULL).to_owned(),
                    });
                }
                _ => {}
            }
            // The workload's own words (tool names, ids), as earlier
            // transforms left them.
            cx.redact_noted_json(&mut entry);
            log.push(entry);
        }
        if denied > 0 {
            cx.annotate("rejected", "mcp_tool_denied");
            cx.annotate("denied_calls", denied);
            let envelope =
                |i: usize| jsonrpc::error(raw_id(i), self.error.code, &self.error.message);
            let body = if parsed.batch {
                let all: Vec<String> = (0..parsed.messages.len()).map(envelope).collect();
                format!("[{}]", all.join(","))
            } else {
                envelope(0)
            };
            return Ok(Self::refuse(
                cx,
                StatusCode::OK,
                "mcp_tool_denied",
                self.error.message.clone(),
                body,
            ));
        }
        if !list_ids.is_empty() {
            state.want = Some(Want::Ids(list_ids));
            // Answers must come back readable to be filtered.
            ask_identity(req);
        }
        cx.ext.insert(state);
        Ok(Verdict::Continue)
    }

    async fn on_response(
        &self,
        rsp: &mut Response<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        let Some(McpState {
            server,
            want: Some(want),
            log,
        }) = cx.ext.remove::<McpState>()
        else {
            return Ok(Verdict::Continue);
        };
        if !rsp.status().is_success() {
            return Ok(Verdict::Continue);
        }
        let unfilterable = |detail: String| {
            log.push(
                json!({"from": "server", "kind": "response", "decision": "deny",
                "reason": detail}),
            );
            TransformError {
                status: StatusCode::BAD_GATEWAY,
                reason: UNFILTERABLE_REASON,
                detail,
            }
        };
        let kind = match (&want, media::kind(rsp.headers())) {
            // The stream opened with GET: the TypeScript SDK reads it as an
            // event stream whatever its type, so it is filtered as one.
            (Want::Shape, Kind::SseOtherCharset) => Kind::SseOtherCharset,
            (Want::Shape, _) => Kind::Sse,
            (Want::Ids(_), k) => k,
        };
        // Asked for identity, a server may still compress: a JSON answer is
        // decoded (and sent on plain); an encoded event stream is refused.
        let encoded = !crate::transforms::body_capture::codings(
            &crate::transforms::body_capture::content_encodings(rsp.headers()),
        )
        .is_empty();
        let shown = || {
            let ct = media::content_type(rsp.headers());
            let ct: String = ct.chars().take(80).collect();
            format!("{ct:?}")
        };
        match kind {
            Kind::Json => {
                let b = std::mem::replace(rsp.body_mut(), body::empty());
                let (cap, limit) = held_limit(self.max_response, "max_response_body_bytes");
                let bytes = body::collect(b, cap).await.map_err(|e| match e {
                    BufferError::TooLarge { .. } => {
                        unfilterable(format!("the tools/list answer exceeds {limit}"))
                    }
                    // `collect` sets no idle limit nor budget: these arms are for completeness.
                    e @ (BufferError::Read(_) | BufferError::Idle(_) | BufferError::Budget(_)) => {
                        TransformError {
                            status: StatusCode::BAD_GATEWAY,
                            reason: "upstream_body_error",
                            detail: format!(
                                "reading the MCP server's answer: {}",
                                crate::error_chain(&e)
                            ),
                        }
                    }
                })?;
                let bytes = decoded(rsp.headers(), &bytes, cap, "tools/list answer", &limit)
                    .map_err(&unfilterable)?;
                rsp.headers_mut().remove(CONTENT_ENCODING);
                let out = filter::filter(&bytes, &want, &server)
                    .map_err(|e| unfilterable(format!("the tools/list answer: {e}")))?;
                for seen in out.seen {
                    log.push(seen);
                }
                let bytes = out.rewritten.map_or(bytes, Bytes::from);
                rsp.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                *rsp.body_mut() = body::full(bytes);
            }
            Kind::Sse if encoded => {
                return Err(unfilterable(format!(
                    "the MCP server encoded a {} answer although asked for identity",
                    shown()
                )));
            }
            Kind::Sse => {
                let b = std::mem::replace(rsp.body_mut(), body::empty());
                rsp.headers_mut().remove(CONTENT_LENGTH);
                // An unbounded stream still gets a bound on the one event it holds.
                let (limit, _) = held_limit(self.max_response, "max_response_body_bytes");
                *rsp.body_mut() = body::boxed(sse::SseFilter::new(b, want, server, log, limit));
            }
            Kind::SseOtherCharset => {
                return Err(unfilterable(format!(
                    "the MCP server answered as {}: an event stream not in UTF-8",
                    shown()
                )));
            }
            Kind::Ambiguous => {
                return Err(unfilterable(format!(
                    "the MCP server answered tools/list as {}, which clients read as JSON or as an event stream",
                    shown()
                )));
            }
            Kind::Other => {
                return Err(unfilterable(format!(
                    "the MCP server answered tools/list as {}, neither JSON nor an event stream",
                    shown()
                )));
            }
        }
        Ok(Verdict::Continue)
    }
}

/// A JSON-RPC id as the record shows it: as parsed, or as the text the
/// client sent when the parsed number would not write back to it (beyond
/// 64-bit integers, or more digits than a float keeps:
/// `12345678901234567890123` read as `1.2345678901234568e22`), so that two
/// ids never look alike in the log.
fn recorded_id(id: &Value, raw: Option<&serde_json::value::RawValue>) -> Value {
    match raw {
        Some(raw) if id.is_number() && *id.to_string() != *raw.get() => Value::from(raw.get()),
        _ => id.clone(),
    }
}

#[cfg(test)]
mod tests;
