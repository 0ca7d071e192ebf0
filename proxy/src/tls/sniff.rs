//! ClientHello peeking: is this connection TLS, and which SNI and ALPN does it ask for?
//!
//! Used before deciding between MITM, sni-only passthrough and plain HTTP.
//! [`sniff`] is a pure, bounded parser over the bytes read so far; it never
//! panics and never consumes anything. [`peek_client_hello`] reads from a
//! stream until `sniff` can decide, and hands back every byte it read so the
//! caller can replay them with [`PrefixedStream`] ahead of the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The largest ClientHello accepted: handshake header plus body, across records.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const MAX_RECORD: usize = 1 << 14;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// What the bytes so far say about the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sniff {
    /// Consistent with a TLS ClientHello so far; read more.
    NeedMore,
    /// A complete, well-formed ClientHello.
    Tls {
        /// The `host_name` from server_name, lowercased; `None` if absent.
        sni: Option<String>,
        /// ALPN protocol names in the client's order (lossy UTF-8).
        alpn: Vec<String>,
    },
    /// Not TLS (the first bytes are not a handshake record): maybe plain HTTP.
    NotTls,
    /// A TLS record header, but the ClientHello in it is broken.
    Malformed(&'static str),
    /// The ClientHello is longer than [`MAX_CLIENT_HELLO`], or (from
    /// [`peek_client_hello`]) its records take more than the bytes it reads.
    TooLarge,
}

/// Errors from [`peek_client_hello`].
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    /// Reading from the client failed.
    #[error("reading the ClientHello")]
    Io(#[from] io::Error),
    /// The client sent too little within the timeout: nothing, or the start
    /// of a ClientHello (this many bytes).
    #[error("timed out after {after:?} {}", waited_for(*got))]
    Timeout {
        /// The timeout.
        after: Duration,
        /// The bytes read by then.
        got: usize,
    },
    /// The client closed the connection before the ClientHello was complete.
    #[error("client closed the connection after {0} bytes")]
    Closed(usize),
}

/// What a [`SniffError::Timeout`] waited for, having `got` bytes.
fn waited_for(got: usize) -> String {
    match got {
        0 => "waiting for the first bytes".into(),
        n => format!("with {n} bytes sent, before the ClientHello was whole"),
    }
}

/// Classifies the first bytes of a connection. Pure and bounded.
pub fn sniff(buf: &[u8]) -> Sniff {
    Sniffer::default().feed(buf)
}

/// [`sniff`] over a buffer that grows between calls, looking at each byte
/// once: [`peek_client_hello`] decides after every read, and a ClientHello
/// trickled in 1-byte records made a fresh `sniff` of the whole buffer per
/// read (up to 16,384 of them), tens of MB of copying per connection.
///
/// Every call must pass the same buffer as the last one, with bytes only
/// appended; the verdict is `sniff`'s on that buffer.
#[derive(Debug, Default)]
pub struct Sniffer {
    /// How many of the buffer's bytes have been taken in.
    pos: usize,
    /// Where the record being read ends, once its header has been read.
    record_end: Option<usize>,
    /// The handshake bytes of the records read so far.
    hs: Vec<u8>,
}

impl Sniffer {
    /// The verdict on `buf`, which extends the buffer of the last call.
    pub fn feed(&mut self, buf: &[u8]) -> Sniff {
        loop {
            let end = match self.record_end {
                Some(end) => end,
                None => match record_header(buf, self.pos) {
                    Ok(len) => {
                        self.pos += 5;
                        let end = self.pos + len;
                        self.record_end = Some(end);
                        end
                    }
                    Err(verdict) => return verdict,
                },
            };
            let take = end.min(buf.len());
            if let Some(new) = buf.get(self.pos..take) {
                self.hs.extend_from_slice(new);
                self.pos = take;
            }
            let hs = &self.hs;
            if hs.first().is_some_and(|&t| t != HANDSHAKE_CLIENT_HELLO) {
                return Sniff::Malformed("first handshake message is not a ClientHello");
            }
            if let Some(&[_, a, b, c]) = hs.get(..4) {
                let body_len = u32::from_be_bytes([0, a, b, c]) as usize;
                if 4 + body_len > MAX_CLIENT_HELLO {
                    return Sniff::TooLarge;
                }
                if let Some(body) = hs.get(4..4 + body_len) {
                    return match parse_client_hello(body) {
                        Ok((sni, alpn)) => Sniff::Tls { sni, alpn },
                        Err(reason) => Sniff::Malformed(reason),
                    };
                }
            }
            if self.pos < end {
                return Sniff::NeedMore;
            }
            self.record_end = None;
        }
    }
}

/// The length of the record whose header starts at `pos`, or the verdict
/// when there is none yet or it is wrong.
fn record_header(buf: &[u8], pos: usize) -> Result<usize, Sniff> {
    let rec = buf.get(pos..).unwrap_or_default();
    // A mismatch in the first record's header means "another protocol";
    // in a later record it means a broken ClientHello.
    let header_mismatch = |reason| {
        if pos == 0 {
            Sniff::NotTls
        } else {
            Sniff::Malformed(reason)
        }
    };
    match rec.first() {
        None => return Err(Sniff::NeedMore),
        Some(&t) if t != RECORD_HANDSHAKE => {
            return Err(header_mismatch(
                "non-handshake record inside the ClientHello",
            ))
        }
        _ => {}
    }
    match rec.get(1..3) {
        Some(&[major, minor]) if major != 3 || minor > 4 => {
            return Err(header_mismatch("bad record version"))
        }
        Some(_) => {}
        None => {
            if rec.get(1).is_some_and(|&major| major != 3) {
                return Err(header_mismatch("bad record version"));
            }
            return Err(Sniff::NeedMore);
        }
    }
    let Some(&[hi, lo]) = rec.get(3..5) else {
        return Err(Sniff::NeedMore);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 || len > MAX_RECORD {
        return Err(Sniff::Malformed("bad record length"));
    }
    Ok(len)
}

/// A bounds-checked cursor; every read returns `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a 1-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a 2-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Hello = (Option<String>, Vec<String>);

fn parse_client_hello(body: &[u8]) -> Result<Hello, &'static str> {
    const TRUNCATED: &str = "truncated ClientHello";
    let mut r = Reader(body);
    let version = r.u16().ok_or(TRUNCATED)?;
    if version >> 8 != 3 {
        return Err("bad ClientHello version");
    }
    r.take(32).ok_or(TRUNCATED)?; // random
    let session_id = r.vec8().ok_or(TRUNCATED)?;
    if session_id.len() > 32 {
        return Err("session id longer than 32 bytes");
    }
    let suites = r.vec16().ok_or(TRUNCATED)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("bad cipher suite list");
    }
    if r.vec8().ok_or(TRUNCATED)?.is_empty() {
        return Err("empty compression method list");
    }
    if r.is_empty() {
        return Ok((None, Vec::new())); // no extensions at all
    }
    let mut exts = Reader(r.vec16().ok_or(TRUNCATED)?);
    if !r.is_empty() {
        return Err("trailing bytes after extensions");
    }
    let mut seen = Vec::new();
    let (mut sni, mut alpn) = (None, Vec::new());
    while !exts.is_empty() {
        let kind = exts.u16().ok_or(TRUNCATED)?;
        let data = exts.vec16().ok_or(TRUNCATED)?;
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => sni = parse_server_name(data)?,
            EXT_ALPN => alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err("duplicate extension");
    }
    Ok((sni, alpn))
}

fn parse_server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16().ok_or("bad server_name extension")?);
    if !outer.is_empty() || list.is_empty() {
        return Err("bad server_name extension");
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8().ok_or("bad server_name extension")?;
        let name = list.vec16().ok_or("bad server_name extension")?;
        if kind != 0 {
            continue; // unknown name types are skipped, per RFC 6066
        }
        if host.is_some() {
            return Err("more than one host_name in server_name");
        }
        if !is_hostname(name) {
            return Err("server_name is not a valid host name");
        }
        // is_hostname admits ASCII only, so this conversion cannot fail.
        host = Some(String::from_utf8_lossy(name).to_ascii_lowercase());
    }
    Ok(host)
}

/// A host name, or an IP literal (RFC 6066 forbids those in SNI, but
/// clients send them, IPv4 and IPv6 alike: both are served as the address).
fn is_hostname(name: &[u8]) -> bool {
    let dns = !name.is_empty()
        && name.len() <= 255
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    dns || std::str::from_utf8(name).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

fn parse_alpn(data: &[u8]) -> Result<Vec<String>, &'static str> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16().ok_or("bad ALPN extension")?);
    if !outer.is_empty() || list.is_empty() {
        return Err("bad ALPN extension");
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let proto = list.vec8().ok_or("bad ALPN extension")?;
        if proto.is_empty() {
            return Err("empty ALPN protocol name");
        }
        protocols.push(String::from_utf8_lossy(proto).into_owned());
    }
    Ok(protocols)
}

/// The most one read of [`peek_client_hello`] takes.
const READ_CHUNK: usize = 4096;

/// Reads from `stream` until [`sniff`] decides, at most `max` bytes, within
/// `timeout` overall. Returns the verdict and every byte read; replay them
/// with [`PrefixedStream::new`] before using the stream.
///
/// `NotTls` is decided on the first byte, so plain HTTP is not delayed.
/// `Malformed` and `TooLarge` are verdicts (`Ok`), for the caller to audit;
/// `max` bytes read with no decision (a ClientHello in many small records,
/// whose headers count) is `TooLarge` too.
pub async fn peek_client_hello<S>(
    stream: &mut S,
    max: usize,
    timeout: Duration,
) -> Result<(Sniff, Vec<u8>), SniffError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let mut buf = Vec::with_capacity(max.min(READ_CHUNK));
    let mut sniffer = Sniffer::default();
    let read_all = async {
        loop {
            let room = max.saturating_sub(buf.len()).min(READ_CHUNK);
            if room == 0 {
                return Ok(Sniff::TooLarge);
            }
            // Straight into the heap, at most `room` bytes: a chunk on the
            // stack would sit in every connection's future and cost a copy.
            buf.reserve(room);
            let n = stream.read_buf(&mut (&mut buf).limit(room)).await?;
            if n == 0 {
                return Err(SniffError::Closed(buf.len()));
            }
            match sniffer.feed(&buf) {
                Sniff::NeedMore => continue,
                verdict => return Ok(verdict),
            }
        }
    };
    let verdict = tokio::time::timeout(timeout, read_all).await;
    let verdict = verdict.map_err(|_| SniffError::Timeout {
        after: timeout,
        got: buf.len(),
    })??;
    Ok((verdict, buf))
}

pin_project_lite::pin_project! {
    /// A stream that yields `prefix` first, then reads from `inner`; writes go
    /// straight to `inner`. This puts peeked bytes back in front of a stream.
    #[derive(Debug)]
    pub struct PrefixedStream<S> {
        prefix: Bytes,
        #[pin]
        inner: S,
    }
}

impl<S> PrefixedStream<S> {
    /// `inner`, with `prefix` to be read before anything from it.
    pub fn new(prefix: impl Into<Bytes>, inner: S) -> Self {
        PrefixedStream {
            prefix: prefix.into(),
            inner,
        }
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner stream, mutably (reading it directly skips the prefix).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The unread part of the prefix and the inner stream, e.g. to write the
    /// prefix upstream and then splice the raw socket.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead> AsyncRead for PrefixedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Replayed: let go of the buffer it was read into (a few KiB
                // of capacity that a long-lived connection would keep).
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for PrefixedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
