//! A listener whose address another process holds stops start-up with an error that names
//! where its field was set, as config errors do (`proxy.yaml:7:11: dns.listen: binding ...:
//! Address already in use`): the DNS server, the management API and the transparent listener,
//! as the data plane's listeners and the metrics endpoint already were.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iron_proxy_tests::*;
use serde_json::{json, Value};

/// A loopback port held by this test for as long as the listener lives.
fn taken() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a port to hold");
    let a = l.local_addr().expect("its address");
    (l, a)
}

/// Starts `proxy` with `config` expecting it to fail; returns its exit code, its output and
/// the config file it was given (its path and its text, as the harness rendered it).
fn fail_to_start(proxy: Proxy) -> (Option<i32>, String, String, String) {
    let file: Arc<Mutex<(String, String)>> = Arc::default();
    let seen = file.clone();
    let (status, logs) = proxy
        .config_arg(move |p: &Path| {
            let text = std::fs::read_to_string(p).expect("reading the rendered config");
            let path = p.display().to_string();
            *seen.lock().expect("lock") = (path.clone(), text);
            path
        })
        .run_to_exit(Duration::from_secs(30));
    let (path, text) = file.lock().expect("lock").clone();
    (status.code(), logs.join("\n"), path, text)
}

/// `line:column` of the value `addr` in the config text (1-based, at the value's opening
/// quote when it is quoted), as config errors give a value's place.
fn place_of(text: &str, addr: SocketAddr) -> String {
    let addr = addr.to_string();
    text.lines()
        .enumerate()
        .find_map(|(i, l)| {
            let at = l.find(&addr)?;
            let quoted = at > 0 && matches!(l.as_bytes()[at - 1], b'"' | b'\'');
            Some(format!("{}:{}", i + 1, at + 1 - usize::from(quoted)))
        })
        .unwrap_or_else(|| panic!("{addr} is not in the config:\n{text}"))
}

/// Starts `config` with `field` set to a taken address and checks the error names the file,
/// the line and column of the value, the field and the address.
fn check(proxy: impl FnOnce(Value) -> Proxy, mut config: Value, field: &str) {
    let (_hold, addr) = taken();
    let (section, key) = field.split_once('.').expect("a dotted field");
    config[section][key] = Value::from(addr.to_string());
    let (code, out, path, text) = fail_to_start(proxy(config));
    assert_eq!(code, Some(1), "start-up fails:\n{out}");
    let want = format!("{path}:{}: {field}: binding", place_of(&text, addr));
    let line = out
        .lines()
        .find(|l| l.contains(&want))
        .unwrap_or_else(|| panic!("no line names {want:?}:\n{out}"));
    assert!(
        line.contains(&addr.to_string()) && line.contains("Address already in use"),
        "the line names the address and why: {line}"
    );
}

fn allowlist() -> Value {
    json!({"transforms": [{"name": "allowlist", "config": {"domains": ["httpbin.test"]}}]})
}

#[test]
fn a_taken_dns_listen_is_named_at_its_line() {
    require_root!();
    let mut config = allowlist();
    config["dns"] = json!({"proxy_ip": "127.0.0.1"});
    check(Proxy::with, config, "dns.listen");
}

#[test]
fn a_taken_management_listen_is_named_at_its_line() {
    require_root!();
    let mut config = allowlist();
    config["management"] = json!({"api_key_env": "IRON_E2E_TAKEN_KEY"});
    check(
        |c| Proxy::with(c).env("IRON_E2E_TAKEN_KEY", "taken-port-key-2718"),
        config,
        "management.listen",
    );
}

#[test]
fn a_taken_intercept_listen_is_named_at_its_line() {
    require_root!();
    // The transparent listener is bound before anything is attached; should it bind
    // anyway, only this test's cgroup and pins would be touched.
    let cg = TestCgroup::new();
    let pins = PinGuard::new();
    let mut config = allowlist();
    config["intercept"] = json!({"cgroups": [cg.path()], "pin_path": pins.path()});
    check(Proxy::with, config, "intercept.listen");
}
