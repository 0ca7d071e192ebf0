//! A streaming `text/event-stream` filter: the response body passes through
//! event by event, and an event whose data lists tools is rewritten without
//! the tools the policy denies. Nothing waits for the end of the stream, and
//! every event is judged until it ends (a second answer to an id that was
//! already answered is filtered like the first). Events follow the WHATWG
//! rules: a UTF-8 BOM may open the stream, lines end in CRLF, LF or CR, an
//! empty line ends an event, and `data` lines join with LF.
//!
//! Fail closed: an event a client would parse (no `event` name, or
//! `message`) whose non-empty data is not JSON the filter can read, or an
//! event over the size limit, ends the stream. Each awaited `tools/list` id
//! first gets a JSON-RPC error event (so the client fails the call at once
//! rather than wait), then the body ends with a [`BodyRefused`] error, which
//! the audit record shows as `mcp_unfilterable_response`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use serde_json::json;

use super::filter::{self, Want};
use super::policy::ServerPolicy;
use super::{jsonrpc, McpLog, UNFILTERABLE, UNFILTERABLE_REASON};
use crate::body::{Body, BodyRefused, BoxError};

/// The filtering body.
pub struct SseFilter {
    inner: Body,
    buf: BytesMut,
    /// Where the scan for the end of the pending event resumes (a line start).
    scan: usize,
    want: Want,
    policy: Arc<ServerPolicy>,
    log: Arc<McpLog>,
    /// Largest pending event (0: no limit).
    limit: usize,
    /// True once the first event went out (only the stream's start may hold a BOM).
    started: bool,
    /// Why the stream is being cut, once it is.
    refused: Option<String>,
    trailers: Option<Frame<Bytes>>,
    ended: bool,
}

/// Where the pending event ends.
enum Scan {
    /// The event is `buf[..end]`.
    Event(usize),
    /// More bytes are needed; resume at this line start.
    More(usize),
}

impl SseFilter {
    /// Filters `inner`. An event longer than `limit` bytes (0: no limit) ends
    /// the stream with an error rather than pass unchecked.
    pub fn new(
        inner: Body,
        want: Want,
        policy: Arc<ServerPolicy>,
        log: Arc<McpLog>,
        limit: usize,
    ) -> Self {
        SseFilter {
            inner,
            buf: BytesMut::new(),
            scan: 0,
            want,
            policy,
            log,
            limit,
            started: false,
            refused: None,
            trailers: None,
            ended: false,
        }
    }

    /// Takes every complete event out of the buffer, filtered; at `eof`, the
    /// unterminated rest too. Stops at an event it must refuse.
    fn take_events(&mut self, eof: bool) -> Bytes {
        let mut out = BytesMut::new();
        while self.refused.is_none() {
            match scan(&self.buf, self.scan, eof) {
                Scan::Event(end) => self.emit(end, &mut out),
                Scan::More(at) => {
                    self.scan = at;
                    if eof && !self.buf.is_empty() {
                        // Some clients dispatch an unterminated last event; judge it too.
                        self.emit(self.buf.len(), &mut out);
                    }
                    break;
                }
            }
        }
        out.freeze()
    }

    /// Moves the event `buf[..end]` to `out`, rewritten when it must be; an
    /// event that cannot be judged is dropped and the stream refused.
    fn emit(&mut self, end: usize, out: &mut BytesMut) {
        let event = self.buf.split_to(end);
        self.scan = 0;
        let judged = match event.strip_prefix(b"\xef\xbb\xbf") {
            Some(rest) if !self.started => rest,
            _ => &event[..],
        };
        self.started = true;
        match self.rewrite(judged) {
            Ok(Some(new)) => out.extend_from_slice(&new),
            Ok(None) => out.extend_from_slice(&event),
            Err(why) => self.refuse(why, out),
        }
    }

    /// Cuts the stream: an error event for each awaited id, then (on the
    /// next poll) a body error.
    fn refuse(&mut self, why: String, out: &mut BytesMut) {
        self.log.push(json!({
            "from": "server",
            "kind": "response",
            "decision": "deny",
            "reason": why,
        }));
        if let Want::Ids(ids) = &self.want {
            for id in ids {
                let envelope =
                    jsonrpc::error(Some(&id.sent), jsonrpc::INTERNAL_ERROR, UNFILTERABLE);
                out.extend_from_slice(b"event: message\ndata: ");
                out.extend_from_slice(envelope.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
        }
        self.buf.clear();
        self.refused = Some(why);
    }

    /// The event rewritten, when its data is an answer that lost tools.
    fn rewrite(&mut self, event: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let lines = lines(event);
        let mut data: Option<Vec<u8>> = None;
        let mut name: Option<&[u8]> = None;
        for line in &lines {
            if let Some(v) = field(line, b"data") {
                match &mut data {
                    Some(d) => {
                        d.push(b'\n');
                        d.extend_from_slice(v);
                    }
                    None => data = Some(v.to_vec()),
                }
            } else if let Some(v) = field(line, b"event") {
                name = Some(v);
            }
        }
        let Some(data) = data else {
            return Ok(None);
        };
        let outcome = match filter::filter(&data, &self.want, &self.policy) {
            Ok(o) => o,
            // The SDKs skip empty data and events of another name.
            Err(_) if data.is_empty() || !matches!(name, None | Some(b"" | b"message")) => {
                return Ok(None)
            }
            Err(e) => return Err(format!("an event of the MCP server's stream: {e}")),
        };
        for seen in outcome.seen {
            self.log.push(seen);
        }
        let Some(new) = outcome.rewritten else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(new.len() + event.len() / 4 + 16);
        let mut wrote = false;
        for line in &lines {
            if field(line, b"data").is_some() {
                if !wrote {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&new);
                    out.push(b'\n');
                    wrote = true;
                }
            } else {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
        out.push(b'\n');
        Ok(Some(out))
    }
}

/// Finds the end of the event that starts the buffer, scanning lines from `from`.
fn scan(buf: &[u8], from: usize, eof: bool) -> Scan {
    let mut i = from;
    loop {
        let rest = &buf[i..];
        let Some(p) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
            return Scan::More(i);
        };
        let term = match (rest[p], rest.get(p + 1)) {
            (b'\r', Some(b'\n')) => 2,
            // A CR at the end of the buffer may be half of a CRLF.
            (b'\r', None) if !eof => return Scan::More(i),
            _ => 1,
        };
        i += p + term;
        if p == 0 {
            return Scan::Event(i);
        }
    }
}

/// The lines of an event, without terminators or the final empty line.
fn lines(event: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = event;
    while !rest.is_empty() {
        let p = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        if p > 0 {
            out.push(&rest[..p]);
        }
        let term = match (rest.get(p), rest.get(p + 1)) {
            (Some(b'\r'), Some(b'\n')) => 2,
            (Some(_), _) => 1,
            (None, _) => 0,
        };
        rest = &rest[p + term..];
    }
    out
}

/// The value of `line` when it is the field `name` (`name: value`, `name:value` or `name`).
fn field<'l>(line: &'l [u8], name: &[u8]) -> Option<&'l [u8]> {
    let rest = line.strip_prefix(name)?;
    match rest {
        [] => Some(rest),
        [b':', b' ', v @ ..] | [b':', v @ ..] => Some(v),
        _ => None,
    }
}

impl http_body::Body for SseFilter {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(why) = this.refused.take() {
                this.ended = true;
                this.trailers = None;
                return Poll::Ready(Some(Err(Box::new(BodyRefused {
                    reason: UNFILTERABLE_REASON,
                    detail: why,
                }))));
            }
            if this.ended {
                return Poll::Ready(this.trailers.take().map(Ok));
            }
            let out = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.buf.extend_from_slice(&data);
                        let mut out = this.take_events(false);
                        if this.refused.is_none() && this.limit != 0 && this.buf.len() > this.limit
                        {
                            let why = format!(
                                "an MCP response stream event exceeds {} bytes",
                                this.limit
                            );
                            let mut more = BytesMut::from(&out[..]);
                            this.refuse(why, &mut more);
                            out = more.freeze();
                        }
                        out
                    }
                    Err(trailers) => {
                        this.ended = true;
                        this.trailers = Some(trailers);
                        this.take_events(true)
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.ended = true;
                    this.take_events(true)
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none() && self.refused.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{McpServer, McpTool};
    use crate::mcp::jsonrpc;
    use crate::rules::Scope;
    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::collections::VecDeque;

    /// A body that yields the given chunks.
    struct Chunks(VecDeque<Bytes>);
    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn policy() -> Arc<ServerPolicy> {
        Arc::new(ServerPolicy::new(&McpServer {
            name: "s".into(),
            rules: Scope(vec![]),
            tools: vec![McpTool {
                name: "search".into(),
                when: vec![],
            }],
        }))
    }

    fn run(chunks: Vec<Vec<u8>>, want: Want, limit: usize) -> (Result<Vec<u8>, String>, Value) {
        let log = Arc::new(McpLog::new("s"));
        let body = crate::body::boxed(Chunks(chunks.into_iter().map(Bytes::from).collect()));
        let f = SseFilter::new(body, want, policy(), log.clone(), limit);
        let out = futures_lite(f);
        (out, log.to_value())
    }

    fn futures_lite(f: SseFilter) -> Result<Vec<u8>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            f.collect()
                .await
                .map(|c| c.to_bytes().to_vec())
                .map_err(|e| e.to_string())
        })
    }

    const STREAM: &str = "event: message\r\nid: 1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n: keep-alive\n\nid: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\n\
data: \"result\":{\"tools\":[{\"name\":\"search\"},{\"name\":\"rm_rf\"}]}}\n\nretry: 10\r\revent: note\rdata: after\n\n";

    #[test]
    fn filters_the_awaited_answer_and_passes_everything_else() {
        let (out, log) = run(vec![STREAM.into()], Want::ids(&[json!(7)]), 0);
        let out = String::from_utf8(out.expect("stream")).expect("utf8");
        let expect = STREAM.replace(
            "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\n\
data: \"result\":{\"tools\":[{\"name\":\"search\"},{\"name\":\"rm_rf\"}]}}\n\n",
            "id: 2\ndata: {\"id\":7,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[{\"name\":\"search\"}]}}\n\n",
        );
        assert_eq!(out, expect);
        assert_eq!(log["messages"][0]["tools_removed"], json!(["rm_rf"]));
    }

    #[test]
    fn an_oversized_pending_event_fails_the_stream() {
        let big = format!("data: {}", "x".repeat(100));
        let (out, log) = run(vec![big.into()], Want::Shape, 64);
        assert!(out.expect_err("limit").contains("exceeds 64"));
        assert_eq!(log["messages"][0]["decision"], "deny");
    }

    /// The body's frames until its error, and the error.
    fn until_error(chunks: Vec<Vec<u8>>, want: Want) -> (String, BoxError, Value) {
        let log = Arc::new(McpLog::new("s"));
        let body = crate::body::boxed(Chunks(chunks.into_iter().map(Bytes::from).collect()));
        let mut f = SseFilter::new(body, want, policy(), log.clone(), 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut out = Vec::new();
        let e = rt.block_on(async {
            loop {
                match f.frame().await {
                    Some(Ok(frame)) => out.extend_from_slice(&frame.into_data().expect("data")),
                    Some(Err(e)) => break e,
                    None => panic!(
                        "the stream ended cleanly: {}",
                        String::from_utf8_lossy(&out)
                    ),
                }
            }
        });
        assert!(
            http_body::Body::is_end_stream(&f),
            "nothing follows the error"
        );
        (String::from_utf8(out).expect("utf8"), e, log.to_value())
    }

    #[test]
    fn an_answer_that_is_not_json_ends_the_stream_with_an_error_for_the_client() {
        // QA case c: the Python SDK's parser reads NaN; serde_json does not.
        let nan = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm_rf\",\"inputSchema\":{\"default\":NaN}}]}}\n\n";
        let first = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        for bad in [
            nan.as_bytes().to_vec(),
            b"data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm\xff\"}]}}\n\n".to_vec(),
            b"data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm_rf\"}]".to_vec(),
        ] {
            let chunks = vec![first.into(), bad.clone(), "data: later\n\n".into()];
            let bad = String::from_utf8_lossy(&bad);
            let (out, e, log) = until_error(chunks, Want::ids(&[json!(7)]));
            assert!(!out.contains("rm"), "{bad}: {out}");
            assert!(out.starts_with(first), "events before it pass: {out}");
            assert!(!out.contains("later"), "nothing after it passes: {out}");
            let error = out[first.len()..]
                .strip_prefix("event: message\ndata: ")
                .expect("an error event");
            let v: Value = serde_json::from_str(error.trim_end()).expect("json");
            assert_eq!(v["id"], 7, "{v}");
            assert_eq!(v["error"]["code"], jsonrpc::INTERNAL_ERROR, "{v}");
            let refused = e.downcast_ref::<BodyRefused>().expect("a BodyRefused");
            assert_eq!(refused.reason, "mcp_unfilterable_response");
            assert_eq!(log["messages"][0]["decision"], "deny", "{log}");
        }
        // On a GET stream there is no id to answer: the stream is cut.
        let (out, _, _) = until_error(vec![nan.into()], Want::Shape);
        assert_eq!(out, "");
    }

    #[test]
    fn events_clients_skip_pass_as_they_are() {
        let s = "event: other\ndata: NaN\n\nid: 3\ndata:\n\n: note\n\ndata: {\"id\":7,\"result\":{\"tools\":[]}}\n\n";
        let (out, _) = run(vec![s.into()], Want::ids(&[json!(7)]), 0);
        assert_eq!(out.expect("stream"), s.as_bytes());
    }

    #[test]
    fn every_answer_of_the_stream_is_filtered_not_just_the_first() {
        // QA case d: a second answer with the same id, and one with id "7".
        let a = "data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"search\"}]}}\n\n";
        let b = "data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"search\"},{\"name\":\"rm_rf\"}]}}\n\n";
        let c = "data: {\"id\":\"7\",\"result\":{\"tools\":[{\"name\":\"rm_rf\"}]}}\n\n";
        let (out, log) = run(
            vec![a.into(), b.into(), c.into()],
            Want::ids(&[json!(7)]),
            0,
        );
        let out = String::from_utf8(out.expect("stream")).expect("utf8");
        assert!(!out.contains("rm_rf"), "{out}");
        assert_eq!(out.matches("search").count(), 2, "{out}");
        assert_eq!(log["messages"][1]["tools_removed"], json!(["rm_rf"]));
        assert_eq!(log["messages"][2]["tools_removed"], json!(["rm_rf"]));
    }

    #[test]
    fn a_bom_opening_the_stream_does_not_hide_the_first_event() {
        // WHATWG decoders (the TypeScript SDK's) drop it and dispatch the event.
        let s = "\u{feff}data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm_rf\"}]}}\n\n";
        let (out, _) = run(vec![s.into()], Want::ids(&[json!(7)]), 0);
        let out = String::from_utf8(out.expect("stream")).expect("utf8");
        assert!(!out.contains("rm_rf"), "{out}");
    }

    #[test]
    fn an_unterminated_last_event_is_judged_too() {
        let s = "data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm_rf\"}]}}";
        let (out, _) = run(vec![s.into()], Want::ids(&[json!(7)]), 0);
        let out = String::from_utf8(out.expect("stream")).expect("utf8");
        assert!(!out.contains("rm_rf"), "{out}");
    }

    proptest! {
        /// Whatever the server sends that holds no tools/list answer comes out byte for
        /// byte, however it is cut.
        #[test]
        fn other_streams_pass_unchanged(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            cut in 0usize..300,
        ) {
            let cut = cut.min(bytes.len());
            let chunks = vec![bytes[..cut].to_vec(), bytes[cut..].to_vec()];
            let (out, _) = run(chunks, Want::Shape, 0);
            prop_assert_eq!(out.expect("stream"), bytes);
        }

        /// However the bytes are cut into chunks, the output is the same.
        #[test]
        fn chunking_does_not_matter(cuts in proptest::collection::vec(0..STREAM.len(), 0..12)) {
            let whole = run(vec![STREAM.into()], Want::ids(&[json!(7)]), 0).0.expect("whole");
            let mut cuts = cuts;
            cuts.sort_unstable();
            cuts.dedup();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([STREAM.len()]) {
                chunks.push(STREAM.as_bytes()[last..c].to_vec());
                last = c;
            }
            let (out, _) = run(chunks, Want::ids(&[json!(7)]), 0);
            prop_assert_eq!(out.expect("chunked"), whole);
        }
    }
}
