//! Map key and value layouts shared by the eBPF programs in `ebpf/` and the
//! userspace loader. The C header `ebpf/include/iron_common.h` mirrors these
//! types; a test in `ebpf` fails when the two drift.
#![no_std]
