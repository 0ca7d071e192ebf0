//! Compiles `src/*.bpf.c` with clang (filled in by the interception work).
fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=include");
}
