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

/// `target`: `host:port` (as in the spec), `http://` or `https://host:port`,
/// or gRPC's `dns:///host:port` (read as `host:port`). Other gRPC name
/// schemes (`unix:`, `xds:`, ...) are refused here rather than failing at
/// every call.
fn grpc_target(s: &str) -> Result<String, String> {
    // Named without a user, password or query in errors.
    let shown = format!("{:?}", crate::redact_url::for_log(s));
    let expected = "expected host:port such as \"localhost:9500\", or http:// or https:// with one";
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(format!("invalid gRPC target {shown}: {expected}"));
    }
    // `host:port`: a name or IPv4 address without `:`, or `[IPv6]`.
    let host_port = |hp: &str| {
        hp.rsplit_once(':').is_some_and(|(h, p)| {
            let host_ok = match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => !h.is_empty() && !h.contains([':', '/', '[', ']']),
            };
            host_ok && p.parse::<u16>().is_ok_and(|p| p > 0)
        })
    };
    if let Some(rest) = s.strip_prefix("dns:///") {
        return if host_port(rest) {
            Ok(rest.to_string())
        } else {
            Err(format!("invalid gRPC target {shown}: {expected}"))
        };
    }
    match s.split_once("://") {
        Some(("http" | "https", "")) => {
            Err(format!("invalid gRPC target {shown}: no host; {expected}"))
        }
        Some(("http" | "https", _)) => Ok(s.to_string()),
        Some((scheme, _)) => Err(format!(
            "gRPC target {shown}: the {scheme:?} scheme is not supported; {expected}"
        )),
        None if host_port(s) => Ok(s.to_string()),
        None => Err(format!("invalid gRPC target {shown}: {expected}")),
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

#[cfg(test)]
mod tests {
    use super::grpc_target;

    #[test]
    fn targets_are_host_port_or_http_urls() {
        for (target, read) in [
            ("localhost:9500", "localhost:9500"),
            ("10.0.0.5:50051", "10.0.0.5:50051"),
            ("[::1]:9500", "[::1]:9500"),
            ("http://policy.svc:9500", "http://policy.svc:9500"),
            ("https://policy.example.com", "https://policy.example.com"),
            ("dns:///policy.svc:9500", "policy.svc:9500"),
        ] {
            assert_eq!(grpc_target(target).as_deref(), Ok(read), "{target}");
        }
        for (target, says) in [
            (
                "unix:///run/policy.sock",
                "the \"unix\" scheme is not supported",
            ),
            ("xds:///policy", "the \"xds\" scheme is not supported"),
            ("localhost", "invalid gRPC target"),
            ("localhost:0", "invalid gRPC target"),
            ("dns:///policy.svc", "invalid gRPC target"),
            ("http://", "no host"),
            ("dns:host:443", "invalid gRPC target"),
            ("ipv4:1.2.3.4:80", "invalid gRPC target"),
            ("::1:9500", "invalid gRPC target"),
            ("[::1:9500", "invalid gRPC target"),
            ("policy svc:9500", "invalid gRPC target"),
        ] {
            let err = grpc_target(target).expect_err(target);
            assert!(err.contains(says), "{target}: {err}");
        }
    }
}
