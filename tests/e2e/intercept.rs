//! eBPF transparent interception, end to end: workloads in a test cgroup run real clients
//! with no proxy settings at all, and every connection they make ends up at the proxy, which
//! dials the name the client asked for (SNI or Host), never the IP it connected to. Also: the
//! kernel-side deny list, UDP, DNS redirection, who is (not) intercepted, many connections at
//! once, and fail-closed behaviour when the proxy dies.
//!
//! Safety: programs attach only to the test's own cgroup; workloads connect only to
//! fake-internet addresses (inside the test's namespace) and loopback.

mod conn_limit;
mod detach;
mod dns_tcp;
pub(crate) mod lab;
pub(crate) mod recreated;

use iron_proxy_tests::*;
use lab::*;
use nix::sys::signal::Signal;
use serde_json::json;

#[test]
fn https_and_http_by_name_reach_the_upstream_through_the_proxy_and_name_the_process() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);

    // No proxy settings: curl connects to the upstream's own address.
    let r = lab.curl(&[
        "--resolve",
        &resolve("httpbin.test", 443, up.ip()),
        "https://httpbin.test/anything/tls",
    ]);
    let echo = r.expect_status(200).json();
    assert_eq!(echo["upstream"], "httpbin.test", "{r}");
    let seen = up.wait_for_request(|q| q.path() == "/anything/tls");
    assert_eq!(seen.sni(), Some("httpbin.test"));

    let rec = lab.audit_for("/anything/tls");
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.str("mode"), Some("transparent"), "{rec}");
    assert_eq!(rec.host(), Some("httpbin.test"), "{rec}");
    assert_eq!(
        rec.str("original_dst"),
        Some(format!("{}:443", up.ip()).as_str()),
        "{rec}"
    );
    assert_eq!(
        rec.pointer("/client"),
        Some(&json!({"pid": r.pid, "uid": 0, "comm": "curl", "cgroup": lab.cg.relative()})),
        "the audit record names the workload process: {rec}"
    );

    let r = lab.curl(&[
        "--resolve",
        &resolve("httpbin.test", 80, up.ip()),
        "http://httpbin.test/anything/plain",
    ]);
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/plain" && q.sni().is_none());
    let rec = lab.audit_for("/anything/plain");
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.str("mode"), Some("transparent"), "{rec}");
    assert_eq!(
        rec.str("original_dst"),
        Some(format!("{}:80", up.ip()).as_str())
    );
    assert_eq!(rec.pointer("/client/pid"), Some(&json!(r.pid)), "{rec}");
}

#[test]
fn names_outside_the_allowlist_and_ip_literals_get_403_without_touching_the_upstream() {
    require_root!();
    let net = FakeInternet::new();
    let evil = Upstream::https("evil.test").start(&net);
    let lab = Lab::start(&net);
    let ip = evil.ip().to_string();

    for (args, path) in [
        (
            vec![
                "--resolve".to_string(),
                resolve("evil.test", 443, evil.ip()),
                "https://evil.test/anything/name-tls".into(),
            ],
            "/anything/name-tls",
        ),
        (
            vec![
                "--resolve".to_string(),
                resolve("evil.test", 80, evil.ip()),
                "http://evil.test/anything/name-plain".into(),
            ],
            "/anything/name-plain",
        ),
        (
            vec![format!("https://{ip}/anything/ip-tls")],
            "/anything/ip-tls",
        ),
        (
            vec![format!("http://{ip}/anything/ip-plain")],
            "/anything/ip-plain",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = lab.curl(&args);
        assert_eq!(r.status, 403, "{path}: {r}");
        let rec = lab.audit_for(path);
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
        assert_eq!(rec.str("mode"), Some("transparent"), "{rec}");
    }
    evil.assert_untouched();
}

#[test]
fn an_allowed_sni_pointed_at_another_ip_reaches_the_allowed_name_not_that_ip() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let evil = Upstream::https("evil.test").start(&net);
    let lab = Lab::start(&net);

    for (port, scheme) in [(443, "https"), (80, "http")] {
        let path = format!("/anything/fronted-{scheme}");
        let r = lab.curl(&[
            "--resolve",
            &resolve("httpbin.test", port, evil.ip()),
            &format!("{scheme}://httpbin.test{path}"),
        ]);
        let echo = r.expect_status(200).json();
        assert_eq!(
            echo["upstream"], "httpbin.test",
            "the proxy dials the name, not the IP the workload chose: {r}"
        );
        up.wait_for_request(|q| q.path() == path);
        let rec = lab.audit_for(&path);
        assert_eq!(
            rec.str("original_dst"),
            Some(format!("{}:{port}", evil.ip()).as_str()),
            "{rec}"
        );
    }
    evil.assert_untouched();
}

#[test]
fn connects_into_deny_cidrs_fail_with_eperm_in_the_kernel() {
    require_root!();
    let net = FakeInternet::new();
    let internal = Upstream::https("internal.test").start(&net);
    let open = net.add_host();
    let (v4, v6) = (internal.ip(), internal.ipv6());
    let lab = Lab::start_with(&net, |c| {
        c["proxy"] = json!({"upstream_deny_cidrs": [
            format!("{v4}/32"), format!("{v6}/128"),
            "169.254.169.254/32", "fd00:ec2::254/128", "127.0.0.0/8", "::1/128",
        ]});
    });

    let denied: Vec<String> = [
        format!("tcp,{v4},443"),
        format!("tcp,{v6},443"),
        format!("tcp,::ffff:{v4},443"),
        format!("tcp,{v4},8080"),
        "tcp,127.0.0.1,80".to_string(),
        "tcp,::1,80".to_string(),
        "tcp,::ffff:127.0.0.1,80".to_string(),
        // The unspecified address reaches loopback: denied with it.
        "tcp,0.0.0.0,80".to_string(),
        "tcp,::,80".to_string(),
        "tcp,::ffff:0.0.0.0,80".to_string(),
    ]
    .into();
    let allowed = vec![
        format!("tcp,{},443", open.v4),
        format!("tcp,{},443", open.v6),
    ];
    let all: Vec<String> = denied.iter().chain(&allowed).cloned().collect();
    let results = probe(&lab.cg, &all);
    assert_probes(
        &results,
        &denied,
        json!(EPERM),
        "a denied range must give EPERM",
    );
    assert_probes(
        &results,
        &allowed,
        json!("ok"),
        "an address outside the deny list is redirected to the proxy (nothing listens there)",
    );
    internal.assert_untouched();
}

#[test]
fn udp_other_than_dns_is_refused_with_eperm() {
    require_root!();
    let net = FakeInternet::new();
    let lab = Lab::start(&net);
    let target = net.add_host();
    let specs: Vec<String> = vec![
        format!("udp,{},443", target.v4),
        format!("udpconnect,{},443", target.v4),
        format!("udp,{},443", target.v6),
        format!("udpconnect,{},443", target.v6),
        format!("udp,{},123", target.v4),
    ];
    let results = probe(&lab.cg, &specs);
    assert_probes(
        &results,
        &specs,
        json!(EPERM),
        "QUIC and other UDP must be refused",
    );
}

#[test]
fn dns_to_a_foreign_resolver_is_answered_by_the_proxy_over_udp_and_tcp() {
    require_root!();
    let net = FakeInternet::new();
    let lab = Lab::start(&net);
    assert_foreign_dns_answered_by_the_proxy(&lab.cg, &net);
}

#[test]
fn a_workload_following_a_loopback_dns_answer_reaches_the_proxy_not_eperm() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start_with(&net, |c| c["dns"]["proxy_ip"] = json!("127.0.0.1"));
    assert_loopback_answer_followed(&lab.px, &lab.cg, &net, &up, EPERM);
}

#[test]
fn processes_outside_the_cgroup_are_untouched() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);

    // From the test process (not in the cgroup) a name the proxy would refuse goes direct.
    let r = curl([
        "--resolve",
        &resolve("unlisted.test", 80, up.ip()),
        "http://unlisted.test/anything/outside",
    ]);
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/outside" && q.host() == "unlisted.test");

    // The same request from inside is intercepted and refused.
    let r = lab.curl(&[
        "--resolve",
        &resolve("unlisted.test", 80, up.ip()),
        "http://unlisted.test/anything/inside",
    ]);
    assert_eq!(r.status, 403, "{r}");
    lab.audit_for("/anything/inside");
    up.assert_no_request(|q| q.path() == "/anything/inside");
    assert!(
        lab.px
            .audit()
            .find(|a| a.path() == Some("/anything/outside"))
            .is_none(),
        "the outside request must not have gone through the proxy"
    );
}

#[test]
fn with_uids_only_those_users_inside_the_cgroup_are_intercepted() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start_with(&net, |c| c["intercept"]["uids"] = json!([65534]));
    let unlisted = resolve("unlisted.test", 80, up.ip());

    let r = lab.cg.command("curl").as_uid(65534).curl([
        "--resolve",
        &unlisted,
        "http://unlisted.test/anything/nobody",
    ]);
    assert_eq!(r.status, 403, "uid 65534 is intercepted: {r}");
    let rec = lab.audit_for("/anything/nobody");
    assert_eq!(rec.pointer("/client/uid"), Some(&json!(65534)), "{rec}");
    assert_eq!(rec.pointer("/client/pid"), Some(&json!(r.pid)), "{rec}");

    let r = lab
        .cg
        .curl(["--resolve", &unlisted, "http://unlisted.test/anything/root"]);
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/root" && q.host() == "unlisted.test");
    up.assert_no_request(|q| q.path() == "/anything/nobody");
}

#[test]
fn five_hundred_concurrent_connections_keep_their_original_destinations() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    assert_concurrent_origins_kept(&lab.cg, &lab.px, &up, 20000, 500);
}

/// The two held connections went through the proxy: each peer is the original destination,
/// each request was answered, and each audit record names the original destination.
fn assert_held_through_the_proxy(held: &HeldSockets, lab: &Lab, ip: std::net::Ipv4Addr) {
    let r = &held.report;
    assert_eq!(
        r["v4"],
        json!([format!("{ip}:80"), "HTTP/1.1 200 OK"]),
        "{r}"
    );
    assert_eq!(
        r["v6"],
        json!([format!("::ffff:{ip}:80"), "HTTP/1.1 200 OK"]),
        "{r}"
    );
    for path in ["/anything/held-v4", "/anything/held-v6"] {
        let rec = lab.audit_for(path);
        assert_eq!(
            rec.str("original_dst"),
            Some(format!("{ip}:80").as_str()),
            "{rec}"
        );
    }
}

#[test]
fn a_redirected_socket_reports_its_original_peer_and_its_origin_leaves_with_it() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    let origins = CookieOrigins::open(&lab.pins);
    assert_eq!(origins.destinations(), Vec::<String>::new());

    let held = HeldSockets::open(&lab.cg, up.ip());
    assert_held_through_the_proxy(&held, &lab, up.ip());
    let want = format!("{}:80", up.ip());
    assert_eq!(
        origins.destinations(),
        vec![want.clone(), want],
        "one origin per open redirected socket"
    );
    held.close();
    assert_eq!(
        origins.destinations(),
        Vec::<String>::new(),
        "closing a socket removes its origin"
    );
}

#[test]
fn with_the_cookie_map_full_origins_spill_into_socket_storage() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    let mut origins = CookieOrigins::open(&lab.pins);
    for n in 0..COOKIE_ORIGINS_MAX {
        origins.insert_dummy(n).expect("filling iron_cookie_origin");
    }
    assert!(
        origins.insert_dummy(COOKIE_ORIGINS_MAX).is_err(),
        "the map must be full for this test"
    );

    let held = HeldSockets::open(&lab.cg, up.ip());
    assert_held_through_the_proxy(&held, &lab, up.ip());
    held.close();
    let dests = origins.destinations();
    assert_eq!(dests.len() as u64, COOKIE_ORIGINS_MAX);
    assert!(
        dests.iter().all(|d| d == ":::0"),
        "only the test's own entries (zeroed): {:?}",
        dests.iter().find(|d| *d != ":::0")
    );
}

#[test]
fn a_killed_proxy_fails_closed_a_restart_takes_over_and_detach_goes_direct() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let mut lab = Lab::start(&net);
    let by_name = resolve("httpbin.test", 80, up.ip());
    let unlisted = resolve("unlisted.test", 80, up.ip());

    lab.curl(&["--resolve", &by_name, "http://httpbin.test/anything/before"])
        .expect_status(200);

    lab.px.signal(Signal::SIGKILL);
    wait_stopped(&mut lab.px);
    assert!(lab.pins.is_pinned(), "interception stays pinned");
    let r = lab.curl(&["--resolve", &unlisted, "http://unlisted.test/anything/dead"]);
    assert_eq!(
        r.exit, 7,
        "with the proxy dead the workload's connect is refused (EPERM: no listener there), \
         not the internet: {r}"
    );
    up.assert_no_request(|q| q.path() == "/anything/dead");

    // Same config, same pins: the new proxy takes over the pinned links.
    lab.px = start_intercepting(Proxy::with(lab.config.clone()).resolver(&net));
    lab.curl(&["--resolve", &by_name, "http://httpbin.test/anything/again"])
        .expect_status(200);
    let rec = lab.audit_for("/anything/again");
    assert_eq!(rec.str("mode"), Some("transparent"), "{rec}");
    let r = lab.curl(&[
        "--resolve",
        &unlisted,
        "http://unlisted.test/anything/again-unlisted",
    ]);
    assert_eq!(r.status, 403, "{r}");

    let (exit, out) = intercept_cmd(&lab.px, "detach");
    assert_eq!(exit, 0, "intercept detach failed:\n{out}");
    assert!(!lab.pins.is_pinned(), "detach removes the pins");
    // Direct again: the upstream itself answers a name the proxy would refuse.
    let r = lab.curl(&[
        "--resolve",
        &unlisted,
        "http://unlisted.test/anything/direct",
    ]);
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/direct" && q.host() == "unlisted.test");
    assert!(
        lab.px
            .audit()
            .find(|a| a.path() == Some("/anything/direct"))
            .is_none(),
        "after detach the proxy is not involved"
    );
}

#[test]
fn a_load_that_fails_in_the_loader_child_stops_the_proxy_with_its_reason() {
    require_root!();
    let net = FakeInternet::new();
    let cg = TestCgroup::new();
    let pins = PinGuard::new();
    // The programs are loaded by a child process (`intercept load`); its error must reach
    // the proxy's own exit message. A pin directory off bpffs is refused there.
    let not_bpffs = tempfile::tempdir().expect("tempdir");
    let mut config = base_config(&net, &cg, &pins);
    config["intercept"]["pin_path"] = json!(not_bpffs.path().join("pins"));
    let (status, logs) = Proxy::with(config)
        .resolver(&net)
        .run_to_exit(std::time::Duration::from_secs(20));
    let text = logs.join("\n");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("loading the eBPF programs failed")
            && text.contains("is not on a BPF filesystem"),
        "{text}"
    );
    assert!(
        !not_bpffs.path().join("pins").exists(),
        "nothing was created off bpffs"
    );
}

/// `proxy.client_cidrs: []` admits loopback alone, and that is enough for intercepted workloads:
/// their redirected connections and DNS queries reach the proxy from loopback
/// (docs/security.md, "Who may use the proxy").
#[test]
fn with_client_cidrs_empty_intercepted_workloads_are_still_served() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start_with(&net, |c| c["proxy"]["client_cidrs"] = json!([]));
    let r = lab.curl(&[
        "--resolve",
        &resolve("httpbin.test", 443, up.ip()),
        "https://httpbin.test/anything/acl",
    ]);
    r.expect_status(200);
    let rec = lab.audit_for("/anything/acl");
    assert!(rec.is_allowed(), "{rec}");
    assert_foreign_dns_answered_by_the_proxy(&lab.cg, &net);
    assert!(
        !lab.px
            .audit()
            .iter()
            .any(|a| a.str("reason") == Some("client_not_allowed")),
        "nothing refused"
    );
}
