//! Hostile config files on reload: nesting thousands of levels deep and an alias bomb
//! are refused (422 from the API, a logged failure on SIGHUP) while the running proxy
//! keeps serving its old policy. The parse runs on a tokio worker with a small stack,
//! where a recursive parser used to overflow and abort the whole process.

use std::time::Duration;

use iron_proxy_tests::*;
use nix::sys::signal::Signal;

use super::{managed_proxy, management, policy, reload, status_of, API_KEY};

/// `k:` nested `levels` deep as block mappings, one more space of indent per level.
fn deep_mappings(levels: usize) -> String {
    (0..levels)
        .map(|l| format!("{}k:\n", " ".repeat(l)))
        .collect()
}

/// Nine lines, each holding nine copies of the one above (9^9 scalars expanded).
fn billion_laughs() -> String {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for pair in names.windows(2) {
        let items = vec![format!("*{}", pair[0]); 9].join(", ");
        text.push_str(&format!("{name}: &{name} [{items}]\n", name = pair[1]));
    }
    text
}

#[test]
fn reload_refuses_deep_nesting_and_alias_bombs_and_keeps_serving() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    assert_eq!(status_of(&px, "httpbin.test"), 200);

    let cases = [
        (
            "10,000 levels of block sequences",
            format!("transforms:\n  - {}x\n", "- ".repeat(10_000)),
            ":2:257: invalid YAML: nesting deeper than 128 levels",
        ),
        (
            "3,000 levels of block mappings",
            deep_mappings(3_000),
            ":129:130: invalid YAML: nesting deeper than 128 levels",
        ),
        (
            "an alias bomb",
            billion_laughs(),
            ":6:8: invalid YAML: aliases expand to more than 100000 nodes",
        ),
    ];
    for (what, text, error) in &cases {
        px.write_config_text(text);
        let r = reload(&px);
        assert_eq!(r.status, 422, "{what}: {r}");
        let errors = r.json()["errors"].to_string();
        assert!(
            errors.contains(error),
            "{what}: expected {error:?} in {errors}"
        );
        assert!(px.is_running(), "{what}: the reload killed the proxy");
        assert_eq!(
            status_of(&px, "httpbin.test"),
            200,
            "{what}: the old policy still serves"
        );
    }

    // The same through SIGHUP: logged and recorded, the proxy still running.
    px.write_config_text(&deep_mappings(3_000));
    px.signal(Signal::SIGHUP);
    let failed = wait_until(
        Duration::from_secs(10),
        "the failed SIGHUP reload recorded",
        || {
            let s = management(&px, "GET", "/v1/status", Some(API_KEY)).json();
            (s["last_reload"]["trigger"] == "signal").then_some(s)
        },
    );
    assert_eq!(failed["last_reload"]["result"], "failure", "{failed}");
    assert!(
        failed["last_reload"]["errors"]
            .to_string()
            .contains("nesting deeper than 128 levels"),
        "{failed}"
    );
    assert!(
        px.is_running(),
        "SIGHUP with a deep config killed the proxy"
    );
    assert_eq!(status_of(&px, "httpbin.test"), 200);
}
