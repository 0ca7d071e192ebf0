//! Operations through the real binary: the management API's reload (200, 401, 405, 422, with
//! the policy checked before and after), SIGHUP reload, requests that never fail during
//! repeated reloads, Prometheus metrics parsed by the official client (the data plane's
//! bytes, upstream timings and connections among them), health and readiness,
//! OTLP export over HTTP and gRPC, a collector that is down, the SIGTERM drain, hostile
//! config files (deep nesting, alias bombs) refused on reload, a `-config` that is a FIFO, a
//! directory, a device or a socket refused at once (start-up, `validate`, reload) and a config
//! behind ConfigMap-style links reloaded through an atomic swap, `validate` on files as yaml.v3
//! users write them and whether the proxy would start with them here, a CA about to expire
//! named by `validate`, start-up, reload and `init`, and the JSON (or text) operational log
//! lines next to the audit records on stderr; a listener whose address is taken named at its
//! line.

mod audit_bound;
mod audit_entries;
mod audit_sink;
mod ca_expiry;
mod client_acl;
mod config_file;
mod config_s3;
mod dns_flood;
mod hostile_clients;
mod hostile_config;
mod lifecycle;
mod listen_taken;
mod logs;
mod metrics;
mod otlp;
mod otlp_headers;
mod reload_guard;
mod reload_live;
mod revoke;
mod traffic;
mod validate;
mod validate_start;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use iron_proxy_tests::*;
use nix::sys::signal::Signal;

use metrics::{sample, scrape};

const API_KEY: &str = "mgmt-e2e-token-3141";

/// An allowlist of `domains`, the management API on a harness port. (`rewrite_config` keeps
/// the harness's listen addresses for keys the new config leaves out, so it gets no `listen`.)
fn policy(domains: &[&str]) -> String {
    policy_file(domains).replace("management:\n", "management:\n  listen: auto\n")
}

/// [`policy`] without `management.listen`, for `rewrite_config`.
fn policy_file(domains: &[&str]) -> String {
    format!(
        r#"
management:
  api_key_env: IRON_E2E_MGMT_KEY
transforms:
  - name: allowlist
    config:
      domains: {domains:?}
"#
    )
}

/// A proxy started with `config` and the management token in its environment.
fn managed_proxy(config: &str, net: &FakeInternet) -> ProxyProcess {
    Proxy::with(config)
        .resolver(net)
        .env("IRON_E2E_MGMT_KEY", API_KEY)
        .start()
}

/// `curl -X method http://<management>/path`, with `Authorization: Bearer token` if given.
fn management(px: &ProxyProcess, method: &str, path: &str, token: Option<&str>) -> CurlResult {
    let mut c = Curl::get(&format!("http://{}{path}", px.management_addr())).args(["-X", method]);
    if let Some(t) = token {
        c = c.header("Authorization", &format!("Bearer {t}"));
    }
    c.run()
}

fn reload(px: &ProxyProcess) -> CurlResult {
    management(px, "POST", "/v1/reload", Some(API_KEY))
}

/// A raw HTTP/1.1 keep-alive connection to `http_listen`.
pub(crate) struct KeepAlive(std::net::TcpStream);

impl KeepAlive {
    /// Connects; reads give up after `timeout`.
    pub(crate) fn open(addr: std::net::SocketAddr, timeout: Duration) -> Self {
        let s = std::net::TcpStream::connect(addr).expect("connecting to the proxy");
        s.set_read_timeout(Some(timeout)).expect("read timeout");
        KeepAlive(s)
    }

    /// Sends a GET and reads the whole response (Content-Length framed); returns its head.
    pub(crate) fn get(&mut self, path: &str, host: &str) -> String {
        use std::io::{Read, Write};
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.0.write_all(req.as_bytes()).expect("writing a request");
        let head = iron_proxy_tests::timed_read::read_head(&mut self.0, "keep-alive client");
        let mut body = vec![0u8; content_length(&head)];
        self.0.read_exact(&mut body).expect("reading the body");
        head
    }

    /// [`KeepAlive::get`]'s status line.
    pub(crate) fn status(&mut self, path: &str, host: &str) -> String {
        let head = self.get(path, host);
        head.lines().next().unwrap_or_default().to_string()
    }

    /// [`KeepAlive::status`], or None when the connection ends (or the read times out)
    /// before a whole answer: a proxy that closed it unanswered.
    pub(crate) fn try_status(&mut self, path: &str, host: &str) -> Option<String> {
        use std::io::Write;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.0.write_all(req.as_bytes()).ok()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !ends_a_response(&got) {
            match timed_read::read_some(&mut self.0, &mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
        String::from_utf8_lossy(&got)
            .lines()
            .next()
            .map(str::to_string)
    }
}

/// Whether `got` holds a whole HTTP/1 response: its head and the Content-Length bytes after it.
pub(crate) fn ends_a_response(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]);
    got.len() >= end + 4 + content_length(&head)
}

/// The Content-Length an HTTP/1 response head gives its body (0 without one).
pub(crate) fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Status of `GET https://<host>/get` through the proxy.
pub(crate) fn status_of(px: &ProxyProcess, host: &str) -> u16 {
    Curl::get(&format!("https://{host}/get"))
        .via(px)
        .run()
        .status
}

#[test]
fn management_reload_answers_200_401_405_422_and_swaps_the_policy() {
    require_root!();
    let net = FakeInternet::new();
    let _a = Upstream::https("httpbin.test").start(&net);
    let b = Upstream::https("other.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);

    assert_eq!(status_of(&px, "httpbin.test"), 200);
    assert_eq!(status_of(&px, "other.test"), 403);
    b.assert_untouched();

    // The new policy is on disk, but nobody authorised the reload.
    px.rewrite_config(policy_file(&["httpbin.test", "other.test"]));
    let r = management(&px, "POST", "/v1/reload", None);
    assert_eq!(r.status, 401, "{r}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{r}"
    );
    let r = management(&px, "POST", "/v1/reload", Some("wrong-token"));
    assert_eq!(r.status, 401, "{r}");
    // Unknown routes are behind the token too (no probing without it).
    assert_eq!(
        management(&px, "POST", "/v1/nothing-here", None).status,
        401
    );
    assert_eq!(status_of(&px, "other.test"), 403, "no reload happened");

    // Wrong method, authenticated.
    let r = management(&px, "GET", "/v1/reload", Some(API_KEY));
    assert_eq!(r.status, 405, "{r}");
    assert_eq!(status_of(&px, "other.test"), 403, "no reload happened");

    // A good reload.
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let body = r.json();
    assert_eq!(body["status"], "reloaded", "{body}");
    let hash = body["config_hash"].as_str().unwrap_or_default().to_string();
    assert_eq!(hash.len(), 64, "a SHA-256 config hash: {body}");
    assert_eq!(
        status_of(&px, "other.test"),
        200,
        "allowed after the reload"
    );
    // Logged once per reload (it was twice), with the trigger and the hash.
    let reloaded: Vec<String> = px
        .logs()
        .into_iter()
        .filter(|l| l.contains("\"configuration reloaded\""))
        .collect();
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert!(
        reloaded[0].contains("\"trigger\":\"api\"") && reloaded[0].contains(&hash),
        "{reloaded:?}"
    );

    // A broken config that would also deny other.test: 422 with the errors; the running
    // policy stays in force.
    px.rewrite_config(
        r#"
management: {api_key_env: IRON_E2E_MGMT_KEY}
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
      domainz: ["oops.test"]
"#,
    );
    let r = reload(&px);
    assert_eq!(r.status, 422, "{r}");
    let errors = r.json()["errors"].clone();
    let listed = errors.as_array().cloned().unwrap_or_default();
    assert!(!listed.is_empty(), "errors listed: {errors}");
    assert!(
        errors.to_string().contains("domainz"),
        "the error names the bad key: {errors}"
    );
    assert_eq!(
        status_of(&px, "other.test"),
        200,
        "the old policy is still in force"
    );
    assert_eq!(status_of(&px, "httpbin.test"), 200);

    // /v1/status: the last reload failed, the hash is still the good one.
    let status = management(&px, "GET", "/v1/status", Some(API_KEY)).json();
    assert_eq!(status["config_hash"], hash.as_str(), "{status}");
    assert_eq!(status["last_reload"]["result"], "failure", "{status}");
    assert_eq!(status["last_reload"]["trigger"], "api", "{status}");
    assert_eq!(
        management(&px, "GET", "/v1/status", None).status,
        401,
        "status needs the token too"
    );
    assert!(
        !px.logs().iter().any(|l| l.contains(API_KEY)),
        "the management token is never logged"
    );

    // Both outcomes are counted.
    let m = scrape(&px);
    assert_eq!(
        sample(&m, "iron_proxy_reloads_total", &[("result", "success")]),
        Some(1.0),
        "{m:?}"
    );
    assert_eq!(
        sample(&m, "iron_proxy_reloads_total", &[("result", "failure")]),
        Some(1.0),
        "{m:?}"
    );
}

#[test]
fn management_api_without_its_token_refuses_to_start() {
    require_root!();
    let (status, logs) =
        Proxy::with(policy(&["httpbin.test"])).run_to_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", logs.join("\n"));
    assert!(
        logs.iter()
            .any(|l| l.contains("IRON_E2E_MGMT_KEY") && l.contains("unauthenticated")),
        "the error names the variable:\n{}",
        logs.join("\n")
    );
}

#[test]
fn sighup_reloads_the_config() {
    require_root!();
    let net = FakeInternet::new();
    let _b = Upstream::https("other.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    assert_eq!(status_of(&px, "other.test"), 403);

    px.rewrite_config(policy_file(&["other.test"]));
    px.signal(Signal::SIGHUP);
    wait_until(
        Duration::from_secs(10),
        "other.test allowed after SIGHUP",
        || (status_of(&px, "other.test") == 200).then_some(()),
    );
    assert!(px.is_running(), "SIGHUP must not stop the proxy");
    // The new policy serves before the reload has finished (listeners, memory release), and
    // `last_reload` is set at its end.
    let status = wait_until(Duration::from_secs(10), "the reload recorded", || {
        let status = management(&px, "GET", "/v1/status", Some(API_KEY)).json();
        (!status["last_reload"].is_null()).then_some(status)
    });
    assert_eq!(status["last_reload"]["result"], "success", "{status}");
    assert_eq!(status["last_reload"]["trigger"], "signal", "{status}");

    // A broken file on SIGHUP: logged, recorded, the proxy keeps running the old policy.
    px.rewrite_config(
        "transforms: [{name: allowlist, config: {domains: [\"httpbin.test\"]}}]\nbogus: 1\n",
    );
    px.signal(Signal::SIGHUP);
    let failed = wait_until(
        Duration::from_secs(10),
        "the failed SIGHUP reload recorded",
        || {
            let s = management(&px, "GET", "/v1/status", Some(API_KEY)).json();
            (s["last_reload"]["result"] == "failure").then_some(s)
        },
    );
    assert!(
        failed["last_reload"]["errors"]
            .to_string()
            .contains("bogus"),
        "{failed}"
    );
    px.wait_for_log(|l| l.contains("keeping the running configuration"));
    assert!(px.is_running(), "a bad reload must not stop the proxy");
    assert_eq!(
        status_of(&px, "other.test"),
        200,
        "the old policy is still in force"
    );
}

/// Two alternating policies: both allow httpbin.test and inject a header naming the
/// generation, so the upstream proves every request ran on one complete pipeline.
fn generation(n: usize) -> String {
    let gen = if n.is_multiple_of(2) { "even" } else { "odd" };
    format!(
        r#"
management:
  api_key_env: IRON_E2E_MGMT_KEY
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test", "{gen}.test"]
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: IRON_E2E_GEN_SECRET}}
          inject:
            header: "X-Generation"
            formatter: "{gen} {{{{ .Value }}}}"
          rules:
            - host: "httpbin.test"
"#
    )
}

#[test]
fn requests_during_repeated_reloads_never_fail() {
    require_root!();
    const RELOADS: usize = 20;
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let start = generation(0).replace("management:\n", "management:\n  listen: auto\n");
    let mut px = Proxy::with(start.as_str())
        .resolver(&net)
        .env("IRON_E2E_MGMT_KEY", API_KEY)
        .env("IRON_E2E_GEN_SECRET", "v")
        .start();

    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    // The clients only need the listener addresses and the CA, not the process handle.
    let args = [
        "--cacert".to_string(),
        px.ca().to_string(),
        "--connect-to".to_string(),
        format!(":443:{}", px.https_addr()),
    ];
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let r = Curl::get("https://httpbin.test/get")
                        .args(args.clone())
                        .run();
                    if r.status != 200 {
                        failures.lock().expect("failures lock").push(r);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for n in 1..=RELOADS {
            // Interleave without sleeping: each reload waits for a request to finish after
            // the previous one.
            let before = done.load(Ordering::Relaxed);
            wait_until(Duration::from_secs(20), "a request between reloads", || {
                (done.load(Ordering::Relaxed) > before).then_some(())
            });
            px.rewrite_config(generation(n));
            let r = reload(&px);
            if r.status != 200 {
                stop.store(true, Ordering::Relaxed);
                panic!("reload {n} failed: {r}");
            }
        }
        let before = done.load(Ordering::Relaxed);
        wait_until(
            Duration::from_secs(20),
            "a request after the last reload",
            || (done.load(Ordering::Relaxed) > before + 1).then_some(()),
        );
        stop.store(true, Ordering::Relaxed);
    });

    let failures = failures.into_inner().expect("failures lock");
    let total = done.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed during reloads; first:\n{}",
        failures.len(),
        failures[0]
    );
    assert!(
        total > RELOADS,
        "only {total} requests ran across {RELOADS} reloads"
    );
    let seen = up.requests();
    assert_eq!(seen.len(), total, "every request reached the upstream");
    for r in &seen {
        let g = r.header("x-generation");
        assert!(
            g == Some("even v") || g == Some("odd v"),
            "a request ran on a partial pipeline: {r}"
        );
    }
    // One audit record per request, none lost or doubled across the swaps, each from one
    // complete pipeline.
    let records = wait_until(
        Duration::from_secs(10),
        "a record for every request",
        || {
            let n = px
                .audit()
                .iter()
                .filter(|a| a.path() == Some("/get"))
                .count();
            (n >= total).then_some(n)
        },
    );
    assert_eq!(records, total, "exactly one record per request");
    for rec in px.audit().iter().filter(|a| a.path() == Some("/get")) {
        let names: Vec<&str> = rec
            .request_transforms()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(rec.is_allowed(), "{rec}");
        assert_eq!(names, ["allowlist", "secrets"], "{rec}");
    }
    let status = management(&px, "GET", "/v1/status", Some(API_KEY)).json();
    assert_eq!(status["last_reload"]["result"], "success", "{status}");
}

#[test]
fn reload_refuses_what_startup_refuses_and_reports_restart_only_changes() {
    require_root!();
    let net = FakeInternet::new();
    let _b = Upstream::https("other.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);

    // A judge whose API key variable is unset cannot run: startup refuses it, so a reload
    // must not load a policy without it.
    px.rewrite_config(format!(
        "{}  - name: judge\n    config:\n      name: guard\n      prompt: \"Deny all.\"\n      rules: [{{host: other.test}}]\n      provider: {{type: openai, model: m, api_key_env: IRON_TEST_UNSET_KEY}}\n",
        policy_file(&["httpbin.test", "other.test"])
    ));
    let r = reload(&px);
    assert_eq!(r.status, 422, "{r}");
    assert!(
        r.json()["errors"]
            .to_string()
            .contains("IRON_TEST_UNSET_KEY"),
        "{r}"
    );
    assert_eq!(status_of(&px, "other.test"), 403, "nothing was swapped in");

    // A change to a startup-only setting: the policy part applies, the response says what
    // needs a restart, and the running value stays (still JSON lines). (`log.level` and the
    // listener addresses reload: see `reload_live`.)
    px.rewrite_config(format!(
        "{}log:\n  format: text\n",
        policy_file(&["httpbin.test", "other.test"])
    ));
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json()["restart_required"],
        serde_json::json!(["log.format"]),
        "{r}"
    );
    assert_eq!(status_of(&px, "other.test"), 200);
    px.wait_for_log(|l| l.contains("take effect only after a restart") && l.starts_with('{'));

    px.rewrite_config(policy_file(&["other.test"]));
    let r = reload(&px);
    assert_eq!(r.json()["restart_required"], serde_json::json!([]), "{r}");
    assert!(r.json().get("warnings").is_none(), "{r}");

    // A judge placed after `secrets` is allowed, and flagged: its provider would see the
    // injected credentials. (PATH stands in for key variables the proxy surely has.)
    px.rewrite_config(format!(
        "{}  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: PATH}}\n          inject: {{header: X-Key}}\n          rules: [{{host: judged.test}}]\n  - name: judge\n    config:\n      name: late\n      prompt: \"Deny all.\"\n      rules: [{{host: judged.test}}]\n      provider: {{type: openai, model: m, api_key_env: PATH}}\n",
        policy_file(&["other.test"])
    ));
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let body = r.json();
    let warning = body["warnings"][0].as_str().unwrap_or_default();
    // Located like an error: `<dir>/proxy.yaml:<line>:<column>: transforms[2]: ...`.
    let (location, finding) = warning.split_once(": transforms[2]: ").unwrap_or_default();
    assert!(
        finding.starts_with("judge \"late\" runs after transforms[1] (secrets)")
            && location
                .rsplit(':')
                .take(2)
                .all(|n| n.parse::<usize>().is_ok())
            && location.contains("proxy.yaml:"),
        "{r}"
    );
    px.wait_for_log(|l| l.contains("configuration warning"));
}

/// A reload's warnings name the `IRON_*` variables nothing reads, as startup's do. The
/// environment is the one the process started with, but what the config names changes: a
/// variable the first config's secret source read is unknown once a reload drops that source.
#[test]
fn reload_warns_about_iron_variables_nothing_reads() {
    require_root!();
    let net = FakeInternet::new();
    let with_source = format!(
        "{}  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: IRON_E2E_SOURCE_VAR}}\n          inject: {{header: X-Key}}\n          rules: [{{host: httpbin.test}}]\n",
        policy(&["httpbin.test"])
    );
    let mut px = Proxy::with(with_source.as_str())
        .resolver(&net)
        .env("IRON_E2E_MGMT_KEY", API_KEY)
        .env("IRON_E2E_SOURCE_VAR", "v")
        .env("IRON_PROXY_LOG_LEVL", "debug")
        .start();
    px.wait_for_log(|l| l.contains("IRON_PROXY_LOG_LEVL") && l.contains("configuration warning"));

    px.rewrite_config(policy_file(&["httpbin.test"]));
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    let warnings: Vec<String> = r.json()["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("the reload answer has warnings: {r}"))
        .iter()
        .map(|w| w.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        warnings.iter().any(|w| w
            .starts_with("IRON_PROXY_LOG_LEVL: iron-proxy reads no variable of this name")
            && w.contains("did you mean IRON_LOG_LEVEL?")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("IRON_E2E_SOURCE_VAR: iron-proxy reads no variable")),
        "the source's variable is unknown once the config no longer names it: {warnings:?}"
    );
    assert!(
        warnings.iter().all(|w| !w.contains("IRON_E2E_MGMT_KEY")),
        "the management key is named by the config: {warnings:?}"
    );
    // Logged as startup logs them: a second line, after the reload's.
    iron_proxy_tests::wait_until(Duration::from_secs(10), "the reload's warning line", || {
        let n = px
            .logs()
            .iter()
            .filter(|l| l.contains("IRON_PROXY_LOG_LEVL") && l.contains("configuration warning"))
            .count();
        (n >= 2).then_some(())
    });
}
