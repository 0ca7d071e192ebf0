//! What a reload applies beyond the policy: listener addresses (`proxy.http_listen`,
//! `proxy.https_listen`, `proxy.tunnel_listen`, `metrics.listen`) moved, added or removed
//! with every new socket bound first (a taken address changes nothing), connections already
//! accepted on a closed listener left to finish; and `log.level`, unless `IRON_LOG_FILTER`
//! set the filter.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use iron_proxy_tests::ports::free_port;
use iron_proxy_tests::*;
use serde_json::Value;

use super::{managed_proxy, policy, reload, status_of, KeepAlive, API_KEY};

/// A free address on loopback.
fn free_addr() -> SocketAddr {
    SocketAddr::new(
        Ipv4Addr::LOCALHOST.into(),
        free_port(Ipv4Addr::LOCALHOST.into(), false),
    )
}

/// Writes `cfg` as the proxy's config file exactly (JSON is YAML), with no listener kept
/// from the harness's rendering, so that keys can be removed.
fn write_exact(px: &mut ProxyProcess, cfg: &Value) {
    px.write_config_text(&serde_json::to_string_pretty(cfg).expect("JSON"));
}

/// `GET https://<host><path>` with its connection sent to `https` (trusting the proxy's CA).
fn https_via(px: &ProxyProcess, https: SocketAddr, host: &str, path: &str) -> CurlResult {
    Curl::get(&format!("https://{host}{path}"))
        .args([
            "--cacert".to_string(),
            px.ca().to_string(),
            "--connect-to".to_string(),
            format!(":443:{https}"),
        ])
        .run()
}

/// True when a new TCP connection to `addr` is refused.
fn refused(addr: SocketAddr) -> bool {
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

/// The `listeners_changed` entry of a reload answer for `field`.
fn changed<'a>(body: &'a Value, field: &str) -> Option<&'a Value> {
    body["listeners_changed"]
        .as_array()?
        .iter()
        .find(|c| c["field"] == field)
}

#[test]
fn a_reload_moves_http_and_https_listeners_and_old_connections_finish() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let _plain = Upstream::http("plain.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test", "plain.test"]), &net);
    let (old_http, old_https) = (px.http_addr(), px.https_addr());

    // A keep-alive connection accepted on the old HTTP listener.
    let mut kept = KeepAlive::open(old_http, Duration::from_secs(10));
    let first = kept.status("/get", "plain.test");
    assert!(first.contains(" 200 "), "{first}");

    let (new_http, new_https) = (free_addr(), free_addr());
    let mut cfg = px.config().clone();
    cfg["proxy"]["http_listen"] = Value::from(new_http.to_string());
    cfg["proxy"]["https_listen"] = Value::from(new_https.to_string());
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let body = r.json();
    assert_eq!(body["restart_required"], serde_json::json!([]), "{body}");
    let https = changed(&body, "proxy.https_listen").expect("https listed");
    assert_eq!(
        https["old"],
        serde_json::json!([old_https.to_string()]),
        "{body}"
    );
    assert_eq!(
        https["new"],
        serde_json::json!([new_https.to_string()]),
        "{body}"
    );
    assert!(changed(&body, "proxy.http_listen").is_some(), "{body}");

    // The new address serves, and is audited.
    let r = https_via(&px, new_https, "httpbin.test", "/anything/moved");
    assert_eq!(r.status, 200, "{r}");
    px.wait_for_audit(|a| a.path() == Some("/anything/moved") && a.str("mode") == Some("https"));
    let r = Curl::get("http://plain.test/anything/moved-http")
        .args(["--connect-to".to_string(), format!(":80:{new_http}")])
        .run();
    assert_eq!(r.status, 200, "{r}");

    // The old addresses refuse new connections.
    assert!(
        refused(old_https),
        "a new connection to the old https address is refused"
    );
    assert!(
        refused(old_http),
        "a new connection to the old http address is refused"
    );
    let r = https_via(&px, old_https, "httpbin.test", "/get");
    assert_eq!((r.status, r.exit), (0, 7), "{r}");

    // The connection accepted before the reload still completes a request.
    let second = kept.status("/get", "plain.test");
    assert!(second.contains(" 200 "), "{second}");

    let line = px.wait_for_log(|l| {
        l.contains("listener address changed") && l.contains("proxy.https_listen")
    });
    assert!(
        line.contains(&old_https.to_string()) && line.contains(&new_https.to_string()),
        "{line}"
    );
}

#[test]
fn a_reload_whose_new_address_is_taken_changes_nothing() {
    require_root!();
    let net = FakeInternet::new();
    let _a = Upstream::https("httpbin.test").start(&net);
    let _b = Upstream::https("other.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let old_http = px.http_addr();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port to hold");
    let taken_addr = taken.local_addr().expect("addr");
    let free_http = free_addr();
    let mut cfg = px.config().clone();
    cfg["transforms"][0]["config"]["domains"] = serde_json::json!(["httpbin.test", "other.test"]);
    cfg["proxy"]["https_listen"] = Value::from(taken_addr.to_string());
    cfg["proxy"]["http_listen"] = Value::from(free_http.to_string());
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 422, "{r}");
    let errors = r.json()["errors"].to_string();
    // Where the field is in the file written: its line, and its value's column.
    let text = serde_json::to_string_pretty(&cfg).expect("JSON");
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| {
            let at = l.find(&format!("\"{taken_addr}\""))?;
            l.contains("\"https_listen\"").then_some((i + 1, at + 1))
        })
        .expect("https_listen in the config written");
    assert!(
        errors.contains(&format!(
            ":{line}:{column}: proxy.https_listen: binding {taken_addr}"
        )) && errors.contains("in use"),
        "the error names the place, the field and the address: {errors}"
    );

    // Nothing changed: the old listeners serve, the new http address was let go, the policy
    // is the old one.
    assert_eq!(
        status_of(&px, "httpbin.test"),
        200,
        "the old https listener serves"
    );
    assert_eq!(
        status_of(&px, "other.test"),
        403,
        "the policy did not change"
    );
    assert!(refused(free_http), "the http listener did not move");
    assert!(!refused(old_http), "the old http listener still accepts");
    let status = super::management(&px, "GET", "/v1/status", Some(API_KEY)).json();
    assert_eq!(status["last_reload"]["result"], "failure", "{status}");
    drop(taken);
}

#[test]
fn a_reload_adds_and_then_removes_the_tunnel_listener() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let tunnel = free_addr();
    let via_tunnel = |px: &ProxyProcess| {
        Curl::get("https://httpbin.test/get")
            .args([
                "--cacert".to_string(),
                px.ca().to_string(),
                "--proxy".to_string(),
                format!("http://{tunnel}"),
            ])
            .run()
    };
    assert!(refused(tunnel));

    let start = px.config().clone();
    let mut cfg = start.clone();
    cfg["proxy"]["tunnel_listen"] = Value::from(tunnel.to_string());
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let body = r.json();
    assert_eq!(body["restart_required"], serde_json::json!([]), "{body}");
    let added = changed(&body, "proxy.tunnel_listen").expect("tunnel listed");
    assert_eq!(added["old"], serde_json::json!([]), "{body}");
    assert!(
        changed(&body, "proxy.https_listen").is_none(),
        "an unchanged address keeps its socket: {body}"
    );
    let r = via_tunnel(&px);
    assert_eq!(r.status, 200, "{r}");
    px.wait_for_audit(|a| a.host() == Some("httpbin.test") && a.str("mode") == Some("tunnel"));

    write_exact(&mut px, &start);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let body = r.json();
    let removed = changed(&body, "proxy.tunnel_listen").expect("tunnel listed");
    assert_eq!(removed["new"], serde_json::json!([]), "{body}");
    assert!(refused(tunnel), "the tunnel listener is closed");
    assert_eq!(via_tunnel(&px).exit, 7, "curl cannot reach the proxy");
}

#[test]
fn a_reload_moves_the_metrics_endpoint() {
    require_root!();
    let net = FakeInternet::new();
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let old = px.metrics_addr();
    let new = free_addr();
    let mut cfg = px.config().clone();
    cfg["metrics"]["listen"] = Value::from(new.to_string());
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let body = r.json();
    assert_eq!(body["restart_required"], serde_json::json!([]), "{body}");
    assert!(changed(&body, "metrics.listen").is_some(), "{body}");
    let r = Curl::get(&format!("http://{new}/metrics")).run();
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body.contains("iron_proxy_reloads_total"), "{}", r.body);
    assert!(refused(old), "the old metrics address is closed");
}

/// The `debug` line the allowlist logs when it refuses `host`, if any.
fn rejected_debug_line(px: &ProxyProcess, host: &str) -> Option<String> {
    px.log_lines()
        .into_iter()
        .find(|l| l.level() == "debug" && l.msg() == "rejected" && l.str("host") == Some(host))
        .map(|l| format!("{:?}", l.0))
}

/// A refused request for `host`, waited for in the audit log (which no level filters).
fn refuse(px: &ProxyProcess, host: &str) {
    assert_eq!(status_of(px, host), 403);
    px.wait_for_audit(|a| a.host() == Some(host));
}

/// The config with `log.level` set.
fn with_level(start: &Value, level: &str) -> Value {
    let mut cfg = start.clone();
    cfg["log"] = serde_json::json!({ "level": level });
    cfg
}

#[test]
fn a_reload_changes_the_log_level_at_once() {
    require_root!();
    let net = FakeInternet::new();
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let start = px.config().clone();

    refuse(&px, "before.test");
    assert_eq!(
        rejected_debug_line(&px, "before.test"),
        None,
        "info: no debug lines"
    );

    write_exact(&mut px, &with_level(&start, "debug"));
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["restart_required"], serde_json::json!([]), "{r}");
    px.wait_for_log(|l| l.contains("log level changed") && l.contains("debug"));
    refuse(&px, "during.test");
    assert!(
        rejected_debug_line(&px, "during.test").is_some(),
        "debug lines after the reload"
    );

    write_exact(&mut px, &with_level(&start, "info"));
    assert_eq!(reload(&px).status, 200);
    refuse(&px, "after.test");
    assert_eq!(
        rejected_debug_line(&px, "after.test"),
        None,
        "info again: no debug lines"
    );
    // Audit records are not operational lines: every refusal was recorded at every level.
    let audit = px.audit();
    for host in ["before.test", "during.test", "after.test"] {
        assert!(
            audit.find(|a| a.host() == Some(host)).is_some(),
            "{host} audited"
        );
    }
}

#[test]
fn with_iron_log_filter_a_reload_leaves_the_filter_alone_and_says_so() {
    require_root!();
    let net = FakeInternet::new();
    let mut px = Proxy::with(policy(&["httpbin.test"]).as_str())
        .resolver(&net)
        .env("IRON_E2E_MGMT_KEY", API_KEY)
        .env("IRON_LOG_FILTER", "iron_proxy=info,warn")
        .start();
    let start = px.config().clone();
    write_exact(&mut px, &with_level(&start, "debug"));
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let notes = r.json()["not_applied"].to_string();
    assert!(
        notes.contains("IRON_LOG_FILTER") && notes.contains("log.level"),
        "the answer says why the level is not applied: {r}"
    );
    refuse(&px, "filtered.test");
    assert_eq!(
        rejected_debug_line(&px, "filtered.test"),
        None,
        "IRON_LOG_FILTER keeps deciding"
    );
}

/// `GET http://plain.test/get` on a new connection to the HTTP listener `addr`: the status, 0
/// when the proxy closed the connection without a reply.
fn plain_get(addr: SocketAddr) -> u16 {
    Curl::get(&format!("http://{addr}/get"))
        .header("Host", "plain.test")
        .run()
        .status
}

/// `n` keep-alive connections to `addr`, each having had one request to `plain.test` served.
fn served_connections(addr: SocketAddr, n: usize) -> Vec<KeepAlive> {
    (0..n)
        .map(|_| {
            let mut c = KeepAlive::open(addr, Duration::from_secs(20));
            let head = c.status("/get", "plain.test");
            assert!(head.contains(" 200 "), "{head}");
            c
        })
        .collect()
}

/// `proxy.max_connections_per_client` set, then removed, by reloads. Connections open before
/// the cap was set count against it: a cap below them closes none of them but refuses the next
/// connection (audited, naming the new cap); once enough have closed the client is served
/// again, and with the cap removed it may open more again.
#[test]
fn a_reload_sets_and_removes_the_per_client_cap_counting_open_connections() {
    require_root!();
    let net = FakeInternet::new();
    let _plain = Upstream::http("plain.test").start(&net);
    let mut px = managed_proxy(&policy(&["plain.test"]), &net);
    let addr = px.http_addr();
    let mut held = served_connections(addr, 3);

    let mut cfg = px.config().clone();
    cfg["proxy"]["max_connections_per_client"] = Value::from(2);
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let body = r.json();
    assert_eq!(body["restart_required"], serde_json::json!([]), "{body}");
    wait_until(Duration::from_secs(10), "the change logged", || {
        px.log_lines()
            .iter()
            .any(|l| {
                l.msg() == "proxy.max_connections_per_client changed"
                    && l.str("from") == Some("none")
                    && l.str("to") == Some("2")
            })
            .then_some(())
    });

    // Three open against a cap of 2: they keep working, a new one is refused.
    let head = held[0].status("/get", "plain.test");
    assert!(
        head.contains(" 200 "),
        "an open connection is not cut: {head}"
    );
    assert_eq!(plain_get(addr), 0, "over the new cap");
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("client_connection_limit"));
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("3 connections already open")
                && e.contains("max_connections_per_client: 2")),
        "{rec}"
    );
    // Down to one open: served again.
    drop(held.drain(1..));
    let status = wait_until(Duration::from_secs(10), "served under the cap", || {
        let s = plain_get(addr);
        (s != 0).then_some(s)
    });
    assert_eq!(status, 200);

    // The cap removed: more connections than it allowed are served.
    cfg["proxy"]
        .as_object_mut()
        .expect("proxy section")
        .remove("max_connections_per_client");
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    held.extend((0..2).map(|_| KeepAlive::open(addr, Duration::from_secs(20))));
    for c in &mut held {
        let head = c.status("/get", "plain.test");
        assert!(head.contains(" 200 "), "{head}");
    }
    assert_eq!(plain_get(addr), 200, "a fourth connection, with no cap");
}

/// `proxy.max_connections` set by a reload below the connections open (from two addresses):
/// none is cut, the next connection from any address is refused (audited `connection_limit`,
/// naming the cap); removed again, the default from the open-file limit applies and the next
/// connection is served.
#[test]
fn a_reload_sets_the_total_cap_counting_every_clients_connections() {
    require_root!();
    let net = FakeInternet::new();
    let _plain = Upstream::http("plain.test").start(&net);
    let mut px = managed_proxy(&policy(&["plain.test"]), &net);
    let addr = px.http_addr();
    let mut held = served_connections(addr, 3);

    let mut cfg = px.config().clone();
    cfg["proxy"]["max_connections"] = Value::from(2);
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let changed = wait_until(Duration::from_secs(10), "the change logged", || {
        px.log_lines()
            .into_iter()
            .find(|l| l.msg() == "proxy.max_connections changed" && l.str("to") == Some("2"))
    });
    let default = changed
        .str("from")
        .expect("the default it replaced")
        .to_string();
    assert!(default.parse::<u32>().is_ok_and(|n| n > 2), "{default}");

    // Three open against a cap of 2: they keep working; a new one, even from another
    // address, is refused.
    let head = held[0].status("/get", "plain.test");
    assert!(
        head.contains(" 200 "),
        "an open connection is not cut: {head}"
    );
    let r = Curl::get(&format!("http://{addr}/get"))
        .header("Host", "plain.test")
        .args(["--interface", "127.0.0.2"])
        .run();
    assert_eq!(r.status, 0, "over the new cap: {r:?}");
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("connection_limit"));
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("(proxy.max_connections: 2)")),
        "{rec}"
    );

    // Removed: back to the default, and served.
    cfg["proxy"]
        .as_object_mut()
        .expect("proxy section")
        .remove("max_connections");
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    wait_until(Duration::from_secs(10), "the change back logged", || {
        px.log_lines()
            .iter()
            .any(|l| {
                l.msg() == "proxy.max_connections changed"
                    && l.str("from") == Some("2")
                    && l.str("to") == Some(default.as_str())
            })
            .then_some(())
    });
    assert_eq!(
        plain_get(addr),
        200,
        "a fourth connection, under the default"
    );
    drop(held);
}

/// A reload that denies the range of an upstream the proxy holds connections to retires
/// them: the next request, on the client connection that was kept open and on a new one, is
/// refused (`deny_cidr`) instead of riding a pooled connection to the newly denied address,
/// and the upstream sees no request after the reload.
#[test]
fn a_reload_that_denies_an_upstream_retires_the_connections_pooled_to_it() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::http("plain.test").start(&net);
    let mut px = managed_proxy(&policy(&["plain.test"]), &net);
    let http = px.http_addr();
    let new_conn = |path: &str| {
        Curl::get(&format!("http://plain.test{path}"))
            .args(["--connect-to".to_string(), format!(":80:{http}")])
            .run()
    };
    let mut kept = KeepAlive::open(http, Duration::from_secs(10));
    let first = kept.status("/anything/kept-before", "plain.test");
    assert!(first.contains(" 200 "), "{first}");
    let r = new_conn("/anything/new-before");
    assert_eq!(r.status, 200, "{r}");

    let mut cfg = px.config().clone();
    cfg["proxy"]["upstream_deny_cidrs"] = serde_json::json!([format!("{}/32", up.ip())]);
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    px.wait_for_log(|l| l.contains("upstream_deny_cidrs changed"));

    let after = kept.status("/anything/kept-after", "plain.test");
    assert!(after.contains(" 502 "), "{after}");
    let r = new_conn("/anything/new-after");
    assert_eq!(r.status, 502, "{r}");
    for path in ["/anything/kept-after", "/anything/new-after"] {
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert_eq!(rec.str("reason"), Some("deny_cidr"), "{rec}");
    }
    let seen: Vec<String> = up.requests().iter().map(|r| r.path().to_string()).collect();
    assert!(
        !seen.iter().any(|p| p.ends_with("-after")),
        "a request reached the denied upstream: {seen:?}"
    );
}

/// A reload of a config the next start would refuse is refused, though `tls` and
/// `management` take effect only after a restart: a CA key that does not load (here the
/// certificate given as the key), a management key variable that is not set. Before, both
/// were answered `200 reloaded` and the next restart failed.
#[test]
fn a_reload_the_next_start_would_refuse_is_refused() {
    require_root!();
    let net = FakeInternet::new();
    let _a = Upstream::https("httpbin.test").start(&net);
    let _b = Upstream::https("other.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let good = px.config().clone();

    let mut cfg = good.clone();
    cfg["transforms"][0]["config"]["domains"] = serde_json::json!(["httpbin.test", "other.test"]);
    cfg["tls"]["ca_key"] = cfg["tls"]["ca_cert"].clone();
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 422, "{r}");
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains("tls.ca_key: ") && errors.contains("private key"),
        "the error names the field and why: {errors}"
    );

    let mut cfg = good.clone();
    cfg["transforms"][0]["config"]["domains"] = serde_json::json!(["httpbin.test", "other.test"]);
    cfg["management"]["api_key_env"] = Value::from("IRON_TEST_UNSET_MANAGEMENT_KEY");
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 422, "{r}");
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains("management.api_key_env: environment variable IRON_TEST_UNSET_MANAGEMENT_KEY is unset or empty"),
        "{errors}"
    );
    assert_eq!(
        status_of(&px, "other.test"),
        403,
        "the policy did not change"
    );

    // The same config with a loadable CA and a set key reloads.
    let mut cfg = good;
    cfg["transforms"][0]["config"]["domains"] = serde_json::json!(["httpbin.test", "other.test"]);
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(status_of(&px, "other.test"), 200, "the policy changed");
}
