//! Operations: operational log lines ([`logs`]), the management API
//! (reload, status), Prometheus metrics with health and readiness, OTLP
//! export of audit records, and process lifecycle (signals, graceful drain,
//! `sd_notify`).
//!
//! Nothing here is on the request path except two [`crate::audit::AuditObserver`]s
//! ([`metrics::MetricsObserver`] and [`otel::OtelExporter`]), both of which
//! only touch atomics or a bounded queue.

pub mod fd_limit;
pub mod log_file;
pub mod logs;
pub mod management;
pub mod metrics;
pub mod otel;
mod serve;
pub mod signals;
pub mod warn_every;

#[cfg(test)]
mod testutil;

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds a listener for `metrics.listen` or `management.listen`. The
/// unspecified IPv6 address (`:port` in config) also accepts IPv4.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        sock.set_only_v6(false)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(128)?;
    TcpListener::from_std(sock.into())
}

pub use management::{ApiKey, ReloadController, ReloadSummary, Reloader, Trigger};
pub use metrics::{Metrics, MetricsObserver, ReadyFn};
pub use otel::{OtelExporter, OtelSettings};
pub use signals::{Drain, ShutdownSignal};
