//! The `body_capture` transform: records the decoded request body of matching
//! requests in the audit record, under the top-level
//! `body_capture.request_body` (and `request_body_truncated: true` when the
//! body is longer than `max_request_body_bytes`). The body is decoded first
//! when `Content-Encoding` is `gzip`, `x-gzip`, `deflate` (zlib or raw), `br`
//! or `zstd`, or a list of those; the cap applies to the decoded bytes, and
//! decoding stops there, so a compression bomb costs at most the cap (plus,
//! for zstd, one window of at most 8 MiB: see [`zstd`]). A cut
//! falls on a UTF-8 character boundary; bytes that are not UTF-8 are recorded
//! lossily (U+FFFD). The trace entry gets `captured_bytes` and `truncated`.
//!
//! Observation only: it never rejects. A body it cannot decode (unknown
//! encoding, corrupt data) is annotated `body_capture_error` and not recorded.
//! It asks the pipeline to buffer the body of matching requests, so the
//! proxy-wide `proxy.max_request_body_bytes` limit applies to them. Put it
//! before `secrets` so the record shows proxy tokens, not real credentials.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use async_trait::async_trait;
use http::header::CONTENT_ENCODING;
use http::Request;
use serde_json::json;

use crate::body::Body;
use crate::config::BodyCaptureConfig;
use crate::pipeline::{body_view, Flow, Transform, TransformError, Verdict};
use crate::rules::Scope;

pub mod zstd;

/// The built transform.
pub struct BodyCapture {
    max: usize,
    rules: Scope,
}

/// Builds the transform.
pub fn build(cfg: &BodyCaptureConfig) -> Arc<dyn Transform> {
    Arc::new(BodyCapture::new(cfg))
}

impl BodyCapture {
    /// The transform, concretely typed.
    pub fn new(cfg: &BodyCaptureConfig) -> Self {
        BodyCapture {
            max: usize::try_from(cfg.max_request_body_bytes).unwrap_or(usize::MAX),
            rules: cfg.rules.clone(),
        }
    }

    fn captures(&self, cx: &Flow) -> bool {
        !cx.method.is_empty() && self.rules.inspects(&cx.target())
    }
}

/// Whether the request declares a content coding other than `identity`.
fn encoded(req: &http::request::Parts) -> bool {
    req.headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .any(|v| !codings(&String::from_utf8_lossy(v.as_bytes())).is_empty())
}

/// Every `Content-Encoding` field line of `headers` joined into one list, as
/// RFC 9110 §5.3 reads repeated lines.
pub fn content_encodings(headers: &http::HeaderMap) -> String {
    headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The codings of a `Content-Encoding` list, lowercase, `identity` left out,
/// in the order they were applied.
pub fn codings(encodings: &str) -> Vec<String> {
    encodings
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// Decodes `body` per the `Content-Encoding` list, reading at most `cap + 1`
/// decoded bytes (one more than kept, to detect truncation). The layers are
/// chained as streaming decoders, so an inner layer is decoded only as far
/// as the outer one reads it: a stacked bomb (`gzip, gzip`) stops at the cap
/// like a single one. At most [`MAX_LAYERS`] codings (each layer is a reader
/// over the next: thousands of `br` in one header overflowed the stack), and
/// a layer over another reads at most twice what it makes
/// ([`crate::body::decode::expansion_checked`]: one made of empty members
/// would otherwise inflate the layer under it without end, output never
/// reaching the cap).
pub fn decode(body: &[u8], encodings: &str, cap: usize) -> Result<Vec<u8>, String> {
    use crate::body::decode::MAX_LAYERS;
    let codings = codings(encodings);
    if codings.is_empty() {
        return Ok(body.to_vec());
    }
    if codings.len() > MAX_LAYERS {
        return Err(format!(
            "{} content codings stacked; at most {MAX_LAYERS} are decoded",
            codings.len()
        ));
    }
    // Codings are listed in the order applied; undo them last to first.
    let mut reader: Box<dyn BufRead + '_> = Box::new(body);
    for (i, coding) in codings.iter().rev().enumerate() {
        if i == 0 {
            reader = Box::new(BufReader::new(layer(reader, coding)?));
            continue;
        }
        let counts = std::rc::Rc::new(std::cell::Cell::new((0u64, 0u64)));
        let name = coding_name(coding);
        let input = expansion::Input {
            inner: reader,
            counts: counts.clone(),
            coding: name,
        };
        let output = expansion::Output {
            inner: layer(Box::new(input), coding)?,
            counts,
        };
        reader = Box::new(BufReader::new(output));
    }
    let mut out = Vec::new();
    reader
        .take(cap.saturating_add(1) as u64)
        .read_to_end(&mut out)
        .map_err(|e| format!("decoding {}: {e}", codings.join(", ")))?;
    Ok(out)
}

/// The static name of a coding [`layer`] decodes, for errors.
fn coding_name(coding: &str) -> &'static str {
    match coding {
        "gzip" | "x-gzip" => "gzip",
        "deflate" => "deflate",
        "br" => "br",
        "zstd" => "zstd",
        _ => "unknown",
    }
}

/// The reader pair that keeps a layer stacked over another to
/// [`crate::body::decode::expansion_checked`]: `Input` counts what the layer
/// reads from below and refuses to give more once it is past the bound,
/// `Output` counts what the layer makes.
mod expansion {
    use std::cell::Cell;
    use std::io::{BufRead, Read};
    use std::rc::Rc;

    /// (bytes consumed from below, bytes made), shared by the pair.
    pub type Counts = Rc<Cell<(u64, u64)>>;

    pub struct Input<'a> {
        pub inner: Box<dyn BufRead + 'a>,
        pub counts: Counts,
        pub coding: &'static str,
    }

    impl Input<'_> {
        fn check(&self) -> std::io::Result<()> {
            let (consumed, produced) = self.counts.get();
            crate::body::decode::expansion_checked(self.coding, consumed, produced)
                .map_err(std::io::Error::other)
        }

        fn count(&self, n: usize) {
            let (c, p) = self.counts.get();
            self.counts.set((c + n as u64, p));
        }
    }

    impl Read for Input<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.check()?;
            let n = self.inner.read(buf)?;
            self.count(n);
            Ok(n)
        }
    }

    impl BufRead for Input<'_> {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            self.check()?;
            self.inner.fill_buf()
        }

        fn consume(&mut self, amt: usize) {
            self.count(amt);
            self.inner.consume(amt);
        }
    }

    pub struct Output<'a> {
        pub inner: Box<dyn Read + 'a>,
        pub counts: Counts,
    }

    impl Read for Output<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            let (c, p) = self.counts.get();
            self.counts.set((c, p + n as u64));
            Ok(n)
        }
    }
}

/// A decoder for one coding over `inner`.
fn layer<'a>(mut inner: Box<dyn BufRead + 'a>, coding: &str) -> Result<Box<dyn Read + 'a>, String> {
    Ok(match coding {
        "gzip" | "x-gzip" => Box::new(flate2::bufread::MultiGzDecoder::new(inner)),
        "deflate" => {
            // RFC 9110 means zlib (RFC 1950); some servers send raw deflate
            // (RFC 1951). A zlib header is CM 8 and a check sum of 31.
            let head = inner
                .fill_buf()
                .map_err(|e| format!("decoding deflate: {e}"))?;
            let zlib = head.len() >= 2
                && head[0] & 0x0F == 8
                && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
            if zlib {
                Box::new(flate2::bufread::ZlibDecoder::new(inner))
            } else {
                Box::new(flate2::bufread::DeflateDecoder::new(inner))
            }
        }
        "br" => Box::new(brotli_decompressor::Decompressor::new(inner, 4096)),
        "zstd" => Box::new(zstd::ZstdDecoder::new(inner)),
        other => return Err(format!("unsupported content-encoding {other:?}")),
    })
}

/// Cuts `data` to at most `cap` bytes on a UTF-8 boundary; true when cut.
fn truncate_utf8(data: &mut Vec<u8>, cap: usize) -> bool {
    if data.len() <= cap {
        return false;
    }
    let mut end = cap;
    // Step back over at most 3 continuation bytes of a split character.
    while end > 0 && cap - end < 3 && (data[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    if std::str::from_utf8(&data[..end]).is_err() {
        end = cap; // not text anyway: keep the whole prefix
    }
    data.truncate(end);
    true
}

#[async_trait]
impl Transform for BodyCapture {
    fn name(&self) -> &str {
        "body_capture"
    }

    /// A compressed body is buffered whole: how much of it the capture's
    /// decoded bytes need is not known in advance.
    fn wants_request_body(&self, cx: &Flow, req: &http::request::Parts) -> bool {
        self.captures(cx) && encoded(req)
    }

    /// A plain body is read only as far as the capture keeps (one byte more
    /// tells that it was cut); the rest streams on.
    fn request_body_prefix(&self, cx: &Flow, req: &http::request::Parts) -> Option<usize> {
        (self.captures(cx) && !encoded(req)).then(|| self.max.saturating_add(1))
    }

    async fn on_request(
        &self,
        req: &mut Request<Body>,
        cx: &mut Flow,
    ) -> Result<Verdict, TransformError> {
        if !self.rules.inspects(&cx.target()) {
            return Ok(Verdict::Continue);
        }
        let Some((raw, _complete)) = body_view(req) else {
            return Ok(Verdict::Continue);
        };
        if raw.is_empty() {
            return Ok(Verdict::Continue);
        }
        let mut data = match decode(raw, &content_encodings(req.headers()), self.max) {
            Ok(d) => d,
            Err(e) => {
                cx.annotate("body_capture_error", e);
                return Ok(Verdict::Continue);
            }
        };
        let truncated = truncate_utf8(&mut data, self.max);
        cx.annotate("captured_bytes", data.len());
        cx.annotate("truncated", truncated);
        let mut capture = json!({ "request_body": String::from_utf8_lossy(&data) });
        if truncated {
            capture["request_body_truncated"] = true.into();
        }
        cx.audit_extra.insert("body_capture".into(), capture);
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests;
