//! Orders the release binary's functions at link time.
//!
//! `link-order.txt` lists the functions a benchmark run executes: those that
//! run while serving, hottest first, then those that ran only during start-up
//! (`cargo xtask link-order` writes it). The linker places them together at
//! the start of the code, so the code a running proxy touches fills about 3
//! MiB of pages instead of being spread over most of the 14 MB: the kernel
//! maps code in 64 KiB fault-around blocks, and scattered functions pull
//! their neighbours in (docs/benchmarks.md, rounds 6 and 7). Once the proxy
//! has released its start-up pages (`resident.rs`) it maps back mostly the
//! first part. New functions go after the listed ones.
//!
//! Two linker inputs carry the list. A linker script (`build/link_script.rs`)
//! puts the listed functions in an output section before `.text`, matching
//! section names with crate hashes as wildcards, so the order survives a
//! dependency change that renames every function. `--symbol-ordering-file`
//! with the exact names orders what the script cannot match: assembly
//! functions that share one `.text` section, placed first in `.text`.
//!
//! Applied only where the linker is known to be lld, which reads both:
//! release builds for x86_64-unknown-linux-gnu, where rustc links with its own
//! rust-lld. `IRON_PROXY_LINK_ORDER=0` turns it off (for another linker).

use std::env;
use std::path::{Path, PathBuf};

#[path = "build/link_script.rs"]
mod link_script;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-changed=build/link_script.rs");
    println!("cargo:rerun-if-env-changed=IRON_PROXY_LINK_ORDER");
    let target = env::var("TARGET").unwrap_or_default();
    let profile = env::var("PROFILE").unwrap_or_default();
    let disabled = env::var("IRON_PROXY_LINK_ORDER").is_ok_and(|v| v == "0");
    if disabled || profile != "release" || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let file = Path::new(&dir).join("link-order.txt");
    let Ok(list) = std::fs::read_to_string(&file) else {
        return;
    };
    let (script, count) = link_script::script(&list);
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default()).join("link-order.ld");
    if count > 0 {
        if let Err(e) = std::fs::write(&out, script) {
            panic!("writing {}: {e}", out.display());
        }
        println!(
            "cargo:rustc-link-arg-bin=iron-proxy=-Wl,-T,{}",
            out.display()
        );
    }
    println!(
        "cargo:rustc-link-arg-bin=iron-proxy=-Wl,--symbol-ordering-file={}",
        file.display()
    );
    println!("cargo:rustc-link-arg-bin=iron-proxy=-Wl,--no-warn-symbol-ordering");
}
