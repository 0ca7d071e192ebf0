//! iron-proxy: an egress-control proxy for untrusted workloads.

pub mod config;
pub mod rules;
pub mod template;
