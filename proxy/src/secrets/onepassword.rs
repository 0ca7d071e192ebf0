//! The 1Password sources.
//!
//! - `1password_connect`: the Connect server REST API. The vault and item of
//!   `op://vault/item/[section/]field` are looked up by title
//!   (`GET /v1/vaults?filter=title eq "vault"`, then
//!   `GET /v1/vaults/{id}/items?filter=title eq "item"`), falling back to
//!   using the name as an id; then `GET /v1/vaults/{id}/items/{id}` and the
//!   field is chosen by label or id, within the section (label or id) when
//!   one is given. The token is sent as `Authorization: Bearer`.
//! - `1password`: the `op` CLI, `op read --no-newline op://...`, with the
//!   service account token passed as `OP_SERVICE_ACCOUNT_TOKEN` in the
//!   child's environment (and nothing else from ours but `PATH`, `HOME` and
//!   `XDG_CONFIG_HOME`). `op` must be on `PATH`.

use std::process::Stdio;

use async_trait::async_trait;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::http::HttpClient;
use super::{EnvLookup, Fetch, OpRef, SecretError, SecretValue};

/// `1password_connect`.
pub struct Connect {
    secret_ref: OpRef,
    host_env: String,
    token_env: String,
    env: EnvLookup,
    http: HttpClient,
}

const CONNECT: &str = "1password_connect";
const CLI: &str = "1password";

fn connect_err(detail: String) -> SecretError {
    SecretError::Backend {
        backend: CONNECT,
        detail,
    }
}

#[derive(Deserialize)]
struct Named {
    id: String,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Deserialize)]
struct Field {
    #[serde(default)]
    id: String,
    #[serde(default)]
    label: String,
    value: Option<String>,
    section: Option<SectionRef>,
}

#[derive(Deserialize)]
struct SectionRef {
    id: String,
    label: Option<String>,
}

#[derive(Deserialize)]
struct ItemSections {
    #[serde(default)]
    sections: Vec<Section>,
}

#[derive(Deserialize)]
struct Section {
    id: String,
    label: Option<String>,
}

/// Percent-encodes a query value (the Connect filter expression).
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Connect {
    /// A source for `secret_ref` through the server named by `host_env`.
    pub fn new(
        secret_ref: OpRef,
        host_env: String,
        token_env: String,
        env: EnvLookup,
        http: HttpClient,
    ) -> Self {
        Connect {
            secret_ref,
            host_env,
            token_env,
            env,
            http,
        }
    }

    async fn get(
        &self,
        base: &str,
        token: &SecretValue,
        path: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let auth = Zeroizing::new(format!("Bearer {}", token.expose()));
        let mut auth_value = http::HeaderValue::from_str(&auth)
            .map_err(|_| connect_err(format!("{} holds an invalid token", self.token_env)))?;
        auth_value.set_sensitive(true);
        let req = Request::builder()
            .method("GET")
            .uri(&url)
            .header(http::header::AUTHORIZATION, auth_value)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| {
                connect_err(format!(
                    "invalid Connect URL {:?}",
                    crate::redact_url::for_log(&url)
                ))
            })?;
        let (status, body) = self
            .http
            .send(req)
            .await
            // `OP_CONNECT_HOST` may hold a user and password or a query:
            // the error names the URL without them.
            .map_err(|e| connect_err(format!("{}: {e}", crate::redact_url::for_log(&url))))?;
        if !status.is_success() {
            return Err(connect_err(error_detail(path, status, &body, token)));
        }
        Ok(body)
    }

    /// Resolves a vault or item by title, else treats the name as an id.
    async fn lookup(
        &self,
        base: &str,
        token: &SecretValue,
        list_path: &str,
        name: &str,
    ) -> Result<String, SecretError> {
        let filter = encode(&format!("title eq \"{}\"", name.replace('"', "\\\"")));
        let body = self
            .get(base, token, &format!("{list_path}?filter={filter}"))
            .await?;
        listed_id(&body, list_path, name)
    }
}

/// A Connect error answer in words: the request's path, the status and the
/// server's `message`. The server's text may quote the request's
/// Authorization: the token is scrubbed from it.
fn error_detail(path: &str, status: http::StatusCode, body: &[u8], token: &SecretValue) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        message: Option<String>,
    }
    let msg = serde_json::from_slice::<ApiError>(body)
        .ok()
        .and_then(|e| e.message)
        .unwrap_or_default();
    let msg = super::scrub::Scrubber::new([token.expose()]).peer_text(&msg);
    format!("GET {path}: {status} {msg}")
}

/// The id of the one entry titled `name` in a vault or item listing (the
/// answer to `list_path`), else `name` itself when it has the shape of an id.
fn listed_id(body: &[u8], list_path: &str, name: &str) -> Result<String, SecretError> {
    let found: Vec<Named> = serde_json::from_slice(body)
        .map_err(|_| connect_err(format!("malformed response from {list_path}")))?;
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        [] if looks_like_id(name) => Ok(name.to_string()),
        [] => Err(connect_err(format!("{list_path}: nothing titled {name:?}"))),
        many => Err(connect_err(format!(
            "{list_path}: {} entries titled {name:?}",
            many.len()
        ))),
    }
}

/// 1Password ids are 26 lowercase alphanumerics.
fn looks_like_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[async_trait]
impl Fetch for Connect {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let base = self
            .env
            .var(&self.host_env)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| SecretError::EnvMissing(self.host_env.clone()))?;
        let token = self
            .env
            .secret(&self.token_env)
            .ok_or_else(|| SecretError::EnvMissing(self.token_env.clone()))?;
        let r = &self.secret_ref;
        let vault = self.lookup(&base, &token, "/v1/vaults", &r.vault).await?;
        let items = format!("/v1/vaults/{}/items", encode(&vault));
        let item = self.lookup(&base, &token, &items, &r.item).await?;
        let body = self
            .get(&base, &token, &format!("{items}/{}", encode(&item)))
            .await?;
        field_value(&body, r)
    }
}

/// The value of the field `r` names in an item answer: by label, else by id,
/// within `r`'s section (by id or label) when it names one. The other
/// fields' values are wiped.
fn field_value(body: &[u8], r: &OpRef) -> Result<SecretValue, SecretError> {
    let parsed: Item =
        serde_json::from_slice(body).map_err(|_| connect_err("malformed item response".into()))?;
    let sections: ItemSections =
        serde_json::from_slice(body).unwrap_or(ItemSections { sections: vec![] });
    let in_section = |f: &Field| match (&r.section, &f.section) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(want), Some(s)) => {
            let label = s.label.clone().or_else(|| {
                sections
                    .sections
                    .iter()
                    .find(|x| x.id == s.id)
                    .and_then(|x| x.label.clone())
            });
            s.id == *want || label.as_deref() == Some(want.as_str())
        }
    };
    let mut fields = parsed.fields;
    let pos = fields
        .iter()
        .position(|f| in_section(f) && f.label == r.field)
        .or_else(|| fields.iter().position(|f| in_section(f) && f.id == r.field))
        .ok_or_else(|| connect_err(format!("item {:?} has no field {:?}", r.item, r.field)))?;
    let value = fields.swap_remove(pos).value.map(Zeroizing::new);
    for f in &mut fields {
        if let Some(v) = f.value.as_mut() {
            zeroize::Zeroize::zeroize(v);
        }
    }
    match value {
        Some(v) => Ok(SecretValue::from(v)),
        None => Err(SecretError::Empty),
    }
}

/// `1password`, through the `op` CLI.
pub struct OpCli {
    secret_ref: OpRef,
    token_env: String,
    env: EnvLookup,
}

impl OpCli {
    /// A source for `secret_ref` authenticated by the token in `token_env`.
    pub fn new(secret_ref: OpRef, token_env: String, env: EnvLookup) -> Self {
        OpCli {
            secret_ref,
            token_env,
            env,
        }
    }
}

#[async_trait]
impl Fetch for OpCli {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let err = |detail: String| SecretError::Backend {
            backend: CLI,
            detail,
        };
        let token = self
            .env
            .secret(&self.token_env)
            .ok_or_else(|| SecretError::EnvMissing(self.token_env.clone()))?;
        let mut cmd = tokio::process::Command::new("op");
        cmd.env_clear();
        for var in ["PATH", "HOME", "XDG_CONFIG_HOME"] {
            if let Some(v) = self.env.os_var(var) {
                cmd.env(var, v);
            }
        }
        cmd.env("OP_SERVICE_ACCOUNT_TOKEN", token.expose())
            .arg("read")
            .arg("--no-newline")
            .arg(self.secret_ref.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = match cmd.output().await {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(err("the 1Password CLI `op` was not found in PATH; install it or use type: 1password_connect".into()))
            }
            Err(e) => return Err(err(format!("running `op`: {e}"))),
        };
        let stdout = Zeroizing::new(out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let line = stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            // `op` may quote what it was given, the token included.
            let line = super::scrub::Scrubber::new([token.expose()]).peer_text(line);
            return Err(err(format!("`op read` failed ({}): {line}", out.status)));
        }
        let text = std::str::from_utf8(&stdout)
            .map_err(|_| err("`op read` printed non-UTF-8 output".into()))?;
        Ok(SecretValue::new(
            text.trim_end_matches(['\r', '\n']).to_string(),
        ))
    }
}

#[cfg(test)]
mod fuzz;
