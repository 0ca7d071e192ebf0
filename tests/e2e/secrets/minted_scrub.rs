//! Tokens that `oauth_token` and `gcp_auth` mint (from the Authlib server of `secrets::oauth`,
//! a real OAuth2 token endpoint) and inject, written back by an upstream that reflects the
//! request (`/reflect`: the request's headers as JSON in the body, and `?echo_header=` the
//! `Authorization` header as a response header, as an error page or debug header quoting it
//! would): curl and Python requests get the mask, never the token, in the header and in the
//! body (plain, chunked, gzip-coded, over HTTP/1.1 and HTTP/2); the upstream got the real
//! token, which the token server's own resource accepts; the audit record counts the matches
//! in the minting transform's response entry, once for the values of two transforms; and
//! `scrub_response_bodies: false` leaves the body (not the header) as sent.

use std::net::SocketAddr;

use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::assert_no_leak;
use super::oauth::authlib;

/// The static key `secrets` adds beside the minted token on `/reflect/both`.
const STATIC_KEY: &str = "static-api-key-0042/xyz";

/// The mask a match of `len` bytes becomes in a body.
fn mask(len: usize) -> String {
    format!("[redacted]{}", "*".repeat(len - 10))
}

/// The token the upstream got on `path` (its `Authorization` was `Bearer <token>`), checked
/// to be a real one: not the stub, and accepted by the token server's protected resource.
fn minted_token(up: &UpstreamHandle, server: SocketAddr, path: &str) -> String {
    let seen = up.wait_for_request(|q| q.path() == path);
    let auth = seen.header("authorization").unwrap_or_default();
    let token = auth
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("{path}: the upstream got {auth:?}"))
        .to_string();
    assert_ne!(token, "iron-proxy-stub-token", "{path}");
    let r = curl([
        "-s",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("http://{server}/api/check"),
    ]);
    assert!(
        r.json()["client"].is_string(),
        "{path}: the token server does not know the token: {}",
        r.body
    );
    token
}

/// What the client got back on `path`: never `token`; the echoed `Authorization` masked in
/// the body (whole, its length kept) and, when asked for, in `x-echo-authorization`.
fn assert_masked(what: &str, body: &str, echo_header: Option<&str>, token: &str) {
    assert!(!body.contains(token), "{what}: the token came back: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    let auth = v["headers"]
        .as_object()
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        })
        .map(|(_, v)| v.clone());
    assert_eq!(
        auth,
        Some(json!(format!("Bearer {}", mask(token.len())))),
        "{what}: {body}"
    );
    if let Some(h) = echo_header {
        assert_eq!(h, "Bearer [redacted]", "{what}");
    }
}

/// The annotations of `transform`'s response entry in the record for `path`, and the names
/// of every response entry.
fn response_entry(px: &ProxyProcess, path: &str, transform: &str) -> (Value, Vec<String>) {
    let rec = px.wait_for_audit(|a| a.path() == Some(path));
    assert!(rec.is_allowed(), "{rec}");
    let names = rec
        .response_transforms()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    let entry = rec
        .response_transforms()
        .iter()
        .find(|t| t["name"] == transform)
        .map(|t| t["annotations"].clone())
        .unwrap_or_else(|| panic!("no {transform} response entry in {rec}"));
    (entry, names)
}

#[test]
fn a_minted_oauth_token_reflected_by_the_upstream_is_masked() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let up = Upstream::https("echo.test").start(&net);
    let config = format!(
        r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["echo.test"]
  - name: oauth_token
    config:
      tokens:
        - grant: client_credentials
          client_id: {{type: env, var: CC_ID}}
          client_secret: {{type: env, var: CC_SECRET}}
          token_endpoint: "http://{addr}/oauth/token"
          rules: [{{host: echo.test}}]
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: STATIC_KEY}}
          inject: {{header: X-Api-Key}}
          rules: [{{host: echo.test, paths: ["/reflect/both"]}}]
"#
    );
    let px = Proxy::with(config.as_str())
        .resolver(&net)
        .env("CC_ID", "cc-client")
        .env("CC_SECRET", "cc-secret")
        .env("STATIC_KEY", STATIC_KEY)
        .start();
    let get = |case: &str, query: &str, extra: &[&str]| {
        Curl::get(&format!("https://echo.test/reflect/{case}?{query}"))
            .args(extra.iter().copied())
            .via(&px)
            .run()
    };

    // One piece with Content-Length, the token also echoed in a response header.
    let r = get("plain", "echo_header=authorization", &["--http1.1"]);
    r.expect_status(200);
    let token = minted_token(&up, addr, "/reflect/plain");
    assert_masked(
        "plain",
        &r.body,
        Some(r.header("x-echo-authorization").unwrap_or("missing")),
        &token,
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body_bytes.len().to_string().as_str()),
        "{r}"
    );

    // gzip-coded in 7-byte chunks: decoded, scrubbed, sent as identity.
    let r = get(
        "gzip",
        "coding=gzip&chunk=7&echo_header=authorization",
        &["--http1.1"],
    );
    r.expect_status(200);
    let token = minted_token(&up, addr, "/reflect/gzip");
    assert_eq!(r.header("content-encoding"), None, "{r}");
    assert_masked(
        "gzip",
        &r.body,
        Some(r.header("x-echo-authorization").unwrap_or("missing")),
        &token,
    );

    // HTTP/2, chunked 3 bytes a frame: the token cut across many frames.
    let r = get("h2", "chunk=3", &["--http2", "-v"]);
    r.expect_status(200);
    assert!(r.stderr.contains("HTTP/2 200"), "not HTTP/2: {}", r.stderr);
    let token = minted_token(&up, addr, "/reflect/h2");
    assert_masked("h2", &r.body, None, &token);

    // Python requests through CONNECT, asking for gzip itself.
    let script = r#"
import json, sys, requests
tunnel, ca = sys.argv[1], sys.argv[2]
r = requests.get('https://echo.test/reflect/requests?coding=gzip&echo_header=authorization',
                 proxies={'https': tunnel}, verify=ca)
print(json.dumps({'status': r.status_code, 'body': r.text,
                  'echo': r.headers.get('x-echo-authorization')}))
"#;
    let out = python(
        script,
        [format!("http://{}", px.tunnel_addr()), px.ca().to_string()],
    );
    let got = out.assert_ok().json();
    assert_eq!(got["status"], 200, "{got}");
    let token = minted_token(&up, addr, "/reflect/requests");
    assert_masked(
        "requests",
        got["body"].as_str().unwrap_or(""),
        Some(got["echo"].as_str().unwrap_or("missing")),
        &token,
    );

    // Two transforms put values in one request: one scrub, in the entry of the first
    // (oauth_token), counting the matches of both; secrets gets no response entry.
    let r = get("both", "echo_header=authorization", &["--http1.1"]);
    r.expect_status(200);
    let token = minted_token(&up, addr, "/reflect/both");
    assert_masked(
        "both",
        &r.body,
        Some(r.header("x-echo-authorization").unwrap_or("missing")),
        &token,
    );
    assert!(!r.body.contains(STATIC_KEY), "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(
        v["headers"]["X-Api-Key"],
        json!(mask(STATIC_KEY.len())),
        "{}",
        r.body
    );

    // The record of each: the scrub's annotations in oauth_token's response entry.
    for (case, redacted, decoded) in [
        ("plain", Some(json!(["x-echo-authorization"])), None),
        (
            "gzip",
            Some(json!(["x-echo-authorization"])),
            Some(json!(["gzip"])),
        ),
        ("h2", None, None),
        (
            "requests",
            Some(json!(["x-echo-authorization"])),
            Some(json!(["gzip"])),
        ),
    ] {
        let (a, names) = response_entry(&px, &format!("/reflect/{case}"), "oauth_token");
        assert_eq!(names, ["oauth_token"], "{case}");
        assert_eq!(a["response_body_redacted"], json!(1), "{case}: {a}");
        assert_eq!(a.get("response_redacted").cloned(), redacted, "{case}: {a}");
        assert_eq!(
            a.get("response_body_decoded").cloned(),
            decoded,
            "{case}: {a}"
        );
    }
    let (a, names) = response_entry(&px, "/reflect/both", "oauth_token");
    assert_eq!(names, ["oauth_token"], "one scrub: {a}");
    assert_eq!(a["response_body_redacted"], json!(2), "{a}");
    assert_eq!(
        a["response_redacted"],
        json!(["x-echo-authorization"]),
        "{a}"
    );

    // Masked 6 times in bodies in all.
    let m = Curl::get(&format!("http://{}/metrics", px.metrics_addr())).run();
    assert!(
        m.body
            .lines()
            .any(|l| l == "iron_proxy_response_body_redactions_total 6"),
        "{}",
        m.body
    );
    assert_no_leak(&px, &[&token, STATIC_KEY, "cc-secret"]);
}

fn gcp_config(keyfile_var: &str, scrub: bool) -> String {
    format!(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["echo.test"]
  - name: gcp_auth
    config:
      keyfile: {{type: env, var: {keyfile_var}}}
      scopes: ["https://www.googleapis.com/auth/cloud-platform"]
      scrub_response_bodies: {scrub}
      rules:
        - host: "echo.test"
"#
    )
}

#[test]
fn a_minted_gcp_token_reflected_by_the_upstream_is_masked() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let up = Upstream::https("echo.test").start(&net);
    let key = std::fs::read_to_string(state.path().join("jwt_key.pem")).expect("jwt key");
    let keyfile = json!({
        "type": "service_account",
        "project_id": "iron-e2e",
        "private_key_id": "k1",
        "private_key": key,
        "client_email": "gcp-sa@iron-e2e.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": format!("http://{addr}/oauth/token"),
    })
    .to_string();

    let px = Proxy::with(gcp_config("GCP_KEYFILE", true).as_str())
        .resolver(&net)
        .env("GCP_KEYFILE", &keyfile)
        .start();
    // A Google-style error quoting the request's Authorization, gzip-coded, and the header
    // echoed: masked in both.
    let r =
        Curl::get("https://echo.test/reflect/gcp?coding=gzip&chunk=5&echo_header=authorization")
            .args(["--http1.1"])
            .via(&px)
            .run();
    r.expect_status(200);
    let token = minted_token(&up, addr, "/reflect/gcp");
    assert_eq!(r.header("content-encoding"), None, "{r}");
    assert_masked(
        "gcp",
        &r.body,
        Some(r.header("x-echo-authorization").unwrap_or("missing")),
        &token,
    );
    let (a, names) = response_entry(&px, "/reflect/gcp", "gcp_auth");
    assert_eq!(names, ["gcp_auth"]);
    assert_eq!(a["response_body_redacted"], json!(1), "{a}");
    assert_eq!(
        a["response_redacted"],
        json!(["x-echo-authorization"]),
        "{a}"
    );
    assert_eq!(a["response_body_decoded"], json!(["gzip"]), "{a}");
    assert_no_leak(&px, &[&token, "PRIVATE KEY"]);
    drop(px);

    // scrub_response_bodies: false: the body goes as the upstream sent it (still coded),
    // the header is scrubbed all the same.
    let px = Proxy::with(gcp_config("GCP_KEYFILE", false).as_str())
        .resolver(&net)
        .env("GCP_KEYFILE", &keyfile)
        .start();
    let r = Curl::get("https://echo.test/reflect/optout?coding=gzip&echo_header=authorization")
        .args(["--http1.1", "--compressed"])
        .via(&px)
        .run();
    r.expect_status(200);
    let token = minted_token(&up, addr, "/reflect/optout");
    assert_eq!(r.header("content-encoding"), Some("gzip"), "{r}");
    assert!(r.body.contains(&token), "the body as sent: {}", r.body);
    assert_eq!(
        r.header("x-echo-authorization"),
        Some("Bearer [redacted]"),
        "{r}"
    );
    let (a, _) = response_entry(&px, "/reflect/optout", "gcp_auth");
    assert_eq!(a, json!({"response_redacted": ["x-echo-authorization"]}));
}
