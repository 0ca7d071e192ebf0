//! iron-proxy: an egress-control proxy for untrusted workloads.
//!
//! See `ARCHITECTURE.md` for the data flow. `main.rs` is a thin CLI over
//! [`cmd`], which starts an [`app::App`].

pub mod alloc;
pub mod app;
pub mod audit;
pub mod body;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod dns;
pub mod exchange;
#[cfg(test)]
mod h2_frames;
pub mod init;
pub mod intercept;
pub mod listen;
pub mod mcp;
pub mod ops;
pub mod pipeline;
pub mod read_cap;
pub mod resident;
pub mod rules;
pub mod secrets;
pub mod state;
pub mod summary;
pub mod template;
pub mod tls;
pub mod transforms;
pub mod upgrade;
pub mod upstream;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
