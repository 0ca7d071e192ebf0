//! The `grpc` transform: request and response processing delegated to an
//! external TransformService server (proxy/proto/transform/v1/transform.proto).
//!
//! For a request its `rules` match (all requests when empty) it calls
//! `TransformRequest` with the request (its body only with
//! `send_request_body`); for the response, `TransformResponse` (the body
//! only with `send_response_body`). The server continues, possibly changing
//! the message, or rejects, possibly with its own response. Its annotations
//! go to the transform's audit trace entry. A failed call (server down,
//! error status, deadline) fails the request closed: 502
//! `grpc_transform_failed`.
//!
//! A server may change a request's method, path and query, headers and body,
//! but not where it goes: a modified URL naming another scheme, host or port
//! fails closed, since the allowlist ran on the original destination.

mod convert;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Request, Response, StatusCode};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::body::{self, Body};
use crate::config::GrpcConfig;
use crate::pipeline::{
    body_bytes, policy_response, set_body_bytes, BodyTrailers, Flow, Rejection, Transform,
    TransformError, Verdict,
};
use crate::rules::Scope;
use convert::{annotate, context, headers_to_wire, replace_headers, response_from_wire};
use wire::{HttpRequest, HttpResponse, TransformAction};

/// Deadline of one call to the server.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline to connect to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the transform cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A TLS file could not be read.
    #[error("grpc transform '{name}': reading {what} {path}")]
    Read {
        /// The transform's name.
        name: String,
        /// `ca_cert`, `cert` or `key`.
        what: &'static str,
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file holds nothing of what its field needs.
    #[error("grpc transform '{name}': tls.{what} {path}: {why}")]
    Pem {
        /// The transform's name.
        name: String,
        /// `ca_cert`, `cert` or `key`.
        what: &'static str,
        /// The path.
        path: String,
        /// What is wrong (never the file's contents).
        why: String,
    },
    /// The target was refused by the gRPC client.
    #[error("grpc transform '{name}': invalid target {target:?}: {detail}")]
    Target {
        /// The transform's name.
        name: String,
        /// The target as configured, without a user, password or query.
        target: String,
        /// What was wrong.
        detail: String,
    },
    /// The TLS settings were refused by the gRPC client.
    #[error("grpc transform '{name}': TLS settings: {detail}")]
    Tls {
        /// The transform's name.
        name: String,
        /// What was wrong.
        detail: String,
    },
}

impl BuildError {
    /// The field at fault, within the transform's `config`.
    pub fn field(&self) -> String {
        match self {
            BuildError::Read { what, .. } | BuildError::Pem { what, .. } => format!("tls.{what}"),
            BuildError::Target { .. } => "target".into(),
            BuildError::Tls { .. } => "tls".into(),
        }
    }
}

/// Whether `bytes` hold PEM certificates (`key`: a private key), and if
/// not, why, in our words: the PEM parser's own quote the file (a byte of
/// key material in a bad key file).
fn check_pem(bytes: &[u8], key: bool) -> Result<(), String> {
    const MALFORMED: &str = "a malformed or unterminated PEM section";
    if key {
        return match rustls_pemfile::private_key(&mut &bytes[..]) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("no PEM private key in the file".into()),
            Err(_) => Err(format!("not a readable PEM private key ({MALFORMED})")),
        };
    }
    let mut n = 0;
    for c in rustls_pemfile::certs(&mut &bytes[..]) {
        c.map_err(|_| format!("not readable PEM ({MALFORMED})"))?;
        n += 1;
    }
    if n == 0 {
        return Err("no PEM certificate in the file".into());
    }
    Ok(())
}

/// A built `grpc` transform.
pub struct GrpcTransform {
    name: String,
    rules: Scope,
    send_request_body: bool,
    send_response_body: bool,
    channel: Channel,
    /// `proxy.max_response_body_bytes` (0: none): the most of a response
    /// body the response hook reads, when the exchange did not buffer it
    /// already (a server's rewrite moved the request into these rules after
    /// the proxy decided what to buffer).
    max_response: usize,
}

/// The requests as sent in the request phase, by transform, kept for
/// `TransformResponse` (each transform takes its own out).
#[derive(Clone, Default)]
struct Sent(Vec<(usize, HttpRequest)>);

/// An answer's action must be one the proto defines: a server built from a
/// newer or forked proto (or a buggy one) may send a value this build does
/// not know, which fails the request closed (502 `grpc_transform_failed`)
/// rather than letting it through as if it said CONTINUE.
fn known_action(action: i32) -> Result<(), String> {
    match TransformAction::try_from(action) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("unknown action {action} in the answer")),
    }
}

/// Builds the transform; the connection is made on first use.
/// `max_response` is `proxy.max_response_body_bytes` (0: none).
pub fn build(cfg: &GrpcConfig, max_response: usize) -> Result<Arc<dyn Transform>, BuildError> {
    let mut t = GrpcTransform::new(cfg)?;
    t.max_response = max_response;
    Ok(Arc::new(t))
}

impl GrpcTransform {
    /// The transform, concretely typed.
    pub fn new(cfg: &GrpcConfig) -> Result<Self, BuildError> {
        let name = cfg.name.clone();
        let read = |what: &'static str, path: &std::path::Path| {
            crate::config_source::file::read_named(path).map_err(|source| BuildError::Read {
                name: name.clone(),
                what,
                path: path.display().to_string(),
                source,
            })
        };
        let uri = if cfg.target.contains("://") {
            cfg.target.clone()
        } else if cfg.tls.is_some() {
            format!("https://{}", cfg.target)
        } else {
            format!("http://{}", cfg.target)
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| BuildError::Target {
                name: name.clone(),
                target: crate::redact_url::for_log(&cfg.target),
                detail: e.to_string(),
            })?
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &cfg.tls {
            // Each file is checked here, so that a wrong one is named with
            // the reason: tonic's own error says only "transport error".
            let pem = |what: &'static str, path: &std::path::Path, key: bool| {
                let bytes = read(what, path)?;
                check_pem(&bytes, key).map_err(|why| BuildError::Pem {
                    name: name.clone(),
                    what,
                    path: path.display().to_string(),
                    why,
                })?;
                Ok::<_, BuildError>(bytes)
            };
            let mut t = ClientTlsConfig::new();
            t = match &tls.ca_cert {
                Some(p) => t.ca_certificate(Certificate::from_pem(pem("ca_cert", p, false)?)),
                None => t.with_native_roots(),
            };
            if let Some(c) = &tls.client {
                t = t.identity(Identity::from_pem(
                    pem("cert", &c.cert, false)?,
                    pem("key", &c.key, true)?,
                ));
            }
            endpoint = endpoint.tls_config(t).map_err(|e| BuildError::Tls {
                name: name.clone(),
                detail: crate::error_chain(&e),
            })?;
        }
        Ok(GrpcTransform {
            name: cfg.name.clone(),
            rules: cfg.rules.clone(),
            send_request_body: cfg.send_request_body,
            send_response_body: cfg.send_response_body,
            channel: endpoint.connect_lazy(),
            max_response: 0,
        })
    }

    fn applies(&self, cx: &Flow) -> bool {
        // A policy server inspects: every request some server may read as
        // matching its rules goes to it (`Scope::inspects`).
        !cx.precheck && self.rules.inspects(&cx.target())
    }

    fn key(&self) -> usize {
        self as *const Self as usize
    }

    fn failed(&self, rpc: &str, e: impl std::fmt::Display) -> TransformError {
        TransformError {
            status: StatusCode::BAD_GATEWAY,
            reason: "grpc_transform_failed",
            detail: format!("grpc transform '{}': {rpc}: {e}", self.name),
        }
    }

    async fn call<Q, R>(&self, path: &'static str, msg: Q) -> Result<R, TransformError>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let rpc = path.rsplit('/').next().unwrap_or(path);
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| self.failed(rpc, e))?;
        let codec = tonic_prost::ProstCodec::<Q, R>::default();
        let path = http::uri::PathAndQuery::from_static(path);
        grpc.unary(tonic::Request::new(msg), path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| {
                self.failed(
                    rpc,
                    format!(
                        "{:?}: {}",
                        s.code(),
                        s.message().chars().take(200).collect::<String>()
                    ),
                )
            })
    }
}

#[async_trait]
impl Transform for GrpcTransform {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants_request_body(&self, cx: &Flow, _req: &http::request::Parts) -> bool {
        self.send_request_body && self.applies(cx)
    }

    fn wants_response_body(&self, cx: &Flow) -> bool {
        self.send_response_body && self.applies(cx)
    }

    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        if !self.applies(cx) {
            return Ok(Verdict::Continue);
        }
        let sent = HttpRequest {
            method: req.method().as_str().to_string(),
            url: req.uri().to_string(),
            headers: headers_to_wire(req.headers()),
            body: if self.send_request_body {
                body_bytes(req).cloned().unwrap_or_default()
            } else {
                Bytes::new()
            },
            host: cx.dest.host.clone(),
            remote_addr: cx
                .conn
                .as_ref()
                .map(|c| c.remote.to_string())
                .unwrap_or_default(),
        };
        let answer: wire::TransformRequestResponse = self
            .call(
                wire::TRANSFORM_REQUEST,
                wire::TransformRequestRequest {
                    context: Some(context(cx)),
                    request: Some(sent.clone()),
                },
            )
            .await?;
        annotate(cx, answer.annotations);
        known_action(answer.action).map_err(|e| self.failed("TransformRequest", e))?;
        if answer.action == TransformAction::Reject as i32 {
            return self.reject(cx, "TransformRequest", answer.response.as_ref());
        }
        match cx.ext.get_mut::<Sent>() {
            Some(stash) => stash.0.push((self.key(), sent)),
            None => {
                cx.ext.insert(Sent(vec![(self.key(), sent)]));
            }
        }
        if let Some(m) = answer.modified_request {
            self.modify_request(req, cx, m)
                .map_err(|e| self.failed("TransformRequest", e))?;
        }
        Ok(Verdict::Continue)
    }

    async fn on_response(
        &self,
        rsp: &mut Response<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        let Some(sent) = cx.ext.get_mut::<Sent>().and_then(|s| {
            let at = s.0.iter().position(|(k, _)| *k == self.key())?;
            Some(s.0.swap_remove(at).1)
        }) else {
            return Ok(Verdict::Continue);
        };
        let body = if self.send_response_body {
            let b = std::mem::replace(rsp.body_mut(), body::empty());
            let c = body::collect_all(b, self.max_response)
                .await
                .map_err(|e| self.failed("TransformResponse", e))?;
            if let Some(t) = &c.trailers {
                rsp.extensions_mut().insert(BodyTrailers(t.clone()));
            }
            *rsp.body_mut() = body::with_trailers(c.bytes.clone(), c.trailers);
            c.bytes
        } else {
            Bytes::new()
        };
        let answer: wire::TransformResponseResponse = self
            .call(
                wire::TRANSFORM_RESPONSE,
                wire::TransformResponseRequest {
                    context: Some(context(cx)),
                    request: Some(sent),
                    response: Some(HttpResponse {
                        status_code: i32::from(rsp.status().as_u16()),
                        headers: headers_to_wire(rsp.headers()),
                        body,
                    }),
                },
            )
            .await?;
        annotate(cx, answer.annotations);
        known_action(answer.action).map_err(|e| self.failed("TransformResponse", e))?;
        if answer.action == TransformAction::Reject as i32 {
            return self.reject(cx, "TransformResponse", answer.modified_response.as_ref());
        }
        if let Some(m) = answer.modified_response {
            if m.status_code != 0 {
                *rsp.status_mut() = u16::try_from(m.status_code)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| {
                        self.failed(
                            "TransformResponse",
                            format!("invalid status {}", m.status_code),
                        )
                    })?;
            }
            if !m.headers.is_empty() {
                replace_headers(rsp.headers_mut(), &m.headers, "modified_response")
                    .map_err(|e| self.failed("TransformResponse", e))?;
            }
            if !m.body.is_empty() {
                rsp.headers_mut().remove(TRANSFER_ENCODING);
                rsp.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(m.body.len()));
                let trailers = rsp.extensions().get::<BodyTrailers>().map(|t| t.0.clone());
                *rsp.body_mut() = body::with_trailers(m.body, trailers);
            }
        }
        Ok(Verdict::Continue)
    }
}

impl GrpcTransform {
    /// A REJECT: the server's response (status 0 means 403), or the standard 403.
    fn reject(
        &self,
        cx: &mut Flow,
        rpc: &str,
        response: Option<&HttpResponse>,
    ) -> Result<Verdict, TransformError> {
        cx.annotate("rejected", "grpc_rejected");
        let answer = match response {
            Some(r) => response_from_wire(r).map_err(|e| self.failed(rpc, e))?,
            None => policy_response(
                StatusCode::FORBIDDEN,
                &format!("refused by the '{}' policy server", self.name),
            ),
        };
        Ok(Verdict::Reject(Rejection {
            status: answer.status(),
            reason: "grpc_rejected".into(),
            message: String::new(),
            answer: Some(Box::new(answer)),
        }))
    }

    /// Applies a `modified_request`; the destination must not change.
    fn modify_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
        m: HttpRequest,
    ) -> Result<(), String> {
        let method = if m.method.is_empty() {
            None
        } else {
            Some(
                http::Method::from_bytes(m.method.as_bytes())
                    .map_err(|_| format!("modified_request: invalid method {:?}", m.method))?,
            )
        };
        if !m.url.is_empty() {
            let new: http::Uri = m
                .url
                .parse()
                .map_err(|_| format!("modified_request: invalid url {:?}", m.url))?;
            let old = req.uri().clone();
            let same_place = new.scheme() == old.scheme()
                && new.host().map(crate::rules::normalize_host)
                    == old.host().map(crate::rules::normalize_host)
                && new.port_u16().or(old.port_u16()) == old.port_u16();
            if new.scheme().is_some() && !same_place {
                return Err(format!(
                    "modified_request: url {:?} names another destination than {old} (only the path and query may change)",
                    m.url
                ));
            }
            let pq = new
                .path_and_query()
                .cloned()
                .ok_or_else(|| format!("modified_request: url {:?} has no path", m.url))?;
            if crate::exchange::has_dot_segment(pq.path()) {
                return Err(format!(
                    "modified_request: url {:?} has dot segments",
                    m.url
                ));
            }
            let mut parts = old.into_parts();
            parts.path_and_query = Some(pq.clone());
            *req.uri_mut() = http::Uri::from_parts(parts)
                .map_err(|_| format!("modified_request: invalid url {:?}", m.url))?;
            if pq.path() != cx.path {
                // The record's `path` stays the client's; say what went out.
                cx.path = pq.path().to_string();
                cx.annotate("forwarded_path", cx.path.clone());
            }
        }
        if let Some(method) = method.filter(|m| m != req.method()) {
            cx.method = method.as_str().to_string();
            cx.annotate("forwarded_method", cx.method.clone());
            *req.method_mut() = method;
        }
        if !m.headers.is_empty() {
            replace_headers(req.headers_mut(), &m.headers, "modified_request")?;
        }
        if !m.body.is_empty() {
            req.headers_mut().remove(TRANSFER_ENCODING);
            req.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(m.body.len()));
            set_body_bytes(req, m.body);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
