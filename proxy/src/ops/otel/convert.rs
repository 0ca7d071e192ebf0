//! One audit record to one OTLP log record with the same fields.
//!
//! Every top-level field of the JSON record becomes an attribute of the same
//! name (absent fields stay absent). Scalars stay scalars, so backends can
//! filter on `host`, `action` or `status_code`; `request_transforms` and the
//! other nested values become OTLP arrays and maps (`AnyValue`). The body is a
//! one-line summary and the severity follows `level`.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::Key;
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger};
use serde_json::Value;

use crate::audit::{Action, AuditRecord};

/// The OTLP record for `r`; `observed` is when the exporter picked it up.
pub(super) fn log_record(
    logger: &SdkLogger,
    r: &AuditRecord,
    observed: SystemTime,
) -> SdkLogRecord {
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
    lr.set_body(AnyValue::String(summary(r).into()));
    match serde_json::to_value(r) {
        Ok(Value::Object(fields)) => {
            for (k, v) in fields {
                if let Some(v) = any_value(v) {
                    lr.add_attribute(Key::new(k), v);
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "audit record did not serialize for otel"),
    }
    lr
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
