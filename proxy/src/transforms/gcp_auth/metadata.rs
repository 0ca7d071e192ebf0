//! The GCE/GKE metadata server, emulated for the transform's service account (spec: GCP
//! Service Accounts, "Metadata Server Stubbing": SDKs using Application Default Credentials
//! work transparently). Requests to `metadata.google.internal` or `169.254.169.254` for
//! what google-auth and Google's Go and Java clients ask during credential discovery are
//! answered by the proxy, with the response header `Metadata-Flavor: Google`, and never
//! dialled:
//!
//! - `GET /`: the ping that tells an SDK it runs on Google Cloud (200, no request header
//!   needed, as the real server; the Go client sends none);
//! - under `/computeMetadata/v1/`, only with the request header `Metadata-Flavor: Google`
//!   (without it: 403, as the real server answers):
//!   - `instance/service-accounts/{default,EMAIL}/`: `?recursive=true` gives
//!     `{"aliases":["default"],"email":…,"scopes":[…]}` (what google-auth's
//!     `compute_engine.Credentials` reads before its token), else the directory listing;
//!     its `email`, `scopes` and `aliases` leaves as text;
//!   - `instance/service-accounts/ACCOUNT/token`: the stub token (any account name);
//!   - `project/project-id`: the keyfile's `project_id` (404 without one);
//!   - `universe/universe-domain`: `googleapis.com`.
//!
//! `EMAIL` is the keyfile's `client_email`; without a service-account keyfile the account is
//! only `default`. Anything else (another account, `identity`, instance attributes) is not
//! answered here and goes on through the pipeline like any request.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::json;

use crate::body::Body;

/// The hosts of the metadata server.
pub(super) const HOSTS: [&str; 2] = ["metadata.google.internal", "169.254.169.254"];
/// The universe (API domain) every emulated account is in.
const UNIVERSE_DOMAIN: &str = "googleapis.com";

/// A request the emulation answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Query<'a> {
    /// `GET /`.
    Ping,
    /// A metadata path without `Metadata-Flavor: Google`.
    MissingFlavor,
    /// A service account's token.
    Token,
    /// A service account's description.
    Account {
        /// `default` or an e-mail, as requested.
        account: &'a str,
        /// What of it.
        leaf: Leaf,
    },
    /// `project/project-id`.
    ProjectId,
    /// `universe/universe-domain`.
    UniverseDomain,
}

/// What of a service account is asked for.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum Leaf {
    /// Its directory: as JSON when `recursive`, else the listing.
    Dir {
        /// `?recursive=true`.
        recursive: bool,
    },
    /// `email`.
    Email,
    /// `scopes`.
    Scopes,
    /// `aliases`.
    Aliases,
}

/// Who the emulated server says the workload runs as.
pub(super) struct Identity<'a> {
    /// The account's e-mail (`default` when unknown).
    pub(super) email: String,
    /// The project, when the credentials name one.
    pub(super) project_id: Option<String>,
    /// The transform's scopes.
    pub(super) scopes: &'a [String],
}

/// The request the emulation answers, if this is one: `host` the destination, `query` the
/// URI's query string, `flavor` whether the request carries `Metadata-Flavor: Google`.
pub(super) fn classify<'a>(
    host: &str,
    path: &'a str,
    query: Option<&str>,
    flavor: bool,
) -> Option<Query<'a>> {
    if !HOSTS.iter().any(|h| host.eq_ignore_ascii_case(h)) {
        return None;
    }
    if path.is_empty() || path == "/" {
        return Some(Query::Ping);
    }
    let rest = path.strip_prefix("/computeMetadata/v1/")?;
    let found = if let Some(account) = rest.strip_prefix("instance/service-accounts/") {
        let (account, tail) = account.split_once('/').unwrap_or((account, ""));
        if account.is_empty() {
            return None;
        }
        let leaf = match tail.trim_end_matches('/') {
            "token" => return flavored(Query::Token, flavor),
            "" => Leaf::Dir {
                recursive: recursive(query),
            },
            "email" => Leaf::Email,
            "scopes" => Leaf::Scopes,
            "aliases" => Leaf::Aliases,
            _ => return None,
        };
        Query::Account { account, leaf }
    } else {
        match rest.trim_end_matches('/') {
            "project/project-id" => Query::ProjectId,
            "universe/universe-domain" => Query::UniverseDomain,
            _ => return None,
        }
    };
    flavored(found, flavor)
}

fn flavored(q: Query<'_>, flavor: bool) -> Option<Query<'_>> {
    Some(if flavor { q } else { Query::MissingFlavor })
}

/// `recursive=true` in a query string.
fn recursive(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "recursive" && v.eq_ignore_ascii_case("true"))
    })
}

/// The answer to `q` (not [`Query::Token`], which is the stub token), or `None` for an
/// account other than `default` and the identity's own.
pub(super) fn answer(q: &Query<'_>, id: &Identity<'_>) -> Option<Response<Body>> {
    let text = |s: String| (StatusCode::OK, "application/text", s);
    let (status, kind, body) = match q {
        Query::Ping => text("computeMetadata/\n".into()),
        Query::MissingFlavor => (
            StatusCode::FORBIDDEN,
            "text/plain; charset=utf-8",
            "Missing required header: \"Metadata-Flavor: Google\"\n".into(),
        ),
        Query::Token => return None,
        Query::Account { account, leaf } => {
            if *account != "default" && !account.eq_ignore_ascii_case(&id.email) {
                return None;
            }
            match leaf {
                Leaf::Dir { recursive: true } => (
                    StatusCode::OK,
                    "application/json",
                    json!({"aliases": ["default"], "email": id.email, "scopes": id.scopes})
                        .to_string(),
                ),
                Leaf::Dir { recursive: false } => text("aliases\nemail\nscopes\ntoken\n".into()),
                Leaf::Email => text(id.email.clone()),
                Leaf::Scopes => text(id.scopes.iter().map(|s| format!("{s}\n")).collect()),
                Leaf::Aliases => text("default\n".into()),
            }
        }
        Query::ProjectId => match &id.project_id {
            Some(p) => text(p.clone()),
            None => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "Not Found\n".into(),
            ),
        },
        Query::UniverseDomain => text(UNIVERSE_DOMAIN.into()),
    };
    let mut rsp = Response::new(crate::body::full(body));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    flavor(&mut rsp);
    Some(rsp)
}

/// Marks a response as the metadata server's (`Metadata-Flavor: Google`).
pub(super) fn flavor(rsp: &mut Response<Body>) {
    rsp.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
}
