//! `proxy.upstream_deny_cidrs`: ranges the proxy never dials, whatever the
//! allowlist says. Names are checked after resolution (so DNS cannot point an
//! allowed name at loopback), IP literals directly, IPv4-mapped IPv6 literals
//! after unmapping; `[]` opts out.

use std::net::IpAddr;

use iron_proxy_tests::*;

use super::allowlist::subnet;
use super::{allowed, audited, audited_path, failed, plain, LoopbackServer};

#[test]
fn default_list_refuses_a_name_resolving_to_loopback() {
    require_root!();
    let net = FakeInternet::new();
    let local = LoopbackServer::start();
    net.dns()
        .set("rebind.test", &[IpAddr::from([127, 0, 0, 1])]);
    net.dns().set("rebind6.test", &["::1".parse().expect("ip")]);
    // One good address does not excuse a denied one (DNS rebinding).
    let silent = net.add_host();
    net.dns().set(
        "mixed.test",
        &[IpAddr::V4(silent.v4), IpAddr::from([127, 0, 0, 1])],
    );
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["rebind.test", "rebind6.test", "mixed.test"]
      cidrs: ["127.0.0.0/8", "::1/128"]
"#,
    )
    .resolver(&net)
    .start();

    let port = local.port;
    for (host, path) in [
        ("rebind.test", "/rebind"),
        ("rebind6.test", "/rebind6"),
        ("mixed.test", "/mixed"),
        ("127.0.0.1", "/v4-literal"),
        ("[::1]", "/v6-literal"),
        ("[::ffff:127.0.0.1]", "/v4-mapped-literal"),
    ] {
        let r = plain(&px, &format!("http://{host}:{port}{path}")).run();
        assert_eq!(r.status, 502, "{host}: {r}");
        // The workload is not told what the name resolved to, nor the range.
        if host.ends_with(".test") {
            assert_eq!(
                r.body,
                format!("iron-proxy: {host}: the upstream address is in a denied range\n"),
                "{r}"
            );
        }
        assert!(
            !r.body.contains("/8") && !r.body.contains("/128"),
            "the range is not in the body: {r}"
        );
        let rec = audited_path(&px, path, &failed(502, "deny_cidr"));
        let detail = rec.str("error").unwrap_or_default();
        assert!(
            detail.contains("127.0.0.0/8") || detail.contains("::1/128"),
            "the error names the denied range: {rec}"
        );
    }
    assert!(
        local.heads().is_empty(),
        "nothing may be dialled in a denied range, got {:?}",
        local.heads()
    );
}

#[test]
fn explicit_list_refuses_names_ip_literals_and_v4_mapped_literals() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("inside.test").ipv4_only().start(&net);
    let range = subnet(&net);
    let px = Proxy::with(format!(
        r#"
proxy:
  upstream_deny_cidrs: ["{range}"]
transforms:
  - name: allowlist
    config:
      domains: ["inside.test"]
      cidrs: ["{range}"]
"#
    ))
    .resolver(&net)
    .start();

    let ip = up.ip().to_string();
    let cases = [
        ("inside.test".to_string(), "/anything/by-name"),
        (ip.clone(), "/anything/by-ip"),
        (format!("[::ffff:{ip}]"), "/anything/v4-mapped"),
    ];
    for (host, path) in &cases {
        let r = plain(&px, &format!("http://{host}{path}")).run();
        assert_eq!(r.status, 502, "{host}: {r}");
        let rec = audited_path(&px, path, &failed(502, "deny_cidr"));
        assert!(
            rec.str("error").unwrap_or_default().contains(&range),
            "the error names the range: {rec}"
        );
    }
    up.assert_untouched();
}

#[test]
fn empty_list_opts_out() {
    require_root!();
    let net = FakeInternet::new();
    let local = LoopbackServer::start();
    net.dns().set("local.test", &[IpAddr::from([127, 0, 0, 1])]);
    let px = Proxy::with(
        r#"
proxy:
  upstream_deny_cidrs: []
transforms:
  - name: allowlist
    config:
      domains: ["local.test"]
      cidrs: ["127.0.0.1/32"]
"#,
    )
    .resolver(&net)
    .start();

    let port = local.port;
    for (host, path) in [("local.test", "/by-name"), ("127.0.0.1", "/by-ip")] {
        let r = plain(&px, &format!("http://{host}:{port}{path}")).run();
        r.expect_status(200);
        assert_eq!(r.body, "loopback", "{r}");
        audited(&px, host, path, &allowed(200));
    }
    let heads = local.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /by-name HTTP/1.1\r\n"),
        "{heads:?}"
    );
}

/// With loopback allowed and the deny list off, a request for the proxy's own listener
/// (by IP literal, by a name resolving to it, by `0.0.0.0` or a name resolving to it,
/// which the kernel connects to loopback) is refused at once as `proxy_loop`, instead of
/// going round through the proxy until descriptors run out.
#[test]
fn a_request_for_the_proxys_own_listener_is_refused_not_looped() {
    require_root!();
    let net = FakeInternet::new();
    net.dns().set("self.test", &[IpAddr::from([127, 0, 0, 1])]);
    net.dns().set("zero.test", &[IpAddr::from([0, 0, 0, 0])]);
    let px = Proxy::with(
        r#"
proxy:
  upstream_deny_cidrs: []
transforms:
  - name: allowlist
    config:
      domains: ["self.test", "zero.test"]
      cidrs: ["127.0.0.0/8", "0.0.0.0/32"]
"#,
    )
    .resolver(&net)
    .start();
    let port = px.http_addr().port();
    for (host, path) in [
        ("127.0.0.1", "/loop-ip"),
        ("self.test", "/loop-name"),
        ("0.0.0.0", "/loop-zero"),
        ("zero.test", "/loop-zero-name"),
    ] {
        let r = plain(&px, &format!("http://{host}:{port}{path}")).run();
        assert_eq!(r.status, 502, "{host}: {r}");
        assert!(r.body.contains("the upstream is this proxy itself"), "{r}");
        let rec = audited(&px, host, path, &failed(502, "proxy_loop"));
        assert!(
            rec.str("error").is_some_and(|e| e.contains("own listener")),
            "{rec}"
        );
    }
    // One record per request: nothing went round.
    let records = px
        .audit()
        .iter()
        .filter(|a| a.path().is_some_and(|p| p.starts_with("/loop")))
        .count();
    assert_eq!(records, 4);
}
