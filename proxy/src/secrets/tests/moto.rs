//! `aws_sm` and `aws_ssm` against moto's server (a local AWS mock).
//!
//! Needs `moto_server`: set `MOTO_SERVER` to its path, or put it on `PATH`
//! (`python3 -m venv $CARGO_TARGET_DIR/venv && $CARGO_TARGET_DIR/venv/bin/pip
//! install 'moto[server]'`). Without it the test says so and is skipped.

use std::time::Duration;

use ::http::Request;
use bytes::Bytes;
use http_body_util::Full;

use super::*;

/// A running moto server, killed (by PID) when dropped.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return Some(p.into());
    }
    let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("moto_server"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(std::path::PathBuf::from(t).join("venv/bin/moto_server"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

async fn start_moto() -> Option<Moto> {
    let bin = moto_binary()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn moto_server");
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(moto);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not start on port {port}");
}

/// An unsigned AWS JSON call (moto does not check signatures).
async fn call(url: &str, service: &str, target: &str, body: serde_json::Value) {
    let req = Request::builder()
        .method("POST")
        .uri(format!("{url}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", target)
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let (status, rsp) = http::HttpClient::new().send(req).await.expect("moto call");
    assert!(
        status.is_success(),
        "{target}: {status} {}",
        String::from_utf8_lossy(&rsp)
    );
}

fn sources(url: &str) -> Sources {
    Sources::new(SourcesOptions {
        env: fixed_env(&[("AWS_ENDPOINT_URL", url)]),
        aws: aws::AwsOverrides {
            credentials: Some(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            )),
            region: Some("us-east-1".into()),
        },
        ..Default::default()
    })
}

fn sm(id: &str, json_key: Option<&str>, ttl: Duration) -> SecretSourceConfig {
    SecretSourceConfig::AwsSm {
        secret_id: id.into(),
        region: None,
        json_key: json_key.map(str::to_string),
        ttl: ttl.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sources_against_moto() {
    let Some(moto) = start_moto().await else {
        eprintln!("SKIPPED aws_sources_against_moto: moto_server not found (set MOTO_SERVER)");
        return;
    };
    let url = moto.url.clone();
    call(&url, "secretsmanager", "secretsmanager.CreateSecret",
        serde_json::json!({"Name": "anthropic-key", "SecretString": r#"{"api_key":"sk-moto-1","other":"x"}"#})).await;
    call(&url, "ssm", "AmazonSSM.PutParameter",
        serde_json::json!({"Name": "/myapp/key", "Value": "ssm-secret-1", "Type": "SecureString", "Overwrite": true})).await;
    let src = sources(&url);

    // json_key on Secrets Manager; SecureString from Parameter Store.
    let key = src.secret(&sm(
        "anthropic-key",
        Some("api_key"),
        Duration::from_secs(1),
    ));
    assert_eq!(key.name(), "anthropic-key");
    assert_eq!(key.get().await.expect("aws_sm").expose(), "sk-moto-1");
    let param = src.secret(&SecretSourceConfig::AwsSsm {
        name: "/myapp/key".into(),
        region: Some("us-east-1".into()),
        with_decryption: true,
        json_key: None,
        ttl: Default::default(),
    });
    assert_eq!(param.name(), "/myapp/key");
    assert_eq!(param.get().await.expect("aws_ssm").expose(), "ssm-secret-1");
    let missing = src
        .secret(&sm("no-such-secret", None, Duration::ZERO))
        .get()
        .await
        .expect_err("missing");
    assert!(
        missing.to_string().contains("ResourceNotFoundException"),
        "{missing}"
    );

    // Rotation: the ttl refresh sees the new value.
    call(&url, "secretsmanager", "secretsmanager.PutSecretValue",
        serde_json::json!({"SecretId": "anthropic-key", "SecretString": r#"{"api_key":"sk-moto-2"}"#})).await;
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if key.get().await.expect("value").expose() == "sk-moto-2" {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "refresh did not pick up the rotated value");

    // Backend down: the last good value stays in service; a never-fetched source fails.
    drop(moto);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        key.get().await.expect("last good value").expose(),
        "sk-moto-2"
    );
    let e = src
        .secret(&sm("other", None, Duration::ZERO))
        .get()
        .await
        .expect_err("down");
    assert!(
        matches!(
            e,
            SecretError::Backend {
                backend: "aws_sm",
                ..
            }
        ),
        "{e}"
    );
}
