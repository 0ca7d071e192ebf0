//! Helpers shared by the transforms' unit tests.

use std::collections::HashMap;
use std::sync::Arc;

use http::Request;

use crate::audit::TransformTrace;
use crate::body::Body;
use crate::pipeline::{BufferedBody, Flow, PhaseOutcome, Pipeline, Transform};
use crate::secrets::{EnvLookup, Sources, SourcesOptions};

/// A source registry whose `env` sources read only `env`.
pub fn sources(env: &[(&str, &str)]) -> Sources {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Sources::new(SourcesOptions {
        env: EnvLookup::Fixed(Arc::new(env)),
        ..Default::default()
    })
}

/// A request; `body`, when given, is also the buffered body the exchange would attach.
pub fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(crate::body::empty()).expect("request");
    if let Some(body) = body {
        let bytes = bytes::Bytes::from(body.to_string());
        *req.body_mut() = crate::body::full(bytes.clone());
        req.extensions_mut().insert(BufferedBody(bytes));
    }
    req
}

/// Runs `t` alone through a pipeline, as the exchange does: the outcome and its trace entry.
pub async fn run(
    t: impl Transform + 'static,
    req: &mut Request<Body>,
    cx: &mut Flow,
) -> (PhaseOutcome, TransformTrace) {
    let pipeline = Pipeline::new(vec![Arc::new(t)]);
    let mut trace = Vec::new();
    let outcome = pipeline.on_request(req, cx, &mut trace).await;
    (outcome, trace.pop().expect("a trace entry"))
}

/// Header `name`'s first value, or "" when absent.
pub fn header(req: &Request<Body>, name: &str) -> String {
    req.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default()
}

/// A token endpoint on 127.0.0.1 that answers every request with `token`
/// (an hour's lifetime); returns its URL.
pub async fn token_endpoint(token: &'static str) -> String {
    use http_body_util::Full;
    let addr = crate::test_http::serve_http1(hyper::service::service_fn(move |_req| async move {
        let body =
            serde_json::json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"});
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from(
            body.to_string(),
        ))))
    }))
    .await;
    format!("http://{addr}/oauth2/token")
}
