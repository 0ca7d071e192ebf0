//! The cloud credential transforms: `gcp_auth` and `aws_auth`. Credentials
//! are secret sources or the platform's workload identity.

use std::path::PathBuf;

use super::aws_region;
use super::decode::{one_of, Cx, Decode, Failed, Res};
use super::sources::SecretSourceConfig;
use super::yaml::{Kind, Node};
use crate::rules::{Rule, Scope};

/// `gcp_auth`: Google access tokens from a service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpAuthConfig {
    /// Where the service account comes from.
    pub credentials: GcpCredentials,
    /// Workspace user to impersonate (domain-wide delegation; never with the provider).
    pub subject: Option<String>,
    /// OAuth2 scopes (at least one).
    pub scopes: Vec<String>,
    /// Where it applies (empty: everywhere).
    pub rules: Scope,
    /// `scrub_response_bodies` (our addition; default true): mask, in the
    /// response body, the token this transform put in the request, as the
    /// response headers always are.
    pub scrub_response_bodies: bool,
}

/// Exactly one of `keyfile_path`, `keyfile`, `credentials_provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcpCredentials {
    /// `keyfile_path`: a JSON keyfile on disk.
    KeyfilePath(PathBuf),
    /// `keyfile`: a secret source holding the keyfile JSON.
    Keyfile(SecretSourceConfig),
    /// `credentials_provider: {type: workload_identity}`: Google's default chain.
    WorkloadIdentity,
}

/// `credentials_provider` for GCP (`type` only) or AWS (`type`, optional `region`).
fn workload_identity(node: &Node, cx: &mut Cx, fields: &[&'static str]) -> Res<Option<String>> {
    let m = cx.map(node, fields)?;
    let kind = m.req_with(cx, "type", |n, cx| {
        one_of(
            n,
            cx,
            "credentials provider type",
            &[("workload_identity", ())],
        )
    });
    let region = if fields.contains(&"region") {
        m.opt_with(cx, "region", |n, cx| {
            let region = String::decode(n, cx)?;
            let consequence = "The credential chain calls AWS (STS) in this region, and AWS has \
                               no region of this name.";
            if let Some(w) = aws_region::warning(&region, consequence) {
                cx.warn(n.pos, w);
            }
            Ok(region)
        })
    } else {
        Ok(None)
    };
    kind?;
    region
}

impl Decode for GcpAuthConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(
            node,
            &[
                "keyfile_path",
                "keyfile",
                "credentials_provider",
                "subject",
                "scopes",
                "rules",
                "scrub_response_bodies",
            ],
        )?;
        let path = m.opt::<PathBuf>(cx, "keyfile_path");
        let keyfile = m.opt::<SecretSourceConfig>(cx, "keyfile");
        let provider = m.opt_with(cx, "credentials_provider", |n, cx| {
            workload_identity(n, cx, &["type"])
        });
        let subject = m.opt::<String>(cx, "subject");
        let scopes = m.non_empty::<String>(cx, "scopes", "scope");
        let rules = m.or_default(cx, "rules");
        let scrub_response_bodies = m.or(cx, "scrub_response_bodies", true);
        let credentials = match (path?, keyfile?, provider?) {
            (Some(p), None, None) => Ok(GcpCredentials::KeyfilePath(p)),
            (None, Some(k), None) => Ok(GcpCredentials::Keyfile(k)),
            (None, None, Some(_)) => Ok(GcpCredentials::WorkloadIdentity),
            _ => Err(cx.error(
                m.pos,
                "exactly one of 'keyfile_path', 'keyfile' or 'credentials_provider' must be set",
            )),
        };
        let subject = subject?;
        if let (Ok(GcpCredentials::WorkloadIdentity), Some(_)) = (&credentials, &subject) {
            let pos = m.key_pos("subject").unwrap_or(m.pos);
            return Err(cx.error(
                pos,
                "'subject' (domain-wide delegation) is incompatible with 'credentials_provider'",
            ));
        }
        Ok(GcpAuthConfig {
            credentials: credentials?,
            subject,
            scopes: scopes?,
            rules: rules?,
            scrub_response_bodies: scrub_response_bodies?,
        })
    }
}

/// `aws_auth`: re-signs SigV4 requests with real credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsAuthConfig {
    /// Static keys or the SDK's default chain.
    pub credentials: AwsCredentials,
    /// Allowed regions (empty: any).
    pub allowed_regions: Vec<String>,
    /// Allowed services (empty: any).
    pub allowed_services: Vec<String>,
    /// Sign `UNSIGNED-PAYLOAD` instead of hashing the body.
    pub unsigned_payload: bool,
    /// Sign chunked bodies without length verification.
    pub allow_chunked_body: bool,
    /// Where it applies (at least one rule).
    pub rules: Scope,
    /// `scrub_response_bodies` (our addition; default true): mask, in the
    /// response body, the session token this transform put in the request,
    /// as the response headers always are.
    pub scrub_response_bodies: bool,
}

/// Either static credentials or `credentials_provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // built once per config load; size does not matter
pub enum AwsCredentials {
    /// `access_key_id` + `secret_access_key` (+ optional `session_token`).
    Static {
        /// Access key id.
        access_key_id: SecretSourceConfig,
        /// Secret access key.
        secret_access_key: SecretSourceConfig,
        /// Session token for temporary credentials.
        session_token: Option<SecretSourceConfig>,
    },
    /// `credentials_provider: {type: workload_identity, region?}`.
    WorkloadIdentity {
        /// Region override.
        region: Option<String>,
    },
}

impl Decode for AwsAuthConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(
            node,
            &[
                "access_key_id",
                "secret_access_key",
                "session_token",
                "credentials_provider",
                "allowed_regions",
                "allowed_services",
                "unsigned_payload",
                "allow_chunked_body",
                "rules",
                "scrub_response_bodies",
            ],
        )?;
        let provider = m.opt_with(cx, "credentials_provider", |n, cx| {
            workload_identity(n, cx, &["type", "region"])
        });
        let credentials = if m.has("credentials_provider") {
            let static_key = ["access_key_id", "secret_access_key", "session_token"]
                .into_iter()
                .find(|k| m.has(k));
            match (static_key, provider) {
                (Some(k), _) => {
                    let pos = m.key_pos(k).unwrap_or(m.pos);
                    Err(cx.error(
                        pos,
                        format!("'{k}' and 'credentials_provider' are mutually exclusive"),
                    ))
                }
                (None, p) => p.map(|r| AwsCredentials::WorkloadIdentity {
                    region: r.flatten(),
                }),
            }
        } else {
            let what = "(or set 'credentials_provider')";
            let id = m.req_with(cx, "access_key_id", SecretSourceConfig::decode);
            let secret = m.req_with(cx, "secret_access_key", SecretSourceConfig::decode);
            let token = m.opt::<SecretSourceConfig>(cx, "session_token");
            if id.is_err() || secret.is_err() {
                // "missing required field" was recorded; say how else to satisfy it.
                if let Some(last) = cx
                    .errors
                    .last_mut()
                    .filter(|e| e.message.starts_with("missing required field"))
                {
                    last.message = format!("{} {what}", last.message);
                }
            }
            match (id, secret, token) {
                (Ok(a), Ok(s), Ok(t)) => Ok(AwsCredentials::Static {
                    access_key_id: a,
                    secret_access_key: s,
                    session_token: t,
                }),
                _ => Err(Failed),
            }
        };
        let regions = m.or_default(cx, "allowed_regions");
        if let Some(Kind::Seq(items)) = m.node("allowed_regions").map(|n| &n.kind) {
            warn_region_near_misses(items, cx);
        }
        let services = m.or_default(cx, "allowed_services");
        let unsigned = m.or(cx, "unsigned_payload", false);
        let chunked = m.or(cx, "allow_chunked_body", false);
        let rules = m.non_empty::<Rule>(cx, "rules", "rule");
        let scrub_response_bodies = m.or(cx, "scrub_response_bodies", true);
        Ok(AwsAuthConfig {
            credentials: credentials?,
            allowed_regions: regions?,
            allowed_services: services?,
            unsigned_payload: unsigned?,
            allow_chunked_body: chunked?,
            rules: Scope(rules?),
            scrub_response_bodies: scrub_response_bodies?,
        })
    }
}

/// Warns at each `allowed_regions` entry that is a near miss of an AWS
/// region's name (`us-east1`, `US-EAST-1`): the scope's region is compared
/// exactly, so such an entry admits nothing AWS would accept.
fn warn_region_near_misses(items: &[Node], cx: &mut Cx) {
    let consequence = "A request is signed only when its signature's region equals an entry \
                       exactly, and AWS SDKs sign with the region's own name, so this entry \
                       admits none (403 region_not_allowed).";
    cx.key("allowed_regions", |cx| {
        for (i, item) in items.iter().enumerate() {
            let Some(w) = item
                .scalar()
                .and_then(|r| aws_region::warning(r, consequence))
            else {
                continue;
            };
            cx.index(i, |cx| cx.warn(item.pos, w));
        }
    });
}
