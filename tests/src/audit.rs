//! A typed view over audit records: the JSON lines the proxy writes when an exchange ends.
//!
//! A line counts as an audit record when it is a JSON object with a string `action`, the rule
//! docs/audit-log.md gives readers: operational logs share the stream as JSON lines too
//! ([`crate::logs`]), and never carry an `action` key.

use serde_json::{Map, Value};

/// One audit record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord(pub Value);

/// Parses one log line into an audit record, if it is one.
pub fn parse_line(line: &str) -> Option<AuditRecord> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(line).ok()?;
    v.get("action")
        .is_some_and(Value::is_string)
        .then_some(AuditRecord(v))
}

impl AuditRecord {
    /// A top-level string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// Any value by JSON pointer, e.g. `/request_transforms/0/name`.
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        self.0.pointer(pointer)
    }

    /// `host`.
    pub fn host(&self) -> Option<&str> {
        self.str("host")
    }

    /// `method`.
    pub fn method(&self) -> Option<&str> {
        self.str("method")
    }

    /// `path`.
    pub fn path(&self) -> Option<&str> {
        self.str("path")
    }

    /// `action` (`allow`, `reject`, ...).
    pub fn action(&self) -> Option<&str> {
        self.str("action")
    }

    /// `status_code`.
    pub fn status_code(&self) -> Option<u16> {
        self.0
            .get("status_code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
    }

    /// `rejected_by`: the transform that rejected the request.
    pub fn rejected_by(&self) -> Option<&str> {
        self.str("rejected_by")
    }

    /// `duration_ms`.
    pub fn duration_ms(&self) -> Option<u64> {
        self.0.get("duration_ms").and_then(Value::as_u64)
    }

    /// Whether the request was allowed.
    pub fn is_allowed(&self) -> bool {
        self.action() == Some("allow")
    }

    /// `request_transforms` entries (empty when absent).
    pub fn request_transforms(&self) -> &[Value] {
        self.0
            .get("request_transforms")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// `response_transforms` entries (empty when absent).
    pub fn response_transforms(&self) -> &[Value] {
        self.0
            .get("response_transforms")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The first request-transform entry named `name`.
    pub fn transform(&self, name: &str) -> Option<&Value> {
        self.request_transforms()
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
    }

    /// `annotations` of the request transform `name`.
    pub fn annotations(&self, transform: &str) -> Option<&Map<String, Value>> {
        self.transform(transform)?
            .get("annotations")
            .and_then(Value::as_object)
    }

    /// One annotation of the request transform `name`.
    pub fn annotation(&self, transform: &str, key: &str) -> Option<&Value> {
        self.annotations(transform)?.get(key)
    }

    /// The whole record.
    pub fn json(&self) -> &Value {
        &self.0
    }
}

impl std::fmt::Display for AuditRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The audit records seen so far, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Audit(pub Vec<AuditRecord>);

impl Audit {
    /// Parses every audit record out of `lines`.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        Self(lines.into_iter().filter_map(parse_line).collect())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The records.
    pub fn iter(&self) -> std::slice::Iter<'_, AuditRecord> {
        self.0.iter()
    }

    /// Records for `host`.
    pub fn for_host(&self, host: &str) -> Vec<&AuditRecord> {
        self.0.iter().filter(|r| r.host() == Some(host)).collect()
    }

    /// The first record matching `pred`.
    pub fn find(&self, pred: impl Fn(&AuditRecord) -> bool) -> Option<&AuditRecord> {
        self.0.iter().find(|r| pred(r))
    }

    /// The last record.
    pub fn last(&self) -> Option<&AuditRecord> {
        self.0.last()
    }
}

impl std::fmt::Display for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.0 {
            writeln!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICKSTART: &str = r#"{"host":"httpbin.org","method":"GET","path":"/headers","action":"allow","status_code":200,"duration_ms":142,"request_transforms":[{"name":"allowlist","action":"continue"},{"name":"secrets","action":"continue","annotations":{"swapped":[{"secret":"OPENAI_API_KEY","locations":["header:Authorization"]}]}}]}"#;

    #[test]
    fn reads_the_documented_record() {
        let r = parse_line(QUICKSTART).expect("an audit record");
        assert_eq!(r.host(), Some("httpbin.org"));
        assert_eq!(r.method(), Some("GET"));
        assert_eq!(r.path(), Some("/headers"));
        assert!(r.is_allowed());
        assert_eq!(r.status_code(), Some(200));
        assert_eq!(r.duration_ms(), Some(142));
        assert_eq!(r.rejected_by(), None);
        assert_eq!(r.request_transforms().len(), 2);
        let swapped = r
            .annotation("secrets", "swapped")
            .expect("swapped annotation");
        assert_eq!(swapped[0]["secret"], "OPENAI_API_KEY");
    }

    #[test]
    fn skips_operational_logs() {
        let lines = [
            "plain text log line",
            r#"{"time":"2026-01-01T00:00:00.000Z","level":"info","msg":"listening","listener":"http"}"#,
            r#"{"time":"2026-01-01T00:00:00.000Z","level":"warn","msg":"x","field.action":"reject"}"#,
            r#"{"action":"reject","host":"evil.test","rejected_by":"allowlist"}"#,
            QUICKSTART,
        ];
        let audit = Audit::parse(lines);
        assert_eq!(audit.len(), 2, "{audit}");
        assert_eq!(audit.0[0].rejected_by(), Some("allowlist"));
        assert_eq!(audit.for_host("httpbin.org").len(), 1);
    }
}
