//! Reloads that would weaken the running proxy without saying so are refused or reported:
//! a config whose secret variable is not set (the working credential would be replaced by
//! one that fails every request), a config with no allowlist while the running one has one
//! (a file read while it was being written opens all egress), and a CA rotated in its files
//! (validated, but in force only after a restart: `restart_required` says so).

use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::{managed_proxy, policy, reload, status_of, API_KEY};

/// Writes `cfg` as the proxy's config file exactly (JSON is YAML).
fn write_exact(px: &mut ProxyProcess, cfg: &Value) {
    px.write_config_text(&serde_json::to_string_pretty(cfg).expect("JSON"));
}

/// The reload answer's `errors`, as one string.
fn errors(r: &CurlResult) -> String {
    r.json()["errors"].to_string()
}

/// The `X-Key` the upstream got with `GET https://httpbin.test<path>` through `px`.
fn injected(px: &ProxyProcess, up: &UpstreamHandle, path: &str) -> Option<String> {
    let r = Curl::get(&format!("https://httpbin.test{path}"))
        .via(px)
        .run();
    assert_eq!(r.status, 200, "{r}");
    up.wait_for_request(|q| q.path() == path)
        .header("x-key")
        .map(str::to_string)
}

#[test]
fn a_reload_whose_secret_variable_is_unset_is_refused_and_the_credential_kept() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let config = format!(
        "{}  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: IRON_E2E_RELOAD_SECRET}}\n          inject: {{header: X-Key}}\n          rules: [{{host: httpbin.test}}]\n",
        policy(&["httpbin.test"])
    );
    let mut px = Proxy::with(config.as_str())
        .resolver(&net)
        .env("IRON_E2E_MGMT_KEY", API_KEY)
        .env("IRON_E2E_RELOAD_SECRET", "working-credential")
        .start();
    assert_eq!(
        injected(&px, &up, "/anything/before").as_deref(),
        Some("working-credential")
    );

    let mut cfg = px.config().clone();
    cfg["transforms"][1]["config"]["secrets"][0]["source"]["var"] =
        Value::from("IRON_E2E_RELOAD_UNSET");
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 422, "{r}");
    let errors = errors(&r);
    assert!(
        errors.contains("proxy.yaml:")
            && errors.contains(
                "transforms[1].config.secrets[0].source.var: environment variable \
                 IRON_E2E_RELOAD_UNSET is not set"
            ),
        "the error names where, the field and the variable: {errors}"
    );
    assert_eq!(
        injected(&px, &up, "/anything/after").as_deref(),
        Some("working-credential"),
        "the running credential is kept"
    );
}

#[test]
fn a_reload_that_would_drop_the_allowlist_is_refused_unless_it_allows_all_outright() {
    require_root!();
    let net = FakeInternet::new();
    let _a = Upstream::https("httpbin.test").start(&net);
    let _b = Upstream::https("other.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let good = px.config().clone();
    let text = serde_yaml_text(&good);

    // A file cut short before `transforms:`, and one cut right after it.
    let before = text[..text.find("transforms:").expect("a transforms key")].to_string();
    let after = format!("{before}transforms:\n");
    for cut in [before, after] {
        px.write_config_text(&cut);
        let r = reload(&px);
        assert_eq!(r.status, 422, "{r}\n{cut}");
        let errors = errors(&r);
        assert!(
            errors.contains("no allowlist transform while the running one has")
                && errors.contains("rename it into place")
                && errors.contains("domains: [\\\"*\\\"]"),
            "the error says why and how to mean it: {errors}"
        );
        assert_eq!(status_of(&px, "other.test"), 403, "egress stays closed");
    }

    // Saying so outright is taken.
    let mut cfg = good;
    cfg["transforms"][0]["config"]["domains"] = json!(["*"]);
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(status_of(&px, "other.test"), 200);
}

/// The config as YAML text with `transforms` last (JSON is YAML; one key per line).
fn serde_yaml_text(cfg: &Value) -> String {
    let mut cfg = cfg.clone();
    let transforms = cfg
        .as_object_mut()
        .and_then(|o| o.remove("transforms"))
        .expect("a transforms key");
    let mut text = String::new();
    for (k, v) in cfg.as_object().expect("an object") {
        text.push_str(&format!("{k}: {v}\n"));
    }
    text.push_str(&format!("transforms: {transforms}\n"));
    text
}

#[test]
fn a_ca_rotated_in_its_files_is_reported_as_needing_a_restart() {
    require_root!();
    let net = FakeInternet::new();
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["restart_required"], json!([]), "{r}");

    let cfg = px.config().clone();
    let (cert, key) = (
        cfg["tls"]["ca_cert"]
            .as_str()
            .expect("tls.ca_cert")
            .to_string(),
        cfg["tls"]["ca_key"]
            .as_str()
            .expect("tls.ca_key")
            .to_string(),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let rotated = TestCa::new("Rotated Test CA", dir.path());
    std::fs::copy(rotated.cert_path(), &cert).expect("replacing the CA certificate");
    std::fs::copy(rotated.key_path(), &key).expect("replacing the CA key");
    write_exact(&mut px, &cfg);
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json()["restart_required"],
        json!(["tls (CA files changed)"]),
        "{r}"
    );
    assert!(
        px.wait_for_log(|l| l.contains("take effect only after a restart"))
            .contains("tls (CA files changed)"),
        "logged like other restart-only changes"
    );
}
