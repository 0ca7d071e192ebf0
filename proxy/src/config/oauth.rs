//! The `oauth_token` transform: OAuth2 bearer tokens minted at the boundary,
//! one entry per grant with exactly the credentials that grant takes.

use url::Url;

use super::common::{header_name, header_text, http_url};
use super::decode::{entries, one_of, Cx, Decode, MapDe, Res};
use super::sources::SecretSourceConfig;
use super::yaml::Node;
use crate::rules::{Rule, Scope};

/// `oauth_token`: OAuth2 bearer tokens minted at the boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthTokenConfig {
    /// Token entries (at least one); the first match wins.
    pub tokens: Vec<OAuthTokenEntry>,
    /// `scrub_response_bodies` (our addition; default true): mask, in the
    /// response body, the token this transform put in the request, as the
    /// response headers always are.
    pub scrub_response_bodies: bool,
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

const GRANTS: [(&str, Grant); 4] = [
    ("refresh_token", Grant::Refresh),
    ("client_credentials", Grant::Client),
    ("password", Grant::Password),
    ("jwt_bearer", Grant::Jwt),
];

/// Credential fields and which grants take them.
const GRANT_FIELDS: [(&str, &[Grant]); 10] = [
    ("refresh_token", &[Grant::Refresh]),
    (
        "client_id",
        &[Grant::Refresh, Grant::Client, Grant::Password],
    ),
    (
        "client_secret",
        &[Grant::Refresh, Grant::Client, Grant::Password],
    ),
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
            cx.error(
                pos,
                format!("field '{field}' is not used by grant '{name}'"),
            );
        }
    }
    let src = |cx: &mut Cx, f: &str| -> Res<SecretSourceConfig> {
        m.req_with(cx, f, SecretSourceConfig::decode)
    };
    let opt = |cx: &mut Cx, f: &str| m.opt::<SecretSourceConfig>(cx, f);
    Ok(match kind {
        Grant::Refresh => {
            let (r, id, secret) = (
                src(cx, "refresh_token"),
                src(cx, "client_id"),
                opt(cx, "client_secret"),
            );
            OAuthGrant::RefreshToken {
                refresh_token: r?,
                client_id: id?,
                client_secret: secret?,
            }
        }
        Grant::Client => {
            let (id, secret) = (src(cx, "client_id"), src(cx, "client_secret"));
            OAuthGrant::ClientCredentials {
                client_id: id?,
                client_secret: secret?,
            }
        }
        Grant::Password => {
            let (u, p) = (src(cx, "username"), src(cx, "password"));
            let (id, secret) = (src(cx, "client_id"), opt(cx, "client_secret"));
            OAuthGrant::Password {
                username: u?,
                password: p?,
                client_id: id?,
                client_secret: secret?,
            }
        }
        Grant::Jwt => {
            let (iss, sub, key) = (
                src(cx, "issuer"),
                src(cx, "subject"),
                src(cx, "private_key"),
            );
            let (kid, aud) = (opt(cx, "private_key_id"), m.req::<String>(cx, "audience"));
            OAuthGrant::JwtBearer {
                issuer: iss?,
                subject: sub?,
                private_key: key?,
                private_key_id: kid?,
                audience: aud?,
            }
        }
    })
}

impl Decode for OAuthTokenEntry {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let mut fields = vec![
            "grant",
            "token_endpoint",
            "scopes",
            "rules",
            "header",
            "value_prefix",
            "token_endpoint_headers",
        ];
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
        let value_prefix = m.opt_with(cx, "value_prefix", |n, cx| {
            let prefix = String::decode(n, cx)?;
            header_text(n, cx, "value_prefix", &prefix)?;
            Ok(prefix)
        });
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
        let m = cx.map(node, &["tokens", "scrub_response_bodies"])?;
        let tokens = m.non_empty(cx, "tokens", "token entry");
        let scrub_response_bodies = m.or(cx, "scrub_response_bodies", true);
        Ok(OAuthTokenConfig {
            tokens: tokens?,
            scrub_response_bodies: scrub_response_bodies?,
        })
    }
}
