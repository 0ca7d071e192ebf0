//! `tools/list` filtering of one JSON-RPC payload (a message or a batch) from
//! the server: tools the policy does not allow are removed from the answer.
//! The tools that stay are copied byte for byte (their schemas keep their key
//! order); only the surrounding objects are re-serialized.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::policy::ServerPolicy;

/// Which server messages are `tools/list` answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// Answers to these request ids (the `tools/list` calls of the exchange's request).
    Ids(Vec<Value>),
    /// Any answer whose result carries a `tools` array (a stream the client
    /// opened with GET, where the proxy saw no request to match ids against).
    Shape,
}

impl Want {
    /// True when no answer is awaited any more.
    pub fn satisfied(&self) -> bool {
        matches!(self, Want::Ids(ids) if ids.is_empty())
    }
}

/// What filtering one payload did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The payload to send instead, when it changed.
    pub rewritten: Option<Vec<u8>>,
    /// One audit entry per `tools/list` answer seen.
    pub seen: Vec<Value>,
}

type Object = BTreeMap<String, Box<RawValue>>;

#[derive(Deserialize)]
struct ToolHead {
    #[serde(default)]
    name: Option<Value>,
}

/// Filters `payload`; an answer matched by id is removed from `want`. A
/// payload that is not JSON is left alone (it cannot list tools).
pub fn filter(payload: &[u8], want: &mut Want, policy: &ServerPolicy) -> Outcome {
    let mut out = Outcome::default();
    let Ok(raw) = serde_json::from_slice::<&RawValue>(payload) else {
        return out;
    };
    if raw.get().trim_start().starts_with('[') {
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
            return out;
        };
        let mut changed = false;
        let mut rebuilt: Vec<Box<RawValue>> = Vec::with_capacity(items.len());
        for item in items {
            match filter_message(item, want, policy, &mut out.seen) {
                Some(new) => {
                    changed = true;
                    rebuilt.push(new);
                }
                None => rebuilt.push(item.to_owned()),
            }
        }
        if changed {
            out.rewritten = serde_json::to_vec(&rebuilt).ok();
        }
    } else if let Some(new) = filter_message(raw, want, policy, &mut out.seen) {
        out.rewritten = Some(new.get().as_bytes().to_vec());
    }
    out
}

/// The filtered message, when it is a `tools/list` answer that lost tools.
fn filter_message(
    raw: &RawValue,
    want: &mut Want,
    policy: &ServerPolicy,
    seen: &mut Vec<Value>,
) -> Option<Box<RawValue>> {
    let mut msg: Object = serde_json::from_str(raw.get()).ok()?;
    if msg.contains_key("method") {
        return None;
    }
    let id: Value = msg
        .get("id")
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null);
    let mut result: Object = serde_json::from_str(msg.get("result")?.get()).ok()?;
    let tools: Vec<Box<RawValue>> = match want {
        Want::Ids(ids) => {
            let at = ids.iter().position(|w| super::policy::json_eq(w, &id))?;
            ids.swap_remove(at);
            let Some(tools) = result.get("tools") else {
                seen.push(
                    json!({"from": "server", "kind": "response", "method": "tools/list",
                    "id": id, "decision": "pass", "reason": "answer lists no tools"}),
                );
                return None;
            };
            // Not a list: nothing the client could select from, and nothing
            // to keep; the answer goes with no tools at all.
            serde_json::from_str(tools.get()).unwrap_or_default()
        }
        Want::Shape => serde_json::from_str(result.get("tools")?.get()).ok()?,
    };
    let total = tools.len();
    let mut removed = Vec::new();
    let kept: Vec<Box<RawValue>> = tools
        .into_iter()
        .filter(|t| {
            let name = serde_json::from_str::<ToolHead>(t.get())
                .ok()
                .and_then(|h| h.name)
                .and_then(|n| n.as_str().map(str::to_string));
            match name {
                Some(n) if policy.lists(&n) => true,
                other => {
                    removed.push(other.map_or(Value::Null, Value::String));
                    false
                }
            }
        })
        .collect();
    let kept_count = kept.len();
    seen.push(json!({
        "from": "server",
        "kind": "response",
        "method": "tools/list",
        "id": id,
        "decision": if removed.is_empty() { "pass" } else { "filter" },
        "tools_listed": total,
        "tools_removed": removed,
    }));
    if kept_count == total
        && result
            .get("tools")
            .is_some_and(|t| t.get().starts_with('['))
    {
        return None;
    }
    result.insert("tools".into(), serde_json::value::to_raw_value(&kept).ok()?);
    msg.insert(
        "result".into(),
        serde_json::value::to_raw_value(&result).ok()?,
    );
    serde_json::value::to_raw_value(&msg).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{McpServer, McpTool};
    use crate::rules::Scope;

    fn policy() -> ServerPolicy {
        ServerPolicy::new(&McpServer {
            name: "s".into(),
            rules: Scope(vec![]),
            tools: ["search", "create_issue"]
                .into_iter()
                .map(|n| McpTool {
                    name: n.into(),
                    when: vec![],
                })
                .collect(),
        })
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"search","inputSchema":{"type":"object","properties":{"z":{},"a":{}}}},{"name":"delete_repo","inputSchema":{}},{"name":"create_issue","inputSchema":{}}],"nextCursor":"c"}}"#;

    #[test]
    fn removes_unlisted_tools_and_keeps_the_rest_verbatim() {
        let mut want = Want::Ids(vec![json!(2)]);
        let out = filter(LIST.as_bytes(), &mut want, &policy());
        let text = String::from_utf8(out.rewritten.expect("rewritten")).expect("utf8");
        let v: Value = serde_json::from_str(&text).expect("json");
        let names: Vec<_> = v["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["search", "create_issue"]);
        assert_eq!(v["result"]["nextCursor"], "c");
        assert_eq!(v["id"], 2);
        // Key order inside a kept tool is untouched ("z" before "a").
        assert!(text.contains(r#""properties":{"z":{},"a":{}}"#), "{text}");
        assert!(want.satisfied());
        assert_eq!(out.seen[0]["tools_removed"], json!(["delete_repo"]));
        assert_eq!(out.seen[0]["decision"], "filter");
    }

    #[test]
    fn only_the_awaited_answers_are_touched() {
        let mut want = Want::Ids(vec![json!("other")]);
        let out = filter(LIST.as_bytes(), &mut want, &policy());
        assert!(out.rewritten.is_none() && out.seen.is_empty());
        assert!(!want.satisfied());
        // A batch: the matching entry is filtered, the rest copied.
        let batch = format!(r#"[{{"jsonrpc":"2.0","id":1,"result":{{}}}},{LIST}]"#);
        let mut want = Want::Ids(vec![json!(2)]);
        let out = filter(batch.as_bytes(), &mut want, &policy());
        let v: Value = serde_json::from_slice(&out.rewritten.expect("rewritten")).expect("json");
        assert_eq!(v[0], json!({"jsonrpc":"2.0","id":1,"result":{}}));
        assert_eq!(v[1]["result"]["tools"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn shape_mode_and_odd_payloads() {
        let mut want = Want::Shape;
        let out = filter(LIST.as_bytes(), &mut want, &policy());
        assert!(out.rewritten.is_some());
        assert!(!want.satisfied(), "a GET stream never ends its watch");
        for odd in [
            "not json",
            "{\"method\":\"tools/list\",\"id\":2}",
            "{\"id\":2,\"result\":5}",
        ] {
            let out = filter(odd.as_bytes(), &mut Want::Shape, &policy());
            assert!(out.rewritten.is_none(), "{odd}");
        }
        // A nameless or non-string-named tool is not listed.
        let odd =
            r#"{"id":2,"result":{"tools":[{"inputSchema":{}},{"name":5},{"name":"search"}]}}"#;
        let out = filter(odd.as_bytes(), &mut Want::Ids(vec![json!(2)]), &policy());
        let v: Value = serde_json::from_slice(&out.rewritten.expect("rewritten")).expect("json");
        assert_eq!(v["result"]["tools"], json!([{"name": "search"}]));
        // A `tools` that is not a list is replaced by an empty one.
        let odd = r#"{"id":2,"result":{"tools":{"name":"delete_repo"}}}"#;
        let out = filter(odd.as_bytes(), &mut Want::Ids(vec![json!(2)]), &policy());
        let v: Value = serde_json::from_slice(&out.rewritten.expect("rewritten")).expect("json");
        assert_eq!(v["result"]["tools"], json!([]));
    }
}
