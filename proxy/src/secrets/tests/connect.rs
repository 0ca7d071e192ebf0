//! `1password_connect` against a fake Connect server that follows the public API.

use std::convert::Infallible;

use ::http::{Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;

use super::*;

const TOKEN: &str = "connect-token-xyz";
const VAULT_ID: &str = "vaultid0000000000000000001";
const ITEM_ID: &str = "itemid00000000000000000001";

fn answer(req: &Request<hyper::body::Incoming>) -> (StatusCode, serde_json::Value) {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        // Quoting the request's token, as a server is free to: the error
        // must not carry it on to the log and the audit record.
        return (
            StatusCode::UNAUTHORIZED,
            json!({"status": 401, "message": format!("Invalid token: {}", auth.unwrap_or(""))}),
        );
    }
    let path = req.uri().path();
    let filter = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("filter="))
        .map(|f| {
            percent_encoding::percent_decode_str(f)
                .decode_utf8_lossy()
                .into_owned()
        });
    match (path, filter.as_deref()) {
        ("/v1/vaults", Some(r#"title eq "Engineering""#)) => (
            StatusCode::OK,
            json!([{"id": VAULT_ID, "name": "Engineering"}]),
        ),
        ("/v1/vaults", Some(_)) => (StatusCode::OK, json!([])),
        (p, Some(r#"title eq "OpenAI""#)) if p == format!("/v1/vaults/{VAULT_ID}/items") => {
            (StatusCode::OK, json!([{"id": ITEM_ID, "title": "OpenAI"}]))
        }
        (p, Some(_)) if p == format!("/v1/vaults/{VAULT_ID}/items") => (StatusCode::OK, json!([])),
        (p, None) if p == format!("/v1/vaults/{VAULT_ID}/items/{ITEM_ID}") => (
            StatusCode::OK,
            json!({
                "id": ITEM_ID,
                "title": "OpenAI",
                "sections": [{"id": "sec1", "label": "Prod"}],
                "fields": [
                    {"id": "password", "label": "credential", "value": "sk-top-level"},
                    {"id": "f2", "label": "credential", "value": "sk-in-prod", "section": {"id": "sec1"}},
                    {"id": "f3", "label": "json", "value": "{\"api_key\":\"from-json\"}"}
                ]
            }),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            json!({"status": 404, "message": "not found"}),
        ),
    }
}

/// Starts the fake server; returns its base URL.
async fn fake_connect() -> String {
    let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
        let (status, body) = answer(&req);
        let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())));
        *rsp.status_mut() = status;
        Ok::<_, Infallible>(rsp)
    });
    let addr = crate::test_http::serve_http1(svc).await;
    format!("http://{addr}")
}

fn source(secret_ref: &str, json_key: Option<&str>) -> SecretSourceConfig {
    SecretSourceConfig::OnePasswordConnect {
        secret_ref: secret_ref.parse().expect("op ref"),
        host_env: "OP_CONNECT_HOST".into(),
        token_env: "OP_CONNECT_TOKEN".into(),
        json_key: json_key.map(str::to_string),
        ttl: Default::default(),
    }
}

#[tokio::test]
async fn reads_fields_by_title_label_and_section() {
    let logs = crate::secrets::tests::TraceCapture::start();
    let host = fake_connect().await;
    let sources = Sources::new(SourcesOptions {
        env: fixed_env(&[("OP_CONNECT_HOST", &host), ("OP_CONNECT_TOKEN", TOKEN)]),
        ..Default::default()
    });
    let get = |r: &str, k: Option<&str>| sources.secret(&source(r, k));
    let top = get("op://Engineering/OpenAI/credential", None);
    assert_eq!(top.name(), "op://Engineering/OpenAI/credential");
    assert_eq!(top.get().await.expect("top").expose(), "sk-top-level");
    let prod = get("op://Engineering/OpenAI/Prod/credential", None);
    assert_eq!(prod.get().await.expect("section").expose(), "sk-in-prod");
    let by_id = get(&format!("op://{VAULT_ID}/{ITEM_ID}/password"), None);
    assert_eq!(by_id.get().await.expect("ids").expose(), "sk-top-level");
    let json = get("op://Engineering/OpenAI/json", Some("api_key"));
    assert_eq!(json.get().await.expect("json_key").expose(), "from-json");
    let e = get("op://Engineering/Nope/credential", None)
        .get()
        .await
        .expect_err("missing item");
    assert!(e.to_string().contains("nothing titled \"Nope\""), "{e}");
    let logs = logs.text();
    // Shared callsites (like the cache's "secret fetched") may be silenced
    // by a race in tracing's interest cache between tests on other threads;
    // the probe shows this capture works.
    assert!(
        logs.contains(crate::secrets::tests::TraceCapture::PROBE),
        "capture works: {logs}"
    );
    for secret in [TOKEN, "sk-top-level", "sk-in-prod", "from-json"] {
        assert!(!logs.contains(secret), "{secret} in TRACE logs:\n{logs}");
    }
}

#[tokio::test]
async fn bad_token_and_missing_host_are_clear_errors() {
    let host = fake_connect().await;
    let sources = Sources::new(SourcesOptions {
        env: fixed_env(&[
            ("OP_CONNECT_HOST", &host),
            ("OP_CONNECT_TOKEN", "wrong-token"),
        ]),
        ..Default::default()
    });
    let e = sources
        .secret(&source("op://Engineering/OpenAI/credential", None))
        .get()
        .await
        .expect_err("unauthorized");
    assert!(
        e.to_string().contains("401") && !e.to_string().contains("wrong-token"),
        "{e}"
    );
    let none = Sources::new(SourcesOptions {
        env: fixed_env(&[]),
        ..Default::default()
    });
    assert_eq!(
        none.secret(&source("op://a/b/c", None)).get().await,
        Err(SecretError::EnvMissing("OP_CONNECT_HOST".into()))
    );
}

/// The fake server, answering 503 to everything while `down` is set.
async fn fake_connect_that_fails(down: Arc<std::sync::atomic::AtomicBool>) -> String {
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let down = down.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            let (status, body) = if down {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": 503, "message": "down"}),
                )
            } else {
                answer(&req)
            };
            let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())));
            *rsp.status_mut() = status;
            Ok::<_, Infallible>(rsp)
        }
    });
    let addr = crate::test_http::serve_http1(svc).await;
    format!("http://{addr}")
}

/// A reload that changes only a source's `ttl` keeps its cache: the value fetched under the
/// old config is served by the new one although the backend is down at that moment (before,
/// `ttl` was part of the cache key: the new config had an empty cache, and every request
/// failed with the backend). The new interval is the one in force.
#[tokio::test]
async fn a_reload_that_changes_only_the_ttl_keeps_the_value() {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let host = fake_connect_that_fails(down.clone()).await;
    let sources = Sources::new(SourcesOptions {
        env: fixed_env(&[("OP_CONNECT_HOST", &host), ("OP_CONNECT_TOKEN", TOKEN)]),
        ..Default::default()
    });
    let with_ttl = |secs: u64| match source("op://Engineering/OpenAI/credential", None) {
        SecretSourceConfig::OnePasswordConnect {
            secret_ref,
            host_env,
            token_env,
            json_key,
            ..
        } => SecretSourceConfig::OnePasswordConnect {
            secret_ref,
            host_env,
            token_env,
            json_key,
            ttl: Duration::from_secs(secs).into(),
        },
        other => other,
    };
    sources.next_build();
    let old = sources.secret(&with_ttl(3600));
    assert_eq!(
        old.get().await.expect("first fetch").expose(),
        "sk-top-level"
    );

    // The backend goes down; a reload builds the new policy while the old one still serves.
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    sources.next_build();
    let new = sources.secret(&with_ttl(60));
    drop(old);
    assert_eq!(
        new.get()
            .await
            .expect("the value survives the reload")
            .expose(),
        "sk-top-level"
    );
    assert_eq!(new.cached.ttl(), Duration::from_secs(60), "the new ttl");
    assert_eq!(
        new.identity(),
        "1password_connect:OP_CONNECT_HOST:OP_CONNECT_TOKEN:op://Engineering/OpenAI/credential"
    );

    // Another region, host or token is another secret: not shared.
    let other_host = match with_ttl(60) {
        SecretSourceConfig::OnePasswordConnect {
            secret_ref,
            token_env,
            json_key,
            ttl,
            ..
        } => SecretSourceConfig::OnePasswordConnect {
            secret_ref,
            host_env: "OTHER_CONNECT_HOST".into(),
            token_env,
            json_key,
            ttl,
        },
        other => other,
    };
    assert!(
        sources.secret(&other_host).get().await.is_err(),
        "a source on another host has a cache of its own"
    );
}
