//! Metrics: counting from audit records, bounded labels, and `/metrics`
//! parsed by the official Python `prometheus_client` parsers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use tokio::net::TcpListener;

use super::*;
use crate::audit::{AuditSink, TransformTrace};
use crate::ops::testutil::{request, run_python};

fn record(mode: Mode, action: Action, reason: Option<&str>, ms: u64) -> AuditRecord {
    let mut r = AuditRecord::new(mode, "127.0.0.1:1".into());
    r.host = "secret-host.example".into();
    r.path = "/private/path".into();
    r.duration_ms = ms;
    r.duration_us = ms * 1000;
    r.request_transforms.push(TransformTrace {
        name: "allowlist".into(),
        action: "continue",
        annotations: Map::new(),
    });
    match action {
        Action::Allow => {}
        Action::Reject => r.reject(Some("allowlist"), reason.unwrap_or("x"), 403),
        Action::Error => r.fail(reason.unwrap_or("x"), "detail".into(), 502),
    }
    r
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(out))
"#;

const PARSE_OPENMETRICS: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "samples": len(f.samples)})
print(json.dumps(out))
"#;

fn family<'a>(families: &'a [Value], name: &str) -> &'a Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("family {name} missing from {families:#?}"))
}

fn sample_value(f: &Value, sample: &str, labels: &[(&str, &str)]) -> f64 {
    f["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .find(|s| s["name"] == sample && labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no sample {sample}{labels:?} in {f:#}"))
}

#[test]
fn observer_counts_each_record_once() {
    let m = Arc::new(Metrics::new());
    let sink = AuditSink::to_writer(Box::new(std::io::sink())).expect("sink");
    sink.add_observer(m.observer());
    sink.emit(&record(Mode::Http, Action::Allow, None, 20));
    sink.emit(&record(Mode::Http, Action::Allow, None, 20));
    sink.emit(&record(
        Mode::Https,
        Action::Error,
        Some("upstream_timeout"),
        1500,
    ));
    let text = m.encode_prometheus();
    for source in ["env", "aws_sm", "aws_ssm", "1password", "1password_connect"] {
        assert!(
            text.contains(&format!(
                "iron_proxy_secret_resolution_failures_total{{source=\"{source}\"}} 0\n"
            )),
            "every source type starts at zero: {text}"
        );
    }
    assert!(
        text.contains("iron_proxy_requests_total{action=\"allow\",mode=\"http\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("iron_proxy_requests_total{action=\"error\",mode=\"https\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("iron_proxy_upstream_errors_total{reason=\"upstream_timeout\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "iron_proxy_transform_decisions_total{transform=\"allowlist\",action=\"continue\"} 3\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("secret-host") && !text.contains("/private/path"),
        "{text}"
    );
}

#[test]
fn request_durations_keep_their_microseconds() {
    let m = Arc::new(Metrics::new());
    let sink = AuditSink::to_writer(Box::new(std::io::sink())).expect("sink");
    sink.add_observer(m.observer());
    // 1.7 ms: in whole milliseconds it would fall into the 1 ms bucket.
    let mut r = record(Mode::Http, Action::Allow, None, 1);
    r.duration_us = 1_700;
    sink.emit(&r);
    let text = m.encode_prometheus();
    let bucket = |le: &str| {
        format!("iron_proxy_request_duration_seconds_bucket{{le=\"{le}\",action=\"allow\",mode=\"http\"}} ")
    };
    assert!(text.contains(&format!("{}0\n", bucket("0.001"))), "{text}");
    assert!(text.contains(&format!("{}1\n", bucket("0.005"))), "{text}");
    assert!(
        text.contains(
            "iron_proxy_request_duration_seconds_sum{action=\"allow\",mode=\"http\"} 0.0017\n"
        ),
        "{text}"
    );
}

#[test]
fn free_text_labels_are_bounded() {
    let m = Metrics::new();
    for i in 0..(MAX_LABEL_VALUES + 10) {
        m.secret_resolution_failed(&format!("source{i}"));
    }
    m.secret_resolution_failed(&"x".repeat(500));
    let text = m.encode_prometheus();
    let series = text
        .lines()
        .filter(|l| l.starts_with("iron_proxy_secret_resolution_failures_total{"))
        .count();
    assert_eq!(series, MAX_LABEL_VALUES + 1, "{text}");
    // The five known source types hold five of the values from the start.
    assert!(text.contains("source=\"other\"} 16"), "{text}");
}

#[test]
fn counter_source_names_are_checked() {
    let m = Metrics::new();
    let empty = || -> CounterSourceFn { Box::new(Vec::new) };
    assert!(m
        .register_counter_source("Bad-Name", "h", &[], empty())
        .is_err());
    assert!(m
        .register_counter_source("x_total", "h", &[], empty())
        .is_err());
    assert!(m
        .register_counter_source("requests", "h", &[], empty())
        .is_err());
    assert!(m
        .register_counter_source("fine", "h", &["ok"], empty())
        .is_ok());
    assert!(m
        .register_counter_source("fine", "h", &["ok"], empty())
        .is_err());
}

#[tokio::test]
async fn scrape_parses_with_official_parser_and_readiness_flips() {
    let m = Arc::new(Metrics::new());
    let dns = Arc::new(AtomicU64::new(7));
    let dns2 = dns.clone();
    m.register_dns_queries(Box::new(move || {
        vec![
            (vec!["intercepted".into()], dns2.load(Ordering::Relaxed)),
            (vec!["passthrough".into()], 2),
        ]
    }))
    .expect("dns source");
    m.register_cert_cache(Box::new(|| {
        vec![(vec!["hit".into()], 3), (vec!["mint".into()], 1)]
    }))
    .expect("cert source");
    m.register_cert_mint_waits(Box::new(|| vec![(vec![], 5)]))
        .expect("mint waits source");
    m.register_cert_mints_waiting(Box::new(|| vec![(vec![], 2)]))
        .expect("mints waiting source");
    m.register_intercept_events(Box::new(|| vec![(vec!["redirected".into()], 9)]))
        .expect("intercept source");
    m.record_request(&record(
        Mode::Tunnel,
        Action::Reject,
        Some("not_allowlisted"),
        3,
    ));
    m.record_request(&record(
        Mode::Transparent,
        Action::Error,
        Some("deny_cidr"),
        1,
    ));
    m.observe_transform("allowlist", false, Duration::from_micros(300));
    m.observe_transform("allowlist", true, Duration::from_micros(30));
    m.secret_resolution_failed("env");
    m.reload_finished(true);
    m.reload_finished(false);
    m.set_ca_expiry(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000));
    m.otel_dropped_counter().inc_by(4);

    let ready = Arc::new(AtomicBool::new(false));
    let ready2 = ready.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        m.clone(),
        Arc::new(move || ready2.load(Ordering::Acquire)),
        async move {
            let _ = stop_rx.await;
        },
    ));

    assert_eq!(request(addr, "GET", "/healthz", &[]).await.status, 200);
    assert_eq!(request(addr, "GET", "/readyz", &[]).await.status, 503);
    ready.store(true, Ordering::Release);
    assert_eq!(request(addr, "GET", "/readyz", &[]).await.status, 200);
    ready.store(false, Ordering::Release);
    assert_eq!(request(addr, "GET", "/readyz", &[]).await.status, 503);

    dns.store(8, Ordering::Relaxed);
    let rsp = request(addr, "GET", "/metrics", &[]).await;
    assert_eq!(rsp.status, 200);
    assert_eq!(
        rsp.headers[http::header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let fams: Vec<Value> =
        serde_json::from_str(&run_python(PARSE, &rsp.body)).expect("parser output");
    let expect_types = [
        ("iron_proxy_requests", "counter"),
        ("iron_proxy_request_duration_seconds", "histogram"),
        ("iron_proxy_upstream_errors", "counter"),
        ("iron_proxy_transform_decisions", "counter"),
        ("iron_proxy_transform_duration_seconds", "histogram"),
        ("iron_proxy_secret_resolution_failures", "counter"),
        ("iron_proxy_reloads", "counter"),
        ("iron_proxy_last_reload_success_timestamp_seconds", "gauge"),
        ("iron_proxy_last_reload_successful", "gauge"),
        ("iron_proxy_ca_expiry_timestamp_seconds", "gauge"),
        ("iron_proxy_otel_dropped_records", "counter"),
        ("iron_proxy_build_info", "gauge"),
        ("iron_proxy_dns_queries", "counter"),
        ("iron_proxy_cert_cache", "counter"),
        ("iron_proxy_cert_mint_waits", "counter"),
        ("iron_proxy_cert_mints_waiting", "gauge"),
        ("iron_proxy_intercept_events", "counter"),
    ];
    for (name, ty) in expect_types {
        assert_eq!(family(&fams, name)["type"], ty, "type of {name}");
    }
    for f in &fams {
        let name = f["name"].as_str().expect("name");
        assert!(
            name.starts_with("iron_proxy_") || name.starts_with("process_"),
            "unprefixed family {name}"
        );
        assert_ne!(f["type"], "unknown", "untyped family {name}");
    }
    // The standard process family, unprefixed, as every exporter names it.
    for (name, ty) in [
        ("process_cpu_seconds", "counter"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(family(&fams, name)["type"], ty, "type of {name}");
    }
    let v = |f: &str, s: &str, l: &[(&str, &str)]| sample_value(family(&fams, f), s, l);
    let ue = (
        "iron_proxy_upstream_errors",
        "iron_proxy_upstream_errors_total",
    );
    assert_eq!(v(ue.0, ue.1, &[("reason", "deny_cidr")]), 1.0);
    let reqs = [("action", "reject"), ("mode", "tunnel")];
    assert_eq!(
        v("iron_proxy_requests", "iron_proxy_requests_total", &reqs),
        1.0
    );
    let dur = "iron_proxy_request_duration_seconds";
    assert_eq!(v(dur, &format!("{dur}_count"), &[("mode", "tunnel")]), 1.0);
    assert_eq!(
        v(
            dur,
            &format!("{dur}_bucket"),
            &[("mode", "tunnel"), ("le", "0.005")]
        ),
        1.0
    );
    let td = "iron_proxy_transform_duration_seconds";
    for phase in ["request", "response"] {
        assert_eq!(
            v(
                td,
                &format!("{td}_count"),
                &[("transform", "allowlist"), ("phase", phase)]
            ),
            1.0
        );
    }
    let rj = ("iron_proxy_rejections", "iron_proxy_rejections_total");
    assert_eq!(v(rj.0, rj.1, &[("reason", "not_allowlisted")]), 1.0);
    let rs = ("iron_proxy_responses", "iron_proxy_responses_total");
    assert_eq!(v(rs.0, rs.1, &[("code", "4xx")]), 1.0, "the 403");
    assert_eq!(v(rs.0, rs.1, &[("code", "5xx")]), 1.0, "the 502");
    assert_eq!(
        v(rs.0, rs.1, &[("code", "2xx")]),
        0.0,
        "at zero from the start"
    );
    let dns_f = "iron_proxy_dns_queries";
    assert_eq!(
        v(
            dns_f,
            "iron_proxy_dns_queries_total",
            &[("outcome", "intercepted")]
        ),
        8.0
    );
    assert_eq!(
        v(
            "iron_proxy_cert_cache",
            "iron_proxy_cert_cache_total",
            &[("result", "mint")]
        ),
        1.0
    );
    let waits = "iron_proxy_cert_mint_waits";
    assert_eq!(v(waits, &format!("{waits}_total"), &[]), 5.0);
    let waiting = "iron_proxy_cert_mints_waiting";
    assert_eq!(v(waiting, waiting, &[]), 2.0);
    let ie = ("event", "redirected");
    assert_eq!(
        v(
            "iron_proxy_intercept_events",
            "iron_proxy_intercept_events_total",
            &[ie]
        ),
        9.0
    );
    assert_eq!(
        v(
            "iron_proxy_reloads",
            "iron_proxy_reloads_total",
            &[("result", "failure")]
        ),
        1.0
    );
    let ca = "iron_proxy_ca_expiry_timestamp_seconds";
    assert_eq!(v(ca, ca, &[]), 2e9);
    let last = "iron_proxy_last_reload_success_timestamp_seconds";
    assert!(v(last, last, &[]) > 1.7e9);
    let ok = "iron_proxy_last_reload_successful";
    assert_eq!(v(ok, ok, &[]), 0.0, "the last reload (the second) failed");
    let od = "iron_proxy_otel_dropped_records";
    assert_eq!(v(od, "iron_proxy_otel_dropped_records_total", &[]), 4.0);
    let bi = "iron_proxy_build_info";
    assert_eq!(v(bi, bi, &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);

    // A scraper that asks for OpenMetrics gets it, and the strict parser accepts it.
    let accept = [("accept", "application/openmetrics-text; version=1.0.0")];
    let rsp = request(addr, "GET", "/metrics", &accept).await;
    assert!(rsp.headers[http::header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("application/openmetrics-text"));
    assert!(rsp.body.ends_with("# EOF\n"));
    let om: Vec<Value> =
        serde_json::from_str(&run_python(PARSE_OPENMETRICS, &rsp.body)).expect("om output");
    assert_eq!(family(&om, "iron_proxy_requests")["type"], "counter");

    let _ = stop_tx.send(());
    server.await.expect("join").expect("server");
}

#[tokio::test]
async fn start_on_all_interfaces_accepts_ipv4() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, task) = start(
        "[::]:0".parse().expect("addr"),
        Arc::new(Metrics::new()),
        Arc::new(|| true),
        async move {
            let _ = rx.await;
        },
    )
    .expect("start");
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
    assert_eq!(request(v4, "GET", "/healthz", &[]).await.status, 200);
    let _ = tx.send(());
    task.await.expect("join").expect("serve");
}

/// The data plane's figures, read at scrape time from a [`crate::traffic::Traffic`]:
/// the official parsers (classic and OpenMetrics) take them, with the types, names
/// and label values the operations guide documents, and every series exists at zero.
#[test]
fn traffic_families_parse_with_their_types_and_values() {
    use crate::traffic::{ConnectOutcome, SpliceKind, Traffic, UpstreamProtocol};
    let t: &'static Traffic = Box::leak(Box::new(Traffic::new()));
    let m = Metrics::with_traffic(t);
    let zero = m.encode_prometheus();
    let fams: Vec<Value> = serde_json::from_str(&run_python(PARSE, &zero)).expect("parser output");
    let v = |fams: &[Value], fam: &str, sample: &str, labels: &[(&str, &str)]| {
        sample_value(family(fams, fam), sample, labels)
    };
    for (kind, dir) in [
        ("websocket", "sent"),
        ("websocket", "received"),
        ("passthrough", "sent"),
        ("passthrough", "received"),
    ] {
        let labels = [("kind", kind), ("direction", dir)];
        let f = "iron_proxy_spliced_bytes";
        assert_eq!(v(&fams, f, "iron_proxy_spliced_bytes_total", &labels), 0.0);
    }
    for listener in ["http", "https", "tunnel", "transparent"] {
        let f = "iron_proxy_client_connections";
        assert_eq!(v(&fams, f, f, &[("listener", listener)]), 0.0);
    }
    for reason in ["connection_limit", "client_connection_limit"] {
        let f = "iron_proxy_rejections";
        assert_eq!(
            v(
                &fams,
                f,
                "iron_proxy_rejections_total",
                &[("reason", reason)]
            ),
            0.0
        );
    }

    t.request_body_sent(1000);
    t.response_body_sent(20_000);
    t.response_body_sent(5);
    t.body_redacted(3);
    t.spliced_counter(SpliceKind::WebSocket, true)
        .fetch_add(12, Ordering::Relaxed);
    t.spliced_counter(SpliceKind::Passthrough, false)
        .fetch_add(4096, Ordering::Relaxed);
    t.connected(ConnectOutcome::Success, Duration::from_micros(700));
    t.connected(ConnectOutcome::Success, Duration::from_millis(30));
    t.connected(ConnectOutcome::TlsFailed, Duration::from_millis(2));
    t.response_head(Duration::from_millis(120));
    let _open = t.upstream_opened(UpstreamProtocol::Http2);

    let text = m.encode_prometheus();
    let fams: Vec<Value> = serde_json::from_str(&run_python(PARSE, &text)).expect("parser output");
    for (name, kind) in [
        ("iron_proxy_request_body_bytes", "counter"),
        ("iron_proxy_response_body_bytes", "counter"),
        ("iron_proxy_spliced_bytes", "counter"),
        ("iron_proxy_upstream_connect_duration_seconds", "histogram"),
        (
            "iron_proxy_upstream_response_header_duration_seconds",
            "histogram",
        ),
        ("iron_proxy_upstream_connections", "gauge"),
        ("iron_proxy_response_body_redactions", "counter"),
    ] {
        assert_eq!(family(&fams, name)["type"], kind, "{name}");
    }
    let rq = "iron_proxy_request_body_bytes";
    assert_eq!(
        v(&fams, rq, "iron_proxy_request_body_bytes_total", &[]),
        1000.0
    );
    let rs = "iron_proxy_response_body_bytes";
    assert_eq!(
        v(&fams, rs, "iron_proxy_response_body_bytes_total", &[]),
        20_005.0
    );
    let br = "iron_proxy_response_body_redactions";
    assert_eq!(v(&fams, br, &format!("{br}_total"), &[]), 3.0);
    let sp = "iron_proxy_spliced_bytes";
    let spliced = |kind, dir| {
        v(
            &fams,
            sp,
            "iron_proxy_spliced_bytes_total",
            &[("kind", kind), ("direction", dir)],
        )
    };
    assert_eq!(spliced("websocket", "sent"), 12.0);
    assert_eq!(spliced("websocket", "received"), 0.0);
    assert_eq!(spliced("passthrough", "received"), 4096.0);
    let cd = "iron_proxy_upstream_connect_duration_seconds";
    let ok = [("outcome", "success")];
    assert_eq!(v(&fams, cd, &format!("{cd}_count"), &ok), 2.0);
    assert_eq!(
        v(
            &fams,
            cd,
            &format!("{cd}_bucket"),
            &[("outcome", "success"), ("le", "0.001")]
        ),
        1.0
    );
    assert_eq!(
        v(
            &fams,
            cd,
            &format!("{cd}_bucket"),
            &[("outcome", "success"), ("le", "0.05")]
        ),
        2.0
    );
    assert_eq!(
        v(
            &fams,
            cd,
            &format!("{cd}_bucket"),
            &[("outcome", "success"), ("le", "+Inf")]
        ),
        2.0
    );
    assert!((v(&fams, cd, &format!("{cd}_sum"), &ok) - 0.0307).abs() < 1e-9);
    assert_eq!(
        v(
            &fams,
            cd,
            &format!("{cd}_count"),
            &[("outcome", "tls_failed")]
        ),
        1.0
    );
    assert_eq!(
        v(
            &fams,
            cd,
            &format!("{cd}_count"),
            &[("outcome", "connect_failed")]
        ),
        0.0
    );
    let rh = "iron_proxy_upstream_response_header_duration_seconds";
    assert_eq!(v(&fams, rh, &format!("{rh}_count"), &[]), 1.0);
    assert_eq!(v(&fams, rh, &format!("{rh}_bucket"), &[("le", "0.1")]), 0.0);
    assert_eq!(
        v(&fams, rh, &format!("{rh}_bucket"), &[("le", "0.25")]),
        1.0
    );
    let uc = "iron_proxy_upstream_connections";
    assert_eq!(v(&fams, uc, uc, &[("protocol", "http2")]), 1.0);
    assert_eq!(v(&fams, uc, uc, &[("protocol", "http1")]), 0.0);

    let om: Vec<Value> =
        serde_json::from_str(&run_python(PARSE_OPENMETRICS, &m.encode_openmetrics()))
            .expect("om output");
    assert_eq!(
        family(&om, "iron_proxy_upstream_connect_duration_seconds")["type"],
        "histogram"
    );
    assert_eq!(family(&om, "iron_proxy_spliced_bytes")["type"], "counter");
}

/// A gauge read at scrape time: its one series without labels, or none at all
/// (a limit not set), never `name{}`.
#[test]
fn a_gauge_source_without_labels_has_one_plain_series_or_none() {
    let m = Metrics::with_traffic(Box::leak(Box::new(crate::traffic::Traffic::new())));
    let set = Arc::new(AtomicU64::new(0));
    let read = set.clone();
    m.register_gauge_source(
        "max_connections",
        "cap",
        &[],
        Box::new(move || match read.load(Ordering::Relaxed) {
            0 => vec![],
            n => vec![(vec![], n)],
        }),
    )
    .expect("gauge source");
    let text = m.encode_prometheus();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("iron_proxy_max_connections")),
        "no cap, no series:\n{text}"
    );
    set.store(4096, Ordering::Relaxed);
    let text = m.encode_prometheus();
    assert!(
        text.lines().any(|l| l == "iron_proxy_max_connections 4096"),
        "{text}"
    );
    let fams: Vec<Value> = serde_json::from_str(&run_python(PARSE, &text)).expect("parser output");
    assert_eq!(family(&fams, "iron_proxy_max_connections")["type"], "gauge");
    assert_eq!(
        m.register_gauge_source("spliced_bytes", "taken", &[], Box::new(Vec::new))
            .err()
            .map(|e| e.to_string()),
        Some("invalid or duplicate metric name \"spliced_bytes\"".into()),
        "the data plane's names are taken"
    );
}
