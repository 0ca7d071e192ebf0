//! The `header_allowlist` transform: default-deny on request headers. A header
//! passes when a literal entry names it (case-insensitive) or a `/regex/`
//! entry matches its canonical name (`X-Trace-Id`); every other header is
//! removed and its canonical name recorded in the `stripped_headers`
//! annotation.
//!
//! Framing and connection headers are never touched, whatever the list says:
//! `Host` (the upstream needs it, and it names the destination the policy
//! already checked), `Content-Length` and `Transfer-Encoding` (body framing),
//! and `Connection`, `Upgrade` and `TE` (hop-by-hop, already reduced by the
//! exchange to what an upgrade or gRPC needs), and on a WebSocket upgrade
//! `Sec-WebSocket-Key` and `Sec-WebSocket-Version` (the handshake's nonce and
//! version, no data of the workload's; without them no upstream can answer
//! the upgrade; `Sec-WebSocket-Protocol` and `-Extensions` follow the list, as
//! a subprotocol can carry a token). Place the transform after the
//! credential transforms so the headers they set survive.
//!
//! When several `header_allowlist` transforms' rules select a request, the
//! first in config order applies and the later ones leave the request alone,
//! with the trace annotation `already_applied: true` (the spec's "when two
//! transforms of the same type target the same destination, the first one in
//! config order wins"). Order them from the most specific scope to the least.

use std::sync::Arc;

use async_trait::async_trait;
use http::header::HeaderName;
use http::Request;
use serde_json::Value;

use crate::body::Body;
use crate::config::{HeaderAllowlistConfig, HeaderMatcher};
use crate::pipeline::{Flow, Transform, TransformError, Verdict};
use crate::rules::Scope;
use crate::transforms::secrets::canonical;

/// Headers kept regardless of the list.
const ALWAYS_KEPT: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// Kept on a request that asks for an upgrade (the exchange keeps
/// `Upgrade` only on a WebSocket handshake).
const HANDSHAKE_KEPT: [&str; 2] = ["sec-websocket-key", "sec-websocket-version"];

/// Set in a request's [`Flow::ext`] by the `header_allowlist` that applied.
#[derive(Clone, Copy)]
struct Applied;

/// The built transform.
pub struct HeaderAllowlist {
    headers: Vec<HeaderMatcher>,
    rules: Scope,
}

/// Builds the transform.
pub fn build(cfg: &HeaderAllowlistConfig) -> Arc<dyn Transform> {
    Arc::new(HeaderAllowlist::new(cfg))
}

impl HeaderAllowlist {
    /// The transform, concretely typed.
    pub fn new(cfg: &HeaderAllowlistConfig) -> Self {
        HeaderAllowlist {
            headers: cfg.headers.clone(),
            rules: cfg.rules.clone(),
        }
    }

    /// True when the header named `name` (lowercase) passes.
    pub fn allows(&self, name: &str) -> bool {
        if ALWAYS_KEPT.contains(&name) {
            return true;
        }
        let canon = canonical(name);
        self.headers.iter().any(|m| match m {
            HeaderMatcher::Literal(l) => l.eq_ignore_ascii_case(name),
            HeaderMatcher::Regex(r) => r.is_match(&canon),
        })
    }
}

#[async_trait]
impl Transform for HeaderAllowlist {
    fn name(&self) -> &str {
        "header_allowlist"
    }

    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        // A filter: every request some server may read as matching.
        if !self.rules.inspects(&cx.target()) {
            return Ok(Verdict::Continue);
        }
        if cx.ext.get::<Applied>().is_some() {
            cx.annotate("already_applied", true);
            return Ok(Verdict::Continue);
        }
        cx.ext.insert(Applied);
        cx.mark_headers_filtered();
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        let denied: Vec<HeaderName> = req
            .headers()
            .keys()
            .filter(|n| {
                let handshake = upgrade && HANDSHAKE_KEPT.contains(&n.as_str());
                !(handshake || self.allows(n.as_str()))
            })
            .cloned()
            .collect();
        if denied.is_empty() {
            return Ok(Verdict::Continue);
        }
        let mut stripped = Vec::with_capacity(denied.len());
        for name in denied {
            req.headers_mut().remove(&name);
            stripped.push(Value::from(canonical(name.as_str())));
        }
        cx.annotate("stripped_headers", stripped);
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(headers: &[&str], rules: &str) -> HeaderAllowlistConfig {
        HeaderAllowlistConfig {
            headers: headers
                .iter()
                .map(|h| h.parse().expect("matcher"))
                .collect(),
            rules: Scope(serde_yaml_ng::from_str(rules).expect("rules")),
        }
    }

    fn flow(host: &str) -> Flow {
        crate::pipeline::test_flow(host, "GET", "/")
    }

    fn request() -> Request<Body> {
        Request::builder()
            .uri("https://api.openai.com/v1/x")
            .header("Host", "api.openai.com")
            .header("Authorization", "Bearer x")
            .header("Cookie", "a=b")
            .header("X-Trace-Id", "1")
            .header("x-debug", "1")
            .header("content-length", "0")
            .body(crate::body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn strips_unlisted_and_keeps_host() {
        let t = HeaderAllowlist::new(&cfg(&["authorization", "/^X-Trace-.*$/"], "[]"));
        let mut req = request();
        let mut cx = flow("api.openai.com");
        t.on_request(&mut req, &mut cx).await.expect("continue");
        let mut names: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["authorization", "content-length", "host", "x-trace-id"]
        );
        assert_eq!(
            cx.annotations_mut()["stripped_headers"],
            serde_json::json!(["Cookie", "X-Debug"])
        );
    }

    /// A WebSocket handshake keeps its key and version (else no upstream
    /// can answer it), not its subprotocol, which follows the list.
    #[tokio::test]
    async fn a_websocket_handshake_keeps_its_key_and_version() {
        let t = HeaderAllowlist::new(&cfg(&["authorization"], "[]"));
        let ws = |upgrade: bool| {
            let mut b = Request::builder()
                .uri("https://api.openai.com/ws")
                .header("Host", "api.openai.com")
                .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("Sec-WebSocket-Version", "13")
                .header("Sec-WebSocket-Protocol", "token.abc");
            if upgrade {
                b = b
                    .header("Connection", "upgrade")
                    .header("Upgrade", "websocket");
            }
            b.body(crate::body::empty()).expect("request")
        };
        let mut req = ws(true);
        let mut cx = flow("api.openai.com");
        t.on_request(&mut req, &mut cx).await.expect("continue");
        let mut names: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "connection",
                "host",
                "sec-websocket-key",
                "sec-websocket-version",
                "upgrade"
            ]
        );
        // Without an upgrade they are ordinary headers.
        let mut req = ws(false);
        let mut cx = flow("api.openai.com");
        t.on_request(&mut req, &mut cx).await.expect("continue");
        let names: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host"]);
    }

    #[tokio::test]
    async fn rules_scope_the_allowlist() {
        let t = HeaderAllowlist::new(&cfg(&["Authorization"], "[{host: api.openai.com}]"));
        let mut req = request();
        let mut cx = flow("other.example");
        t.on_request(&mut req, &mut cx).await.expect("continue");
        assert!(req.headers().contains_key("cookie"));
        assert!(cx.annotations_mut().is_empty());
    }

    /// Two allowlists whose rules both select a request: the first applies,
    /// the second leaves the request alone and says so; one whose rules do
    /// not select the request does not count as applied.
    #[tokio::test]
    async fn the_first_allowlist_that_selects_a_request_wins() {
        let other = HeaderAllowlist::new(&cfg(&["cookie"], "[{host: other.example}]"));
        let first = HeaderAllowlist::new(&cfg(&["authorization", "x-debug"], "[]"));
        let second = HeaderAllowlist::new(&cfg(&["authorization", "cookie"], "[]"));
        let mut req = request();
        let mut cx = flow("api.openai.com");
        other.on_request(&mut req, &mut cx).await.expect("continue");
        assert!(cx.annotations_mut().is_empty());
        first.on_request(&mut req, &mut cx).await.expect("continue");
        let _ = std::mem::take(cx.annotations_mut());
        second
            .on_request(&mut req, &mut cx)
            .await
            .expect("continue");
        let mut names: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["authorization", "content-length", "host", "x-debug"]
        );
        assert_eq!(
            cx.annotations_mut().get("already_applied"),
            Some(&serde_json::json!(true))
        );
    }
}
