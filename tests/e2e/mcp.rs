//! MCP interception through the real binary, with the official MCP Python SDK on both ends
//! (tests/mcp_peer.py): a FastMCP server over Streamable HTTP in the fake internet (HTTPS,
//! answering as SSE on one host and as JSON on another) and the SDK's client session through
//! CONNECT + MITM. The server logs every call that reaches it, so "never reached the
//! upstream" is checked on the server, not inferred from what the client saw.

use std::path::{Path, PathBuf};

use iron_proxy_tests::netns::NetProcess;
use iron_proxy_tests::*;
use serde_json::{json, Value};

/// A FastMCP server on a fresh host of `net` (port 443) named `name`, answering in `mode`
/// ("sse" or "json"); its calls go to `calls`.
fn mcp_server(net: &FakeInternet, name: &str, mode: &str, calls: &Path) -> NetProcess {
    let dir = net.dir().join(name);
    std::fs::create_dir_all(&dir).expect("server dir");
    let leaf = net.ca().issue(&[name.to_string()], &dir, "server");
    let (server, addr) = net.python_peer("mcp_peer.py", 443, |host, cmd| {
        cmd.args(["server", &host.v4.to_string(), "443"])
            .arg(calls)
            .arg(mode)
            .arg(&leaf.cert)
            .arg(&leaf.key);
    });
    net.dns().set(name, &[addr.ip()]);
    server
}

fn peer() -> PathBuf {
    paths::repo_root().join("tests/mcp_peer.py")
}

/// Runs a peer command on the host, through the proxy's CONNECT listener.
fn through(px: &ProxyProcess, args: &[&str]) -> Value {
    let script = r#"
import os, runpy, sys
os.environ["HTTPS_PROXY"] = sys.argv[1]
os.environ["SSL_CERT_FILE"] = sys.argv[2]
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"#;
    let proxy = format!("http://{}", px.tunnel_addr());
    let peer = peer();
    let mut all: Vec<&str> = vec![&proxy, px.ca(), peer.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = python(script, all);
    out.assert_ok().json()
}

const CONFIG: &str = r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["mcp-sse.test", "mcp-json.test"]
mcp:
  servers:
    - name: github
      rules:
        - host: "mcp-*.test"
          paths: ["/mcp", "/mcp/*"]
      tools:
        - name: "search_repositories"
        - name: "create_issue"
          when:
            - path: "owner"
              equals: "ironsh"
            - path: "repo"
              in: ["iron-proxy", "tunis-v2"]
            - path: "title"
              matches: "^\\[bot\\]"
"#;

#[test]
fn the_sdk_sees_only_allowed_tools_and_denied_calls_never_reach_the_server() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let sse_calls = state.path().join("sse.jsonl");
    let json_calls = state.path().join("json.jsonl");
    let _sse = mcp_server(&net, "mcp-sse.test", "sse", &sse_calls);
    let _json = mcp_server(&net, "mcp-json.test", "json", &json_calls);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    for (host, log) in [("mcp-sse.test", &sse_calls), ("mcp-json.test", &json_calls)] {
        let out = through(&px, &["client", &format!("https://{host}/mcp")]);
        assert_eq!(
            out["tools"],
            json!(["create_issue", "search_repositories"]),
            "{host}: tools/list is filtered: {out}"
        );
        assert_eq!(
            out["search"], "found repositories for iron",
            "{host}: {out}"
        );
        assert_eq!(
            out["create_allowed"], "opened ironsh/iron-proxy: [bot] hi",
            "{host}: {out}"
        );
        let denied = json!({"code": -32001, "message": "blocked by iron-proxy policy"});
        for name in ["delete", "create_denied", "echo"] {
            assert_eq!(
                out[name], denied,
                "{host}: {name} is refused with the error: {out}"
            );
        }
        let reached: Vec<Value> = json_lines(log).iter().map(|c| c["tool"].clone()).collect();
        assert_eq!(
            reached,
            [json!("search_repositories"), json!("create_issue")],
            "{host}: only the allowed calls reached the server"
        );

        // The audit: a refused call is a reject by `mcp` with its tool and decision; the
        // tools/list record shows what was removed.
        let rec = px.wait_for_audit(|a| {
            a.host() == Some(host)
                && a.pointer("/mcp/messages/0/tool") == Some(&json!("delete_repository"))
        });
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.rejected_by(), Some("mcp"), "{rec}");
        assert_eq!(rec.str("reason"), Some("mcp_tool_denied"), "{rec}");
        assert_eq!(rec.status_code(), Some(200), "{rec}");
        assert_eq!(rec.pointer("/mcp/server"), Some(&json!("github")), "{rec}");
        assert_eq!(
            rec.pointer("/mcp/messages/0/decision"),
            Some(&json!("deny")),
            "{rec}"
        );
        let rec = px.wait_for_audit(|a| {
            a.host() == Some(host)
                && a.pointer("/mcp/messages/0/method") == Some(&json!("tools/list"))
        });
        assert!(rec.is_allowed(), "{rec}");
        let removed = rec
            .pointer("/mcp/messages/1/tools_removed")
            .unwrap_or_else(|| panic!("the answer's filtering is audited: {rec}"));
        assert_eq!(removed, &json!(["delete_repository", "echo"]), "{rec}");
        let rec = px.wait_for_audit(|a| {
            a.host() == Some(host)
                && a.pointer("/mcp/messages/0/tool") == Some(&json!("search_repositories"))
        });
        assert!(rec.is_allowed(), "{rec}");
        assert_eq!(
            rec.pointer("/mcp/messages/0/decision"),
            Some(&json!("allow")),
            "{rec}"
        );
    }
}

#[test]
fn requests_no_sdk_sends_are_judged_too() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let log = state.path().join("calls.jsonl");
    let _server = mcp_server(&net, "mcp-sse.test", "sse", &log);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    let out = through(&px, &["raw", "https://mcp-sse.test/mcp"]);
    // `/%6Dcp` is `/mcp` to the server: covered by the policy.
    assert_eq!(out["encoded_path"]["status"], 200, "{out}");
    assert_eq!(
        out["encoded_path"]["body"],
        json!({"jsonrpc": "2.0", "id": 11, "error": {"code": -32001, "message": "blocked by iron-proxy policy"}}),
        "{out}"
    );
    // Two `name` keys: the proxy and the server could read different tools.
    assert_eq!(out["duplicate_key"]["status"], 400, "{out}");
    assert_eq!(
        out["duplicate_key"]["body"]["error"]["code"], -32700,
        "{out}"
    );
    // One denied call refuses the whole batch, each entry answered by id.
    assert_eq!(out["batch"]["status"], 200, "{out}");
    let ids: Vec<Value> = out["batch"]["body"]
        .as_array()
        .unwrap_or_else(|| panic!("a batch of errors: {out}"))
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, [json!(13), json!(14)], "{out}");
    assert!(
        json_lines(&log).is_empty(),
        "nothing reached the server: {:?}",
        json_lines(&log)
    );
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("mcp_invalid_request"));
    assert_eq!(rec.status_code(), Some(400), "{rec}");
}

/// The hostile server of `mcp_peer.py crafted` on a fresh host of `net` named `name`.
fn crafted_server(net: &FakeInternet, name: &str, calls: &Path) -> NetProcess {
    let dir = net.dir().join(name);
    std::fs::create_dir_all(&dir).expect("server dir");
    let leaf = net.ca().issue(&[name.to_string()], &dir, "server");
    let (server, addr) = net.python_peer("mcp_peer.py", 443, |host, cmd| {
        cmd.args(["crafted", &host.v4.to_string(), "443"])
            .arg(calls)
            .arg(&leaf.cert)
            .arg(&leaf.key);
    });
    net.dns().set(name, &[addr.ip()]);
    server
}

#[test]
fn answers_the_filter_cannot_read_as_the_sdk_does_never_list_a_denied_tool() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let log = state.path().join("calls.jsonl");
    let _server = crafted_server(&net, "mcp-evil.test", &log);
    let config = CONFIG.replace(
        r#"domains: ["mcp-sse.test", "mcp-json.test"]"#,
        r#"domains: ["mcp-evil.test"]"#,
    );
    let px = Proxy::with(config.as_str()).resolver(&net).start();

    let modes = [
        "json_rpc_type",
        "string_id",
        "nan",
        "sse_nan",
        "sse_second_answer",
        "zstd",
    ];
    let urls: Vec<String> = modes
        .iter()
        .map(|m| format!("https://mcp-evil.test/mcp/{m}"))
        .collect();
    let mut args = vec!["list"];
    args.extend(urls.iter().map(String::as_str));
    let out = through(&px, &args);
    let tools_list = |mode: &str| {
        let path = format!("/mcp/{mode}");
        px.wait_for_audit(move |a| {
            a.path() == Some(path.as_str())
                && a.pointer("/mcp/messages/0/method") == Some(&json!("tools/list"))
        })
    };

    // Read as the SDK reads them, these answers are filtered: an `application/json-rpc`
    // answer, one whose id is the string "1", a second answer on the stream, and an
    // answer compressed with zstd (decoded, filtered and sent on plain; it was a 502
    // while the proxy could not decode zstd).
    for mode in ["json_rpc_type", "string_id", "sse_second_answer", "zstd"] {
        assert_eq!(
            out[mode],
            json!({"tools": ["search_repositories"]}),
            "{mode}: {out}"
        );
        let rec = tools_list(mode);
        assert!(rec.is_allowed(), "{mode}: {rec}");
        let removed: Vec<&Value> = rec
            .pointer("/mcp/messages")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{mode}: messages: {rec}"))
            .iter()
            .filter_map(|m| m.get("tools_removed"))
            .collect();
        assert!(
            removed.contains(&&json!(["delete_repository"])),
            "{mode}: the audit shows what was removed: {rec}"
        );
    }
    // Answers it cannot read (NaN) fail the call instead of passing: a JSON answer is
    // refused with 502, an event stream gets an error event and is cut.
    for (mode, status) in [("nan", 502), ("sse_nan", 200)] {
        let error = out[mode]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{mode}: list_tools fails: {out}"));
        assert!(!error.contains("delete_repository"), "{mode}: {out}");
        let rec = tools_list(mode);
        assert_eq!(rec.action(), Some("error"), "{mode}: {rec}");
        assert_eq!(
            rec.str("reason"),
            Some("mcp_unfilterable_response"),
            "{mode}: {rec}"
        );
        assert_eq!(rec.status_code(), Some(status), "{mode}: {rec}");
        assert_eq!(
            rec.pointer("/mcp/server"),
            Some(&json!("github")),
            "{mode}: {rec}"
        );
        assert_eq!(
            rec.pointer("/mcp/messages/1/decision"),
            Some(&json!("deny")),
            "{mode}: {rec}"
        );
        assert!(
            !rec.to_string().contains("delete_repository"),
            "{mode}: {rec}"
        );
    }
}

/// The MCP server of `tests/mcp_ts_peer.js` (the official TypeScript SDK: its Express app and
/// Streamable HTTP transport, answering JSON) on a fresh host of `net` named `name`.
fn ts_server(net: &FakeInternet, name: &str, calls: &Path) -> NetProcess {
    let dir = net.dir().join(name);
    std::fs::create_dir_all(&dir).expect("server dir");
    let leaf = net.ca().issue(&[name.to_string()], &dir, "server");
    let (server, addr) = net.node_peer("mcp_ts_peer.js", 443, |host, cmd| {
        cmd.args([&host.v4.to_string(), "443"])
            .arg(calls)
            .arg(&leaf.cert)
            .arg(&leaf.key)
            .arg(name);
    });
    net.dns().set(name, &[addr.ip()]);
    server
}

/// Requests a TypeScript SDK server reads otherwise than as sent (session 47's review), sent
/// with curl through CONNECT + MITM to the real server, which logs every call it runs:
/// - a body in UTF-7 (`express.json()` decodes the charset the request names): the filter
///   parsed `"name":"search_repositories"`, the server then read a second `"name"`, hidden
///   in UTF-7, and ran `delete_repo`; refused now, and the server runs nothing;
/// - `POST /MCP`: Express routes without regard to case, so the path the rule for `/mcp` did
///   not cover reached the server's `/mcp` handler uninspected; covered now, the call denied.
#[test]
fn a_typescript_sdk_server_never_reads_a_call_the_filter_did_not() {
    require_root!();
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let log = state.path().join("calls.jsonl");
    let _server = ts_server(&net, "mcp-ts.test", &log);
    let px = Proxy::with(
        r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["mcp-ts.test"]
mcp:
  servers:
    - name: ts
      rules:
        - host: "mcp-ts.test"
          paths: ["/mcp", "/mcp/*"]
      tools:
        - name: "search_repositories"
"#,
    )
    .resolver(&net)
    .start();
    let post = |path: &str, content_type: &str, body: &str| {
        Curl::new([
            "-X",
            "POST",
            &format!("https://mcp-ts.test{path}"),
            "--data-binary",
            body,
        ])
        .header("Content-Type", content_type)
        .header("Accept", "application/json, text/event-stream")
        .through_connect(&px)
        .run()
    };

    // The server reads what the filter reads: an allowed call runs.
    let r = post(
        "/mcp",
        "application/json; charset=utf-8",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_repositories","arguments":{}}}"#,
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json()["result"]["content"][0]["text"],
        "search_repositories ran",
        "{r}"
    );

    // `"name":"delete_repo"` hidden in UTF-7 after the name the filter reads.
    let r = post(
        "/mcp",
        "application/json; charset=utf-7",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search_repositories","arguments":{},"x":"+ACIALAAiAG4AYQBtAGUAIgA6ACIAZABlAGwAZQB0AGUAXwByAGUAcABv-"}}"#,
    );
    assert_eq!(r.status, 400, "{r}");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("charset \"utf-7\"")),
        "{r}"
    );
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("mcp_invalid_request"));
    assert_eq!(rec.status_code(), Some(400), "{rec}");

    // `/MCP` is the server's `/mcp`.
    let r = post(
        "/MCP",
        "application/json",
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#,
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["error"]["code"], -32001, "{r}");
    px.wait_for_audit(|a| a.str("reason") == Some("mcp_tool_denied"));

    let ran: Vec<Value> = json_lines(&log)
        .into_iter()
        .map(|c| c["tool"].clone())
        .collect();
    assert_eq!(ran, [json!("search_repositories")], "what the server ran");
}
