//! A workload may put its placeholder where a later transform quotes the
//! request: after `secrets` swapped in the real value, that transform's
//! refusal (message, JSON-RPC answer), error detail and annotations would
//! carry the credential to the workload and the audit log, past the
//! response scrub, which sees only upstream answers. Found by session 48's
//! review; each case below returned the real value before
//! `Flow::redact_noted`.

use http::Request;
use http_body_util::BodyExt;

use super::*;
use crate::body::Body;

const SECRET: &str = "ghp_RealSecretValue0123456789ABCDEFabcd";

/// Every form of [`SECRET`] a refusal was seen to carry: as is, lowercased
/// (MCP reads header tokens case-folded), and its first 32 characters.
fn leaks(text: &str) -> Vec<&'static str> {
    let lower: &'static str = SECRET.to_ascii_lowercase().leak();
    [SECRET, lower, &lower[..32]]
        .into_iter()
        .filter(|f| text.contains(f))
        .collect()
}

/// Runs the request phase of a `sni-only` config (no CA needed) whose
/// `transforms:` are `transforms` and whose `mcp:` block is `mcp`.
async fn refused(
    transforms: &str,
    mcp: &str,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (Rejection, Vec<TransformTrace>) {
    let yaml = format!("tls:\n  mode: sni-only\ntransforms:\n{transforms}{mcp}");
    let cfg = crate::config::parse(&yaml, "t.yaml", &|_| None).expect("valid config");
    let sources = crate::transforms::test_support::sources(&[
        ("S", SECRET),
        ("AK", "AKIAREALREALREAL0001"),
        ("SK", "realsecretkey0123456789"),
    ]);
    let (policy, _) = crate::app::build_policy(&cfg, &sources, None).expect("builds");
    let mut req: Request<Body> =
        crate::transforms::test_support::request(method, url, headers, body);
    let uri: http::Uri = url.parse().expect("url");
    let host = uri.host().expect("host").to_string();
    let dest = Dest {
        host,
        ip: None,
        port: 443,
        tls: true,
    };
    let mut cx = Flow::new(dest, method.into(), uri.path().into());
    let mut trace = Vec::new();
    match policy
        .pipeline
        .on_request(&mut req, &mut cx, &mut trace)
        .await
    {
        PhaseOutcome::Reject(_, r) => (r, trace),
        other => panic!("expected a refusal, got {}", describe(&other)),
    }
}

fn describe(o: &PhaseOutcome) -> &'static str {
    match o {
        PhaseOutcome::Continue => "continue",
        PhaseOutcome::Reject(..) => "reject",
        PhaseOutcome::Stub(..) => "stub",
        PhaseOutcome::Fail(..) => "fail",
    }
}

/// Asserts that neither the workload's answer nor the record holds the
/// secret, and that it was masked (not merely absent).
async fn assert_masked(r: Rejection, trace: Vec<TransformTrace>) {
    let message = r.message.clone();
    let body = r.into_response().into_body().collect().await.expect("body");
    let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    let record = serde_json::to_string(
        &trace
            .iter()
            .map(|t| (&t.name, &t.annotations))
            .collect::<Vec<_>>(),
    )
    .expect("json");
    for (what, text) in [
        ("message", &message),
        ("answer", &body),
        ("record", &record),
    ] {
        assert_eq!(leaks(text), Vec::<&str>::new(), "{what}: {text}");
    }
    assert!(
        body.contains(crate::secrets::scrub::REDACTED),
        "the quoted value is masked: {body}"
    );
}

const SWAP_AWS: &str = "  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, var: S}\n          replace: {proxy_value: pk-proxy-tok, match_query: true}\n          rules: [{host: \"*.amazonaws.com\"}]\n";

#[tokio::test]
async fn aws_auth_refusing_a_streaming_payload_does_not_quote_the_swapped_value() {
    let aws = "  - name: aws_auth\n    config:\n      access_key_id: {type: env, var: AK}\n      secret_access_key: {type: env, var: SK}\n      rules: [{host: \"*.amazonaws.com\"}]\n";
    let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123abcd";
    let (r, trace) = refused(
        &format!("{SWAP_AWS}{aws}"),
        "",
        "https://bucket.s3.amazonaws.com/k",
        "PUT",
        &[
            ("host", "bucket.s3.amazonaws.com"),
            ("authorization", auth),
            ("x-amz-date", "20250101T000000Z"),
            ("x-amz-content-sha256", "STREAMING-pk-proxy-tok"),
        ],
        None,
    )
    .await;
    assert_masked(r, trace).await;
}

#[tokio::test]
async fn aws_auth_refusing_a_region_does_not_quote_the_swapped_value() {
    let aws = "  - name: aws_auth\n    config:\n      access_key_id: {type: env, var: AK}\n      secret_access_key: {type: env, var: SK}\n      allowed_regions: [us-east-1]\n      rules: [{host: \"*.amazonaws.com\"}]\n";
    let (r, trace) = refused(
        &format!("{SWAP_AWS}{aws}"),
        "",
        "https://bucket.s3.amazonaws.com/k?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2Fpk-proxy-tok%2Fs3%2Faws4_request&X-Amz-Date=20990101T000000Z&X-Amz-Expires=60",
        "GET",
        &[("host", "bucket.s3.amazonaws.com")],
        None,
    )
    .await;
    assert_masked(r, trace).await;
}

const SWAP_MCP: &str = "  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, var: S}\n          replace: {proxy_value: pk-proxy-tok}\n          rules: [{host: \"mcp.github.test\"}]\n";
const MCP: &str = "mcp:\n  servers:\n    - name: github\n      rules:\n        - host: \"mcp.github.test\"\n          paths: [\"/mcp\"]\n      tools:\n        - name: \"search_repositories\"\n";
const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;

#[tokio::test]
async fn mcp_refusing_a_content_encoding_does_not_quote_the_swapped_value() {
    let (r, trace) = refused(
        SWAP_MCP,
        MCP,
        "https://mcp.github.test/mcp",
        "POST",
        &[
            ("host", "mcp.github.test"),
            ("content-type", "application/json"),
            ("content-encoding", "pk-proxy-tok"),
        ],
        Some(CALL),
    )
    .await;
    assert_masked(r, trace).await;
}

#[tokio::test]
async fn mcp_refusing_a_charset_does_not_quote_the_swapped_value() {
    let (r, trace) = refused(
        SWAP_MCP,
        MCP,
        "https://mcp.github.test/mcp",
        "POST",
        &[
            ("host", "mcp.github.test"),
            ("content-type", "application/json; charset=pk-proxy-tok"),
        ],
        Some(CALL),
    )
    .await;
    assert_masked(r, trace).await;
}

#[test]
fn redact_noted_finds_a_value_whole_case_folded_or_cut_short_and_nothing_else() {
    let mut cx = Flow::new(
        Dest {
            host: "h.test".into(),
            ip: None,
            port: 443,
            tls: true,
        },
        "GET".into(),
        "/".into(),
    );
    assert_eq!(
        cx.redact_noted(&format!("x {SECRET} y")),
        None,
        "none noted"
    );
    cx.note_secret_value(
        &crate::secrets::SecretValue::new(SECRET.to_string()),
        "secrets",
        true,
    );
    assert_eq!(cx.redact_noted("nothing of it here"), None);
    // In the record, a name that shares a word with the value's start is not
    // it; in an answer to the workload, 8 bytes of it are (a quote cut short
    // by a length the workload chose its padding for).
    assert_eq!(cx.redact_noted_record("x-echo-ghp_RealSecret"), None);
    let cut = format!("charset \"{}\"", &SECRET.to_ascii_lowercase()[..10]);
    let out = cx.redact_noted(&cut).expect("10 bytes of it are found");
    assert!(!out.contains(&SECRET.to_ascii_lowercase()[..10]), "{out}");
    for text in [
        format!("quoted {SECRET}"),
        format!("case-folded \"{}\"", SECRET.to_ascii_lowercase()),
        format!("cut \"{}\"", &SECRET.to_ascii_lowercase()[..32]),
        format!("tail {}", &SECRET[20..]),
    ] {
        let out = cx.redact_noted(&text).expect("found");
        assert_eq!(leaks(&out), Vec::<&str>::new(), "{out}");
        assert!(out.contains(crate::secrets::scrub::REDACTED), "{out}");
    }
}
