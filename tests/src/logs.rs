//! A typed view over the proxy's operational log lines with `log.format: json` (the default):
//! `{"time":"…","level":"info","msg":"ready","version":"0.1.0"}`, one object per line on
//! stderr next to the audit records, which are told apart by their `action` key.

use serde_json::{Map, Value};

/// One operational log line.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine(pub Map<String, Value>);

impl LogLine {
    /// Parses `line` if it is a JSON object with string `level` and `msg` and no `action`
    /// (an audit record); `None` otherwise (audit records, text, startup errors).
    pub fn parse(line: &str) -> Option<Self> {
        let Ok(Value::Object(m)) = serde_json::from_str(line.trim()) else {
            return None;
        };
        let is_log = m.get("level").is_some_and(Value::is_string)
            && m.get("msg").is_some_and(Value::is_string)
            && !m.contains_key("action");
        is_log.then_some(Self(m))
    }

    /// `level`: `trace`, `debug`, `info`, `warn` or `error`.
    pub fn level(&self) -> &str {
        self.str("level").unwrap_or_default()
    }

    /// `msg`.
    pub fn msg(&self) -> &str {
        self.str("msg").unwrap_or_default()
    }

    /// A string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// Any field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Value::Object(self.0.clone()))
    }
}

/// The JSON values in a JSON-lines file a peer writes (its request log), one a line, in order;
/// none while the file does not exist. Panics on a line that is not JSON.
pub fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("{}: a line that is not JSON ({e}): {l}", path.display())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_log_lines_from_audit_records_and_text() {
        let l = LogLine::parse(
            r#"{"time":"2026-01-01T00:00:00.000Z","level":"info","msg":"otel exporter enabled","endpoint":"http://c:4318"}"#,
        )
        .expect("a log line");
        assert_eq!((l.level(), l.msg()), ("info", "otel exporter enabled"));
        assert_eq!(l.str("endpoint"), Some("http://c:4318"));
        assert!(
            LogLine::parse(r#"{"level":"INFO","msg":"x","action":"allow","host":"h"}"#).is_none()
        );
        assert!(LogLine::parse("2026-01-01T00:00:00Z  INFO ready").is_none());
        assert!(LogLine::parse("iron-proxy: proxy.yaml:1:1: bad").is_none());
    }
}
