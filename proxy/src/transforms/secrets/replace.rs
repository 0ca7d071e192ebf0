//! Replace mode: finding the proxy token and swapping in the real value, in
//! headers (Basic auth decoded), the query, the path and the body.

use std::str::FromStr;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::uri::{PathAndQuery, Uri};
use http::Request;
use percent_encoding::{
    percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC,
};
use zeroize::Zeroizing;

use crate::body::Body;
use crate::config::{HeaderMatcher, ReplaceConfig};
use crate::pipeline::{body_bytes, set_body_bytes};
use crate::secrets::SecretValue;

/// Characters escaped when a value goes into a path segment.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// Characters kept as-is in a query key or value: RFC 3986 unreserved.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A built replace entry.
pub(super) struct Replace {
    token: String,
    matchers: Vec<HeaderMatcher>,
    pub(super) match_body: bool,
    match_path: bool,
    match_query: bool,
    pub(super) require: bool,
}

/// Where the token was seen.
pub(super) enum Hit {
    /// A header, with the name to report.
    Header(HeaderName, String),
    /// Somewhere in the query.
    Query,
    /// The path.
    Path,
    /// The buffered body.
    Body,
}

impl Replace {
    pub(super) fn new(cfg: &ReplaceConfig) -> Self {
        Replace {
            token: cfg.proxy_value.clone(),
            matchers: cfg.match_headers.clone(),
            match_body: cfg.match_body,
            match_path: cfg.match_path,
            match_query: cfg.match_query,
            require: cfg.require,
        }
    }

    /// The literal `match_headers` names, whose written casing goes on the wire.
    pub(super) fn literal_names(&self) -> impl Iterator<Item = &str> {
        self.matchers.iter().filter_map(HeaderMatcher::literal)
    }

    /// Every scanned location holding the token.
    pub(super) fn scan(&self, req: &Request<Body>) -> Vec<Hit> {
        let mut hits = Vec::new();
        let token = self.token.as_bytes();
        for name in req.headers().keys() {
            if !super::selects(&self.matchers, name.as_str()) {
                continue;
            }
            let found = req.headers().get_all(name).iter().any(|v| {
                contains(v.as_bytes(), token)
                    || basic_payload(name, v).is_some_and(|p| contains(p.as_bytes(), token))
            });
            if found {
                let label = self
                    .matchers
                    .iter()
                    .filter_map(HeaderMatcher::literal)
                    .find(|l| l.eq_ignore_ascii_case(name.as_str()))
                    .map(str::to_string)
                    .unwrap_or_else(|| canonical(name.as_str()));
                hits.push(Hit::Header(name.clone(), label));
            }
        }
        if self.match_query {
            if let Some(q) = req.uri().query() {
                if query_pairs(q).any(|(_, _, v)| v.contains(&self.token)) {
                    hits.push(Hit::Query);
                }
            }
        }
        if self.match_path && req.uri().path().contains(&self.token) {
            hits.push(Hit::Path);
        }
        if self.match_body && body_bytes(req).is_some_and(|b| contains(b, token)) {
            hits.push(Hit::Body);
        }
        hits
    }

    /// Swaps the token for `value` at every hit; returns the audit locations.
    pub(super) fn apply(
        &self,
        req: &mut Request<Body>,
        hits: &[Hit],
        value: &SecretValue,
    ) -> Result<Vec<String>, String> {
        let mut locations = Vec::new();
        let real = value.expose();
        for hit in hits {
            match hit {
                Hit::Header(name, label) => {
                    let all: Vec<HeaderValue> =
                        req.headers().get_all(name).iter().cloned().collect();
                    req.headers_mut().remove(name);
                    for v in all {
                        let nv = self.swap_header(name, &v, real)?;
                        req.headers_mut().append(name.clone(), nv);
                    }
                    locations.push(format!("header:{label}"));
                }
                Hit::Query => {
                    let uri = req.uri().clone();
                    let q = uri.query().unwrap_or("");
                    let mut out = Zeroizing::new(String::with_capacity(q.len()));
                    for (i, (raw, key, val)) in query_pairs(q).enumerate() {
                        if i > 0 {
                            out.push('&');
                        }
                        if val.contains(&self.token) {
                            let swapped = Zeroizing::new(val.replace(&self.token, real));
                            out.push_str(&utf8_percent_encode(&key, QUERY_VALUE).to_string());
                            out.push('=');
                            out.push_str(&utf8_percent_encode(&swapped, QUERY_VALUE).to_string());
                            locations.push(format!("query:{key}"));
                        } else {
                            out.push_str(raw);
                        }
                    }
                    set_path_and_query(req, uri.path(), Some(&out))?;
                }
                Hit::Path => {
                    let uri = req.uri().clone();
                    let encoded =
                        Zeroizing::new(utf8_percent_encode(real, PATH_SEGMENT).to_string());
                    let path = Zeroizing::new(uri.path().replace(&self.token, &encoded));
                    set_path_and_query(req, &path, uri.query())?;
                    locations.push("path".into());
                }
                Hit::Body => {
                    if let Some(b) = body_bytes(req) {
                        let swapped = replace_bytes(b, self.token.as_bytes(), real.as_bytes());
                        set_body_bytes(req, Bytes::from(swapped));
                        locations.push("body".into());
                    }
                }
            }
        }
        Ok(locations)
    }

    fn swap_header(
        &self,
        name: &HeaderName,
        v: &HeaderValue,
        real: &str,
    ) -> Result<HeaderValue, String> {
        let token = self.token.as_bytes();
        let bytes: Zeroizing<Vec<u8>> = if contains(v.as_bytes(), token) {
            Zeroizing::new(replace_bytes(v.as_bytes(), token, real.as_bytes()))
        } else if let Some(payload) = basic_payload(name, v).filter(|p| p.contains(&self.token)) {
            let swapped = Zeroizing::new(payload.replace(&self.token, real));
            let enc = Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(swapped.as_bytes()),
            );
            Zeroizing::new(format!("Basic {}", enc.as_str()).into_bytes())
        } else {
            return Ok(v.clone());
        };
        let mut nv = HeaderValue::from_bytes(&bytes)
            .map_err(|_| format!("the value is not valid in header {name}"))?;
        nv.set_sensitive(true);
        Ok(nv)
    }
}

/// The decoded `user:pass` of an `Authorization: Basic` value.
fn basic_payload(name: &HeaderName, v: &HeaderValue) -> Option<Zeroizing<String>> {
    if name != AUTHORIZATION {
        return None;
    }
    let s = v.to_str().ok()?;
    let (scheme, rest) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?,
    );
    std::str::from_utf8(&raw)
        .ok()
        .map(|s| Zeroizing::new(s.to_string()))
}

/// `(raw pair, decoded key, decoded value)` for each `&`-separated pair.
fn query_pairs(q: &str) -> impl Iterator<Item = (&str, String, Zeroizing<String>)> {
    q.split('&').map(|raw| {
        let (k, v) = raw.split_once('=').unwrap_or((raw, ""));
        let dec = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (raw, dec(k), Zeroizing::new(dec(v)))
    })
}

/// Replaces the path and query of the (absolute) request URI.
fn set_path_and_query(
    req: &mut Request<Body>,
    path: &str,
    query: Option<&str>,
) -> Result<(), String> {
    let pq = Zeroizing::new(match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    });
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::from_str(&pq).map_err(|_| "the value does not fit in a URL".to_string())?,
    );
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|_| "the value does not fit in a URL".to_string())?;
    Ok(())
}

/// Sets query parameter `name` to `value`, dropping earlier values of it.
pub(super) fn set_query_param(
    req: &mut Request<Body>,
    name: &str,
    value: &str,
) -> Result<(), String> {
    let uri = req.uri().clone();
    let mut out = Zeroizing::new(String::new());
    if let Some(q) = uri.query() {
        for (raw, key, _) in query_pairs(q) {
            if key != name && !raw.is_empty() {
                out.push_str(raw);
                out.push('&');
            }
        }
    }
    out.push_str(&utf8_percent_encode(name, QUERY_VALUE).to_string());
    out.push('=');
    out.push_str(&utf8_percent_encode(value, QUERY_VALUE).to_string());
    set_path_and_query(req, uri.path(), Some(&out))
}

/// Go's canonical header form: `x-api-key` → `X-Api-Key`.
pub(crate) fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn replace_bytes(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len() + with.len());
    let mut i = 0;
    while i < hay.len() {
        if !needle.is_empty() && hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}
