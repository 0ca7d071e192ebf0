//! The JSON envelope a judge shows the model: method, URL, headers and body,
//! each capped (spec: LLM Judge, Envelope Limits). What a cap drops is named
//! in `warnings`, so the model knows it did not see everything. The headers
//! an attacker would most like to hide come first, so padding the request
//! with junk headers cannot push them out.

use http::HeaderMap;
use serde_json::{json, Value};

/// Largest body shown, in bytes.
pub const BODY_CAP: usize = 16 * 1024;
/// Longest URL shown, in bytes.
pub const URL_CAP: usize = 2 * 1024;
/// All header names and values together, in bytes.
pub const HEADERS_CAP: usize = 4 * 1024;
/// Longest header value shown, in bytes.
pub const VALUE_CAP: usize = 512;

/// Headers shown before all others, in this order.
const PRIORITY: [&str; 11] = [
    "host",
    "origin",
    "referer",
    "x-forwarded-for",
    "x-forwarded-host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "authorization",
    "cookie",
];

/// Builds the envelope of a request to `host`. `body` is the buffered body
/// (`None` when the request has none). The request no longer carries a `Host`
/// header when it came as HTTP/2 or absolute-form (the URI holds the
/// authority), so `host` is shown in its place.
pub fn build(
    method: &str,
    url: &str,
    host: &str,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> Value {
    let mut warnings = Vec::new();
    let url = if url.len() > URL_CAP {
        warnings.push(format!("url truncated to {URL_CAP} of {} bytes", url.len()));
        cut_bytes(url, URL_CAP).to_string()
    } else {
        url.to_string()
    };
    let mut headers = headers_shown(headers, &mut warnings);
    if !headers.iter().any(|h| h["name"] == "host") {
        headers.insert(
            0,
            json!({"name": "host", "value": cut_bytes(host, VALUE_CAP)}),
        );
    }
    let mut env = json!({"method": method, "url": url, "headers": headers});
    if let Some(b) = body.filter(|b| !b.is_empty()) {
        match body_shown(b, content_type(&headers), &mut warnings) {
            Shown::Text(t) => env["body"] = Value::String(t),
            Shown::Summary(s) => env["body_summary"] = Value::String(s),
            Shown::Nothing => {}
        }
    }
    if !warnings.is_empty() {
        env["warnings"] = Value::from(warnings);
    }
    env
}

/// Adds the warning that the body goes on past the `read` bytes the
/// envelope was built from (the proxy reads at most
/// `proxy.max_request_body_bytes` of it; the rest streams to the upstream
/// unexamined once the judge allows the request).
pub fn note_partial_body(env: &mut Value, read: usize) {
    let note = Value::String(format!(
        "the body is longer than the {read} bytes read for judging; the rest was not examined"
    ));
    match env.get_mut("warnings").and_then(Value::as_array_mut) {
        Some(w) => w.push(note),
        None => env["warnings"] = Value::from(vec![note]),
    }
}

fn content_type(headers: &[Value]) -> Option<String> {
    headers
        .iter()
        .find(|h| h["name"] == "content-type")
        .and_then(|h| h["value"].as_str())
        .map(str::to_string)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn cut_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn headers_shown(headers: &HeaderMap, warnings: &mut Vec<String>) -> Vec<Value> {
    let mut names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
    names.sort_by_key(|n| {
        (
            PRIORITY
                .iter()
                .position(|p| p == n)
                .unwrap_or(PRIORITY.len()),
            *n,
        )
    });
    names.dedup();
    let (mut out, mut used, mut dropped) = (Vec::new(), 0, 0);
    for name in names {
        for value in headers.get_all(name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            let shown = if text.len() > VALUE_CAP {
                format!(
                    "{}...[truncated, {} bytes]",
                    cut_bytes(&text, VALUE_CAP),
                    text.len()
                )
            } else {
                text.into_owned()
            };
            let cost = name.len() + shown.len();
            if used + cost > HEADERS_CAP {
                dropped += 1;
                continue;
            }
            used += cost;
            out.push(json!({"name": name, "value": shown}));
        }
    }
    if dropped > 0 {
        warnings.push(format!(
            "{dropped} header values omitted: headers are capped at {HEADERS_CAP} bytes in total"
        ));
    }
    out
}

enum Shown {
    Text(String),
    Summary(String),
    Nothing,
}

fn body_shown(body: &[u8], content_type: Option<String>, warnings: &mut Vec<String>) -> Shown {
    let multipart = content_type
        .as_deref()
        .filter(|ct| ct.to_ascii_lowercase().starts_with("multipart/"));
    if let (Some(ct), true) = (multipart, body.len() > BODY_CAP) {
        warnings.push(format!(
            "multipart body of {} bytes is over the {BODY_CAP}-byte cap: only its parts are summarized",
            body.len()
        ));
        return Shown::Summary(multipart_summary(body, ct));
    }
    // A cut may fall inside a character: judge UTF-8 on what is shown.
    let (shown, truncated) = if body.len() > BODY_CAP {
        (&body[..BODY_CAP], true)
    } else {
        (body, false)
    };
    let text = match std::str::from_utf8(shown) {
        Ok(t) => t,
        Err(e) if truncated && e.valid_up_to() + 4 > shown.len() && e.error_len().is_none() => {
            // Only the last character was cut in two.
            std::str::from_utf8(&shown[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => {
            warnings.push(format!(
                "body of {} bytes omitted: it is not UTF-8 text",
                body.len()
            ));
            return Shown::Nothing;
        }
    };
    if truncated {
        warnings.push(format!(
            "body truncated to {} of {} bytes",
            text.len(),
            body.len()
        ));
    }
    Shown::Text(text.to_string())
}

/// One line per part: its name, filename, type and size.
fn multipart_summary(body: &[u8], content_type: &str) -> String {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .next();
    let Some(boundary) = boundary.filter(|b| !b.is_empty()) else {
        return format!("multipart body of {} bytes without a boundary", body.len());
    };
    let delim = format!("--{boundary}");
    let text = String::from_utf8_lossy(body);
    let mut parts = Vec::new();
    for part in text.split(delim.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let (head, content) = part
            .split_once("\r\n\r\n")
            .or_else(|| part.split_once("\n\n"))
            .unwrap_or((part, ""));
        let fields: Vec<String> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| {
                k.trim().eq_ignore_ascii_case("content-disposition")
                    || k.trim().eq_ignore_ascii_case("content-type")
            })
            .map(|(_, v)| cut_bytes(v.trim(), 200).to_string())
            .collect();
        parts.push(format!(
            "part [{}], {} bytes",
            fields.join("; "),
            content.len()
        ));
        if parts.len() == 50 {
            parts.push("more parts omitted".into());
            break;
        }
    }
    format!(
        "multipart body of {} bytes, {} parts:\n{}",
        body.len(),
        parts.len(),
        parts.join("\n")
    )
}

#[cfg(test)]
mod tests;
