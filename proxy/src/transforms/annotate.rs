//! The `annotate` transform: copies request header values into the audit
//! trace as `header:Name` annotations (`Name` in canonical form, as in
//! `header:X-Request-Id`). Several values of one header are joined with
//! `", "`. It never changes or rejects a request. What it captures is
//! written to the audit log as is, except a header that a credential
//! transform earlier in the pipeline set in this request
//! ([`Flow::is_credential_header`]): its value is recorded as
//! [`REDACTED`], so the real credential never reaches the log. Place
//! `annotate` before the credential transforms to record the workload's
//! proxy tokens instead (`validate` warns about the other order).

use std::sync::Arc;

use async_trait::async_trait;
use http::header::HeaderName;
use http::Request;

use crate::body::Body;
use crate::config::AnnotateConfig;
use crate::pipeline::{Flow, Transform, TransformError, Verdict};
use crate::rules::Scope;
use crate::transforms::secrets::canonical;

/// What is recorded instead of the value of a header that a credential
/// transform set in this request.
pub const REDACTED: &str = crate::secrets::scrub::REDACTED;

/// The built transform.
pub struct Annotate {
    groups: Vec<(Scope, Vec<(HeaderName, String)>)>,
}

/// Errors building the transform.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A header name that is not a valid HTTP header name.
    #[error("annotate.annotations[{index}].headers: invalid header name {name:?}")]
    HeaderName {
        /// Group index.
        index: usize,
        /// The name as written.
        name: String,
    },
}

impl BuildError {
    /// The field at fault, within the transform's `config`.
    pub fn field(&self) -> String {
        match self {
            BuildError::HeaderName { index, .. } => format!("annotations[{index}].headers"),
        }
    }
}

/// Builds the transform.
pub fn build(cfg: &AnnotateConfig) -> Result<Arc<dyn Transform>, BuildError> {
    Ok(Arc::new(Annotate::new(cfg)?))
}

impl Annotate {
    /// The transform, concretely typed.
    pub fn new(cfg: &AnnotateConfig) -> Result<Self, BuildError> {
        let mut groups = Vec::with_capacity(cfg.annotations.len());
        for (index, g) in cfg.annotations.iter().enumerate() {
            let mut headers = Vec::with_capacity(g.headers.len());
            for h in &g.headers {
                let name =
                    HeaderName::from_bytes(h.as_bytes()).map_err(|_| BuildError::HeaderName {
                        index,
                        name: h.clone(),
                    })?;
                headers.push((name, format!("header:{}", canonical(h))));
            }
            groups.push((g.rules.clone(), headers));
        }
        Ok(Annotate { groups })
    }
}

#[async_trait]
impl Transform for Annotate {
    fn name(&self) -> &str {
        "annotate"
    }

    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        for (rules, headers) in &self.groups {
            if !rules.inspects(&cx.target()) {
                continue;
            }
            for (name, key) in headers {
                if cx.is_credential_header(name) {
                    if req.headers().contains_key(name) {
                        cx.annotate(key.clone(), REDACTED);
                    }
                    continue;
                }
                let values: Vec<String> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                if !values.is_empty() {
                    cx.annotate(key.clone(), values.join(", "));
                }
            }
        }
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AnnotationGroup;
    use crate::pipeline::Dest;

    #[tokio::test]
    async fn captures_configured_headers() {
        let cfg = AnnotateConfig {
            annotations: vec![
                AnnotationGroup {
                    rules: Scope(
                        serde_yaml_ng::from_str(
                            "[{host: api.openai.com, methods: [POST], paths: ['/v1/*']}]",
                        )
                        .expect("rules"),
                    ),
                    headers: vec![
                        "x-request-id".into(),
                        "authorization".into(),
                        "x-absent".into(),
                    ],
                },
                AnnotationGroup {
                    rules: Scope(
                        serde_yaml_ng::from_str("[{host: elsewhere.example}]").expect("rules"),
                    ),
                    headers: vec!["user-agent".into()],
                },
            ],
        };
        let t = Annotate::new(&cfg).expect("build");
        let mut req = Request::builder()
            .header("X-Request-Id", "req-abc123")
            .header("authorization", "Bearer sk-ant-...")
            .header("user-agent", "curl")
            .body(crate::body::empty())
            .expect("request");
        let mut cx = Flow::new(
            Dest {
                host: "api.openai.com".into(),
                ip: None,
                port: 443,
                tls: true,
            },
            "POST".into(),
            "/v1/chat".into(),
        );
        assert!(matches!(
            t.on_request(&mut req, &mut cx).await,
            Ok(Verdict::Continue)
        ));
        assert_eq!(
            serde_json::Value::Object(cx.annotations_mut().clone()),
            serde_json::json!({"header:X-Request-Id": "req-abc123", "header:Authorization": "Bearer sk-ant-..."})
        );
    }

    /// Runs `transforms` (YAML list items) on a GET to api.test carrying
    /// `headers`: the request as sent upstream and the `annotate` trace entry.
    async fn through(
        transforms: &str,
        headers: &[(&str, &str)],
    ) -> (Request<Body>, serde_json::Map<String, serde_json::Value>) {
        let yaml = format!("tls:\n  mode: sni-only\ntransforms:\n{transforms}");
        let cfg = crate::config::parse(&yaml, "t.yaml", &|_| None).expect("valid config");
        let sources = crate::transforms::test_support::sources(&[("S", "SUPERSECRET-AAA")]);
        let (policy, _) = crate::app::build_policy(&cfg, &sources, None).expect("builds");
        let mut req =
            crate::transforms::test_support::request("GET", "https://api.test/v1", headers, None);
        let mut cx = Flow::new(
            Dest {
                host: "api.test".into(),
                ip: None,
                port: 443,
                tls: true,
            },
            "GET".into(),
            "/v1".into(),
        );
        let mut trace = Vec::new();
        let outcome = policy
            .pipeline
            .on_request(&mut req, &mut cx, &mut trace)
            .await;
        assert!(
            matches!(outcome, crate::pipeline::PhaseOutcome::Continue),
            "the pipeline continues"
        );
        let entry = trace
            .into_iter()
            .find(|t| t.name == "annotate")
            .expect("an annotate trace entry");
        (req, entry.annotations)
    }

    const INJECT: &str =
        "  - name: secrets\n    config:\n      secrets:\n        - source: {type: \
                          env, var: S}\n          inject: {header: X-Api-Key, formatter: \"Key \
                          {{ .Value }}\"}\n          rules: [{host: api.test}]\n";
    const REPLACE: &str = "  - name: secrets\n    config:\n      secrets:\n        - source: \
                           {type: env, var: S}\n          replace: {proxy_value: proxy-tok, \
                           match_headers: [Authorization]}\n          rules: [{host: api.test}]\n";
    const CAPTURE: &str = "  - name: annotate\n    config:\n      annotations:\n        - rules: \
                           [{host: api.test}]\n          headers: [x-api-key, authorization, \
                           x-request-id]\n";

    #[tokio::test]
    async fn a_header_a_credential_transform_set_is_recorded_redacted() {
        let sent = [
            ("x-api-key", "workload-key"),
            ("authorization", "Bearer proxy-tok"),
            ("x-request-id", "req-1"),
        ];
        // The QA repro: secrets injects X-Api-Key, a later annotate captures it.
        let (req, annotations) = through(&format!("{INJECT}{CAPTURE}"), &sent).await;
        assert_eq!(
            req.headers()["x-api-key"],
            "Key SUPERSECRET-AAA",
            "upstream gets it"
        );
        assert_eq!(
            serde_json::Value::Object(annotations),
            serde_json::json!({
                "header:X-Api-Key": REDACTED,
                "header:Authorization": "Bearer proxy-tok",
                "header:X-Request-Id": "req-1",
            })
        );
        // A token swapped inside a header.
        let (req, annotations) = through(&format!("{REPLACE}{CAPTURE}"), &sent).await;
        assert_eq!(req.headers()["authorization"], "Bearer SUPERSECRET-AAA");
        assert_eq!(annotations["header:Authorization"], REDACTED);
        assert_eq!(annotations["header:X-Api-Key"], "workload-key");
        // Before the credential transforms, the workload's values are recorded.
        let (_, annotations) = through(&format!("{CAPTURE}{INJECT}{REPLACE}"), &sent).await;
        assert_eq!(annotations["header:X-Api-Key"], "workload-key");
        assert_eq!(annotations["header:Authorization"], "Bearer proxy-tok");
    }
}
