//! iron-proxy: an egress-control proxy for untrusted workloads.

pub mod rules;
pub mod tls;
