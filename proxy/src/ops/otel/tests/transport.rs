//! The transport variables against the real receiver: TLS verified with
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, mutual TLS with the client certificate
//! and key, gzip compression as it is on the wire, and `INSECURE` for a gRPC
//! endpoint without a scheme. Over HTTP the receiver's TLS is OpenSSL's
//! (Python `ssl`), over gRPC gRPC's own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::pki::{pki, Pki, CLIENT_CN};
use super::*;
use crate::secrets::tests::TraceCapture;

/// The variables, with the paths as text.
fn vars<'a>(pairs: &[(&'a str, &PathBuf)]) -> Vec<(&'a str, String)> {
    pairs
        .iter()
        .map(|(k, p)| (*k, p.display().to_string()))
        .collect()
}

/// Exports the two test records to `endpoint` with `extra` variables; returns
/// the exporter after its shutdown flush.
async fn export(endpoint: &str, protocol: &str, extra: &[(&str, String)]) -> Arc<OtelExporter> {
    let mut all: Vec<(&str, &str)> = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        // One attempt, quickly: a failure is the finding, not something to retry.
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
    ];
    all.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let exp = OtelExporter::start(settings(&all), Counter::default()).expect("start exporter");
    for r in &records() {
        exp.observe(r);
    }
    exp.shutdown(Duration::from_secs(20)).await;
    exp
}

fn receiver(args: &[String]) -> Receiver {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Receiver::start_with(&args)
}

fn port(rx: &Receiver, protocol: &str) -> u16 {
    if protocol == "grpc" {
        rx.grpc_port
    } else {
        rx.http_port
    }
}

/// Both records arrived, over TLS, from `client_cn` (None: no client certificate).
fn assert_delivered(rx: &Receiver, exp: &OtelExporter, client_cn: Option<&str>, what: &str) {
    assert_eq!(exp.dropped(), 0, "{what}: records dropped");
    let got = rx.records();
    assert_eq!(got.len(), 2, "{what}: {got:#?}");
    for g in &got {
        assert_eq!(g["peer"]["tls"], true, "{what}: {g}");
        assert_eq!(
            g["peer"]["client_cn"],
            client_cn.map_or(Value::Null, Value::from),
            "{what}: {g}"
        );
    }
}

/// Nothing arrived, both records were counted, and the `otel export
/// failing` line says each of `says`.
fn assert_failed(
    rx: &Receiver,
    exp: &OtelExporter,
    logs: &TraceCapture,
    what: &str,
    says: &[&str],
) {
    assert_eq!(exp.dropped(), 2, "{what}: both records counted as dropped");
    assert!(rx.records().is_empty(), "{what}: {:#?}", rx.records());
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("otel export failing"))
        .unwrap_or_else(|| panic!("{what}: no failure line in {text}"));
    for s in says {
        assert!(line.contains(s), "{what}: the reason says {s:?}: {line}");
    }
}

/// `OTEL_EXPORTER_OTLP_CERTIFICATE` is the CA the collector is verified
/// with: the export succeeds with it, over both protocols.
#[tokio::test]
async fn the_certificate_file_verifies_the_collector() {
    let pki = pki();
    let rx = receiver(&pki.receiver_args(false));
    for protocol in ["http/protobuf", "grpc"] {
        let endpoint = format!("https://localhost:{}", port(&rx, protocol));
        let exp = export(
            &endpoint,
            protocol,
            &vars(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.ca)]),
        )
        .await;
        assert_delivered(&rx, &exp, None, protocol);
        std::fs::remove_file(&rx.out).expect("clearing the receiver's records");
    }
}

/// Without the CA (the system roots do not hold it) nothing is delivered,
/// every record is counted, and the warning says it was the certificate,
/// where the HTTP exporter said only "network error".
#[tokio::test]
async fn without_the_ca_export_fails_and_says_it_was_the_certificate() {
    let pki = pki();
    let rx = receiver(&pki.receiver_args(false));
    let logs = TraceCapture::start();
    let exp = export(
        &format!("https://localhost:{}", rx.http_port),
        "http/protobuf",
        &[],
    )
    .await;
    assert_failed(
        &rx,
        &exp,
        &logs,
        "http",
        &[
            "network error: TLS: the collector's certificate failed verification",
            "UnknownIssuer",
        ],
    );
}

/// The same over gRPC, to an endpoint without a scheme: TLS is the default
/// (`OTEL_EXPORTER_OTLP_INSECURE` unset), and the collector is verified.
#[tokio::test]
async fn a_grpc_endpoint_without_a_scheme_uses_verified_tls() {
    let pki = pki();
    let rx = receiver(&pki.receiver_args(false));
    let logs = TraceCapture::start();
    let endpoint = format!("localhost:{}", rx.grpc_port);
    let exp = export(&endpoint, "grpc", &[]).await;
    assert_failed(
        &rx,
        &exp,
        &logs,
        "grpc without the CA",
        &["invalid peer certificate: UnknownIssuer"],
    );

    let exp = export(
        &endpoint,
        "grpc",
        &vars(&[("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", &pki.ca)]),
    )
    .await;
    assert_delivered(&rx, &exp, None, "grpc with the CA");
}

/// `OTEL_EXPORTER_OTLP_INSECURE=true` makes a scheme-less gRPC endpoint plaintext.
#[tokio::test]
async fn insecure_makes_a_grpc_endpoint_without_a_scheme_plaintext() {
    let rx = Receiver::start();
    let exp = export(
        &format!("127.0.0.1:{}", rx.grpc_port),
        "grpc",
        &[("OTEL_EXPORTER_OTLP_INSECURE", "TRUE".to_string())],
    )
    .await;
    assert_eq!(exp.dropped(), 0, "records dropped");
    let got = rx.records();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0]["peer"]["tls"], false, "{}", got[0]);
}

/// A collector that requires client certificates takes the export with
/// the client certificate and key, and refuses it without them.
async fn mutual_tls(protocol: &str) {
    let pki = pki();
    let rx = receiver(&pki.receiver_args(true));
    let endpoint = format!("https://localhost:{}", port(&rx, protocol));
    let exp = export(
        &endpoint,
        protocol,
        &vars(&[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.ca),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &pki.client_cert),
            ("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", &pki.client_key),
        ]),
    )
    .await;
    assert_delivered(&rx, &exp, Some(CLIENT_CN), protocol);
    std::fs::remove_file(&rx.out).expect("clearing the receiver's records");

    let logs = TraceCapture::start();
    let exp = export(
        &endpoint,
        protocol,
        &vars(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.ca)]),
    )
    .await;
    // Over gRPC tonic's text is what it met first, often the write that
    // failed as the collector hung up ("broken pipe", "connection closed"):
    // both protocols say what the collector wants, and which variables give
    // it. (gRPC's own TLS closes without the alert Python's OpenSSL sends.)
    assert_failed(
        &rx,
        &exp,
        &logs,
        protocol,
        &[
            "the collector refused the TLS handshake",
            "it requires a client certificate and none is configured (set \
             OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ],
    );
}

#[tokio::test]
async fn mutual_tls_over_http() {
    mutual_tls("http/protobuf").await;
}

#[tokio::test]
async fn mutual_tls_over_grpc() {
    mutual_tls("grpc").await;
}

/// `gzip` over HTTP: the body arrives with `Content-Encoding: gzip` and
/// decodes to the records.
#[tokio::test]
async fn gzip_over_http_arrives_compressed() {
    let rx = Receiver::start();
    let exp = export(
        &format!("http://127.0.0.1:{}", rx.http_port),
        "http/protobuf",
        &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_string())],
    )
    .await;
    assert_eq!(exp.dropped(), 0);
    let got = rx.records();
    assert_eq!(got.len(), 2, "{got:#?}");
    for g in &got {
        assert_eq!(g["headers"]["content-encoding"], "gzip", "{g}");
    }
    assert!(got
        .iter()
        .any(|g| g["attributes"]["host"] == "api.example.com"));
}

/// The receiver's wire log: one line per gRPC request stream.
fn wire(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("wire log line"))
        .collect()
}

/// `gzip` over gRPC: the request carries `grpc-encoding: gzip` and its
/// message the Compressed-Flag, as read off the wire in front of the gRPC
/// server, which decodes it; with `none`, neither (so the observation is
/// not an artefact of the relay).
#[tokio::test]
async fn gzip_over_grpc_arrives_compressed() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (value, compressed) in [("gzip", true), ("none", false)] {
        let wire_out = dir.path().join(format!("{value}.jsonl"));
        let rx = Receiver::start_with(&["--grpc-wire-out", &wire_out.display().to_string()]);
        let exp = export(
            &format!("http://127.0.0.1:{}", rx.grpc_port),
            "grpc",
            &[("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", value.to_string())],
        )
        .await;
        assert_eq!(exp.dropped(), 0, "{value}");
        assert_eq!(rx.records().len(), 2, "{value}: decoded");
        let seen = wire(&wire_out);
        let export = seen
            .iter()
            .find(|w| w["path"] == "/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            .unwrap_or_else(|| panic!("{value}: no Export stream in {seen:#?}"));
        assert_eq!(export["compressed"], compressed, "{value}: {export}");
        let encoding = &export["headers"]["grpc-encoding"];
        if compressed {
            assert_eq!(encoding, "gzip", "{export}");
        } else {
            assert!(encoding.is_null() || encoding == "identity", "{export}");
        }
    }
}

/// A TLS file that cannot be used keeps the exporter from being built; the
/// error names the variable and the file.
#[tokio::test]
async fn an_unusable_tls_file_keeps_export_off() {
    let pki: Pki = pki();
    let s = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:4318"),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            &pki.client_cert.display().to_string(),
        ),
    ]);
    let err =
        OtelExporter::start(s, Counter::default()).expect_err("a certificate without its key");
    let text = crate::error_chain(&err);
    assert!(
        text.contains(
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set without OTEL_EXPORTER_OTLP_CLIENT_KEY"
        ),
        "{text}"
    );
}
