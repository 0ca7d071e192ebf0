//! The `grpc` transform through the real binary against a TransformService server on
//! grpcio (tests/grpc_transform_server.py, stubs generated from proxy/proto/transform/v1 by
//! grpcio-tools): what the proxy sends, rejects with and without the server's response,
//! request and response rewrites, a destination change refused, failures closed, mTLS.

use std::net::SocketAddr;
use std::path::Path;

use iron_proxy_tests::ca::Leaf;
use iron_proxy_tests::netns::NetProcess;
use iron_proxy_tests::*;

/// The server on a fresh host of `net`, port 50051. With `pki`, it serves mTLS with a
/// certificate for its address issued by the fake internet's CA, and the client
/// certificate it accepts is written there too (returned).
fn server(
    net: &FakeInternet,
    log: &Path,
    pki: Option<&Path>,
) -> (NetProcess, SocketAddr, Option<Leaf>) {
    let mut client = None;
    let (proc, addr) = net.python_peer("grpc_transform_server.py", 50051, |host, cmd| {
        cmd.arg(format!("{}:50051", host.v4)).arg(log);
        if let Some(dir) = pki {
            let server = net.ca().issue(&[host.v4.to_string()], dir, "server");
            cmd.arg(net.ca_bundle()).arg(&server.cert).arg(&server.key);
            client = Some(net.ca().issue_client(&["iron-proxy".into()], dir, "client"));
        }
    });
    (proc, addr, client)
}

fn config(target: &str, tls: &str) -> String {
    format!(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["api.test"]
  - name: grpc
    config:
      name: "policy-engine"
      target: "{target}"
      send_request_body: true
      send_response_body: true
      rules:
        - host: "api.test"
          paths: ["/anything/*"]
{tls}"#
    )
}

fn post(up: &UpstreamHandle, path: &str, body: &str, px: &ProxyProcess) -> CurlResult {
    Curl::new(["-s", "-X", "POST", "--data-binary", body, &up.url(path)])
        .header("X-Remove-Me", "1")
        .via(px)
        .run()
}

#[test]
fn a_transform_service_sees_requests_rejects_and_rewrites_them() {
    require_root!();
    let net = FakeInternet::new();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("calls.jsonl");
    let (_srv, addr, _) = server(&net, &log, None);
    let up = Upstream::https("api.test").start(&net);
    let px = Proxy::with(config(&addr.to_string(), "").as_str())
        .resolver(&net)
        .start();

    // Continue: the server saw the whole request, and both phases are traced.
    post(&up, "/anything/plain", "hello", &px).expect_status(200);
    let sent = json_lines(&log);
    let req = sent.iter().find(|c| c["rpc"] == "request").expect("a call");
    assert_eq!(req["method"], "POST");
    assert_eq!(req["url"], "https://api.test:443/anything/plain");
    assert_eq!(req["host"], "api.test");
    assert_eq!(req["body"], "hello");
    assert_eq!(req["sni"], "api.test");
    assert_eq!(req["headers"]["x-remove-me"][0], "1");
    assert!(req["remote_addr"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    let rsp = sent
        .iter()
        .find(|c| c["rpc"] == "response")
        .expect("a response call");
    assert_eq!(rsp["status"], 200);
    assert!(rsp["response_body"]
        .as_str()
        .is_some_and(|b| b.contains("/anything/plain")));
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/plain"));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(
        rec.annotation("policy-engine", "policy"),
        Some(&"checked".into())
    );
    assert_eq!(
        rec.annotation("policy-engine", "body_bytes"),
        Some(&"5".into())
    );
    let traced = rec
        .response_transforms()
        .iter()
        .find(|t| t["name"] == "policy-engine")
        .unwrap_or_else(|| panic!("response phase traced: {rec}"));
    assert_eq!(traced["annotations"]["upstream_status"], "200", "{rec}");

    // Reject with the server's own response; the upstream never sees it.
    let r = post(&up, "/anything/reject", "x", &px);
    assert_eq!(r.status, 451, "{r}");
    assert_eq!(r.body, "denied by policy server");
    assert_eq!(r.header("x-policy"), Some("no"), "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/reject"));
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("policy-engine"), "{rec}");
    assert_eq!(rec.str("reason"), Some("grpc_rejected"), "{rec}");
    assert_eq!(rec.status_code(), Some(451), "{rec}");
    // Reject without a response: the proxy's own 403.
    let r = post(&up, "/anything/reject-default", "x", &px);
    assert_eq!(r.status, 403, "{r}");
    assert!(
        r.body
            .contains("refused by the 'policy-engine' policy server"),
        "{r}"
    );

    // An action this build does not know fails closed, as any invalid answer does.
    let r = post(&up, "/anything/unknown-action", "x", &px);
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/unknown-action"));
    assert_eq!(rec.str("reason"), Some("grpc_transform_failed"), "{rec}");
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("unknown action 7")),
        "{rec}"
    );
    up.assert_no_request(|q| q.path() == "/anything/unknown-action");

    // Rewrite: path and query, headers, body.
    post(&up, "/anything/rewrite", "original", &px).expect_status(200);
    let seen = up.wait_for_request(|q| q.path() == "/anything/rewritten");
    assert_eq!(seen.body(), "rewritten body", "{seen}");
    assert_eq!(seen.header("x-added"), Some("yes"), "{seen}");
    assert_eq!(seen.header("x-remove-me"), None, "{seen}");
    assert_eq!(seen.0["args"]["via"], "grpc", "{seen}");

    // A rewrite to another destination, and a failed call: both fail closed.
    for (path, detail) in [
        ("/anything/redirect", "names another destination"),
        ("/anything/fail", "PermissionDenied"),
    ] {
        let r = post(&up, path, "x", &px);
        assert_eq!(r.status, 502, "{path}: {r}");
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert_eq!(rec.str("reason"), Some("grpc_transform_failed"), "{rec}");
        assert!(
            rec.str("error").is_some_and(|e| e.contains(detail)),
            "{rec}"
        );
    }

    // Response phase: a rewritten body, a replaced response.
    let r = post(&up, "/anything/scrub", "x", &px);
    r.expect_status(200);
    assert_eq!(r.body, "scrubbed");
    assert_eq!(r.header("x-scrubbed"), Some("1"), "{r}");
    let r = post(&up, "/anything/block-response", "x", &px);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "response blocked"),
        "{r}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/block-response"));
    assert_eq!(rec.str("reason"), Some("grpc_rejected"), "{rec}");

    // Outside the rules: no call.
    let before = json_lines(&log).len();
    Curl::get(&up.url("/status/200")).via(&px).run();
    assert_eq!(json_lines(&log).len(), before);
    for path in [
        "/anything/reject",
        "/anything/redirect",
        "/anything/fail",
        "/anything/rewrite",
    ] {
        assert!(
            up.requests().iter().all(|q| q.path() != path),
            "{path} reached the upstream"
        );
    }
}

#[test]
fn mtls_to_the_server_and_an_unreachable_server_fails_closed() {
    require_root!();
    let net = FakeInternet::new();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("calls.jsonl");
    let (_srv, addr, client) = server(&net, &log, Some(dir.path()));
    let client = client.expect("a client certificate");
    let up = Upstream::https("api.test").start(&net);
    let ca = net.ca_bundle();
    let with_cert = format!(
        "      tls:\n        enabled: true\n        ca_cert: \"{}\"\n        cert: \"{}\"\n        key: \"{}\"\n",
        ca.display(),
        client.cert.display(),
        client.key.display()
    );
    let without_cert = format!(
        "      tls:\n        enabled: true\n        ca_cert: \"{}\"\n",
        ca.display()
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    for (target, tls, want) in [
        (addr.to_string(), with_cert.as_str(), 200),
        (addr.to_string(), without_cert.as_str(), 502),
        (closed.to_string(), "", 502),
    ] {
        let px = Proxy::with(config(&target, tls).as_str())
            .resolver(&net)
            .start();
        let before = json_lines(&log).len();
        let r = post(&up, "/anything/plain", "hello", &px);
        assert_eq!(r.status, want, "{target} {tls}: {r}");
        let rec = px.wait_for_audit(|a| a.path() == Some("/anything/plain"));
        if want == 200 {
            assert!(
                json_lines(&log).len() > before,
                "the server saw the call over mTLS"
            );
            assert_eq!(
                rec.annotation("policy-engine", "policy"),
                Some(&"checked".into())
            );
        } else {
            assert_eq!(json_lines(&log).len(), before);
            assert_eq!(rec.str("reason"), Some("grpc_transform_failed"), "{rec}");
        }
    }
}

/// gRPC answers end in trailers (`grpc-status`): a transform that buffers the response body
/// (here `send_response_body`) must send them on with it.
#[test]
fn a_buffered_grpc_response_keeps_its_trailers() {
    require_root!();
    let net = FakeInternet::new();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("calls.jsonl");
    let (_srv, addr, _) = server(&net, &log, None);
    let _up = Upstream::https("grpc.test").start(&net);
    let px = Proxy::with(
        format!(
            r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["grpc.test"]
  - name: grpc
    config:
      name: "policy-engine"
      target: "{addr}"
      send_response_body: true
      rules:
        - host: "grpc.test"
"#
        )
        .as_str(),
    )
    .resolver(&net)
    .start();
    let proxy = format!("http://{}", px.tunnel_addr());
    let out = python(
        crate::tls::grpc::GRPC_CLIENT,
        ["connect", px.ca(), proxy.as_str()],
    );
    crate::tls::grpc::check_calls(&out);
    // The policy server saw each buffered answer (the echoed message framed in gRPC).
    let seen = json_lines(&log);
    assert!(
        seen.iter().any(|c| c["rpc"] == "response"
            && c["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("/test.Echo/Unary"))),
        "{seen:?}"
    );
}

/// `secrets` swapping a credential into the path (`match_path`, the spec's Telegram bot
/// example) before a policy server that sends the request back as it came: the path the
/// server saw carries the real token, and the record's `forwarded_path` annotation quoted it.
/// It is masked now (`Flow::redact_noted`), while the upstream still gets the real path.
#[test]
fn a_path_credential_a_policy_server_echoes_stays_out_of_the_record() {
    require_root!();
    const REAL: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
    let net = FakeInternet::new();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("calls.jsonl");
    let (_srv, addr, _) = server(&net, &log, None);
    let up = Upstream::https("api.test").start(&net);
    let config = format!(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["api.test"]
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: BOT_TOKEN}}
          replace:
            proxy_value: "bot-proxy-token-0000000000000"
            match_path: true
          rules:
            - host: "api.test"
  - name: grpc
    config:
      name: "policy-engine"
      target: "{addr}"
      send_request_body: true
      rules:
        - host: "api.test"
          paths: ["/anything/*"]
"#
    );
    let px = Proxy::with(config.as_str())
        .resolver(&net)
        .env("BOT_TOKEN", REAL)
        .start();
    let path = "/anything/botbot-proxy-token-0000000000000/echo-url";
    post(&up, path, "x", &px).expect_status(200);
    let seen = up.wait_for_request(|q| q.path().ends_with("/echo-url"));
    assert!(
        seen.path().contains(REAL),
        "the upstream got the real token: {seen}"
    );
    let rec = px.wait_for_audit(|a| a.path().is_some_and(|p| p.ends_with("/echo-url")));
    assert!(rec.is_allowed(), "{rec}");
    let text = rec.to_string();
    assert!(
        !text.contains(REAL),
        "the record holds the real token: {text}"
    );
    assert!(
        rec.annotation("policy-engine", "forwarded_path")
            .and_then(|v| v.as_str())
            .is_some_and(|p| p.contains("[redacted]")),
        "{rec}"
    );
}
