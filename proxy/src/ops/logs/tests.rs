//! Events formatted through the real subscriber [`super::init`] installs,
//! into a buffer that keeps each `write` apart.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing_subscriber::EnvFilter;

use super::*;

/// Every `write` call the subscriber made, in order.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

impl std::io::Write for Writes {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").push(b.to_vec());
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Writes {
    fn all(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|w| String::from_utf8(w.clone()).expect("UTF-8"))
            .collect()
    }
}

/// Runs `f` under a subscriber of `format` at trace level; returns each write.
fn capture(format: LogFormat, f: impl FnOnce()) -> Vec<String> {
    let out = Writes::default();
    let w = out.clone();
    let (sub, _) = subscriber(EnvFilter::new("trace"), format, false, move || w.clone());
    tracing::subscriber::with_default(sub, f);
    out.all()
}

/// The one JSON line `f` logs, parsed; panics unless it is exactly one
/// object on one line.
fn one_json(f: impl FnOnce()) -> (String, Map<String, Value>) {
    let writes = capture(LogFormat::Json, f);
    assert_eq!(writes.len(), 1, "one write per event: {writes:?}");
    let line = writes[0].clone();
    assert!(
        line.ends_with('\n') && line.matches('\n').count() == 1,
        "exactly one line: {line:?}"
    );
    match serde_json::from_str(&line) {
        Ok(Value::Object(m)) => (line, m),
        other => panic!("not a JSON object ({other:?}): {line:?}"),
    }
}

#[test]
fn fields_keep_their_json_types() {
    let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let (line, m) = one_json(|| {
        tracing::info!(
            signed = -3i64,
            unsigned = 7u64,
            float = 1.5f64,
            flag = true,
            text = "plain",
            shown = %addr,
            debugged = ?Some("x"),
            "otel exporter {}",
            "enabled"
        );
    });
    assert!(
        line.starts_with(r#"{"time":""#)
            && line.contains(r#"","level":"info","msg":"otel exporter enabled","signed":-3,"#),
        "time, level, msg first, then fields in order: {line}"
    );
    assert_eq!(m["signed"], -3);
    assert_eq!(m["unsigned"], 7);
    assert_eq!(m["float"], 1.5);
    assert_eq!(m["flag"], true);
    assert_eq!(m["text"], "plain");
    assert_eq!(m["shown"], "127.0.0.1:8080");
    assert_eq!(m["debugged"], r#"Some("x")"#);
    assert_eq!(m.len(), 10, "{line}");
}

#[test]
fn time_is_rfc3339_utc_with_milliseconds() {
    let (_, m) = one_json(|| tracing::info!("tick"));
    let t = m["time"].as_str().expect("time is a string");
    assert!(
        t.len() == "2026-01-02T03:04:05.678Z".len() && t.ends_with('Z') && t.as_bytes()[19] == b'.',
        "{t}"
    );
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{t} is not RFC 3339: {e}"));
}

#[test]
fn levels_are_lowercase() {
    let writes = capture(LogFormat::Json, || {
        tracing::trace!("t");
        tracing::debug!("d");
        tracing::info!("i");
        tracing::warn!("w");
        tracing::error!("e");
    });
    let levels: Vec<String> = writes
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON");
            v["level"].as_str().expect("level").to_string()
        })
        .collect();
    assert_eq!(levels, ["trace", "debug", "info", "warn", "error"]);
}

#[test]
fn hostile_text_is_escaped_onto_one_line() {
    let nasty = "say \"hi\"\nsecond line\r\tback\\slash \u{1b}[31mred\u{0}nul \u{7f} é";
    let (line, m) = one_json(|| tracing::warn!(value = nasty, shown = %nasty, "{nasty}"));
    assert_eq!(m["msg"], nasty);
    assert_eq!(m["value"], nasty);
    assert_eq!(m["shown"], nasty);
    assert!(
        !line.trim_end_matches('\n').bytes().any(|b| b < 0x20),
        "no raw control characters: {line:?}"
    );
}

/// U+2028 and U+2029 are escaped, as in the audit records: some log
/// consumers split lines on them. The line still reads back to the text.
#[test]
fn line_and_paragraph_separators_are_escaped() {
    let nasty = "one\u{2028}two\u{2029}three";
    let (line, m) = one_json(|| tracing::warn!(value = nasty, "{nasty}"));
    assert!(
        !line.contains('\u{2028}') && !line.contains('\u{2029}'),
        "a separator written raw: {line:?}"
    );
    assert!(
        line.contains(r#""msg":"one\u2028two\u2029three""#),
        "{line}"
    );
    assert_eq!(m["msg"], nasty);
    assert_eq!(m["value"], nasty);
}

#[test]
fn reserved_names_are_prefixed_and_no_line_has_action() {
    let (line, m) = one_json(|| {
        tracing::warn!(
            action = "reject",
            time = 5,
            level = "loud",
            msg = "shadow",
            "clash"
        );
    });
    for key in ["\"time\":", "\"level\":", "\"msg\":"] {
        assert_eq!(line.matches(key).count(), 1, "{key} once: {line}");
    }
    assert!(m.get("action").is_none(), "an audit-record marker: {line}");
    assert_eq!(m["level"], "warn");
    assert_eq!(m["msg"], "clash");
    assert_eq!(m["field.action"], "reject");
    assert_eq!(m["field.time"], 5);
    assert_eq!(m["field.level"], "loud");
    assert_eq!(m["field.msg"], "shadow");
}

#[test]
fn span_fields_are_merged_and_guarded() {
    let (line, m) = one_json(|| {
        let outer = tracing::info_span!("conn", client = "10.0.0.1:5000", action = "allow");
        let _o = outer.enter();
        let inner = tracing::info_span!("req", host = tracing::field::Empty, n = 1u64);
        inner.record("host", "example.test");
        let _i = inner.enter();
        tracing::info!(n = 2u64, "handled");
    });
    assert_eq!(m["client"], "10.0.0.1:5000", "{line}");
    assert_eq!(m["host"], "example.test", "recorded after creation: {line}");
    assert_eq!(m["n"], 2, "the event's field wins: {line}");
    assert!(m.get("action").is_none(), "{line}");
    assert_eq!(m["field.action"], "allow");
    assert_eq!(line.matches("\"n\":").count(), 1, "{line}");
}

#[test]
fn each_event_is_one_write_of_one_line() {
    let writes = capture(LogFormat::Json, || {
        for i in 0..3 {
            tracing::info!(i, "event\nwith a newline");
        }
    });
    assert_eq!(writes.len(), 3, "{writes:?}");
    for w in &writes {
        assert!(w.ends_with('\n') && w.matches('\n').count() == 1, "{w:?}");
    }
}

#[test]
fn text_format_is_unchanged() {
    let writes = capture(LogFormat::Text, || {
        tracing::info!(version = "1.2.3", "ready");
    });
    assert_eq!(writes.len(), 1, "{writes:?}");
    let line = &writes[0];
    assert!(
        serde_json::from_str::<Value>(line).is_err(),
        "text, not JSON: {line}"
    );
    assert!(
        line.contains(" INFO ready version=\"1.2.3\"")
            || line.contains(" INFO ready version=1.2.3"),
        "tracing's text format: {line}"
    );
    assert!(!line.contains("iron_proxy::"), "no target: {line}");
}

#[test]
fn the_level_changes_through_the_handle_and_other_crates_stay_at_warn() {
    let out = Writes::default();
    let w = out.clone();
    let (sub, handle) = subscriber(level_filter("info"), LogFormat::Json, false, move || {
        w.clone()
    });
    tracing::subscriber::with_default(sub, || {
        tracing::debug!("before");
        tracing::info!("info before");
        handle.reload(level_filter("debug")).expect("reload");
        tracing::debug!("after");
        tracing::debug!(target: "other_crate", "not ours");
        handle.reload(level_filter("info")).expect("reload");
        tracing::debug!("back at info");
    });
    let msgs: Vec<String> = out
        .all()
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON");
            v["msg"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(msgs, vec!["info before", "after"], "{msgs:?}");
}

/// A fatal start-up line written without a logger has the logger's shape:
/// same keys in the same order, one line, whatever the message holds.
#[test]
fn a_line_without_a_logger_has_the_loggers_shape() {
    let (_, logged) = one_json(|| tracing::error!("x"));
    let msg = "proxy.yaml:1:12: error: \"quoted\"\nand a newline \u{2028}";
    let line = json_line(Level::ERROR, msg);
    assert!(
        line.ends_with('\n') && line.matches('\n').count() == 1,
        "exactly one line: {line:?}"
    );
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&line) else {
        panic!("not a JSON object: {line:?}")
    };
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        logged.keys().collect::<Vec<_>>(),
        "{line}"
    );
    assert_eq!(m["level"], "error");
    assert_eq!(m["msg"], msg);
    assert!(line.starts_with("{\"time\":\""), "{line}");
}
