//! iron-proxy: an egress-control proxy for untrusted workloads.
//!
//! See `ARCHITECTURE.md` for the data flow. `main.rs` is a thin CLI over [`run`].

pub mod audit;
pub mod body;
pub mod cli;
pub mod exchange;
pub mod listen;
pub mod ops;
pub mod pipeline;
pub mod rules;
pub mod state;
pub mod transforms;
pub mod upgrade;
pub mod upstream;
