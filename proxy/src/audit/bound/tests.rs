//! Tests of the audit record bound.

use super::*;
use crate::audit::{ClientProcess, Mode, TunnelInfo};
use serde_json::{json, Map};

fn record() -> AuditRecord {
    let mut r = AuditRecord::new(Mode::Http, "127.0.0.1:5000".into());
    r.host = "a.test".into();
    r.method = "GET".into();
    r.path = "/get".into();
    r
}

#[test]
fn a_record_within_the_bound_is_not_touched() {
    let mut r = record();
    r.path = "/".to_string() + &"a".repeat(MAX_FIELD_BYTES - 1);
    r.request_transforms.push(TransformTrace {
        name: "annotate".into(),
        action: "continue",
        annotations: Map::from_iter([("header:User-Agent".into(), json!("curl/8"))]),
    });
    assert!(!over(&r));
}

#[test]
fn long_strings_are_cut_at_a_character_boundary_and_named() {
    let mut r = record();
    // 'é' is two bytes: with a leading '/', byte MAX_FIELD_BYTES falls
    // in the middle of one.
    r.path = "/".to_string() + &"é".repeat(MAX_FIELD_BYTES);
    r.tunnel = Some(TunnelInfo {
        kind: "connect",
        target: "x".repeat(MAX_FIELD_BYTES + 1),
    });
    r.client = Some(ClientProcess {
        cgroup: "/c".repeat(MAX_FIELD_BYTES),
        ..ClientProcess::default()
    });
    r.request_transforms.push(TransformTrace {
        name: "annotate".into(),
        action: "continue",
        annotations: Map::from_iter([(
            "header:User-Agent".into(),
            json!(["ok", "u".repeat(100_000)]),
        )]),
    });
    r.extra.insert("mcp".into(), json!({"t".repeat(5000): 1}));
    r.extra
        .insert("body_capture".into(), json!({"body": "b".repeat(100_000)}));
    assert!(over(&r));
    let b = bounded(&r);
    assert_eq!(b.path.len(), MAX_FIELD_BYTES - 1);
    assert!(r.path.starts_with(&b.path));
    assert_eq!(
        b.tunnel.as_ref().map(|t| t.target.len()),
        Some(MAX_FIELD_BYTES)
    );
    assert_eq!(b.host, "a.test");
    let ua = &b.request_transforms[0].annotations["header:User-Agent"];
    assert_eq!(ua[0], "ok");
    assert_eq!(ua[1].as_str().map(str::len), Some(MAX_FIELD_BYTES));
    assert!(b.extra["mcp"]
        .as_object()
        .is_some_and(|m| m.keys().all(|k| k.len() == MAX_FIELD_BYTES)));
    assert_eq!(
        b.extra["body_capture"]["body"].as_str().map(str::len),
        Some(100_000),
        "the operator's cap governs body_capture"
    );
    assert_eq!(
        b.extra[TRUNCATED],
        json!([
            "path",
            "tunnel.target",
            "client.cgroup",
            "request_transforms",
            "mcp"
        ])
    );
    assert_eq!(
        line(&bounded(&b)),
        line(&b),
        "bounding again changes nothing"
    );
}

/// The record as the audit line writes it.
fn line(r: &AuditRecord) -> String {
    let mut out = Vec::new();
    crate::audit::json::write_record(&mut out, r).expect("serializes");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn long_lists_keep_their_first_entries_and_are_counted() {
    let mut r = record();
    let names: Vec<Value> = (0..500).map(|i| json!(format!("x-junk-{i}"))).collect();
    r.request_transforms.push(TransformTrace {
        name: "header_allowlist".into(),
        action: "continue",
        annotations: Map::from_iter([("stripped_headers".into(), Value::Array(names.clone()))]),
    });
    assert!(over(&r));
    let b = bounded(&r);
    let kept = b.request_transforms[0].annotations["stripped_headers"]
        .as_array()
        .expect("a list");
    assert_eq!(kept.as_slice(), &names[..MAX_ENTRIES]);
    assert_eq!(b.extra[TRUNCATED], json!(["request_transforms"]));
    assert_eq!(
        b.extra[TRUNCATED_ENTRIES],
        json!({"request_transforms[0].annotations.stripped_headers": 500})
    );
    assert!(!over(&b), "{}", line(&b));
}

#[test]
fn a_list_a_transform_cut_itself_is_named_with_its_whole_count() {
    let mut r = record();
    let messages: Vec<Value> = (0..64).map(|i| json!({"id": i})).collect();
    r.extra.insert(
        "mcp".into(),
        json!({"server": "s", "messages": messages, "messages_omitted": 2936}),
    );
    let b = bounded(&r);
    assert_eq!(
        b.extra["mcp"]["messages"].as_array().map(Vec::len),
        Some(64)
    );
    assert_eq!(b.extra[TRUNCATED], json!(["mcp"]));
    assert_eq!(b.extra[TRUNCATED_ENTRIES], json!({"mcp.messages": 3000}));
}

#[test]
fn lists_share_the_record_budget_keeping_whole_first_entries() {
    let mut r = record();
    // 64 messages of ~12 KiB each (three strings at the field bound):
    // 770 KiB before, each entry whole until the budget.
    let messages: Vec<Value> = (0..64)
        .map(|i| {
            json!({"id": i, "method": "m".repeat(MAX_FIELD_BYTES),
                   "tool": format!("{i:04}-{}", "t".repeat(MAX_FIELD_BYTES - 5)),
                   "tools_removed": (0..100).map(|j| format!("tool-{j}")).collect::<Vec<_>>()})
        })
        .collect();
    r.extra.insert(
        "mcp".into(),
        json!({"server": "s", "messages": messages.clone()}),
    );
    r.extra
        .insert("body_capture".into(), json!({"body": "b".repeat(100_000)}));
    let b = bounded(&r);
    let text = line(&b);
    let v: Value = serde_json::from_str(&text).expect("the line is JSON");
    let without_body = text.len() - entries::json_len(&b.extra["body_capture"]);
    assert!(
        without_body <= MAX_RECORD_BYTES,
        "{without_body} bytes, body_capture aside"
    );
    let kept = v["mcp"]["messages"].as_array().expect("messages");
    assert!(kept.len() >= 2, "{} kept", kept.len());
    // Every message kept but the last is whole (tools_removed cut to 64);
    // the last may be cut inside.
    for (i, m) in kept[..kept.len() - 1].iter().enumerate() {
        let mut want = messages[i].clone();
        want["tools_removed"]
            .as_array_mut()
            .expect("list")
            .truncate(MAX_ENTRIES);
        assert_eq!(m, &want, "message {i}");
    }
    assert_eq!(
        v["mcp"]["server"], "s",
        "the map's plain entries are kept first"
    );
    assert_eq!(v[TRUNCATED], json!(["mcp"]));
    let counts = v[TRUNCATED_ENTRIES].as_object().expect("counts");
    assert_eq!(counts["mcp.messages"], 64, "{counts:?}");
    assert_eq!(counts["mcp.messages[0].tools_removed"], 100, "{counts:?}");
    // In record order, none inside a message that was dropped.
    let keys: Vec<&String> = counts.keys().collect();
    assert_eq!(keys[0], "mcp.messages", "{keys:?}");
    for k in &keys[1..] {
        let i: usize = k
            .strip_prefix("mcp.messages[")
            .and_then(|r| r.split(']').next())
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("{k}"));
        assert!(i < kept.len(), "{k} is inside a dropped message");
    }
    assert_eq!(
        v["body_capture"]["body"].as_str().map(str::len),
        Some(100_000)
    );
}

#[test]
fn an_ordinary_record_is_not_copied() {
    let mut r = record();
    r.request_transforms.push(TransformTrace {
        name: "secrets".into(),
        action: "continue",
        annotations: Map::from_iter([(
            "swapped".into(),
            json!([{"secret": "K", "locations": ["header:Authorization"]}]),
        )]),
    });
    r.extra.insert(
        "mcp".into(),
        json!({"server": "s", "messages": [{"id": 1, "tool": "t", "decision": "allow"}]}),
    );
    assert!(!over(&r));
}

#[test]
fn a_record_near_the_budget_is_measured_and_kept_whole() {
    let mut r = record();
    r.path = "/".to_string() + &"p".repeat(MAX_FIELD_BYTES - 1);
    r.error = Some("e".repeat(MAX_FIELD_BYTES));
    // Over the quick estimate (6 bytes a byte), well within the budget.
    assert!(over(&r));
    let b = bounded(&r);
    assert!(!b.extra.contains_key(TRUNCATED), "{:?}", b.extra);
    assert!(!b.extra.contains_key(TRUNCATED_ENTRIES));
    assert_eq!(b.path, r.path);
}
