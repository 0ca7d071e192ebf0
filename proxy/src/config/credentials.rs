//! The credential-minting and signing transforms: `gcp_auth`, `oauth_token`,
//! `aws_auth` and `hmac_sign`. Each credential field is a secret source.

use std::path::PathBuf;

use url::Url;

use super::common::{header_name, template, SecretSourceConfig};
use super::decode::{entries, one_of, Cx, Decode, Failed, MapDe, Res};
use super::transforms::http_url;
use super::yaml::{Kind, Node};
use crate::rules::{Rule, Scope};
use crate::template::Template;

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
fn workload_identity(node: &Node, cx: &mut Cx, fields: &[&str]) -> Res<Option<String>> {
    let m = cx.map(node, fields)?;
    let kind = m.req_with(cx, "type", |n, cx| one_of(n, cx, "credentials provider type", &[("workload_identity", ())]));
    let region = if fields.contains(&"region") { m.opt::<String>(cx, "region") } else { Ok(None) };
    kind?;
    region
}

impl Decode for GcpAuthConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["keyfile_path", "keyfile", "credentials_provider", "subject", "scopes", "rules"])?;
        let path = m.opt::<PathBuf>(cx, "keyfile_path");
        let keyfile = m.opt::<SecretSourceConfig>(cx, "keyfile");
        let provider = m.opt_with(cx, "credentials_provider", |n, cx| workload_identity(n, cx, &["type"]));
        let subject = m.opt::<String>(cx, "subject");
        let scopes = m.non_empty::<String>(cx, "scopes", "scope");
        let rules = m.or_default(cx, "rules");
        let credentials = match (path?, keyfile?, provider?) {
            (Some(p), None, None) => Ok(GcpCredentials::KeyfilePath(p)),
            (None, Some(k), None) => Ok(GcpCredentials::Keyfile(k)),
            (None, None, Some(_)) => Ok(GcpCredentials::WorkloadIdentity),
            _ => Err(cx.error(m.pos, "exactly one of 'keyfile_path', 'keyfile' or 'credentials_provider' must be set")),
        };
        let subject = subject?;
        if let (Ok(GcpCredentials::WorkloadIdentity), Some(_)) = (&credentials, &subject) {
            let pos = m.key_pos("subject").unwrap_or(m.pos);
            return Err(cx.error(pos, "'subject' (domain-wide delegation) is incompatible with 'credentials_provider'"));
        }
        Ok(GcpAuthConfig { credentials: credentials?, subject, scopes: scopes?, rules: rules? })
    }
}

/// `oauth_token`: OAuth2 bearer tokens minted at the boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthTokenConfig {
    /// Token entries (at least one); the first match wins.
    pub tokens: Vec<OAuthTokenEntry>,
}

/// One `oauth_token.tokens[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthTokenEntry {
    /// The grant with its credentials.
    pub grant: OAuthGrant,
    /// Where tokens are minted (also stubbed for clients).
    pub token_endpoint: Url,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Where it applies (at least one rule).
    pub rules: Scope,
    /// Injected header (default `Authorization`).
    pub header: String,
    /// Prefix before the token (default `Bearer `).
    pub value_prefix: String,
    /// Extra headers on the token POST, header name to secret source, in order.
    pub token_endpoint_headers: Vec<(String, SecretSourceConfig)>,
}

/// The grant and exactly the credentials it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthGrant {
    /// `refresh_token`
    RefreshToken {
        /// Required.
        refresh_token: SecretSourceConfig,
        /// Required.
        client_id: SecretSourceConfig,
        /// Optional (public PKCE clients omit it).
        client_secret: Option<SecretSourceConfig>,
    },
    /// `client_credentials`
    ClientCredentials {
        /// Required.
        client_id: SecretSourceConfig,
        /// Required.
        client_secret: SecretSourceConfig,
    },
    /// `password`
    Password {
        /// Required.
        username: SecretSourceConfig,
        /// Required.
        password: SecretSourceConfig,
        /// Required.
        client_id: SecretSourceConfig,
        /// Optional.
        client_secret: Option<SecretSourceConfig>,
    },
    /// `jwt_bearer` (RFC 7523)
    JwtBearer {
        /// Required: JWT `iss`.
        issuer: SecretSourceConfig,
        /// Required: JWT `sub`.
        subject: SecretSourceConfig,
        /// Required: PEM RSA private key.
        private_key: SecretSourceConfig,
        /// Optional: JWT `kid`.
        private_key_id: Option<SecretSourceConfig>,
        /// Required: JWT `aud`.
        audience: String,
    },
}

impl OAuthGrant {
    /// The grant name as written.
    pub fn name(&self) -> &'static str {
        match self {
            OAuthGrant::RefreshToken { .. } => "refresh_token",
            OAuthGrant::ClientCredentials { .. } => "client_credentials",
            OAuthGrant::Password { .. } => "password",
            OAuthGrant::JwtBearer { .. } => "jwt_bearer",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Grant {
    Refresh,
    Client,
    Password,
    Jwt,
}

const GRANTS: [(&str, Grant); 4] =
    [("refresh_token", Grant::Refresh), ("client_credentials", Grant::Client), ("password", Grant::Password), ("jwt_bearer", Grant::Jwt)];

/// Credential fields and which grants take them.
const GRANT_FIELDS: [(&str, &[Grant]); 10] = [
    ("refresh_token", &[Grant::Refresh]),
    ("client_id", &[Grant::Refresh, Grant::Client, Grant::Password]),
    ("client_secret", &[Grant::Refresh, Grant::Client, Grant::Password]),
    ("username", &[Grant::Password]),
    ("password", &[Grant::Password]),
    ("issuer", &[Grant::Jwt]),
    ("subject", &[Grant::Jwt]),
    ("private_key", &[Grant::Jwt]),
    ("private_key_id", &[Grant::Jwt]),
    ("audience", &[Grant::Jwt]),
];

fn grant(m: &MapDe<'_>, cx: &mut Cx, kind: Grant, name: &str) -> Res<OAuthGrant> {
    for (field, grants) in GRANT_FIELDS {
        if let (Some(pos), false) = (m.key_pos(field), grants.contains(&kind)) {
            cx.error(pos, format!("field '{field}' is not used by grant '{name}'"));
        }
    }
    let src = |cx: &mut Cx, f: &str| -> Res<SecretSourceConfig> {
        m.req_with(cx, f, SecretSourceConfig::decode)
    };
    let opt = |cx: &mut Cx, f: &str| m.opt::<SecretSourceConfig>(cx, f);
    Ok(match kind {
        Grant::Refresh => {
            let (r, id, secret) = (src(cx, "refresh_token"), src(cx, "client_id"), opt(cx, "client_secret"));
            OAuthGrant::RefreshToken { refresh_token: r?, client_id: id?, client_secret: secret? }
        }
        Grant::Client => {
            let (id, secret) = (src(cx, "client_id"), src(cx, "client_secret"));
            OAuthGrant::ClientCredentials { client_id: id?, client_secret: secret? }
        }
        Grant::Password => {
            let (u, p) = (src(cx, "username"), src(cx, "password"));
            let (id, secret) = (src(cx, "client_id"), opt(cx, "client_secret"));
            OAuthGrant::Password { username: u?, password: p?, client_id: id?, client_secret: secret? }
        }
        Grant::Jwt => {
            let (iss, sub, key) = (src(cx, "issuer"), src(cx, "subject"), src(cx, "private_key"));
            let (kid, aud) = (opt(cx, "private_key_id"), m.req::<String>(cx, "audience"));
            OAuthGrant::JwtBearer { issuer: iss?, subject: sub?, private_key: key?, private_key_id: kid?, audience: aud? }
        }
    })
}

impl Decode for OAuthTokenEntry {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let mut fields = vec!["grant", "token_endpoint", "scopes", "rules", "header", "value_prefix", "token_endpoint_headers"];
        fields.extend(GRANT_FIELDS.iter().map(|(f, _)| *f));
        let m = cx.map(node, &fields)?;
        let kind = m.req_with(cx, "grant", |n, cx| one_of(n, cx, "grant", &GRANTS));
        let creds = match kind {
            Ok(k) => {
                let name = GRANTS.iter().find(|(_, g)| *g == k).map_or("", |(n, _)| *n);
                grant(&m, cx, k, name)
            }
            Err(f) => Err(f),
        };
        let token_endpoint = m.req_with(cx, "token_endpoint", http_url);
        let scopes = m.or_default(cx, "scopes");
        let rules = m.non_empty::<Rule>(cx, "rules", "rule");
        let header = m.opt_with(cx, "header", header_name);
        let value_prefix = m.opt::<String>(cx, "value_prefix");
        let headers = m.opt_with(cx, "token_endpoint_headers", |n, cx| {
            let list = entries::<SecretSourceConfig>(n, cx)?;
            for (name, _) in &list {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(cx.error(n.pos, format!("invalid header name {name:?}")));
                }
            }
            Ok(list)
        });
        Ok(OAuthTokenEntry {
            grant: creds?,
            token_endpoint: token_endpoint?,
            scopes: scopes?,
            rules: Scope(rules?),
            header: header?.unwrap_or_else(|| "Authorization".into()),
            value_prefix: value_prefix?.unwrap_or_else(|| "Bearer ".into()),
            token_endpoint_headers: headers?.unwrap_or_default(),
        })
    }
}

impl Decode for OAuthTokenConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["tokens"])?;
        Ok(OAuthTokenConfig { tokens: m.non_empty(cx, "tokens", "token entry")? })
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
}

/// Either static credentials or `credentials_provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
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
            ],
        )?;
        let provider = m.opt_with(cx, "credentials_provider", |n, cx| workload_identity(n, cx, &["type", "region"]));
        let credentials = if m.has("credentials_provider") {
            let static_key = ["access_key_id", "secret_access_key", "session_token"].into_iter().find(|k| m.has(k));
            match (static_key, provider) {
                (Some(k), _) => {
                    let pos = m.key_pos(k).unwrap_or(m.pos);
                    Err(cx.error(pos, format!("'{k}' and 'credentials_provider' are mutually exclusive")))
                }
                (None, p) => p.map(|r| AwsCredentials::WorkloadIdentity { region: r.flatten() }),
            }
        } else {
            let what = "(or set 'credentials_provider')";
            let id = m.req_with(cx, "access_key_id", SecretSourceConfig::decode);
            let secret = m.req_with(cx, "secret_access_key", SecretSourceConfig::decode);
            let token = m.opt::<SecretSourceConfig>(cx, "session_token");
            if id.is_err() || secret.is_err() {
                // "missing required field" was recorded; say how else to satisfy it.
                if let Some(last) = cx.errors.last_mut().filter(|e| e.message.starts_with("missing required field")) {
                    last.message = format!("{} {what}", last.message);
                }
            }
            match (id, secret, token) {
                (Ok(a), Ok(s), Ok(t)) => Ok(AwsCredentials::Static { access_key_id: a, secret_access_key: s, session_token: t }),
                _ => Err(Failed),
            }
        };
        let regions = m.or_default(cx, "allowed_regions");
        let services = m.or_default(cx, "allowed_services");
        let unsigned = m.or(cx, "unsigned_payload", false);
        let chunked = m.or(cx, "allow_chunked_body", false);
        let rules = m.non_empty::<Rule>(cx, "rules", "rule");
        Ok(AwsAuthConfig {
            credentials: credentials?,
            allowed_regions: regions?,
            allowed_services: services?,
            unsigned_payload: unsigned?,
            allow_chunked_body: chunked?,
            rules: Scope(rules?),
        })
    }
}

/// `hmac_sign`: HMAC signatures over a templated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSignConfig {
    /// `timestamp:`
    pub timestamp: HmacTimestamp,
    /// `signature:`
    pub signature: HmacSignature,
    /// Credential name to source, in order; always contains `secret` (the key).
    pub credentials: Vec<(String, SecretSourceConfig)>,
    /// Headers to set, in order.
    pub headers: Vec<HmacHeader>,
    /// Sign chunked bodies.
    pub allow_chunked_body: bool,
    /// Where it applies (at least one rule).
    pub rules: Scope,
}

/// `timestamp:`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HmacTimestamp {
    /// The format.
    pub format: TimestampFormat,
}

/// `timestamp.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    /// `unix_seconds`
    UnixSeconds,
    /// `unix_millis`
    UnixMillis,
    /// `unix_nanos`
    UnixNanos,
    /// `rfc3339`
    Rfc3339,
}

/// `signature:`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSignature {
    /// Hash.
    pub algorithm: HmacAlgorithm,
    /// How the key is decoded before use.
    pub key_encoding: KeyEncoding,
    /// How the signature is encoded.
    pub output_encoding: OutputEncoding,
    /// The signed message template.
    pub message: Template,
}

/// `signature.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// `sha256`
    Sha256,
    /// `sha512`
    Sha512,
    /// `sha1`
    Sha1,
}

/// `signature.key_encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEncoding {
    /// `raw`
    Raw,
    /// `base64`
    Base64,
    /// `hex`
    Hex,
}

/// `signature.output_encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputEncoding {
    /// `base64`
    Base64,
    /// `hex`
    Hex,
}

/// One `headers[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacHeader {
    /// Header name as written.
    pub name: String,
    /// Value template over `.Timestamp`, `.Signature`, `.Credentials.<name>`.
    pub value: Template,
}

/// Fields of the message template; `Credentials` is checked against the credential names.
pub const HMAC_MESSAGE_FIELDS: [&str; 8] = ["Timestamp", "Method", "Path", "PathWithQuery", "Query", "Host", "Body", "Credentials"];
/// Fields of header value templates.
pub const HMAC_HEADER_FIELDS: [&str; 3] = ["Timestamp", "Signature", "Credentials"];

impl Decode for HmacSignConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["timestamp", "signature", "credentials", "headers", "allow_chunked_body", "rules"])?;
        let credentials = m.req_with(cx, "credentials", |n, cx| {
            let list = entries::<SecretSourceConfig>(n, cx)?;
            if !list.iter().any(|(k, _)| k == "secret") {
                return Err(cx.error(n.pos, "missing credential 'secret' (the HMAC key)"));
            }
            Ok(list)
        });
        // Templates are checked against the credential names; if those failed, only the fixed fields.
        let names: Option<Vec<&str>> = credentials.as_ref().ok().map(|c| c.iter().map(|(k, _)| k.as_str()).collect());
        let names = names.as_deref();
        let timestamp = m.req_with(cx, "timestamp", |n, cx| {
            let t = cx.map(n, &["format"])?;
            let formats = [
                ("unix_seconds", TimestampFormat::UnixSeconds),
                ("unix_millis", TimestampFormat::UnixMillis),
                ("unix_nanos", TimestampFormat::UnixNanos),
                ("rfc3339", TimestampFormat::Rfc3339),
            ];
            Ok(HmacTimestamp { format: t.req_with(cx, "format", |n, cx| one_of(n, cx, "timestamp format", &formats))? })
        });
        let signature = m.req_with(cx, "signature", |n, cx| {
            let s = cx.map(n, &["algorithm", "key_encoding", "output_encoding", "message"])?;
            let algos = [("sha256", HmacAlgorithm::Sha256), ("sha512", HmacAlgorithm::Sha512), ("sha1", HmacAlgorithm::Sha1)];
            let keys = [("raw", KeyEncoding::Raw), ("base64", KeyEncoding::Base64), ("hex", KeyEncoding::Hex)];
            let outs = [("base64", OutputEncoding::Base64), ("hex", OutputEncoding::Hex)];
            let algorithm = s.req_with(cx, "algorithm", |n, cx| one_of(n, cx, "algorithm", &algos));
            let key_encoding = s.req_with(cx, "key_encoding", |n, cx| one_of(n, cx, "key encoding", &keys));
            let output_encoding = s.req_with(cx, "output_encoding", |n, cx| one_of(n, cx, "output encoding", &outs));
            let message = s.req_with(cx, "message", |n, cx| template(n, cx, &HMAC_MESSAGE_FIELDS, names));
            Ok(HmacSignature {
                algorithm: algorithm?,
                key_encoding: key_encoding?,
                output_encoding: output_encoding?,
                message: message?,
            })
        });
        let headers = m.req_with(cx, "headers", |n, cx| hmac_headers(n, cx, names));
        let chunked = m.or(cx, "allow_chunked_body", false);
        let rules = m.non_empty::<Rule>(cx, "rules", "rule");
        Ok(HmacSignConfig {
            timestamp: timestamp?,
            signature: signature?,
            credentials: credentials?,
            headers: headers?,
            allow_chunked_body: chunked?,
            rules: Scope(rules?),
        })
    }
}

/// `headers[]`: at least one, each value template checked against the credential names.
fn hmac_headers(node: &Node, cx: &mut Cx, names: Option<&[&str]>) -> Res<Vec<HmacHeader>> {
    let Kind::Seq(items) = &node.kind else {
        return Err(cx.error(node.pos, format!("expected a list, found {}", node.type_name())));
    };
    if items.is_empty() {
        return Err(cx.error(node.pos, "at least one header is required"));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut failed = false;
    for (i, item) in items.iter().enumerate() {
        let header = cx.index(i, |cx| {
            let h = cx.map(item, &["name", "value"])?;
            let name = h.req_with(cx, "name", header_name);
            let value = h.req_with(cx, "value", |n, cx| template(n, cx, &HMAC_HEADER_FIELDS, names));
            Ok(HmacHeader { name: name?, value: value? })
        });
        match header {
            Ok(h) => out.push(h),
            Err(Failed) => failed = true,
        }
    }
    if failed { Err(Failed) } else { Ok(out) }
}
