//! Allowlist decisions through the real binary: domains (exact, `*.x` with its
//! apex, bare `*`), CIDRs (IP-literal hosts only), rules (methods, paths and
//! schemes) and warn mode. A refused request gets the iron-proxy policy body and never
//! reaches its upstream.

use iron_proxy_tests::*;

use super::{allowed, assert_policy_refusal, audited, failed, plain, NOT_ALLOWLISTED};

/// The fake internet's /24, for `cidrs` and deny lists.
pub fn subnet(net: &FakeInternet) -> String {
    let o = net.host_side_v4().octets();
    format!("{}.{}.{}.0/24", o[0], o[1], o[2])
}

#[test]
fn exact_and_wildcard_domains_allow_only_what_they_name() {
    require_root!();
    let net = FakeInternet::new();
    let exact = Upstream::https("exact.test").start(&net);
    let wild = Upstream::https("wild.test")
        .alias("api.wild.test")
        .start(&net);
    let lookalike = Upstream::https("notwild.test")
        .alias("exact.test.evil")
        .start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["exact.test", "*.wild.test"]
"#,
    )
    .resolver(&net)
    .start();

    // Exact name, plain HTTP and MITM HTTPS.
    plain(&px, "http://exact.test/get").run().expect_status(200);
    exact.wait_for_request(|q| q.path() == "/get" && q.sni().is_none());
    audited(&px, "exact.test", "/get", &allowed(200));
    Curl::get("https://exact.test/anything/tls")
        .via(&px)
        .run()
        .expect_status(200);
    exact.wait_for_request(|q| q.path() == "/anything/tls" && q.sni() == Some("exact.test"));
    audited(&px, "exact.test", "/anything/tls", &allowed(200));

    // `*.wild.test` admits a subdomain and the apex.
    plain(&px, "http://api.wild.test/anything/sub")
        .run()
        .expect_status(200);
    wild.wait_for_request(|q| q.path() == "/anything/sub" && q.host() == "api.wild.test");
    audited(&px, "api.wild.test", "/anything/sub", &allowed(200));
    Curl::get("https://wild.test/anything/apex")
        .via(&px)
        .run()
        .expect_status(200);
    wild.wait_for_request(|q| q.path() == "/anything/apex");
    audited(&px, "wild.test", "/anything/apex", &allowed(200));

    // A suffix that is not a label boundary, and a name that merely starts with an allowed one.
    for (url, host) in [
        ("http://notwild.test/get", "notwild.test"),
        ("https://notwild.test/get", "notwild.test"),
        ("http://exact.test.evil/get", "exact.test.evil"),
    ] {
        let r = Curl::get(url).via(&px).run();
        assert_policy_refusal(&r);
        audited(&px, host, "/get", &NOT_ALLOWLISTED);
    }
    lookalike.assert_untouched();
    assert!(
        !net.dns().was_queried("notwild.test"),
        "a refused name must not even be resolved"
    );
}

#[test]
fn bare_star_admits_every_name_and_ip_literal_and_no_other_glob_admits_an_ip() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("anything.test").start(&net);
    let denied = Upstream::http("denied.test").start(&net);
    let px = Proxy::with(format!(
        r#"
proxy:
  upstream_deny_cidrs: ["{}/32"]
transforms:
  - name: allowlist
    config:
      domains: ["*"]
"#,
        denied.ip()
    ))
    .resolver(&net)
    .start();

    plain(&px, "http://anything.test/get")
        .run()
        .expect_status(200);
    audited(&px, "anything.test", "/get", &allowed(200));
    up.wait_for_request(|q| q.path() == "/get");

    // The catch-all admits an IP literal too (the spec: "matches any host")...
    let ip = up.ip().to_string();
    plain(&px, &format!("http://{ip}/anything/by-ip"))
        .run()
        .expect_status(200);
    audited(&px, &ip, "/anything/by-ip", &allowed(200));
    up.wait_for_request(|q| q.path() == "/anything/by-ip");
    // ...and upstream_deny_cidrs still apply on top.
    let deny = denied.ip().to_string();
    let r = plain(&px, &format!("http://{deny}/anything/denied")).run();
    assert_eq!(r.status, 502, "{r}");
    audited(&px, &deny, "/anything/denied", &failed(502, "deny_cidr"));
    denied.assert_untouched();

    // Any other glob matches names only, in `domains` and in `rules` alike: an IP literal
    // is not text to match a glob against (that is what cidrs are for).
    let globs = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["*.test"]
      rules:
        - host: "*"
          methods: ["POST"]
"#,
    )
    .resolver(&net)
    .start();
    plain(&globs, "http://anything.test/anything/glob-name")
        .run()
        .expect_status(200);
    let r = plain(&globs, &format!("http://{ip}/anything/glob-ip")).run();
    assert_policy_refusal(&r);
    audited(&globs, &ip, "/anything/glob-ip", &NOT_ALLOWLISTED);
    up.assert_no_request(|q| q.path() == "/anything/glob-ip");

    // A glob of addresses could never match anything: refused when the config loads,
    // with the CIDR it means.
    for (field, glob) in [("domains", "198.*"), ("rules", "198.18.*")] {
        let config = if field == "domains" {
            format!("transforms:\n  - name: allowlist\n    config:\n      domains: [\"{glob}\"]\n")
        } else {
            format!("transforms:\n  - name: allowlist\n    config:\n      rules:\n        - host: \"{glob}\"\n")
        };
        let (status, lines) =
            Proxy::with(config.as_str()).run_to_exit(std::time::Duration::from_secs(30));
        assert!(!status.success(), "{glob}: {lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(glob) && l.contains("is a pattern of IP addresses")),
            "{glob}: {lines:?}"
        );
    }
}

#[test]
fn cidrs_admit_ip_literals_inside_and_nothing_else() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("byname.test").start(&net);
    let other = Upstream::http("other.test").start(&net);
    let px = Proxy::with(format!(
        r#"
transforms:
  - name: allowlist
    config:
      cidrs: ["{}/32", "{}/128"]
"#,
        up.ip(),
        up.ipv6()
    ))
    .resolver(&net)
    .start();

    let ip = up.ip().to_string();
    plain(&px, &format!("http://{ip}/anything/v4"))
        .run()
        .expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/v4");
    audited(&px, &ip, "/anything/v4", &allowed(200));

    let v6 = up.ipv6().to_string();
    plain(&px, &format!("http://[{v6}]/anything/v6"))
        .run()
        .expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/v6");
    audited(&px, &v6, "/anything/v6", &allowed(200));

    // The name of a host inside the range is not an IP literal: cidrs do not admit it.
    let r = plain(&px, "http://byname.test/anything/name").run();
    assert_policy_refusal(&r);
    audited(&px, "byname.test", "/anything/name", &NOT_ALLOWLISTED);
    up.assert_no_request(|q| !["/anything/v4", "/anything/v6"].contains(&q.path()));

    // An address outside the range.
    let outside = other.ip().to_string();
    let r = plain(&px, &format!("http://{outside}/anything/outside")).run();
    assert_policy_refusal(&r);
    audited(&px, &outside, "/anything/outside", &NOT_ALLOWLISTED);
    other.assert_untouched();
}

#[test]
fn rules_filter_by_method_and_path() {
    require_root!();
    let net = FakeInternet::new();
    let api = Upstream::https("api.rules.test").start(&net);
    let ipup = Upstream::http("ip.rules.test").start(&net);
    let ip = ipup.ip().to_string();
    let px = Proxy::with(format!(
        r#"
transforms:
  - name: allowlist
    config:
      rules:
        - host: "api.rules.test"
          methods: ["GET", "post"]
          paths: ["/v1/*", "/status/201"]
        - cidr: "{ip}/32"
          methods: ["GET"]
"#
    ))
    .resolver(&net)
    .start();

    // `/v1/*` admits anything below /v1/ (the fake upstream answers 404 for unknown paths).
    plain(&px, "http://api.rules.test/v1/models")
        .run()
        .expect_status(404);
    api.wait_for_request(|q| q.path() == "/v1/models" && q.method() == "GET");
    audited(&px, "api.rules.test", "/v1/models", &allowed(404));
    Curl::get("https://api.rules.test/v1/chat/completions")
        .args(["-X", "POST", "-d", "{}"])
        .via(&px)
        .run()
        .expect_status(404);
    api.wait_for_request(|q| q.path() == "/v1/chat/completions" && q.method() == "POST");
    audited(&px, "api.rules.test", "/v1/chat/completions", &allowed(404));
    plain(&px, "http://api.rules.test/status/201")
        .run()
        .expect_status(201);
    audited(&px, "api.rules.test", "/status/201", &allowed(201));

    // Method mismatch, path mismatch (plain and MITM), and `/v1` itself (not below /v1/).
    let cases = [
        (
            plain(&px, "http://api.rules.test/v1/delete-me").args(["-X", "DELETE"]),
            "/v1/delete-me",
            "DELETE",
        ),
        (
            plain(&px, "http://api.rules.test/v2/models"),
            "/v2/models",
            "GET",
        ),
        (
            Curl::get("https://api.rules.test/admin").via(&px),
            "/admin",
            "GET",
        ),
        (plain(&px, "http://api.rules.test/v1"), "/v1", "GET"),
        // Methods are case-sensitive and go upstream as sent: `get` is not the `GET` the
        // rule admits (before, it passed as GET and reached the upstream as `get`).
        (
            plain(&px, "http://api.rules.test/v1/lower").args(["-X", "get"]),
            "/v1/lower",
            "get",
        ),
        // A POST that servers honouring method overrides (Google APIs, Rack, Laravel,
        // ASP.NET) perform as DELETE is not admitted by a rule allowing GET and POST.
        (
            Curl::get("https://api.rules.test/v1/override")
                .args(["-X", "POST", "-d", "{}"])
                .header("X-HTTP-Method-Override", "DELETE")
                .via(&px),
            "/v1/override",
            "POST",
        ),
        (
            plain(
                &px,
                "http://api.rules.test/v1/override-query?_method=delete",
            )
            .args(["-d", "x=1"]),
            "/v1/override-query",
            "POST",
        ),
    ];
    for (curl, path, method) in cases {
        let r = curl.run();
        assert_policy_refusal(&r);
        let rec = audited(&px, "api.rules.test", path, &NOT_ALLOWLISTED);
        assert_eq!(rec.method(), Some(method), "{rec}");
    }
    api.assert_no_request(|q| {
        q.method() == "DELETE"
            || [
                "/v2/models",
                "/admin",
                "/v1",
                "/v1/override",
                "/v1/override-query",
            ]
            .contains(&q.path())
    });
    // An override to a method the rule allows passes.
    plain(&px, "http://api.rules.test/v1/override-get")
        .args(["-d", "x=1"])
        .header("X-HTTP-Method-Override", "GET")
        .run()
        .expect_status(404);
    audited(&px, "api.rules.test", "/v1/override-get", &allowed(404));

    // A cidr rule: GET on the IP literal passes, POST does not.
    plain(&px, &format!("http://{ip}/anything/cidr"))
        .run()
        .expect_status(200);
    audited(&px, &ip, "/anything/cidr", &allowed(200));
    let r = plain(&px, &format!("http://{ip}/anything/cidr-post"))
        .args(["-d", "x=1"])
        .run();
    assert_policy_refusal(&r);
    audited(&px, &ip, "/anything/cidr-post", &NOT_ALLOWLISTED);
    ipup.assert_no_request(|q| q.method() == "POST");
}

#[test]
fn rules_filter_by_scheme() {
    require_root!();
    let net = FakeInternet::new();
    let tls = Upstream::https("tls.schemes.test").start(&net);
    let plainup = Upstream::https("plain.schemes.test").start(&net);
    let px = Proxy::with(
        r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      rules:
        - host: "tls.schemes.test"
          schemes: [https]
        - host: "plain.schemes.test"
          schemes: [HTTP]
"#,
    )
    .resolver(&net)
    .start();

    // `schemes: [https]`: https_listen, a MITM'd CONNECT and an absolute-form
    // `https://` request (forwarded over TLS) pass.
    Curl::get("https://tls.schemes.test/anything/listen")
        .via(&px)
        .run()
        .expect_status(200);
    audited(&px, "tls.schemes.test", "/anything/listen", &allowed(200));
    Curl::get("https://tls.schemes.test/anything/connect")
        .through_connect(&px)
        .run()
        .expect_status(200);
    audited(&px, "tls.schemes.test", "/anything/connect", &allowed(200));
    plain(&px, "http://tls.schemes.test/anything/absolute")
        .args([
            "--request-target",
            "https://tls.schemes.test/anything/absolute",
        ])
        .run()
        .expect_status(200);
    tls.wait_for_request(|q| q.path() == "/anything/absolute" && q.sni().is_some());
    audited(&px, "tls.schemes.test", "/anything/absolute", &allowed(200));

    // ... and plain HTTP is refused: on http_listen and through the tunnel listener.
    for (curl, path) in [
        (
            plain(&px, "http://tls.schemes.test/anything/plain"),
            "/anything/plain",
        ),
        (
            Curl::get("http://tls.schemes.test/anything/forward").through_connect(&px),
            "/anything/forward",
        ),
    ] {
        let r = curl.run();
        assert_policy_refusal(&r);
        audited(&px, "tls.schemes.test", path, &NOT_ALLOWLISTED);
    }
    tls.assert_no_request(|q| q.sni().is_none());

    // A WebSocket upgrade has its request's scheme: `ws://` (over http_listen)
    // is refused, `wss://` (over https_listen) reaches the upstream's echo.
    let upgrade = |curl: Curl| {
        curl.args(["--http1.1"])
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    let r = upgrade(plain(&px, "http://tls.schemes.test/ws")).run();
    assert_policy_refusal(&r);
    audited(&px, "tls.schemes.test", "/ws", &NOT_ALLOWLISTED);
    // curl has no WebSocket client here: it waits on after the 101, so a
    // short max-time ends it; the upstream saw the upgrade over TLS.
    let _ = upgrade(Curl::get("https://tls.schemes.test/ws").via(&px))
        .max_time(3)
        .run();
    tls.wait_for_request(|q| q.path() == "/ws" && q.sni().is_some());
    tls.assert_no_request(|q| q.sni().is_none());

    // `schemes: [http]` is the reverse.
    plain(&px, "http://plain.schemes.test/anything/plain")
        .run()
        .expect_status(200);
    audited(&px, "plain.schemes.test", "/anything/plain", &allowed(200));
    let r = Curl::get("https://plain.schemes.test/anything/tls")
        .via(&px)
        .run();
    assert_policy_refusal(&r);
    audited(&px, "plain.schemes.test", "/anything/tls", &NOT_ALLOWLISTED);
    plainup.assert_no_request(|q| q.sni().is_some());
}

#[test]
fn warn_mode_forwards_and_annotates() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("unlisted.test").start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      warn: true
      domains: ["listed.test"]
"#,
    )
    .resolver(&net)
    .start();

    for (curl, path) in [
        (
            plain(&px, "http://unlisted.test/anything/warn"),
            "/anything/warn",
        ),
        (
            Curl::get("https://unlisted.test/anything/warn-tls").via(&px),
            "/anything/warn-tls",
        ),
    ] {
        curl.run().expect_status(200);
        up.wait_for_request(|q| q.path() == path);
        let rec = audited(&px, "unlisted.test", path, &allowed(200));
        assert_eq!(
            rec.annotation("allowlist", "action")
                .and_then(|v| v.as_str()),
            Some("warn"),
            "{rec}"
        );
        let reason = rec
            .annotation("allowlist", "reason")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        assert!(
            reason.contains("unlisted.test"),
            "the warning names the host: {rec}"
        );
        assert_eq!(
            rec.transform("allowlist")
                .and_then(|t| t["action"].as_str()),
            Some("continue"),
            "{rec}"
        );
    }
}
