//! `grpc`: the transform that delegates each request and response to an
//! external TransformService, and its optional TLS settings.

use std::path::PathBuf;

use super::decode::{str_with, Cx, Decode, Res};
use super::yaml::Node;
use crate::rules::Scope;

/// `grpc`: delegates to an external TransformService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    /// Identifier for logs.
    pub name: String,
    /// Server address, `host:port` (or a URI with a scheme).
    pub target: String,
    /// Forward request bodies.
    pub send_request_body: bool,
    /// Forward response bodies.
    pub send_response_body: bool,
    /// Where it applies (empty: everywhere).
    pub rules: Scope,
    /// TLS to the server; `None` is plaintext (absent, or `enabled: false`).
    pub tls: Option<GrpcTlsConfig>,
}

/// `grpc.tls` when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTlsConfig {
    /// Custom CA; system roots when absent.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key for mTLS (set together).
    pub client: Option<GrpcClientCert>,
}

/// mTLS client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcClientCert {
    /// `cert`
    pub cert: PathBuf,
    /// `key`
    pub key: PathBuf,
}

fn grpc_target(s: &str) -> Result<String, String> {
    let ok = s.contains("://")
        || s.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok && !s.contains(char::is_whitespace) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid gRPC target {s:?}: expected host:port such as \"localhost:9500\""
        ))
    }
}

fn grpc_tls(node: &Node, cx: &mut Cx) -> Res<Option<GrpcTlsConfig>> {
    let m = cx.map(node, &["enabled", "ca_cert", "cert", "key"])?;
    let enabled = m.or(cx, "enabled", false);
    let ca_cert = m.opt::<PathBuf>(cx, "ca_cert");
    let (cert, key) = (m.opt::<PathBuf>(cx, "cert"), m.opt::<PathBuf>(cx, "key"));
    let client = match (cert?, key?) {
        (Some(cert), Some(key)) => Some(GrpcClientCert { cert, key }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(cx.error(
                m.key_pos("cert").unwrap_or(m.pos),
                "'cert' must be set together with 'key'",
            ))
        }
        (None, Some(_)) => {
            return Err(cx.error(
                m.key_pos("key").unwrap_or(m.pos),
                "'key' must be set together with 'cert'",
            ))
        }
    };
    Ok(enabled?.then_some(GrpcTlsConfig {
        ca_cert: ca_cert?,
        client,
    }))
}

impl Decode for GrpcConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(
            node,
            &[
                "name",
                "target",
                "send_request_body",
                "send_response_body",
                "rules",
                "tls",
            ],
        )?;
        let name = m.req(cx, "name");
        let target = m.req_with(cx, "target", |n, cx| str_with(n, cx, grpc_target));
        let send_req = m.or(cx, "send_request_body", false);
        let send_rsp = m.or(cx, "send_response_body", false);
        let rules = m.or_default(cx, "rules");
        let tls = m.opt_with(cx, "tls", grpc_tls);
        Ok(GrpcConfig {
            name: name?,
            target: target?,
            send_request_body: send_req?,
            send_response_body: send_rsp?,
            rules: rules?,
            tls: tls?.flatten(),
        })
    }
}
