//! iron-proxy: an egress-control proxy for untrusted workloads.

pub mod dns;
pub mod rules;
