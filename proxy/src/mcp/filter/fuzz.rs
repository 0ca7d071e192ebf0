//! Property test of `tools/list` filtering against payloads a server shapes
//! to slip a tool past it: names escaped, repeated keys (`tools`, `result`,
//! `name`), names that are not strings, tools that are not objects, lists
//! that are not arrays, batches, and all of it cut short. Whatever the
//! payload, the filter either refuses it as unreadable or hands on one in
//! which a client (reading JSON as serde_json, Python and JavaScript do,
//! the last of repeated keys winning) finds no tool the policy does not list.

use proptest::prelude::*;
use serde_json::Value;

use super::{filter, FilterError, Want};
use crate::config::{McpServer, McpTool};
use crate::mcp::policy::ServerPolicy;
use crate::rules::Scope;

const LISTED: [&str; 2] = ["search", "create_issue"];

fn policy() -> ServerPolicy {
    ServerPolicy::new(&McpServer {
        name: "s".into(),
        rules: Scope(vec![]),
        tools: LISTED
            .into_iter()
            .map(|n| McpTool {
                name: n.into(),
                when: vec![],
            })
            .collect(),
    })
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        r#""search""#,
        r#""create_issue""#,
        r#""delete_repo""#,
        r#""\u0073earch""#,
        r#""\u0064elete_repo""#,
        r#""Search""#,
        r#""search ""#,
        r#""\ud800""#,
        "5",
        "null",
        r#"["search"]"#,
    ])
}

fn tool() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => name().prop_map(|n| format!(r#"{{"name":{n},"inputSchema":{{"type":"object"}}}}"#)),
        2 => (name(), name()).prop_map(|(a, b)| format!(r#"{{"name":{a},"name":{b}}}"#)),
        1 => name().prop_map(str::to_string),
        1 => Just(r#"{"inputSchema":{}}"#.to_string()),
    ]
}

fn tools() -> impl Strategy<Value = String> {
    let list = prop::collection::vec(tool(), 0..5).prop_map(|t| format!("[{}]", t.join(",")));
    prop_oneof![
        6 => list,
        1 => tool().prop_map(|t| format!(r#"{{"0":{t}}}"#)),
        1 => Just(r#""delete_repo""#.to_string()),
        1 => Just("null".to_string()),
    ]
}

fn result() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => tools().prop_map(|t| format!(r#"{{"tools":{t},"nextCursor":"c"}}"#)),
        2 => (tools(), tools()).prop_map(|(a, b)| format!(r#"{{"tools":{a},"tools":{b}}}"#)),
        1 => Just("{}".to_string()),
        1 => Just("5".to_string()),
    ]
}

fn message() -> impl Strategy<Value = String> {
    let id = prop::sample::select(vec!["1", "2", r#""2""#, r#"" 2""#, "null", "2.0", r#""x""#]);
    (id, result(), prop::option::of(result()), any::<bool>()).prop_map(|(id, r, again, method)| {
        let mut m = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{r}"#);
        if let Some(again) = again {
            m.push_str(&format!(r#","result":{again}"#));
        }
        if method {
            m.push_str(r#","method":"tools/list""#);
        }
        m.push('}');
        m
    })
}

/// A payload (ASCII: escapes are written out), perhaps cut short.
fn payload() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        3 => message(),
        1 => prop::collection::vec(message(), 0..4).prop_map(|m| format!("[{}]", m.join(","))),
    ];
    (text, prop::option::of(any::<prop::sample::Index>())).prop_map(|(mut t, cut)| {
        if let Some(cut) = cut.filter(|_| t.len() > 1) {
            t.truncate(cut.index(t.len()));
        }
        t
    })
}

/// The tools a client finds in the messages of `payload` that are not listed.
fn unlisted(payload: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return Vec::new();
    };
    let messages = match v {
        Value::Array(items) => items,
        one => vec![one],
    };
    messages
        .iter()
        .filter_map(|m| m.get("result")?.get("tools")?.as_array())
        .flatten()
        .filter_map(|t| t.get("name")?.as_str())
        .filter(|n| !LISTED.contains(n))
        .map(str::to_string)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn no_unlisted_tool_reaches_the_client(payload in payload(), shape in any::<bool>()) {
        let want = if shape { Want::Shape } else { Want::ids(&[serde_json::json!(2)]) };
        let payload = payload.as_bytes();
        match filter(payload, &want, &policy()) {
            Ok(out) => {
                let sent = out.rewritten.as_deref().unwrap_or(payload);
                let found = unlisted(sent);
                prop_assert!(
                    found.is_empty(),
                    "{:?} reach the client in {}",
                    found,
                    String::from_utf8_lossy(sent)
                );
            }
            Err(FilterError::NotJson(_)) => {
                prop_assert!(serde_json::from_slice::<&serde_json::value::RawValue>(payload).is_err()
                    || serde_json::from_slice::<Value>(payload).is_err(),
                    "readable JSON refused: {}", String::from_utf8_lossy(payload));
            }
        }
    }
}
