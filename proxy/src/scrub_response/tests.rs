//! The scrub as the pipeline runs it: once per response, for the values of
//! every transform that noted one, at the first of them; the body when any
//! of them wants it.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{HeaderValue, Request};
use http_body_util::BodyExt as _;
use serde_json::json;

use crate::audit::{AuditRecord, Mode};
use crate::body::{self, Body};
use crate::pipeline::{test_flow, PhaseOutcome, Pipeline, Transform, Verdict};
use crate::pipeline::{Flow, TransformError};
use crate::secrets::SecretValue;

const KEY: &str = "static-key-0123456789";
const TOKEN: &str = "ya29.minted-token-abcdef";

/// A transform that puts `value` in each request (noting it as `name`,
/// with `scrub_body`), or nothing, and records the `x-echo` header its
/// response hook sees.
struct Noter {
    name: &'static str,
    value: Option<&'static str>,
    scrub_body: bool,
    seen: Arc<Mutex<Vec<(&'static str, String)>>>,
}

#[async_trait]
impl Transform for Noter {
    fn name(&self) -> &str {
        self.name
    }

    async fn on_request(
        &self,
        _req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        if let Some(v) = self.value {
            cx.note_secret_value(&SecretValue::new(v.into()), self.name, self.scrub_body);
        }
        Ok(Verdict::Continue)
    }

    async fn on_response(
        &self,
        rsp: &mut http::Response<Body>,
        _cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        let echo = rsp.headers()["x-echo"].to_str().expect("ascii").to_string();
        self.seen.lock().expect("lock").push((self.name, echo));
        Ok(Verdict::Continue)
    }
}

struct Outcome {
    /// The header and body the client gets.
    echo: String,
    body: String,
    record: AuditRecord,
    /// The `x-echo` each response hook saw, in order.
    seen: Vec<(&'static str, String)>,
}

/// Both phases of a pipeline of `stages` (name, value noted, its
/// `scrub_response_bodies`) over a response that echoes every value in a
/// header and in its body.
async fn exchange(stages: &[(&'static str, Option<&'static str>, bool)]) -> Outcome {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let transforms: Vec<Arc<dyn Transform>> = stages
        .iter()
        .map(|&(name, value, scrub_body)| {
            Arc::new(Noter {
                name,
                value,
                scrub_body,
                seen: seen.clone(),
            }) as Arc<dyn Transform>
        })
        .collect();
    let p = Pipeline::new(transforms);
    let mut cx = test_flow("api.test", "GET", "/echo");
    let mut record = AuditRecord::new(Mode::Https, "127.0.0.1:1".into());
    let mut req = Request::new(body::empty());
    let out = p
        .on_request(&mut req, &mut cx, &mut record.request_transforms)
        .await;
    assert!(matches!(out, PhaseOutcome::Continue));
    let echo = format!("key={KEY} token=Bearer {TOKEN}");
    let mut rsp = http::Response::new(body::full(format!(r#"{{"echo":"{echo}"}}"#)));
    rsp.headers_mut()
        .insert("x-echo", HeaderValue::from_str(&echo).expect("header"));
    let out = p
        .on_response(&mut rsp, &mut cx, &mut record.response_transforms)
        .await;
    assert!(matches!(out, PhaseOutcome::Continue));
    record.late.append(&mut cx.late_audit);
    let (parts, b) = rsp.into_parts();
    let bytes = b.collect().await.expect("body").to_bytes();
    record.settle_late();
    let seen = seen.lock().expect("lock").clone();
    Outcome {
        echo: parts.headers["x-echo"].to_str().expect("ascii").to_string(),
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
        record,
        seen,
    }
}

fn mask(len: usize) -> String {
    format!("[redacted]{}", "*".repeat(len - 10))
}

/// Values from two transforms: one search, run once, just before the
/// response hook of the first of them. Its entry alone carries the scrub's
/// annotations (two matches in the body, the header named once); the hooks
/// before it saw the upstream's response, the hooks from it on the scrubbed
/// one.
#[tokio::test]
async fn values_of_two_transforms_are_scrubbed_once_at_the_first() {
    let out = exchange(&[
        ("allowlist", None, true),
        ("secrets", Some(KEY), true),
        ("annotate", None, true),
        ("oauth_token", Some(TOKEN), true),
    ])
    .await;
    assert_eq!(out.echo, "key=[redacted] token=Bearer [redacted]");
    assert_eq!(
        out.body,
        format!(
            r#"{{"echo":"key={} token=Bearer {}"}}"#,
            mask(KEY.len()),
            mask(TOKEN.len())
        )
    );
    let raw = format!("key={KEY} token=Bearer {TOKEN}");
    let scrubbed = "key=[redacted] token=Bearer [redacted]".to_string();
    assert_eq!(
        out.seen,
        [
            ("allowlist", raw),
            ("secrets", scrubbed.clone()),
            ("annotate", scrubbed.clone()),
            ("oauth_token", scrubbed),
        ]
    );
    let entries: Vec<_> = out
        .record
        .response_transforms
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                serde_json::Value::Object(t.annotations.clone()),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [(
            "secrets",
            json!({"response_redacted": ["x-echo"], "response_body_redacted": 2})
        )]
    );
}

/// A minted token alone (no `secrets` in the pipeline) is scrubbed, and the
/// annotations go to the entry of the transform that minted it.
#[tokio::test]
async fn a_minted_token_alone_is_scrubbed_in_its_transforms_entry() {
    let out = exchange(&[("allowlist", None, true), ("gcp_auth", Some(TOKEN), true)]).await;
    assert!(
        !out.echo.contains(TOKEN) && !out.body.contains(TOKEN),
        "{}",
        out.body
    );
    let entries: Vec<_> = out
        .record
        .response_transforms
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(entries, ["gcp_auth"]);
    assert_eq!(
        out.record.response_transforms[0].annotations["response_body_redacted"],
        json!(1)
    );
}

/// The body is scrubbed when any transform that noted a value wants it, and
/// then of every value, an opted-out transform's too; headers always.
#[tokio::test]
async fn the_body_is_scrubbed_when_any_transform_that_noted_a_value_wants_it() {
    for (first, second, body_scrubbed) in [
        (true, true, true),
        (false, true, true),
        (true, false, true),
        (false, false, false),
    ] {
        let out = exchange(&[
            ("secrets", Some(KEY), first),
            ("oauth_token", Some(TOKEN), second),
        ])
        .await;
        let case = format!("secrets {first}, oauth_token {second}");
        assert_eq!(out.echo, "key=[redacted] token=Bearer [redacted]", "{case}");
        let annotations = &out.record.response_transforms[0].annotations;
        if body_scrubbed {
            assert!(
                !out.body.contains(KEY) && !out.body.contains(TOKEN),
                "{case}: {}",
                out.body
            );
            assert_eq!(annotations["response_body_redacted"], json!(2), "{case}");
        } else {
            assert!(
                out.body.contains(KEY) && out.body.contains(TOKEN),
                "{case}: {}",
                out.body
            );
            assert!(
                annotations.get("response_body_redacted").is_none(),
                "{case}"
            );
        }
    }
}

/// No value noted: nothing is wrapped, changed or recorded.
#[tokio::test]
async fn a_request_given_no_value_is_left_alone() {
    let out = exchange(&[("allowlist", None, true), ("oauth_token", None, true)]).await;
    assert!(out.echo.contains(TOKEN) && out.body.contains(TOKEN));
    assert!(out.record.response_transforms.is_empty());
}

/// The copy of a buffered body's trailers a transform that rewrites the
/// body puts back (`grpc` with a policy server's new body) is scrubbed too,
/// with or without the body's scrub (finding of session 47's review: it
/// brought the upstream's `grpc-message` back whole).
#[tokio::test]
async fn the_kept_copy_of_the_trailers_is_scrubbed() {
    for scrub_body in [true, false] {
        let mut cx = test_flow("api.test", "POST", "/svc/Method");
        cx.note_secret_value(&SecretValue::new(KEY.into()), "secrets", scrub_body);
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            "grpc-message",
            HeaderValue::from_str(&format!("bad key {KEY}")).expect("header"),
        );
        let mut rsp = http::Response::new(body::with_trailers(
            bytes::Bytes::from_static(b"\0\0\0\0\0"),
            Some(trailers.clone()),
        ));
        rsp.extensions_mut()
            .insert(crate::pipeline::BodyTrailers(trailers));
        super::scrub(&mut rsp, &mut cx, "secrets").expect("scrubbed");
        let kept = &rsp
            .extensions()
            .get::<crate::pipeline::BodyTrailers>()
            .expect("kept")
            .0;
        assert_eq!(
            kept["grpc-message"], "bad key [redacted]",
            "scrub_response_bodies: {scrub_body}"
        );
    }
}
