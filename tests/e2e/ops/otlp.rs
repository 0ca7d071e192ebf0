//! OTLP export of audit records, received by `tests/otlp_receiver.py` (the official
//! opentelemetry-proto definitions) over HTTP/protobuf and over gRPC, in plaintext and over
//! mutual TLS with gzip; and a collector that is down, which must leave requests unaffected.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use iron_proxy_tests::ports::free_port;
use iron_proxy_tests::process::{ChildGuard, Lines};
use iron_proxy_tests::*;
use serde_json::{json, Value};

/// The test OTLP receiver, killed by PID on drop.
pub(super) struct Receiver {
    http_port: u16,
    grpc_port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
    _child: ChildGuard,
    _stdout: Lines,
}

impl Receiver {
    /// The port that takes `protocol` (`grpc`, else HTTP).
    pub(super) fn port(&self, protocol: &str) -> u16 {
        if protocol == "grpc" {
            self.grpc_port
        } else {
            self.http_port
        }
    }

    pub(super) fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Receiver::start`] with the receiver's options (`--tls-cert`, ...).
    fn start_with(args: &[&str]) -> Self {
        let dir = paths::scratch_dir("otlp");
        let out = dir.path().join("records.jsonl");
        let script = paths::repo_root().join("tests").join("otlp_receiver.py");
        let mut cmd = Command::new(paths::venv_python());
        cmd.arg(&script)
            .arg("--out")
            .arg(&out)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = ChildGuard::spawn("otlp_receiver", &mut cmd);
        let stdout = child.child_mut().stdout.take().expect("piped stdout");
        let (lines, _) = Lines::capture(stdout, |_| {});
        let Some(first) = lines.wait_for(Duration::from_secs(30), |l| l.starts_with('{')) else {
            panic!(
                "otlp_receiver printed no ports (exit: {:?})",
                child.try_status()
            );
        };
        let ports: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("otlp_receiver's first line is not JSON ({e}): {first}"));
        let port = |k: &str| {
            ports[k]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("no {k} in {ports}"))
        };
        Receiver {
            http_port: port("http_port"),
            grpc_port: port("grpc_port"),
            out,
            _dir: dir,
            _child: child,
            _stdout: lines,
        }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (up to 15 s) for a record whose attributes match `pred`.
    pub(super) fn wait_for(&self, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(Duration::from_secs(15), "an OTLP log record", || {
            self.records().into_iter().find(|r| pred(&r["attributes"]))
        })
    }
}

const CONFIG: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: IRON_E2E_OTEL_SECRET}
          replace:
            proxy_value: "pk-proxy-otel"
            match_headers: ["Authorization"]
          rules:
            - host: "httpbin.test"
"#;

const SECRET: &str = "real-otel-test-secret-5150";

fn exporting_proxy(net: &FakeInternet, endpoint: &str, protocol: &str) -> ProxyProcess {
    Proxy::with(CONFIG)
        .resolver(net)
        .env("IRON_E2E_OTEL_SECRET", SECRET)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-auth=e2e%20token")
        .env("OTEL_SERVICE_NAME", "iron-proxy-e2e")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=e2e,team=egress",
        )
        .start()
}

fn export_roundtrip(protocol: &str) {
    let rx = Receiver::start();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let port = rx.port(protocol);
    let px = exporting_proxy(&net, &format!("http://127.0.0.1:{port}"), protocol);
    px.wait_for_log(|l| l.contains("otel exporter enabled") && l.contains(protocol));

    Curl::get("https://httpbin.test/anything/otel")
        .header("Authorization", "pk-proxy-otel")
        .via(&px)
        .run()
        .expect_status(200);
    assert_eq!(
        Curl::get("https://evil.test/blocked").via(&px).run().status,
        403
    );

    let allowed = rx.wait_for(|a| a["path"] == "/anything/otel");
    let transport = if protocol == "grpc" { "grpc" } else { "http" };
    assert_eq!(allowed["transport"], transport, "{allowed}");
    if protocol != "grpc" {
        assert_eq!(allowed["path"], "/v1/logs", "{allowed}");
    }
    assert_eq!(
        allowed["headers"]["x-collector-auth"], "e2e token",
        "OTEL_EXPORTER_OTLP_HEADERS sent, percent-decoded: {allowed}"
    );
    let res = &allowed["resource"];
    assert_eq!(res["service.name"], "iron-proxy-e2e", "{allowed}");
    assert_eq!(res["deployment.environment"], "e2e", "{allowed}");
    assert_eq!(res["team"], "egress", "{allowed}");
    let a = &allowed["attributes"];
    assert_eq!(a["host"], "httpbin.test", "{allowed}");
    assert_eq!(a["method"], "GET", "{allowed}");
    assert_eq!(a["action"], "allow", "{allowed}");
    assert_eq!(a["status_code"], 200, "{allowed}");
    assert!(
        a["duration_ms"].is_i64(),
        "duration_ms is a number: {allowed}"
    );
    assert_eq!(
        a["request_transforms"],
        json!([
            {"name": "allowlist", "action": "continue"},
            {"name": "secrets", "action": "continue", "annotations": {
                "swapped": [{"secret": "IRON_E2E_OTEL_SECRET", "locations": ["header:Authorization"]}]
            }}
        ]),
        "{allowed}"
    );
    // The same record as the audit line on stderr.
    let rec = px.wait_for_audit(|r| r.path() == Some("/anything/otel"));
    assert_eq!(a["request_id"].as_str(), rec.str("request_id"), "{allowed}");

    let rejected = rx.wait_for(|a| a["host"] == "evil.test");
    assert_eq!(rejected["attributes"]["action"], "reject", "{rejected}");
    assert_eq!(
        rejected["attributes"]["rejected_by"], "allowlist",
        "{rejected}"
    );
    assert_eq!(rejected["severity_text"], "WARN", "{rejected}");

    let everything = std::fs::read_to_string(&rx.out).unwrap_or_default();
    assert!(
        !everything.contains(SECRET),
        "the secret value reached the collector"
    );
}

#[test]
fn otlp_export_over_http_protobuf() {
    require_root!();
    export_roundtrip("http/protobuf");
}

#[test]
fn otlp_export_over_grpc() {
    require_root!();
    export_roundtrip("grpc");
}

/// `OTEL_EXPORTER_OTLP_LOGS_*` win over the generic variables, and the logs
/// endpoint is used as-is (no `/v1/logs` appended): the generic endpoint is a
/// port nobody listens on, so a record arrives only through the logs one.
#[test]
fn otlp_logs_variables_take_precedence_over_generic_ones() {
    require_root!();
    let rx = Receiver::start();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let dead = free_port("127.0.0.1".parse().expect("an IP"), false);
    let px = Proxy::with(CONFIG)
        .resolver(&net)
        .env("IRON_E2E_OTEL_SECRET", SECRET)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{dead}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-generic=generic-secret-value",
        )
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "not-a-number")
        .env(
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            &format!("http://127.0.0.1:{}/custom/logs", rx.http_port),
        )
        .env("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-logs=logs%20token")
        .env("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "5000")
        .start();
    let enabled = px.wait_for_log(|l| l.contains("otel exporter enabled"));
    let line = LogLine::parse(&enabled).unwrap_or_else(|| panic!("not a log line: {enabled}"));
    assert_eq!(
        line.str("endpoint_var"),
        Some("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
        "{line}"
    );
    assert_eq!(line.str("protocol"), Some("http/protobuf"), "{line}");
    assert_eq!(line.get("timeout_ms"), Some(&json!(5000)), "{line}");

    Curl::get("https://httpbin.test/anything/logs-endpoint")
        .header("Authorization", "pk-proxy-otel")
        .via(&px)
        .run()
        .expect_status(200);
    let got = rx.wait_for(|a| a["path"] == "/anything/logs-endpoint");
    assert_eq!(got["transport"], "http", "{got}");
    assert_eq!(
        got["path"], "/custom/logs",
        "the logs endpoint as-is: {got}"
    );
    assert_eq!(got["headers"]["x-logs"], "logs token", "{got}");
    assert!(
        got["headers"].get("x-generic").is_none(),
        "the logs headers replace the generic ones: {got}"
    );
    // The shadowed generic timeout is never parsed, so nothing to warn about;
    // and no header value ever reaches the proxy's own logs.
    let logs = px.logs().join("\n");
    assert!(
        !logs.contains("logs token") && !logs.contains("generic-secret-value"),
        "{logs}"
    );
}

/// A bad `OTEL_*` value no longer stops the proxy: an invalid timeout is
/// ignored with a warning (export goes on with the default), an invalid
/// endpoint turns export off with an error, and `OTEL_SDK_DISABLED=true`
/// turns it off with an info line.
#[test]
fn bad_otel_values_never_stop_the_proxy() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let dead = format!(
        "http://127.0.0.1:{}",
        free_port("127.0.0.1".parse().expect("an IP"), false)
    );
    // (variables, level of the expected line, its message)
    let cases = [
        (
            vec![(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "collector-without-scheme:4318",
            )],
            "error",
            "otel export disabled: invalid endpoint; audit records are not exported",
        ),
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &dead),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ],
            "info",
            "otel export disabled by OTEL_SDK_DISABLED=true",
        ),
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &dead),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten seconds"),
            ],
            "warn",
            "ignoring an invalid otel setting",
        ),
    ];
    for (vars, level, msg) in cases {
        let px = serving_with(&net, &vars);
        let lines = px.log_lines();
        let line = lines
            .iter()
            .find(|l| l.msg() == msg)
            .unwrap_or_else(|| panic!("{vars:?}: no {msg:?} line in {:#?}", px.logs()));
        assert_eq!(line.level(), level, "{line}");
        let enabled = lines.iter().find(|l| l.msg() == "otel exporter enabled");
        if level == "warn" {
            assert!(
                line.str("error")
                    .is_some_and(|e| e.contains("OTEL_EXPORTER_OTLP_TIMEOUT")),
                "{line}"
            );
            let enabled = enabled.unwrap_or_else(|| panic!("{vars:?}: export is off"));
            assert_eq!(
                enabled.get("timeout_ms"),
                Some(&json!(10000)),
                "the default: {enabled}"
            );
        } else {
            assert!(enabled.is_none(), "{vars:?}: export is on");
        }
    }
}

#[test]
fn a_collector_that_is_down_leaves_requests_unaffected() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    for protocol in ["http/protobuf", "grpc"] {
        // A port nobody listens on: every export fails with connection refused.
        let port = free_port("127.0.0.1".parse().expect("an IP"), false);
        let px = exporting_proxy(&net, &format!("http://127.0.0.1:{port}"), protocol);
        for i in 0..10 {
            let r = Curl::get(&format!("https://httpbin.test/anything/down-{i}"))
                .header("Authorization", "pk-proxy-otel")
                .via(&px)
                .run();
            assert_eq!(r.status, 200, "{protocol}: request {i}: {r}");
        }
        // The records were dropped and counted, and the proxy said so once.
        // Generous: under a loaded CI machine the exporter's failed attempts take a while.
        wait_until(
            Duration::from_secs(60),
            "dropped OTLP records counted",
            || {
                let m = Curl::get(&format!("http://{}/metrics", px.metrics_addr())).run();
                m.body
                    .lines()
                    .find_map(|l| l.strip_prefix("iron_proxy_otel_dropped_records_total "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| *v >= 10.0)
            },
        );
        px.wait_for_log(|l| l.contains("otel export failing"));
    }
    assert_eq!(
        up.requests().len(),
        20,
        "every request reached the upstream"
    );
}

/// Certificates for a collector on 127.0.0.1 and for the proxy as its client.
struct CollectorPki {
    _dir: tempfile::TempDir,
    collector_ca: PathBuf,
    collector: ca::Leaf,
    client_ca: PathBuf,
    client: ca::Leaf,
}

fn collector_pki() -> CollectorPki {
    let dir = paths::scratch_dir("otlp-pki");
    let collector_ca = ca::TestCa::new("otlp collector CA", &dir.path().join("collector-ca"));
    let client_ca = ca::TestCa::new("otlp client CA", &dir.path().join("client-ca"));
    CollectorPki {
        collector: collector_ca.issue(&["127.0.0.1".into()], dir.path(), "collector"),
        client: client_ca.issue_client(&["iron-proxy-e2e".into()], dir.path(), "client"),
        collector_ca: collector_ca.cert_path(),
        client_ca: client_ca.cert_path(),
        _dir: dir,
    }
}

fn text(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// The receiver serving TLS with the collector's certificate and requiring a client
/// certificate from `pki`'s client CA.
fn mutual_tls_receiver(pki: &CollectorPki) -> Receiver {
    Receiver::start_with(&[
        "--tls-cert",
        &text(&pki.collector.cert),
        "--tls-key",
        &text(&pki.collector.key),
        "--client-ca",
        &text(&pki.client_ca),
    ])
}

/// A collector that requires client certificates, on a CA of its own (not the one in the
/// proxy's `SSL_CERT_FILE`): the proxy verifies it with `OTEL_EXPORTER_OTLP_CERTIFICATE`,
/// authenticates with the client certificate and key, and sends gzip; the records arrive
/// decoded, from the proxy's certificate.
fn mutual_tls_roundtrip(protocol: &str) {
    let pki = collector_pki();
    let rx = mutual_tls_receiver(&pki);
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let port = rx.port(protocol);
    let px = Proxy::with(CONFIG)
        .resolver(&net)
        .env("IRON_E2E_OTEL_SECRET", SECRET)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("https://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &text(&pki.collector_ca))
        .env(
            "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE",
            &text(&pki.client.cert),
        )
        .env("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", &text(&pki.client.key))
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .start();
    let enabled = px.wait_for_log(|l| l.contains("otel exporter enabled"));
    let line = LogLine::parse(&enabled).unwrap_or_else(|| panic!("not a log line: {enabled}"));
    assert_eq!(line.str("compression"), Some("gzip"), "{line}");
    let tls = line.str("tls").unwrap_or_default();
    assert!(
        tls.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && tls.contains("client certificate"),
        "{line}"
    );
    assert!(
        !px.logs()
            .join("\n")
            .contains("ignoring an invalid otel setting"),
        "{:#?}",
        px.logs()
    );

    Curl::get("https://httpbin.test/anything/otel-mtls")
        .header("Authorization", "pk-proxy-otel")
        .via(&px)
        .run()
        .expect_status(200);
    let got = rx.wait_for(|a| a["path"] == "/anything/otel-mtls");
    assert_eq!(got["peer"]["tls"], true, "{got}");
    assert_eq!(got["peer"]["client_cn"], "iron-proxy-e2e", "{got}");
    assert_eq!(got["attributes"]["host"], "httpbin.test", "{got}");
    if protocol != "grpc" {
        assert_eq!(got["headers"]["content-encoding"], "gzip", "{got}");
    }
}

#[test]
fn otlp_export_over_mutual_tls_with_gzip_http_protobuf() {
    require_root!();
    mutual_tls_roundtrip("http/protobuf");
}

#[test]
fn otlp_export_over_mutual_tls_with_gzip_grpc() {
    require_root!();
    mutual_tls_roundtrip("grpc");
}

/// Without its client certificate the proxy is refused by the collector: the records are
/// counted as dropped and the warning says the collector refused the TLS handshake for want
/// of a client certificate, and which variables give one (over HTTP it used to say only
/// "network error", over gRPC "broken pipe"); requests are unaffected.
fn a_refused_tls_handshake_is_counted_and_named(protocol: &str) {
    let pki = collector_pki();
    let rx = mutual_tls_receiver(&pki);
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let port = rx.port(protocol);
    let px = Proxy::with(CONFIG)
        .resolver(&net)
        .env("IRON_E2E_OTEL_SECRET", SECRET)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("https://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &text(&pki.collector_ca))
        .start();
    Curl::get("https://httpbin.test/anything/otel-refused")
        .header("Authorization", "pk-proxy-otel")
        .via(&px)
        .run()
        .expect_status(200);
    let failing = px.wait_for_log(|l| l.contains("otel export failing"));
    let line = LogLine::parse(&failing).unwrap_or_else(|| panic!("not a log line: {failing}"));
    let error = line.str("error").unwrap_or_default();
    // (gRPC's own TLS closes without the alert that Python's OpenSSL sends over HTTP.)
    let alert = if protocol == "grpc" {
        ""
    } else {
        " (received fatal alert: CertificateRequired)"
    };
    assert!(
        error.contains(&format!(
            "the collector refused the TLS handshake{alert}: it requires a client certificate \
             and none is configured (set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and \
             OTEL_EXPORTER_OTLP_CLIENT_KEY"
        )),
        "{protocol}: {line}"
    );
    wait_until(
        Duration::from_secs(60),
        "the dropped record counted",
        || {
            let m = Curl::get(&format!("http://{}/metrics", px.metrics_addr())).run();
            m.body
                .lines()
                .find_map(|l| l.strip_prefix("iron_proxy_otel_dropped_records_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| *v >= 1.0)
        },
    );
    assert!(rx.records().is_empty(), "{:#?}", rx.records());
}

#[test]
fn a_refused_tls_handshake_is_counted_and_named_http_protobuf() {
    require_root!();
    a_refused_tls_handshake_is_counted_and_named("http/protobuf");
}

#[test]
fn a_refused_tls_handshake_is_counted_and_named_grpc() {
    require_root!();
    a_refused_tls_handshake_is_counted_and_named("grpc");
}

/// TLS files that cannot be used leave export off with an ERROR naming the variable and the
/// file (never their contents); the proxy serves all the same.
#[test]
fn unusable_tls_files_turn_export_off_and_are_named() {
    require_root!();
    let pki = collector_pki();
    let dir = paths::scratch_dir("otlp-bad");
    let bad_key = dir.path().join("client.key");
    std::fs::write(
        &bad_key,
        "-----BEGIN PRIVATE KEY-----\nKEYBYTES-MUST-NOT-LEAK!!\n",
    )
    .expect("writing the bad key");
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let cases: [(Vec<(&str, String)>, &str); 2] = [
        (
            vec![("OTEL_EXPORTER_OTLP_CLIENT_KEY", text(&pki.client.key))],
            "OTEL_EXPORTER_OTLP_CLIENT_KEY is set without OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ),
        (
            vec![
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    text(&pki.client.cert),
                ),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", text(&bad_key)),
            ],
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ),
    ];
    for (mut vars, named) in cases {
        vars.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://127.0.0.1:4318".to_string(),
        ));
        let px = serving_with(&net, &vars);
        let lines = px.log_lines();
        let line = lines
            .iter()
            .find(|l| l.msg() == "otel export disabled: the exporter could not be built")
            .unwrap_or_else(|| panic!("{vars:?}: no error line in {:#?}", px.logs()));
        assert_eq!(line.level(), "error", "{line}");
        let error = line.str("error").unwrap_or_default();
        assert!(error.contains(named), "{vars:?}: {line}");
        assert!(
            !lines.iter().any(|l| l.msg() == "otel exporter enabled"),
            "{vars:?}: export is on"
        );
        assert!(
            !px.logs().join("\n").contains("KEYBYTES"),
            "the key file's contents reached the logs"
        );
    }
}

/// A proxy started with [`CONFIG`] and the OTel variables `vars`, checked to serve a request
/// whatever the variables did to export.
fn serving_with<V: AsRef<str>>(net: &FakeInternet, vars: &[(&str, V)]) -> ProxyProcess {
    let mut p = Proxy::with(CONFIG)
        .resolver(net)
        .env("IRON_E2E_OTEL_SECRET", SECRET);
    for (k, v) in vars {
        p = p.env(k, v.as_ref());
    }
    let px = p.start();
    Curl::get("https://httpbin.test/anything/still-serving")
        .header("Authorization", "pk-proxy-otel")
        .via(&px)
        .run()
        .expect_status(200);
    px
}

/// `OTEL_EXPORTER_OTLP_LOGS_COMPRESSION="none "` (a trailing space, as a templated manifest
/// leaves it) beside a generic `gzip`: the proxy reads `none`, says so at start-up, and
/// sends uncompressed, as seen on the wire in front of the gRPC server and in the HTTP
/// request's headers. The exporter library reads the variables itself and used to ignore the
/// padded value, fall back to the generic one and compress.
#[test]
fn a_padded_compression_value_is_read_as_written_on_the_wire_too() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let dir = paths::scratch_dir("otlp-wire");
    let wire_out = dir.path().join("wire.jsonl");
    let rx = Receiver::start_with(&["--grpc-wire-out", &text(&wire_out)]);
    for protocol in ["grpc", "http/protobuf"] {
        let port = rx.port(protocol);
        let endpoint = format!("http://127.0.0.1:{port}");
        let px = serving_with(
            &net,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none "),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ],
        );
        let enabled = px.wait_for_log(|l| l.contains("otel exporter enabled"));
        let line = LogLine::parse(&enabled).unwrap_or_else(|| panic!("not a log line: {enabled}"));
        assert_eq!(line.str("compression"), Some("none"), "{protocol}: {line}");
        let path = format!("/anything/padded-{}", protocol.replace('/', "-"));
        Curl::get(&format!("https://httpbin.test{path}"))
            .header("Authorization", "pk-proxy-otel")
            .via(&px)
            .run()
            .expect_status(200);
        let got = rx.wait_for(|a| a["path"] == path.as_str());
        if protocol == "grpc" {
            let seen = wire(&wire_out);
            let exports: Vec<&Value> = seen
                .iter()
                .filter(|w| {
                    w["path"] == "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
                })
                .collect();
            assert!(!exports.is_empty(), "no Export stream in {seen:#?}");
            for e in exports {
                assert_eq!(e["compressed"], false, "compressed on the wire: {e}");
                let encoding = &e["headers"]["grpc-encoding"];
                assert!(encoding.is_null() || encoding == "identity", "{e}");
            }
        } else {
            assert!(
                got["headers"]["content-encoding"].is_null(),
                "the HTTP body was compressed: {got}"
            );
        }
    }
}

/// The receiver's `--grpc-wire-out` log: one line per gRPC request stream it relayed.
fn wire(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("wire log line"))
        .collect()
}
