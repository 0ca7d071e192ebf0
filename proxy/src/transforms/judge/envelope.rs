//! The JSON envelope a judge shows the model: method, URL, headers and body,
//! each capped (spec: LLM Judge, Envelope Limits). What a cap drops is named
//! in `warnings`, so the model knows it did not see everything. The headers
//! an attacker would most like to hide come first (the first value of each
//! always shown), so padding the request with junk headers or with repeats
//! of one priority header cannot push them out. A compressed body is shown
//! decoded, within a bound.

use std::borrow::Cow;

use http::HeaderMap;
use serde_json::{json, Value};

use crate::transforms::body_capture;

/// Largest body shown, in bytes.
pub const BODY_CAP: usize = 16 * 1024;
/// Longest URL shown, in bytes.
pub const URL_CAP: usize = 2 * 1024;
/// All header names and values together, in bytes.
pub const HEADERS_CAP: usize = 4 * 1024;
/// Longest header value shown, in bytes.
pub const VALUE_CAP: usize = 512;
/// Most bytes a compressed body is decoded to: well past the [`BODY_CAP`]
/// shown (a multipart summary counts all its parts), and the bound on what a
/// compression bomb can cost the judge.
pub const DECODED_CAP: usize = 1 << 20;

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
    let mut shown = headers_shown(headers, &mut warnings);
    if !shown.iter().any(|h| h["name"] == "host") {
        shown.insert(
            0,
            json!({"name": "host", "value": cut_bytes(host, VALUE_CAP)}),
        );
    }
    let mut env = json!({"method": method, "url": url, "headers": shown});
    let decoded = body
        .filter(|b| !b.is_empty())
        .and_then(|b| decoded_body(b, headers, &mut warnings));
    if let Some(b) = decoded {
        match body_shown(&b, content_type(&shown), &mut warnings) {
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

/// The body as the workload meant it: decoded per its `Content-Encoding`
/// (one of the codings `body_capture` reads: gzip, deflate, br, zstd), at most
/// [`DECODED_CAP`] bytes of it, with a warning naming the encoding. A
/// workload cannot hide its payload from the judge by compressing it. `None`
/// (with a warning) when it cannot be decoded.
fn decoded_body<'b>(
    body: &'b [u8],
    headers: &HeaderMap,
    warnings: &mut Vec<String>,
) -> Option<Cow<'b, [u8]>> {
    let encodings = body_capture::content_encodings(headers);
    let codings = body_capture::codings(&encodings);
    if codings.is_empty() {
        return Some(Cow::Borrowed(body));
    }
    let named = cut_bytes(&codings.join(", "), 64).to_string();
    match body_capture::decode(body, &encodings, DECODED_CAP) {
        Ok(mut d) => {
            let more = d.len() > DECODED_CAP;
            d.truncate(DECODED_CAP);
            warnings.push(format!(
                "body decoded from Content-Encoding {named}: {} bytes as sent, {}{} bytes decoded{}",
                body.len(),
                if more { "more than " } else { "" },
                d.len(),
                if more { "; decoding stopped there" } else { "" },
            ));
            Some(Cow::Owned(d))
        }
        Err(e) => {
            warnings.push(format!(
                "body of {} bytes omitted: its Content-Encoding {named} could not be decoded ({})",
                body.len(),
                cut_bytes(&e, 200)
            ));
            None
        }
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

/// The headers shown, within [`HEADERS_CAP`], in three passes:
///
/// 1. the first value of each [`PRIORITY`] header present, in that order. If
///    these alone would overflow the cap, the budget is shared out max-min
///    fairly (short values whole, the long ones cut to an equal share), so
///    every one of them is shown, however an attacker inflates the others;
/// 2. the further values of the priority headers, in the same order;
/// 3. every other header, alphabetically.
///
/// In passes 2 and 3 a value that does not fit is dropped and counted.
fn headers_shown(headers: &HeaderMap, warnings: &mut Vec<String>) -> Vec<Value> {
    let capped = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                if text.len() > VALUE_CAP {
                    format!(
                        "{}...[truncated, {} bytes]",
                        cut_bytes(&text, VALUE_CAP),
                        text.len()
                    )
                } else {
                    text.into_owned()
                }
            })
            .collect()
    };
    let priority: Vec<(&str, Vec<String>)> = PRIORITY
        .iter()
        .map(|&n| (n, capped(n)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let mut others: Vec<&str> = headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| !PRIORITY.contains(n))
        .collect();
    others.sort_unstable();
    others.dedup();

    let (mut out, mut used, mut dropped, mut shortened) = (Vec::new(), 0, 0, 0);
    // Pass 1: the first value of every priority header, always.
    let wants: Vec<usize> = priority.iter().map(|(n, v)| n.len() + v[0].len()).collect();
    let shares = fair_shares(&wants, HEADERS_CAP);
    for ((name, values), (want, share)) in priority.iter().zip(wants.iter().zip(shares)) {
        let value = if share >= *want {
            values[0].clone()
        } else {
            shortened += 1;
            // Cut from the whole value, so the marker gives its real length.
            let raw = headers
                .get(*name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            fit_value(&raw, share.saturating_sub(name.len()))
        };
        used += name.len() + value.len();
        out.push(json!({"name": name, "value": value}));
    }
    // Passes 2 and 3: what fits of the rest.
    let rest = priority
        .iter()
        .flat_map(|(n, v)| v.iter().skip(1).map(move |v| (*n, v.clone())))
        .chain(
            others
                .iter()
                .flat_map(|&n| capped(n).into_iter().map(move |v| (n, v))),
        );
    for (name, value) in rest {
        let cost = name.len() + value.len();
        if used + cost > HEADERS_CAP {
            dropped += 1;
            continue;
        }
        used += cost;
        out.push(json!({"name": name, "value": value}));
    }
    if shortened > 0 {
        warnings.push(format!(
            "{shortened} security-relevant header values shortened to share the {HEADERS_CAP}-byte header cap"
        ));
    }
    if dropped > 0 {
        warnings.push(format!(
            "{dropped} header values omitted: headers are capped at {HEADERS_CAP} bytes in total"
        ));
    }
    out
}

/// Shares `budget` among `wants` max-min fairly: in increasing order of
/// want, each gets its want or an equal part of what is left, whichever is
/// smaller. The shares never sum to more than `budget`.
fn fair_shares(wants: &[usize], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| wants[i]);
    let mut shares = vec![0; wants.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let share = wants[i].min(left / (wants.len() - k));
        shares[i] = share;
        left -= share;
    }
    shares
}

/// `text` in at most `max` bytes: whole when it fits, else its start and a
/// marker with its length.
fn fit_value(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let marker = format!("...[truncated, {} bytes]", text.len());
    format!(
        "{}{marker}",
        cut_bytes(text, max.saturating_sub(marker.len()))
    )
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
mod fuzz;
#[cfg(test)]
mod tests;
