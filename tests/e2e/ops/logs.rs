//! stderr as a log pipeline sees it: with the default `log.format` every line is one JSON
//! object, operational lines carry `time`/`level`/`msg` and never `action`, and audit records
//! are the lines with `action`; with `log.format: text` operational lines are text again while
//! audit records stay JSON.

use iron_proxy_tests::ports::free_port;
use iron_proxy_tests::*;
use serde_json::Value;

const ALLOWLIST: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
"#;

/// One allowed and one refused request through `px`, then SIGTERM: startup, per-request and
/// shutdown output all reach stderr. Returns stderr.
fn exercise(mut px: ProxyProcess) -> Vec<String> {
    Curl::get("https://httpbin.test/anything/logs")
        .via(&px)
        .run()
        .expect_status(200);
    assert_eq!(
        Curl::get("https://evil.test/logs").via(&px).run().status,
        403
    );
    px.wait_for_audit(|a| a.host() == Some("evil.test"));
    let status = px.stop().expect("the proxy exits on SIGTERM");
    assert!(status.success(), "{status}");
    px.stderr()
}

#[test]
fn every_stderr_line_is_a_json_object_and_audit_records_are_told_apart_by_action() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    // A collector nobody listens on: the proxy still logs that export is on.
    let otel = format!(
        "http://127.0.0.1:{}",
        free_port("127.0.0.1".parse().expect("an IP"), false)
    );
    let px = Proxy::with(ALLOWLIST)
        .resolver(&net)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otel)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .start();
    let stderr = exercise(px);
    let all = stderr.join("\n");

    let mut records = 0;
    let mut logs = Vec::new();
    for line in &stderr {
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
            panic!("a stderr line is not a JSON object: {line:?}\n--- stderr:\n{all}");
        };
        if obj.contains_key("action") {
            records += 1;
            continue;
        }
        let log = LogLine::parse(line)
            .unwrap_or_else(|| panic!("neither audit record nor log line: {line}"));
        let time = log.str("time").unwrap_or_default();
        assert!(
            time.len() == "2026-01-02T03:04:05.678Z".len() && time.ends_with('Z'),
            "time is RFC 3339 UTC with milliseconds: {line}"
        );
        assert!(
            ["trace", "debug", "info", "warn", "error"].contains(&log.level()),
            "{line}"
        );
        logs.push(log);
    }
    assert_eq!(records, 2, "one audit record per request:\n{all}");
    let audit = Audit::parse(stderr.iter().map(String::as_str));
    assert_eq!(audit.len(), 2, "{audit}");

    let ready = logs
        .iter()
        .find(|l| l.msg() == "ready")
        .unwrap_or_else(|| panic!("no ready line:\n{all}"));
    assert_eq!(ready.level(), "info", "{ready}");
    assert!(ready.str("version").is_some(), "{ready}");
    let otel_line = logs
        .iter()
        .find(|l| l.msg() == "otel exporter enabled")
        .unwrap_or_else(|| panic!("no otel line:\n{all}"));
    assert_eq!(
        otel_line.str("endpoint").map(|e| e.trim_end_matches('/')),
        Some(otel.as_str()),
        "{otel_line}"
    );
    assert_eq!(
        otel_line.str("protocol"),
        Some("http/protobuf"),
        "{otel_line}"
    );
    assert!(
        logs.iter().any(|l| l.msg() == "shutting down"),
        "shutdown is logged:\n{all}"
    );
}

#[test]
fn text_format_makes_operational_lines_text_and_keeps_audit_records_json() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(format!("{ALLOWLIST}log:\n  format: text\n"))
        .resolver(&net)
        .start();
    let stderr = exercise(px);
    let all = stderr.join("\n");

    let (json, text): (Vec<&String>, Vec<&String>) = stderr
        .iter()
        .partition(|l| serde_json::from_str::<Value>(l).is_ok());
    assert!(
        json.iter().all(|l| audit::parse_line(l).is_some()),
        "only audit records are JSON:\n{all}"
    );
    assert_eq!(json.len(), 2, "one audit record per request:\n{all}");
    assert!(
        text.iter().any(|l| l.contains(" INFO ready")),
        "the ready line is tracing's text format:\n{all}"
    );
    assert!(
        text.iter().any(|l| l.contains(" INFO shutting down")),
        "{all}"
    );
}
