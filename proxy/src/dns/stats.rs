//! Per-outcome query counters of the DNS server, read by the metrics exporter.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// What happened to one query; every query counts exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered with the proxy's address (or an empty NOERROR).
    Intercepted,
    /// Forwarded to the upstream and answered as it answered.
    Passthrough,
    /// Answered from a static record (a CNAME to a passthrough or intercepted
    /// target still counts here).
    Record,
    /// Refused or rejected without lookup: not a plain query, several
    /// questions, non-IN class, zone transfer, unsupported EDNS version.
    Refused,
    /// A passthrough query that got no usable upstream answer (SERVFAIL).
    Failed,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Intercepted => "intercepted",
            Outcome::Passthrough => "passthrough",
            Outcome::Record => "record",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        })
    }
}

/// Live counters, one per outcome.
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Queries answered with the proxy's address or an empty NOERROR.
    pub intercepted: AtomicU64,
    /// Queries forwarded to the upstream resolver and answered.
    pub passthrough: AtomicU64,
    /// Queries answered from `dns.records`.
    pub record: AtomicU64,
    /// Queries refused without lookup.
    pub refused: AtomicU64,
    /// Passthrough queries that failed (upstream timeout or error → SERVFAIL).
    pub failed: AtomicU64,
    /// UDP queries dropped unanswered: their client was over its share
    /// while the server was behind (`super::udp_fair`). Not an outcome of
    /// [`Outcome`]: these are never looked at.
    pub shed: AtomicU64,
    /// UDP queries dropped unanswered and TCP connections closed unread:
    /// their client is outside `proxy.client_cidrs` (`crate::client_acl`).
    /// Not an outcome of [`Outcome`] either.
    pub client_not_allowed: AtomicU64,
}

/// A point-in-time copy of [`DnsStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DnsStatsSnapshot {
    /// See [`DnsStats::intercepted`].
    pub intercepted: u64,
    /// See [`DnsStats::passthrough`].
    pub passthrough: u64,
    /// See [`DnsStats::record`].
    pub record: u64,
    /// See [`DnsStats::refused`].
    pub refused: u64,
    /// See [`DnsStats::failed`].
    pub failed: u64,
    /// See [`DnsStats::shed`].
    pub shed: u64,
    /// See [`DnsStats::client_not_allowed`].
    pub client_not_allowed: u64,
}

impl DnsStats {
    pub(crate) fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Intercepted => &self.intercepted,
            Outcome::Passthrough => &self.passthrough,
            Outcome::Record => &self.record,
            Outcome::Refused => &self.refused,
            Outcome::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> DnsStatsSnapshot {
        DnsStatsSnapshot {
            intercepted: self.intercepted.load(Ordering::Relaxed),
            passthrough: self.passthrough.load(Ordering::Relaxed),
            record: self.record.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            client_not_allowed: self.client_not_allowed.load(Ordering::Relaxed),
        }
    }
}
