//! `1password` through a stand-in `op` script put on `PATH`.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn source(secret_ref: &str) -> SecretSourceConfig {
    SecretSourceConfig::OnePassword {
        secret_ref: secret_ref.parse().expect("op ref"),
        token_env: "MY_OP_TOKEN".into(),
        json_key: None,
        ttl: Default::default(),
    }
}

/// A directory holding an `op` that answers like the real CLI.
fn fake_op() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = r#"#!/bin/sh
[ "$OP_SERVICE_ACCOUNT_TOKEN" = "ops_token_1" ] || { echo "[ERROR] invalid service account token" >&2; exit 1; }
[ "$1" = read ] && [ "$2" = --no-newline ] || { echo "[ERROR] unexpected args $*" >&2; exit 2; }
[ -z "$SHOULD_NOT_LEAK" ] || { echo "[ERROR] environment leaked" >&2; exit 3; }
case "$3" in
  op://Engineering/OpenAI/credential) printf 'sk-from-op' ;;
  *) echo "[ERROR] could not read secret '$3': item not found" >&2; exit 1 ;;
esac
"#;
    let path = dir.path().join("op");
    std::fs::write(&path, script).expect("write op");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[tokio::test]
async fn reads_through_the_cli_with_the_token_in_its_env() {
    let dir = fake_op();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let sources = Sources::new(SourcesOptions {
        env: fixed_env(&[
            ("PATH", &path),
            ("MY_OP_TOKEN", "ops_token_1"),
            ("SHOULD_NOT_LEAK", "1"),
        ]),
        ..Default::default()
    });
    let s = sources.secret(&source("op://Engineering/OpenAI/credential"));
    assert_eq!(s.get().await.expect("value").expose(), "sk-from-op");
    let e = sources
        .secret(&source("op://Engineering/Nope/credential"))
        .get()
        .await
        .expect_err("missing");
    assert!(e.to_string().contains("item not found"), "{e}");
}

#[tokio::test]
async fn missing_cli_is_a_clear_error() {
    let empty = tempfile::tempdir().expect("tempdir");
    let sources = Sources::new(SourcesOptions {
        env: fixed_env(&[
            ("PATH", &empty.path().display().to_string()),
            ("MY_OP_TOKEN", "t"),
        ]),
        ..Default::default()
    });
    let e = sources
        .secret(&source("op://a/b/c"))
        .get()
        .await
        .expect_err("no op");
    assert!(e.to_string().contains("`op` was not found in PATH"), "{e}");
}
