//! The proxy's own backend calls (here: OAuth2 token mints) resolve names with the data
//! plane's resolver (`dns.upstream_resolver`), and never go through the proxy itself: a token
//! endpoint at one of iron-proxy's own listeners fails closed instead of being answered by
//! the proxy's own token-endpoint stub.

use iron_proxy_tests::ports::free_port;
use iron_proxy_tests::*;
use serde_json::json;

use super::assert_no_leak;
use super::oauth::authlib;

#[test]
fn a_token_endpoint_known_only_to_the_upstream_resolver_is_reached() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    // Only the fake internet's dnsmasq (`dns.upstream_resolver`) knows this name; the
    // host's resolv.conf does not.
    net.dns().set("auth.test", &[addr.ip()]);
    let config = format!(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["api.test"]
  - name: oauth_token
    config:
      tokens:
        - grant: client_credentials
          client_id: {{type: env, var: CC_ID}}
          client_secret: {{type: env, var: CC_SECRET}}
          token_endpoint: "http://auth.test:{port}/oauth/token"
          rules: [{{host: api.test, paths: ["/api/cc"]}}]
"#,
        port = addr.port()
    );
    let px = Proxy::with(config.as_str())
        .resolver(&net)
        .env("CC_ID", "cc-client")
        .env("CC_SECRET", "cc-secret")
        .start();

    let r = Curl::get("http://api.test/api/cc").via(&px).run();
    r.expect_status(200);
    assert_eq!(r.json()["client"], json!("cc-client"), "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/cc"));
    assert_eq!(
        rec.annotation("oauth_token", "injected"),
        Some(&json!(["header:Authorization"])),
        "{rec}"
    );
    assert!(
        net.dns().was_queried("auth.test"),
        "the token endpoint's name was asked of dns.upstream_resolver"
    );
    assert_no_leak(&px, &["cc-secret"]);
}

#[test]
fn a_token_endpoint_at_the_proxys_own_listener_fails_closed() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("api.test").start(&net);
    // The proxy's own http_listen, chosen here so the config can name it: by address (as
    // QA's repro), and by a name the upstream resolver answers with the proxy's address (as
    // when the host's resolv.conf points at iron-proxy's own DNS server).
    let port = free_port([127, 0, 0, 1].into(), false);
    net.dns()
        .set("loop.test", &["127.0.0.1".parse().expect("ip")]);
    let config = format!(
        r#"
proxy:
  http_listen: "127.0.0.1:{port}"
transforms:
  - name: allowlist
    config:
      domains: ["api.test"]
      cidrs: ["127.0.0.1/32"]
  - name: oauth_token
    config:
      tokens:
        - grant: client_credentials
          client_id: {{type: env, var: CC_ID}}
          client_secret: {{type: env, var: CC_SECRET}}
          token_endpoint: "http://127.0.0.1:{port}/oauth/token"
          rules: [{{host: api.test, paths: ["/by-address"]}}]
        - grant: client_credentials
          client_id: {{type: env, var: CC_ID}}
          client_secret: {{type: env, var: CC_SECRET}}
          token_endpoint: "http://loop.test:{port}/oauth/token"
          rules: [{{host: api.test, paths: ["/by-name"]}}]
"#
    );
    let px = Proxy::with(config.as_str())
        .resolver(&net)
        .env("CC_ID", "cc-client")
        .env("CC_SECRET", "cc-secret")
        .start();
    assert_eq!(
        px.http_addr().port(),
        port,
        "the proxy took the chosen port"
    );

    let paths = [("/by-address", "127.0.0.1"), ("/by-name", "loop.test")];
    let answers: Vec<_> = paths
        .iter()
        .map(|(path, _)| Curl::get(&format!("https://api.test{path}")).via(&px).run())
        .collect();
    up.assert_no_request(|r| {
        r.header("authorization")
            .is_some_and(|v| v.contains("iron-proxy-stub-token"))
    });
    for ((path, host), r) in paths.into_iter().zip(answers) {
        assert_eq!(r.status, 502, "{path}: {r}");
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert_eq!(rec.str("reason"), Some("token_unavailable"), "{rec}");
        let error = rec
            .annotation("oauth_token", "error")
            .map(|e| e.to_string())
            .unwrap_or_default();
        let expected = format!(
            "{host} resolves to iron-proxy's own listener 127.0.0.1:{port}; set dns.upstream_resolver"
        );
        assert!(error.contains(&expected), "{path}: {rec}");
    }
    // The mint never reached the proxy's own stub, and nothing went upstream.
    assert!(
        px.audit().iter().all(|a| a.path() != Some("/oauth/token")),
        "a token request went through the proxy itself"
    );
    up.assert_untouched();
    assert_no_leak(&px, &["cc-secret"]);
}
