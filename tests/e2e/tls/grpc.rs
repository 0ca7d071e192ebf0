//! gRPC (HTTP/2 with trailers) through MITM with grpcio: unary and server-streaming calls
//! return their messages, trailers and status; an error status reaches the client intact.
//! The fake upstream's gRPC service is in `tests/src/fake_upstream/grpc.rs`.

use super::*;

/// argv: mode (`connect` or `direct`), proxy CA, then the proxy URL (connect) or the HTTPS
/// listener's `host:port` (direct, with the TLS name and authority overridden).
pub(crate) const GRPC_CLIENT: &str = r#"
import json, os, sys
mode, ca = sys.argv[1], sys.argv[2]
if mode == "connect":
    os.environ["https_proxy"] = sys.argv[3]
    target, options = "grpc.test:443", []
else:
    target = sys.argv[3]
    options = [("grpc.ssl_target_name_override", "grpc.test"),
               ("grpc.default_authority", "grpc.test")]
import grpc
creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
out = {}
with grpc.secure_channel(target, creds, options=options) as ch:
    reply, call = ch.unary_unary("/test.Echo/Unary").with_call(b"ping", timeout=15)
    out["unary"] = reply.decode()
    out["unary_code"] = call.code().name
    out["trailers"] = {k: v for k, v in call.trailing_metadata()}
    out["stream"] = [m.decode() for m in ch.unary_stream("/test.Echo/Stream")(b"3", timeout=15)]
    try:
        ch.unary_unary("/test.Echo/Fail")(b"x", timeout=15)
        out["fail"] = None
    except grpc.RpcError as e:
        out["fail"] = {"code": e.code().name, "details": e.details()}
print(json.dumps(out))
"#;

pub(crate) fn check_calls(out: &PyResult) {
    let v = out.assert_ok().json();
    assert_eq!(v["unary"], "ping", "{out}");
    assert_eq!(v["unary_code"], "OK", "{out}");
    assert_eq!(
        v["trailers"]["x-echo-trailer"], "done",
        "upstream trailers reach the client: {out}"
    );
    assert_eq!(
        v["stream"],
        serde_json::json!(["message 0 of 3", "message 1 of 3", "message 2 of 3"]),
        "{out}"
    );
    assert_eq!(v["fail"]["code"], "PERMISSION_DENIED", "{out}");
    assert_eq!(v["fail"]["details"], "denied by fake upstream", "{out}");
}

fn check_upstream_and_audit(up: &UpstreamHandle, px: &ProxyProcess, mode: &str) {
    for method in ["Unary", "Stream", "Fail"] {
        let path = format!("/test.Echo/{method}");
        let seen = up.wait_for_request(|q| q.path() == path);
        assert_eq!(seen.http_version(), "HTTP/2", "{seen}");
        assert_eq!(seen.header("te"), Some("trailers"), "{seen}");
        let rec = px.wait_for_audit(|a| a.path() == Some(path.as_str()));
        assert!(rec.is_allowed(), "{rec}");
        assert_eq!(rec.method(), Some("POST"), "{rec}");
        assert_eq!(rec.str("mode"), Some(mode), "{rec}");
        assert_eq!(rec.status_code(), Some(200), "{rec}");
    }
}

#[test]
fn grpc_through_connect_carries_messages_trailers_and_error_status() {
    require_root!();
    let (_net, up, px) = mitm_with("grpc.test");
    let proxy = format!("http://{}", hostport(px.tunnel_addr()));
    let out = python(GRPC_CLIENT, ["connect", px.ca(), proxy.as_str()]);
    check_calls(&out);
    check_upstream_and_audit(&up, &px, "tunnel");
}

#[test]
fn grpc_through_https_listen_carries_messages_trailers_and_error_status() {
    require_root!();
    let (_net, up, px) = mitm_with("grpc.test");
    let target = hostport(px.https_addr());
    let out = python(GRPC_CLIENT, ["direct", px.ca(), target.as_str()]);
    check_calls(&out);
    check_upstream_and_audit(&up, &px, "https");
}
