//! What a workload can make the proxy write to its audit log, by the length of the lists it
//! fills: a JSON-RPC batch of thousands of MCP messages (the official MCP SDK's server behind
//! the proxy, the batch sent by httpx through CONNECT + MITM), and hundreds of headers a
//! `header_allowlist` strips. The line stays within the documented size, the first entries are
//! kept whole, and `truncated` / `truncated_entries` say what was cut and how long it was.

use std::path::Path;

use iron_proxy_tests::netns::NetProcess;
use iron_proxy_tests::*;
use serde_json::{json, Value};

/// `docs/audit-log.md`, "Bounded fields".
const MAX_ENTRIES: usize = 64;
const MAX_RECORD_BYTES: usize = 48 << 10;

const MCP_CONFIG: &str = r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["mcp-batch.test"]
mcp:
  servers:
    - name: github
      rules:
        - host: "mcp-batch.test"
          paths: ["/mcp"]
      tools:
        - name: "search_repositories"
"#;

/// The FastMCP server of `tests/mcp_peer.py` on a fresh host named `name`; calls logged to
/// `calls`.
fn mcp_server(net: &FakeInternet, name: &str, calls: &Path) -> NetProcess {
    let dir = net.dir().join(name);
    std::fs::create_dir_all(&dir).expect("server dir");
    let leaf = net.ca().issue(&[name.to_string()], &dir, "server");
    let (server, addr) = net.python_peer("mcp_peer.py", 443, |host, cmd| {
        cmd.args(["server", &host.v4.to_string(), "443"])
            .arg(calls)
            .arg("json")
            .arg(&leaf.cert)
            .arg(&leaf.key);
    });
    net.dns().set(name, &[addr.ip()]);
    server
}

/// Posts a batch of `n` `tools/call` messages through the proxy (CONNECT), the first `long` of
/// them naming a tool of 2,000 bytes; prints the status and the ids answered.
const BATCH: &str = r#"
import json, sys, httpx
proxy, ca, url, n, long = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def tool(i):
    return f"tool-{i:05d}-" + ("t" * 2000 if i < long else "x")
batch = [{"jsonrpc": "2.0", "id": i, "method": "tools/call",
          "params": {"name": tool(i), "arguments": {}}} for i in range(n)]
headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
with httpx.Client(proxy=proxy, verify=ca, timeout=60) as c:
    r = c.post(url, content=json.dumps(batch), headers=headers)
body = r.json()
print(json.dumps({"status": r.status_code,
                  "ids": [e.get("id") for e in body] if isinstance(body, list) else body}))
"#;

/// The tool name message `i` of [`BATCH`] carries.
fn tool(i: usize, long: usize) -> String {
    let tail = if i < long {
        "t".repeat(2000)
    } else {
        "x".into()
    };
    format!("tool-{i:05}-{tail}")
}

/// A batch of 3,000 denied calls: the proxy answers each by id and forwards none. Before, the
/// record's `mcp` section held 64 messages of 2 KB tool names (130 KB on one line) and nothing
/// said the other 2,936 were left out but `mcp.messages_omitted`; now the line is within
/// 48 KiB, the messages kept are the batch's first ones, whole, and `truncated_entries` says
/// the list had 3,000.
#[test]
fn a_batch_of_thousands_of_mcp_messages_keeps_a_bounded_record() {
    require_root!();
    const N: usize = 3000;
    const LONG: usize = 100;
    let net = FakeInternet::new();
    let state = tempfile::tempdir().expect("state dir");
    let calls = state.path().join("calls.jsonl");
    let _server = mcp_server(&net, "mcp-batch.test", &calls);
    let px = Proxy::with(MCP_CONFIG).resolver(&net).start();

    let proxy = format!("http://{}", px.tunnel_addr());
    let out = python(
        BATCH,
        [
            proxy.as_str(),
            px.ca(),
            "https://mcp-batch.test/mcp",
            &N.to_string(),
            &LONG.to_string(),
        ],
    )
    .assert_ok()
    .json();
    assert_eq!(out["status"], 200, "{out}");
    let ids: Vec<Value> = (0..N).map(|i| json!(i)).collect();
    assert_eq!(
        out["ids"],
        json!(ids),
        "every call answered (refused) by id"
    );
    assert!(json_lines(&calls).is_empty(), "nothing reached the server");

    let rec = px.wait_for_audit(|a| a.str("reason") == Some("mcp_tool_denied"));
    let line = rec.json().to_string();
    assert!(
        line.len() <= MAX_RECORD_BYTES,
        "the audit line is {} bytes, over {MAX_RECORD_BYTES}",
        line.len()
    );
    let kept = rec
        .pointer("/mcp/messages")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("mcp.messages: {rec}"));
    assert!(
        kept.len() >= 10,
        "the first messages are kept ({} of them)",
        kept.len()
    );
    // Each message whole, but the last, which may have been cut inside to fit (its entries
    // kept are then its first ones, in key order, each as sent).
    let last = kept.len() - 1;
    for (i, m) in kept.iter().enumerate() {
        let whole = json!({
            "from": "client", "kind": "request", "method": "tools/call", "id": i,
            "tool": tool(i, LONG), "decision": "deny",
        });
        let fields = m.as_object().unwrap_or_else(|| panic!("message {i}: {m}"));
        if i < last {
            for (k, v) in whole.as_object().expect("an object") {
                assert_eq!(fields.get(k), Some(v), "message {i}'s {k}, whole");
            }
        } else {
            for (k, v) in fields {
                if let Some(want) = whole.get(k) {
                    assert_eq!(v, want, "the last message's {k}");
                }
            }
        }
    }
    assert_eq!(rec.pointer("/mcp/server"), Some(&json!("github")), "{rec}");
    assert_eq!(rec.json()["truncated"], json!(["mcp"]), "{rec}");
    let counts = rec.json()["truncated_entries"]
        .as_object()
        .unwrap_or_else(|| panic!("truncated_entries: {rec}"));
    assert_eq!(counts.get("mcp.messages"), Some(&json!(N)), "{counts:?}");
    let inside = format!("mcp.messages[{last}]");
    assert!(
        counts.keys().all(|k| k == "mcp.messages" || *k == inside),
        "only the list and its last message are cut: {counts:?}"
    );
}

/// `header_allowlist` strips the headers it does not allow and lists them: 400 junk headers
/// from curl used to be listed all.
#[test]
fn hundreds_of_stripped_headers_keep_the_first_64_and_the_count() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
  - name: header_allowlist
    config:
      headers: ["Accept", "User-Agent"]
      rules: [{host: "httpbin.test"}]
"#,
    )
    .resolver(&net)
    .start();
    let mut args = Vec::new();
    for i in 0..400 {
        args.push("-H".to_string());
        args.push(format!("x-junk-{i:03}: v"));
    }
    Curl::get("https://httpbin.test/anything/junk")
        .args(args)
        .via(&px)
        .run()
        .expect_status(200);
    let got = up.wait_for_request(|r| r.path() == "/anything/junk");
    assert!(
        got.header("x-junk-000").is_none(),
        "stripped upstream: {got}"
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/junk"));
    let stripped = rec
        .annotation("header_allowlist", "stripped_headers")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("stripped_headers: {rec}"));
    assert_eq!(stripped.len(), MAX_ENTRIES, "{rec}");
    let mut names: Vec<String> = stripped
        .iter()
        .map(|n| n.as_str().unwrap_or_default().to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), MAX_ENTRIES, "64 distinct names: {rec}");
    assert!(
        names
            .iter()
            .all(|n| n.strip_prefix("x-junk-").is_some_and(|i| i.len() == 3)),
        "{rec}"
    );
    assert_eq!(
        rec.json()["truncated"],
        json!(["request_transforms"]),
        "{rec}"
    );
    assert_eq!(
        rec.json()["truncated_entries"],
        json!({"request_transforms[1].annotations.stripped_headers": 400}),
        "{rec}"
    );
}
