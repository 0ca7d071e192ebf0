//! Tests of the hmac_sign transform. Expected signatures are published test
//! vectors (RFC 4231, RFC 2202) or computed here with the RustCrypto `hmac`
//! crate, an implementation independent of the transform's aws-lc-rs.

use ::hmac::{Hmac, Mac};
use http::Request;
use serde_json::json;

use super::*;
use crate::audit::TransformTrace;
use crate::config::TransformConfig;
use crate::pipeline::{BufferedBody, PhaseOutcome};
use crate::transforms::test_support::{header, request, run, sources};

const KEY_B64: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM="; // "secret-key-for-tests"

/// The transform from a config's `config:` block (YAML, indented for a transforms[] entry).
fn transform(config: &str, env: &[(&str, &str)]) -> HmacSign {
    let text = format!(
        "tls: {{ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/ca.key}}\ntransforms:\n  - name: hmac_sign\n    config:\n{config}"
    );
    let cfg = crate::config::parse(&text, "test.yaml", &|_| None).expect("config");
    let Some(TransformConfig::HmacSign(c)) = cfg.transforms.first() else {
        panic!("not hmac_sign");
    };
    HmacSign::new(c, &sources(env)).expect("build")
}

const EXCHANGE: &str = "      timestamp: {format: unix_seconds}
      signature:
        algorithm: sha256
        key_encoding: base64
        output_encoding: base64
        message: \"{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}\"
      credentials:
        key: {type: env, var: API_KEY}
        secret: {type: env, var: API_SECRET}
      headers:
        - {name: X-ACCESS-KEY, value: \"{{.Credentials.key}}\"}
        - {name: X-ACCESS-SIGN, value: \"{{.Signature}}\"}
        - {name: X-ACCESS-TIMESTAMP, value: \"{{.Timestamp}}\"}
      rules:
        - host: api.example.com
";

const ENV: &[(&str, &str)] = &[("API_KEY", "ak-123"), ("API_SECRET", KEY_B64)];

fn flow(host: &str, method: &str, path: &str) -> Flow {
    crate::pipeline::test_flow(host, method, path)
}

fn hmac_sha256_b64(key: &[u8], message: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn signs_timestamp_method_path_and_body_and_sets_the_headers() {
    let t = transform(EXCHANGE, ENV);
    let body = r#"{"size":"0.1","side":"buy"}"#;
    let mut req = request(
        "POST",
        "https://api.example.com/api/v1/orders?symbol=BTC-USD",
        &[
            ("content-length", &body.len().to_string()),
            ("X-Access-Sign", "forged"),
        ],
        Some(body),
    );
    let mut cx = flow("api.example.com", "POST", "/api/v1/orders");
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    let ts = header(&req, "x-access-timestamp");
    let ts_n: i64 = ts.parse().expect("unix seconds");
    assert!((before..=before + 2).contains(&ts_n), "{ts}");
    let message = format!("{ts}POST/api/v1/orders?symbol=BTC-USD{body}");
    assert_eq!(
        header(&req, "x-access-sign"),
        hmac_sha256_b64(b"secret-key-for-tests", &message)
    );
    assert_eq!(
        req.headers().get_all("x-access-sign").iter().count(),
        1,
        "the client's value is replaced"
    );
    assert_eq!(header(&req, "x-access-key"), "ak-123");
    assert!(req
        .headers()
        .get("x-access-sign")
        .expect("set")
        .is_sensitive());
    assert_eq!(
        trace.annotations.get("injected"),
        Some(&json!([
            "header:X-ACCESS-KEY",
            "header:X-ACCESS-SIGN",
            "header:X-ACCESS-TIMESTAMP"
        ]))
    );
    let text = serde_json::to_string(&trace).expect("json");
    for secret in ["secret-key-for-tests", KEY_B64, "ak-123"] {
        assert!(
            !text.contains(secret),
            "the audit trace holds no credential: {text}"
        );
    }
}

#[tokio::test]
async fn published_vectors_for_every_algorithm_and_encoding() {
    // RFC 4231 test case 2 (SHA-256, SHA-512) and RFC 2202 test case 2 (SHA-1):
    // key "Jefe", data "what do ya want for nothing?".
    let cases = [
        ("sha256", "raw", "Jefe", "hex", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        ("sha512", "hex", "4a656665", "hex", "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
        ("sha1", "base64", "SmVmZQ==", "hex", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
        ("sha256", "raw", "Jefe", "base64", "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="),
    ];
    for (algorithm, key_encoding, key, output, expected) in cases {
        let config = format!(
            "      timestamp: {{format: unix_millis}}
      signature: {{algorithm: {algorithm}, key_encoding: {key_encoding}, output_encoding: {output}, message: \"what do ya want for nothing?\"}}
      credentials: {{secret: {{type: env, var: K}}}}
      headers: [{{name: X-Sig, value: \"{{{{.Signature}}}}\"}}]
      rules: [{{host: api.example.com}}]
"
        );
        let t = transform(&config, &[("K", key)]);
        let mut req = request("GET", "https://api.example.com/", &[], None);
        let (outcome, _) = run(t, &mut req, &mut flow("api.example.com", "GET", "/")).await;
        assert!(matches!(outcome, PhaseOutcome::Continue), "{algorithm}");
        assert_eq!(
            header(&req, "x-sig"),
            expected,
            "{algorithm} {key_encoding} {output}"
        );
    }
}

#[tokio::test]
async fn message_fields_and_timestamp_formats() {
    let config = "      timestamp: {format: rfc3339}
      signature: {algorithm: sha256, key_encoding: raw, output_encoding: hex, message: \"{{.Method}}|{{.Host}}|{{.Path}}|{{.Query}}|{{.Credentials.key}}|{{.Body}}\"}
      credentials: {key: {type: env, var: A}, secret: {type: env, var: B}}
      headers: [{name: X-Sig, value: \"{{.Signature}}\"}, {name: X-Ts, value: \"{{.Timestamp}}\"}]
      rules: [{host: api.example.com}]
";
    let t = transform(config, &[("A", "ak"), ("B", "k")]);
    let mut req = request("DELETE", "https://api.example.com/v1/x?a=1&b=2", &[], None);
    let (outcome, _) = run(t, &mut req, &mut flow("api.example.com", "DELETE", "/v1/x")).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    let ts = header(&req, "x-ts");
    time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k").expect("key");
    mac.update(b"DELETE|api.example.com|/v1/x|a=1&b=2|ak|");
    assert_eq!(
        header(&req, "x-sig"),
        hex::encode(mac.finalize().into_bytes())
    );
    for (format, digits) in [
        ("unix_seconds", 10),
        ("unix_millis", 13),
        ("unix_nanos", 19),
    ] {
        let now = time::OffsetDateTime::now_utc();
        let f = match format {
            "unix_seconds" => TimestampFormat::UnixSeconds,
            "unix_millis" => TimestampFormat::UnixMillis,
            _ => TimestampFormat::UnixNanos,
        };
        assert_eq!(timestamp(f, now).len(), digits, "{format}");
    }
}

#[tokio::test]
async fn requests_outside_the_rules_are_untouched() {
    let t = transform(EXCHANGE, ENV);
    let mut req = request(
        "POST",
        "https://other.example.com/",
        &[("content-length", "2")],
        Some("{}"),
    );
    let mut cx = flow("other.example.com", "POST", "/");
    let (outcome, _) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert!(req.headers().get("x-access-sign").is_none());
}

/// An earlier credential transform set one of the signature's headers: it
/// wins, and this request is not signed at all (no header of the set).
#[tokio::test]
async fn a_signature_header_an_earlier_credential_transform_set_leaves_the_request_unsigned() {
    let t = transform(EXCHANGE, ENV);
    let mut req = request(
        "POST",
        "https://api.example.com/o",
        &[("content-length", "2"), ("x-access-key", "earlier")],
        Some("{}"),
    );
    let mut cx = flow("api.example.com", "POST", "/o");
    cx.mark_credential_header(&http::HeaderName::from_static("x-access-key"));
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(
        trace.annotations.get("already_set"),
        Some(&serde_json::json!(["header:X-ACCESS-KEY"]))
    );
    assert_eq!(header(&req, "x-access-key"), "earlier");
    assert!(req.headers().get("x-access-sign").is_none());
}

/// The refusal's status and reason, and the trace's annotations.
async fn refused(t: HmacSign, mut req: Request<Body>) -> (u16, String, TransformTrace) {
    let mut cx = flow("api.example.com", "POST", "/o");
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    assert!(
        req.headers().get("x-access-sign").is_none(),
        "nothing signed"
    );
    match outcome {
        PhaseOutcome::Reject(_, r) => (r.status.as_u16(), r.reason, trace),
        PhaseOutcome::Fail(_, e) => (e.status.as_u16(), e.reason.to_string(), trace),
        _ => panic!("not refused"),
    }
}

#[tokio::test]
async fn body_integrity() {
    // Declared 10, buffered 4: truncated.
    let req = request(
        "POST",
        "https://api.example.com/o",
        &[("content-length", "10")],
        Some("abcd"),
    );
    let (status, reason, trace) = refused(transform(EXCHANGE, ENV), req).await;
    assert_eq!((status, reason.as_str()), (413, "body_truncated"));
    assert_eq!(trace.annotations.get("content_length"), Some(&json!(10)));
    assert_eq!(trace.annotations.get("buffered_length"), Some(&json!(4)));
    assert_eq!(
        trace.annotations.get("rejected"),
        Some(&json!("body_truncated"))
    );

    // Declared, but no body at all.
    let req = request(
        "POST",
        "https://api.example.com/o",
        &[("content-length", "5")],
        None,
    );
    let (status, reason, _) = refused(transform(EXCHANGE, ENV), req).await;
    assert_eq!((status, reason.as_str()), (400, "body_missing"));

    // Chunked: refused by default...
    let chunked = || {
        request(
            "POST",
            "https://api.example.com/o",
            &[("transfer-encoding", "chunked")],
            Some("hello"),
        )
    };
    let (status, reason, _) = refused(transform(EXCHANGE, ENV), chunked()).await;
    assert_eq!((status, reason.as_str()), (400, "chunked_body_not_allowed"));

    // ...and signed as buffered with allow_chunked_body.
    let t = transform(&format!("{EXCHANGE}      allow_chunked_body: true\n"), ENV);
    let mut req = chunked();
    let (outcome, _) = run(t, &mut req, &mut flow("api.example.com", "POST", "/o")).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    let ts = header(&req, "x-access-timestamp");
    assert_eq!(
        header(&req, "x-access-sign"),
        hmac_sha256_b64(b"secret-key-for-tests", &format!("{ts}POST/ohello"))
    );

    // A bodyless request without Content-Length is signed over an empty body.
    let t = transform(EXCHANGE, ENV);
    let mut req = request("GET", "https://api.example.com/o", &[], None);
    let (outcome, _) = run(t, &mut req, &mut flow("api.example.com", "GET", "/o")).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert!(!header(&req, "x-access-sign").is_empty());
}

#[tokio::test]
async fn credential_key_and_template_failures_fail_closed_without_secrets() {
    let post = || {
        request(
            "POST",
            "https://api.example.com/o",
            &[("content-length", "2")],
            Some("{}"),
        )
    };
    // A credential whose source has nothing.
    let (status, reason, trace) =
        refused(transform(EXCHANGE, &[("API_SECRET", KEY_B64)]), post()).await;
    assert_eq!((status, reason.as_str()), (502, "credential_unavailable"));
    assert_eq!(trace.annotations.get("credential"), Some(&json!("key")));

    // A key that is not base64.
    let (status, reason, trace) = refused(
        transform(
            EXCHANGE,
            &[("API_KEY", "ak"), ("API_SECRET", "not base64 !!")],
        ),
        post(),
    )
    .await;
    assert_eq!((status, reason.as_str()), (500, "key_decode_failed"));
    let text = serde_json::to_string(&trace).expect("json");
    assert!(!text.contains("not base64 !!"), "{text}");

    // A header value that cannot be a header value (a newline in the credential).
    let (status, reason, trace) = refused(
        transform(EXCHANGE, &[("API_KEY", "a\nb"), ("API_SECRET", KEY_B64)]),
        post(),
    )
    .await;
    assert_eq!((status, reason.as_str()), (500, "header_template_failed"));
    assert_eq!(
        trace.annotations.get("header"),
        Some(&json!("X-ACCESS-KEY"))
    );
    assert!(!serde_json::to_string(&trace)
        .expect("json")
        .contains("a\\nb"));
}

#[test]
fn the_transform_wants_the_body_only_where_its_rules_apply() {
    let t = transform(EXCHANGE, ENV);
    let (parts, _) = request("POST", "https://api.example.com/o", &[], None).into_parts();
    assert!(t.wants_request_body(&flow("api.example.com", "POST", "/o"), &parts));
    assert!(!t.wants_request_body(&flow("other.example.com", "POST", "/o"), &parts));
}

#[tokio::test]
async fn a_host_only_check_signs_nothing() {
    // A CONNECT target or an sni-only connection: no method, path or body.
    let t = transform(EXCHANGE, ENV);
    let mut req = request("GET", "https://api.example.com/", &[], None);
    let mut cx = flow("api.example.com", "", "");
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert!(req.headers().is_empty(), "nothing set");
    assert!(
        trace.annotations.is_empty(),
        "nothing claimed: {:?}",
        trace.annotations
    );
}

/// `.Body` is the body's bytes, as a Go string is: a binary body (gzip, protobuf) is signed
/// over exactly the bytes the upstream receives, not refused and not a lossy copy.
#[tokio::test]
async fn a_binary_body_is_signed_over_its_bytes() {
    let t = transform(EXCHANGE, ENV);
    let body: &[u8] = b"\x1f\x8b\x08\x00\xff\xfe\x00abc\x80";
    let mut req = request(
        "POST",
        "https://api.example.com/upload",
        &[("content-length", &body.len().to_string())],
        None,
    );
    let bytes = bytes::Bytes::from_static(body);
    *req.body_mut() = crate::body::full(bytes.clone());
    req.extensions_mut().insert(BufferedBody(bytes));
    let mut cx = flow("api.example.com", "POST", "/upload");
    let (outcome, _) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    let ts = header(&req, "x-access-timestamp");
    let mut message = format!("{ts}POST/upload").into_bytes();
    message.extend_from_slice(body);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"secret-key-for-tests").expect("key");
    mac.update(&message);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(header(&req, "x-access-sign"), expected);
}

/// The spec's own example (page 24): the API key and the passphrase go into
/// headers from `.Credentials`; the key `secret` only into the signature.
const PASSPHRASE_EXCHANGE: &str = "      timestamp: {format: unix_seconds}
      signature:
        algorithm: sha256
        key_encoding: base64
        output_encoding: base64
        message: \"{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}{{.Credentials.memo}}\"
      credentials:
        key: {type: env, var: API_KEY}
        secret: {type: env, var: API_SECRET}
        passphrase: {type: env, var: API_PASSPHRASE}
        memo: {type: env, var: API_MEMO}
      headers:
        - {name: X-ACCESS-KEY, value: \"{{.Credentials.key}}\"}
        - {name: X-ACCESS-SIGN, value: \"{{.Signature}}\"}
        - {name: X-ACCESS-TIMESTAMP, value: \"{{.Timestamp}}\"}
        - {name: X-ACCESS-PASSPHRASE, value: \"{{.Credentials.passphrase}}\"}
      rules:
        - host: api.example.com
";

const PASSPHRASE: &str = "passphrase-REAL-0123456789";
const PASSPHRASE_ENV: &[(&str, &str)] = &[
    ("API_KEY", "access-key-REAL-0123456789"),
    ("API_SECRET", KEY_B64),
    ("API_PASSPHRASE", PASSPHRASE),
    ("API_MEMO", "memo-only-in-the-message-0123"),
];

/// Each credential a header template put in the request is noted (its
/// value, not the header), so the response is scrubbed of it; the signature
/// (bound to the request), the key and a credential only the message uses
/// stay out of the request and are not noted.
#[tokio::test]
async fn the_credentials_put_in_headers_are_noted_not_the_signature() {
    let t = transform(PASSPHRASE_EXCHANGE, PASSPHRASE_ENV);
    let mut req = request("GET", "https://api.example.com/api/v1/accounts", &[], None);
    let mut cx = flow("api.example.com", "GET", "/api/v1/accounts");
    let (outcome, _) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(header(&req, "x-access-passphrase"), PASSPHRASE);
    let signature = header(&req, "x-access-sign");
    let noted: Vec<&str> = cx.secret_values().collect();
    assert_eq!(noted, ["access-key-REAL-0123456789", PASSPHRASE]);
    assert!(!noted.contains(&signature.as_str()), "{signature}");

    // A header that carries the key itself: then it is noted too.
    let with_key = PASSPHRASE_EXCHANGE.replace(
        "        - {name: X-ACCESS-TIMESTAMP",
        "        - {name: X-RAW-KEY, value: \"{{ .Credentials.secret | base64 }}\"}\n        - {name: X-ACCESS-TIMESTAMP",
    );
    let t = transform(&with_key, PASSPHRASE_ENV);
    let mut req = request("GET", "https://api.example.com/api/v1/accounts", &[], None);
    let mut cx = flow("api.example.com", "GET", "/api/v1/accounts");
    let (outcome, _) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(
        cx.secret_values().collect::<Vec<_>>(),
        ["access-key-REAL-0123456789", KEY_B64, PASSPHRASE]
    );

    // A request not signed (another transform set a header first) notes nothing.
    let t = transform(PASSPHRASE_EXCHANGE, PASSPHRASE_ENV);
    let mut req = request("GET", "https://api.example.com/", &[], None);
    let mut cx = flow("api.example.com", "GET", "/");
    cx.mark_credential_header(&HeaderName::from_static("x-access-key"));
    let (outcome, _) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(cx.secret_values().count(), 0);
}

/// An upstream that echoes the passphrase, in a header and in the body,
/// reaches the workload masked, the signature left as it is, and the
/// scrub's annotations in `hmac_sign`'s response entry;
/// `scrub_response_bodies: false` leaves the body alone.
#[tokio::test]
async fn an_echoed_passphrase_is_scrubbed_from_the_response() {
    for scrub_body in [true, false] {
        let config = format!("{PASSPHRASE_EXCHANGE}      scrub_response_bodies: {scrub_body}\n");
        let t = transform(&config, PASSPHRASE_ENV);
        let p = crate::pipeline::Pipeline::new(vec![Arc::new(t)]);
        let mut req = request("GET", "https://api.example.com/api/v1/accounts", &[], None);
        let mut cx = flow("api.example.com", "GET", "/api/v1/accounts");
        let mut trace = Vec::new();
        let out = p.on_request(&mut req, &mut cx, &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Continue), "{trace:?}");
        let signature = header(&req, "x-access-sign");

        let mut rsp = http::Response::new(crate::body::full(format!(
            r#"{{"headers":{{"X-Access-Passphrase":"{PASSPHRASE}","X-Access-Sign":"{signature}"}}}}"#
        )));
        rsp.headers_mut()
            .insert("x-echo-passphrase", HeaderValue::from_static(PASSPHRASE));
        rsp.headers_mut().insert(
            "x-echo-sign",
            HeaderValue::from_str(&signature).expect("value"),
        );
        let out = p.on_response(&mut rsp, &mut cx, &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Continue));
        assert_eq!(rsp.headers()["x-echo-passphrase"], "[redacted]");
        assert_eq!(rsp.headers()["x-echo-sign"], signature.as_str());
        let body = crate::body::collect(rsp.into_body(), 4096)
            .await
            .expect("body");
        let body = String::from_utf8(body.to_vec()).expect("utf-8");
        assert_eq!(
            body.contains(PASSPHRASE),
            !scrub_body,
            "{scrub_body}: {body}"
        );
        assert!(body.contains(&signature), "{body}");
        let entry = trace.last().expect("a response entry");
        assert_eq!(entry.name, "hmac_sign");
        assert_eq!(
            entry.annotations.get("response_redacted"),
            Some(&json!(["x-echo-passphrase"]))
        );
    }
}
