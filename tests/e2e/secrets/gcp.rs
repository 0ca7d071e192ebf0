//! `gcp_auth` through the real binary against the Authlib authorization server of
//! `secrets::oauth` standing in for Google's token endpoint (each credentials file's
//! `token_uri` names it): a service-account keyfile from a secret source, from disk and from
//! `GOOGLE_APPLICATION_CREDENTIALS` (the default chain), an `authorized_user` file, and the
//! metadata server (a stand-in at `GCE_METADATA_HOST`); the
//! SDK token endpoints (Google's OAuth2 endpoint, the metadata server) are stubbed without a
//! packet to them; a keyfile that cannot be read fails closed with 403.

use std::net::SocketAddr;

use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::assert_no_leak;
use super::oauth::authlib;

const SA: &str = "gcp-sa@iron-e2e.iam.gserviceaccount.com";

fn keyfile(addr: SocketAddr, key_pem: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "iron-e2e",
        "private_key_id": "k1",
        "private_key": key_pem,
        "client_email": SA,
        "client_id": "1234567890",
        "token_uri": format!("http://{addr}/oauth/token"),
    })
    .to_string()
}

fn config(credentials: &str) -> String {
    format!(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["api.test", "metadata.google.internal", "oauth2.googleapis.com"]
  - name: gcp_auth
    config:
      {credentials}
      scopes: ["https://www.googleapis.com/auth/cloud-platform"]
      rules:
        - host: "api.test"
"#
    )
}

fn api(px: &ProxyProcess) -> Value {
    let r = Curl::get("http://api.test/api/gcp")
        .header("Authorization", "Bearer iron-proxy-stub-token")
        .via(px)
        .run();
    r.expect_status(200);
    r.json()
}

#[test]
fn gcp_auth_mints_from_keyfiles_and_stubs_the_sdk_endpoints() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let key = std::fs::read_to_string(state.path().join("jwt_key.pem")).expect("jwt key");
    let keyfile_json = keyfile(addr, &key);

    // A keyfile from a secret source.
    let px = Proxy::with(config("keyfile: {type: env, var: GCP_KEYFILE}").as_str())
        .resolver(&net)
        .env("GCP_KEYFILE", &keyfile_json)
        .start();
    let body = api(&px);
    assert_eq!(body["client"], json!(SA), "{body}");
    assert_eq!(
        body["grant"],
        json!("urn:ietf:params:oauth:grant-type:jwt-bearer"),
        "{body}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    assert_eq!(
        rec.annotation("gcp_auth", "service_account"),
        Some(&json!(SA)),
        "{rec}"
    );
    assert_eq!(
        rec.annotation("gcp_auth", "injected"),
        Some(&json!(["header:Authorization"])),
        "{rec}"
    );

    // The SDKs' own token requests get the stub, and nothing is dialed for them.
    let stub = json!({"access_token": "iron-proxy-stub-token", "expires_in": 3600, "token_type": "Bearer"});
    let r = Curl::get(
        "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
    )
    .header("Metadata-Flavor", "Google")
    .via(&px)
    .run();
    r.expect_status(200);
    assert_eq!(r.json(), stub);
    let r = Curl::get("https://oauth2.googleapis.com/token")
        .args([
            "-X",
            "POST",
            "-d",
            "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer",
        ])
        .via(&px)
        .run();
    r.expect_status(200);
    assert_eq!(r.json(), stub);
    let rec = px.wait_for_audit(|a| a.host() == Some("oauth2.googleapis.com"));
    assert_eq!(
        rec.annotation("gcp_auth", "stubbed"),
        Some(&json!("oauth2_token_endpoint")),
        "{rec}"
    );
    assert_no_leak(&px, &["PRIVATE KEY"]);
    drop(px);

    // keyfile_path, and the default chain through GOOGLE_APPLICATION_CREDENTIALS.
    let path = state.path().join("sa.json");
    std::fs::write(&path, &keyfile_json).expect("write keyfile");
    let px = Proxy::with(config(&format!("keyfile_path: \"{}\"", path.display())).as_str())
        .resolver(&net)
        .start();
    assert_eq!(api(&px)["client"], json!(SA));
    drop(px);
    let px = Proxy::with(config("credentials_provider: {type: workload_identity}").as_str())
        .resolver(&net)
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &path.display().to_string(),
        )
        .start();
    assert_eq!(api(&px)["client"], json!(SA));
    drop(px);

    // An authorized_user credentials file (gcloud's application-default login).
    let user = state.path().join("user.json");
    let user_json = json!({
        "type": "authorized_user",
        "client_id": "rt-client",
        "client_secret": "rt-secret",
        "refresh_token": "rt-gcp-user",
        "token_uri": format!("http://{addr}/oauth/token"),
    });
    std::fs::write(&user, user_json.to_string()).expect("write user credentials");
    let px = Proxy::with(config("credentials_provider: {type: workload_identity}").as_str())
        .resolver(&net)
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &user.display().to_string(),
        )
        .start();
    let body = api(&px);
    assert_eq!(
        (body["client"].clone(), body["user"].clone()),
        (json!("rt-client"), json!("svc-user")),
        "{body}"
    );
    assert_no_leak(&px, &["rt-secret", "rt-gcp-user"]);
    drop(px);

    // No credentials file: the metadata server (GCE_METADATA_HOST names the stand-in).
    let px = Proxy::with(config("credentials_provider: {type: workload_identity}").as_str())
        .resolver(&net)
        .env("GCE_METADATA_HOST", &addr.to_string())
        .start();
    let body = api(&px);
    assert_eq!(
        (body["client"].clone(), body["grant"].clone()),
        (json!("metadata-default"), json!("metadata")),
        "{body}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    assert_eq!(
        rec.annotation("gcp_auth", "service_account"),
        Some(&json!("default")),
        "{rec}"
    );
    drop(px);

    // A keyfile that cannot be read: 403 token_unavailable, nothing forwarded.
    let px = Proxy::with(config("keyfile_path: \"/nonexistent/iron-e2e-sa.json\"").as_str())
        .resolver(&net)
        .start();
    let r = Curl::get("http://api.test/api/gcp").via(&px).run();
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    assert_eq!(rec.str("reason"), Some("token_unavailable"), "{rec}");
}
