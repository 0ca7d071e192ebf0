//! `oauth_token` through the real binary against an Authlib authorization server (a real
//! OAuth2 implementation: it checks client authentication, users, rotating refresh tokens
//! and RS256 assertion signatures): all four grants mint tokens the server's protected
//! resource accepts, tokens are cached, a rotated refresh token is used for the next
//! exchange, the token endpoint is stubbed for the workload, a refused mint fails closed.

use std::net::SocketAddr;
use std::time::Duration;

use iron_proxy_tests::netns::NetProcess;
use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::assert_no_leak;

/// The Authlib server on a fresh host of `net`, port 80; `api.test` resolves to it.
/// It writes its JWT key before it listens.
pub(super) fn authlib(net: &FakeInternet, state: &std::path::Path) -> (NetProcess, SocketAddr) {
    let (server, addr) = net.python_peer("oauth_server.py", 80, |host, cmd| {
        cmd.args([host.v4.to_string(), "80".into()]).arg(state);
    });
    net.dns().set("api.test", &[addr.ip()]);
    (server, addr)
}

fn stats(addr: SocketAddr) -> Value {
    curl(["-s", &format!("http://{addr}/stats")]).json()
}

#[test]
fn oauth_token_mints_what_an_authlib_server_accepts() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let key = std::fs::read_to_string(state.path().join("jwt_key.pem")).expect("jwt key");
    let endpoint = format!("http://{addr}/oauth/token");
    let config = format!(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["api.test"]
      cidrs: ["{ip}/32"]
  - name: oauth_token
    config:
      tokens:
        - grant: client_credentials
          client_id: {{type: env, var: CC_ID}}
          client_secret: {{type: env, var: CC_SECRET}}
          token_endpoint: "{endpoint}"
          rules: [{{host: api.test, paths: ["/api/cc"]}}]
        - grant: password
          username: {{type: env, var: PW_USER}}
          password: {{type: env, var: PW_PASSWORD}}
          client_id: {{type: env, var: PW_ID}}
          client_secret: {{type: env, var: PW_SECRET}}
          token_endpoint: "{endpoint}"
          rules: [{{host: api.test, paths: ["/api/pw"]}}]
        - grant: refresh_token
          refresh_token: {{type: env, var: RT_TOKEN}}
          client_id: {{type: env, var: RT_ID}}
          client_secret: {{type: env, var: RT_SECRET}}
          token_endpoint: "{endpoint}"
          scopes: ["read"]
          rules: [{{host: api.test, paths: ["/api/rt"]}}]
        - grant: jwt_bearer
          issuer: {{type: env, var: JWT_ISS}}
          subject: {{type: env, var: JWT_SUB}}
          private_key: {{type: env, var: JWT_KEY}}
          audience: "{endpoint}"
          token_endpoint: "{endpoint}"
          rules: [{{host: api.test, paths: ["/api/jwt"]}}]
        - grant: client_credentials
          client_id: {{type: env, var: CC_ID}}
          client_secret: {{type: env, var: WRONG_SECRET}}
          token_endpoint: "{endpoint}"
          rules: [{{host: api.test, paths: ["/api/bad"]}}]
log:
  level: "debug"
"#,
        ip = addr.ip()
    );
    let px = Proxy::with(config.as_str())
        .resolver(&net)
        .env("CC_ID", "cc-client")
        .env("CC_SECRET", "cc-secret")
        .env("WRONG_SECRET", "not-the-secret")
        .env("PW_USER", "svc-user")
        .env("PW_PASSWORD", "svc-password")
        .env("PW_ID", "pw-client")
        .env("PW_SECRET", "pw-secret")
        .env("RT_TOKEN", "rt-initial")
        .env("RT_ID", "rt-client")
        .env("RT_SECRET", "rt-secret")
        .env("JWT_ISS", "jwt-issuer")
        .env("JWT_SUB", "svc-user")
        .env("JWT_KEY", &key)
        .start();
    let get = |path: &str| {
        Curl::get(&format!("http://api.test{path}"))
            .header("Authorization", "Bearer iron-proxy-stub-token")
            .via(&px)
            .run()
    };

    // Each grant: the resource server accepts the minted token and says who it was for.
    for (path, client, user, grant) in [
        ("/api/cc", "cc-client", Value::Null, "client_credentials"),
        ("/api/pw", "pw-client", json!("svc-user"), "password"),
        ("/api/rt", "rt-client", json!("svc-user"), "refresh_token"),
        (
            "/api/jwt",
            "jwt-issuer",
            json!("svc-user"),
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
        ),
    ] {
        let r = get(path);
        r.expect_status(200);
        let body = r.json();
        assert_eq!(body["client"], json!(client), "{path}: {body}");
        assert_eq!(body["user"], user, "{path}: {body}");
        assert_eq!(body["grant"], json!(grant), "{path}: {body}");
    }
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/jwt"));
    assert_eq!(
        rec.annotation("oauth_token", "grant"),
        Some(&json!("jwt_bearer")),
        "{rec}"
    );
    assert_eq!(
        rec.annotation("oauth_token", "injected"),
        Some(&json!(["header:Authorization"])),
        "{rec}"
    );

    // Cached: more client_credentials requests mint nothing more. The refresh_token
    // entry's tokens live 5 s, inside the 10 s margin, so its next use exchanges again,
    // with the refresh token the server rotated to (the initial one is revoked by now).
    get("/api/cc").expect_status(200);
    get("/api/cc").expect_status(200);
    get("/api/rt").expect_status(200);
    let issued = stats(addr);
    assert_eq!(issued["client_credentials"], json!(1), "{issued}");
    assert_eq!(issued["refresh_token"], json!(2), "{issued}");

    // The workload's own token request is answered by the proxy with the stub.
    let stub = Curl::get(&endpoint)
        .args(["-X", "POST", "-d", "grant_type=client_credentials"])
        .via(&px)
        .run();
    stub.expect_status(200);
    assert_eq!(
        stub.json(),
        json!({"access_token": "iron-proxy-stub-token", "expires_in": 3600, "token_type": "Bearer"})
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/oauth/token"));
    assert_eq!(
        rec.transform("oauth_token").and_then(|t| t.get("action")),
        Some(&json!("stub")),
        "{rec}"
    );
    assert_eq!(
        rec.annotation("oauth_token", "stubbed"),
        Some(&json!("oauth2_token_endpoint")),
        "{rec}"
    );
    assert_eq!(
        stats(addr)["client_credentials"],
        json!(1),
        "the stub reached no server"
    );

    // A mint the server refuses fails closed: 502, nothing forwarded unauthenticated.
    let r = get("/api/bad");
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/bad"));
    assert_eq!(rec.str("reason"), Some("token_unavailable"), "{rec}");
    let error = rec
        .annotation("oauth_token", "error")
        .cloned()
        .unwrap_or_default();
    assert!(error.to_string().contains("invalid_client"), "{rec}");

    assert_no_leak(
        &px,
        &[
            "cc-secret",
            "pw-secret",
            "svc-password",
            "rt-secret",
            "rt-initial",
        ],
    );
}

/// Token endpoints that misbehave. One echoes the refused request (the client secret, the
/// Basic header) in its `error_description`: the workload's 502 says nothing of it and the
/// record holds `[redacted]`, control characters escaped. One answers `expires_in` 2^64-1:
/// the token is injected and cached (before, the clock's overflow panicked the request's
/// task and every request minted again). One never answers in time: the request is refused
/// after the exchange's 10 s, and the requests right after it get the same answer without
/// asking the endpoint again. One answers 503; one answers `expires_in: 5.0`.
#[test]
fn a_misbehaving_token_endpoint_leaks_nothing_and_holds_nothing() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let entry = |mode: &str, path: &str| {
        format!(
            r#"
        - grant: client_credentials
          client_id: {{type: env, var: CC_ID}}
          client_secret: {{type: env, var: CC_SECRET}}
          token_endpoint: "http://{addr}/misbehave/{mode}"
          token_endpoint_headers:
            X-Api-Key: {{type: env, var: EP_KEY}}
          rules: [{{host: api.test, paths: ["{path}"]}}]"#
        )
    };
    let config = format!(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["api.test"]
      cidrs: ["{ip}/32"]
  - name: oauth_token
    config:
      tokens:{reflect}{huge}{slow}{unavailable}{float}
        - grant: password
          username: {{type: env, var: CC_ID}}
          password: {{type: env, var: PW_PASSWORD}}
          client_id: {{type: env, var: CC_ID}}
          token_endpoint: "http://{addr}/misbehave/reflect"
          rules: [{{host: api.test, paths: ["/api/reflect-password"]}}]
"#,
        ip = addr.ip(),
        reflect = entry("reflect", "/api/reflect"),
        huge = entry("huge-expiry", "/api/huge"),
        slow = entry("slow", "/api/slow"),
        unavailable = entry("unavailable", "/api/unavailable"),
        float = entry("float-expiry", "/api/float"),
    );
    let secret = "S3cr3t/Client+Value-ABC123";
    let px = Proxy::with(config.as_str())
        .resolver(&net)
        .env("CC_ID", "cc-client")
        .env("CC_SECRET", secret)
        .env("EP_KEY", "endpoint-header-key-42")
        .env("PW_PASSWORD", "pass/word+QUOTED-987")
        .start();
    let get = |path: &str| {
        Curl::get(&format!("http://api.test{path}"))
            .via(&px)
            .args(["-m", "60"])
            .run()
    };
    let hits = || curl(["-s", &format!("http://{addr}/misbehave/hits")]).json();

    let r = get("/api/reflect");
    assert_eq!(r.status, 502, "{r}");
    assert!(
        !r.body.contains("invalid_client") && !r.body.contains("S3cr3t"),
        "the workload is told no more than that there is no token: {r}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/reflect"));
    let error = rec
        .annotation("oauth_token", "error")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("invalid_client") && error.contains("[redacted]"),
        "{rec}"
    );
    assert!(
        error.contains("\\r\\n\\u{1b}"),
        "control characters escaped: {error}"
    );

    // The password goes in the form: the echo quotes it in every encoding.
    let r = get("/api/reflect-password");
    assert_eq!(r.status, 502, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/reflect-password"));
    assert!(rec.to_string().contains("[redacted]"), "{rec}");

    for _ in 0..3 {
        let r = get("/api/huge");
        // The resource server does not know the token: what matters is that it was sent.
        assert_eq!(r.status, 401, "{r}");
    }
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/huge"));
    assert_eq!(
        rec.annotation("oauth_token", "injected"),
        Some(&json!(["header:Authorization"])),
        "{rec}"
    );
    assert_eq!(hits()["huge-expiry"], json!(1), "minted once, then cached");

    let started = std::time::Instant::now();
    let r = get("/api/slow");
    assert_eq!(r.status, 502, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(18),
        "{:?}",
        started.elapsed()
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/slow"));
    let error = rec
        .annotation("oauth_token", "error")
        .cloned()
        .unwrap_or_default();
    assert!(error.to_string().contains("no answer within 10s"), "{rec}");
    let r = get("/api/slow");
    assert_eq!(r.status, 502, "{r}");
    assert_eq!(
        hits()["slow"],
        json!(1),
        "the failure answered the next request"
    );

    // A 503 is the endpoint failing, not refusing the client in the Basic header: it is
    // not asked again with the client in the form (it was, doubling every failed mint).
    let r = get("/api/unavailable");
    assert_eq!(r.status, 502, "{r}");
    assert_eq!(hits()["unavailable"], json!(1), "asked once");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/unavailable"));
    assert!(rec.to_string().contains("temporarily_unavailable"), "{rec}");

    // `expires_in: 5.0` is five seconds, inside the 10 s margin: each request mints again
    // (a fraction was read as "does not expire", and the token cached for good).
    for _ in 0..2 {
        let r = get("/api/float");
        assert_eq!(r.status, 401, "{r}");
    }
    assert_eq!(hits()["float-expiry"], json!(2), "minted per request");

    assert_no_leak(
        &px,
        &[
            secret,
            "S3cr3t%2FClient%2BValue-ABC123",
            "S3cr3t%2fClient%2bValue-ABC123",
            // base64 of the secret alone, and its first 20 characters
            "UzNjcjN0L0NsaWVudCtWYWx1ZS1BQkMxMjM=",
            "S3cr3t/Client+Value-",
            "endpoint-header-key-42",
            "pass/word+QUOTED",
            "pass%2fword%2bQUOTED",
            "cGFzcy93b3JkK1FVT1RFRC05ODc", // base64 of the password
        ],
    );
}

/// A reload keeps the refresh token the server rotated to. The Authlib server revokes each
/// refresh token it exchanges, and its access tokens for this grant live 5 s (inside the
/// proxy's 10 s margin), so every request exchanges again. Two requests use `rt-initial`
/// and the token it rotated to; then a reload (management API, then SIGHUP) that only adds
/// a domain to the allowlist; the requests after each still get a token (before, the rebuilt
/// entry sent the revoked `rt-initial` again: `invalid_grant`, 502 `token_unavailable`).
#[test]
fn a_reload_keeps_the_rotated_refresh_token() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let config = |domains: &[&str], listen: &str| {
        format!(
            r#"
management:{listen}
  api_key_env: IRON_E2E_MGMT_KEY
transforms:
  - name: allowlist
    config:
      domains: {domains:?}
      cidrs: ["{ip}/32"]
  - name: oauth_token
    config:
      tokens:
        - grant: refresh_token
          refresh_token: {{type: env, var: RT_TOKEN}}
          client_id: {{type: env, var: RT_ID}}
          client_secret: {{type: env, var: RT_SECRET}}
          token_endpoint: "http://{addr}/oauth/token"
          scopes: ["read"]
          rules: [{{host: api.test, paths: ["/api/rt"]}}]
"#,
            ip = addr.ip()
        )
    };
    let mut px = Proxy::with(config(&["api.test"], "\n  listen: auto").as_str())
        .resolver(&net)
        .env("IRON_E2E_MGMT_KEY", "mgmt-e2e-oauth-key")
        .env("RT_TOKEN", "rt-initial")
        .env("RT_ID", "rt-client")
        .env("RT_SECRET", "rt-secret")
        .start();
    let get = |px: &ProxyProcess| {
        let r = Curl::get("http://api.test/api/rt")
            .header("Authorization", "Bearer iron-proxy-stub-token")
            .via(px)
            .run();
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json()["grant"], json!("refresh_token"), "{r}");
    };
    get(&px);
    get(&px);
    assert_eq!(stats(addr)["refresh_token"], json!(2));

    // A reload through the management API that changes nothing of the entry.
    px.rewrite_config(config(&["api.test", "other.test"], ""));
    let r = Curl::get(&format!("http://{}/v1/reload", px.management_addr()))
        .args(["-X", "POST"])
        .header("Authorization", "Bearer mgmt-e2e-oauth-key")
        .run();
    assert_eq!(r.status, 200, "reload: {r}");
    get(&px);
    assert_eq!(
        stats(addr)["refresh_token"],
        json!(3),
        "exchanged with the rotated refresh token"
    );

    // And through SIGHUP.
    px.rewrite_config(config(&["api.test"], ""));
    px.signal(nix::sys::signal::Signal::SIGHUP);
    px.wait_for_log(|l| l.contains("configuration reloaded") && l.contains("signal"));
    get(&px);
    assert_eq!(stats(addr)["refresh_token"], json!(4));
    assert!(
        px.audit()
            .iter()
            .all(|a| a.str("reason") != Some("token_unavailable")),
        "no request was refused a token"
    );
    assert_no_leak(&px, &["rt-secret", "rt-initial"]);
}
