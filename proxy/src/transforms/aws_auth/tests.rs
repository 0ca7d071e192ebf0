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

const ENV: &[(&str, &str)] = &[("AK", REAL_ID), ("SK", REAL_SECRET), ("TOK", "session-tok")];

fn transform(extra: &str, env: &[(&str, &str)]) -> AwsAuth {
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

#[tokio::test]
async fn a_presigned_url_is_re_signed_in_headers_without_its_signature_parameters() {
    let mut req = request(
        "GET",
        "/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAX%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=abc&versionId=3",
        &[("host", "bucket.s3.amazonaws.com")],
        None,
    );
    let mut cx = crate::pipeline::test_flow("bucket.s3.amazonaws.com", "GET", "/bucket/key");
    let (outcome, _) = run(transform("", ENV), &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(req.uri().to_string(), "/bucket/key?versionId=3");
    assert!(header(&req, "authorization").contains("/us-east-1/s3/aws4_request"));
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
