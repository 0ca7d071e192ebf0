//! Bounded free-text labels, and counter and gauge families read from other
//! modules at scrape time.

use std::collections::HashSet;
use std::fmt;
use std::sync::RwLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{CounterSourceFn, MAX_LABEL_LEN, MAX_LABEL_VALUES};

/// Caps a free-text label: at most [`MAX_LABEL_VALUES`] distinct values of at
/// most [`MAX_LABEL_LEN`] bytes; anything beyond becomes `other`.
#[derive(Default)]
pub(super) struct BoundedLabel {
    seen: RwLock<HashSet<String>>,
}

impl BoundedLabel {
    pub(super) fn admit(&self, v: &str) -> String {
        let mut end = v.len().min(MAX_LABEL_LEN);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        let v = &v[..end];
        if self
            .seen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(v)
        {
            return v.to_string();
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() < MAX_LABEL_VALUES {
            seen.insert(v.to_string());
            v.to_string()
        } else {
            "other".to_string()
        }
    }
}

/// A family whose series a callback reads at scrape time.
pub(super) struct CallbackSource {
    pub(super) name: String,
    pub(super) help: String,
    pub(super) labels: Vec<String>,
    pub(super) read: CounterSourceFn,
    /// A gauge rather than a counter.
    pub(super) gauge: bool,
}

impl fmt::Debug for CallbackSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Collector for CallbackSource {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let samples = (self.read)();
        let kind = if self.gauge {
            MetricType::Gauge
        } else {
            MetricType::Counter
        };
        let mut metric = encoder.encode_descriptor(&self.name, &self.help, None, kind)?;
        let gauge = self.gauge;
        if self.labels.is_empty() {
            // One series without labels (an empty label set would print `{}`).
            return match samples.into_iter().find(|(l, _)| l.is_empty()) {
                Some((_, v)) => encode_value(gauge, v, metric),
                None => Ok(()),
            };
        }
        for (values, v) in samples {
            if values.len() != self.labels.len() {
                continue;
            }
            let set: Vec<(&str, &str)> = self
                .labels
                .iter()
                .map(String::as_str)
                .zip(values.iter().map(String::as_str))
                .collect();
            encode_value(gauge, v, metric.encode_family(&set)?)?;
        }
        Ok(())
    }
}

/// One series' value, as a gauge or a counter.
fn encode_value(gauge: bool, v: u64, into: MetricEncoder<'_>) -> Result<(), fmt::Error> {
    if gauge {
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(into)
    } else {
        ConstCounter::new(v).encode(into)
    }
}
