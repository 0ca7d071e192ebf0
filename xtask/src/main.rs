//! Project automation.
//!
//! - `cargo xtask package [--check]`: builds `target/package/*.deb` and `*.rpm`
//!   from the release binary, the systemd unit and the packaged config; with
//!   `--check` also runs lintian, `rpm -qpl`, `systemd-analyze verify` and an
//!   install/purge round trip of the .deb on this machine.
//! - `cargo xtask action-test`: runs the GitHub Action's simulated-runner test.
//! - `cargo xtask bench [--quick]`: iron-proxy against direct and peer proxies
//!   (see docs/benchmarks.md); results in `target/bench/`.

mod bench;
mod check;
mod package;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the .deb and .rpm packages into target/package.
    Package {
        /// Use this binary instead of building iron-proxy.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Cargo profile to build with (`release`, or `dev` to reuse a debug build).
        #[arg(long, default_value = "release")]
        profile: String,
        /// Output directory (default: <workspace>/target/package).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Also run lintian, rpm -qpl, systemd-analyze verify and a dpkg
        /// install/purge round trip (root only); exit non-zero on any failure.
        #[arg(long)]
        check: bool,
        /// With --check: skip running the installed binary's `validate`
        /// (for a stand-in --binary that is not iron-proxy).
        #[arg(long)]
        no_validate: bool,
    },
    /// Run packaging/github-action/test.sh (simulated runner; root only).
    ActionTest {
        /// The .deb to install (default: build one with `package`).
        #[arg(long, value_name = "PATH")]
        deb: Option<PathBuf>,
    },
    /// Benchmark iron-proxy against direct and peer proxies (docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// Profile iron-proxy under callgrind and write proxy/link-order.txt, the
    /// function order for release links (docs/benchmarks.md, round 6).
    LinkOrder(bench::link_order::LinkOrderArgs),
    /// The bench's load client inside a cgroup (run by `bench`, not by hand).
    #[command(hide = true)]
    BenchClient(bench::ClientArgs),
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Cmd::Package {
            binary,
            profile,
            out,
            check,
            no_validate,
        } => {
            let out = out.unwrap_or_else(|| target_dir(&root).join("package"));
            let built = package::build(&root, binary.as_deref(), &profile, &out)?;
            println!("wrote {}", built.deb.display());
            println!("wrote {}", built.rpm.display());
            if check {
                check::run(&root, &built, !no_validate)?;
                println!("package checks passed");
            }
            Ok(())
        }
        Cmd::ActionTest { deb } => {
            let deb = match deb {
                Some(d) => d,
                None => {
                    let out = target_dir(&root).join("package");
                    package::build(&root, None, "release", &out)?.deb
                }
            };
            let script = root.join("packaging/github-action/test.sh");
            let status = std::process::Command::new("bash")
                .arg(&script)
                .arg(&deb)
                .status()
                .with_context(|| format!("running {}", script.display()))?;
            if !status.success() {
                bail!("{} failed ({status})", script.display());
            }
            Ok(())
        }
        Cmd::Bench(args) => bench::main(&root, &target_dir(&root), args),
        Cmd::LinkOrder(args) => bench::link_order::main(&root, &target_dir(&root), args),
        Cmd::BenchClient(args) => bench::client_main(args),
    }
}

/// The cargo target directory (honours CARGO_TARGET_DIR).
fn target_dir(root: &std::path::Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}
