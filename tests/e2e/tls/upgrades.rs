//! Which upgrades the proxy splices: WebSocket only. An `h2c` upgrade would hand the
//! connection to HTTP/2 streams the pipeline never sees (any path, method or
//! `:authority`, with no audit record), so its headers are dropped and the request goes
//! as an ordinary one; an upstream that switches protocols anyway is a 502.

use std::path::Path;

use iron_proxy_tests::netns::NetProcess;
use serde_json::Value;

use super::*;

/// The h2c-capable upstream as `h2c.test`, allowed only for `GET /public/*`; its log.
fn h2c_lab() -> (FakeInternet, NetProcess, ProxyProcess, tempfile::TempDir) {
    let net = FakeInternet::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("h2c.jsonl");
    let (peer, addr) = net.python_peer("h2c_server.py", 80, |host, cmd| {
        cmd.args([host.v4.to_string(), "80".into()]).arg(&log);
    });
    net.dns().set("h2c.test", &[addr.ip()]);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      rules:
        - host: "h2c.test"
          methods: ["GET"]
          paths: ["/public/*"]
"#,
    )
    .resolver(&net)
    .start();
    (net, peer, px, dir)
}

/// A WebSocket upgrade request for `url` through `px`, with RFC 6455's sample key.
fn websocket_upgrade(url: &str, px: &ProxyProcess) -> CurlResult {
    Curl::get(url)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .max_time(20)
        .via(px)
        .run()
}

fn seen(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("h2c.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line"))
        .collect()
}

#[test]
fn an_h2c_upgrade_goes_as_an_ordinary_request() {
    require_root!();
    let (_net, _peer, px, dir) = h2c_lab();
    // curl --http2 on an http:// URL asks for the h2c upgrade (Connection: Upgrade,
    // HTTP2-Settings; Upgrade: h2c), and speaks HTTP/2 on the connection if it gets a 101.
    let r = Curl::get("http://h2c.test/public/x")
        .args(["--http2"])
        .via(&px)
        .run();
    assert_eq!(r.status, 200, "{r}");
    // The server answers an upgraded request over HTTP/2 with {"upgraded": ...}.
    assert!(
        r.json().get("head").is_some(),
        "the client got the HTTP/1.1 answer: {r}"
    );
    let heads = seen(dir.path());
    assert_eq!(heads.len(), 1, "one request, no HTTP/2 after it: {heads:?}");
    let head = heads[0]["head"].as_array().expect("a head");
    assert!(
        !head.iter().any(|l| {
            let l = l.as_str().unwrap_or_default().to_ascii_lowercase();
            l.starts_with("upgrade:") || l.starts_with("http2-settings:")
        }),
        "the upgrade headers are not forwarded: {head:?}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/public/x"));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.status_code(), Some(200), "{rec}");
}

#[test]
fn an_upstream_switching_to_another_protocol_is_a_502() {
    require_root!();
    let (_net, _peer, px, _dir) = h2c_lab();
    // A WebSocket upgrade the upstream answers with 101 h2c.
    let r = websocket_upgrade("http://h2c.test/public/switch-h2c", &px);
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/public/switch-h2c"));
    assert_eq!(rec.str("reason"), Some("upstream_error"), "{rec}");
    assert_eq!(rec.status_code(), Some(502), "{rec}");
    // An ordinary request the upstream answers with 101 all the same.
    let r = Curl::get("http://h2c.test/public/plain/switch-h2c")
        .max_time(20)
        .via(&px)
        .run();
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/public/plain/switch-h2c"));
    assert_eq!(rec.str("reason"), Some("upstream_error"), "{rec}");
}

/// An upstream that answers a WebSocket upgrade with 101 but not the `Sec-WebSocket-Accept`
/// the request's key asks for (RFC 6455 §4.2.2) did not read the handshake as a WebSocket
/// server: 502, nothing spliced. Before, the connection was spliced, and requests the
/// client sent after it reached the upstream with no check and no record.
#[test]
fn a_websocket_101_without_the_keys_accept_is_a_502() {
    require_root!();
    let (_net, _peer, px, _dir) = h2c_lab();
    let r = websocket_upgrade("http://h2c.test/public/switch-ws-no-accept", &px);
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/public/switch-ws-no-accept"));
    assert_eq!(rec.str("reason"), Some("upstream_error"), "{rec}");
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("Sec-WebSocket-Accept")),
        "{rec}"
    );
}
