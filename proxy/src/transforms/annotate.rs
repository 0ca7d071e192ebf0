//! The `annotate` transform: copies request header values into the audit
//! trace as `header:Name` annotations (`Name` in canonical form, as in
//! `header:X-Request-Id`). Several values of one header are joined with
//! `", "`. It never changes or rejects a request. Whatever it captures is
//! written to the audit log as is, so capturing `Authorization` after a
//! credential transform records the real credential: place it before them.

use std::sync::Arc;

use async_trait::async_trait;
use http::header::HeaderName;
use http::Request;

use crate::body::Body;
use crate::config::AnnotateConfig;
use crate::pipeline::{Flow, Transform, TransformError, Verdict};
use crate::rules::Scope;
use crate::transforms::secrets::canonical;

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
            if !rules.applies(&cx.target()) {
                continue;
            }
            for (name, key) in headers {
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
}
