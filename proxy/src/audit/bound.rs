//! A bound on what the workload chooses in an audit record: each string,
//! and each list and map ([`entries`]), so that a record's line has a size
//! the operator can plan for.
//!
//! A request's path, host, SNI or tunnel target, an `error` quoting what
//! the client sent, the header values `annotate` copies, the tool names an
//! MCP client sends: each can be as long as the request head allows
//! (128 KiB), so without a bound a workload repeating a 60 KB path wrote
//! 60 KB of audit log per request and filled the log's disk about 200
//! times faster than with ordinary requests. Each such string is cut to
//! [`MAX_FIELD_BYTES`] (at a character boundary, so the record stays valid
//! UTF-8 and JSON), and the record's `truncated` field lists the fields
//! that were cut, so a reader knows the value is a prefix. Lists and maps
//! keep their first [`MAX_ENTRIES`] entries and share [`MAX_RECORD_BYTES`];
//! those cut are named in `truncated` as well (by their top-level field),
//! and in [`TRUNCATED_ENTRIES`] by path with the count of entries they had.
//!
//! `body_capture` is left alone: its size is the operator's `cap`.
//! A record with nothing over the bounds is written as it is, uncopied.

use serde_json::{Map, Value};

use super::{AuditRecord, TransformTrace};
use entries::{Cuts, Path, Seg};
pub use entries::{MAX_ENTRIES, MAX_RECORD_BYTES, TRUNCATED_ENTRIES};

mod entries;
#[cfg(test)]
mod tests;

/// The longest a workload-chosen string of an audit record is written, in
/// bytes. Four times the longest URL the common browsers and CDNs accept
/// in practice (2 KiB paths are rare; 8 KiB is nginx's whole request line).
pub const MAX_FIELD_BYTES: usize = 4096;

/// The key of the list of cut fields.
pub const TRUNCATED: &str = "truncated";

/// The names [`bounded`] gives the cut fields that are not `extra` keys, in
/// the order the record is written.
const FIELD_ORDER: &[&str] = &[
    "host",
    "method",
    "path",
    "sni",
    "error",
    "tunnel.target",
    "client.comm",
    "client.cgroup",
    "request_transforms",
    "response_transforms",
];

/// Top-level `extra` keys whose size is bounded by the operator's own
/// setting and which are never cut here.
const OPERATOR_BOUNDED: &[&str] = &["body_capture"];

/// Bytes of a record that are not its strings' (keys, numbers, the time,
/// the request id, quotes), at most.
const RECORD_OVERHEAD: usize = 1024;

/// The `extra` fields the bound looks at: all but the operator-bounded ones.
fn bounded_extra(r: &AuditRecord) -> impl Iterator<Item = (&String, &Value)> {
    r.extra
        .iter()
        .filter(|(k, _)| !OPERATOR_BOUNDED.contains(&k.as_str()))
}

/// True when `r` is over a bound, or may be: a string over
/// [`MAX_FIELD_BYTES`], a list or map over [`MAX_ENTRIES`] (or one a
/// transform cut, see [`entries`]), or strings enough that, escaped, they
/// might pass [`MAX_RECORD_BYTES`] (that one is measured by [`bounded`]).
pub(super) fn over(r: &AuditRecord) -> bool {
    strings_over(r) || entries_over(r) || raw_len(r) * 6 + RECORD_OVERHEAD > MAX_RECORD_BYTES
}

fn entries_over(r: &AuditRecord) -> bool {
    r.request_transforms
        .iter()
        .chain(&r.response_transforms)
        .any(|t| entries::map_over(&t.annotations))
        || bounded_extra(r).any(|(_, v)| entries::over(v))
}

/// The bytes of `r`'s strings (escaping aside: JSON writes a byte as at
/// most 6), with a few per number, list and map entry.
fn raw_len(r: &AuditRecord) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let traces: usize = r
        .request_transforms
        .iter()
        .chain(&r.response_transforms)
        .map(|t| t.name.len() + map_raw_len(&t.annotations))
        .sum();
    let extra: usize = bounded_extra(r)
        .map(|(k, v)| k.len() + value_raw_len(v))
        .sum();
    r.host.len()
        + r.method.len()
        + r.path.len()
        + opt(&r.sni)
        + opt(&r.error)
        + opt(&r.rejected_by)
        + opt(&r.reason)
        + opt(&r.original_dst)
        + r.tunnel.as_ref().map_or(0, |t| t.target.len())
        + r.client
            .as_ref()
            .map_or(0, |c| c.comm.len() + c.cgroup.len())
        + traces
        + extra
}

fn map_raw_len(m: &Map<String, Value>) -> usize {
    m.iter().map(|(k, v)| k.len() + 4 + value_raw_len(v)).sum()
}

fn value_raw_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|v| value_raw_len(v) + 1).sum::<usize>(),
        Value::Object(m) => 2 + map_raw_len(m),
        // At most 4 bytes as written (24 for a number), counted ×6.
        Value::Null | Value::Bool(_) | Value::Number(_) => 4,
    }
}

/// True when some string of `r` is over [`MAX_FIELD_BYTES`].
fn strings_over(r: &AuditRecord) -> bool {
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

/// A copy of `r` within the bounds: every string over [`MAX_FIELD_BYTES`]
/// cut, every list and map to [`MAX_ENTRIES`], then the lists and maps to
/// [`MAX_RECORD_BYTES`]; `truncated` lists the fields cut (in record order)
/// and [`TRUNCATED_ENTRIES`] the lists and maps with their original counts.
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
    let mut cuts = Cuts::default();
    let phases = [("request_transforms", false), ("response_transforms", true)];
    for (name, response) in phases {
        if cap_traces(&mut r, name, response, &mut cuts) {
            note_once(&mut cut, name);
        }
    }
    for (k, v) in r.extra.iter_mut() {
        if !OPERATOR_BOUNDED.contains(&k.as_str())
            && entries::cap(v, &mut extra_path(k), 0, &mut cuts)
        {
            note_once(&mut cut, k);
        }
    }
    fit_record(&mut r, &mut cut, &mut cuts);
    // In record order: the fields in the order they are written, then the
    // `extra` keys in theirs.
    let rank = |c: &Value| {
        let name = c.as_str().unwrap_or_default();
        FIELD_ORDER
            .iter()
            .position(|f| *f == name)
            .unwrap_or_else(|| {
                FIELD_ORDER.len() + r.extra.keys().take_while(|k| *k != name).count()
            })
    };
    cut.sort_by_key(rank);
    if !cut.is_empty() {
        r.extra.insert(TRUNCATED.into(), Value::Array(cut));
    }
    if !cuts.is_empty() {
        let counts = cuts.into_value();
        r.extra.insert(TRUNCATED_ENTRIES.into(), counts);
    }
    r
}

/// The path of top-level field `name`, one of [`FIELD_ORDER`].
fn field_path(name: &str) -> Path {
    let rank = FIELD_ORDER.iter().position(|f| *f == name).unwrap_or(0);
    vec![Seg::Field(rank, name.to_string())]
}

/// The path of `extra` key `k` (after every field of [`FIELD_ORDER`]; the
/// keys are written in their sorted order).
fn extra_path(k: &str) -> Path {
    vec![Seg::Field(FIELD_ORDER.len(), k.to_string())]
}

/// The path of the annotations of trace `i` of phase `name`.
fn annotations_path(name: &str, i: usize) -> Path {
    let mut p = field_path(name);
    p.push(Seg::Index(i));
    p.push(Seg::Key("annotations".into()));
    p
}

/// Adds `name` to the cut fields unless it is there.
fn note_once(cut: &mut Vec<Value>, name: &str) {
    if !cut.iter().any(|c| c.as_str() == Some(name)) {
        cut.push(Value::String(name.to_string()));
    }
}

/// [`entries::cap`] on the annotations of one phase's traces.
fn cap_traces(r: &mut AuditRecord, name: &str, response: bool, cuts: &mut Cuts) -> bool {
    let traces = if response {
        &mut r.response_transforms
    } else {
        &mut r.request_transforms
    };
    let mut cut = false;
    for (i, t) in traces.iter_mut().enumerate() {
        cut |= entries::cap_map(&mut t.annotations, &mut annotations_path(name, i), cuts);
    }
    cut
}

/// Cuts the lists and maps of `r` (annotations, then `extra`, in record
/// order) until the record, `body_capture` aside, is within
/// [`MAX_RECORD_BYTES`] with room for the fields naming the cuts.
fn fit_record(r: &mut AuditRecord, cut: &mut Vec<Value>, cuts: &mut Cuts) {
    let operator: usize = r
        .extra
        .iter()
        .filter(|(k, _)| OPERATOR_BOUNDED.contains(&k.as_str()))
        .map(|(k, v)| entries::json_len(k) + 2 + entries::json_len(v))
        .sum();
    let size = entries::json_len(&*r) - operator;
    if size + entries::RESERVED_BYTES <= MAX_RECORD_BYTES {
        return;
    }
    // What the record takes with every list and map empty.
    let containers: usize = r
        .request_transforms
        .iter()
        .chain(&r.response_transforms)
        .flat_map(|t| t.annotations.values())
        .chain(bounded_extra(r).map(|(_, v)| v))
        .filter_map(|v| Some(entries::json_len(v) - entries::empty_len(v)?))
        .sum();
    let mut room = MAX_RECORD_BYTES.saturating_sub(size - containers + entries::RESERVED_BYTES);
    let phases = [("request_transforms", false), ("response_transforms", true)];
    for (name, response) in phases {
        let traces = if response {
            &mut r.response_transforms
        } else {
            &mut r.request_transforms
        };
        for (i, t) in traces.iter_mut().enumerate() {
            for (k, v) in t.annotations.iter_mut() {
                let mut path = annotations_path(name, i);
                path.push(Seg::Key(k.clone()));
                if fit_value(v, &mut path, &mut room, cuts) {
                    note_once(cut, name);
                }
            }
        }
    }
    for (k, v) in r.extra.iter_mut() {
        if !OPERATOR_BOUNDED.contains(&k.as_str())
            && fit_value(v, &mut extra_path(k), &mut room, cuts)
        {
            note_once(cut, k);
        }
    }
}

/// [`entries::fit`] on a list or map whose empty form is already counted;
/// any other value is left as it is (its size is in the record's own).
fn fit_value(v: &mut Value, path: &mut Path, room: &mut usize, cuts: &mut Cuts) -> bool {
    let Some(empty) = entries::empty_len(v) else {
        return false;
    };
    // The empty form was counted in the record's fixed part: give it back
    // for the call, which counts only what goes inside.
    let full = entries::json_len(v) - empty;
    if full <= *room {
        *room -= full;
        return false;
    }
    entries::fit(v, path, room, cuts)
}

/// Cuts `s` to at most [`MAX_FIELD_BYTES`] at a character boundary; true
/// when it was longer.
fn cut_str(s: &mut String) -> bool {
    cut_to(s, MAX_FIELD_BYTES)
}

/// Cuts `s` to at most `max` bytes at a character boundary; true when it
/// was longer.
fn cut_to(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
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
