//! `proxy.client_cidrs`: the proxy serves only the client addresses listed (and loopback). A
//! client in the fake internet's namespace, outside the list, has its connection closed
//! unread with a `client_not_allowed` record and its DNS query unanswered; a client at a
//! listed address is served; a reload that lists the other address admits it too
//! (docs/security.md, "Who may use the proxy").

use std::net::SocketAddr;
use std::process::Output;

use iron_proxy_tests::*;

use super::metrics::{sample, scrape};

/// curl from inside the fake internet's namespace (its address: `ns_side_v4`), through the
/// proxy's HTTP listener at `proxy`, for `http://up.test/get`.
fn curl_from_namespace(net: &FakeInternet, proxy: SocketAddr) -> Output {
    net.command("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "-H",
            "Host: up.test",
            &format!("http://{proxy}/get"),
        ])
        .output()
        .expect("running curl in the namespace")
}

/// dig from inside the namespace, for an intercepted name; its stdout (the answer, or why
/// there was none).
fn dig_from_namespace(net: &FakeInternet, dns: SocketAddr) -> String {
    let out = net
        .command("dig")
        .args([
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
            "up.test",
            "A",
            "+short",
            "+tries=1",
            "+time=2",
        ])
        .output()
        .expect("running dig in the namespace");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The config admitting `cidr`. (`rewrite_config` keeps the harness's listen addresses for
/// keys the new config leaves out, so the reloaded one has no `dns.listen`.)
fn config(cidr: &str, dns_listen: &str) -> String {
    format!(
        "proxy:\n  client_cidrs: [\"{cidr}\"]\n\
         dns:\n{dns_listen}  proxy_ip: 10.0.0.2\n\
         transforms:\n  - name: allowlist\n    config:\n      domains: [\"up.test\"]\n"
    )
}

/// A proxy on the host side's address whose `client_cidrs` lists only that address, with a
/// DNS listener.
fn listing_the_host(net: &FakeInternet) -> ProxyProcess {
    let host = net.host_side_v4();
    Proxy::with(config(&format!("{host}/32"), "  listen: auto\n"))
        .listen_ip(host.into())
        .resolver(net)
        .start()
}

#[test]
fn clients_outside_client_cidrs_are_refused_and_a_reload_admits_them() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::http("up.test").start(&net);
    let outsider = net.ns_side_v4();
    let mut px = listing_the_host(&net);
    let (http, dns) = (px.http_addr(), px.dns_addr());

    // The host's own address is listed: served.
    let r = Curl::get(&format!("http://{http}/get"))
        .header("Host", "up.test")
        .run();
    assert_eq!(r.status, 200, "a listed client is served: {r:?}");

    // The namespace's address is not: the connection is closed before a byte is read.
    let out = curl_from_namespace(&net, http);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "000",
        "no response for a client outside the list: {out:?}"
    );
    let refused = px.wait_for_audit(|a| a.str("reason") == Some("client_not_allowed"));
    assert_eq!(refused.str("action"), Some("reject"), "{refused:?}");
    assert_eq!(refused.str("mode"), Some("http"), "{refused:?}");
    let error = refused.str("error").unwrap_or_default();
    assert!(
        error.contains(&format!(
            "client address {outsider} is not in proxy.client_cidrs"
        )),
        "{refused:?}"
    );
    // And its DNS query gets no answer (a REFUSED would still reflect a spoofed query).
    let dig = dig_from_namespace(&net, dns);
    assert!(
        dig.contains("no servers could be reached") && !dig.contains("10.0.0.2"),
        "no DNS answer: {dig}"
    );
    let samples = scrape(&px);
    for (name, label) in [
        // The unanswered query.
        (
            "iron_proxy_dns_queries_total",
            ("outcome", "client_not_allowed"),
        ),
        // The refused connection.
        (
            "iron_proxy_rejections_total",
            ("reason", "client_not_allowed"),
        ),
    ] {
        assert!(
            sample(&samples, name, &[label]).is_some_and(|v| v >= 1.0),
            "{name}{label:?} counts it: {samples:?}"
        );
    }
    assert!(
        px.logs()
            .iter()
            .any(|l| l.contains("refused a connection from a client outside proxy.client_cidrs")),
        "the refusal is warned about"
    );

    // A reload that lists the namespace's range admits it, on both the proxy and DNS.
    px.rewrite_config(config(&format!("{outsider}/32"), ""));
    px.signal(nix::sys::signal::Signal::SIGHUP);
    px.wait_for_log(|l| l.contains("proxy.client_cidrs changed"));
    let out = curl_from_namespace(&net, http);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "admitted after the reload: {out:?}"
    );
    assert_eq!(dig_from_namespace(&net, dns).trim(), "10.0.0.2");
    // The host's address is no longer listed, and it is not loopback: refused now.
    let r = Curl::get(&format!("http://{http}/get"))
        .header("Host", "up.test")
        .max_time(10)
        .run();
    assert_ne!(
        r.status, 200,
        "the host's address is no longer listed: {r:?}"
    );
}

/// A keep-alive connection opened while its client was listed is not served once a reload
/// takes the client out of the list: its next request is refused (403, `client_not_allowed`,
/// as at accept) and the connection closed, instead of being forwarded with the policy's
/// credentials for as long as the client keeps it open.
#[test]
fn a_reload_that_drops_a_client_refuses_its_kept_alive_connection() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("up.test").start(&net);
    let (host, outsider) = (net.host_side_v4(), net.ns_side_v4());
    let mut px = listing_the_host(&net);
    let mut kept = super::KeepAlive::open(px.http_addr(), std::time::Duration::from_secs(10));
    let before = kept.status("/anything/kept-before", "up.test");
    assert!(before.contains(" 200 "), "{before}");

    px.rewrite_config(config(&format!("{outsider}/32"), ""));
    px.signal(nix::sys::signal::Signal::SIGHUP);
    px.wait_for_log(|l| l.contains("proxy.client_cidrs changed"));

    let after = kept.try_status("/anything/kept-after", "up.test");
    assert!(
        after.as_deref().is_some_and(|s| s.contains(" 403 ")),
        "the kept-alive connection's next request is refused: {after:?}"
    );
    assert_eq!(
        kept.try_status("/anything/kept-later", "up.test"),
        None,
        "and the connection closed"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/kept-after"));
    assert_eq!(rec.str("reason"), Some("client_not_allowed"), "{rec:?}");
    assert_eq!(rec.str("action"), Some("reject"), "{rec:?}");
    assert!(
        rec.str("error").unwrap_or_default().contains(&format!(
            "client address {host} is not in proxy.client_cidrs"
        )),
        "{rec:?}"
    );
    assert!(
        !up.requests()
            .iter()
            .any(|r| r.path().contains("kept-after")),
        "the refused request reached the upstream"
    );
}
