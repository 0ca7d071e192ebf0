//! `tools/list` filtering of one JSON-RPC payload (a message or a batch) from
//! the server: tools the policy does not allow are removed from the answer.
//! The tools that stay are copied byte for byte (their schemas keep their key
//! order); only the surrounding objects are re-serialized.
//!
//! Fail closed: a payload the filter cannot read as JSON (NaN, invalid UTF-8,
//! cut short, trailing data) is an error, never passed on, since clients read
//! more than strict JSON (the Python SDK's parser takes `NaN`). And every
//! message whose `result` has a `tools` list is filtered, whatever its id:
//! which answer a client files under its `tools/list` depends on how it
//! normalises ids (see `ids.rs`) and, on a resumed stream, not on the id at all.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::ids::correlates;
use super::policy::ServerPolicy;

/// Which server messages are `tools/list` answers.
#[derive(Debug, Clone)]
pub enum Want {
    /// Answers to the `tools/list` calls of the exchange's request. Any other
    /// message with a `result.tools` list is filtered too.
    Ids(Vec<ListId>),
    /// Any answer whose result carries a `tools` array (a stream the client
    /// opened with GET, where the proxy saw no request to match ids against).
    Shape,
}

/// The id of one `tools/list` request.
#[derive(Debug, Clone)]
pub struct ListId {
    /// As forwarded (what the server answers with).
    pub id: Value,
    /// As the client sent it, exactly (`null` when unknown): what an error
    /// the proxy answers in the server's stead carries.
    pub sent: Box<RawValue>,
}

impl Want {
    /// True when `id` answers one of the awaited `tools/list` requests.
    pub fn awaits(&self, id: &Value) -> bool {
        matches!(self, Want::Ids(ids) if ids.iter().any(|w| correlates(&w.id, id)))
    }
}

#[cfg(test)]
impl Want {
    /// Awaits these ids, sent as they are forwarded.
    pub(crate) fn ids(ids: &[Value]) -> Want {
        Want::Ids(
            ids.iter()
                .map(|id| ListId {
                    id: id.clone(),
                    sent: serde_json::value::to_raw_value(id).expect("serializes"),
                })
                .collect(),
        )
    }
}

/// Why a payload could not be judged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// Not JSON as RFC 8259 has it; the message names the position, never content.
    #[error("the answer is not valid JSON ({0})")]
    NotJson(String),
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

/// Filters `payload` (see the module doc).
pub fn filter(payload: &[u8], want: &Want, policy: &ServerPolicy) -> Result<Outcome, FilterError> {
    let mut out = Outcome::default();
    let raw = serde_json::from_slice::<&RawValue>(payload)
        .map_err(|e| FilterError::NotJson(e.to_string()))?;
    if raw.get().trim_start().starts_with('[') {
        let items = serde_json::from_str::<Vec<&RawValue>>(raw.get())
            .map_err(|e| FilterError::NotJson(e.to_string()))?;
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
    Ok(out)
}

/// The filtered message, when it carries a tool list that lost tools.
fn filter_message(
    raw: &RawValue,
    want: &Want,
    policy: &ServerPolicy,
    seen: &mut Vec<Value>,
) -> Option<Box<RawValue>> {
    // Not an object: not an answer any client accepts.
    let mut msg: Object = serde_json::from_str(raw.get()).ok()?;
    let id: Value = msg
        .get("id")
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null);
    let awaited = !msg.contains_key("method") && want.awaits(&id);
    let mut result: Object = serde_json::from_str(msg.get("result")?.get()).ok()?;
    let tools: Vec<Box<RawValue>> = match result.get("tools") {
        None if awaited => {
            seen.push(
                json!({"from": "server", "kind": "response", "method": "tools/list",
                "id": id, "decision": "pass", "reason": "answer lists no tools"}),
            );
            return None;
        }
        None => return None,
        Some(tools) => match serde_json::from_str(tools.get()) {
            Ok(list) => list,
            // Not a list: nothing the client could select from, and nothing
            // to keep; the awaited answer goes with no tools at all.
            Err(_) if awaited => Vec::new(),
            Err(_) => return None,
        },
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
mod fuzz;

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

    fn run(payload: &[u8], want: &Want) -> Outcome {
        filter(payload, want, &policy()).expect("readable")
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"search","inputSchema":{"type":"object","properties":{"z":{},"a":{}}}},{"name":"delete_repo","inputSchema":{}},{"name":"create_issue","inputSchema":{}}],"nextCursor":"c"}}"#;

    #[test]
    fn removes_unlisted_tools_and_keeps_the_rest_verbatim() {
        let out = run(LIST.as_bytes(), &Want::ids(&[json!(2)]));
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
        assert_eq!(out.seen[0]["tools_removed"], json!(["delete_repo"]));
        assert_eq!(out.seen[0]["decision"], "filter");
    }

    #[test]
    fn every_tool_list_is_filtered_whatever_its_id() {
        // An answer to another id still loses its denied tools: the client
        // may file it under its tools/list all the same.
        let out = run(LIST.as_bytes(), &Want::ids(&[json!("other")]));
        let v: Value = serde_json::from_slice(&out.rewritten.expect("rewritten")).expect("json");
        assert_eq!(v["result"]["tools"].as_array().map(Vec::len), Some(2));
        // A batch: the matching entry is filtered, the rest copied.
        let batch = format!(r#"[{{"jsonrpc":"2.0","id":1,"result":{{}}}},{LIST}]"#);
        let out = run(batch.as_bytes(), &Want::ids(&[json!(2)]));
        let v: Value = serde_json::from_slice(&out.rewritten.expect("rewritten")).expect("json");
        assert_eq!(v[0], json!({"jsonrpc":"2.0","id":1,"result":{}}));
        assert_eq!(v[1]["result"]["tools"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn shape_mode_and_odd_payloads() {
        let out = run(LIST.as_bytes(), &Want::Shape);
        assert!(out.rewritten.is_some());
        for odd in [
            "{\"method\":\"tools/list\",\"id\":2}",
            "{\"id\":2,\"result\":5}",
            "[1, \"x\"]",
            "{\"id\":2,\"result\":{\"tools\":{}}}",
        ] {
            let out = run(odd.as_bytes(), &Want::Shape);
            assert!(out.rewritten.is_none(), "{odd}");
        }
        // A nameless or non-string-named tool is not listed.
        let odd =
            r#"{"id":2,"result":{"tools":[{"inputSchema":{}},{"name":5},{"name":"search"}]}}"#;
        let out = run(odd.as_bytes(), &Want::ids(&[json!(2)]));
        let v: Value = serde_json::from_slice(&out.rewritten.expect("rewritten")).expect("json");
        assert_eq!(v["result"]["tools"], json!([{"name": "search"}]));
        // A `tools` that is not a list is replaced by an empty one.
        let odd = r#"{"id":"2","result":{"tools":{"name":"delete_repo"}}}"#;
        let out = run(odd.as_bytes(), &Want::ids(&[json!(2)]));
        let v: Value = serde_json::from_slice(&out.rewritten.expect("rewritten")).expect("json");
        assert_eq!(v["result"]["tools"], json!([]));
    }

    #[test]
    fn answers_the_client_normalises_to_its_id_are_awaited_answers() {
        // The Python SDK reads id "1" as 1 (QA case b).
        let list = r#"{"jsonrpc":"2.0","id":"1","result":{"tools":[{"name":"search"},{"name":"delete_repo"}]}}"#;
        let out = run(list.as_bytes(), &Want::ids(&[json!(1)]));
        let v: Value = serde_json::from_slice(&out.rewritten.expect("rewritten")).expect("json");
        assert_eq!(v["result"]["tools"], json!([{"name": "search"}]));
        assert_eq!(out.seen[0]["tools_removed"], json!(["delete_repo"]));
        let none = r#"{"jsonrpc":"2.0","id":" 01 ","result":{}}"#;
        let out = run(none.as_bytes(), &Want::ids(&[json!(1)]));
        assert_eq!(out.seen[0]["reason"], "answer lists no tools");
    }

    #[test]
    fn payloads_that_are_not_strict_json_are_errors() {
        let nan = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_repo","inputSchema":{"default":NaN}}]}}"#;
        let truncated = &LIST[..LIST.len() - 3];
        let trailing = format!("{LIST} x");
        let mut bad_utf8 = LIST.as_bytes().to_vec();
        let at = LIST.find("delete_repo").expect("name");
        bad_utf8[at + 6] = 0xff;
        for (payload, why) in [
            (nan.as_bytes(), "NaN"),
            (truncated.as_bytes(), "truncated"),
            (trailing.as_bytes(), "trailing data"),
            (&bad_utf8[..], "invalid UTF-8"),
            (b"Infinity", "Infinity"),
            (b"", "empty"),
        ] {
            for want in [Want::ids(&[json!(2)]), Want::Shape] {
                let e = filter(payload, &want, &policy()).expect_err(why);
                assert!(matches!(e, FilterError::NotJson(_)), "{why}: {e}");
            }
        }
    }
}
