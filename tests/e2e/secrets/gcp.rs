//! `gcp_auth` through the real binary against the Authlib authorization server of
//! `secrets::oauth` standing in for Google's token endpoint (each credentials file's
//! `token_uri` names it): a service-account keyfile from a secret source, from disk and from
//! `GOOGLE_APPLICATION_CREDENTIALS` (the default chain), an `authorized_user` file, and the
//! metadata server (a stand-in at `GCE_METADATA_HOST`); the
//! SDK token endpoints (Google's OAuth2 endpoint, the metadata server) are stubbed without a
//! packet to them; a keyfile that cannot be read fails closed with 403.

use std::net::SocketAddr;

use std::time::Duration;

use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::assert_no_leak;
use super::oauth::authlib;
use crate::ops::KeepAlive;

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

    // A token endpoint that echoes the refused request in its error text, in several
    // encodings: the audit record says why, and no form of the credentials.
    let echoing = state.path().join("echoing.json");
    let mut echoing_json = user_json.clone();
    echoing_json["client_secret"] = json!("gcp-client/secret+XYZ987");
    echoing_json["refresh_token"] = json!("gcp-refresh-token-QRS654");
    echoing_json["token_uri"] = json!(format!("http://{addr}/misbehave/reflect"));
    std::fs::write(&echoing, echoing_json.to_string()).expect("write user credentials");
    let px = Proxy::with(config("credentials_provider: {type: workload_identity}").as_str())
        .resolver(&net)
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &echoing.display().to_string(),
        )
        .start();
    let r = Curl::get("http://api.test/api/gcp").via(&px).run();
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    let error = rec
        .annotation("gcp_auth", "error")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("invalid_client") && error.contains("[redacted]"),
        "{rec}"
    );
    assert_no_leak(
        &px,
        &[
            "gcp-client/secret+XYZ987",
            "gcp-client%2Fsecret%2BXYZ987",
            "gcp-client%2fsecret%2bXYZ987",
            "Z2NwLWNsaWVudC9zZWNyZXQrWFla", // base64 of its first 21 bytes
            "gcp-refresh-token",
            "Z2NwLXJlZnJlc2gtdG9rZW4t", // base64 of "gcp-refresh-token-"
        ],
    );
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

const POOL: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/gh";
const CI_SA: &str = "ci@iron-e2e.iam.gserviceaccount.com";

/// An `external_account` credentials file against the Authlib server's STS and IAM
/// Credentials stand-ins.
fn external_account(addr: SocketAddr, source: Value, impersonate: Option<&str>) -> Value {
    let mut f = json!({
        "type": "external_account",
        "audience": POOL,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("http://{addr}/v1/token"),
        "credential_source": source,
    });
    if let Some(sa) = impersonate {
        f["service_account_impersonation_url"] = json!(format!(
            "http://{addr}/v1/projects/-/serviceAccounts/{sa}:generateAccessToken"
        ));
    }
    f
}

/// Writes `creds` to `path` and configures a proxy whose default chain
/// (`GOOGLE_APPLICATION_CREDENTIALS`) names it.
fn federated(net: &FakeInternet, path: &std::path::Path, creds: &Value) -> Proxy {
    std::fs::write(path, creds.to_string()).expect("write credentials");
    Proxy::with(config("credentials_provider: {type: workload_identity}").as_str())
        .resolver(net)
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &path.display().to_string(),
        )
}

/// What Google's own library (google-auth) sends to the STS stand-in for the same
/// credentials file: it refreshes the credentials with these scopes, so the stand-in has
/// checked google-auth's requests as it checks the proxy's.
fn google_auth_refresh(file: &std::path::Path) {
    let r = python(
        r#"
import json, sys
import google.auth.transport.requests
from google.auth import identity_pool
info = json.load(open(sys.argv[1]))
creds = identity_pool.Credentials.from_info(
    info, scopes=["https://www.googleapis.com/auth/cloud-platform"])
creds.refresh(google.auth.transport.requests.Request())
print(json.dumps({"token": bool(creds.token)}))
"#,
        [file.as_os_str()],
    );
    assert_eq!(r.exit, 0, "google-auth refresh failed:\n{r}");
}

fn sts_requests(addr: SocketAddr) -> Vec<Value> {
    let v = curl(["-s", &format!("http://{addr}/sts_requests")]).json();
    v.as_array().expect("sts requests").clone()
}

#[test]
fn gcp_auth_federates_external_account_credentials_as_google_auth_does() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let token_audience = format!("https:{POOL}");
    let query = url_query(&token_audience);

    // A file source (a projected Kubernetes token, or a file a CI step wrote), with
    // service-account impersonation.
    let jwt = curl([
        "-s",
        "-H",
        "Authorization: bearer gh-request-token",
        &format!("http://{addr}/oidc/token?raw=1&audience={query}"),
    ])
    .body
    .trim()
    .to_string();
    assert!(jwt.starts_with("eyJ"), "{jwt}");
    let token_file = state.path().join("oidc-token");
    std::fs::write(&token_file, &jwt).expect("write token");
    let impersonating = state.path().join("wif-file.json");
    let file_source = json!({"file": token_file.display().to_string()});
    let px = federated(
        &net,
        &impersonating,
        &external_account(addr, file_source, Some(CI_SA)),
    )
    .start();
    let body = api(&px);
    assert_eq!(
        (&body["client"], &body["grant"], &body["user"]),
        (
            &json!(CI_SA),
            &json!("impersonated"),
            &json!("federated:repo:iron/e2e:ref:refs/heads/main")
        ),
        "{body}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    assert_eq!(
        rec.annotation("gcp_auth", "service_account"),
        Some(&json!(CI_SA)),
        "{rec}"
    );
    // The token is cached: a second request mints nothing.
    api(&px);
    let stats = curl(["-s", &format!("http://{addr}/stats")]).json();
    assert_eq!(
        (&stats["token-exchange"], &stats["impersonated"]),
        (&json!(1), &json!(1)),
        "{stats}"
    );
    assert_no_leak(&px, &[jwt.as_str()]);
    drop(px);

    // A url source in GitHub Actions' shape (JSON answer, request token in a header),
    // without impersonation: the federated token is the access token.
    let direct = state.path().join("wif-url.json");
    let url_source = json!({
        "url": format!("http://{addr}/oidc/token?audience={query}"),
        "headers": {"Authorization": "bearer gh-request-token"},
        "format": {"type": "json", "subject_token_field_name": "value"},
    });
    let px = federated(&net, &direct, &external_account(addr, url_source, None)).start();
    let body = api(&px);
    assert_eq!(
        (&body["client"], &body["grant"]),
        (
            &json!("federated:repo:iron/e2e:ref:refs/heads/main"),
            &json!("token-exchange")
        ),
        "{body}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    assert_eq!(
        rec.annotation("gcp_auth", "service_account"),
        Some(&json!("external_account")),
        "{rec}"
    );
    assert_no_leak(&px, &["gh-request-token"]);
    drop(px);

    // google-auth sends the same token exchanges for the same two files.
    let ours = sts_requests(addr);
    assert_eq!(ours.len(), 2, "{ours:?}");
    google_auth_refresh(&impersonating);
    google_auth_refresh(&direct);
    let all = sts_requests(addr);
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(
        ours[0], all[2],
        "file source + impersonation: proxy vs google-auth"
    );
    assert_eq!(ours[1], all[3], "url source: proxy vs google-auth");

    // A workforce pool (people, not workloads): its user project goes in `options`, unless
    // a client id authenticates the exchange (HTTP Basic). Again as google-auth sends them.
    let workforce = "//iam.googleapis.com/locations/global/workforcePools/staff/providers/oidc";
    let wf_jwt = curl([
        "-s",
        "-H",
        "Authorization: bearer gh-request-token",
        &format!(
            "http://{addr}/oidc/token?raw=1&audience={}",
            url_query(&format!("https:{workforce}"))
        ),
    ])
    .body
    .trim()
    .to_string();
    let wf_token = state.path().join("wf-token");
    std::fs::write(&wf_token, &wf_jwt).expect("write token");
    let mut files = Vec::new();
    for (name, extra) in [
        (
            "wif-workforce.json",
            json!({"workforce_pool_user_project": "iron-e2e-proj"}),
        ),
        (
            "wif-workforce-client.json",
            json!({"workforce_pool_user_project": "iron-e2e-proj",
                   "client_id": "wf-client", "client_secret": "wf-secret"}),
        ),
    ] {
        let mut f = external_account(addr, json!({"file": wf_token.display().to_string()}), None);
        f["audience"] = json!(workforce);
        for (k, v) in extra.as_object().expect("object") {
            f[k] = v.clone();
        }
        let path = state.path().join(name);
        let px = federated(&net, &path, &f).start();
        assert_eq!(api(&px)["grant"], json!("token-exchange"));
        assert_no_leak(&px, &["wf-secret"]);
        files.push(path);
    }
    let ours = sts_requests(addr);
    for f in &files {
        google_auth_refresh(f);
    }
    let all = sts_requests(addr);
    let n = ours.len();
    assert_eq!(all.len(), n + 2, "{all:?}");
    assert!(ours[n - 2]["options"].is_string(), "{:?}", ours[n - 2]);
    assert_eq!(
        ours[n - 1]["client_auth"],
        json!("basic wf-client:wf-secret")
    );
    assert!(ours[n - 1].get("options").is_none(), "{:?}", ours[n - 1]);
    assert_eq!(ours[n - 2], all[n], "workforce pool: proxy vs google-auth");
    assert_eq!(
        ours[n - 1],
        all[n + 1],
        "workforce pool with a client: proxy vs google-auth"
    );

    // Impersonation the IAM stand-in refuses: 403 token_unavailable, with its reason.
    let denied = state.path().join("wif-denied.json");
    let file_source = json!({"file": token_file.display().to_string()});
    let px = federated(
        &net,
        &denied,
        &external_account(
            addr,
            file_source,
            Some("denied@iron-e2e.iam.gserviceaccount.com"),
        ),
    )
    .start();
    let r = Curl::get("http://api.test/api/gcp").via(&px).run();
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    assert_eq!(rec.str("reason"), Some("token_unavailable"), "{rec}");
    assert!(
        rec.to_string().contains("PERMISSION_DENIED"),
        "the audit names the refusal: {rec}"
    );
    assert_no_leak(&px, &[jwt.as_str()]);
}

/// `s` percent-encoded for a query string.
fn url_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An AWS-sourced `external_account` file: `extra` adds metadata-server fields.
fn aws_external_account(addr: SocketAddr, extra: Value) -> Value {
    let mut source = json!({
        "environment_id": "aws1",
        "regional_cred_verification_url":
            "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
    });
    for (k, v) in extra.as_object().expect("object") {
        source[k] = v.clone();
    }
    let mut f = external_account(addr, source, None);
    f["subject_token_type"] = json!("urn:ietf:params:aws:token-type:aws4_request");
    f
}

#[test]
fn gcp_auth_federates_aws_identities_with_signed_get_caller_identity() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());

    // Credentials and region from the environment: nothing asks the metadata server.
    let from_env = state.path().join("wif-aws-env.json");
    let px = federated(&net, &from_env, &aws_external_account(addr, json!({})))
        .env("AWS_ACCESS_KEY_ID", "AKIAIRONE2EENV")
        .env("AWS_SECRET_ACCESS_KEY", "iron-e2e-env-secret")
        .env("AWS_SESSION_TOKEN", "iron-e2e-env-session")
        .env("AWS_REGION", "us-east-2")
        .start();
    let body = api(&px);
    assert_eq!(
        (&body["client"], &body["grant"]),
        (
            &json!("federated:aws:AKIAIRONE2EENV"),
            &json!("token-exchange")
        ),
        "{body}"
    );
    assert_no_leak(&px, &["iron-e2e-env-secret", "iron-e2e-env-session"]);
    drop(px);
    let ours = sts_requests(addr);
    assert_eq!(
        ours[0]["aws_request"]["url"],
        json!("https://sts.us-east-2.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"),
        "{ours:?}"
    );

    // google-auth, given the same file and environment, sends the same exchange: the same
    // fields, the same signed request shape (header order, signed headers).
    let r = python(
        r#"
import json, os, sys
os.environ.update({"AWS_ACCESS_KEY_ID": "AKIAIRONE2EENV",
    "AWS_SECRET_ACCESS_KEY": "iron-e2e-env-secret",
    "AWS_SESSION_TOKEN": "iron-e2e-env-session", "AWS_REGION": "us-east-2"})
import google.auth.transport.requests
from google.auth import aws
creds = aws.Credentials.from_info(json.load(open(sys.argv[1])),
    scopes=["https://www.googleapis.com/auth/cloud-platform"])
creds.refresh(google.auth.transport.requests.Request())
print(json.dumps({"token": bool(creds.token)}))
"#,
        [from_env.as_os_str()],
    );
    assert_eq!(r.exit, 0, "google-auth refresh failed:\n{r}");
    let all = sts_requests(addr);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(ours[0], all[1], "AWS-sourced: proxy vs google-auth");

    // No credentials in the environment: the metadata server (IMDSv2 session, zone,
    // role, role credentials), here the stand-in.
    let from_imds = state.path().join("wif-aws-imds.json");
    let imds = json!({
        "region_url": format!("http://{addr}/latest/meta-data/placement/availability-zone"),
        "url": format!("http://{addr}/latest/meta-data/iam/security-credentials"),
        "imdsv2_session_token_url": format!("http://{addr}/latest/api/token"),
    });
    let px = federated(&net, &from_imds, &aws_external_account(addr, imds)).start();
    let body = api(&px);
    assert_eq!(
        body["client"],
        json!("federated:aws:ASIAIRONE2EIMDS"),
        "{body}"
    );
    let last = sts_requests(addr).pop().expect("a request");
    assert_eq!(
        last["aws_request"]["url"],
        json!("https://sts.us-west-2.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"),
        "the region comes from the zone: {last}"
    );
    assert_no_leak(&px, &["iron-e2e-imds-secret", "imds-session-token"]);
}

#[test]
fn gcp_auth_runs_an_allowed_credential_executable() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let query = url_query(&format!("https:{POOL}"));
    // The executable fetches the OIDC token itself and prints Google's executable-response.
    let script = state.path().join("oidc-token.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nt=$(curl -s -H 'Authorization: bearer gh-request-token' \
             'http://{addr}/oidc/token?raw=1&audience={query}')\n\
             printf '{{\"version\":1,\"success\":true,\"token_type\":\"%s\",\"id_token\":\"%s\"}}' \
             \"$GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE\" \"$t\"\n"
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let creds = external_account(
        addr,
        json!({"executable": {"command": script.display().to_string(), "timeout_millis": 10000}}),
        Some(CI_SA),
    );
    let path = state.path().join("wif-exec.json");
    let px = federated(&net, &path, &creds)
        .env("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")
        .start();
    let body = api(&px);
    assert_eq!(
        (&body["client"], &body["grant"]),
        (&json!(CI_SA), &json!("impersonated")),
        "{body}"
    );
    drop(px);

    // Without the opt-in the command never runs: 403, and the audit says why.
    let px = federated(&net, &path, &creds).start();
    let r = Curl::get("http://api.test/api/gcp").via(&px).run();
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    assert!(
        rec.to_string()
            .contains("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1"),
        "{rec}"
    );
}

const SA2: &str = "gcp-sa2@iron-e2e.iam.gserviceaccount.com";

#[test]
fn gcp_auth_the_first_matching_entry_wins() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let key = std::fs::read_to_string(state.path().join("jwt_key.pem")).expect("jwt key");
    let second = keyfile(addr, &key).replace(SA, SA2);
    // The specific entry first, the catch-all after it (spec: order entries from most
    // specific to least specific).
    let cfg = r#"
transforms:
  - name: allowlist
    config:
      domains: ["api.test"]
  - name: gcp_auth
    config:
      keyfile: {type: env, var: GCP_KEYFILE}
      scopes: ["https://www.googleapis.com/auth/cloud-platform"]
      rules: [{host: "api.test"}]
  - name: gcp_auth
    config:
      keyfile: {type: env, var: GCP_KEYFILE2}
      scopes: ["https://www.googleapis.com/auth/cloud-platform"]
      rules: [{host: "*.test"}]
"#;
    let px = Proxy::with(cfg)
        .resolver(&net)
        .env("GCP_KEYFILE", &keyfile(addr, &key))
        .env("GCP_KEYFILE2", &second)
        .start();
    assert_eq!(api(&px)["client"], json!(SA), "the first entry's account");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    let entries: Vec<&Value> = rec
        .request_transforms()
        .iter()
        .filter(|t| t["name"] == json!("gcp_auth"))
        .collect();
    assert_eq!(entries.len(), 2, "{rec}");
    assert_eq!(
        entries[0]["annotations"]["service_account"],
        json!(SA),
        "{rec}"
    );
    assert_eq!(
        entries[1].get("annotations"),
        Some(&json!({"already_set": ["header:Authorization"]})),
        "the second entry did nothing, and says why: {rec}"
    );
    // Only the first entry minted.
    let stats = curl(["-s", &format!("http://{addr}/stats")]).json();
    assert_eq!(
        stats["urn:ietf:params:oauth:grant-type:jwt-bearer"],
        json!(1),
        "{stats}"
    );
}

/// google-auth's `compute_engine.Credentials` through the proxy, as a workload on a host
/// without credentials runs it: the ping, the account's info, its token (the stub), the
/// project, then an API call with the stub token. Every request goes to the proxy's
/// `http_listen` as an HTTP proxy; the script refuses to resolve or connect to anything else
/// (so nothing reaches the real metadata address even if a request escaped the session).
const GOOGLE_AUTH_ON_GCE: &str = r#"
import json, socket, sys
proxy = sys.argv[1]
host, port = proxy.rsplit(":", 1)
allowed = (host, int(port))
_connect = socket.socket.connect
def connect(self, address):
    if tuple(address[:2]) != allowed:
        raise OSError("test guard: only the proxy may be dialled, not %r" % (address,))
    return _connect(self, address)
socket.socket.connect = connect
_getaddrinfo = socket.getaddrinfo
def getaddrinfo(name, *args, **kwargs):
    if name != host:
        raise OSError("test guard: only the proxy's address may be resolved, not %r" % (name,))
    return _getaddrinfo(name, *args, **kwargs)
socket.getaddrinfo = getaddrinfo

import requests
import google.auth.transport.requests
from google.auth import compute_engine
from google.auth.compute_engine import _metadata

session = requests.Session()
session.trust_env = False
session.proxies = {"http": "http://" + proxy}
request = google.auth.transport.requests.Request(session)
out = {"ping": _metadata.ping(request)}
creds = compute_engine.Credentials()
creds.refresh(request)
out["email"] = creds.service_account_email
out["scopes"] = creds.scopes
out["token"] = creds.token
out["project"] = _metadata.get_project_id(request)
# (creds.universe_domain would ask with a request of its own, outside this session.)
out["universe"] = _metadata.get_universe_domain(request)
r = session.get("http://api.test/api/gcp", headers={"Authorization": "Bearer " + creds.token})
out["api"] = r.json()
print(json.dumps(out))
"#;

#[test]
fn gcp_auth_serves_google_auth_compute_engine_credentials() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let (_server, addr) = authlib(&net, state.path());
    let key = std::fs::read_to_string(state.path().join("jwt_key.pem")).expect("jwt key");
    let cfg = r#"
transforms:
  - name: allowlist
    config:
      domains: ["api.test", "metadata.google.internal"]
      cidrs: ["169.254.169.254/32"]
  - name: gcp_auth
    config:
      keyfile: {type: env, var: GCP_KEYFILE}
      scopes: ["https://www.googleapis.com/auth/cloud-platform"]
      rules:
        - host: "api.test"
"#;
    let px = Proxy::with(cfg)
        .resolver(&net)
        .env("GCP_KEYFILE", &keyfile(addr, &key))
        .start();
    let r = python(GOOGLE_AUTH_ON_GCE, [px.http_addr().to_string()]);
    assert_eq!(r.exit, 0, "google-auth through the proxy failed:\n{r}");
    let out: Value = serde_json::from_str(r.stdout.trim()).expect("the script's JSON");
    assert_eq!(out["ping"], json!(true), "{out}");
    assert_eq!(out["email"], json!(SA), "{out}");
    assert_eq!(
        out["scopes"],
        json!(["https://www.googleapis.com/auth/cloud-platform"]),
        "{out}"
    );
    assert_eq!(out["token"], json!("iron-proxy-stub-token"), "{out}");
    assert_eq!(out["project"], json!("iron-e2e"), "{out}");
    assert_eq!(out["universe"], json!("googleapis.com"), "{out}");
    // The API call carried the service account's real token in place of the stub.
    assert_eq!(out["api"]["client"], json!(SA), "{out}");

    // The metadata requests were answered by the proxy (trace action `stub`), none dialled.
    let ping = px.wait_for_audit(|a| a.host() == Some("169.254.169.254"));
    assert_eq!(
        ping.annotation("gcp_auth", "stubbed"),
        Some(&json!("metadata_server")),
        "{ping}"
    );
    let audit = px.audit();
    let metadata: Vec<_> = audit
        .0
        .iter()
        .filter(|a| a.host() == Some("metadata.google.internal"))
        .collect();
    assert!(metadata.len() >= 3, "{audit:?}");
    for rec in metadata {
        assert!(
            rec.annotation("gcp_auth", "stubbed").is_some(),
            "not stubbed: {rec}"
        );
    }

    // Without Metadata-Flavor: Google, the real server's 403.
    let r = Curl::get(
        "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
    )
    .via(&px)
    .run();
    assert_eq!(r.status, 403, "{r}");
    assert_no_leak(&px, &["PRIVATE KEY"]);
}

/// A keyfile on a hung file system (a FUSE mount whose reads never return, as a stalled NFS
/// server's): the mint gives up after 10 s with 403 `token_unavailable`, and connections
/// the proxy already serves keep being answered meanwhile. Before, the mint read the file on
/// the connection worker that ran the request: every connection on that worker stalled, and
/// the request waited forever.
#[test]
fn gcp_auth_keyfile_on_a_hung_file_system_fails_the_mint_and_stalls_nothing_else() {
    require_root!();
    let net = FakeInternet::new();
    let _other = Upstream::https("other.test").start(&net);
    let dir = tempfile::tempdir().expect("mount dir");
    let mount = dir.path().join("hung");
    let cfg = config(&format!(
        "keyfile_path: \"{}\"",
        mount.join("sa.json").display()
    ))
    .replace("\"api.test\", ", "\"api.test\", \"other.test\", ");
    let px = Proxy::with(cfg.as_str()).resolver(&net).start();
    // Mounted after the proxy started, so that it is unmounted first (a process blocked in
    // a read of it cannot end until then).
    let fs = HungFs::mount(&mount, &["sa.json"]);
    // Keep-alive connections, spread over the connection workers as they were accepted.
    let mut conns: Vec<KeepAlive> = (0..8)
        .map(|_| KeepAlive::open(px.http_addr(), Duration::from_secs(5)))
        .collect();
    for c in &mut conns {
        assert!(c.get("/get", "other.test").starts_with("HTTP/1.1 200"));
    }
    let c = Curl::get("http://api.test/api/gcp").via(&px).max_time(60);
    let mint = std::thread::spawn(move || c.run());
    fs.wait_for_read("sa.json");
    // While the mint waits on the file, every connection is still served (each read gives
    // up after 5 s).
    for c in &mut conns {
        assert!(c.get("/get", "other.test").starts_with("HTTP/1.1 200"));
    }
    let r = mint.join().expect("the minting request's client");
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/api/gcp"));
    assert_eq!(rec.str("reason"), Some("token_unavailable"), "{rec}");
    assert!(rec.to_string().contains("took longer than 10 s"), "{rec}");
}
