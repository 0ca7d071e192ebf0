//! iron-proxy: an egress-control proxy for untrusted workloads.

pub mod intercept;
pub mod rules;
