//! End-to-end tests against the real binary. The harness lives in `tests/src/` (crate
//! `iron_proxy_tests`); each module here is one area. Run as root:
//! `cargo test -p iron-proxy-tests --test e2e`.

mod backstop;
mod bypass;
mod clients;
mod foundation;
mod grpc_transform;
mod harness_selftest;
mod intercept;
mod judge;
mod mcp;
mod nftables;
mod ops;
mod secrets;
mod smoke;
mod tls;
