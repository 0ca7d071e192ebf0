//! The headers `OTEL_EXPORTER_OTLP_*HEADERS` put on the wire, seen by the OTLP receiver
//! (`tests/otlp_receiver.py`, the official opentelemetry-proto definitions, grpcio for gRPC)
//! over HTTP/protobuf and gRPC: exactly the ones the proxy's start-up line names, with the
//! values parsed as its warnings say. The exporter library reads the variables too, with other
//! rules, and used to send an entry the proxy had skipped.

use iron_proxy_tests::*;
use serde_json::{json, Map, Value};

use super::otlp::Receiver;

const CONFIG: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
"#;

/// Every header value here is a secret the proxy must never log.
const SECRETS: &[&str] = &[
    "generic-secret-1",
    "generic-secret-2",
    "logs secret",
    "logs-secret-3",
    "bad-secret-4",
    "traces-secret-5",
    "metrics-secret-6",
];

/// The `x-t-*` headers (the test's own) of a received record.
fn test_headers(record: &Value) -> Map<String, Value> {
    record["headers"]
        .as_object()
        .unwrap_or_else(|| panic!("headers of {record}"))
        .iter()
        .filter(|(k, _)| k.starts_with("x-t-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn headers_sent_are_those_logged(protocol: &str) {
    let rx = Receiver::start();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let port = rx.port(protocol);
    let px = Proxy::with(CONFIG)
        .resolver(&net)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        // Replaced whole by the logs variable: neither entry is sent.
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-t-generic=generic-secret-1,x-t-shared=generic-secret-2",
        )
        // Entry 3 is not UTF-8 once percent-decoded: skipped, with a warning naming it.
        // Entry 4 has an empty value: sent empty.
        .env(
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            "x-t-good=logs%20secret,x-t-shared=logs-secret-3,x-t-bad=%FF%FEbad-secret-4,x-t-empty=",
        )
        // Other signals' variables: iron-proxy exports logs only.
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "x-t-traces=traces-secret-5",
        )
        .env(
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            "x-t-metrics=metrics-secret-6",
        )
        .start();
    let enabled = px.wait_for_log(|l| l.contains("otel exporter enabled"));
    let line = LogLine::parse(&enabled).unwrap_or_else(|| panic!("not a log line: {enabled}"));
    assert_eq!(
        line.str("headers"),
        Some("x-t-good,x-t-shared,x-t-empty"),
        "{line}"
    );
    px.wait_for_log(|l| {
        l.contains("OTEL_EXPORTER_OTLP_LOGS_HEADERS")
            && l.contains("value of entry 3 is not UTF-8 after percent-decoding; entry skipped")
    });

    Curl::get("https://httpbin.test/anything/otel-headers")
        .via(&px)
        .run()
        .expect_status(200);
    let got = rx.wait_for(|a| a["path"] == "/anything/otel-headers");
    let transport = if protocol == "grpc" { "grpc" } else { "http" };
    assert_eq!(got["transport"], transport, "{got}");
    assert_eq!(
        Value::Object(test_headers(&got)),
        json!({"x-t-good": "logs secret", "x-t-shared": "logs-secret-3", "x-t-empty": ""}),
        "the collector got the headers the start-up line names, and only those: {got}"
    );

    let logs = px.logs().join("\n");
    for secret in SECRETS {
        assert!(
            !logs.contains(secret),
            "a header value ({secret}) reached the proxy's logs:\n{logs}"
        );
    }
}

#[test]
fn otlp_http_sends_exactly_the_headers_it_logs() {
    require_root!();
    headers_sent_are_those_logged("http/protobuf");
}

#[test]
fn otlp_grpc_sends_exactly_the_headers_it_logs() {
    require_root!();
    headers_sent_are_those_logged("grpc");
}
