//! A streaming `text/event-stream` filter: the response body passes through
//! event by event, and an event whose data is a `tools/list` answer is
//! rewritten without the tools the policy denies. Nothing waits for the end
//! of the stream; once every awaited answer has gone by, bytes pass straight
//! through. Events follow the WHATWG rules: lines end in CRLF, LF or CR, an
//! empty line ends an event, and `data` lines join with LF.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Frame;

use super::filter::{self, Want};
use super::policy::ServerPolicy;
use super::McpLog;
use crate::body::{Body, BoxError};

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
            trailers: None,
            ended: false,
        }
    }

    /// Takes every complete event out of the buffer, filtered; at `eof`, the
    /// unterminated rest too.
    fn take_events(&mut self, eof: bool) -> Bytes {
        let mut out = BytesMut::new();
        loop {
            if self.want.satisfied() {
                out.extend_from_slice(&self.buf.split());
                self.scan = 0;
                break;
            }
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

    /// Moves the event `buf[..end]` to `out`, rewritten when it must be.
    fn emit(&mut self, end: usize, out: &mut BytesMut) {
        let event = self.buf.split_to(end);
        self.scan = 0;
        match self.rewrite(&event) {
            Some(new) => out.extend_from_slice(&new),
            None => out.extend_from_slice(&event),
        }
    }

    /// The event rewritten, when its data is an answer that lost tools.
    fn rewrite(&mut self, event: &[u8]) -> Option<Vec<u8>> {
        let lines = lines(event);
        let mut data: Option<Vec<u8>> = None;
        for line in &lines {
            if let Some(v) = field(line, b"data") {
                match &mut data {
                    Some(d) => {
                        d.push(b'\n');
                        d.extend_from_slice(v);
                    }
                    None => data = Some(v.to_vec()),
                }
            }
        }
        let outcome = filter::filter(&data?, &mut self.want, &self.policy);
        for seen in outcome.seen {
            self.log.push(seen);
        }
        let new = outcome.rewritten?;
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
        Some(out)
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
            if this.ended {
                return Poll::Ready(this.trailers.take().map(Ok));
            }
            if this.want.satisfied() && this.buf.is_empty() {
                return Pin::new(&mut this.inner).poll_frame(cx);
            }
            let out = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.buf.extend_from_slice(&data);
                        let out = this.take_events(false);
                        if this.limit != 0 && this.buf.len() > this.limit {
                            return Poll::Ready(Some(Err(format!(
                                "an MCP response stream event exceeds {} bytes",
                                this.limit
                            )
                            .into())));
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
        self.ended && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{McpServer, McpTool};
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
data: \"result\":{\"tools\":[{\"name\":\"search\"},{\"name\":\"rm_rf\"}]}}\n\nretry: 10\r\rdata: after\n\n";

    #[test]
    fn filters_the_awaited_answer_and_passes_everything_else() {
        let (out, log) = run(vec![STREAM.into()], Want::Ids(vec![json!(7)]), 0);
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
        let (out, _) = run(vec![big.into()], Want::Shape, 64);
        assert!(out.expect_err("limit").contains("exceeds 64"));
    }

    #[test]
    fn an_unterminated_last_event_is_judged_too() {
        let s = "data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm_rf\"}]}}";
        let (out, _) = run(vec![s.into()], Want::Ids(vec![json!(7)]), 0);
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
            let whole = run(vec![STREAM.into()], Want::Ids(vec![json!(7)]), 0).0.expect("whole");
            let mut cuts = cuts;
            cuts.sort_unstable();
            cuts.dedup();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([STREAM.len()]) {
                chunks.push(STREAM.as_bytes()[last..c].to_vec());
                last = c;
            }
            let (out, _) = run(chunks, Want::Ids(vec![json!(7)]), 0);
            prop_assert_eq!(out.expect("chunked"), whole);
        }
    }
}
