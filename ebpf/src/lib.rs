//! iron-proxy's eBPF object, compiled from C by `build.rs`.
