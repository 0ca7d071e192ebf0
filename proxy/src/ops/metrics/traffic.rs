//! The data plane's counters ([`crate::traffic`]): bytes, upstream connect
//! and response-head times, open upstream connections; read at scrape time.
//! Also the gauges read from the data plane's state: the connection cap in
//! effect and the idle upstream pool.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::MetricsError;
use crate::traffic::{ConnectOutcome, SpliceKind, Traffic, UpstreamProtocol};

/// The names this collector exports (without prefix or `_total`), so that
/// no callback source takes one of them.
pub(super) const NAMES: [&str; 7] = [
    "request_body_bytes",
    "response_body_bytes",
    "spliced_bytes",
    "upstream_connect_duration_seconds",
    "upstream_response_header_duration_seconds",
    "upstream_connections",
    "response_body_redactions",
];

/// Encodes a [`Traffic`] (the process's, or a test's own).
pub(super) struct TrafficCollector(pub(super) &'static Traffic);

impl fmt::Debug for TrafficCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TrafficCollector")
    }
}

impl Collector for TrafficCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let t = self.0;
        for (name, help, value) in [
            (
                NAMES[0],
                "HTTP request body bytes handed to upstream connections (after the transforms)",
                t.request_body_bytes(),
            ),
            (
                NAMES[1],
                "HTTP response body bytes handed to client connections (the proxy's own answers included)",
                t.response_body_bytes(),
            ),
            (
                NAMES[6],
                "Reflected credentials (values the secrets transform put in the request) masked in \
                 response bodies",
                t.body_redactions(),
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }

        let mut metric = encoder.encode_descriptor(
            NAMES[2],
            "Bytes carried by splices (WebSockets, sni-only passthrough), by kind and direction \
             (sent: client to upstream; received: upstream to client)",
            None,
            MetricType::Counter,
        )?;
        for kind in SpliceKind::ALL {
            let (sent, received) = t.spliced_bytes(kind);
            for (direction, v) in [("sent", sent), ("received", received)] {
                let labels = [("kind", kind.label()), ("direction", direction)];
                ConstCounter::new(v).encode(metric.encode_family(&labels)?)?;
            }
        }

        let mut metric = encoder.encode_descriptor(
            NAMES[3],
            "Upstream dials: TCP connect plus TLS handshake (name resolution excluded), by outcome",
            None,
            MetricType::Histogram,
        )?;
        for outcome in ConnectOutcome::ALL {
            let labels = [("outcome", outcome.label())];
            let snap = t.connect_histogram(outcome).snapshot();
            super::histogram::encode(metric.encode_family(&labels)?, &snap)?;
        }

        let metric = encoder.encode_descriptor(
            NAMES[4],
            "Time from the start of an exchange's upstream leg (a connect included, when it dials) \
             to the upstream's response head",
            None,
            MetricType::Histogram,
        )?;
        super::histogram::encode(metric, &t.response_head_histogram().snapshot())?;

        let mut metric = encoder.encode_descriptor(
            NAMES[5],
            "Upstream HTTP connections open now (held, idle in a pool, or carrying a WebSocket), by protocol",
            None,
            MetricType::Gauge,
        )?;
        for protocol in UpstreamProtocol::ALL {
            let labels = [("protocol", protocol.label())];
            ConstGauge::new(t.upstream_connections(protocol))
                .encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl super::Metrics {
    /// `iron_proxy_max_connections` (`proxy.max_connections`, absent when
    /// there is no cap), `iron_proxy_upstream_idle_connections` (the HTTP/1
    /// connections waiting in the shared idle pool),
    /// `iron_proxy_upstream_spare_connections` (those the spare HTTP/2
    /// clients hold) and `iron_proxy_buffered_body_bytes` (what the bodies
    /// held whole take of `proxy.max_buffered_bytes`), from the data
    /// plane's state.
    pub fn register_connection_gauges(
        &self,
        shared: &std::sync::Arc<crate::state::Shared>,
    ) -> Result<(), MetricsError> {
        let limit = shared.client_limit.clone();
        self.register_gauge_source(
            "max_connections",
            "proxy.max_connections: the cap on client connections open in all (absent: no cap)",
            &[],
            Box::new(move || {
                limit
                    .max_total()
                    .map(|m| (Vec::new(), u64::from(m.get())))
                    .into_iter()
                    .collect()
            }),
        )?;
        let upstream = shared.upstream.clone();
        self.register_gauge_source(
            "upstream_idle_connections",
            "Upstream HTTP/1 connections idle in the shared pool, ready for the next request",
            &[],
            Box::new(move || vec![(Vec::new(), upstream.idle_connections() as u64)]),
        )?;
        let upstream = shared.upstream.clone();
        self.register_gauge_source(
            "upstream_spare_connections",
            "Upstream connections held by the HTTP/2 clients of ended client connections, kept \
             for the next client connection to the same host",
            &[],
            Box::new(move || vec![(Vec::new(), upstream.spare_connections() as u64)]),
        )?;
        self.register_gauge_source(
            "buffered_body_bytes",
            "Bytes of request and response bodies held whole now, against proxy.max_buffered_bytes",
            &[],
            Box::new(|| vec![(Vec::new(), crate::body::budget::global().used() as u64)]),
        )
    }
}
