use super::*;

fn source(json: Value) -> CredentialSource {
    serde_json::from_value(json).expect("credential_source")
}

fn shape_of(json: Value) -> Result<String, String> {
    let s = source(json);
    checked_source(&s)
        .map(|(from, shape)| {
            let from = match from {
                Source::File(f) => format!("file {f}"),
                Source::Url(u, h) => format!("url {u} {}", h.len()),
                Source::Aws(a) => format!("aws {}", a.region_url.unwrap_or("-")),
                Source::Exec(_) => "exec".to_string(),
            };
            let shape = match shape {
                Shape::Text => "text".to_string(),
                Shape::Json(f) => format!("json {f}"),
            };
            format!("{from} {shape}")
        })
        .map_err(|MintError(e)| e)
}

#[test]
fn credential_sources_are_checked() {
    assert_eq!(
        shape_of(serde_json::json!({"file": "/t"})).unwrap(),
        "file /t text"
    );
    assert_eq!(
        shape_of(serde_json::json!({"executable": {"command": "/bin/true"}})).unwrap(),
        "exec text"
    );
    assert_eq!(
        shape_of(serde_json::json!({"environment_id": "aws1", "region_url": "http://m/az"}))
            .unwrap(),
        "aws http://m/az text"
    );
    assert_eq!(
        shape_of(serde_json::json!({
            "url": "http://x/t", "headers": {"Authorization": "bearer r"},
            "format": {"type": "json", "subject_token_field_name": "value"}
        }))
        .unwrap(),
        "url http://x/t 1 json value"
    );
    for (json, expect) in [
        (
            serde_json::json!({"environment_id": "aws2", "region_url": "x"}),
            "only version 1",
        ),
        (
            serde_json::json!({"file": "/t", "url": "http://x"}),
            "both file and url",
        ),
        (serde_json::json!({}), "neither file nor url"),
        (
            serde_json::json!({"file": "/t", "format": {"type": "json"}}),
            "needs subject_token_field_name",
        ),
        (
            serde_json::json!({"file": "/t", "format": {"type": "xml"}}),
            "\"xml\" is not supported",
        ),
    ] {
        let err = shape_of(json.clone()).expect_err(&json.to_string());
        assert!(err.contains(expect), "{json}: {err}");
    }
}

#[tokio::test]
async fn subject_tokens_are_read_from_files_as_text_or_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = HttpClient::new();
    let text = dir.path().join("token");
    std::fs::write(&text, "  eyJ.subject.token\n").expect("write");
    let text = text.to_str().expect("utf-8");
    let got = subject_token(&http, &Source::File(text), &Shape::Text)
        .await
        .expect("text token");
    assert_eq!(got.as_str(), "eyJ.subject.token");

    let json = dir.path().join("token.json");
    std::fs::write(&json, r#"{"id_token": "eyJ.json.token", "other": 1}"#).expect("write");
    let json = json.to_str().expect("utf-8");
    let got = subject_token(&http, &Source::File(json), &Shape::Json("id_token"))
        .await
        .expect("json token");
    assert_eq!(got.as_str(), "eyJ.json.token");

    for (path, shape, expect) in [
        (json, Shape::Json("missing"), "no string field \"missing\""),
        (json, Shape::Json("other"), "no string field \"other\""),
        (text, Shape::Json("id_token"), "is not JSON"),
        (
            "/nonexistent/iron-token",
            Shape::Text,
            "/nonexistent/iron-token",
        ),
    ] {
        let MintError(err) = subject_token(&http, &Source::File(path), &shape)
            .await
            .expect_err(expect);
        assert!(err.contains(expect), "{err}");
        // The token itself never appears in an error.
        assert!(!err.contains("eyJ"), "{err}");
    }
    let empty = dir.path().join("empty");
    std::fs::write(&empty, " \n").expect("write");
    let MintError(err) = subject_token(&http, &Source::File(empty.to_str().unwrap()), &Shape::Text)
        .await
        .expect_err("empty");
    assert!(err.contains("empty subject token"), "{err}");
}

#[tokio::test]
async fn malformed_files_name_the_missing_field() {
    let http = HttpClient::new();
    for (json, expect) in [
        (r#"{"type":"external_account"}"#, "no audience"),
        (
            r#"{"type":"external_account","audience":"//iam/x"}"#,
            "no subject_token_type",
        ),
        (
            r#"{"type":"external_account","audience":"//iam/x","subject_token_type":"jwt"}"#,
            "no credential_source",
        ),
        (
            r#"{"type":"external_account","audience":7}"#,
            "malformed at line 1 column 39: a field has the wrong type",
        ),
        (
            r#"{"type":"external_account","client_secret":12345678}"#,
            "a field has the wrong type",
        ),
    ] {
        let Err(MintError(err)) = mint(&http, &EnvLookup::default(), json, &[]).await else {
            panic!("{json} minted");
        };
        assert!(err.contains(expect), "{json}: {err}");
        assert!(!err.contains("12345678"), "a value is never quoted: {err}");
    }
}

#[test]
fn impersonation_urls_name_the_account() {
    assert_eq!(
        account_of("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/ci@p.iam.gserviceaccount.com:generateAccessToken"),
        "ci@p.iam.gserviceaccount.com"
    );
    assert_eq!(
        account_of("https://h/v1/projects/-/serviceAccounts/ci%40p.iam.gserviceaccount.com:generateAccessToken"),
        "ci@p.iam.gserviceaccount.com"
    );
    assert_eq!(account_of("https://h/v1/other"), "external_account");
}

#[test]
fn expiry_times_become_seconds_from_now() {
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(1800);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let left = seconds_until(&soon).expect("future");
    assert!((1790..=1800).contains(&left), "{left}");
    assert_eq!(seconds_until("2001-01-01T00:00:00Z"), None);
    assert_eq!(seconds_until("tomorrow"), None);
}

#[test]
fn google_api_errors_are_summarised() {
    assert_eq!(
        google_error(
            br#"{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}"#
        )
        .as_deref(),
        Some("PERMISSION_DENIED (Permission denied)")
    );
    assert_eq!(google_error(b"not json"), None);
}

#[test]
fn workforce_pools_are_told_from_workload_pools() {
    assert!(is_workforce_pool(
        "//iam.googleapis.com/locations/global/workforcePools/staff/providers/okta"
    ));
    assert!(!is_workforce_pool(
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci/providers/gh"
    ));
    assert!(!is_workforce_pool(
        "//iam.googleapis.com/locations//workforcePools/x"
    ));
}

#[tokio::test]
async fn a_user_project_needs_a_workforce_audience() {
    let json = r#"{"type":"external_account",
        "audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
        "subject_token_type":"urn:ietf:params:oauth:token-type:jwt",
        "workforce_pool_user_project":"proj",
        "credential_source":{"file":"/nonexistent/iron-token"}}"#;
    let Err(MintError(err)) = mint(&HttpClient::new(), &EnvLookup::default(), json, &[]).await
    else {
        panic!("minted");
    };
    assert!(err.contains("not a workforce pool"), "{err}");
}

/// A loopback address nobody listens on (bound, then let go).
fn refused_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    l.local_addr().expect("its address")
}

/// The credential file's URLs may carry a user, a password and a query (a key);
/// an error naming one of them reaches the audit record and the log, so it names
/// it without them.
#[tokio::test]
async fn errors_name_the_credential_urls_without_userinfo_or_query() {
    let addr = refused_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJ.subject.token").expect("write");
    let base = r#""type":"external_account",
        "audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
        "subject_token_type":"urn:ietf:params:oauth:token-type:jwt""#;
    // The subject token's url, then the token_url (the subject token read from a file).
    for (json, shown) in [
        (
            format!(
                r#"{{{base},"credential_source":{{"url":"http://su:SUBJECTPW@{addr}/subject?key=SUBJECTQ"}}}}"#
            ),
            format!("http://{addr}/subject"),
        ),
        (
            format!(
                r#"{{{base},"token_url":"http://tu:TOKENPW@{addr}/token?key=TOKENQ#FRAG",
                "credential_source":{{"file":{:?}}}}}"#,
                token_file.to_str().expect("utf-8")
            ),
            format!("http://{addr}/token"),
        ),
    ] {
        let Err(MintError(err)) = mint(&HttpClient::new(), &EnvLookup::default(), &json, &[]).await
        else {
            panic!("minted with nobody listening");
        };
        assert!(err.contains(&format!("{shown}:")), "names the URL: {err}");
        for secret in ["PW", "SUBJECTQ", "TOKENQ", "FRAG", "su:", "tu:"] {
            assert!(!err.contains(secret), "{secret} in {err}");
        }
    }
    let url = format!(
        "http://iu:IMPERSONATEPW@{addr}/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com:generateAccessToken?key=IMPERSONATEQ"
    );
    let Err(MintError(err)) =
        impersonate_account(&HttpClient::new(), &url, "federated", &[], 3600).await
    else {
        panic!("impersonated with nobody listening");
    };
    assert!(
        err.contains(&format!("http://{addr}/v1/projects/-/serviceAccounts/")),
        "names the URL: {err}"
    );
    assert!(
        !err.contains("IMPERSONATEPW") && !err.contains("IMPERSONATEQ") && !err.contains("iu:"),
        "{err}"
    );
}
