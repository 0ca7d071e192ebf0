//! A bound on the strings of an audit record that the workload chooses.
//!
//! A request's path, host, SNI or tunnel target, an `error` quoting what
//! the client sent, the header values `annotate` copies, the tool names an
//! MCP client sends: each can be as long as the request head allows
//! (128 KiB), so without a bound a workload repeating a 60 KB path wrote
//! 60 KB of audit log per request and filled the log's disk about 200
//! times faster than with ordinary requests. Each such string is cut to
//! [`MAX_FIELD_BYTES`] (at a character boundary, so the record stays valid
//! UTF-8 and JSON), and the record's `truncated` field lists the fields
//! that were cut, so a reader knows the value is a prefix.
//!
//! `body_capture` is left alone: its size is the operator's `cap`.
//! A record with nothing over the bound is written as it is, uncopied.

use serde_json::Value;

use super::{AuditRecord, TransformTrace};

/// The longest a workload-chosen string of an audit record is written, in
/// bytes. Four times the longest URL the common browsers and CDNs accept
/// in practice (2 KiB paths are rare; 8 KiB is nginx's whole request line).
pub const MAX_FIELD_BYTES: usize = 4096;

/// The key of the list of cut fields.
pub const TRUNCATED: &str = "truncated";

/// Top-level `extra` keys whose size is bounded by the operator's own
/// setting and which are never cut here.
const OPERATOR_BOUNDED: &[&str] = &["body_capture"];

/// True when some string of `r` is over [`MAX_FIELD_BYTES`].
pub(super) fn over(r: &AuditRecord) -> bool {
    let long = |s: &str| s.len() > MAX_FIELD_BYTES;
    long(&r.host)
        || long(&r.method)
        || long(&r.path)
        || r.sni.as_deref().is_some_and(long)
        || r.error.as_deref().is_some_and(long)
        || r.tunnel.as_ref().is_some_and(|t| long(&t.target))
        || r.client
            .as_ref()
            .is_some_and(|c| long(&c.cgroup) || long(&c.comm))
        || traces_over(&r.request_transforms)
        || traces_over(&r.response_transforms)
        || r.extra
            .iter()
            .any(|(k, v)| !OPERATOR_BOUNDED.contains(&k.as_str()) && value_over(v))
}

/// A copy of `r` with every string over the bound cut, and `truncated`
/// listing the fields cut (in record order).
pub(super) fn bounded(r: &AuditRecord) -> AuditRecord {
    let mut r = r.clone();
    let mut cut: Vec<Value> = Vec::new();
    let mut note = |name: &str, was_cut: bool| {
        if was_cut {
            cut.push(Value::String(name.to_string()));
        }
    };
    note("host", cut_str(&mut r.host));
    note("method", cut_str(&mut r.method));
    note("path", cut_str(&mut r.path));
    note("sni", r.sni.as_mut().is_some_and(cut_str));
    note("error", r.error.as_mut().is_some_and(cut_str));
    note(
        "tunnel.target",
        r.tunnel.as_mut().is_some_and(|t| cut_str(&mut t.target)),
    );
    if let Some(c) = r.client.as_mut() {
        note("client.comm", cut_str(&mut c.comm));
        note("client.cgroup", cut_str(&mut c.cgroup));
    }
    note("request_transforms", cut_traces(&mut r.request_transforms));
    note(
        "response_transforms",
        cut_traces(&mut r.response_transforms),
    );
    for (k, v) in r.extra.iter_mut() {
        if !OPERATOR_BOUNDED.contains(&k.as_str()) && cut_value(v) {
            cut.push(Value::String(k.clone()));
        }
    }
    if !cut.is_empty() {
        r.extra.insert(TRUNCATED.into(), Value::Array(cut));
    }
    r
}

/// Cuts `s` to at most [`MAX_FIELD_BYTES`] at a character boundary; true
/// when it was longer.
fn cut_str(s: &mut String) -> bool {
    if s.len() <= MAX_FIELD_BYTES {
        return false;
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

fn traces_over(traces: &[TransformTrace]) -> bool {
    traces
        .iter()
        .any(|t| t.annotations.values().any(value_over))
}

fn cut_traces(traces: &mut [TransformTrace]) -> bool {
    let mut cut = false;
    for t in traces {
        for v in t.annotations.values_mut() {
            cut |= cut_value(v);
        }
    }
    cut
}

/// True when a string anywhere in `v` (keys included) is over the bound.
fn value_over(v: &Value) -> bool {
    match v {
        Value::String(s) => s.len() > MAX_FIELD_BYTES,
        Value::Array(a) => a.iter().any(value_over),
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.len() > MAX_FIELD_BYTES || value_over(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Cuts every string in `v` over the bound, keys included; true when one was.
fn cut_value(v: &mut Value) -> bool {
    match v {
        Value::String(s) => cut_str(s),
        Value::Array(a) => a.iter_mut().fold(false, |cut, v| cut_value(v) | cut),
        Value::Object(m) => {
            let mut cut = false;
            if m.keys().any(|k| k.len() > MAX_FIELD_BYTES) {
                let entries = std::mem::take(m);
                for (mut k, v) in entries {
                    cut |= cut_str(&mut k);
                    m.insert(k, v);
                }
            }
            m.values_mut().fold(cut, |cut, v| cut_value(v) | cut)
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
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
        assert!(!over(&b));
    }
}
