//! Python requests and curl under transparent interception, with no proxy setting: HTTPS
//! and plain HTTP to an allowed origin (keep-alive, an upload), the API token swapped in at
//! the boundary, and a host outside the allowlist refused with the policy's 403. The names
//! are resolved by the system resolver, whose queries the kernel hands to the proxy's DNS
//! server: the refused name never reaches a real resolver.

use super::*;

const API: &str = "api.test";
const DENIED: &str = "denied.test";
const PLACEHOLDER: &str = "proxy-api-token";

const TRANSFORMS: &str = r#"
  - name: allowlist
    config:
      domains: ["api.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: API_TOKEN}
          replace:
            proxy_value: "proxy-api-token"
            match_headers: ["Authorization"]
          rules:
            - host: "api.test"
"#;

/// requests, one Session (keep-alive): two GETs and a POST over HTTPS, a GET over plain
/// HTTP, then the refused host. Arguments: the CA file, the allowed and the refused name,
/// the placeholder token. Prints one JSON object.
const REQUESTS: &str = r#"
import json, os, sys, requests
ca, api, denied, token = sys.argv[1:5]
out = {}
with requests.Session() as s:
    s.headers["Authorization"] = "Bearer " + token
    out["gets"] = [s.get(f"https://{api}/files/hello.txt", verify=ca, timeout=20).text for _ in range(2)]
    body = os.urandom(256 << 10)
    r = s.post(f"https://{api}/echo/requests", data=body, verify=ca, timeout=20)
    out["post"] = [r.status_code, r.json()["len"] == len(body)]
    out["plain"] = s.get(f"http://{api}/files/hello.txt", timeout=20).text
    r = s.get(f"https://{denied}/files/hello.txt", verify=ca, timeout=20)
    out["denied"] = [r.status_code, r.headers.get("X-Iron-Proxy-Blocked"), r.text.split(":")[0]]
print(json.dumps(out))
"#;

#[test]
fn python_requests_and_curl_under_transparent_interception() {
    require_root!();
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &[API]);
    write(&origin.static_root().join("files/hello.txt"), b"hello\n");
    let px = Px::start_for(&net, TRANSPARENT, TRANSFORMS);
    let names = [API, DENIED];
    let auth = format!("Authorization: Bearer {PLACEHOLDER}");

    let mut cmd = px.command(TRANSPARENT, &names, paths::venv_python());
    cmd.arg("-c")
        .arg(REQUESTS)
        .arg(px.client_ca())
        .args([API, DENIED, PLACEHOLDER])
        .env("HOME", px.dir.path());
    let out = ok(run(&mut cmd));
    let got: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("requests printed no JSON ({e}):\n{}", text(&out)));
    assert_eq!(
        got,
        serde_json::json!({
            "gets": ["hello\n", "hello\n"],
            "post": [200, true],
            "plain": "hello\n",
            "denied": [403, "1", "Blocked by iron-proxy policy"],
        }),
        "{}",
        text(&out)
    );

    // curl: HTTPS and plain HTTP, each with the placeholder; then the refused host.
    for url in [
        format!("https://{API}/files/hello.txt"),
        format!("http://{API}/files/hello.txt"),
    ] {
        let mut cmd = px.command(TRANSPARENT, &names, "curl");
        cmd.args(["-sS", "--fail", "--cacert"])
            .arg(px.client_ca())
            .args(["-H", &auth, &url]);
        let out = ok(run(&mut cmd));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{url}");
    }
    let mut cmd = px.command(TRANSPARENT, &names, "curl");
    cmd.args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(px.client_ca())
        .args(["-H", &auth, &format!("https://{DENIED}/files/hello.txt")]);
    let out = ok(run(&mut cmd));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("Blocked by iron-proxy policy") && said.ends_with("\n403"),
        "curl shows the policy's 403:\n{said}"
    );

    // The origin saw the real token on every request, over TLS and plain HTTP alike.
    let requests = origin.requests();
    assert_eq!(requests.len(), 6, "{requests:?}");
    for r in &requests {
        assert_eq!(r["authorization"], format!("Bearer {REAL_TOKEN}"), "{r}");
    }
    assert_audit_matches_origin(&px, &origin, API, &[]);
    assert_refused_by_allowlist(&px, DENIED, 2);
    assert_never_logged(&px, REAL_TOKEN);
    // The workload's lookups were answered by the proxy: the refused name was never asked of
    // a real resolver (the proxy resolves a name only to dial it, once allowed).
    assert!(
        !net.dns().was_queried(DENIED),
        "{DENIED} reached the fake internet's resolver: {:?}",
        net.dns().queries()
    );
    assert!(
        net.dns().was_queried(API),
        "the proxy resolved {API} to dial it"
    );
}

/// A workload left with a proxy setting (docs/deploy-bare-metal.md): one naming the proxy's
/// own tunnel listener on loopback fails in the kernel (loopback is in the default deny
/// list); one naming another address is intercepted like any connection, and its CONNECT is
/// refused (405, `connect_not_supported`): tunnels are served on `tunnel_listen` only.
#[test]
fn an_intercepted_workload_with_a_proxy_setting_is_refused_with_a_reason() {
    require_root!();
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &[API]);
    let px = Px::start_for(&net, TRANSPARENT, TRANSFORMS);
    let curl = |proxy: &str| {
        let mut cmd = px.command(TRANSPARENT, &[], "curl");
        cmd.args(["-sS", "--cacert"]).arg(px.client_ca()).args([
            "-x",
            proxy,
            &format!("https://{API}/files/hello.txt"),
        ]);
        run(&mut cmd)
    };
    let out = curl(&px.proxy_url());
    assert_eq!(
        out.exit,
        7,
        "connection refused by the kernel:\n{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Couldn't connect to server"),
        "{}",
        text(&out)
    );
    let out = curl("http://corp-proxy.test:3128");
    assert_eq!(out.exit, 56, "the CONNECT is refused:\n{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CONNECT tunnel failed, response 405"),
        "{}",
        text(&out)
    );
    let rec = px.wait_for_audit(|a| a.method() == Some("CONNECT"));
    assert_eq!(rec.str("reason"), Some("connect_not_supported"), "{rec}");
    assert_eq!(rec.host(), Some(API), "{rec}");
    px.assert_intercepted(&rec);
    assert_eq!(
        px.audit().len(),
        1,
        "the loopback connection never reached the proxy: {}",
        px.audit()
    );
    assert!(origin.requests().is_empty());
}
