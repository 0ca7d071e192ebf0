//! OTLP export to the official-proto Python receiver over HTTP and gRPC, and
//! the behaviour with no collector.

use std::time::Duration;

use serde_json::{Map, Value};

use super::*;
use crate::audit::{Mode, TransformTrace};
use crate::ops::testutil::Receiver;

fn settings(vars: &[(&str, &str)]) -> OtelSettings {
    let env = OtelSettings::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    });
    assert!(env.warnings.is_empty(), "{:?}", env.warnings);
    let OtelExport::Enabled(mut s) = env.export else {
        panic!("export not enabled: {:?}", env.export)
    };
    s.flush_interval = Duration::from_millis(50);
    s
}

fn records() -> Vec<AuditRecord> {
    let mut a = AuditRecord::new(Mode::Https, "10.0.0.5:41000".into());
    a.host = "api.example.com".into();
    a.method = "GET".into();
    a.path = "/v1/models".into();
    a.status_code = 200;
    a.duration_ms = 42;
    let mut ann = Map::new();
    ann.insert(
        "matched_rule".into(),
        Value::String("api.example.com".into()),
    );
    a.request_transforms.push(TransformTrace {
        name: "allowlist".into(),
        action: "continue",
        annotations: ann,
    });
    let mut b = AuditRecord::new(Mode::Tunnel, "10.0.0.5:41001".into());
    b.host = "evil.example".into();
    b.method = "POST".into();
    b.path = "/x".into();
    b.reject(Some("allowlist"), "not_allowlisted", 403);
    vec![a, b]
}

async fn export_and_check(protocol: &str, port_of: fn(&Receiver) -> u16) {
    let rx = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}", port_of(&rx));
    let s = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k%3D1"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=staging,team=sec",
        ),
    ]);
    let exp = OtelExporter::start(s, Counter::default()).expect("start exporter");
    let sent = records();
    for r in &sent {
        exp.observe(r);
    }
    exp.shutdown(Duration::from_secs(10)).await;
    assert_eq!(exp.dropped(), 0, "records dropped");

    let got = rx.records();
    assert_eq!(got.len(), 2, "{got:#?}");
    for g in &got {
        assert_eq!(
            g["transport"],
            if protocol == "grpc" { "grpc" } else { "http" }
        );
        if protocol != "grpc" {
            assert_eq!(g["path"], "/v1/logs", "generic endpoint + /v1/logs");
        }
        assert_eq!(g["headers"]["x-api-key"], "k=1");
        assert_eq!(g["resource"]["service.name"], "iron-proxy");
        assert_eq!(g["resource"]["deployment.environment"], "staging");
        assert_eq!(g["resource"]["team"], "sec");
        assert_eq!(g["scope"]["name"], "iron-proxy");
        assert_eq!(g["event_name"], "iron_proxy.audit");
        assert!(g["time_unix_nano"].as_u64().is_some_and(|t| t > 0));
    }
    let a = got
        .iter()
        .find(|g| g["attributes"]["host"] == "api.example.com")
        .expect("first record");
    let at = &a["attributes"];
    assert_eq!(a["severity_text"], "INFO");
    assert_eq!(a["severity_number"], 9);
    assert_eq!(a["body"], "allow GET api.example.com/v1/models 200");
    assert_eq!(at["request_id"], sent[0].request_id.as_str());
    assert_eq!(
        (&at["method"], &at["path"], &at["mode"]),
        (&"GET".into(), &"/v1/models".into(), &"https".into())
    );
    assert_eq!(
        (&at["action"], &at["status_code"], &at["duration_ms"]),
        (&"allow".into(), &200.into(), &42.into())
    );
    assert_eq!(at["remote_addr"], "10.0.0.5:41000");
    assert_eq!(at["request_transforms"][0]["name"], "allowlist");
    assert_eq!(at["request_transforms"][0]["action"], "continue");
    assert_eq!(
        at["request_transforms"][0]["annotations"]["matched_rule"],
        "api.example.com"
    );
    assert!(at.get("rejected_by").is_none());

    let b = got
        .iter()
        .find(|g| g["attributes"]["host"] == "evil.example")
        .expect("second record");
    assert_eq!(
        (&b["severity_text"], &b["severity_number"]),
        (&"WARN".into(), &13.into())
    );
    assert_eq!(b["attributes"]["rejected_by"], "allowlist");
    assert_eq!(b["attributes"]["reason"], "not_allowlisted");
    assert_eq!(b["attributes"]["status_code"], 403);
}

#[tokio::test]
async fn exports_over_http_protobuf() {
    export_and_check("http/protobuf", |r| r.http_port).await;
}

#[tokio::test]
async fn exports_over_grpc() {
    export_and_check("grpc", |r| r.grpc_port).await;
}

#[tokio::test]
async fn collector_down_never_blocks_and_counts_drops() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut s = settings(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("http://127.0.0.1:{port}"),
    )]);
    s.queue_size = 4;
    s.flush_interval = Duration::from_secs(3600);
    s.export_timeout = Duration::from_secs(2);
    let exp = OtelExporter::start(s, Counter::default()).expect("start exporter");
    let r = &records()[0];
    // On this current-thread runtime the worker cannot run between these
    // calls, so exactly `queue_size` records fit and the rest are dropped.
    for _ in 0..100 {
        exp.observe(r);
    }
    assert_eq!(exp.dropped(), 96);
    // Flushing the 4 queued ones fails (connection refused): they count too.
    exp.shutdown(Duration::from_secs(30)).await;
    assert_eq!(exp.dropped(), 100);
    exp.observe(r);
    assert_eq!(exp.dropped(), 101, "records after shutdown are dropped");
}
