//! The `judge` transform through the real binary. The LLM provider in the fake internet
//! (tests/llm_provider.py) speaks Anthropic's Messages API and OpenAI's Chat Completions API:
//! it validates every request with the official SDKs' request types and builds every answer
//! from their response models; only the model's decision is simulated (no model runs
//! offline). Curl is the workload; the upstream logs what reached it.

use std::net::SocketAddr;
use std::path::Path;

use iron_proxy_tests::netns::NetProcess;
use iron_proxy_tests::*;
use serde_json::{json, Value};

const KEY: &str = "sk-llm-test-key";

/// The provider on a fresh host of `net`, port 80; its requests go to `log`.
fn provider(net: &FakeInternet, log: &Path) -> (NetProcess, SocketAddr) {
    net.python_peer("llm_provider.py", 80, |host, cmd| {
        cmd.args([host.v4.to_string(), "80".into(), KEY.into()])
            .arg(log);
    })
}

fn config(llm: SocketAddr) -> String {
    format!(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["api.test"]
  - name: judge
    config:
      name: "write-guard"
      timeout: "2s"
      rules:
        - host: "api.test"
          methods: ["POST", "DELETE"]
      provider:
        type: "anthropic"
        model: "claude-haiku-4-5-20251001"
        api_key_env: "JUDGE_ANTHROPIC_KEY"
        base_url: "http://{llm}"
      prompt: |
        Allow writes to the repository under review.
        Deny anything that touches "billing" or deletes data.
  - name: judge
    config:
      name: "second-opinion"
      fallback: "skip"
      timeout: "1s"
      max_concurrent: 1
      rules:
        - host: "api.test"
          paths: ["/anything/second/*"]
      provider:
        type: "openai"
        model: "gpt-5.4-nano"
        api_key_env: "JUDGE_OPENAI_KEY"
        base_url: "http://{llm}"
      prompt: "Deny deletions."
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: API_TOKEN}}
          replace:
            proxy_value: "proxy-token-123"
            match_headers: ["Authorization"]
          rules:
            - host: "api.test"
"#
    )
}

fn post(url: &str, body: &str, px: &ProxyProcess) -> CurlResult {
    Curl::new(["-s", "-X", "POST", "--data-binary", body, url])
        .header("Content-Type", "application/json")
        .header("Authorization", "Bearer proxy-token-123")
        .via(px)
        .run()
}

/// The proxy with [`config`], the provider and the upstream, dropped in that order.
struct Lab {
    px: ProxyProcess,
    up: UpstreamHandle,
    _llm: NetProcess,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _net: FakeInternet,
}

/// A [`Lab`] whose second (OpenAI) judge gets `openai_key`.
fn lab(openai_key: &str) -> Lab {
    let net = FakeInternet::new();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("llm.jsonl");
    let (llm_proc, llm) = provider(&net, &log);
    let up = Upstream::https("api.test").start(&net);
    let px = Proxy::with(config(llm).as_str())
        .resolver(&net)
        .env("JUDGE_ANTHROPIC_KEY", KEY)
        .env("JUDGE_OPENAI_KEY", openai_key)
        .env("API_TOKEN", "real-api-token-456")
        .start();
    Lab {
        px,
        up,
        _llm: llm_proc,
        log,
        _dir: dir,
        _net: net,
    }
}

#[test]
fn judges_allow_and_deny_with_both_providers_and_see_only_proxy_tokens() {
    require_root!();
    let lab = lab(KEY);
    let (px, up, log) = (&lab.px, &lab.up, lab.log.as_path());

    // Allowed by the model: reaches the upstream with the real token (secrets ran after).
    let r = post(
        &up.url("/anything/repos/x/comments"),
        r#"{"body":"lgtm"}"#,
        px,
    );
    r.expect_status(200);
    let at_upstream = up.wait_for_request(|q| q.path() == "/anything/repos/x/comments");
    assert_eq!(
        at_upstream.header("authorization"),
        Some("Bearer real-api-token-456")
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/repos/x/comments"));
    assert!(rec.is_allowed(), "{rec}");
    let a = rec.annotations("judge").expect("judge annotations");
    assert_eq!(a["instance"], "write-guard", "{rec}");
    assert_eq!(a["model"], "claude-haiku-4-5-20251001", "{rec}");
    assert_eq!(a["decision"], "ALLOW", "{rec}");
    assert_eq!(a["reason"], "within policy", "{rec}");
    assert!(a["input_tokens"].as_u64().is_some_and(|n| n > 0), "{rec}");
    assert!(a["output_tokens"].as_u64().is_some(), "{rec}");
    assert!(a["duration_ms"].as_u64().is_some(), "{rec}");

    // What the model saw: the policy embedded, the envelope, the proxy token (not the real one).
    let calls = json_lines(log);
    let first = &calls[0];
    assert_eq!(first["api"], "anthropic");
    assert!(first["system"]
        .as_str()
        .expect("system prompt")
        .contains(r#"Deny anything that touches \"billing\" or deletes data."#));
    let env = &first["envelope"];
    assert_eq!(env["method"], "POST");
    assert_eq!(env["url"], "https://api.test:443/anything/repos/x/comments");
    assert_eq!(env["body"], r#"{"body":"lgtm"}"#);
    let text = env.to_string();
    assert!(text.contains("proxy-token-123"), "{text}");
    assert!(
        !text.contains("real-api-token-456"),
        "the judge runs before secrets: {text}"
    );
    assert_eq!(
        env["headers"][0]["name"], "host",
        "priority headers first: {text}"
    );
    assert!(!first["headers"].to_string().contains("real-api-token"));

    // Denied by the model: 403, never reaches the upstream.
    let r = post(
        &up.url("/anything/repos/x/billing"),
        r#"{"plan":"free"}"#,
        px,
    );
    r.expect_status(403);
    assert!(r.body.contains("denied by judge 'write-guard'"), "{r}");
    assert!(
        !r.body.contains("touches billing"),
        "the model's reason stays in the audit: {r}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/repos/x/billing"));
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("judge"), "{rec}");
    assert_eq!(rec.str("reason"), Some("judge_denied"), "{rec}");
    assert_eq!(rec.annotation("judge", "decision"), Some(&json!("DENY")));

    // Not matched (GET): no LLM call, no annotations.
    let before = json_lines(log).len();
    Curl::get(&up.url("/anything/repos/x"))
        .via(px)
        .run()
        .expect_status(200);
    let rec =
        px.wait_for_audit(|a| a.path() == Some("/anything/repos/x") && a.method() == Some("GET"));
    assert!(rec.transform("judge").is_none(), "{rec}");
    assert_eq!(
        json_lines(log).len(),
        before,
        "no LLM call for an unmatched request"
    );

    // A method override is no way around the judge: a POST with an override its rules do not
    // name, and a GET that asks for DELETE, are judged like the methods they carry (a layer
    // that only rejects matches what some server may perform).
    for (method, path, override_header) in [
        ("POST", "/anything/repos/x/override-x", "x"),
        ("GET", "/anything/repos/x/override-delete", "DELETE"),
    ] {
        let before = json_lines(log).len();
        Curl::new(["-s", "-X", method, &up.url(path)])
            .header("X-HTTP-Method-Override", override_header)
            .via(px)
            .run();
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert!(
            rec.annotation("judge", "decision").is_some(),
            "{method} with an override to {override_header} is judged: {rec}"
        );
        assert_eq!(json_lines(log).len(), before + 1, "{method} {path}");
    }

    // Two instances match: both must allow; the OpenAI judge denies a deletion.
    let r = post(&up.url("/anything/second/ok"), "{}", px);
    r.expect_status(200);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/second/ok"));
    let judges: Vec<&Value> = rec
        .request_transforms()
        .iter()
        .filter(|t| t["name"] == "judge")
        .collect();
    assert_eq!(judges.len(), 2, "{rec}");
    assert_eq!(judges[1]["annotations"]["instance"], "second-opinion");
    assert_eq!(judges[1]["annotations"]["model"], "gpt-5.4-nano");
    let r = Curl::new(["-s", "-X", "DELETE", &up.url("/anything/second/delete-me")])
        .via(px)
        .run();
    r.expect_status(403);
    assert!(
        json_lines(log).iter().any(|c| c["api"] == "openai"),
        "the OpenAI-style judge was called"
    );
    assert!(up
        .requests()
        .iter()
        .all(|q| !q.path().contains("billing") && !q.path().contains("delete-me")));
}

#[test]
fn provider_failures_apply_the_fallback() {
    require_root!();
    let lab = lab("sk-wrong-key");
    let (px, up) = (&lab.px, &lab.up);

    // An API error: fallback deny.
    post(&up.url("/anything/repos/fail-500"), "{}", px).expect_status(403);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/repos/fail-500"));
    assert_eq!(rec.str("reason"), Some("judge_unavailable"), "{rec}");
    let a = rec.annotations("judge").expect("annotations");
    assert_eq!(a["decision"], "FALLBACK_DENY", "{rec}");
    assert_eq!(a["fallback_applied"], "deny", "{rec}");
    assert!(
        a["reason"]
            .as_str()
            .expect("reason")
            .contains("500 (api_error)"),
        "{rec}"
    );

    // Prose instead of a decision: fallback, with the raw output kept.
    post(&up.url("/anything/repos/garbage"), "{}", px).expect_status(403);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/repos/garbage"));
    assert_eq!(
        rec.annotation("judge", "raw_output"),
        Some(&json!("I think this request is probably fine."))
    );

    // A decision in a code fence is read.
    post(&up.url("/anything/repos/fenced"), "{}", px).expect_status(200);

    // Too slow: the 2 s timeout, fallback deny.
    post(&up.url("/anything/repos/slow"), "{}", px).expect_status(403);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/repos/slow"));
    assert!(
        rec.annotation("judge", "reason")
            .and_then(Value::as_str)
            .is_some_and(|r| r.contains("timed out")),
        "{rec}"
    );

    // The second judge's key is wrong (401): its fallback is skip, so the first judge's
    // ALLOW stands and the request goes through.
    post(&up.url("/anything/second/thing"), "{}", px).expect_status(200);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/second/thing"));
    let second = rec
        .request_transforms()
        .iter()
        .find(|t| t["annotations"]["instance"] == "second-opinion")
        .unwrap_or_else(|| panic!("second judge traced: {rec}"));
    assert_eq!(second["annotations"]["decision"], "FALLBACK_ALLOW", "{rec}");
    assert!(
        second["annotations"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("401")),
        "{rec}"
    );
    assert!(!rec.json().to_string().contains("sk-wrong-key"), "{rec}");
}

#[test]
fn a_body_longer_than_the_buffer_is_judged_on_its_start_and_sent_whole() {
    require_root!();
    let lab = lab(KEY);
    let (px, up, log) = (&lab.px, &lab.up, lab.log.as_path());
    // 2.5 MiB, past the default `proxy.max_request_body_bytes` (1 MiB): the judge sees the
    // first MiB and a warning that more followed; the word the simulated model denies on
    // sits after it, so this judge, like a model, cannot know about it.
    let mut body: String = (0..(5 << 18) / 8).map(|i| format!("{i:07x} ")).collect();
    body.push_str("billing");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("upload.txt");
    std::fs::write(&file, &body).expect("write body");
    let r = Curl::new([
        "-s",
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", file.display()),
        &up.url("/anything/repos/x/upload"),
    ])
    .header("Content-Type", "text/plain")
    .via(px)
    .run();
    r.expect_status(200);
    let echo = r.json();
    assert_eq!(echo["body_len"], body.len(), "{}", echo["body_len"]);
    assert!(
        echo["data"] == body.as_str(),
        "the upstream got the body unchanged"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/repos/x/upload"));
    assert_eq!(rec.annotation("judge", "decision"), Some(&json!("ALLOW")));
    let call = json_lines(log)
        .into_iter()
        .find(|c| {
            c["envelope"]["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("/upload"))
        })
        .expect("the judge was asked");
    let warnings = call["envelope"]["warnings"].to_string();
    assert!(
        warnings.contains("longer than the 1048576 bytes read for judging"),
        "{warnings}"
    );
    assert!(
        warnings.contains("body truncated to 16384 of"),
        "{warnings}"
    );
}

#[test]
fn raw_output_never_carries_the_api_key() {
    require_root!();
    let lab = lab(KEY);
    let (px, up) = (&lab.px, &lab.up);
    // The provider quotes the key it was called with instead of deciding.
    post(&up.url("/anything/repos/echo-key"), "{}", px).expect_status(403);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/repos/echo-key"));
    let raw = rec
        .annotation("judge", "raw_output")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("raw output kept: {rec}"));
    assert_eq!(
        raw, "Called with x-api-key [redacted]; looks fine to me.",
        "{rec}"
    );
    assert!(!rec.json().to_string().contains(KEY), "{rec}");
}

/// The slot wait's bound (`max_concurrent`) is proven with a paused clock in the judge's
/// unit tests (`the_timeout_bounds_the_wait_for_a_slot`): with real time, which request
/// waits and for how long depends on scheduling.
#[test]
fn retry_after_holds_the_breaker_open() {
    require_root!();
    let lab = lab(KEY);
    let (px, up, log) = (&lab.px, &lab.up, lab.log.as_path());

    // A 429 with Retry-After: 60 holds the breaker open although one failure is far from
    // consecutive_failures (5): the next request gets the fallback without a call.
    post(&up.url("/anything/repos/rate-limited"), "{}", px).expect_status(403);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/repos/rate-limited"));
    assert!(
        rec.annotation("judge", "reason")
            .and_then(Value::as_str)
            .is_some_and(|r| r.contains("429 (rate_limit_error), retry after 60s")),
        "{rec}"
    );
    let before = json_lines(log).len();
    post(
        &up.url("/anything/repos/x/comments"),
        r#"{"body":"lgtm"}"#,
        px,
    )
    .expect_status(403);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/repos/x/comments"));
    assert_eq!(rec.str("reason"), Some("judge_unavailable"), "{rec}");
    assert_eq!(
        rec.annotation("judge", "circuit_breaker_tripped"),
        Some(&json!(true)),
        "{rec}"
    );
    assert_eq!(
        json_lines(log).len(),
        before,
        "no LLM call while the provider asked to wait"
    );
}
