//! Executable-sourced `external_account` credentials (Google's "pluggable
//! auth"): a command the operator names prints the subject token. As in
//! Google's libraries it runs only when the proxy's environment has
//! `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`.
//!
//! - The command line is split on whitespace (no shell) and run with the
//!   proxy's environment plus `GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE`,
//!   `_TOKEN_TYPE`, `_INTERACTIVE=0`, `_IMPERSONATED_EMAIL` (when
//!   impersonating) and `_OUTPUT_FILE` (when set); killed after
//!   `timeout_millis` (5,000–120,000, default 30,000).
//! - Its standard output is the response: `version` 1, `success`, then
//!   `token_type` (must be the file's `subject_token_type`), `id_token` or
//!   `saml_response`, `expiration_time` (Unix seconds; required with an
//!   output file); or `code` and `message` on failure.
//! - With `output_file`, a still-valid response cached there is used without
//!   running the command.
//!
//! Its standard error is never read into a message: it may hold anything.

use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::super::super::oauth_token::{unix_now, MintError};
use crate::secrets::scrub::Scrubber;
use crate::secrets::EnvLookup;

/// The opt-in variable.
const ALLOW: &str = "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES";
const SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";

/// `credential_source.executable`.
#[derive(Deserialize)]
pub(super) struct ExecutableConfig {
    command: Option<String>,
    timeout_millis: Option<u64>,
    output_file: Option<String>,
}

/// What the command prints.
#[derive(Deserialize)]
struct Answer {
    version: Option<u64>,
    success: Option<bool>,
    token_type: Option<String>,
    id_token: Option<String>,
    saml_response: Option<String>,
    expiration_time: Option<u64>,
    code: Option<String>,
    message: Option<String>,
}

/// The subject token from the executable (or its still-valid cached answer).
pub(super) async fn subject_token(
    env: &EnvLookup,
    cfg: &ExecutableConfig,
    audience: &str,
    token_type: &str,
    impersonated: Option<&str>,
) -> Result<Zeroizing<String>, MintError> {
    if env.var(ALLOW).as_deref() != Some("1") {
        return Err(MintError(format!(
            "executable-sourced external_account credentials run only with {ALLOW}=1 in the \
             proxy's environment"
        )));
    }
    let command = cfg
        .command
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| MintError("credential_source.executable has no command".into()))?;
    let timeout = cfg.timeout_millis.unwrap_or(30_000);
    if !(5_000..=120_000).contains(&timeout) {
        return Err(MintError(format!(
            "credential_source.executable.timeout_millis is {timeout}: it must be 5000 to 120000"
        )));
    }
    let output_file = cfg.output_file.as_deref().filter(|f| !f.is_empty());
    // Read on the blocking pool, within a time limit: a file on a stalled
    // network file system must not hold a worker thread.
    let cached = match output_file {
        Some(f) => crate::config_source::file::read_named_off_thread(std::path::Path::new(f))
            .await
            .ok(),
        None => None,
    };
    if let Some(cached) = cached {
        // A cached answer that is not (or no longer) usable is ignored.
        if let Ok(token) = token_of(&cached, token_type, true) {
            return Ok(token);
        }
    }
    let mut words = command.split_whitespace();
    let program = words.next().unwrap_or(command);
    let mut cmd = tokio::process::Command::new(program);
    crate::ops::fd_limit::restore_in_tokio_child(&mut cmd);
    cmd.args(words)
        .env("GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE", audience)
        .env("GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE", token_type)
        .env("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(email) = impersonated {
        cmd.env("GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL", email);
    }
    if let Some(f) = output_file {
        cmd.env("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", f);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| MintError(format!("running the credential executable {program}: {e}")))?;
    let run = async {
        // At most MAX_ANSWER bytes are read: a command that prints more
        // is ended (kill_on_drop) rather than held in memory.
        let mut stdout = Zeroizing::new(Vec::new());
        if let Some(pipe) = child.stdout.take() {
            pipe.take(MAX_ANSWER + 1).read_to_end(&mut stdout).await?;
        }
        if stdout.len() as u64 > MAX_ANSWER {
            return Ok((None, stdout));
        }
        Ok::<_, std::io::Error>((Some(child.wait().await?), stdout))
    };
    let (status, stdout) = tokio::time::timeout(Duration::from_millis(timeout), run)
        .await
        .map_err(|_| {
            MintError(format!(
                "the credential executable {program} did not answer within {timeout} ms"
            ))
        })?
        .map_err(|e| MintError(format!("running the credential executable {program}: {e}")))?;
    let Some(status) = status else {
        return Err(MintError(format!(
            "the credential executable {program} printed more than {MAX_ANSWER} bytes"
        )));
    };
    if !status.success() {
        return Err(MintError(format!(
            "the credential executable {program} failed ({status})"
        )));
    }
    token_of(&stdout, token_type, output_file.is_some())
}

/// The most an executable's answer may be: a JSON object holding one token
/// (an ID token or a SAML response is a few KiB).
const MAX_ANSWER: u64 = 1024 * 1024;

/// The subject token in an executable's answer, checked.
fn token_of(
    raw: &[u8],
    token_type: &str,
    needs_expiry: bool,
) -> Result<Zeroizing<String>, MintError> {
    let a: Answer = serde_json::from_slice(raw).map_err(|_| {
        MintError("the credential executable's answer is not the expected JSON".into())
    })?;
    // What errors quote of the answer is the command's text: shown as peer text is
    // (escaped, cut short), without any token the answer holds.
    let shown = Scrubber::new(
        [a.id_token.as_deref(), a.saml_response.as_deref()]
            .into_iter()
            .flatten(),
    );
    if a.version != Some(1) {
        return Err(MintError(format!(
            "the credential executable's answer has version {:?}; only 1 is supported",
            a.version
        )));
    }
    if a.success != Some(true) {
        return Err(MintError(format!(
            "the credential executable reported failure: {}: {}",
            shown.peer_text(a.code.as_deref().unwrap_or("no code")),
            shown.peer_text(a.message.as_deref().unwrap_or("no message"))
        )));
    }
    if a.token_type.as_deref() != Some(token_type) {
        return Err(MintError(format!(
            "the credential executable answered token_type \"{}\", not the file's {token_type}",
            shown.peer_text(a.token_type.as_deref().unwrap_or(""))
        )));
    }
    match a.expiration_time {
        Some(t) if t <= unix_now() => {
            return Err(MintError(
                "the credential executable's token has expired".into(),
            ))
        }
        None if needs_expiry => {
            return Err(MintError(
                "the credential executable's answer has no expiration_time (required with \
                 output_file)"
                    .into(),
            ))
        }
        _ => {}
    }
    let token = if token_type == SAML2 {
        a.saml_response
    } else {
        a.id_token
    };
    token
        .filter(|t| !t.is_empty())
        .map(Zeroizing::new)
        .ok_or_else(|| MintError("the credential executable's answer holds no token".into()))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::Arc;

    use super::*;

    const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

    fn allowed() -> EnvLookup {
        EnvLookup::Fixed(Arc::new(HashMap::from([(
            ALLOW.to_string(),
            "1".to_string(),
        )])))
    }

    /// A shell script in `dir` that records its environment in `dir/env`
    /// and prints `answer`.
    fn script(dir: &std::path::Path, answer: &str) -> String {
        let path = dir.join("token.sh");
        let body = format!(
            "#!/bin/sh\nenv | grep '^GOOGLE_EXTERNAL_ACCOUNT' | sort > '{}/env'\ncat <<'EOF'\n{answer}\nEOF\n",
            dir.display()
        );
        std::fs::write(&path, body).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.display().to_string()
    }

    fn cfg(command: String, output_file: Option<String>) -> ExecutableConfig {
        ExecutableConfig {
            command: Some(command),
            timeout_millis: None,
            output_file,
        }
    }

    #[tokio::test]
    async fn the_executable_prints_the_token_with_the_documented_environment() {
        let dir = tempfile::tempdir().expect("dir");
        let later = unix_now() + 600;
        let answer = format!(
            r#"{{"version":1,"success":true,"token_type":"{JWT}","id_token":"eyJ.exec","expiration_time":{later}}}"#
        );
        let c = cfg(format!("{} --flag", script(dir.path(), &answer)), None);
        let t = subject_token(&allowed(), &c, "//iam/aud", JWT, Some("sa@p.iam"))
            .await
            .expect("token");
        assert_eq!(t.as_str(), "eyJ.exec");
        let env = std::fs::read_to_string(dir.path().join("env")).expect("env");
        assert_eq!(
            env,
            "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE=//iam/aud\n\
             GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL=sa@p.iam\n\
             GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE=0\n\
             GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE=urn:ietf:params:oauth:token-type:jwt\n"
        );
    }

    /// A command printing without end is ended at the bound, not read into memory to its
    /// timeout (before: its whole output was kept).
    #[tokio::test]
    async fn an_answer_over_the_bound_ends_the_command() {
        let c = cfg("yes".to_string(), None);
        let MintError(e) = subject_token(&allowed(), &c, "a", JWT, None)
            .await
            .expect_err("too large");
        assert!(e.contains("printed more than 1048576 bytes"), "{e}");
    }

    #[tokio::test]
    async fn it_runs_only_when_allowed_and_its_answer_is_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let ok = format!(r#"{{"version":1,"success":true,"token_type":"{JWT}","id_token":"t"}}"#);
        let c = cfg(script(dir.path(), &ok), None);
        let MintError(e) = subject_token(&EnvLookup::default(), &c, "a", JWT, None)
            .await
            .expect_err("not allowed");
        assert!(
            e.contains("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1"),
            "{e}"
        );
        assert!(!dir.path().join("env").exists(), "the command did not run");

        for (answer, expect) in [
            (
                r#"{"version":1,"success":false,"code":"401","message":"no session"}"#.to_string(),
                "reported failure: 401: no session",
            ),
            (
                format!(r#"{{"version":2,"success":true,"token_type":"{JWT}","id_token":"t"}}"#),
                "only 1 is supported",
            ),
            (
                r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:saml2","saml_response":"s"}"#.to_string(),
                "not the file's",
            ),
            (
                format!(
                    r#"{{"version":1,"success":true,"token_type":"{JWT}","id_token":"t","expiration_time":1}}"#
                ),
                "has expired",
            ),
            ("not json".to_string(), "not the expected JSON"),
        ] {
            let c = cfg(script(dir.path(), &answer), None);
            let MintError(e) = subject_token(&allowed(), &c, "a", JWT, None)
                .await
                .expect_err(expect);
            assert!(e.contains(expect), "{answer}: {e}");
        }
        let c = cfg("/nonexistent/iron-exec".into(), None);
        let MintError(e) = subject_token(&allowed(), &c, "a", JWT, None)
            .await
            .expect_err("missing");
        assert!(e.contains("/nonexistent/iron-exec"), "{e}");
    }

    #[tokio::test]
    async fn a_valid_cached_answer_spares_the_run() {
        let dir = tempfile::tempdir().expect("dir");
        let later = unix_now() + 600;
        let cached = dir.path().join("cache.json");
        std::fs::write(
            &cached,
            format!(
                r#"{{"version":1,"success":true,"token_type":"{JWT}","id_token":"cached","expiration_time":{later}}}"#
            ),
        )
        .expect("cache");
        let fresh = format!(
            r#"{{"version":1,"success":true,"token_type":"{JWT}","id_token":"fresh","expiration_time":{later}}}"#
        );
        let cache = Some(cached.display().to_string());
        let c = cfg(script(dir.path(), &fresh), cache.clone());
        let t = subject_token(&allowed(), &c, "a", JWT, None)
            .await
            .expect("token");
        assert_eq!(t.as_str(), "cached");
        assert!(!dir.path().join("env").exists(), "the command did not run");
        // Expired: the command runs (and, with an output file, must give an expiry).
        std::fs::write(
            &cached,
            format!(r#"{{"version":1,"success":true,"token_type":"{JWT}","id_token":"old","expiration_time":1}}"#),
        )
        .expect("cache");
        let t = subject_token(&allowed(), &c, "a", JWT, None)
            .await
            .expect("token");
        assert_eq!(t.as_str(), "fresh");
        let no_expiry =
            format!(r#"{{"version":1,"success":true,"token_type":"{JWT}","id_token":"x"}}"#);
        let c = cfg(script(dir.path(), &no_expiry), cache);
        let MintError(e) = subject_token(&allowed(), &c, "a", JWT, None)
            .await
            .expect_err("expiry needed");
        assert!(e.contains("required with output_file"), "{e}");
    }
}
