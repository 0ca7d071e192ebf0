//! iron-proxy: an egress-control proxy for untrusted workloads.
//!
//! See `ARCHITECTURE.md` for the data flow. `main.rs` is a thin CLI over [`run`].

pub mod audit;
pub mod body;
pub mod cli;
pub mod exchange;
pub mod init;
pub mod listen;
pub mod pipeline;
pub mod rules;
pub mod state;
pub mod summary;
pub mod transforms;
pub mod upgrade;
pub mod upstream;
pub mod app;
pub mod cmd;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
