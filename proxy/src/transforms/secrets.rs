//! The `secrets` transform: static credentials applied at the boundary.
//!
//! Each entry has a source, a mode and rules; every entry whose rules match
//! the request is applied, in config order:
//! - **inject** sets a header (replacing every existing spelling of it) or a
//!   query parameter, the header value rendered by the `formatter` template;
//! - **replace** looks for the entry's `proxy_value` in the scanned locations
//!   (headers, and the query, path and body when enabled) and swaps in the
//!   real value; `Authorization: Basic` values are decoded, swapped and
//!   re-encoded. With `require: true`, a request where the token appears in no
//!   scanned location is refused with 403 (`proxy_token_missing`).
//!
//! The host-only check of a MITM tunnel's target (`Flow::precheck`) passes
//! through untouched: the tunnel's inner requests are the ones checked. The
//! host-only request of an sni-only connection is not passed through: nothing
//! inside it will be checked, so `require` refuses it.
//!
//! **Fail closed.** A secret that cannot be resolved never lets a request out
//! without it: an inject entry whose rules match, or a replace entry whose
//! token is present, fails the request with 502 (`secret_unavailable`, the
//! cause in the audit `error`). A replace entry whose token is absent does not
//! need its value, so the request goes on (or gets the 403 of `require`).
//!
//! **What comes back.** Every value put in the request is noted
//! ([`Flow::note_secret_value`]): the response's headers and, unless
//! `scrub_response_bodies: false`, its body are scrubbed of it
//! ([`crate::scrub_response`]), so an upstream that echoes the request does
//! not hand the real credential to the workload.
//!
//! Audit annotations: `swapped` and `injected`, each a list of
//! `{secret: NAME, locations: [...]}` where NAME is the source's identifier
//! ([`Secret::name`]) and a location is `header:Name`, `query:name`, `path` or
//! `body`; in the response trace (when `secrets` is the first transform that
//! put a value in the request), the scrub's `response_redacted` (headers),
//! `response_body_redacted` (matches masked in the body) and
//! `response_body_decoded` (the codings undone to scrub it).
//!
//! The rewritten request keeps the workload's view in `Flow::path` (rules of
//! later transforms match the placeholder path, never the real secret).

mod replace;

pub(crate) use replace::canonical;

use std::sync::Arc;

use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use http::{Request, StatusCode};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::body::Body;
use crate::config::{HeaderMatcher, InjectConfig, SecretMode, SecretsConfig};
use crate::pipeline::{Flow, Rejection, Transform, TransformError, Verdict};
use crate::rules::Scope;
use crate::secrets::{Secret, SecretValue, Sources};
use crate::template::{Template, TemplateContext};
use crate::transforms::wire_case;

/// Errors building the transform from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An inject header name that is not a valid HTTP header name.
    #[error("secrets[{index}].inject.header: invalid header name {name:?}")]
    HeaderName {
        /// Entry index.
        index: usize,
        /// The name as written.
        name: String,
    },
}

impl BuildError {
    /// The field at fault, within the transform's `config`.
    pub fn field(&self) -> String {
        match self {
            BuildError::HeaderName { index, .. } => format!("secrets[{index}].inject.header"),
        }
    }
}

/// The built transform.
pub struct Secrets {
    entries: Vec<Entry>,
    scrub_response_bodies: bool,
}

struct Entry {
    secret: Secret,
    rules: Scope,
    mode: Mode,
}

enum Mode {
    InjectHeader {
        name: HeaderName,
        /// As written in the config, for the audit location and the wire casing.
        written: String,
        formatter: Option<Template>,
    },
    InjectQuery {
        name: String,
    },
    Replace(replace::Replace),
}

/// Builds the transform; sources come from (and are shared through) `sources`.
pub fn build(cfg: &SecretsConfig, sources: &Sources) -> Result<Arc<dyn Transform>, BuildError> {
    Ok(Arc::new(Secrets::new(cfg, sources)?))
}

impl Secrets {
    /// The transform, concretely typed (tests).
    pub fn new(cfg: &SecretsConfig, sources: &Sources) -> Result<Self, BuildError> {
        let mut entries = Vec::with_capacity(cfg.secrets.len());
        for (index, e) in cfg.secrets.iter().enumerate() {
            let mode = match &e.mode {
                SecretMode::Inject(InjectConfig::Header { name, formatter }) => {
                    Mode::InjectHeader {
                        name: HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                            BuildError::HeaderName {
                                index,
                                name: name.clone(),
                            }
                        })?,
                        written: name.clone(),
                        formatter: formatter.clone(),
                    }
                }
                SecretMode::Inject(InjectConfig::QueryParam { name }) => {
                    Mode::InjectQuery { name: name.clone() }
                }
                SecretMode::Replace(r) => Mode::Replace(replace::Replace::new(r)),
            };
            entries.push(Entry {
                secret: sources.secret(&e.source),
                rules: e.rules.clone(),
                mode,
            });
        }
        Ok(Secrets {
            entries,
            scrub_response_bodies: cfg.scrub_response_bodies,
        })
    }
}

fn unavailable(cx: &mut Flow, secret: &Secret, e: crate::secrets::SecretError) -> TransformError {
    cx.annotate("secret_unavailable", secret.name());
    TransformError {
        status: StatusCode::BAD_GATEWAY,
        reason: "secret_unavailable",
        detail: format!("secret {}: {e}", secret.name()),
    }
}

fn record(list: &mut Vec<Value>, secret: &Secret, locations: Vec<String>) {
    list.push(json!({ "secret": secret.name(), "locations": locations }));
}

#[async_trait]
impl Transform for Secrets {
    fn name(&self) -> &str {
        "secrets"
    }

    fn wants_request_body(&self, cx: &Flow, _req: &http::request::Parts) -> bool {
        let t = cx.target();
        self.entries
            .iter()
            .any(|e| matches!(&e.mode, Mode::Replace(r) if r.match_body) && e.rules.applies(&t))
    }

    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        // A tunnel's host-only check (CONNECT or SOCKS5 in MITM mode) has no
        // request to apply a credential to or find a token in: the inner
        // requests come through here in full. Refusing it for `require`
        // would refuse every tunnelled request, token or not.
        if cx.precheck {
            return Ok(Verdict::Continue);
        }
        // An sni-only connection (no method: the request inside stays
        // encrypted) carries nothing to set a credential on: an inject entry
        // is not applied, resolved or recorded. Only `require` acts on it, as
        // nothing inside the connection can be checked.
        let passthrough = cx.method.is_empty();
        let mut swapped = Vec::new();
        let mut injected = Vec::new();
        let mut wire_names: Vec<String> = Vec::new();
        for e in &self.entries {
            if !e.rules.applies(&cx.target()) {
                continue;
            }
            match &e.mode {
                Mode::InjectHeader { .. } | Mode::InjectQuery { .. } if passthrough => {}
                Mode::InjectHeader { name, written, .. } if cx.is_credential_header(name) => {
                    cx.note_already_set(format!("header:{written}"));
                }
                Mode::InjectQuery { name } if cx.is_credential_query(name) => {
                    cx.note_already_set(format!("query:{name}"));
                }
                Mode::InjectHeader {
                    name,
                    written,
                    formatter,
                } => {
                    let value = e
                        .secret
                        .get()
                        .await
                        .map_err(|err| unavailable(cx, &e.secret, err))?;
                    let hv =
                        header_value(&render(formatter.as_ref(), &value, &e.secret)?, &e.secret)?;
                    req.headers_mut().remove(name);
                    req.headers_mut().insert(name.clone(), hv);
                    cx.mark_credential_header(name);
                    cx.note_secret_value(&value, "secrets", self.scrub_response_bodies);
                    wire_names.push(written.clone());
                    record(&mut injected, &e.secret, vec![format!("header:{written}")]);
                }
                Mode::InjectQuery { name } => {
                    let value = e
                        .secret
                        .get()
                        .await
                        .map_err(|err| unavailable(cx, &e.secret, err))?;
                    replace::set_query_param(req, name, value.expose()).map_err(|detail| {
                        TransformError {
                            status: StatusCode::BAD_GATEWAY,
                            reason: "secret_inject_failed",
                            detail: format!("secret {}: {detail}", e.secret.name()),
                        }
                    })?;
                    cx.mark_credential_query(name);
                    cx.note_secret_value(&value, "secrets", self.scrub_response_bodies);
                    record(&mut injected, &e.secret, vec![format!("query:{name}")]);
                }
                Mode::Replace(r) => {
                    let hits = r.scan(req);
                    if hits.is_empty() {
                        if r.require {
                            cx.annotate("rejected", e.secret.name());
                            return Ok(Verdict::Reject(Rejection::forbidden(
                                "proxy_token_missing",
                                format!(
                                    "requests to {} must carry the proxy token for secret {}",
                                    cx.dest.host,
                                    e.secret.name()
                                ),
                            )));
                        }
                        continue;
                    }
                    let value = e
                        .secret
                        .get()
                        .await
                        .map_err(|err| unavailable(cx, &e.secret, err))?;
                    let locations =
                        r.apply(req, &hits, &value)
                            .map_err(|detail| TransformError {
                                status: StatusCode::BAD_GATEWAY,
                                reason: "secret_replace_failed",
                                detail: format!("secret {}: {detail}", e.secret.name()),
                            })?;
                    cx.note_secret_value(&value, "secrets", self.scrub_response_bodies);
                    for hit in &hits {
                        if let replace::Hit::Header(name, _) = hit {
                            cx.mark_credential_header(name);
                        }
                    }
                    wire_names.extend(r.literal_names().map(str::to_string));
                    record(&mut swapped, &e.secret, locations);
                }
            }
        }
        if !swapped.is_empty() {
            cx.annotate("swapped", swapped);
        }
        if !injected.is_empty() {
            cx.annotate("injected", injected);
        }
        if !wire_names.is_empty() {
            wire_case::set_header_case(req, &wire_names).await;
        }
        Ok(Verdict::Continue)
    }
}

/// Renders the formatter (or the raw value) into a wiped buffer.
fn render(
    formatter: Option<&Template>,
    value: &SecretValue,
    secret: &Secret,
) -> Result<Zeroizing<String>, TransformError> {
    let Some(t) = formatter else {
        return Ok(Zeroizing::new(value.expose().to_string()));
    };
    let mut ctx = TemplateContext::new();
    ctx.set("Value", value.expose());
    t.render(&ctx)
        .map(Zeroizing::new)
        .map_err(|e| TransformError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: "secret_format_failed",
            detail: format!("secret {}: formatter: {e}", secret.name()),
        })
}

/// A sensitive header value (never HPACK-indexed), or a fail-closed error.
fn header_value(s: &str, secret: &Secret) -> Result<HeaderValue, TransformError> {
    let mut hv = HeaderValue::from_str(s).map_err(|_| TransformError {
        status: StatusCode::BAD_GATEWAY,
        reason: "secret_invalid_header_value",
        detail: format!(
            "secret {}: the value is not a valid header value",
            secret.name()
        ),
    })?;
    hv.set_sensitive(true);
    Ok(hv)
}

/// True when `matchers` select the header `name` (lowercase); empty selects all.
pub(crate) fn selects(matchers: &[HeaderMatcher], name: &str) -> bool {
    matchers.is_empty() || matchers.iter().any(|m| m.matches(name))
}

#[cfg(test)]
mod tests;
