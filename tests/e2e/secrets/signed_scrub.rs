//! Credentials the signing transforms put in the request, written back by an upstream that
//! reflects it (`/reflect`: the request's headers as JSON in the body, and `?echo_header=`
//! one of them as a response header): `hmac_sign`'s `.Credentials` rendered into headers (the
//! spec's own example, `X-ACCESS-KEY` and `X-ACCESS-PASSPHRASE`) and `aws_auth`'s session
//! token (`X-Amz-Security-Token`) reach curl masked, in the header and in the body, while the
//! upstream got the real values; the signatures, bound to the request, come back as sent;
//! the record's response entry of the signing transform carries the scrub's annotations.

use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::{assert_no_leak, b64};

const API_KEY: &str = "access-key-REAL-0123456789abcdef";
const PASSPHRASE: &str = "passphrase-REAL-0123456789abcdef";
const HMAC_KEY: &str = "hmac-secret-key-material-0123456789";

/// The mask a match of `len` bytes becomes in a body.
fn mask(len: usize) -> String {
    format!("[redacted]{}", "*".repeat(len - 10))
}

/// Header `name` (any case) of a `/reflect` body.
fn reflected(body: &str, name: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["headers"]
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Null)
}

/// The annotations of `transform`'s response entry in the record for `path`, checked to be
/// the only response entry.
fn response_entry(px: &ProxyProcess, path: &str, transform: &str) -> Value {
    let rec = px.wait_for_audit(|a| a.path() == Some(path));
    assert!(rec.is_allowed(), "{rec}");
    let names: Vec<&str> = rec
        .response_transforms()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, [transform], "{rec}");
    rec.response_transforms()[0]["annotations"].clone()
}

const HMAC_CONFIG: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["echo.test"]
  - name: hmac_sign
    config:
      timestamp: {format: unix_seconds}
      signature:
        algorithm: sha256
        key_encoding: base64
        output_encoding: base64
        message: "{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}"
      credentials:
        key: {type: env, var: HMAC_API_KEY}
        secret: {type: env, var: HMAC_SECRET}
        passphrase: {type: env, var: HMAC_PASSPHRASE}
      headers:
        - {name: "X-ACCESS-KEY", value: "{{.Credentials.key}}"}
        - {name: "X-ACCESS-SIGN", value: "{{.Signature}}"}
        - {name: "X-ACCESS-TIMESTAMP", value: "{{.Timestamp}}"}
        - {name: "X-ACCESS-PASSPHRASE", value: "{{.Credentials.passphrase}}"}
      rules:
        - host: echo.test
"#;

#[test]
fn hmac_sign_credentials_reflected_by_the_upstream_are_masked() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("echo.test").start(&net);
    let key_b64 = b64(HMAC_KEY);
    let px = Proxy::with(HMAC_CONFIG)
        .resolver(&net)
        .env("HMAC_API_KEY", API_KEY)
        .env("HMAC_SECRET", &key_b64)
        .env("HMAC_PASSPHRASE", PASSPHRASE)
        .start();

    // HTTP/1.1 in one piece, and HTTP/2 gzip-coded in 5-byte frames: the passphrase echoed
    // in a response header and (with the key) in the JSON body.
    for (case, query, flag) in [
        ("h1", "echo_header=x-access-passphrase", "--http1.1"),
        (
            "h2",
            "coding=gzip&chunk=5&echo_header=x-access-passphrase",
            "--http2",
        ),
    ] {
        let path = format!("/reflect/{case}");
        let r = Curl::get(&format!("https://echo.test{path}?{query}"))
            .args([flag])
            .via(&px)
            .run();
        r.expect_status(200);
        let seen = up.wait_for_request(|q| q.path() == path);
        assert_eq!(
            seen.header("x-access-passphrase"),
            Some(PASSPHRASE),
            "{seen}"
        );
        assert_eq!(seen.header("x-access-key"), Some(API_KEY), "{seen}");
        let signature = seen.header("x-access-sign").expect("signed").to_string();

        assert!(
            !r.body.contains(PASSPHRASE) && !r.body.contains(API_KEY),
            "{case}: a credential came back: {}",
            r.body
        );
        assert_eq!(
            r.header("x-echo-x-access-passphrase"),
            Some("[redacted]"),
            "{case}: {r}"
        );
        assert_eq!(
            reflected(&r.body, "x-access-passphrase"),
            json!(mask(PASSPHRASE.len())),
            "{case}"
        );
        assert_eq!(
            reflected(&r.body, "x-access-key"),
            json!(mask(API_KEY.len())),
            "{case}"
        );
        // The signature is bound to this request: it comes back as sent.
        assert_eq!(
            reflected(&r.body, "x-access-sign"),
            json!(signature),
            "{case}"
        );

        let a = response_entry(&px, &path, "hmac_sign");
        assert_eq!(
            a["response_redacted"],
            json!(["x-echo-x-access-passphrase"]),
            "{case}: {a}"
        );
        assert_eq!(a["response_body_redacted"], json!(2), "{case}: {a}");
    }
    let a = response_entry(&px, "/reflect/h2", "hmac_sign");
    assert_eq!(a["response_body_decoded"], json!(["gzip"]), "{a}");
    assert_no_leak(&px, &[PASSPHRASE, API_KEY, HMAC_KEY, &key_b64]);
}

const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEREALsessionTOKEN0123456789+/abcdefXYZ==";

fn aws_config(scrub: bool) -> String {
    format!(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["echo.test"]
  - name: aws_auth
    config:
      access_key_id: {{type: env, var: AWS_REAL_ID}}
      secret_access_key: {{type: env, var: AWS_REAL_SECRET}}
      session_token: {{type: env, var: AWS_REAL_TOKEN}}
      scrub_response_bodies: {scrub}
      rules:
        - host: echo.test
"#
    )
}

#[test]
fn an_aws_session_token_reflected_by_the_upstream_is_masked() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("echo.test").start(&net);
    let start = |scrub: bool| {
        Proxy::with(aws_config(scrub).as_str())
            .resolver(&net)
            .env("AWS_REAL_ID", "AKIAREALREALREAL0042")
            .env(
                "AWS_REAL_SECRET",
                "real/secret/access/key/0123456789abcdefgh",
            )
            .env("AWS_REAL_TOKEN", SESSION_TOKEN)
            .start()
    };
    // curl signs SigV4 itself with the placeholder pair, as an SDK would.
    let get = |px: &ProxyProcess, path: &str| {
        Curl::get(&format!(
            "https://echo.test{path}?echo_header=x-amz-security-token"
        ))
        .args([
            "--http1.1",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            "AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ])
        .via(px)
        .run()
    };

    let px = start(true);
    let r = get(&px, "/reflect/aws");
    r.expect_status(200);
    let seen = up.wait_for_request(|q| q.path() == "/reflect/aws");
    assert_eq!(
        seen.header("x-amz-security-token"),
        Some(SESSION_TOKEN),
        "{seen}"
    );
    let auth = seen.header("authorization").expect("signed").to_string();
    assert!(auth.contains("AKIAREALREALREAL0042/"), "{auth}");
    assert!(
        !r.body.contains(SESSION_TOKEN),
        "the token came back: {}",
        r.body
    );
    assert_eq!(
        r.header("x-echo-x-amz-security-token"),
        Some("[redacted]"),
        "{r}"
    );
    assert_eq!(
        reflected(&r.body, "x-amz-security-token"),
        json!(mask(SESSION_TOKEN.len()))
    );
    // The signature and the access key id are not credentials the workload could use.
    assert_eq!(reflected(&r.body, "authorization"), json!(auth));
    let a = response_entry(&px, "/reflect/aws", "aws_auth");
    assert_eq!(
        a["response_redacted"],
        json!(["x-echo-x-amz-security-token"]),
        "{a}"
    );
    assert_eq!(a["response_body_redacted"], json!(1), "{a}");
    assert_no_leak(&px, &[SESSION_TOKEN, "real/secret/access/key"]);
    drop(px);

    // scrub_response_bodies: false: the body as sent, the header masked all the same.
    let px = start(false);
    let r = get(&px, "/reflect/optout");
    r.expect_status(200);
    assert!(
        r.body.contains(SESSION_TOKEN),
        "the body as sent: {}",
        r.body
    );
    assert_eq!(
        r.header("x-echo-x-amz-security-token"),
        Some("[redacted]"),
        "{r}"
    );
    let a = response_entry(&px, "/reflect/optout", "aws_auth");
    assert_eq!(
        a,
        json!({"response_redacted": ["x-echo-x-amz-security-token"]})
    );
}
