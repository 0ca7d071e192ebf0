//! Orders the release binary's functions at link time.
//!
//! `link-order.txt` lists the functions a benchmark run executes: those that
//! run while serving, hottest first, then those that ran only during start-up
//! (`cargo xtask link-order` writes it). lld places them together at the
//! start of `.text`, so the code a running proxy touches fills about 4 MiB of
//! pages instead of being spread over most of the 14 MB: the kernel maps code
//! in 64 KiB fault-around blocks, and scattered functions pull their
//! neighbours in (docs/benchmarks.md, rounds 6 and 7). Once the proxy has
//! released its start-up pages (`resident.rs`) it maps back mostly the first
//! part. Names the build no longer has are skipped; new functions go after
//! the listed ones.
//!
//! Applied only where the linker is known to be lld, which reads the option:
//! release builds for x86_64-unknown-linux-gnu, where rustc links with its own
//! rust-lld. `IRON_PROXY_LINK_ORDER=0` turns it off (for another linker).

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=IRON_PROXY_LINK_ORDER");
    let target = env::var("TARGET").unwrap_or_default();
    let profile = env::var("PROFILE").unwrap_or_default();
    let disabled = env::var("IRON_PROXY_LINK_ORDER").is_ok_and(|v| v == "0");
    if disabled || profile != "release" || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let file = Path::new(&dir).join("link-order.txt");
    if !file.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=iron-proxy=-Wl,--symbol-ordering-file={}",
        file.display()
    );
    println!("cargo:rustc-link-arg-bin=iron-proxy=-Wl,--no-warn-symbol-ordering");
}
