//! Tests of the gcp_auth transform that need no token server: which requests are stubbed and
//! the metadata server's emulated answers, a later entry after an earlier one's injection,
//! failing closed with 403, the credentials-file checks. Minting is the e2e test
//! `secrets::gcp` (an Authlib server as the token endpoint).

use serde_json::json;

use super::*;
use crate::config::TransformConfig;
use crate::pipeline::PhaseOutcome;
use crate::transforms::oauth_token::STUB_TOKEN;
use crate::transforms::test_support::{header, request, run, sources, token_endpoint};

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
fn the_sdk_metadata_requests_are_recognised() {
    use metadata::{classify, Leaf, Query};
    let sa = "sa@p.iam.gserviceaccount.com";
    let cases: [(&str, &str, Option<&str>, Option<Query>); 12] = [
        ("169.254.169.254", "/", None, Some(Query::Ping)),
        ("metadata.google.internal", "", None, Some(Query::Ping)),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/instance/service-accounts/default/token",
            Some("scopes=a,b"),
            Some(Query::Token),
        ),
        (
            "169.254.169.254",
            "/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/token",
            None,
            Some(Query::Token),
        ),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/instance/service-accounts/default/",
            Some("recursive=true"),
            Some(Query::Account {
                account: "default",
                leaf: Leaf::Dir { recursive: true },
            }),
        ),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/instance/service-accounts/sa@p.iam.gserviceaccount.com/email",
            None,
            Some(Query::Account {
                account: sa,
                leaf: Leaf::Email,
            }),
        ),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/project/project-id",
            None,
            Some(Query::ProjectId),
        ),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/universe/universe-domain",
            None,
            Some(Query::UniverseDomain),
        ),
        // Not emulated: identity tokens, other paths, an empty account, other hosts.
        (
            "metadata.google.internal",
            "/computeMetadata/v1/instance/service-accounts/default/identity",
            Some("audience=x"),
            None,
        ),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/instance/hostname",
            None,
            None,
        ),
        (
            "metadata.google.internal",
            "/computeMetadata/v1/instance/service-accounts//token",
            None,
            None,
        ),
        ("storage.googleapis.com", "/", None, None),
    ];
    for (host, path, query, expect) in cases {
        assert_eq!(classify(host, path, query, true), expect, "{host}{path}");
    }
    // The metadata paths need Metadata-Flavor: Google; the ping does not.
    assert_eq!(
        classify(
            "metadata.google.internal",
            "/computeMetadata/v1/instance/service-accounts/default/token",
            None,
            false
        ),
        Some(Query::MissingFlavor)
    );
    assert_eq!(
        classify("169.254.169.254", "/", None, false),
        Some(Query::Ping)
    );
}

/// A service-account keyfile whose key is never used (the metadata answers need none).
const KEYFILE: &str = r#"{"type":"service_account","project_id":"iron-unit","client_email":"sa@iron-unit.iam.gserviceaccount.com","private_key":"x"}"#;

/// Runs one request to the metadata server through `t`: its outcome and trace entry.
async fn metadata_request(
    t: GcpAuth,
    host: &str,
    uri: &str,
    flavor: bool,
) -> (PhaseOutcome, crate::audit::TransformTrace) {
    let headers: &[(&str, &str)] = if flavor {
        &[("metadata-flavor", "Google")]
    } else {
        &[]
    };
    let mut req = request("GET", uri, headers, None);
    let path = uri.split('?').next().unwrap_or(uri);
    run(t, &mut req, &mut flow(host, "GET", path)).await
}

/// The status, `Metadata-Flavor`, content type and body of a stubbed answer.
async fn stubbed(outcome: PhaseOutcome) -> (u16, String, String, String) {
    let PhaseOutcome::Stub(_, rsp) = outcome else {
        panic!("not stubbed")
    };
    let h = |n: &str| {
        rsp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (status, flavor, kind) = (
        rsp.status().as_u16(),
        h("metadata-flavor"),
        h("content-type"),
    );
    let body = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    (status, flavor, kind, body)
}

#[tokio::test]
async fn the_metadata_server_is_emulated_for_the_configured_account() {
    let env = [("KF", KEYFILE)];
    let t = || transform("keyfile: {type: env, var: KF}", "", &env);
    let sa = "sa@iron-unit.iam.gserviceaccount.com";
    let v1 = "/computeMetadata/v1";

    // The ping (google-auth's _metadata.ping, Go's OnGCE): no request header needed.
    let (outcome, trace) = metadata_request(t(), "169.254.169.254", "/", false).await;
    assert_eq!(
        trace.annotations.get("stubbed"),
        Some(&json!("metadata_server"))
    );
    let (status, flavor, _, _) = stubbed(outcome).await;
    assert_eq!((status, flavor.as_str()), (200, "Google"));

    // What compute_engine.Credentials reads before its token, by alias and by e-mail.
    for account in ["default", sa] {
        let uri = format!("{v1}/instance/service-accounts/{account}/?recursive=true");
        let (outcome, _) = metadata_request(t(), "metadata.google.internal", &uri, true).await;
        let (status, flavor, kind, body) = stubbed(outcome).await;
        assert_eq!(
            (status, flavor.as_str(), kind.as_str()),
            (200, "Google", "application/json")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json"),
            json!({"aliases": ["default"], "email": sa,
                   "scopes": ["https://www.googleapis.com/auth/cloud-platform"]})
        );
    }
    for (path, expect) in [
        ("instance/service-accounts/default/email", sa),
        (
            "instance/service-accounts/default/scopes",
            "https://www.googleapis.com/auth/cloud-platform\n",
        ),
        ("project/project-id", "iron-unit"),
        ("universe/universe-domain", "googleapis.com"),
    ] {
        let uri = format!("{v1}/{path}");
        let (outcome, _) = metadata_request(t(), "metadata.google.internal", &uri, true).await;
        let (status, flavor, _, body) = stubbed(outcome).await;
        assert_eq!(
            (status, flavor.as_str(), body.as_str()),
            (200, "Google", expect),
            "{path}"
        );
    }

    // The token, for the account's e-mail too (google-auth asks by e-mail after the info).
    let uri = format!("{v1}/instance/service-accounts/{sa}/token?scopes=x");
    let (outcome, trace) = metadata_request(t(), "metadata.google.internal", &uri, true).await;
    assert_eq!(
        trace.annotations.get("stubbed"),
        Some(&json!("oauth2_token_endpoint"))
    );
    let (status, flavor, _, body) = stubbed(outcome).await;
    assert_eq!((status, flavor.as_str()), (200, "Google"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["access_token"],
        json!(STUB_TOKEN)
    );

    // Without Metadata-Flavor: Google, 403 as the real server answers.
    let uri = format!("{v1}/instance/service-accounts/default/token");
    let (outcome, _) = metadata_request(t(), "metadata.google.internal", &uri, false).await;
    assert_eq!(stubbed(outcome).await.0, 403);

    // Another account, or a path not emulated: not answered here.
    for path in [
        "instance/service-accounts/other@p.iam.gserviceaccount.com/email",
        "instance/hostname",
    ] {
        let uri = format!("{v1}/{path}");
        let (outcome, trace) = metadata_request(t(), "metadata.google.internal", &uri, true).await;
        assert!(matches!(outcome, PhaseOutcome::Continue), "{path}");
        assert!(trace.annotations.is_empty(), "{path}");
    }

    // Without a service-account keyfile the account is only `default`, with no project.
    let t = transform("keyfile_path: /nonexistent/sa.json", "", &[]);
    let uri = format!("{v1}/instance/service-accounts/default/?recursive=true");
    let (outcome, _) = metadata_request(t, "metadata.google.internal", &uri, true).await;
    let body = stubbed(outcome).await.3;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["email"],
        json!("default")
    );
    let t = transform("keyfile_path: /nonexistent/sa.json", "", &[]);
    let uri = format!("{v1}/project/project-id");
    let (outcome, _) = metadata_request(t, "metadata.google.internal", &uri, true).await;
    assert_eq!(stubbed(outcome).await.0, 404);
}

#[tokio::test]
async fn a_later_entry_leaves_a_request_an_earlier_one_injected_into() {
    // The keyfile cannot be read: had this entry tried to mint, it would refuse with 403.
    let t = || transform("keyfile_path: /nonexistent/sa.json", "", &[]);
    let mut cx = flow("storage.googleapis.com", "GET", "/v1/x");
    cx.mark_credential_header(&http::header::AUTHORIZATION);
    let mut req = request("GET", "/v1/x", &[("authorization", "Bearer earlier")], None);
    let (outcome, trace) = run(t(), &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(
        trace.annotations.get("already_set"),
        Some(&json!(["header:Authorization"]))
    );
    assert_eq!(header(&req, "authorization"), "Bearer earlier");
    // Without an earlier injection the same entry applies (and here fails closed).
    let mut cx = flow("storage.googleapis.com", "GET", "/v1/x");
    let (outcome, _) = run(t(), &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Reject(..)));
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

/// The token injected is noted (not `Bearer `), so the response is scrubbed
/// of it: an echoed `Authorization` reaches the workload masked, in a header
/// and in the body, and the scrub's annotations are in this transform's
/// response entry. `scrub_response_bodies: false` leaves the body alone.
#[tokio::test]
async fn the_injected_token_is_scrubbed_from_the_response() {
    const MINTED: &str = "ya29.minted-gcp-token-0123456789";
    let user = json!({
        "type": "authorized_user",
        "client_id": "cid",
        "client_secret": "csecret",
        "refresh_token": "rtoken",
        "token_uri": token_endpoint(MINTED).await,
    })
    .to_string();
    for scrub_body in [true, false] {
        let extra = format!("      scrub_response_bodies: {scrub_body}\n");
        let t = transform(
            "keyfile: {type: env, var: CREDS}",
            &extra,
            &[("CREDS", &user)],
        );
        let p = crate::pipeline::Pipeline::new(vec![Arc::new(t)]);
        let mut req = request("GET", "/storage/v1/b", &[], None);
        let mut cx = flow("storage.googleapis.com", "GET", "/storage/v1/b");
        let mut trace = Vec::new();
        let out = p.on_request(&mut req, &mut cx, &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Continue), "{trace:?}");
        assert_eq!(header(&req, "authorization"), format!("Bearer {MINTED}"));
        assert_eq!(cx.secret_values().collect::<Vec<_>>(), [MINTED]);

        let echo = format!("Bearer {MINTED}");
        let mut rsp = http::Response::new(crate::body::full(format!(
            r#"{{"error":{{"message":"bad credentials {echo}"}}}}"#
        )));
        rsp.headers_mut().insert(
            "www-authenticate",
            http::HeaderValue::from_str(&echo).expect("value"),
        );
        let out = p.on_response(&mut rsp, &mut cx, &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Continue));
        assert_eq!(rsp.headers()["www-authenticate"], "Bearer [redacted]");
        let body = crate::body::collect(rsp.into_body(), 4096)
            .await
            .expect("body");
        let body = String::from_utf8(body.to_vec()).expect("utf-8");
        assert_eq!(body.contains(MINTED), !scrub_body, "{scrub_body}: {body}");
        let entry = trace.last().expect("a response entry");
        assert_eq!(entry.name, "gcp_auth");
        assert_eq!(
            entry.annotations.get("response_redacted"),
            Some(&json!(["www-authenticate"]))
        );
    }
}

/// A keyfile stored encoded twice (a JSON string holding the JSON, as a
/// secret manager's console makes easy) is said to be a string, not
/// "not valid JSON", and no message quotes the text (serde's do: the key
/// would reach the log). Other types are named by their type; a syntax
/// error is still one.
#[test]
fn credentials_of_the_wrong_json_type_are_named_by_their_type() {
    let key = r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----s3cret"}"#;
    let twice = serde_json::to_string(key).expect("encoding a string");
    let said = |text: &str| match Credentials::read(text, false) {
        Err(e) => e.0,
        Ok(_) => panic!("{text}: read"),
    };
    let e = said(&twice);
    assert!(
        e.starts_with("the credentials are a JSON string, not an object"),
        "{e}"
    );
    assert!(!e.contains("s3cret") && !e.contains("BEGIN"), "{e}");
    assert_eq!(
        said("[1]"),
        "the credentials are a JSON array, not an object (a keyfile is a JSON object)"
    );
    let e = said(r#"{"type":"service_account","private_key":5}"#);
    assert!(e.contains("a field has the wrong type"), "{e}");
    assert_eq!(
        said("{not json"),
        "the credentials are not valid JSON: line 1"
    );
}

/// A reload builds the transform again: the rebuilt one (same credentials source, subject
/// and scopes) serves the token the old one minted (before, every reload started with an
/// empty cache and minted again); other scopes start with an empty cache.
#[tokio::test]
async fn a_rebuilt_transform_keeps_its_token() {
    let sources = sources(&[]);
    let build = |scope: &str| {
        let text = format!(
            "tls: {{ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/ca.key}}\n\
             transforms:\n  - name: gcp_auth\n    config:\n\
             \x20     keyfile_path: /nonexistent/key.json\n\
             \x20     scopes: [\"{scope}\"]\n\
             \x20     rules: [{{host: \"*.googleapis.com\"}}]\n"
        );
        let cfg = crate::config::parse(&text, "test.yaml", &|_| None).expect("config");
        let Some(TransformConfig::GcpAuth(c)) = cfg.transforms.first() else {
            panic!("not gcp_auth");
        };
        GcpAuth::new(c, &sources)
    };
    let minted = || async {
        Ok::<cache::Minted, MintError>((
            crate::transforms::oauth_token::TokenResponse {
                access_token: zeroize::Zeroizing::new("ya29.kept".to_string()),
                expires_in: Some(3600),
                refresh_token: None,
            },
            "sa@example.iam.gserviceaccount.com".to_string(),
        ))
    };
    let refused = || async { Err::<cache::Minted, _>(MintError("minted again".into())) };
    let old = build("https://www.googleapis.com/auth/cloud-platform");
    let (token, _) = old.cache.token([7; 32], minted).await.expect("minted");
    assert_eq!(token.as_str(), "ya29.kept");
    let rebuilt = build("https://www.googleapis.com/auth/cloud-platform");
    drop(old);
    let (token, _) = rebuilt
        .cache
        .token([7; 32], refused)
        .await
        .expect("the kept token, no mint");
    assert_eq!(token.as_str(), "ya29.kept");
    let other = build("https://www.googleapis.com/auth/devstorage.read_only");
    assert!(
        other.cache.token([7; 32], refused).await.is_err(),
        "other scopes mint their own"
    );
}
