use super::*;
use crate::config::{ArgCondition, ArgMatcher, McpServer, McpTool};
use crate::pipeline::{test_flow, BufferedBody, OriginalBody};
use crate::rules::{Rule, Scope};
use http_body_util::BodyExt;

fn interceptor() -> McpInterceptor {
    let rule: Rule =
        serde_json::from_str(r#"{"host": "mcp.test", "paths": ["/mcp", "/mcp/*"]}"#).expect("rule");
    McpInterceptor::new(
        &McpConfig {
            error: McpErrorConfig {
                code: -32042,
                message: "no".into(),
            },
            servers: vec![McpServer {
                name: "gh".into(),
                rules: Scope(vec![rule]),
                tools: vec![
                    McpTool {
                        name: "search".into(),
                        when: vec![],
                    },
                    McpTool {
                        name: "create_issue".into(),
                        when: vec![ArgMatcher {
                            path: vec!["owner".into()],
                            condition: ArgCondition::Equals(json!("ironsh")),
                        }],
                    },
                ],
            }],
        },
        1 << 20,
        0,
    )
}

/// A request as the pipeline hands it over: the body buffered, and the body
/// the client sent (different when an earlier transform rewrote it).
fn request(body: &str, sent: &str) -> Request<Body> {
    let mut req = Request::new(body::full(body.to_string()));
    req.extensions_mut()
        .insert(BufferedBody(Bytes::from(body.to_string())));
    req.extensions_mut()
        .insert(OriginalBody(Bytes::from(sent.to_string())));
    req
}

async fn judge(body: &str) -> (Verdict, Flow, Request<Body>) {
    judge_sent(body, body).await
}

async fn judge_sent(body: &str, sent: &str) -> (Verdict, Flow, Request<Body>) {
    let mut cx = test_flow("mcp.test", "POST", "/mcp");
    let mut req = request(body, sent);
    let v = interceptor()
        .on_request(&mut req, &mut cx)
        .await
        .expect("no failure");
    (v, cx, req)
}

async fn answer(v: Verdict) -> (u16, String, Value) {
    let Verdict::Reject(r) = v else {
        panic!("expected a refusal")
    };
    let reason = r.reason.clone();
    let rsp = r.into_response();
    let status = rsp.status().as_u16();
    assert_eq!(rsp.headers()[CONTENT_TYPE], "application/json");
    let bytes = rsp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        reason,
        serde_json::from_slice(&bytes).expect("json"),
    )
}

fn audit(cx: &Flow) -> Value {
    let f = cx.late_audit.first().expect("an mcp audit section");
    let (k, v) = f.current();
    assert_eq!(k, Some("mcp"));
    v.expect("field")
}

#[tokio::test]
async fn a_denied_call_is_answered_with_the_configured_error_and_its_id() {
    let (v, cx, _) = judge(
        r#"{"jsonrpc":"2.0","id":"call-9","method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#,
    )
    .await;
    let (status, reason, body) = answer(v).await;
    assert_eq!((status, reason.as_str()), (200, "mcp_tool_denied"));
    assert_eq!(
        body,
        json!({"jsonrpc":"2.0","id":"call-9","error":{"code":-32042,"message":"no"}})
    );
    let a = audit(&cx);
    assert_eq!(a["server"], "gh");
    assert_eq!(a["messages"][0]["tool"], "delete_repo");
    assert_eq!(a["messages"][0]["decision"], "deny");
    assert_eq!(a["messages"][0]["id"], "call-9");
}

#[tokio::test]
async fn allowed_calls_and_other_methods_go_through() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":{"owner":"ironsh"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":5,"result":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#,
    ] {
        let (v, cx, _) = judge(body).await;
        assert!(matches!(v, Verdict::Continue), "{body}");
        assert_ne!(audit(&cx)["messages"][0]["decision"], "deny", "{body}");
    }
    let (v, _, _) = judge(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":{"owner":"evil"}}}"#,
    )
    .await;
    assert!(matches!(v, Verdict::Reject(_)), "argument matcher");
}

#[tokio::test]
async fn a_batch_with_one_denied_call_is_refused_whole() {
    let (v, cx, _) = judge(
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"rm"}},
            {"jsonrpc":"2.0","method":"notifications/x"}]"#,
    )
    .await;
    let (status, _, body) = answer(v).await;
    assert_eq!(status, 200);
    let ids: Vec<_> = body
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, [json!(1), json!(2), Value::Null]);
    let decisions: Vec<_> = audit(&cx)["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["decision"].clone())
        .collect();
    assert_eq!(decisions, ["allow", "deny", "forward"]);
}

#[tokio::test]
async fn bodies_that_are_not_json_rpc_are_refused() {
    for (body, code) in [
        ("tools/call please", -32700),
        (
            r#"{"id":1,"method":"tools/call","params":{"name":"search","name":"rm"}}"#,
            -32700,
        ),
        (r#"{"id":1,"params":{}}"#, -32600),
        ("[]", -32600),
    ] {
        let (v, cx, _) = judge(body).await;
        let (status, reason, rsp) = answer(v).await;
        assert_eq!(
            (status, reason.as_str()),
            (400, "mcp_invalid_request"),
            "{body}"
        );
        assert_eq!(rsp["error"]["code"], code, "{body}");
        assert_eq!(rsp["id"], Value::Null);
        assert_eq!(audit(&cx)["messages"][0]["decision"], "deny");
    }
    // A call that names no tool is a denied call.
    let (v, _, _) = judge(r#"{"id":1,"method":"tools/call","params":{}}"#).await;
    assert_eq!(answer(v).await.1, "mcp_tool_denied");
}

/// Requests the server would read otherwise than the filter can (session 47's review):
/// a body in another charset (the TypeScript SDK and `express.json()` decode it as the
/// request says, UTF-7 included: here `"name":"search"` then, hidden in UTF-7, a second
/// `"name":"delete_repo"`), a WebSocket upgrade, a GET with a body.
#[tokio::test]
async fn requests_the_server_would_read_otherwise_are_refused() {
    let utf7 = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","x":"+ACIALAAiAG4AYQBtAGUAIgA6ACIAZABlAGwAZQB0AGUAXwByAGUAcABv-"}}"#;
    for (method, headers, body, says) in [
        (
            "POST",
            &[("content-type", "application/json; charset=utf-7")][..],
            utf7,
            "charset \"utf-7\"",
        ),
        (
            "POST",
            &[("content-type", "Application/JSON; Charset=\"UTF-16\"")][..],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            "charset \"utf-16\"",
        ),
        (
            "GET",
            &[("upgrade", "websocket"), ("connection", "upgrade")][..],
            "",
            "upgrade",
        ),
        (
            "GET",
            &[("last-event-id", "7")][..],
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "a GET to an MCP endpoint carries no body",
        ),
    ] {
        let mut cx = test_flow("mcp.test", method, "/mcp");
        let mut req = request(body, body);
        for (k, v) in headers {
            req.headers_mut().insert(*k, HeaderValue::from_static(v));
        }
        let v = interceptor()
            .on_request(&mut req, &mut cx)
            .await
            .expect("no failure");
        let (status, reason, rsp) = answer(v).await;
        assert_eq!(
            (status, reason.as_str()),
            (400, "mcp_invalid_request"),
            "{says}"
        );
        assert!(
            rsp["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{says}: {rsp}"
        );
    }
    // UTF-8 named in any spelling is read as it is.
    for ct in [
        "application/json; charset=utf-8",
        "application/json;charset=\"UTF8\"",
    ] {
        let mut cx = test_flow("mcp.test", "POST", "/mcp");
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let mut req = request(list, list);
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        let v = interceptor()
            .on_request(&mut req, &mut cx)
            .await
            .expect("no failure");
        assert!(matches!(v, Verdict::Continue), "{ct}");
    }
}

#[tokio::test]
async fn ids_and_names_shown_come_from_the_body_as_sent() {
    // An earlier `secrets` transform swapped a proxy token inside the id and
    // the tool name: the error and the audit must not carry the real value.
    let sent = r#"{"jsonrpc":"2.0","id":"PROXY_TOKEN","method":"tools/call","params":{"name":"PROXY_TOKEN"}}"#;
    let swapped = sent.replace("PROXY_TOKEN", "real-secret-value");
    let (v, cx, _) = judge_sent(&swapped, sent).await;
    let (_, _, body) = answer(v).await;
    assert_eq!(body["id"], "PROXY_TOKEN");
    let a = audit(&cx).to_string();
    assert!(!a.contains("real-secret-value"), "{a}");
    assert!(a.contains("PROXY_TOKEN"), "{a}");
}

#[tokio::test]
async fn compressed_bodies_are_judged_decoded() {
    use std::io::Write;
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"rm"}}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(call.as_bytes()).expect("gzip");
    let bytes = Bytes::from(gz.finish().expect("gzip"));
    let mut req = Request::new(body::full(bytes.clone()));
    req.headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    req.extensions_mut().insert(BufferedBody(bytes.clone()));
    let mut cx = test_flow("mcp.test", "POST", "/mcp");
    let v = interceptor()
        .on_request(&mut req, &mut cx)
        .await
        .expect("ok");
    assert_eq!(answer(v).await.2["id"], 3);
    // zstd too.
    let zst = Bytes::from_static(include_bytes!(
        "../transforms/body_capture/fixtures/call.zst"
    ));
    let mut req = Request::new(body::full(zst.clone()));
    req.headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    req.extensions_mut().insert(BufferedBody(zst));
    let v = interceptor()
        .on_request(&mut req, &mut cx)
        .await
        .expect("ok");
    assert_eq!(answer(v).await.2["id"], 3);
    // An encoding the proxy cannot read is refused, not forwarded.
    req.headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("compress"));
    let v = interceptor()
        .on_request(&mut req, &mut cx)
        .await
        .expect("ok");
    assert_eq!(answer(v).await.0, 400);
}

#[tokio::test]
async fn requests_outside_the_servers_are_untouched() {
    let i = interceptor();
    let mut cx = test_flow("other.test", "POST", "/mcp");
    assert!(!i.wants_request_body(&cx, &Request::new(()).into_parts().0));
    let mut req = request("not json", "not json");
    assert!(matches!(
        i.on_request(&mut req, &mut cx).await.expect("ok"),
        Verdict::Continue
    ));
    assert!(cx.late_audit.is_empty());
    assert!(!i.traced_when_idle());
}

#[tokio::test]
async fn tools_list_answers_are_filtered() {
    let (v, mut cx, req) =
        judge(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{}}"#).await;
    assert!(matches!(v, Verdict::Continue));
    assert_eq!(
        req.headers().get(ACCEPT_ENCODING).map(|v| v.as_bytes()),
        Some(&b"identity"[..])
    );
    let list = r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"search"},{"name":"rm"},{"name":"create_issue"}]}}"#;
    let mut rsp = Response::new(body::full(list));
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(list.len()));
    let v = interceptor()
        .on_response(&mut rsp, &mut cx)
        .await
        .expect("ok");
    assert!(matches!(v, Verdict::Continue));
    let len: usize = rsp.headers()[CONTENT_LENGTH]
        .to_str()
        .expect("text")
        .parse()
        .expect("number");
    let bytes = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(len, bytes.len());
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(
        v["result"]["tools"],
        json!([{"name": "search"}, {"name": "create_issue"}])
    );
    let a = audit(&cx);
    assert_eq!(a["messages"][1]["decision"], "filter");
    assert_eq!(a["messages"][1]["tools_removed"], json!(["rm"]));
}

#[tokio::test]
async fn an_encoded_event_stream_or_undecodable_answer_fails_closed() {
    for (mime, body) in [
        ("text/event-stream", "..."),
        ("application/json", "not gzip"),
    ] {
        let (_, mut cx, _) = judge(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#).await;
        let mut rsp = Response::new(body::full(body));
        rsp.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        rsp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(mime));
        let e = interceptor()
            .on_response(&mut rsp, &mut cx)
            .await
            .err()
            .expect("fails closed");
        assert_eq!(
            (e.status, e.reason),
            (StatusCode::BAD_GATEWAY, "mcp_unfilterable_response"),
            "{mime}"
        );
    }
}

#[tokio::test]
async fn a_compressed_json_answer_is_decoded_filtered_and_sent_plain() {
    use std::io::Write as _;
    let list = r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"search"},{"name":"rm"}]}}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(list.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    // The coding in one field line, or in the second of two (RFC 9110 §5.3:
    // repeated lines are one list).
    for lines in [&["gzip"][..], &["identity", "gzip"][..]] {
        let (_, mut cx, _) = judge(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#).await;
        let mut rsp = Response::new(body::full(gz.clone()));
        for line in lines {
            rsp.headers_mut()
                .append(CONTENT_ENCODING, HeaderValue::from_static(line));
        }
        rsp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        interceptor()
            .on_response(&mut rsp, &mut cx)
            .await
            .expect("filtered");
        assert!(rsp.headers().get(CONTENT_ENCODING).is_none(), "{lines:?}");
        let bytes = rsp.into_body().collect().await.expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&bytes).expect("plain json");
        assert_eq!(
            v["result"]["tools"],
            json!([{"name": "search"}]),
            "{lines:?}"
        );
    }
}

/// The answer to a `tools/list` (id 4) with this type and body, as the client gets it.
async fn list_answer(
    content_type: &[&str],
    body: &'static str,
) -> (Result<Bytes, TransformError>, Flow) {
    let (_, mut cx, _) = judge(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#).await;
    let mut rsp = Response::new(body::full(body));
    for ct in content_type {
        rsp.headers_mut()
            .append(CONTENT_TYPE, HeaderValue::from_str(ct).expect("header"));
    }
    let out = match interceptor().on_response(&mut rsp, &mut cx).await {
        Ok(_) => Ok(rsp.into_body().collect().await.expect("body").to_bytes()),
        Err(e) => Err(e),
    };
    (out, cx)
}

const LEAKY: &str =
    r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"search"},{"name":"rm"}]}}"#;

#[tokio::test]
async fn every_type_a_client_reads_as_json_is_filtered() {
    // QA case a: the Python SDK takes anything starting `application/json`.
    for ct in [
        "application/json-rpc",
        "Application/JSON; charset=utf-8",
        "application/vnd.example+json",
        "text/plain; x=application/json",
    ] {
        let (out, _) = list_answer(&[ct], LEAKY).await;
        let bytes = out.unwrap_or_else(|e| panic!("{ct}: {e}"));
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["result"]["tools"], json!([{"name": "search"}]), "{ct}");
    }
}

#[tokio::test]
async fn an_answer_of_another_or_two_types_is_refused() {
    for ct in [
        &[][..],
        &["text/plain"],
        &["application/octet-stream"],
        &["text/event-stream; x=application/json"],
        &["application/json", "text/event-stream"],
        &["text/event-stream; charset=utf-16"],
    ] {
        let (out, cx) = list_answer(ct, LEAKY).await;
        let e = out.err().unwrap_or_else(|| panic!("{ct:?} refused"));
        assert_eq!(
            (e.status, e.reason),
            (StatusCode::BAD_GATEWAY, "mcp_unfilterable_response"),
            "{ct:?}"
        );
        let a = audit(&cx);
        assert_eq!(a["server"], "gh");
        assert_eq!(a["messages"][1]["decision"], "deny", "{a}");
    }
}

#[tokio::test]
async fn a_string_id_the_client_reads_as_its_own_is_filtered() {
    // QA case b: the Python SDK reads "4" as 4.
    let body = r#"{"jsonrpc":"2.0","id":"4","result":{"tools":[{"name":"search"},{"name":"rm"}]}}"#;
    let (out, cx) = list_answer(&["application/json"], body).await;
    let v: Value = serde_json::from_slice(&out.expect("filtered")).expect("json");
    assert_eq!(v["result"]["tools"], json!([{"name": "search"}]));
    assert_eq!(audit(&cx)["messages"][1]["tools_removed"], json!(["rm"]));
}

#[tokio::test]
async fn a_json_answer_that_is_not_json_is_refused_not_passed() {
    // QA case c: NaN is not JSON, but the Python SDK's parser reads it.
    for body in [
        r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"rm","inputSchema":{"default":NaN}}]}}"#,
        r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"rm"}]"#,
        "",
    ] {
        let (out, cx) = list_answer(&["application/json"], body).await;
        let e = out.err().unwrap_or_else(|| panic!("{body} refused"));
        assert_eq!(e.reason, "mcp_unfilterable_response", "{body}");
        assert!(e.detail.contains("not valid JSON"), "{}", e.detail);
        let a = audit(&cx);
        assert_eq!(a["messages"][1]["decision"], "deny", "{a}");
        assert!(!a.to_string().contains("\"rm\""), "{a}");
    }
}

#[tokio::test]
async fn a_get_stream_is_read_as_an_event_stream_whatever_its_type() {
    let mut cx = test_flow("mcp.test", "GET", "/mcp");
    let mut req = request("", "");
    let i = interceptor();
    assert!(matches!(
        i.on_request(&mut req, &mut cx).await.expect("ok"),
        Verdict::Continue
    ));
    let body =
        "data: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"tools\":[{\"name\":\"rm\"}]}}\n\n";
    let mut rsp = Response::new(body::full(body));
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    i.on_response(&mut rsp, &mut cx).await.expect("filtered");
    let bytes = rsp.into_body().collect().await.expect("body").to_bytes();
    assert!(!String::from_utf8_lossy(&bytes).contains("rm"), "{bytes:?}");
}

#[tokio::test]
async fn error_envelopes_echo_large_ids_digit_for_digit() {
    let (v, _, _) = judge(
        r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/call","params":{"name":"rm"}}"#,
    )
    .await;
    let Verdict::Reject(r) = v else {
        panic!("expected a refusal")
    };
    let bytes = r
        .into_response()
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains(r#""id":123456789012345678901234567890,"#),
        "{text}"
    );
}

/// With `proxy.max_response_body_bytes` at 0 (the default) the filter still
/// holds at most 16 MiB of a JSON answer, plain or decoded: a server's answer
/// (or a gzip bomb) could otherwise take the proxy's memory.
#[tokio::test]
async fn an_unlimited_proxy_still_bounds_what_the_filter_holds() {
    use std::io::Write as _;
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":4,"result":{{"tools":[{{"name":"search","description":"{}"}}]}}}}"#,
        "x".repeat(HELD_LIMIT)
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(huge.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < 1 << 20, "a small compressed body");
    for (body, coding) in [(Bytes::from(huge), None), (Bytes::from(gz), Some("gzip"))] {
        let (_, mut cx, _) = judge(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#).await;
        let mut rsp = Response::new(body::full(body));
        rsp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(c) = coding {
            rsp.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static(c));
        }
        let Err(e) = interceptor().on_response(&mut rsp, &mut cx).await else {
            panic!("{coding:?}: a 16 MiB answer was held");
        };
        assert_eq!(e.reason, UNFILTERABLE_REASON, "{coding:?}");
        assert!(
            e.detail
                .contains("the 16 MiB the MCP filter holds (proxy.max_response_body_bytes is 0)"),
            "{coding:?}: {}",
            e.detail
        );
    }
}

#[test]
fn an_id_a_number_cannot_hold_is_recorded_as_sent() {
    let raw = |t: &str| serde_json::value::RawValue::from_string(t.to_string()).expect("raw");
    for (text, recorded) in [
        (
            "12345678901234567890123",
            Value::from("12345678901234567890123"),
        ),
        (
            "1.00000000000000000001",
            Value::from("1.00000000000000000001"),
        ),
        ("42", Value::from(42)),
        ("-7", Value::from(-7)),
    ] {
        let parsed: Value = serde_json::from_str(text).expect("a number");
        assert_eq!(
            super::recorded_id(&parsed, Some(&raw(text))),
            recorded,
            "{text}"
        );
    }
    let s = Value::from("abc");
    assert_eq!(super::recorded_id(&s, Some(&raw("\"abc\""))), s);
    assert_eq!(super::recorded_id(&Value::from(1), None), Value::from(1));
}
