//! `intercept.mode: nftables`, end to end: the same workloads as the eBPF tests (curl with
//! no proxy settings, in a test cgroup, optionally as a test uid), selected by
//! `socket cgroupv2` / `meta skuid` rules in an `inet` table of the test's own, REDIRECTed to
//! the proxy; the original destination comes from conntrack, the process from `/proc`.
//!
//! Safety: the rules select only the test's own cgroup; every table is deleted on drop (also
//! on failure); workloads connect only to fake-internet addresses and loopback.

mod lab;

use iron_proxy_tests::*;
use lab::*;
use nix::sys::signal::Signal;
use serde_json::json;

use crate::intercept::lab::{
    assert_concurrent_origins_kept, assert_foreign_dns_answered_by_the_proxy,
    assert_loopback_answer_followed, probe, reload_kernel_deny, resolve, start_intercepting,
    wait_stopped, EPERM,
};
use crate::intercept::recreated::assert_made_again_is_intercepted;

const EHOSTUNREACH: i64 = 113;
const ECONNREFUSED: i64 = 111;

#[test]
fn nft_https_and_http_by_name_reach_the_upstream_and_name_the_process() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = NftLab::start(&net);

    let r = lab.curl(&[
        "--resolve",
        &resolve("httpbin.test", 443, up.ip()),
        "https://httpbin.test/anything/nft-tls",
    ]);
    assert_eq!(
        r.expect_status(200).json()["upstream"],
        "httpbin.test",
        "{r}"
    );
    let seen = up.wait_for_request(|q| q.path() == "/anything/nft-tls");
    assert_eq!(seen.sni(), Some("httpbin.test"));
    let rec = lab.audit_for("/anything/nft-tls");
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.str("mode"), Some("transparent"), "{rec}");
    assert_eq!(
        rec.str("original_dst"),
        Some(format!("{}:443", up.ip()).as_str()),
        "conntrack's SO_ORIGINAL_DST: {rec}"
    );
    assert_eq!(
        rec.pointer("/client"),
        Some(&json!({"pid": r.pid, "uid": 0, "comm": "curl", "cgroup": lab.cg.relative()})),
        "the audit record names the workload process: {rec}"
    );

    let r = lab.curl(&[
        "--resolve",
        &resolve("httpbin.test", 80, up.ip()),
        "http://httpbin.test/anything/nft-plain",
    ]);
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/nft-plain" && q.sni().is_none());
    let rec = lab.audit_for("/anything/nft-plain");
    assert_eq!(
        rec.str("original_dst"),
        Some(format!("{}:80", up.ip()).as_str()),
        "{rec}"
    );
    assert_eq!(rec.pointer("/client/pid"), Some(&json!(r.pid)), "{rec}");

    let (exit, status) = lab.intercept_cmd("status");
    assert_eq!(exit, 0, "{status}");
    for want in [
        format!("mode nftables, table inet {}", lab.table.name()),
        format!("selected: cgroup={}", lab.cg.relative()),
    ] {
        assert!(status.contains(&want), "status lacks {want:?}:\n{status}");
    }
    assert!(
        !status.contains("counters: redirected=0 "),
        "the redirect counter counts both connections: {status}"
    );
    let metrics = curl([format!("http://{}/metrics", lab.px.metrics_addr())]);
    assert!(
        metrics.body.lines().any(|l| l.contains("intercept_events")
            && l.contains("event=\"redirected\"")
            && !l.ends_with(" 0")),
        "the nft counters are exported as intercept_events: {metrics}"
    );
}

#[test]
fn nft_names_outside_the_allowlist_get_403_without_touching_the_upstream() {
    require_root!();
    let net = FakeInternet::new();
    let evil = Upstream::https("evil.test").start(&net);
    let lab = NftLab::start(&net);
    for (scheme, port) in [("https", 443), ("http", 80)] {
        let path = format!("/anything/nft-evil-{scheme}");
        let r = lab.curl(&[
            "--resolve",
            &resolve("evil.test", port, evil.ip()),
            &format!("{scheme}://evil.test{path}"),
        ]);
        assert_eq!(r.status, 403, "{path}: {r}");
        let rec = lab.audit_for(&path);
        assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
    }
    evil.assert_untouched();
}

#[test]
fn nft_deny_cidrs_are_refused_before_the_redirect() {
    require_root!();
    let net = FakeInternet::new();
    let internal = Upstream::https("internal.test").start(&net);
    let open = net.add_host();
    let (v4, v6) = (internal.ip(), internal.ipv6());
    let port = iron_proxy_tests::ports::free_port(std::net::Ipv4Addr::LOCALHOST.into(), false);
    let lab = NftLab::start_with(&net, |c| {
        c["proxy"] = json!({"upstream_deny_cidrs": [format!("{v4}/32"), format!("{v6}/128")]});
        c["intercept"]["listen"] = json!(format!("127.0.0.1:{port}"));
    });
    // A local user squatting [::1] on the transparent listener's port (the proxy listens on
    // IPv4 only) must not receive the workloads' IPv6 connections.
    let squatter = std::net::TcpListener::bind(("::1", port)).expect("binding [::1]");
    squatter.set_nonblocking(true).expect("nonblocking");
    let tcp = [
        format!("tcp,{v4},443"),
        format!("tcp,::ffff:{v4},443"),
        format!("tcp,{v4},8080"),
    ];
    // DNS is redirected before the deny rules (as in eBPF mode), so UDP 53 to a denied
    // v4 resolver is answered by the proxy (below); other UDP there is dropped, and so is
    // UDP 53 over IPv6, which has no DNS listener here.
    let udp = [format!("udp,{v4},443"), format!("udp,{v6},53")];
    let specs: Vec<String> = tcp
        .iter()
        .chain(&udp)
        .cloned()
        .chain([
            format!("tcp,{},443", open.v4),
            format!("tcp,{},443", open.v6),
        ])
        .collect();
    let results = probe(&lab.cg, &specs);
    for s in &tcp {
        assert_eq!(
            results[s],
            json!(EHOSTUNREACH),
            "{s}: TCP into a deny range is rejected with admin-prohibited: {results}"
        );
    }
    for s in &udp {
        assert_eq!(
            results[s],
            json!(EPERM),
            "{s}: dropped in output: {results}"
        );
    }
    assert_eq!(
        results[&format!("tcp,{},443", open.v4)],
        json!("ok"),
        "outside the deny list: redirected to the proxy: {results}"
    );
    let at = format!("@{v4}");
    let ran = lab
        .cg
        .dig(&[&at, "example.test", "A", "+short", "+time=3", "+tries=1"]);
    assert_eq!(
        ran.stdout.trim(),
        net.host_side_v4().to_string(),
        "DNS to a denied resolver is answered by the proxy: {ran}"
    );
    assert_eq!(
        results[&format!("tcp,{},443", open.v6)],
        json!(ECONNREFUSED),
        "native IPv6 without an IPv6 listener is refused with a reset: {results}"
    );
    assert_eq!(
        squatter.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the squatter on [::1] got a workload's connection"
    );
    internal.assert_untouched();
}

#[test]
fn nft_udp_other_than_dns_and_raw_icmp_are_refused() {
    require_root!();
    let net = FakeInternet::new();
    let lab = NftLab::start(&net);
    let target = net.add_host();
    let specs: Vec<String> = vec![
        format!("udp,{},443", target.v4),
        format!("udpconnect,{},443", target.v4),
        format!("udp,{},443", target.v6),
        format!("udp,{},123", target.v4),
    ];
    let results = probe(&lab.cg, &specs);
    for s in &specs {
        assert_eq!(results[s], json!(EPERM), "{s}: {results}");
    }
    // A raw socket can still be created (no sock_create hook here), but what it sends is
    // dropped in output: the send fails with EPERM.
    let out = lab.cg.python(RAW_ECHO, [target.v4.to_string()]);
    out.assert_ok();
    assert_eq!(out.json(), json!(EPERM), "raw ICMP echo: {out}");
}

#[test]
fn nft_dns_to_a_foreign_resolver_is_answered_by_the_proxy_over_udp_and_tcp() {
    require_root!();
    let net = FakeInternet::new();
    let lab = NftLab::start(&net);
    assert_foreign_dns_answered_by_the_proxy(&lab.cg, &net);
}

#[test]
fn nft_a_workload_following_a_loopback_dns_answer_reaches_the_proxy() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = NftLab::start_with(&net, |c| c["dns"]["proxy_ip"] = json!("127.0.0.1"));
    assert_loopback_answer_followed(&lab.px, &lab.cg, &net, &up, EHOSTUNREACH);
}

#[test]
fn nft_outside_the_cgroup_is_untouched_and_uids_narrow_the_selection() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = NftLab::start_with(&net, |c| c["intercept"]["uids"] = json!([65534]));
    let unlisted = resolve("unlisted.test", 80, up.ip());

    // The test process: not in the cgroup, goes direct.
    curl([
        "--resolve",
        &unlisted,
        "http://unlisted.test/anything/nft-outside",
    ])
    .expect_status(200);
    // Root inside the cgroup: not a selected uid, goes direct.
    lab.cg
        .curl([
            "--resolve",
            &unlisted,
            "http://unlisted.test/anything/nft-root",
        ])
        .expect_status(200);
    // uid 65534 inside the cgroup: intercepted and refused.
    let r = lab.cg.command("curl").as_uid(65534).curl([
        "--resolve",
        &unlisted,
        "http://unlisted.test/anything/nft-nobody",
    ]);
    assert_eq!(r.status, 403, "uid 65534 is intercepted: {r}");
    let rec = lab.audit_for("/anything/nft-nobody");
    assert_eq!(rec.pointer("/client/uid"), Some(&json!(65534)), "{rec}");
    assert_eq!(rec.pointer("/client/pid"), Some(&json!(r.pid)), "{rec}");
    up.assert_no_request(|q| q.path() == "/anything/nft-nobody");
    for direct in ["/anything/nft-outside", "/anything/nft-root"] {
        up.wait_for_request(|q| q.path() == direct);
        assert!(
            lab.px.audit().find(|a| a.path() == Some(direct)).is_none(),
            "{direct} must not have gone through the proxy"
        );
    }
}

#[test]
fn nft_a_killed_proxy_fails_closed_a_restart_replaces_the_table_and_detach_goes_direct() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let mut lab = NftLab::start(&net);
    let by_name = resolve("httpbin.test", 80, up.ip());
    let unlisted = resolve("unlisted.test", 80, up.ip());

    lab.px.signal(Signal::SIGKILL);
    wait_stopped(&mut lab.px);
    assert!(lab.table.exists(), "the table outlives the proxy");
    let r = lab.curl(&[
        "--resolve",
        &unlisted,
        "http://unlisted.test/anything/nft-dead",
    ]);
    assert_eq!(
        r.exit, 7,
        "proxy dead: connection refused, not the internet: {r}"
    );
    up.assert_no_request(|q| q.path() == "/anything/nft-dead");

    // The restarted proxy listens on a new port: the table is replaced in one transaction.
    lab.px = start_intercepting(Proxy::with(lab.config.clone()).resolver(&net));
    lab.curl(&[
        "--resolve",
        &by_name,
        "http://httpbin.test/anything/nft-again",
    ])
    .expect_status(200);
    lab.audit_for("/anything/nft-again");

    let (exit, out) = lab.intercept_cmd("detach");
    assert_eq!(exit, 0, "intercept detach: {out}");
    assert!(!lab.table.exists(), "detach deletes the table");
    let (exit, out) = lab.intercept_cmd("status");
    assert!(exit == 0 && out.contains("interception: off"), "{out}");
    lab.curl(&[
        "--resolve",
        &unlisted,
        "http://unlisted.test/anything/nft-direct",
    ])
    .expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/nft-direct");
}

#[test]
fn nft_five_hundred_concurrent_connections_keep_their_original_destinations() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = NftLab::start(&net);
    assert_concurrent_origins_kept(&lab.cg, &lab.px, &up, 21000, 500);
}

#[test]
fn nft_startup_names_what_is_missing_and_refuses_to_select_itself() {
    require_root!();
    let net = FakeInternet::new();
    let cg = TestCgroup::new();
    let table = NftTable::new();
    let logs = refused_start(
        &net,
        json!({"mode": "nftables", "cgroups": [cg.path()], "listen": "127.0.0.1:0", "pin_path": table.pin.path()}),
    );
    assert!(logs.contains("`nft` not found"), "{logs}");
    // uid mode selecting the proxy's own uid: refused before nft is even looked for (the
    // empty PATH is a second safety net: nothing could be installed anyway).
    let logs = refused_start(
        &net,
        json!({"mode": "nftables", "uids": [0], "listen": "127.0.0.1:0", "pin_path": table.pin.path()}),
    );
    assert!(
        logs.contains("the proxy itself runs in an intercepted"),
        "{logs}"
    );
    assert!(!table.exists());
}

#[test]
fn nft_a_sighup_reload_replaces_the_deny_rules() {
    require_root!();
    let net = FakeInternet::new();
    let a = net.add_host().v4;
    let b = net.add_host().v4;
    let mut lab = NftLab::start_with(&net, |c| {
        c["proxy"] = json!({"upstream_deny_cidrs": [format!("{a}/32")]});
    });
    let specs = [format!("tcp,{a},80"), format!("tcp,{b},80")];
    let before = probe(&lab.cg, &specs);
    assert_eq!(before[&specs[0]], json!(EHOSTUNREACH), "{before}");
    assert_eq!(before[&specs[1]], json!("ok"), "redirected: {before}");

    reload_kernel_deny(&mut lab.px, &lab.config, b.into());

    let after = probe(&lab.cg, &specs);
    assert_eq!(
        after[&specs[1]],
        json!(EHOSTUNREACH),
        "newly denied: {after}"
    );
    assert_eq!(after[&specs[0]], json!("ok"), "no longer denied: {after}");
    assert!(lab.table.exists(), "the table was replaced, not removed");
}

#[test]
fn nft_a_selected_cgroup_made_again_is_intercepted_with_the_reloaded_deny_list() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let (a, b) = (net.add_host().v4, net.add_host().v4);
    let mut lab = NftLab::start_with(&net, |c| {
        c["proxy"] = json!({"upstream_deny_cidrs": [format!("{a}/32")]});
    });
    reload_kernel_deny(&mut lab.px, &lab.config, b.into());
    // nft stores the cgroup's id in the rule: the table is built again for the new cgroup,
    // with the deny list the reload put in force, not the one the proxy started with.
    assert_made_again_is_intercepted(&lab.px, &lab.cg, &up);
    let specs = [format!("tcp,{a},80"), format!("tcp,{b},80")];
    let after = probe(&lab.cg, &specs);
    assert_eq!(
        after[&specs[1]],
        json!(EHOSTUNREACH),
        "still denied: {after}"
    );
    assert_eq!(after[&specs[0]], json!("ok"), "still not denied: {after}");
}
