//! Config → running transforms. Used at startup and by every reload, which
//! builds a whole new [`Policy`] before swapping it in.

use std::sync::Arc;

use crate::config::{Config, TransformConfig};
use crate::pipeline::{Pipeline, Transform};
use crate::secrets::Sources;
use crate::state::{Limits, Policy};
use crate::transforms;
use crate::upstream::DenyList;

use super::AppError;

/// The body and header-time limits of `proxy`.
fn limits_of(cfg: &Config) -> Limits {
    Limits {
        max_request_body_bytes: usize::try_from(cfg.proxy.max_request_body_bytes)
            .unwrap_or(usize::MAX),
        max_response_body_bytes: usize::try_from(cfg.proxy.max_response_body_bytes)
            .unwrap_or(usize::MAX),
        max_buffered_bytes: usize::try_from(cfg.proxy.max_buffered_bytes).unwrap_or(usize::MAX),
        upstream_response_header_timeout: cfg.proxy.upstream_response_header_timeout.get(),
    }
}

/// Builds the swappable part of the proxy from a config. `sources` is kept
/// for the life of the process so reloads reuse cached secret values; pass
/// a staged one ([`Sources::stage`]) and commit it once the policy is in
/// force, so that a build never put in force contacts no secret backend.
pub fn build_policy(
    cfg: &Config,
    sources: &Sources,
    metrics: Option<&Arc<crate::ops::Metrics>>,
) -> Result<(Policy, DenyList), AppError> {
    let limits = limits_of(cfg);
    let mut list: Vec<Arc<dyn Transform>> = Vec::with_capacity(cfg.transforms.len());
    for (index, t) in cfg.transforms.iter().enumerate() {
        list.push(build_transform(index, t, sources, &limits)?);
    }
    if let Some(mcp) = cfg.mcp.as_ref().filter(|m| !m.servers.is_empty()) {
        // After every configured transform (spec: MCP Interception).
        list.push(Arc::new(crate::mcp::McpInterceptor::new(
            mcp,
            limits.max_request_body_bytes,
            limits.max_response_body_bytes,
        )));
    }
    let deny = DenyList::new(cfg.proxy.upstream_deny_cidrs.clone());
    Ok((
        Policy {
            pipeline: match metrics {
                Some(m) => Pipeline::new(list).with_metrics(m.clone()),
                None => Pipeline::new(list),
            },
            limits,
        },
        deny,
    ))
}

/// Builds the transforms of `cfg` as [`build_policy`] does, for `validate`:
/// every transform but those `skip` names (one that needs a file or variable
/// this machine lacks, which `validate` reports on its own), each failure as
/// a line at its field (`proxy.yaml:15:14: error: transforms[0].config.tls.key: ...`).
///
/// Nothing acts: secret sources are not prefetched (no value is fetched from
/// any store), the backend HTTP client and gRPC channels connect on first use
/// (never), no listener is bound, nothing is written; the transforms are
/// dropped on return. A gRPC channel needs a Tokio runtime to exist: call
/// this inside one.
pub fn check_build(cfg: &Config, skip: &dyn Fn(usize) -> bool) -> Vec<String> {
    let sources = Sources::new(crate::secrets::SourcesOptions::default());
    let limits = limits_of(cfg);
    let mut failures = Vec::new();
    for (index, t) in cfg.transforms.iter().enumerate() {
        if skip(index) {
            continue;
        }
        let failed = match build_transform(index, t, &sources, &limits) {
            Err(AppError::Transform { field, detail, .. }) => Some((field, detail)),
            _ => keyfile_failure(t),
        };
        if let Some((field, detail)) = failed {
            let path = format!("transforms[{index}].config.{field}");
            failures.push(format!("{}: error: {path}: {detail}", cfg.locate(&path)));
        }
    }
    failures
}

/// A `gcp_auth` keyfile that is there but would fail every mint (not JSON,
/// a field missing, a private key that does not load, an unsupported
/// type): what only the first request would find. The field and what is
/// wrong; never the file's content. A keyfile that is not there is the
/// reference check's (a warning; it may be provisioned later).
fn keyfile_failure(t: &TransformConfig) -> Option<(String, String)> {
    let TransformConfig::GcpAuth(c) = t else {
        return None;
    };
    let crate::config::GcpCredentials::KeyfilePath(path) = &c.credentials else {
        return None;
    };
    let path = std::path::Path::new(path);
    if !path.exists() {
        return None;
    }
    let checked = crate::config_source::file::read_named(path)
        .map_err(|e| e.to_string())
        .and_then(|b| String::from_utf8(b).map_err(|_| "it is not UTF-8".to_string()))
        .and_then(|text| transforms::gcp_auth::check_keyfile(&text, c));
    checked
        .err()
        .map(|e| ("keyfile_path".into(), format!("{}: {e}", path.display())))
}

fn build_transform(
    index: usize,
    t: &TransformConfig,
    sources: &Sources,
    limits: &Limits,
) -> Result<Arc<dyn Transform>, AppError> {
    let name = t.name();
    let failed = |field: String, detail: String| AppError::Transform {
        index,
        name,
        field,
        detail,
    };
    Ok(match t {
        TransformConfig::Allowlist(c) => Arc::new(transforms::allowlist::Allowlist::new(
            c.domains.clone(),
            c.cidrs.clone(),
            c.rules.clone(),
            c.warn,
        )),
        TransformConfig::Secrets(c) => transforms::secrets::build(c, sources)
            .map_err(|e| failed(e.field(), crate::error_chain(&e)))?,
        TransformConfig::HeaderAllowlist(c) => transforms::header_allowlist::build(c),
        TransformConfig::Annotate(c) => {
            transforms::annotate::build(c).map_err(|e| failed(e.field(), crate::error_chain(&e)))?
        }
        TransformConfig::BodyCapture(c) => transforms::body_capture::build(c),
        TransformConfig::HmacSign(c) => transforms::hmac_sign::build(c, sources)
            .map_err(|e| failed(e.field(), crate::error_chain(&e)))?,
        TransformConfig::AwsAuth(c) => transforms::aws_auth::build(c, sources),
        TransformConfig::OauthToken(c) => transforms::oauth_token::build(c, sources)
            .map_err(|e| failed(e.field(), crate::error_chain(&e)))?,
        TransformConfig::GcpAuth(c) => transforms::gcp_auth::build(c, sources),
        TransformConfig::Judge(c) => transforms::judge::build(c, sources)
            .map_err(|e| failed(e.field(), crate::error_chain(&e)))?,
        TransformConfig::Grpc(c) => transforms::grpc::build(c, limits.max_response_body_bytes)
            .map_err(|e| failed(e.field(), crate::error_chain(&e)))?,
    })
}
