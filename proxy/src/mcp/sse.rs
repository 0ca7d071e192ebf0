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
    /// How far the buffer was searched for that line's end.
    searched: usize,
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
    /// More bytes are needed; resume at `line` (the start of the line the
    /// buffer ends in), searching for its end from `searched`.
    More { line: usize, searched: usize },
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
            searched: 0,
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
            match scan(&self.buf, self.scan, self.searched, eof) {
                Scan::Event(end) => self.emit(end, &mut out),
                Scan::More { line, searched } => {
                    self.scan = line;
                    self.searched = searched;
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
        self.searched = 0;
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

/// Finds the end of the event that starts the buffer, scanning lines from
/// `from`, the line's end searched for from `searched` on: bytes already
/// searched are not searched again, so a long line arriving in many chunks
/// costs its length once, not its length squared.
fn scan(buf: &[u8], from: usize, searched: usize, eof: bool) -> Scan {
    let mut line = from;
    let mut look = searched.max(from);
    loop {
        let Some(p) = buf[look..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map(|p| look + p)
        else {
            return Scan::More {
                line,
                searched: buf.len(),
            };
        };
        let term = match (buf[p], buf.get(p + 1)) {
            (b'\r', Some(b'\n')) => 2,
            // A CR at the end of the buffer may be half of a CRLF.
            (b'\r', None) if !eof => return Scan::More { line, searched: p },
            _ => 1,
        };
        let empty = p == line;
        line = p + term;
        look = line;
        if empty {
            return Scan::Event(line);
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
                    by: "mcp",
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
mod tests;
