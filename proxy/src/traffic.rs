//! What the data plane moved and how long its upstream legs took: body and
//! splice bytes, upstream connect and response-head times, open upstream
//! connections. `ops::metrics` reads them at scrape time.
//!
//! They are process-wide statics of plain atomics, written on the request
//! path with one relaxed `fetch_add` per event: no lock, no allocation, no
//! reference count to take, and nothing to plumb through the places that
//! count (the response body wrapper alone is made at some fifty places).
//! Like the `process_*` family they describe the process, not one
//! configuration: a reload keeps them.
//!
//! The byte counts are taken where the audit record takes its own (the
//! splice's [`Counted`](crate::upgrade) streams, the response body's
//! `AuditedBody`), from the same reads, so a record's `bytes_sent` and
//! `bytes_received` add up to what these counters moved for it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::histogram::Buckets;
pub use crate::histogram::{Histogram, HistogramSnapshot};

/// Every data-plane counter of the process.
pub static TRAFFIC: Traffic = Traffic::new();

/// Upper bounds of the histograms' buckets, in seconds: from 0.5 ms (a
/// connect on the same host) to 60 s (a slow model's first token).
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// [`BUCKETS`] as the histograms take them.
const TRAFFIC_BUCKETS: Buckets = Buckets::new(&BUCKETS);

/// Which splice moved the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceKind {
    /// A WebSocket, after the upstream's 101.
    WebSocket,
    /// An sni-only TLS passthrough (on any listener, tunnels included).
    Passthrough,
}

impl SpliceKind {
    /// Every kind, in the order of [`SpliceKind::slot`].
    pub const ALL: [SpliceKind; 2] = [SpliceKind::WebSocket, SpliceKind::Passthrough];

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            SpliceKind::WebSocket => "websocket",
            SpliceKind::Passthrough => "passthrough",
        }
    }

    /// What the audit record's `error` calls it.
    pub fn what(self) -> &'static str {
        match self {
            SpliceKind::WebSocket => "upgraded connection",
            SpliceKind::Passthrough => "passthrough",
        }
    }

    fn slot(self) -> usize {
        match self {
            SpliceKind::WebSocket => 0,
            SpliceKind::Passthrough => 1,
        }
    }
}

/// How an upstream dial ended, for the connect histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// Connected (and, for a TLS leg, the handshake done).
    Success,
    /// The TCP connect failed: refused, timed out, unreachable.
    ConnectFailed,
    /// TCP connected, the TLS handshake failed.
    TlsFailed,
}

impl ConnectOutcome {
    /// Every outcome, in the order of [`ConnectOutcome::slot`].
    pub const ALL: [ConnectOutcome; 3] = [
        ConnectOutcome::Success,
        ConnectOutcome::ConnectFailed,
        ConnectOutcome::TlsFailed,
    ];

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            ConnectOutcome::Success => "success",
            ConnectOutcome::ConnectFailed => "connect_failed",
            ConnectOutcome::TlsFailed => "tls_failed",
        }
    }

    fn slot(self) -> usize {
        match self {
            ConnectOutcome::Success => 0,
            ConnectOutcome::ConnectFailed => 1,
            ConnectOutcome::TlsFailed => 2,
        }
    }
}

/// The protocol of an upstream HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (every plain-text leg, and TLS without `h2` in ALPN).
    Http1,
    /// HTTP/2, agreed through ALPN.
    Http2,
}

impl UpstreamProtocol {
    /// Every protocol, in the order of [`UpstreamProtocol::slot`].
    pub const ALL: [UpstreamProtocol; 2] = [UpstreamProtocol::Http1, UpstreamProtocol::Http2];

    /// The `protocol` label.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
        }
    }

    fn slot(self) -> usize {
        match self {
            UpstreamProtocol::Http1 => 0,
            UpstreamProtocol::Http2 => 1,
        }
    }
}

/// The data plane's counters (see the module doc).
pub struct Traffic {
    request_body: AtomicU64,
    response_body: AtomicU64,
    /// Reflected credentials masked in response bodies.
    body_redactions: AtomicU64,
    /// By [`SpliceKind::slot`], then sent (client to upstream) and received.
    spliced: [[AtomicU64; 2]; 2],
    /// By [`ConnectOutcome::slot`].
    connect: [Histogram; 3],
    response_head: Histogram,
    /// By [`UpstreamProtocol::slot`].
    upstream_open: [AtomicI64; 2],
}

impl Traffic {
    /// Every counter at zero (for [`TRAFFIC`], and tests that want their own).
    pub const fn new() -> Self {
        Traffic {
            request_body: AtomicU64::new(0),
            response_body: AtomicU64::new(0),
            body_redactions: AtomicU64::new(0),
            spliced: [const { [const { AtomicU64::new(0) }; 2] }; 2],
            connect: [const { Histogram::new(&TRAFFIC_BUCKETS) }; 3],
            response_head: Histogram::new(&TRAFFIC_BUCKETS),
            upstream_open: [const { AtomicI64::new(0) }; 2],
        }
    }

    /// Adds `n` request body bytes handed to an upstream connection.
    #[inline]
    pub fn request_body_sent(&self, n: u64) {
        self.request_body.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` response body bytes handed to a client connection.
    #[inline]
    pub fn response_body_sent(&self, n: u64) {
        self.response_body.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` reflected credentials masked in a response body (the
    /// `secrets` transform's scrub).
    #[inline]
    pub fn body_redacted(&self, n: u64) {
        self.body_redactions.fetch_add(n, Ordering::Relaxed);
    }

    /// Reflected credentials masked in response bodies so far.
    pub fn body_redactions(&self) -> u64 {
        self.body_redactions.load(Ordering::Relaxed)
    }

    /// The splice counter of `kind` in one direction (`upstream`: bytes
    /// read from the client and sent upstream; else the other way), for a
    /// splice to add to as it reads.
    pub fn spliced_counter(&self, kind: SpliceKind, upstream: bool) -> &AtomicU64 {
        &self.spliced[kind.slot()][usize::from(!upstream)]
    }

    /// Counts one upstream dial (TCP connect plus TLS handshake) that took `took`.
    pub fn connected(&self, outcome: ConnectOutcome, took: Duration) {
        self.connect[outcome.slot()].observe(took);
    }

    /// Counts one upstream response head that came `took` after the
    /// exchange began its upstream leg.
    pub fn response_head(&self, took: Duration) {
        self.response_head.observe(took);
    }

    /// One more open upstream HTTP connection of `protocol`, until the
    /// returned guard drops.
    pub fn upstream_opened(&'static self, protocol: UpstreamProtocol) -> UpstreamOpen {
        self.upstream_open[protocol.slot()].fetch_add(1, Ordering::Relaxed);
        UpstreamOpen {
            traffic: self,
            protocol,
        }
    }

    /// Request body bytes handed to upstream connections so far.
    pub fn request_body_bytes(&self) -> u64 {
        self.request_body.load(Ordering::Relaxed)
    }

    /// Response body bytes handed to client connections so far.
    pub fn response_body_bytes(&self) -> u64 {
        self.response_body.load(Ordering::Relaxed)
    }

    /// Bytes `kind` moved so far: `(sent, received)`.
    pub fn spliced_bytes(&self, kind: SpliceKind) -> (u64, u64) {
        let [sent, received] = &self.spliced[kind.slot()];
        (
            sent.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
        )
    }

    /// The connect histogram of `outcome`.
    pub fn connect_histogram(&self, outcome: ConnectOutcome) -> &Histogram {
        &self.connect[outcome.slot()]
    }

    /// The response-head histogram.
    pub fn response_head_histogram(&self) -> &Histogram {
        &self.response_head
    }

    /// Upstream HTTP connections of `protocol` open now.
    pub fn upstream_connections(&self, protocol: UpstreamProtocol) -> i64 {
        self.upstream_open[protocol.slot()].load(Ordering::Relaxed)
    }
}

impl Default for Traffic {
    fn default() -> Self {
        Self::new()
    }
}

/// An open upstream HTTP connection, counted until dropped.
pub struct UpstreamOpen {
    traffic: &'static Traffic,
    protocol: UpstreamProtocol,
}

impl Drop for UpstreamOpen {
    fn drop(&mut self) {
        self.traffic.upstream_open[self.protocol.slot()].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_directions_and_kinds_are_counted_apart() {
        let t = Traffic::new();
        t.spliced_counter(SpliceKind::WebSocket, true)
            .fetch_add(5, Ordering::Relaxed);
        t.spliced_counter(SpliceKind::WebSocket, false)
            .fetch_add(7, Ordering::Relaxed);
        t.spliced_counter(SpliceKind::Passthrough, false)
            .fetch_add(11, Ordering::Relaxed);
        assert_eq!(t.spliced_bytes(SpliceKind::WebSocket), (5, 7));
        assert_eq!(t.spliced_bytes(SpliceKind::Passthrough), (0, 11));
    }

    #[test]
    fn an_open_connection_is_counted_until_its_guard_drops() {
        static T: Traffic = Traffic::new();
        let a = T.upstream_opened(UpstreamProtocol::Http2);
        let b = T.upstream_opened(UpstreamProtocol::Http2);
        assert_eq!(T.upstream_connections(UpstreamProtocol::Http2), 2);
        assert_eq!(T.upstream_connections(UpstreamProtocol::Http1), 0);
        drop(a);
        drop(b);
        assert_eq!(T.upstream_connections(UpstreamProtocol::Http2), 0);
    }
}
