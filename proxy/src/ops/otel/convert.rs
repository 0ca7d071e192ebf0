//! One audit record to one OTLP log record with the same fields.
//!
//! Every top-level field of the JSON record becomes an attribute of the same
//! name (absent fields stay absent). Scalars stay scalars, so backends can
//! filter on `host`, `action` or `status_code`; `request_transforms` and the
//! other nested values become OTLP arrays and maps (`AnyValue`). The body is a
//! one-line summary and the severity follows `level`.
//!
//! Each record comes with an upper bound of its protobuf size, so the worker
//! can keep every export request under the collector's message limit. A
//! record over the limit on its own has its largest strings cut (and says so
//! in `iron_proxy.truncated`); stderr keeps the whole record.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::Key;
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger};
use serde_json::{Map, Value};

use crate::audit::{Action, AuditRecord};

/// The most protobuf framing one field can take: a tag and a length varint
/// (at most 1 + 5 bytes under 4 GiB) for each of the key/value pair, its key,
/// the `AnyValue` and what it holds. Counting it twice per attribute (pair
/// and value, see [`value_size`]) keeps the estimate an upper bound.
const FIELD_OVERHEAD: usize = 24;
/// The rest of a `LogRecord`: its framing, two timestamps, the severity and
/// the event name.
const RECORD_OVERHEAD: usize = 128;
/// Room kept for the `iron_proxy.truncated*` attributes added after cutting.
const TRUNCATION_MARK: usize = 512;
/// A string is never cut below this: a record still over the limit once its
/// strings are this short is mostly small fields, and is not exported.
const KEEP_BYTES: usize = 1024;

/// An OTLP record and an upper bound of its encoded size.
pub(super) struct Converted {
    pub(super) record: SdkLogRecord,
    /// Bytes it adds to an export request, at most.
    pub(super) size: usize,
}

/// A record still over the size limit after its long strings were cut.
#[derive(Debug)]
pub(super) struct Oversized {
    /// Its estimated encoded size after cutting.
    pub(super) size: usize,
}

/// The OTLP record for `r`; `observed` is when the exporter picked it up.
/// Over `max_size` encoded bytes, its longest strings are cut until it fits
/// (attribute `iron_proxy.truncated: true`, and the names of the cut ones in
/// `iron_proxy.truncated_attributes`); `Err` when even that is not enough.
pub(super) fn log_record(
    logger: &SdkLogger,
    r: &AuditRecord,
    observed: SystemTime,
    max_size: usize,
) -> Result<Converted, Oversized> {
    let mut fields = match serde_json::to_value(r) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => Map::new(),
        Err(e) => {
            tracing::error!(error = %e, "audit record did not serialize for otel");
            Map::new()
        }
    };
    let mut body = summary(r);
    let mut size = encoded_size(&fields, &body);
    if size > max_size {
        let cut = shrink(
            &mut fields,
            &mut body,
            max_size.saturating_sub(TRUNCATION_MARK),
        );
        fields.insert("iron_proxy.truncated".into(), Value::Bool(true));
        fields.insert(
            "iron_proxy.truncated_attributes".into(),
            Value::Array(cut.into_iter().map(Value::String).collect()),
        );
        size = encoded_size(&fields, &body);
        if size > max_size {
            return Err(Oversized { size });
        }
    }
    let mut lr = logger.create_log_record();
    lr.set_event_name("iron_proxy.audit");
    if let Ok(t) =
        time::OffsetDateTime::parse(&r.time, &time::format_description::well_known::Rfc3339)
    {
        lr.set_timestamp(t.into());
    }
    lr.set_observed_timestamp(observed);
    let (severity, text) = match r.level {
        "ERROR" => (Severity::Error, "ERROR"),
        "WARN" => (Severity::Warn, "WARN"),
        _ => (Severity::Info, "INFO"),
    };
    lr.set_severity_number(severity);
    lr.set_severity_text(text);
    lr.set_body(AnyValue::String(body.into()));
    for (k, v) in fields {
        if let Some(v) = any_value(v) {
            lr.add_attribute(Key::new(k), v);
        }
    }
    Ok(Converted { record: lr, size })
}

/// What `r` holds in memory, roughly (its strings and JSON values, plus a
/// fixed allowance), for the byte bound of the queue. Cheap: it runs on the
/// request path, and reads without allocating.
pub(super) fn queued_size(r: &AuditRecord) -> usize {
    let strings: usize = [
        &r.time,
        &r.request_id,
        &r.remote_addr,
        &r.host,
        &r.method,
        &r.path,
    ]
    .iter()
    .map(|s| s.len())
    .sum();
    let optional: usize = [&r.sni, &r.rejected_by, &r.reason, &r.error, &r.original_dst]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum();
    let traces: usize = r
        .request_transforms
        .iter()
        .chain(&r.response_transforms)
        .map(|t| t.name.len() + map_size(&t.annotations))
        .sum();
    let client = r
        .client
        .as_ref()
        .map_or(0, |c| c.comm.len() + c.cgroup.len());
    let tunnel = r.tunnel.as_ref().map_or(0, |t| t.target.len());
    RECORD_OVERHEAD * 4 + strings + optional + traces + client + tunnel + map_size(&r.extra)
}

/// An upper bound of the protobuf size of a log record with these
/// attributes and this body.
pub(super) fn encoded_size(fields: &Map<String, Value>, body: &str) -> usize {
    RECORD_OVERHEAD + FIELD_OVERHEAD + body.len() + map_size(fields)
}

fn map_size(m: &Map<String, Value>) -> usize {
    m.iter()
        .map(|(k, v)| FIELD_OVERHEAD + k.len() + value_size(v))
        .sum()
}

/// An upper bound of the encoded size of `v` as an `AnyValue`.
pub(super) fn value_size(v: &Value) -> usize {
    FIELD_OVERHEAD
        + match v {
            // A varint or a double: 10 bytes at most.
            Value::Null | Value::Bool(_) | Value::Number(_) => 10,
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(value_size).sum(),
            Value::Object(m) => map_size(m),
        }
}

/// Cuts the longest strings (attribute values at any depth, and the body)
/// until the record is at most `max` bytes or every string is down to
/// [`KEEP_BYTES`]; returns the top-level attributes that were cut. Each
/// round either fits or brings one more string down to the floor, so it ends.
fn shrink(fields: &mut Map<String, Value>, body: &mut String, max: usize) -> Vec<String> {
    let mut cut = Vec::new();
    loop {
        let size = encoded_size(fields, body);
        let Some(excess) = size.checked_sub(max).filter(|e| *e > 0) else {
            break;
        };
        let longest = fields
            .iter_mut()
            .filter_map(|(k, v)| longest_string(v).map(|s| (Some(k), s)))
            .chain(std::iter::once((None, &mut *body)))
            .max_by_key(|(_, s)| s.len());
        let Some((key, s)) = longest else { break };
        if s.len() <= KEEP_BYTES {
            break;
        }
        truncate_to(s, s.len().saturating_sub(excess).max(KEEP_BYTES));
        if let Some(k) = key {
            if !cut.contains(k) {
                cut.push(k.clone());
            }
        }
    }
    cut
}

fn longest_string(v: &mut Value) -> Option<&mut String> {
    match v {
        Value::String(s) => Some(s),
        Value::Array(items) => items
            .iter_mut()
            .filter_map(longest_string)
            .max_by_key(|s| s.len()),
        Value::Object(m) => m
            .values_mut()
            .filter_map(longest_string)
            .max_by_key(|s| s.len()),
        _ => None,
    }
}

/// Cuts `s` to at most `len` bytes, on a character boundary.
fn truncate_to(s: &mut String, len: usize) {
    let mut at = len.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
}

/// `reject GET api.example.com/v1/x 403`; connection-level records show the mode.
fn summary(r: &AuditRecord) -> String {
    let action = match r.action {
        Action::Allow => "allow",
        Action::Reject => "reject",
        Action::Error => "error",
    };
    let method = if r.method.is_empty() {
        serde_json::to_value(r.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    } else {
        r.method.clone()
    };
    format!("{action} {method} {}{} {}", r.host, r.path, r.status_code)
}

fn any_value(v: Value) -> Option<AnyValue> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AnyValue::Int(i),
            (None, Some(f)) => AnyValue::Double(f),
            (None, None) => AnyValue::String(n.to_string().into()),
        },
        Value::String(s) => AnyValue::String(s.into()),
        Value::Array(items) => {
            AnyValue::ListAny(Box::new(items.into_iter().filter_map(any_value).collect()))
        }
        Value::Object(m) => AnyValue::Map(Box::new(
            m.into_iter()
                .filter_map(|(k, v)| Some((Key::new(k), any_value(v)?)))
                .collect::<HashMap<_, _>>(),
        )),
    })
}
