//! [`crate::histogram`]'s lock-free histograms as `prometheus_client`
//! metrics: one shared handle per labelled series of a family, and the
//! encoding of a snapshot.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::histogram::{Buckets, Histogram, HistogramSnapshot};

/// One series of a histogram family: clones share the counts.
#[derive(Clone, Debug)]
pub(super) struct SharedHistogram(Arc<Histogram>);

impl SharedHistogram {
    /// An empty series over `buckets`.
    pub(super) fn new(buckets: &'static Buckets) -> Self {
        SharedHistogram(Arc::new(Histogram::new(buckets)))
    }

    /// Counts one observation of `took`.
    #[inline]
    pub(super) fn observe(&self, took: Duration) {
        self.0.observe(took);
    }
}

impl TypedMetric for SharedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SharedHistogram {
    fn encode(&self, encoder: MetricEncoder) -> fmt::Result {
        encode(encoder, &self.0.snapshot())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Writes `snap` as one histogram series.
pub(super) fn encode(mut metric: MetricEncoder<'_>, snap: &HistogramSnapshot) -> fmt::Result {
    metric.encode_histogram::<NoLabelSet>(snap.sum, snap.count, &snap.buckets, None)
}
