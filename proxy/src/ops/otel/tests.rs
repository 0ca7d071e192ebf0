//! OTLP export to the official-proto Python receiver over HTTP and gRPC, and
//! the behaviour with no collector; TLS, mutual TLS and compression in
//! `tests/transport.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use super::*;
use crate::audit::{Mode, TransformTrace};
use crate::ops::testutil::Receiver;

pub(super) mod pki;
mod transport;

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

/// Settings exporting over HTTP to a loopback port nobody listens on.
fn dead_collector_settings() -> OtelSettings {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    settings(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("http://127.0.0.1:{port}"),
    )])
}

#[tokio::test]
async fn collector_down_never_blocks_and_counts_drops() {
    let mut s = dead_collector_settings();
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

/// A record with a captured request body of `body_len` bytes.
/// An exporter sending to `rx` over gRPC.
fn grpc_exporter(rx: &Receiver) -> Arc<OtelExporter> {
    let s = settings(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{}", rx.grpc_port),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ]);
    OtelExporter::start(s, Counter::default()).expect("start exporter")
}

fn with_body(body_len: usize) -> AuditRecord {
    let mut r = records().remove(0);
    let mut capture = Map::new();
    capture.insert("request_body".into(), Value::String("b".repeat(body_len)));
    r.extra
        .insert("body_capture".into(), Value::Object(capture));
    r
}

fn test_logger() -> opentelemetry_sdk::logs::SdkLogger {
    use opentelemetry::logs::LoggerProvider as _;
    SdkLoggerProvider::builder().build().logger("test")
}

#[test]
fn a_record_over_the_request_limit_is_cut_and_says_so() {
    use opentelemetry::logs::AnyValue;
    let logger = test_logger();
    let mut r = with_body(5 << 20);
    r.path = format!("/{}", "p".repeat(60_000));
    let max = settings::MAX_REQUEST_BYTES;
    let c =
        convert::log_record(&logger, &r, std::time::SystemTime::now(), max).expect("cut to fit");
    assert!(c.size <= max, "{} > {max}", c.size);
    let attr = |k: &str| {
        c.record
            .attributes_iter()
            .find(|(key, _)| key.as_str() == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(attr("iron_proxy.truncated"), Some(AnyValue::Boolean(true)));
    assert_eq!(
        attr("iron_proxy.truncated_attributes"),
        Some(AnyValue::ListAny(Box::new(vec![AnyValue::String(
            "body_capture".into()
        )]))),
        "only the body was cut: the path fits"
    );
    assert_eq!(
        attr("path"),
        Some(AnyValue::String(r.path.clone().into())),
        "the path is whole"
    );
    assert_eq!(
        attr("request_id"),
        Some(AnyValue::String(r.request_id.clone().into()))
    );

    // A small record is left alone.
    let small = convert::log_record(&logger, &with_body(100), std::time::SystemTime::now(), max)
        .expect("small record");
    assert!(small
        .record
        .attributes_iter()
        .all(|(k, _)| !k.as_str().starts_with("iron_proxy.")));
    assert!(
        small.size < 4096,
        "estimate {} for a small record",
        small.size
    );

    // Many short strings cannot be cut: the record is refused.
    let mut many = with_body(10);
    let lots: Vec<Value> = (0..200_000)
        .map(|i| Value::String(format!("{i:08}")))
        .collect();
    many.extra.insert("lots".into(), Value::Array(lots));
    assert!(
        convert::log_record(&logger, &many, std::time::SystemTime::now(), max).is_err(),
        "a record of short strings over the limit is refused"
    );
}

/// 600 records of 16 KiB bodies (the default body_capture cap) are ~10 MB in
/// one batch of 512: over the receiver's 4 MiB gRPC limit, the whole batch
/// would be refused. Split by size, every record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_under_the_grpc_message_limit() {
    let rx = Receiver::start();
    let exp = grpc_exporter(&rx);
    let r = with_body(16 << 10);
    for _ in 0..600 {
        exp.observe(&r);
    }
    exp.shutdown(Duration::from_secs(60)).await;
    assert_eq!(exp.dropped(), 0, "records dropped");
    assert_eq!(rx.records().len(), 600);
}

/// One record of 5 MiB (a large body_capture cap) is cut to fit one request
/// instead of failing with its whole batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_is_exported_cut() {
    let rx = Receiver::start();
    let exp = grpc_exporter(&rx);
    let small = records().remove(1);
    exp.observe(&small);
    exp.observe(&with_body(5 << 20));
    exp.observe(&small);
    exp.shutdown(Duration::from_secs(60)).await;
    assert_eq!(exp.dropped(), 0, "records dropped");
    let got = rx.records();
    assert_eq!(got.len(), 3, "all three arrive");
    let big = got
        .iter()
        .find(|g| g["attributes"]["iron_proxy.truncated"] == true)
        .expect("the big record, marked as cut");
    let body = big["attributes"]["body_capture"]["request_body"]
        .as_str()
        .expect("cut body");
    assert!(
        body.len() < 4 << 20 && body.len() > 3 << 20,
        "{}",
        body.len()
    );
}

/// With a collector that does not answer, the queue holds at most its byte
/// bound of records, whatever their count.
#[tokio::test]
async fn the_queue_is_bounded_in_bytes() {
    let mut s = dead_collector_settings();
    s.max_queue_bytes = 1 << 20;
    s.flush_interval = Duration::from_secs(3600);
    s.export_timeout = Duration::from_secs(2);
    let exp = OtelExporter::start(s, Counter::default()).expect("start exporter");
    let r = with_body(100 << 10);
    let per = convert::queued_size(&r);
    assert!(per > 100 << 10, "the body counts: {per}");
    // The worker cannot run between these calls (current-thread runtime).
    for _ in 0..50 {
        exp.observe(&r);
    }
    let fit = (1 << 20) / per;
    assert_eq!(
        exp.dropped(),
        50 - fit as u64,
        "{fit} records of {per} bytes fit"
    );
    exp.shutdown(Duration::from_secs(30)).await;
    assert_eq!(exp.dropped(), 50, "the queued ones fail to export");
}

#[tokio::test]
async fn an_empty_queue_takes_a_record_over_its_byte_bound() {
    let mut s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")]);
    s.max_queue_bytes = 1 << 20;
    s.flush_interval = Duration::from_secs(3600);
    let exp = OtelExporter::start(s, Counter::default()).expect("start exporter");
    exp.observe(&with_body(2 << 20));
    assert_eq!(exp.dropped(), 0, "queued");
    exp.observe(&records()[0]);
    assert_eq!(exp.dropped(), 1, "the queue is over its bound now");
}

/// A collector that takes `delay` per export and notes each request's record count.
#[derive(Debug, Clone, Default)]
struct SlowCollector {
    sizes: Arc<Mutex<Vec<usize>>>,
    delay: Duration,
}

impl LogExporter for SlowCollector {
    async fn export(
        &self,
        batch: opentelemetry_sdk::logs::LogBatch<'_>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.sizes.lock().expect("sizes").push(batch.iter().count());
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
}

/// Exports that take longer than the flush interval: the backlog still goes
/// out in full batches (a fixed tick, due on return, sent a handful of
/// records about every other time).
#[tokio::test(start_paused = true)]
async fn a_slow_collector_gets_full_batches() {
    let mut s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")]);
    s.flush_interval = Duration::from_secs(1);
    let collector = SlowCollector {
        delay: Duration::from_secs(2),
        ..SlowCollector::default()
    };
    let exp = OtelExporter::spawn(&s, collector.clone(), Arc::default(), Counter::default());
    let r = &records()[0];
    for _ in 0..4000 {
        exp.observe(r);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let sizes = collector.sizes.lock().expect("sizes").clone();
    assert_eq!(sizes.iter().sum::<usize>(), 4000, "{sizes:?}");
    assert!(
        sizes[..sizes.len() - 1].iter().all(|n| *n == 512),
        "every request but the last is full: {sizes:?}"
    );
    assert_eq!(exp.dropped(), 0);
}

/// A collector that answers OK with `partial_success` rejecting every
/// record: they are lost, so they count as dropped.
async fn rejected_records_count_as_dropped(protocol: &str, port_of: fn(&Receiver) -> u16) {
    let rx = Receiver::start_with(&["--reject-all"]);
    let s = settings(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{}", port_of(&rx)),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
    ]);
    let exp = OtelExporter::start(s, Counter::default()).expect("start exporter");
    for r in &records() {
        exp.observe(r);
    }
    exp.shutdown(Duration::from_secs(10)).await;
    assert_eq!(rx.records().len(), 2, "the collector got them");
    assert_eq!(exp.dropped(), 2, "and rejected them ({protocol})");
}

#[tokio::test]
async fn rejected_records_count_as_dropped_over_http() {
    rejected_records_count_as_dropped("http/protobuf", |r| r.http_port).await;
}

#[tokio::test]
async fn rejected_records_count_as_dropped_over_grpc() {
    rejected_records_count_as_dropped("grpc", |r| r.grpc_port).await;
}

/// A collector that never answers.
#[derive(Debug, Clone, Default)]
struct HungCollector;

impl LogExporter for HungCollector {
    async fn export(
        &self,
        _batch: opentelemetry_sdk::logs::LogBatch<'_>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        std::future::pending().await
    }
}

/// The shutdown flush gives up after its timeout: the records it could not
/// deliver count as dropped (once, even when the export times out later).
#[tokio::test(start_paused = true)]
async fn records_lost_at_shutdown_count_as_dropped() {
    let mut s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")]);
    s.export_timeout = Duration::from_secs(60);
    s.max_batch = 4;
    let exp = OtelExporter::spawn(&s, HungCollector, Arc::default(), Counter::default());
    let r = &records()[0];
    for _ in 0..10 {
        exp.observe(r);
    }
    exp.shutdown(Duration::from_secs(5)).await;
    assert_eq!(exp.dropped(), 10, "all ten were lost");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(exp.dropped(), 10, "and counted once");
}
