//! Tests of the aws_auth transform. Signatures themselves are verified by a real
//! verifier in the e2e suite (moto with IAM authentication); these check the parsing of
//! the workload's signature, the gating, what is replaced and what is recorded.

use http::Request;
use serde_json::json;
use sha2::Digest as _;

use super::*;
use crate::audit::TransformTrace;
use crate::config::TransformConfig;
use crate::pipeline::PhaseOutcome;
use crate::transforms::test_support::{header, request, run, sources};

const REAL_ID: &str = "AKIAREALREALREAL0001";
const REAL_SECRET: &str = "real/secret/access/key/0123456789abcdefgh";
const PLACEHOLDER_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=0123abcd";

pub(super) const ENV: &[(&str, &str)] =
    &[("AK", REAL_ID), ("SK", REAL_SECRET), ("TOK", "session-tok")];

pub(super) fn transform(extra: &str, env: &[(&str, &str)]) -> AwsAuth {
    let text = format!(
        "tls: {{ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/ca.key}}\n\
         transforms:\n  - name: aws_auth\n    config:\n\
         \x20     access_key_id: {{type: env, var: AK}}\n\
         \x20     secret_access_key: {{type: env, var: SK}}\n\
         \x20     rules: [{{host: \"*.amazonaws.com\"}}]\n{extra}"
    );
    let cfg = crate::config::parse(&text, "test.yaml", &|_| None).expect("config");
    let Some(TransformConfig::AwsAuth(c)) = cfg.transforms.first() else {
        panic!("not aws_auth");
    };
    AwsAuth::new(c, &sources(env))
}

fn flow(method: &str) -> Flow {
    crate::pipeline::test_flow("sts.us-east-1.amazonaws.com", method, "/")
}

fn signed_post(body: &str) -> Request<Body> {
    request(
        "POST",
        "/",
        &[
            ("host", "sts.us-east-1.amazonaws.com"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-amz-date", "20250101T000000Z"),
            ("x-amz-security-token", "placeholder-token"),
            ("x-amz-content-sha256", "placeholder-hash"),
            ("authorization", PLACEHOLDER_AUTH),
            ("content-length", &body.len().to_string()),
        ],
        Some(body),
    )
}

#[tokio::test]
async fn re_signs_with_the_real_key_over_the_workloads_signed_headers() {
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let mut req = signed_post(body);
    let (outcome, trace) = run(transform("", ENV), &mut req, &mut flow("POST")).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    let auth = header(&req, "authorization");
    let today = time::OffsetDateTime::now_utc();
    let date = format!(
        "{:04}{:02}{:02}",
        today.year(),
        u8::from(today.month()),
        today.day()
    );
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={REAL_ID}/{date}/us-east-1/sts/aws4_request, \
             SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature="
        )),
        "{auth}"
    );
    assert!(
        !auth.contains("0123abcd"),
        "the placeholder signature is gone"
    );
    assert!(req
        .headers()
        .get("authorization")
        .expect("set")
        .is_sensitive());
    assert_eq!(
        header(&req, "x-amz-content-sha256"),
        hex::encode(sha2::Sha256::digest(body.as_bytes()))
    );
    assert!(header(&req, "x-amz-date").starts_with(&date));
    assert_eq!(
        header(&req, "x-amz-security-token"),
        "",
        "no token configured: the placeholder one is dropped"
    );
    assert_eq!(
        trace.annotations.get("injected"),
        Some(&json!([
            "header:Authorization",
            "header:X-Amz-Date",
            "header:X-Amz-Content-Sha256"
        ]))
    );
    assert_eq!(trace.annotations.get("service"), Some(&json!("sts")));
    assert_eq!(trace.annotations.get("region"), Some(&json!("us-east-1")));
    let text = serde_json::to_string(&trace).expect("json");
    assert!(
        !text.contains(REAL_SECRET) && !text.contains(REAL_ID),
        "{text}"
    );
}

#[tokio::test]
async fn a_session_token_and_an_unsigned_payload() {
    let t = transform(
        "      session_token: {type: env, var: TOK}\n      unsigned_payload: true\n",
        ENV,
    );
    // unsigned_payload: no body is wanted, and none is hashed.
    let (parts, _) = signed_post("x=1").into_parts();
    assert!(!t.wants_request_body(&flow("POST"), &parts));
    let mut req = signed_post("x=1");
    let (outcome, trace) = run(t, &mut req, &mut flow("POST")).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(header(&req, "x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
    assert_eq!(header(&req, "x-amz-security-token"), "session-tok");
    assert!(req
        .headers()
        .get("x-amz-security-token")
        .expect("set")
        .is_sensitive());
    assert!(header(&req, "authorization").contains("x-amz-security-token"));
    assert_eq!(
        trace.annotations.get("injected"),
        Some(&json!([
            "header:Authorization",
            "header:X-Amz-Date",
            "header:X-Amz-Content-Sha256",
            "header:X-Amz-Security-Token"
        ]))
    );
}

#[test]
fn the_scope_comes_from_the_header_or_a_presigned_url() {
    let req = signed_post("");
    let found = inbound(&req).expect("scope");
    assert_eq!(
        found,
        Inbound {
            region: "us-east-1".into(),
            service: "sts".into(),
            signed_headers: vec!["content-type".into(), "host".into(), "x-amz-date".into()],
            presigned: false,
        }
    );
    let req = request(
        "GET",
        "/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAX%2F20250101%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=abc&versionId=3",
        &[],
        None,
    );
    let found = inbound(&req).expect("presigned scope");
    assert_eq!(
        (
            found.region.as_str(),
            found.service.as_str(),
            found.presigned
        ),
        ("eu-west-1", "s3", true)
    );
    assert_eq!(
        without_presign(req.uri().query().unwrap_or("")),
        "versionId=3",
        "only the signature parameters go"
    );
    for bad in [
        request("GET", "/", &[], None),
        request("GET", "/", &[("authorization", "Bearer x")], None),
        request(
            "GET",
            "/",
            &[(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=A/B/C, SignedHeaders=host",
            )],
            None,
        ),
        request(
            "GET",
            "/",
            &[(
                "authorization",
                "AWS4-ECDSA-P256-SHA256 Credential=A/20250101/s3/aws4_request",
            )],
            None,
        ),
    ] {
        assert!(inbound(&bad).is_err(), "{:?}", bad.headers());
    }
}

/// A pre-signed GET signed `ago` seconds ago for `expires` seconds.
fn presigned(ago: i64, expires: u64) -> Request<Body> {
    let t = time::OffsetDateTime::now_utc() - time::Duration::seconds(ago);
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let date = t.format(format).expect("formatted");
    request(
        "GET",
        &format!(
            "/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAX%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=abc&versionId=3"
        ),
        &[("host", "bucket.s3.amazonaws.com")],
        None,
    )
}

#[tokio::test]
async fn a_presigned_url_is_re_signed_in_headers_without_its_signature_parameters() {
    let mut req = presigned(30, 60);
    let mut cx = crate::pipeline::test_flow("bucket.s3.amazonaws.com", "GET", "/bucket/key");
    let (outcome, _) = run(transform("", ENV), &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(req.uri().to_string(), "/bucket/key?versionId=3");
    assert!(header(&req, "authorization").contains("/us-east-1/s3/aws4_request"));
}

#[tokio::test]
async fn an_expired_presigned_url_is_refused_not_renewed() {
    let mut req = presigned(120, 60);
    let mut cx = crate::pipeline::test_flow("bucket.s3.amazonaws.com", "GET", "/bucket/key");
    // No credential is needed to refuse it.
    let (outcome, trace) = run(transform("", &[]), &mut req, &mut cx).await;
    let PhaseOutcome::Reject(_, r) = outcome else {
        panic!("not refused");
    };
    assert_eq!(
        (r.status.as_u16(), r.reason.as_str()),
        (403, "presigned_url_expired")
    );
    assert!(r.message.contains("expired"), "{}", r.message);
    assert!(trace.annotations.contains_key("expired"), "{trace:?}");
    assert_eq!(header(&req, "authorization"), "", "not re-signed");
}

/// An S3 streaming upload as the workload's SDK sends it: `payload` in
/// `x-amz-content-sha256`, the aws-chunked `body` streaming (not buffered).
fn streaming_put(payload: &str, body: &str, decoded: &str) -> Request<Body> {
    let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/s3/aws4_request, SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-trailer, Signature=0123abcd";
    let mut req = request(
        "PUT",
        "/bucket/key",
        &[
            ("host", "s3.us-east-1.amazonaws.com"),
            ("content-encoding", "aws-chunked"),
            ("transfer-encoding", "chunked"),
            ("x-amz-content-sha256", payload),
            ("x-amz-date", "20250101T000000Z"),
            ("x-amz-decoded-content-length", decoded),
            ("x-amz-trailer", "x-amz-checksum-crc32"),
            ("authorization", auth),
        ],
        None,
    );
    *req.body_mut() = crate::body::full(body.to_string());
    req
}

fn s3_flow() -> Flow {
    crate::pipeline::test_flow("s3.us-east-1.amazonaws.com", "PUT", "/bucket/key")
}

async fn body_of(req: Request<Body>) -> Result<String, crate::body::BoxError> {
    use http_body_util::BodyExt as _;
    let bytes = req.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(bytes.to_vec()).expect("text"))
}

const UNSIGNED_BODY: &str = "5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";

#[tokio::test]
async fn an_unsigned_trailer_upload_streams_untouched_under_re_signed_headers() {
    let t = transform("", ENV);
    let req = streaming_put("STREAMING-UNSIGNED-PAYLOAD-TRAILER", UNSIGNED_BODY, "5");
    let (parts, _) = req.into_parts();
    assert!(
        !t.wants_request_body(&s3_flow(), &parts),
        "a streaming upload is not buffered"
    );
    let mut req = streaming_put("STREAMING-UNSIGNED-PAYLOAD-TRAILER", UNSIGNED_BODY, "5");
    let (outcome, trace) = run(t, &mut req, &mut s3_flow()).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(
        header(&req, "x-amz-content-sha256"),
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    );
    let auth = header(&req, "authorization");
    assert!(
        auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={REAL_ID}/")),
        "{auth}"
    );
    assert!(
        auth.contains("SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-trailer,"),
        "{auth}"
    );
    for (h, v) in [
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "5"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
    ] {
        assert_eq!(header(&req, h), v);
    }
    assert_eq!(
        trace.annotations.get("payload"),
        Some(&json!("STREAMING-UNSIGNED-PAYLOAD-TRAILER"))
    );
    assert_eq!(body_of(req).await.expect("body"), UNSIGNED_BODY);
}

#[tokio::test]
async fn a_signed_chunk_upload_gets_chunk_signatures_of_the_real_key() {
    let placeholder = "f".repeat(64);
    let body = format!(
        "5;chunk-signature={placeholder}\r\nhello\r\n0;chunk-signature={placeholder}\r\n\r\n"
    );
    let mut req = streaming_put("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", &body, "5");
    let (outcome, _) = run(transform("", ENV), &mut req, &mut s3_flow()).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(
        header(&req, "x-amz-content-sha256"),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    );
    // The first chunk's signature chains from the header signature, with the
    // real key, at the request's X-Amz-Date.
    let auth = header(&req, "authorization");
    let seed = auth
        .rsplit("Signature=")
        .next()
        .expect("signature")
        .to_string();
    let date = header(&req, "x-amz-date");
    let time = presign::amz_date(&date).expect("X-Amz-Date");
    let mut signer = chunked::ChunkSigner::new(REAL_SECRET, time, "us-east-1", "s3", seed);
    let expected = format!(
        "5;chunk-signature={}\r\nhello\r\n0;chunk-signature={}\r\n\r\n",
        signer.chunk(b"hello"),
        signer.chunk(b"")
    );
    assert_eq!(body_of(req).await.expect("re-signed"), expected);

    // Malformed framing fails the body with the transform's refusal.
    let mut req = streaming_put(
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "5\r\nhello\r\n0\r\n\r\n",
        "5",
    );
    let (outcome, _) = run(transform("", ENV), &mut req, &mut s3_flow()).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    let err = body_of(req).await.expect_err("refused");
    let r = err
        .downcast_ref::<crate::body::BodyRefused>()
        .expect("a refusal");
    assert_eq!((r.by, r.reason), ("aws_auth", "aws_chunked_malformed"));
}

#[tokio::test]
async fn streaming_refusals() {
    for payload in [
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
        "STREAMING-SOMETHING-NEW",
    ] {
        let mut req = streaming_put(payload, UNSIGNED_BODY, "5");
        let (outcome, trace) = run(transform("", ENV), &mut req, &mut s3_flow()).await;
        let PhaseOutcome::Reject(_, r) = outcome else {
            panic!("{payload} not refused");
        };
        assert_eq!(
            (r.status.as_u16(), r.reason.as_str()),
            (400, "unsupported_streaming_payload")
        );
        assert!(r.message.contains(payload), "{}", r.message);
        assert_eq!(trace.annotations.get("payload"), Some(&json!(payload)));
    }
    let mut req = streaming_put("STREAMING-UNSIGNED-PAYLOAD-TRAILER", UNSIGNED_BODY, "five");
    let (outcome, _) = run(transform("", ENV), &mut req, &mut s3_flow()).await;
    let PhaseOutcome::Reject(_, r) = outcome else {
        panic!("not refused");
    };
    assert_eq!(
        (r.status.as_u16(), r.reason.as_str()),
        (400, "aws_chunked_malformed")
    );

    // A plain chunked body (no STREAMING-* mode) is still refused without
    // allow_chunked_body, and signed as buffered with it.
    let chunked = |req: &mut Request<Body>| {
        req.headers_mut().remove("content-length");
        req.headers_mut()
            .insert("transfer-encoding", "chunked".parse().expect("value"));
    };
    let mut req = signed_post("Action=GetCallerIdentity");
    chunked(&mut req);
    let (status, reason, _) = refused(transform("", ENV), req).await;
    assert_eq!((status, reason.as_str()), (400, "chunked_body_not_allowed"));
    let mut req = signed_post("Action=GetCallerIdentity");
    chunked(&mut req);
    let t = transform("      allow_chunked_body: true\n", ENV);
    let (outcome, _) = run(t, &mut req, &mut flow("POST")).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(
        header(&req, "x-amz-content-sha256"),
        hex::encode(sha2::Sha256::digest(b"Action=GetCallerIdentity"))
    );
}

/// The refusal's status and reason, and the trace.
async fn refused(t: AwsAuth, mut req: Request<Body>) -> (u16, String, TransformTrace) {
    let (outcome, trace) = run(t, &mut req, &mut flow("POST")).await;
    assert!(
        header(&req, "authorization").is_empty()
            || header(&req, "authorization") == PLACEHOLDER_AUTH,
        "not re-signed"
    );
    match outcome {
        PhaseOutcome::Reject(_, r) => (r.status.as_u16(), r.reason, trace),
        PhaseOutcome::Fail(_, e) => (e.status.as_u16(), e.reason.to_string(), trace),
        _ => panic!("not refused"),
    }
}

#[tokio::test]
async fn refusals() {
    let unsigned = request("POST", "/", &[("content-length", "0")], Some(""));
    let (status, reason, _) = refused(transform("", ENV), unsigned).await;
    assert_eq!((status, reason.as_str()), (400, "missing_sigv4"));

    let t = transform("      allowed_regions: [eu-west-1]\n", ENV);
    let (status, reason, trace) = refused(t, signed_post("")).await;
    assert_eq!((status, reason.as_str()), (403, "region_not_allowed"));
    assert_eq!(trace.annotations.get("region"), Some(&json!("us-east-1")));

    let t = transform("      allowed_services: [s3, bedrock]\n", ENV);
    let (status, reason, trace) = refused(t, signed_post("")).await;
    assert_eq!((status, reason.as_str()), (403, "service_not_allowed"));
    assert_eq!(trace.annotations.get("service"), Some(&json!("sts")));

    // Gating comes before credentials: no source is asked (there is none here).
    let t = transform("      allowed_services: [s3]\n", &[]);
    let (_, reason, _) = refused(t, signed_post("")).await;
    assert_eq!(reason, "service_not_allowed");

    let (status, reason, trace) = refused(transform("", &[("AK", REAL_ID)]), signed_post("")).await;
    assert_eq!((status, reason.as_str()), (502, "credential_unavailable"));
    assert_eq!(
        trace.annotations.get("credential"),
        Some(&json!("secret_access_key"))
    );

    let mut truncated = signed_post("abc");
    truncated
        .headers_mut()
        .insert("content-length", "10".parse().expect("value"));
    let (status, reason, _) = refused(transform("", ENV), truncated).await;
    assert_eq!((status, reason.as_str()), (413, "body_truncated"));
}

/// An earlier credential transform set Authorization: it wins, and the
/// request is not re-signed (the placeholder signature stays).
#[tokio::test]
async fn an_authorization_an_earlier_credential_transform_set_is_left_alone() {
    let t = transform("", ENV);
    let mut req = signed_post("Action=GetCallerIdentity");
    let mut cx = flow("POST");
    cx.mark_credential_header(&http::header::AUTHORIZATION);
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(
        trace.annotations.get("already_set"),
        Some(&serde_json::json!(["header:Authorization"]))
    );
    assert_eq!(header(&req, "authorization"), PLACEHOLDER_AUTH);
}

#[tokio::test]
async fn a_host_only_check_is_left_alone() {
    let t = transform("", ENV);
    let mut req = request("GET", "/", &[], None);
    let mut cx = crate::pipeline::test_flow("sts.us-east-1.amazonaws.com", "", "");
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert!(trace.annotations.is_empty());
}

#[test]
fn signing_urls_leave_default_ports_out() {
    let mut cx = crate::pipeline::test_flow("s3.amazonaws.com", "GET", "/");
    assert_eq!(
        signing_url(&cx, "/b/k?x=1"),
        "https://s3.amazonaws.com/b/k?x=1"
    );
    cx.dest.port = 8443;
    assert_eq!(signing_url(&cx, "/"), "https://s3.amazonaws.com:8443/");
    cx.dest.tls = false;
    cx.dest.port = 80;
    assert_eq!(signing_url(&cx, "/"), "http://s3.amazonaws.com/");
}

/// The session token put in the request is noted, so the response is
/// scrubbed of it (an echoed `X-Amz-Security-Token`, in a header and in the
/// body); the signature and the access key id are not noted. The same for a
/// pre-signed URL, re-signed in headers. `scrub_response_bodies: false`
/// leaves the body alone.
#[tokio::test]
async fn the_session_token_is_scrubbed_from_the_response() {
    const TOKEN: &str = "FwoGZXIvYXdzEBYaDSessionTokenREAL0123456789";
    let env = &[("AK", REAL_ID), ("SK", REAL_SECRET), ("TOK", TOKEN)];
    for scrub_body in [true, false] {
        let extra = format!(
            "      session_token: {{type: env, var: TOK}}\n      scrub_response_bodies: {scrub_body}\n"
        );
        let p = crate::pipeline::Pipeline::new(vec![std::sync::Arc::new(transform(&extra, env))]);
        let mut req = signed_post("Action=GetCallerIdentity");
        let mut cx = flow("POST");
        let mut trace = Vec::new();
        let out = p.on_request(&mut req, &mut cx, &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Continue), "{trace:?}");
        assert_eq!(header(&req, "x-amz-security-token"), TOKEN);
        assert_eq!(cx.secret_values().collect::<Vec<_>>(), [TOKEN]);

        let auth = header(&req, "authorization");
        let mut rsp = http::Response::new(crate::body::full(format!(
            r#"{{"x-amz-security-token":"{TOKEN}","authorization":"{auth}"}}"#
        )));
        rsp.headers_mut().insert(
            "x-echo-x-amz-security-token",
            http::HeaderValue::from_static(TOKEN),
        );
        rsp.headers_mut().insert(
            "x-echo-authorization",
            http::HeaderValue::from_str(&auth).expect("value"),
        );
        let out = p.on_response(&mut rsp, &mut cx, &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Continue));
        assert_eq!(rsp.headers()["x-echo-x-amz-security-token"], "[redacted]");
        assert_eq!(rsp.headers()["x-echo-authorization"], auth.as_str());
        let body = crate::body::collect(rsp.into_body(), 4096)
            .await
            .expect("body");
        let body = String::from_utf8(body.to_vec()).expect("utf-8");
        assert_eq!(body.contains(TOKEN), !scrub_body, "{scrub_body}: {body}");
        assert!(body.contains(&auth) && body.contains(REAL_ID), "{body}");
        let entry = trace.last().expect("a response entry");
        assert_eq!(entry.name, "aws_auth");
        assert_eq!(
            entry.annotations.get("response_redacted"),
            Some(&json!(["x-echo-x-amz-security-token"]))
        );
    }

    // A pre-signed URL: the token goes into the re-signed request's headers.
    let extra = "      session_token: {type: env, var: TOK}\n";
    let mut req = presigned(30, 60);
    let mut cx = crate::pipeline::test_flow("bucket.s3.amazonaws.com", "GET", "/bucket/key");
    let (outcome, _) = run(transform(extra, env), &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(header(&req, "x-amz-security-token"), TOKEN);
    assert_eq!(cx.secret_values().collect::<Vec<_>>(), [TOKEN]);

    // No session token: nothing is noted (the key id and signature are not).
    let mut req = signed_post("Action=GetCallerIdentity");
    let mut cx = flow("POST");
    let (outcome, _) = run(transform("", ENV), &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(cx.secret_values().count(), 0);
}
