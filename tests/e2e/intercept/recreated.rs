//! A selected cgroup removed and made again (systemd restarting a unit whose own cgroup is
//! selected) is intercepted again at once: the proxy watches the selected paths and links
//! interception to the new cgroup. Shared by the eBPF and nftables modes.

use iron_proxy_tests::*;
use serde_json::json;

use super::lab::*;
use iron_proxy_tests::proxy::readyz_ok;

/// `iron_proxy_intercept_relinks_total{result="<result>"}` from the proxy's `/metrics`.
pub(crate) fn relinks(px: &ProxyProcess, result: &str) -> u64 {
    px.metric("iron_proxy_intercept_relinks_total", &[("result", result)])
        .map_or(0, |v| v as u64)
}

/// Makes `cg` again, waits for the proxy to link interception to it, and checks that a curl
/// in the new cgroup is intercepted (a transparent-mode record naming the new cgroup's
/// process) and that the proxy stays ready.
pub(crate) fn assert_made_again_is_intercepted(
    px: &ProxyProcess,
    cg: &TestCgroup,
    up: &UpstreamHandle,
) {
    assert_eq!(relinks(px, "linked"), 0);
    cg.make_again();
    px.wait_for_log(|l| l.contains("interception linked to the selected cgroups made again"));
    let r = workload_curl(
        px,
        cg,
        &[
            "--resolve",
            &resolve("httpbin.test", 443, up.ip()),
            "https://httpbin.test/anything/made-again",
        ],
    );
    assert_eq!(
        r.expect_status(200).json()["upstream"],
        "httpbin.test",
        "{r}"
    );
    let rec = audit_for(px, "/anything/made-again");
    assert_eq!(rec.str("mode"), Some("transparent"), "{rec}");
    assert_eq!(
        rec.pointer("/client/pid"),
        Some(&json!(r.pid)),
        "the record names the process in the new cgroup: {rec}"
    );
    assert_eq!(
        rec.pointer("/client/cgroup"),
        Some(&json!(cg.relative())),
        "{rec}"
    );
    assert_eq!(relinks(px, "linked"), 1);
    assert_eq!(relinks(px, "failed"), 0);
    assert!(readyz_ok(px.metrics_addr()), "still ready");
}

#[test]
fn a_selected_cgroup_made_again_is_intercepted_again() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    assert_made_again_is_intercepted(&lab.px, &lab.cg, &up);
    // The old cgroup's links are gone from the pins once the kernel released them.
    wait_until(
        std::time::Duration::from_secs(10),
        "the old cgroup's detached links to be dropped",
        || {
            let (code, text) = intercept_cmd(&lab.px, "status");
            (code == 0 && text.contains("12 of 12 links attached")).then_some(())
        },
    );
}

#[test]
fn a_cgroup_interception_cannot_be_linked_to_again_makes_the_proxy_unready() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    assert!(readyz_ok(lab.px.metrics_addr()));
    // Without its pinned program the connect4 hook cannot be linked to a new cgroup.
    std::fs::remove_file(lab.pins.path().join("progs/connect4")).expect("removing a program pin");
    lab.cg.make_again();
    lab.px.wait_for_log(|l| {
        l.contains("linking interception to a selected cgroup failed") && l.contains("connect4")
    });
    wait_until(
        std::time::Duration::from_secs(10),
        "/readyz to answer 503",
        || (!readyz_ok(lab.px.metrics_addr())).then_some(()),
    );
    assert!(relinks(&lab.px, "failed") >= 1);
    // Tried again at every check, still failing.
    let failed = relinks(&lab.px, "failed");
    wait_until(
        std::time::Duration::from_secs(10),
        "another failed attempt",
        || (relinks(&lab.px, "failed") > failed).then_some(()),
    );
    assert!(!readyz_ok(lab.px.metrics_addr()));
}
