//! Tests of the gcp_auth transform that need no token server: which requests are stubbed,
//! failing closed with 403, the credentials-file checks. Minting is the e2e test
//! `secrets::gcp` (an Authlib server as the token endpoint).

use serde_json::json;

use super::*;
use crate::config::TransformConfig;
use crate::pipeline::PhaseOutcome;
use crate::transforms::test_support::{header, request, run, sources};

fn transform(credentials: &str, extra: &str, env: &[(&str, &str)]) -> GcpAuth {
    let text = format!(
        "tls: {{ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/ca.key}}\n\
         transforms:\n  - name: gcp_auth\n    config:\n\
         \x20     {credentials}\n\
         \x20     scopes: [\"https://www.googleapis.com/auth/cloud-platform\"]\n\
         \x20     rules: [{{host: \"*.googleapis.com\"}}]\n{extra}"
    );
    let cfg = crate::config::parse(&text, "test.yaml", &|_| None).expect("config");
    let Some(TransformConfig::GcpAuth(c)) = cfg.transforms.first() else {
        panic!("not gcp_auth");
    };
    GcpAuth::new(c, &sources(env))
}

fn flow(host: &str, method: &str, path: &str) -> Flow {
    crate::pipeline::test_flow(host, method, path)
}

#[test]
fn the_sdk_token_requests_are_recognised() {
    let yes = [
        ("oauth2.googleapis.com", "/token"),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/instance/service-accounts/default/token",
        ),
        (
            "169.254.169.254",
            "/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/token",
        ),
    ];
    for (host, path) in yes {
        assert!(
            is_token_request(&flow(host, "GET", path), path),
            "{host}{path}"
        );
    }
    let no = [
        ("oauth2.googleapis.com", "/tokeninfo"),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/instance/service-accounts/default/email",
        ),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/instance/service-accounts//token",
        ),
        ("storage.googleapis.com", "/token"),
    ];
    for (host, path) in no {
        assert!(
            !is_token_request(&flow(host, "GET", path), path),
            "{host}{path}"
        );
    }
}

#[tokio::test]
async fn stubs_run_before_the_rules() {
    // The metadata server is outside the rules (*.googleapis.com), and still stubbed.
    let t = transform("keyfile_path: /nonexistent/sa.json", "", &[]);
    let path = "/computeMetadata/v1/instance/service-accounts/default/token";
    let mut req = request("GET", path, &[("metadata-flavor", "Google")], None);
    let (outcome, trace) = run(
        t,
        &mut req,
        &mut flow("metadata.google.internal", "GET", path),
    )
    .await;
    assert!(matches!(outcome, PhaseOutcome::Stub(..)));
    assert_eq!(
        trace.annotations.get("stubbed"),
        Some(&json!("oauth2_token_endpoint"))
    );
}

#[tokio::test]
async fn a_keyfile_that_cannot_be_used_refuses_with_403() {
    for (credentials, env, expect) in [
        (
            "keyfile_path: /nonexistent/sa.json",
            vec![],
            "/nonexistent/sa.json",
        ),
        (
            "keyfile: {type: env, var: KF}",
            vec![("KF", "{not json")],
            "not valid JSON",
        ),
        (
            "keyfile: {type: env, var: KF}",
            vec![("KF", r#"{"type":"external_account"}"#)],
            "external_account credentials have no audience",
        ),
        (
            "keyfile: {type: env, var: KF}",
            vec![("KF", r#"{"type":"service_account","client_email":"a@b"}"#)],
            "no private_key",
        ),
        (
            "keyfile: {type: env, var: KF}",
            vec![(
                "KF",
                r#"{"type":"service_account","client_email":"a@b","private_key":"x"}"#,
            )],
            "not a PEM RSA private key",
        ),
    ] {
        let t = transform(credentials, "", &env);
        let mut req = request(
            "GET",
            "/v1/x",
            &[("authorization", "Bearer iron-proxy-stub-token")],
            None,
        );
        let (outcome, trace) = run(
            t,
            &mut req,
            &mut flow("storage.googleapis.com", "GET", "/v1/x"),
        )
        .await;
        let PhaseOutcome::Reject(_, r) = outcome else {
            panic!("{credentials}: not refused")
        };
        assert_eq!(
            (r.status.as_u16(), r.reason.as_str()),
            (403, "token_unavailable")
        );
        let error = trace
            .annotations
            .get("error")
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains(expect), "{credentials}: {error}");
        assert_eq!(
            header(&req, "authorization"),
            "Bearer iron-proxy-stub-token"
        );
    }
}

#[tokio::test]
async fn domain_wide_delegation_needs_a_service_account_keyfile() {
    // No GOOGLE_APPLICATION_CREDENTIALS: the metadata server, which cannot impersonate.
    // (The config refuses subject with credentials_provider; an authorized_user file behind
    // keyfile is the case that reaches the transform.)
    let user =
        r#"{"type":"authorized_user","client_id":"i","client_secret":"s","refresh_token":"r"}"#;
    let t = transform(
        "keyfile: {type: env, var: KF}",
        "      subject: admin@example.com\n",
        &[("KF", user)],
    );
    let mut req = request("GET", "/v1/x", &[], None);
    let (outcome, trace) = run(
        t,
        &mut req,
        &mut flow("admin.googleapis.com", "GET", "/v1/x"),
    )
    .await;
    assert!(matches!(outcome, PhaseOutcome::Reject(..)));
    let error = trace
        .annotations
        .get("error")
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("domain-wide delegation"), "{error}");
}
