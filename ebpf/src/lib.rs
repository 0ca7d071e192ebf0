//! iron-proxy's eBPF programs, compiled from C (`src/*.bpf.c`) by `build.rs`
//! and embedded here.
//!
//! Each source file is its own object. The objects share their maps by pinning
//! them by name (`LIBBPF_PIN_BY_NAME`): the loader points every object at the
//! same pin directory, so the first creates the maps and the rest reuse them.

/// One compiled BPF object.
#[derive(Debug, Clone, Copy)]
pub struct Object {
    /// The source file stem, e.g. `connect` for `src/connect.bpf.c`.
    pub name: &'static str,
    /// The ELF object, aligned for aya's parser.
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/objects.rs"));

/// The object built from `src/<name>.bpf.c`.
pub fn object(name: &str) -> Option<&'static Object> {
    OBJECTS.iter().find(|o| o.name == name)
}

#[cfg(test)]
mod tests;
