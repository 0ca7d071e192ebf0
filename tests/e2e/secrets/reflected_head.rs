//! What an upstream can reflect a credential in besides the headers and the body the `secrets`
//! scrub searches (`reflected_body`): the HTTP/1 status line's reason phrase, and DATA an
//! HTTP/2 upstream sends after a 204 or 304, which ends with its head. Neither reaches the
//! workload: the proxy writes the standard reason phrase, and a 204 or 304 goes on without a
//! body.

use iron_proxy_tests::*;

use super::assert_no_leak;

const KEY: &str = "real-head-key-0042-xyz";

const CONFIG: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["echo.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: HEAD_KEY}
          inject:
            header: "X-Api-Key"
          rules:
            - host: "echo.test"
"#;

/// An HTTP/2 GET with the h2 library, which takes DATA after a 204 or 304 as it comes:
/// `argv[1]` CA, `argv[2]` address, `argv[3]` port, `argv[4]` name, then paths. Prints one
/// `{"status", "data"}` (the DATA bytes, as text) or `{"error"}` per path.
const H2_GET: &str = r#"
import json, socket, ssl, sys
import h2.config, h2.connection, h2.events
ca, ip, port, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
for path in sys.argv[5:]:
    s = ctx.wrap_socket(socket.create_connection((ip, port), timeout=20), server_hostname=name)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":path", path), (":scheme", "https"),
                       (":authority", name)], end_stream=True)
    s.sendall(c.data_to_send())
    out = {"status": None, "data": ""}
    try:
        ended = False
        while not ended:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            for e in c.receive_data(chunk):
                if isinstance(e, h2.events.ResponseReceived):
                    out["status"] = dict(e.headers)[b":status"].decode()
                elif isinstance(e, h2.events.DataReceived):
                    out["data"] += e.data.decode("latin-1")
                    c.acknowledge_received_data(e.flow_controlled_length, 1)
                elif isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)):
                    ended = True
            s.sendall(c.data_to_send())
    except Exception as e:
        out = {"error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(out))
    s.close()
"#;

#[test]
fn a_reason_phrase_quoting_the_credential_does_not_reach_the_workload() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("echo.test").start(&net);
    let px = Proxy::with(CONFIG)
        .resolver(&net)
        .env("HEAD_KEY", KEY)
        .start();
    let r = Curl::get("https://echo.test/reflect/reason?status=401&reason=x-api-key")
        .args(["--http1.1", "-v"])
        .via(&px)
        .run();
    r.expect_status(401);
    let seen = up.wait_for_request(|q| q.path() == "/reflect/reason");
    assert_eq!(
        seen.header("x-api-key"),
        Some(KEY),
        "the upstream got the key"
    );
    assert!(
        !r.stderr.contains(KEY),
        "the reason phrase carried the key to the client: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("< HTTP/1.1 401 Unauthorized"),
        "the standard reason phrase: {}",
        r.stderr
    );
    px.wait_for_audit(|a| a.path() == Some("/reflect/reason"));
    assert_no_leak(&px, &[KEY]);
}

#[test]
fn a_204_or_304_from_an_http2_upstream_goes_on_without_its_data() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("echo.test").start(&net);
    let px = Proxy::with(CONFIG)
        .resolver(&net)
        .env("HEAD_KEY", KEY)
        .start();
    let https = px.https_addr();
    let out = python(
        H2_GET,
        [
            px.ca().to_string(),
            https.ip().to_string(),
            https.port().to_string(),
            "echo.test".to_string(),
            "/reflect/s304?status=304".to_string(),
            "/reflect/s204?status=204".to_string(),
        ],
    );
    out.assert_ok();
    let got: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(got.len(), 2, "{}", out.stdout);
    for (r, status) in got.iter().zip(["304", "204"]) {
        assert_eq!(r["status"], status, "{r}");
        assert_eq!(r["data"], "", "a {status} carried DATA to the client: {r}");
    }
    // The upstream did answer with the reflection (its DATA after the head).
    let seen = up.wait_for_request(|q| q.path() == "/reflect/s304");
    assert_eq!(
        seen.header("x-api-key"),
        Some(KEY),
        "the upstream got the key"
    );
    assert_eq!(seen.http_version(), "HTTP/2", "the upstream leg is HTTP/2");
    for path in ["/reflect/s304", "/reflect/s204"] {
        px.wait_for_audit(|a| a.path() == Some(path));
    }
    assert_no_leak(&px, &[KEY]);
}
