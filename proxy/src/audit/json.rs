//! An audit record as one line of JSON, written field by field into a
//! reused buffer.
//!
//! The output is byte for byte what `serde_json` makes of the record's
//! `Serialize` derive (the derive stays the format's definition; the tests
//! compare the two on records with every field set, escapes and extras). It
//! exists because the derive, with its flattened `extra` map, went through
//! serde_json's map serializer one key and one escaped string at a time:
//! about 8.7 k instructions per request, the largest item of the proxy's own
//! code on the keep-alive path (docs/benchmarks.md, round 23). Here each
//! field's key is one constant slice, a string with nothing to escape is one
//! copy, and anything unusual (escapes, the free-form `extra` and
//! `annotations` values) still goes through serde_json.
//!
//! One difference from serde_json's defaults, on purpose: U+2028 and U+2029
//! (LINE and PARAGRAPH SEPARATOR) are written as `\u2028` and `\u2029`
//! ([`LineSafe`]). Raw, they are valid JSON, but JavaScript-based and some
//! line-splitting log consumers take them for line breaks, so a workload
//! could split one audit line in two. The operational log's JSON lines
//! (`ops::logs`) are written the same way.

use std::io;

use serde::Serialize;

use super::{Action, AuditRecord, ClientProcess, Mode, TransformTrace, TunnelInfo};

/// Appends `record` as compact JSON (no newline) to `out`.
pub(super) fn write_record(out: &mut Vec<u8>, record: &AuditRecord) -> serde_json::Result<()> {
    // Every field named, so that a field added to the record without a line
    // here does not compile.
    let AuditRecord {
        time,
        level,
        request_id,
        remote_addr,
        mode,
        host,
        method,
        path,
        sni,
        action,
        status_code,
        duration_ms,
        duration_us: _,
        request_transforms,
        response_transforms,
        rejected_by,
        reason,
        error,
        client,
        original_dst,
        tunnel,
        bytes_sent,
        bytes_received,
        extra,
        late: _,
    } = record;
    out.extend_from_slice(b"{\"time\":");
    string(out, time)?;
    out.extend_from_slice(b",\"level\":");
    string(out, level)?;
    out.extend_from_slice(b",\"request_id\":");
    string(out, request_id)?;
    out.extend_from_slice(b",\"remote_addr\":");
    string(out, remote_addr)?;
    out.extend_from_slice(b",\"mode\":\"");
    out.extend_from_slice(mode_name(*mode).as_bytes());
    out.extend_from_slice(b"\",\"host\":");
    string(out, host)?;
    out.extend_from_slice(b",\"method\":");
    string(out, method)?;
    out.extend_from_slice(b",\"path\":");
    string(out, path)?;
    if let Some(sni) = sni {
        out.extend_from_slice(b",\"sni\":");
        string(out, sni)?;
    }
    out.extend_from_slice(b",\"action\":\"");
    out.extend_from_slice(action_name(*action).as_bytes());
    out.extend_from_slice(b"\",\"status_code\":");
    number(out, *status_code);
    out.extend_from_slice(b",\"duration_ms\":");
    number(out, *duration_ms);
    out.extend_from_slice(b",\"request_transforms\":");
    traces(out, request_transforms)?;
    if !response_transforms.is_empty() {
        out.extend_from_slice(b",\"response_transforms\":");
        traces(out, response_transforms)?;
    }
    optional_string(out, b",\"rejected_by\":", rejected_by)?;
    optional_string(out, b",\"reason\":", reason)?;
    optional_string(out, b",\"error\":", error)?;
    if let Some(ClientProcess {
        pid,
        uid,
        comm,
        cgroup,
    }) = client
    {
        out.extend_from_slice(b",\"client\":{\"pid\":");
        number(out, *pid);
        out.extend_from_slice(b",\"uid\":");
        number(out, *uid);
        out.extend_from_slice(b",\"comm\":");
        string(out, comm)?;
        out.extend_from_slice(b",\"cgroup\":");
        string(out, cgroup)?;
        out.push(b'}');
    }
    optional_string(out, b",\"original_dst\":", original_dst)?;
    if let Some(TunnelInfo { kind, target }) = tunnel {
        out.extend_from_slice(b",\"tunnel\":{\"kind\":");
        string(out, kind)?;
        out.extend_from_slice(b",\"target\":");
        string(out, target)?;
        out.push(b'}');
    }
    if let Some(n) = bytes_sent {
        out.extend_from_slice(b",\"bytes_sent\":");
        number(out, *n);
    }
    if let Some(n) = bytes_received {
        out.extend_from_slice(b",\"bytes_received\":");
        number(out, *n);
    }
    // Flattened: each extra field at the top level, in the map's order.
    for (key, value) in extra {
        out.push(b',');
        string(out, key)?;
        out.push(b':');
        write_value(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

/// serde_json's compact output, with U+2028 and U+2029 escaped as well
/// (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LineSafe;

impl serde_json::ser::Formatter for LineSafe {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // U+2028 and U+2029 are E2 80 A8 and E2 80 A9 in UTF-8. A byte
        // search for E2 (about one instruction a byte), not `str::find` with
        // a char set, which decodes every character (ten times the cost, on
        // every string of every record with annotations).
        let bytes = fragment.as_bytes();
        let (mut written, mut from) = (0, 0);
        while let Some(off) = bytes[from..].iter().position(|&b| b == 0xE2) {
            let at = from + off;
            let escape: &[u8] = match bytes.get(at + 1..at + 3) {
                Some([0x80, 0xA8]) => b"\\u2028",
                Some([0x80, 0xA9]) => b"\\u2029",
                _ => {
                    from = at + 1;
                    continue;
                }
            };
            writer.write_all(&bytes[written..at])?;
            writer.write_all(escape)?;
            (written, from) = (at + 3, at + 3);
        }
        writer.write_all(&bytes[written..])
    }
}

/// Appends `value` as compact JSON, written as [`LineSafe`] writes it.
pub(crate) fn write_value<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> serde_json::Result<()> {
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut *out, LineSafe,
    ))
}

/// A JSON string: one copy when nothing in it needs escaping (what serde_json
/// escapes: `"`, `\` and control characters below 0x20; and U+2028 and
/// U+2029), else [`write_value`]'s escaping.
fn string(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if !needs_escape(s) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        write_value(out, s)
    }
}

/// True when `s` has a byte serde_json escapes, or 0xE2, the first byte of
/// U+2028 and U+2029 (and of other characters from U+2000 to U+2FFF, which
/// then take the slower path for nothing). The loop has no early exit, so
/// the compiler vectorizes it (an `any` stops at the first hit and so runs
/// byte by byte: 3.7 instructions a byte, measured).
fn needs_escape(s: &str) -> bool {
    s.bytes().fold(false, |hit, b| {
        hit | (b < 0x20) | (b == b'"') | (b == b'\\') | (b == 0xE2)
    })
}

fn optional_string(out: &mut Vec<u8>, key: &[u8], s: &Option<String>) -> serde_json::Result<()> {
    if let Some(s) = s {
        out.extend_from_slice(key);
        string(out, s)?;
    }
    Ok(())
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn traces(out: &mut Vec<u8>, traces: &[TransformTrace]) -> serde_json::Result<()> {
    out.push(b'[');
    for (i, t) in traces.iter().enumerate() {
        let TransformTrace {
            name,
            action,
            annotations,
        } = t;
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        string(out, name)?;
        out.extend_from_slice(b",\"action\":");
        string(out, action)?;
        if !annotations.is_empty() {
            out.extend_from_slice(b",\"annotations\":");
            write_value(out, annotations)?;
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// `Mode` as its derive spells it (kebab-case); the tests check every variant.
fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Http => "http",
        Mode::Https => "https",
        Mode::Tunnel => "tunnel",
        Mode::Transparent => "transparent",
        Mode::SniOnly => "sni-only",
    }
}

/// `Action` as its derive spells it (lowercase).
fn action_name(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Reject => "reject",
        Action::Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    fn written(r: &AuditRecord) -> String {
        let mut out = Vec::new();
        write_record(&mut out, r).expect("writes");
        String::from_utf8(out).expect("utf8")
    }

    /// The derive, through the same formatter.
    fn derived(r: &AuditRecord) -> String {
        let mut out = Vec::new();
        write_value(&mut out, r).expect("derive");
        String::from_utf8(out).expect("utf8")
    }

    fn trace(name: &str, action: &'static str, annotations: Map<String, Value>) -> TransformTrace {
        TransformTrace {
            name: name.into(),
            action,
            annotations,
        }
    }

    #[test]
    fn a_fresh_record_matches_the_derive() {
        let r = AuditRecord::new(Mode::Tunnel, "127.0.0.1:5000".into());
        assert_eq!(written(&r), derived(&r));
    }

    #[test]
    fn every_field_set_matches_the_derive() {
        let mut r = AuditRecord::new(Mode::Transparent, "[::1]:40000".into());
        r.host = "api.example.com".into();
        r.method = "POST".into();
        r.path = "/v1/things".into();
        r.sni = Some("api.example.com".into());
        r.status_code = 502;
        r.duration_ms = 1234;
        r.duration_us = 1_234_567;
        r.request_transforms = vec![
            trace("allowlist", "continue", Map::new()),
            trace(
                "secrets",
                "continue",
                json!({"swapped": ["OPENAI_API_KEY"], "n": 1})
                    .as_object()
                    .expect("object")
                    .clone(),
            ),
        ];
        r.response_transforms = vec![trace("judge-1", "stub", Map::new())];
        r.fail("upstream_timeout", "no answer in 30 s".into(), 504);
        r.rejected_by = Some("judge-1".into());
        r.client = Some(ClientProcess {
            pid: 4242,
            uid: 1000,
            comm: "python3".into(),
            cgroup: "/sandbox/agent-1".into(),
        });
        r.original_dst = Some("10.0.0.1:443".into());
        r.tunnel = Some(TunnelInfo {
            kind: "socks5",
            target: "api.example.com:443".into(),
        });
        r.bytes_sent = Some(0);
        r.bytes_received = Some(u64::MAX);
        r.extra
            .insert("body_capture".into(), json!({"request_body": "hi"}));
        r.extra
            .insert("a_first".into(), json!([1, null, true, 2.5]));
        assert_eq!(written(&r), derived(&r));
    }

    #[test]
    fn escapes_match_the_derive() {
        let nasty = [
            "quote \" and backslash \\",
            "controls \u{0}\u{1}\t\n\r\u{1f}",
            "del \u{7f} and non-ASCII é 日本 🦀",
            "\u{2028}\u{2029} line separators",
            "",
            "\\",
            "\"",
        ];
        for s in nasty {
            let mut r = AuditRecord::new(Mode::Http, s.into());
            r.host = s.into();
            r.path = format!("/{s}");
            r.sni = Some(s.into());
            r.error = Some(s.into());
            r.request_transforms.push(trace(s, "reject", Map::new()));
            r.extra.insert(s.into(), Value::String(s.into()));
            r.client = Some(ClientProcess {
                comm: s.into(),
                ..ClientProcess::default()
            });
            assert_eq!(written(&r), derived(&r), "{s:?}");
        }
    }

    /// U+2028 and U+2029 never appear raw on an audit line, in any field,
    /// a transform's annotations and the free-form extras included; the
    /// line still reads back to the same strings.
    #[test]
    fn line_and_paragraph_separators_are_escaped_everywhere() {
        let s = "a\u{2028}b\u{2029}c \u{2026} \u{2028}";
        let mut r = AuditRecord::new(Mode::Http, s.into());
        r.host = s.into();
        r.path = format!("/{s}");
        r.error = Some(s.into());
        let mut notes = Map::new();
        notes.insert(s.into(), json!([s, {"k": s}]));
        r.request_transforms.push(trace(s, "reject", notes));
        r.extra.insert(s.into(), Value::String(s.into()));
        r.client = Some(ClientProcess {
            comm: s.into(),
            ..ClientProcess::default()
        });
        let line = written(&r);
        assert!(
            !line.contains('\u{2028}') && !line.contains('\u{2029}'),
            "a separator written raw: {line}"
        );
        assert!(
            line.contains("\"host\":\"a\\u2028b\\u2029c \u{2026} \\u2028\""),
            "escaped as \\u2028 and \\u2029 (and U+2026 left alone): {line}"
        );
        // Two in each of the 11 places `s` is written.
        assert_eq!(line.matches("\\u2028").count(), 2 * 11, "{line}");
        let v: Value = serde_json::from_str(&line).expect("the line is JSON");
        assert_eq!(v["host"], s);
        assert_eq!(v["remote_addr"], s);
        assert_eq!(v["error"], s);
        assert_eq!(v["client"]["comm"], s);
        assert_eq!(v[s], s);
        assert_eq!(v["request_transforms"][0]["name"], s);
        assert_eq!(v["request_transforms"][0]["annotations"][s][1]["k"], s);
    }

    #[test]
    fn every_mode_and_action_is_spelled_as_the_derive_spells_it() {
        for mode in [
            Mode::Http,
            Mode::Https,
            Mode::Tunnel,
            Mode::Transparent,
            Mode::SniOnly,
        ] {
            for action in [Action::Allow, Action::Reject, Action::Error] {
                let mut r = AuditRecord::new(mode, "127.0.0.1:1".into());
                r.action = action;
                assert_eq!(written(&r), derived(&r), "{mode:?} {action:?}");
            }
        }
    }
}
