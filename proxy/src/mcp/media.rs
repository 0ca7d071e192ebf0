//! How a client reads an MCP server's answer, from its `Content-Type`.
//!
//! The filter must read an answer the way the client will, or an answer it
//! skips as "not JSON" is one the client parses. The SDKs are loose:
//!
//! - the Python SDK (`client/streamable_http.py`) lower-cases the header and
//!   takes JSON when it *starts with* `application/json` (so
//!   `application/json-rpc` too) and SSE when it starts with
//!   `text/event-stream`; SSE text is decoded per the `charset` parameter;
//! - the TypeScript SDK (`client/streamableHttp.ts`) takes SSE when the header
//!   *contains* `text/event-stream`, else JSON when it contains
//!   `application/json`, and always decodes UTF-8; on the stream it opens
//!   with GET it does not look at the type at all.
//!
//! So the header (all its values, joined as clients join them) is read by
//! substring, a `+json` suffix counts as JSON too, and a header that reads as
//! both is ambiguous.

use http::header::CONTENT_TYPE;
use http::HeaderMap;

/// How clients read an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One JSON payload (a message or a batch).
    Json,
    /// A `text/event-stream`, decoded as UTF-8.
    Sse,
    /// A `text/event-stream` whose `charset` is not UTF-8: a client that
    /// honours it reads other text than the bytes the filter sees.
    SseOtherCharset,
    /// Both JSON and SSE to different clients.
    Ambiguous,
    /// Neither (or no `Content-Type`).
    Other,
}

/// The kind of an answer with these headers.
pub fn kind(headers: &HeaderMap) -> Kind {
    let ct = content_type(headers);
    let json = ct.contains("application/json") || media_types(&ct).any(|m| m.ends_with("+json"));
    let sse = ct.contains("text/event-stream");
    match (json, sse) {
        (true, true) => Kind::Ambiguous,
        (true, false) => Kind::Json,
        (false, true) if !utf8_charset(&ct) => Kind::SseOtherCharset,
        (false, true) => Kind::Sse,
        (false, false) => Kind::Other,
    }
}

/// Every `Content-Type` value, lower-cased and joined with `, ` (as httpx and
/// fetch's `Headers.get` join repeated headers); bytes outside ASCII are kept
/// as Latin-1 characters.
pub fn content_type(headers: &HeaderMap) -> String {
    let mut out = String::new();
    for (i, v) in headers.get_all(CONTENT_TYPE).iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.extend(v.as_bytes().iter().map(|&b| char::from(b)));
    }
    out.to_ascii_lowercase()
}

/// The media types (`type/subtype`, trimmed) of a joined header.
fn media_types(ct: &str) -> impl Iterator<Item = &str> {
    ct.split(',')
        .filter_map(|v| v.split(';').next())
        .map(str::trim)
}

/// True unless some `charset` parameter names an encoding other than UTF-8.
fn utf8_charset(ct: &str) -> bool {
    first_other_charset(ct).is_none()
}

/// The first `charset` parameter of `ct` (lower-cased) that names an
/// encoding other than UTF-8.
fn first_other_charset(ct: &str) -> Option<&str> {
    ct.split([';', ','])
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| k.trim() == "charset")
        .map(|(_, v)| v.trim().trim_matches('"'))
        .find(|v| !matches!(*v, "utf-8" | "utf8"))
}

/// The `charset` a message's `Content-Type` names, when it is not UTF-8
/// (cut to 32 characters): a server that honours it reads other text than
/// the bytes the filter parses.
pub fn other_charset(headers: &HeaderMap) -> Option<String> {
    let ct = content_type(headers);
    first_other_charset(&ct).map(|c| c.chars().take(32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn of(values: &[&[u8]]) -> Kind {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_TYPE, HeaderValue::from_bytes(v).expect("header"));
        }
        kind(&h)
    }

    #[test]
    fn what_the_sdks_parse_as_json_is_json() {
        for ct in [
            &b"application/json"[..],
            b"Application/JSON",
            b"application/json; charset=utf-8",
            b"application/json-rpc",
            b"application/jsonfoo",
            b"application/vnd.mcp+json",
            b"text/plain; x=application/json",
        ] {
            assert_eq!(of(&[ct]), Kind::Json, "{}", String::from_utf8_lossy(ct));
        }
        assert_eq!(of(&[b"text/plain", b"application/json"]), Kind::Json);
    }

    #[test]
    fn event_streams_and_the_rest() {
        assert_eq!(of(&[b"text/event-stream"]), Kind::Sse);
        assert_eq!(of(&[b"Text/Event-Stream; charset=UTF-8"]), Kind::Sse);
        assert_eq!(of(&[b"text/event-streamx"]), Kind::Sse);
        assert_eq!(
            of(&[b"text/event-stream; charset=utf-16"]),
            Kind::SseOtherCharset
        );
        assert_eq!(
            of(&[b"text/event-stream; x=application/json"]),
            Kind::Ambiguous
        );
        assert_eq!(
            of(&[b"application/json", b"text/event-stream"]),
            Kind::Ambiguous
        );
        assert_eq!(of(&[]), Kind::Other);
        assert_eq!(of(&[b"text/plain"]), Kind::Other);
        assert_eq!(of(&[b"application/octet-stream"]), Kind::Other);
        assert_eq!(of(&[b"application/\xffjson"]), Kind::Other);
    }
}
