//! Compiles `src/*.bpf.c` with clang into BPF objects in `OUT_DIR`, writes
//! `objects.rs` listing them for `src/lib.rs`, and checks that the C header
//! `include/iron_common.h` matches the Rust types of `ebpf-common`: it
//! generates static assertions (sizes, field offsets, constants) from the Rust
//! side and compiles them against the header, so any drift fails the build.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

const CLANG_HINT: &str =
    "clang is needed to build iron-proxy's eBPF programs: apt-get install clang llvm libbpf-dev";

fn main() -> Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=CLANG");
    check_clang(&clang)?;

    let include = manifest.join("include");
    let mut flags = vec![
        "-O2".to_owned(),
        "-g".to_owned(),
        "-target".to_owned(),
        "bpf".to_owned(),
        "-Wall".to_owned(),
        "-Werror".to_owned(),
        format!("-I{}", include.display()),
    ];
    if let Some(dir) = multiarch_include()? {
        flags.push(format!("-I{}", dir.display()));
    }

    for header in sorted_files(&include, ".h")? {
        println!("cargo:rerun-if-changed={}", header.display());
    }
    println!("cargo:rerun-if-changed={}", include.display());
    let src = manifest.join("src");
    println!("cargo:rerun-if-changed={}", src.display());

    check_layout(&clang, &flags, &out)?;

    let mut listing = String::from("/// Every program object, by source file stem.\n");
    listing.push_str("pub const OBJECTS: &[Object] = &[\n");
    for source in sorted_files(&src, ".bpf.c")? {
        println!("cargo:rerun-if-changed={}", source.display());
        let stem = source
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .context("source name")?
            .to_owned();
        let object = out.join(format!("{stem}.bpf.o"));
        let status = Command::new(&clang)
            .args(&flags)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .with_context(|| format!("running {clang} on {}", source.display()))?;
        if !status.success() {
            bail!("clang failed on {} ({status})", source.display());
        }
        writeln!(
            listing,
            "    Object {{ name: {stem:?}, bytes: aya::include_bytes_aligned!({:?}) }},",
            object.display().to_string()
        )?;
    }
    listing.push_str("];\n");
    std::fs::write(out.join("objects.rs"), listing)?;
    Ok(())
}

fn check_clang(clang: &str) -> Result<()> {
    match Command::new(clang).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!("`{clang} --version` failed ({}); {CLANG_HINT}", o.status),
        Err(e) => bail!("cannot run `{clang}` ({e}); {CLANG_HINT}"),
    }
}

/// Debian and Ubuntu keep `asm/types.h` under `/usr/include/<multiarch>`,
/// which a `-target bpf` compile does not search by itself.
fn multiarch_include() -> Result<Option<PathBuf>> {
    // The programs are built with the headers of the machine doing the build.
    let host = std::env::var("HOST")?;
    let arch = host.split('-').next().unwrap_or_default();
    let tuple = match arch {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64gc" | "riscv64" => "riscv64-linux-gnu",
        "powerpc64le" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "i686" | "i586" => "i386-linux-gnu",
        "armv7" | "arm" => "arm-linux-gnueabihf",
        other => {
            println!("cargo:warning=no multiarch include known for {other}");
            return Ok(None);
        }
    };
    let dir = Path::new("/usr/include").join(tuple);
    Ok(dir.is_dir().then_some(dir))
}

fn sorted_files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(suffix))
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Emits `_Static_assert`s for one struct: its size and each field's offset.
macro_rules! layout {
    ($out:ident, $c:literal, $ty:ty, [$($field:ident),* $(,)?]) => {{
        writeln!(
            $out,
            "_Static_assert(sizeof(struct {}) == {}, \"size of struct {} differs from Rust\");",
            $c, core::mem::size_of::<$ty>(), $c
        )?;
        $(
            writeln!(
                $out,
                "_Static_assert(__builtin_offsetof(struct {}, {}) == {}, \"offset of {}.{} differs from Rust\");",
                $c, stringify!($field), core::mem::offset_of!($ty, $field), $c, stringify!($field)
            )?;
        )*
    }};
}

/// Emits `_Static_assert`s for constants, and remembers their names.
macro_rules! constants {
    ($out:ident, $names:ident, [$($path:path => $name:ident),* $(,)?]) => {{
        $(
            writeln!(
                $out,
                "_Static_assert({} == {}, \"{} differs from Rust\");",
                stringify!($name), $path, stringify!($name)
            )?;
            $names.push(stringify!($name));
        )*
    }};
}

fn check_layout(clang: &str, flags: &[String], out: &Path) -> Result<()> {
    use ebpf_common::{class::*, counter::*, flags::*, limits::*, listener::*};
    use ebpf_common::{Config, DenyKey, Origin, Sender, Tuple};

    let mut c = String::from("#include \"iron_common.h\"\n");
    layout!(
        c,
        "iron_config",
        Config,
        [
            listen_v6,
            dns_v6,
            answer_v4,
            answer_v6,
            uid_range_start,
            uid_range_count,
            proxy_cgroup_id,
            listen_v4,
            dns_v4,
            proxy_tgid,
            proxy_uid,
            flags,
            listen_v4_port,
            listen_v6_port,
            dns_v4_port,
            dns_v6_port,
            pad,
        ]
    );
    layout!(c, "iron_deny_key", DenyKey, [prefixlen, addr]);
    layout!(
        c,
        "iron_origin",
        Origin,
        [cgroup_id, addr, pid, tgid, uid, gid, port, family, pad, comm,]
    );
    layout!(
        c,
        "iron_tuple",
        Tuple,
        [src_addr, dst_addr, src_port, dst_port, pad]
    );
    layout!(c, "iron_sender", Sender, [cgroup_id, uid, pad]);

    let mut names: Vec<&str> = Vec::new();
    constants!(c, names, [
        IRON_CNT_REDIRECTED => IRON_CNT_REDIRECTED,
        IRON_CNT_DENIED => IRON_CNT_DENIED,
        IRON_CNT_UDP_REFUSED => IRON_CNT_UDP_REFUSED,
        IRON_CNT_DNS_REDIRECTED => IRON_CNT_DNS_REDIRECTED,
        IRON_CNT_RAW_REFUSED => IRON_CNT_RAW_REFUSED,
        IRON_CNT_PROXY_EXEMPT => IRON_CNT_PROXY_EXEMPT,
        IRON_CNT_TUPLE_RECORDED => IRON_CNT_TUPLE_RECORDED,
        IRON_CNT_ORIGDST_ANSWERED => IRON_CNT_ORIGDST_ANSWERED,
        IRON_CNT_UNCONFIGURED => IRON_CNT_UNCONFIGURED,
        IRON_CNT_BACKSTOP_DROPPED => IRON_CNT_BACKSTOP_DROPPED,
        IRON_CNT_FOREIGN_LISTENER => IRON_CNT_FOREIGN_LISTENER,
        IRON_CNT_MAX => IRON_CNT_MAX,
        IRON_CLASS_WORKLOAD => IRON_CLASS_WORKLOAD,
        IRON_CLASS_PROXY => IRON_CLASS_PROXY,
        IRON_F_CONFIGURED => IRON_F_CONFIGURED,
        IRON_F_LISTEN_V6 => IRON_F_LISTEN_V6,
        IRON_F_DNS_V4 => IRON_F_DNS_V4,
        IRON_F_DNS_V6 => IRON_F_DNS_V6,
        IRON_F_UID_FILTER => IRON_F_UID_FILTER,
        IRON_F_PROXY_UID => IRON_F_PROXY_UID,
        IRON_F_ANSWER_V4 => IRON_F_ANSWER_V4,
        IRON_F_ANSWER_V6 => IRON_F_ANSWER_V6,
        IRON_F_LISTENER_PRIORITY => IRON_F_LISTENER_PRIORITY,
        IRON_F_DNS_LISTENER_PRIORITY => IRON_F_DNS_LISTENER_PRIORITY,
        IRON_LISTENER_PRIORITY => IRON_LISTENER_PRIORITY,
        IRON_CFG_SLOTS => IRON_CFG_SLOTS,
        IRON_DENY_MAX => IRON_DENY_MAX,
        IRON_UIDS_MAX => IRON_UIDS_MAX,
        IRON_UID_RANGES => IRON_UID_RANGES,
        IRON_ORIGINS_MAX => IRON_ORIGINS_MAX,
        IRON_COOKIE_ORIGINS_MAX => IRON_COOKIE_ORIGINS_MAX,
        IRON_DNS_SENDERS_MAX => IRON_DNS_SENDERS_MAX,
    ]);

    // Every constant the header defines must be checked above.
    let header_path = flags
        .iter()
        .find_map(|f| f.strip_prefix("-I"))
        .map(|dir| Path::new(dir).join("iron_common.h"))
        .context("include dir")?;
    let header = std::fs::read_to_string(&header_path)
        .with_context(|| format!("reading {}", header_path.display()))?;
    for line in header.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("#define") {
            if let Some(name) = words.next() {
                let is_value = words.next().is_some();
                if is_value && !names.contains(&name) {
                    bail!("{name} is defined in iron_common.h but not in ebpf-common");
                }
            }
        }
    }

    let file = out.join("layout_check.c");
    std::fs::write(&file, c)?;
    let status = Command::new(clang)
        .args(flags)
        .arg("-fsyntax-only")
        .arg(&file)
        .status()
        .with_context(|| format!("running {clang} on {}", file.display()))?;
    if !status.success() {
        bail!("iron_common.h and ebpf-common have drifted (see the assertion above)");
    }
    Ok(())
}
