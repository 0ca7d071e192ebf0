//! Tests of the secrets transform.

mod leak;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use http::Request;
use serde_json::json;

use super::*;
use crate::config::{ReplaceConfig, SecretEntry, SecretSourceConfig};
use crate::pipeline::{BufferedBody, Pipeline};
use crate::secrets::{EnvLookup, SourcesOptions};

const REAL: &str = "sk-real-openai-key-do-not-share";
const TOKEN: &str = "proxy-openai-abc123";

fn sources() -> Sources {
    let env: HashMap<String, String> = [
        ("OPENAI_API_KEY", REAL),
        ("INTERNAL_TOKEN", "real-internal-secret-value"),
        ("GH_TOKEN", "ghp_abc123"),
        ("JSON_SECRET", r#"{"api_key":"from-json","other":"x"}"#),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Sources::new(SourcesOptions {
        env: EnvLookup::Fixed(Arc::new(env)),
        ..Default::default()
    })
}

fn env(var: &str) -> SecretSourceConfig {
    SecretSourceConfig::Env {
        var: var.into(),
        json_key: None,
    }
}

fn rules(yaml: &str) -> Scope {
    Scope(serde_yaml_ng::from_str(yaml).expect("rules"))
}

fn replace(token: &str, headers: &[&str]) -> ReplaceConfig {
    ReplaceConfig {
        proxy_value: token.into(),
        match_headers: headers
            .iter()
            .map(|h| h.parse().expect("matcher"))
            .collect(),
        match_body: false,
        match_path: false,
        match_query: false,
        require: false,
    }
}

fn entry(source: SecretSourceConfig, mode: SecretMode, scope: &str) -> SecretEntry {
    SecretEntry {
        source,
        mode,
        rules: rules(scope),
    }
}

fn transform(entries: Vec<SecretEntry>) -> Secrets {
    Secrets::new(
        &SecretsConfig {
            secrets: entries,
            ..Default::default()
        },
        &sources(),
    )
    .expect("build")
}

fn flow(host: &str, method: &str, path: &str) -> Flow {
    crate::pipeline::test_flow(host, method, path)
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(crate::body::empty()).expect("request")
}

fn with_body(mut req: Request<Body>, body: &str) -> Request<Body> {
    let bytes = bytes::Bytes::from(body.to_string());
    *req.body_mut() = crate::body::full(bytes.clone());
    req.extensions_mut().insert(BufferedBody(bytes));
    req
}

async fn run(
    t: &Secrets,
    req: &mut Request<Body>,
    cx: &mut Flow,
) -> Result<Verdict, TransformError> {
    t.on_request(req, cx).await
}

fn header<'a>(req: &'a Request<Body>, name: &str) -> Vec<&'a str> {
    req.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect()
}

#[tokio::test]
async fn inject_header_replaces_every_casing_and_formats() {
    let t = transform(vec![entry(
        env("OPENAI_API_KEY"),
        SecretMode::Inject(InjectConfig::Header {
            name: "Authorization".into(),
            formatter: Some(Template::parse("Bearer {{ .Value }}").expect("template")),
        }),
        "[{host: api.openai.com, methods: [POST], paths: ['/v1/*']}]",
    )]);
    let mut req = get(
        "https://api.openai.com/v1/chat",
        &[("AUTHORIZATION", "Bearer workload-own")],
    );
    let mut cx = flow("api.openai.com", "POST", "/v1/chat");
    assert!(matches!(
        run(&t, &mut req, &mut cx).await,
        Ok(Verdict::Continue)
    ));
    assert_eq!(header(&req, "authorization"), [format!("Bearer {REAL}")]);
    assert!(req.headers()["authorization"].is_sensitive());
    assert_eq!(
        cx.annotations_mut()["injected"],
        json!([{"secret": "OPENAI_API_KEY", "locations": ["header:Authorization"]}])
    );
    // Out of scope: a GET is left alone.
    let mut req = get("https://api.openai.com/v1/models", &[]);
    let mut cx = flow("api.openai.com", "GET", "/v1/models");
    run(&t, &mut req, &mut cx).await.expect("continue");
    assert!(req.headers().get("authorization").is_none());
    assert!(cx.annotations_mut().is_empty());
}

#[tokio::test]
async fn inject_base64_formatter_and_query_param() {
    let t = transform(vec![
        entry(
            env("GH_TOKEN"),
            SecretMode::Inject(InjectConfig::Header {
                name: "Authorization".into(),
                formatter: Some(
                    Template::parse(r#"Basic {{ base64 "x-access-token:" .Value }}"#)
                        .expect("template"),
                ),
            }),
            "[{host: api.github.com}]",
        ),
        entry(
            env("OPENAI_API_KEY"),
            SecretMode::Inject(InjectConfig::QueryParam {
                name: "api_key".into(),
            }),
            "[{host: api.github.com}]",
        ),
    ]);
    let mut req = get("https://api.github.com:443/user?api_key=old&q=a%20b", &[]);
    let mut cx = flow("api.github.com", "GET", "/user");
    run(&t, &mut req, &mut cx).await.expect("continue");
    assert_eq!(
        header(&req, "authorization"),
        ["Basic eC1hY2Nlc3MtdG9rZW46Z2hwX2FiYzEyMw=="]
    );
    assert_eq!(
        req.uri().query(),
        Some(format!("q=a%20b&api_key={REAL}").as_str())
    );
    assert_eq!(
        cx.annotations_mut()["injected"],
        json!([
            {"secret": "GH_TOKEN", "locations": ["header:Authorization"]},
            {"secret": "OPENAI_API_KEY", "locations": ["query:api_key"]}
        ])
    );
    // A later judge keeps both values out of what it records.
    assert_eq!(cx.secret_values().collect::<Vec<_>>(), ["ghp_abc123", REAL]);
}

#[tokio::test]
async fn replace_in_literal_regex_and_all_headers() {
    let t = transform(vec![
        entry(
            env("OPENAI_API_KEY"),
            SecretMode::Replace(replace(TOKEN, &["Authorization"])),
            "[]",
        ),
        entry(
            env("INTERNAL_TOKEN"),
            SecretMode::Replace(replace("proxy-internal-tok", &["/^x-int.*$/"])),
            "[]",
        ),
        entry(
            env("GH_TOKEN"),
            SecretMode::Replace(replace("proxy-gh", &[])),
            "[]",
        ),
    ]);
    let mut req = get(
        "https://httpbin.org/headers",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("X-Internal", "proxy-internal-tok"),
            ("x-other", &format!("{TOKEN} proxy-gh")),
        ],
    );
    let mut cx = flow("httpbin.org", "GET", "/headers");
    run(&t, &mut req, &mut cx).await.expect("continue");
    assert_eq!(header(&req, "authorization"), [format!("Bearer {REAL}")]);
    assert_eq!(header(&req, "x-internal"), ["real-internal-secret-value"]);
    // x-other is not in OPENAI's match_headers, but GH scans all headers.
    assert_eq!(header(&req, "x-other"), [format!("{TOKEN} ghp_abc123")]);
    assert_eq!(
        cx.annotations_mut()["swapped"],
        json!([
            {"secret": "OPENAI_API_KEY", "locations": ["header:Authorization"]},
            {"secret": "INTERNAL_TOKEN", "locations": ["header:X-Internal"]},
            {"secret": "GH_TOKEN", "locations": ["header:X-Other"]}
        ])
    );
}

#[tokio::test]
async fn replace_inside_basic_auth() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let t = transform(vec![entry(
        env("GH_TOKEN"),
        SecretMode::Replace(replace("proxy-gh", &["authorization"])),
        "[]",
    )]);
    let mut req = get(
        "https://github.com/x.git/info/refs",
        &[(
            "Authorization",
            &format!("Basic {}", b64("x-access-token:proxy-gh")),
        )],
    );
    let mut cx = flow("github.com", "GET", "/x.git/info/refs");
    run(&t, &mut req, &mut cx).await.expect("continue");
    assert_eq!(
        header(&req, "authorization"),
        [format!("Basic {}", b64("x-access-token:ghp_abc123"))]
    );
    assert_eq!(
        cx.annotations_mut()["swapped"],
        json!([{"secret": "GH_TOKEN", "locations": ["header:authorization"]}])
    );
}

#[tokio::test]
async fn replace_in_body_path_and_query() {
    let mut r = replace("proxy-tg-token-123", &[]);
    r.match_body = true;
    r.match_path = true;
    r.match_query = true;
    let t = transform(vec![entry(
        env("INTERNAL_TOKEN"),
        SecretMode::Replace(r),
        "[{host: api.telegram.org}]",
    )]);
    let (parts, _) = Request::new(()).into_parts();
    assert!(t.wants_request_body(&flow("api.telegram.org", "POST", "/"), &parts));
    assert!(!t.wants_request_body(&flow("elsewhere.org", "POST", "/"), &parts));
    let req = get(
        "https://api.telegram.org/botproxy-tg-token-123/send?token=proxy-tg-token-123&keep=a+b",
        &[("content-length", "31")],
    );
    let mut req = with_body(req, r#"{"token":"proxy-tg-token-123"}"#);
    let mut cx = flow("api.telegram.org", "POST", "/botproxy-tg-token-123/send");
    run(&t, &mut req, &mut cx).await.expect("continue");
    assert_eq!(req.uri().path(), "/botreal-internal-secret-value/send");
    assert_eq!(
        req.uri().query(),
        Some("token=real-internal-secret-value&keep=a+b")
    );
    let body = crate::pipeline::body_bytes(&req).expect("buffered").clone();
    assert_eq!(&body[..], br#"{"token":"real-internal-secret-value"}"#);
    assert_eq!(header(&req, "content-length"), [body.len().to_string()]);
    assert_eq!(
        cx.annotations_mut()["swapped"],
        json!([{"secret": "INTERNAL_TOKEN", "locations": ["query:token", "path", "body"]}])
    );
    assert_eq!(
        cx.secret_values().collect::<Vec<_>>(),
        ["real-internal-secret-value"]
    );
    assert_eq!(
        cx.path, "/botproxy-tg-token-123/send",
        "Flow keeps the workload's view"
    );
}

#[tokio::test]
async fn path_and_query_are_not_scanned_unless_enabled() {
    let t = transform(vec![entry(
        env("INTERNAL_TOKEN"),
        SecretMode::Replace(replace("tok", &[])),
        "[]",
    )]);
    let mut req = get("https://a.test/tok?x=tok", &[]);
    let mut cx = flow("a.test", "GET", "/tok");
    run(&t, &mut req, &mut cx).await.expect("continue");
    assert_eq!(
        req.uri().path_and_query().map(|p| p.as_str()),
        Some("/tok?x=tok")
    );
}

#[tokio::test]
async fn require_rejects_requests_without_the_token() {
    let mut r = replace("pk-proxy-anthropic", &["x-api-key"]);
    r.require = true;
    let t = transform(vec![entry(
        env("OPENAI_API_KEY"),
        SecretMode::Replace(r),
        "[{host: api.anthropic.com}]",
    )]);
    let mut req = get(
        "https://api.anthropic.com/v1/messages",
        &[("x-api-key", "sk-ant-workload-own")],
    );
    let mut cx = flow("api.anthropic.com", "POST", "/v1/messages");
    match run(&t, &mut req, &mut cx).await {
        Ok(Verdict::Reject(r)) => {
            assert_eq!(r.status, StatusCode::FORBIDDEN);
            assert_eq!(r.reason, "proxy_token_missing");
        }
        _ => panic!("expected a 403 rejection"),
    }
    assert_eq!(cx.annotations_mut()["rejected"], "OPENAI_API_KEY");
    // Other hosts are out of scope.
    let mut req = get("https://other.test/", &[]);
    assert!(matches!(
        run(&t, &mut req, &mut flow("other.test", "GET", "/")).await,
        Ok(Verdict::Continue)
    ));
}

/// `schemes: [https]`: the credential goes on a request forwarded over TLS
/// only. On plain HTTP the entry does not apply, as with a host outside its
/// rules: nothing is injected, the placeholder stays, `require` does not refuse.
#[tokio::test]
async fn an_https_only_entry_skips_plain_http() {
    let mut r = replace(TOKEN, &["x-api-key"]);
    r.require = true;
    let t = transform(vec![
        entry(
            env("OPENAI_API_KEY"),
            SecretMode::Inject(InjectConfig::Header {
                name: "Authorization".into(),
                formatter: None,
            }),
            "[{host: api.test, schemes: [https]}]",
        ),
        entry(
            env("INTERNAL_TOKEN"),
            SecretMode::Replace(r),
            "[{host: api.test, schemes: [https]}]",
        ),
    ]);
    let mut cx = flow("api.test", "GET", "/");
    let mut req = get("https://api.test/", &[("x-api-key", TOKEN)]);
    run(&t, &mut req, &mut cx).await.expect("continue");
    assert_eq!(header(&req, "authorization"), [REAL]);
    assert_eq!(header(&req, "x-api-key"), ["real-internal-secret-value"]);

    let mut cx = flow("api.test", "GET", "/");
    cx.dest.tls = false;
    let mut req = get("http://api.test/", &[("x-api-key", TOKEN)]);
    assert!(matches!(
        run(&t, &mut req, &mut cx).await,
        Ok(Verdict::Continue)
    ));
    assert!(req.headers().get("authorization").is_none());
    assert_eq!(header(&req, "x-api-key"), [TOKEN], "the placeholder stays");
    assert!(
        cx.annotations_mut().is_empty(),
        "nothing injected or swapped"
    );
}

/// The host-only check of a CONNECT/SOCKS5 target in MITM mode: its inner requests are
/// checked in full, so `require` must not refuse the tunnel (it carries no headers at all),
/// and no secret is resolved for it. An sni-only connection's host-only request is all the
/// proxy sees, so `require` still refuses it there.
#[tokio::test]
async fn a_tunnel_precheck_is_neither_refused_nor_given_a_secret() {
    let mut r = replace(TOKEN, &["authorization"]);
    r.require = true;
    let t = transform(vec![
        entry(
            env("GH_TOKEN"),
            SecretMode::Replace(r),
            "[{host: git.test}]",
        ),
        entry(
            env("MISSING_VAR"),
            SecretMode::Inject(InjectConfig::Header {
                name: "X-Key".into(),
                formatter: None,
            }),
            "[{host: git.test}]",
        ),
    ]);
    let mut req = Request::new(crate::body::empty());
    let mut cx = flow("git.test", "", "");
    cx.precheck = true;
    assert!(matches!(
        run(&t, &mut req, &mut cx).await,
        Ok(Verdict::Continue)
    ));
    assert!(req.headers().is_empty());
    let mut cx = flow("git.test", "", "");
    match run(&t, &mut req, &mut cx).await {
        Ok(Verdict::Reject(r)) => assert_eq!(r.reason, "proxy_token_missing"),
        _ => panic!("an sni-only host-only request without the token is refused"),
    }
}

#[tokio::test]
async fn fail_closed_when_the_secret_cannot_be_resolved() {
    let t = transform(vec![
        entry(
            env("MISSING_VAR"),
            SecretMode::Replace(replace(TOKEN, &[])),
            "[{host: a.test}]",
        ),
        entry(
            env("MISSING_VAR"),
            SecretMode::Inject(InjectConfig::Header {
                name: "X-Key".into(),
                formatter: None,
            }),
            "[{host: b.test}]",
        ),
    ]);
    // Token present, value unavailable: refused, never forwarded with the placeholder.
    let mut req = get("https://a.test/", &[("x-key", TOKEN)]);
    let mut cx = flow("a.test", "GET", "/");
    let e = match run(&t, &mut req, &mut cx).await {
        Err(e) => e,
        Ok(_) => panic!("expected fail closed"),
    };
    assert_eq!(
        (e.status, e.reason),
        (StatusCode::BAD_GATEWAY, "secret_unavailable")
    );
    assert!(e.detail.contains("MISSING_VAR"), "{}", e.detail);
    // Token absent: the value is not needed, the request goes on.
    let mut req = get("https://a.test/", &[]);
    assert!(matches!(
        run(&t, &mut req, &mut flow("a.test", "GET", "/")).await,
        Ok(Verdict::Continue)
    ));
    // Inject: always needs the value.
    let mut req = get("https://b.test/", &[]);
    assert!(run(&t, &mut req, &mut flow("b.test", "GET", "/"))
        .await
        .is_err());
}

#[tokio::test]
async fn json_key_extracts_a_field() {
    let t = transform(vec![entry(
        SecretSourceConfig::Env {
            var: "JSON_SECRET".into(),
            json_key: Some("api_key".into()),
        },
        SecretMode::Inject(InjectConfig::Header {
            name: "x-api-key".into(),
            formatter: None,
        }),
        "[]",
    )]);
    let mut req = get("https://a.test/", &[]);
    run(&t, &mut req, &mut flow("a.test", "GET", "/"))
        .await
        .expect("continue");
    assert_eq!(header(&req, "x-api-key"), ["from-json"]);
}

/// An entry injecting `var` raw into header `name` on requests to `host`.
fn inject_header(var: &str, name: &str, host: &str) -> SecretEntry {
    entry(
        env(var),
        SecretMode::Inject(InjectConfig::Header {
            name: name.into(),
            formatter: None,
        }),
        &format!("[{{host: {host}}}]"),
    )
}

/// An sni-only connection's host-only request (no method: what it carries
/// stays encrypted) gets no credential: an inject entry is neither resolved
/// (an unavailable one does not refuse the connection) nor recorded.
#[tokio::test]
async fn an_sni_only_connection_is_given_no_secret_and_not_refused_for_one() {
    let t = transform(vec![
        inject_header("GH_TOKEN", "Authorization", "git.test"),
        inject_header("MISSING_VAR", "X-Key", "git.test"),
    ]);
    let mut req = Request::new(crate::body::empty());
    let mut cx = flow("git.test", "", "");
    assert!(matches!(
        run(&t, &mut req, &mut cx).await,
        Ok(Verdict::Continue)
    ));
    assert!(req.headers().is_empty());
    assert!(
        cx.annotations_mut().is_empty(),
        "{:?}",
        cx.annotations_mut()
    );
}

/// When two credential transforms would set the same header or query
/// parameter, the first in config order wins (spec: "Concepts: Transforms",
/// "Credential Proxying"): within one `secrets` transform and across two.
/// A location the first did not set is still set by the second.
#[tokio::test]
async fn the_first_credential_transform_to_set_a_location_wins() {
    let inject = |var: &str, name: &str| inject_header(var, name, "a.test");
    let query = |var: &str| {
        entry(
            env(var),
            SecretMode::Inject(InjectConfig::QueryParam { name: "key".into() }),
            "[{host: a.test}]",
        )
    };
    let first = transform(vec![
        inject("OPENAI_API_KEY", "X-Key"),
        inject("GH_TOKEN", "x-key"),
        query("OPENAI_API_KEY"),
    ]);
    let second = transform(vec![
        inject("INTERNAL_TOKEN", "X-KEY"),
        query("GH_TOKEN"),
        inject("GH_TOKEN", "X-Other"),
    ]);
    let mut req = get("https://a.test/x?q=1", &[]);
    let mut cx = flow("a.test", "GET", "/x");
    run(&first, &mut req, &mut cx).await.expect("continue");
    assert_eq!(
        cx.annotations_mut().remove("already_set"),
        Some(json!(["header:x-key"]))
    );
    let _ = std::mem::take(cx.annotations_mut());
    run(&second, &mut req, &mut cx).await.expect("continue");
    assert_eq!(header(&req, "x-key"), [REAL]);
    assert_eq!(req.uri().query(), Some(format!("q=1&key={REAL}").as_str()));
    assert_eq!(header(&req, "x-other"), ["ghp_abc123"]);
    assert_eq!(
        cx.annotations_mut()["already_set"],
        json!(["header:X-KEY", "query:key"])
    );
    assert_eq!(
        cx.annotations_mut()["injected"],
        json!([{"secret": "GH_TOKEN", "locations": ["header:X-Other"]}])
    );
}

#[tokio::test]
async fn a_value_reflected_in_a_response_header_is_redacted() {
    let t = transform(vec![entry(
        env("OPENAI_API_KEY"),
        SecretMode::Inject(InjectConfig::QueryParam {
            name: "api_key".into(),
        }),
        "[{host: api.test}]",
    )]);
    let p = Pipeline::new(vec![Arc::new(t)]);
    let mut req = get("https://api.test/v1/x", &[]);
    let mut cx = flow("api.test", "GET", "/v1/x");
    let (mut requests, mut responses) = (Vec::new(), Vec::new());
    let out = p.on_request(&mut req, &mut cx, &mut requests).await;
    assert!(matches!(out, crate::pipeline::PhaseOutcome::Continue));
    let mut rsp = http::Response::builder()
        .header("location", format!("/v2/x?api_key={REAL}"))
        .header("content-type", "text/plain")
        .body(crate::body::empty())
        .expect("response");
    let out = p.on_response(&mut rsp, &mut cx, &mut responses).await;
    assert!(matches!(out, crate::pipeline::PhaseOutcome::Continue));
    assert_eq!(rsp.headers()["location"], "/v2/x?api_key=[redacted]");
    assert_eq!(rsp.headers()["content-type"], "text/plain");
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].name, "secrets");
    assert_eq!(
        responses[0].annotations["response_redacted"],
        json!(["location"])
    );
}
