//! `cargo xtask package --check`: lintian (no errors), `rpm -qpl` (every file
//! listed, proxy.yaml a %config(noreplace) file, no script that enables or
//! starts the service), the release tarball (the binary alone, which runs) and
//! `sha256sum -c SHA256SUMS`, and an install/purge round trip of the .deb on this
//! machine: files appear, the man page renders with `man -l` and no
//! warnings, the installed unit passes `systemd-analyze verify`,
//! the shipped config passes `iron-proxy validate`, nothing is started, and
//! purge removes everything.
//!
//! The round trip refuses to run where iron-proxy is already installed or
//! /etc/iron-proxy exists, so it never touches a real installation.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::package::{Built, NAME};

/// Runs every check, failing on the first problem.
pub fn run(_root: &Path, built: &Built, validate: bool) -> Result<()> {
    lintian(&built.deb)?;
    rpm(&built.rpm, &built.files)?;
    tarball(built)?;
    install_round_trip(built, validate)?;
    Ok(())
}

/// The tarball holds the binary alone, which runs; `SHA256SUMS` verifies.
fn tarball(built: &Built) -> Result<()> {
    println!("== tar -tzf {}", built.tarball.display());
    let (ok, listing) = output(Command::new("tar").arg("-tzf").arg(&built.tarball))?;
    ensure!(
        ok && listing.trim() == NAME,
        "the tarball must hold {NAME} alone: {listing}"
    );
    let dir = tempdir_in_target(&built.tarball)?;
    let (ok, text) = output(
        Command::new("tar")
            .arg("-xzf")
            .arg(&built.tarball)
            .arg("-C")
            .arg(&dir),
    )?;
    ensure!(ok, "extracting {}: {text}", built.tarball.display());
    let (ok, version) = output(Command::new(dir.join(NAME)).arg("version"))?;
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(ok, "the extracted binary does not run: {version}");
    let out = built.sums.parent().context("SHA256SUMS has no directory")?;
    let (ok, text) = output(
        Command::new("sha256sum")
            .arg("-c")
            .arg("SHA256SUMS")
            .current_dir(out),
    )?;
    ensure!(ok, "sha256sum -c SHA256SUMS: {text}");
    print!("{text}");
    Ok(())
}

/// A fresh directory next to `beside` (inside the target directory).
fn tempdir_in_target(beside: &Path) -> Result<std::path::PathBuf> {
    let dir = beside
        .parent()
        .context("artifact has no directory")?
        .join("work/tarball-check");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn output(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

fn lintian(deb: &Path) -> Result<()> {
    println!("== lintian {}", deb.display());
    // lintian refuses to run as root without --allow-root.
    let (_, text) = output(
        Command::new("lintian")
            .args([
                "--allow-root",
                "--fail-on",
                "none",
                "--tag-display-limit",
                "0",
            ])
            .arg(deb),
    )?;
    print!("{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    ensure!(
        errors.is_empty(),
        "lintian reported {} error(s):\n{}",
        errors.len(),
        errors.join("\n")
    );
    // The man page ships in the package: any tag about it is a regression.
    let man: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("manual-page") || l.contains("manpage"))
        .collect();
    ensure!(
        man.is_empty(),
        "lintian complains about the man page:\n{}",
        man.join("\n")
    );
    Ok(())
}

fn rpm(rpm: &Path, files: &[String]) -> Result<()> {
    println!("== rpm -qpl {}", rpm.display());
    let (ok, list) = output(Command::new("rpm").arg("-qpl").arg(rpm))?;
    print!("{list}");
    ensure!(ok, "rpm -qpl failed");
    for f in files {
        ensure!(
            list.lines().any(|l| l == f),
            "{} is missing from the rpm",
            f
        );
    }
    let (ok, configs) = output(Command::new("rpm").arg("-qpc").arg(rpm))?;
    ensure!(
        ok && configs.lines().any(|l| l == "/etc/iron-proxy/proxy.yaml"),
        "proxy.yaml is not a config file in the rpm:\n{configs}"
    );
    // fflags: c = %config, n = noreplace, d = %doc.
    let (ok, flags) = output(
        Command::new("rpm")
            .args([
                "-qp",
                "--queryformat",
                "[%{FILENAMES} %{FILEFLAGS:fflags}\n]",
            ])
            .arg(rpm),
    )?;
    ensure!(ok, "rpm --queryformat failed");
    let yaml = flags
        .lines()
        .find(|l| l.starts_with("/etc/iron-proxy/proxy.yaml "))
        .context("proxy.yaml not in rpm flags")?;
    ensure!(
        yaml.contains('c') && yaml.contains('n'),
        "proxy.yaml must be %config(noreplace), flags: {yaml}"
    );
    no_autostart_scripts(
        &output(Command::new("rpm").args(["-qp", "--scripts"]).arg(rpm))?.1,
        "rpm",
    )?;
    Ok(())
}

fn no_autostart_scripts(scripts: &str, what: &str) -> Result<()> {
    for bad in [
        "systemctl enable",
        "systemctl start",
        "systemctl restart",
        "--now",
        "deb-systemd-invoke start",
    ] {
        ensure!(
            !scripts.contains(bad),
            "{what} maintainer scripts contain {bad:?}"
        );
    }
    Ok(())
}

/// Purges the package if the round trip fails half-way.
struct PurgeGuard {
    armed: bool,
}

impl Drop for PurgeGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = Command::new("dpkg").args(["--purge", NAME]).status();
        }
    }
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", NAME])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("installed"))
        .unwrap_or(false)
}

/// PIDs of running processes whose executable is /usr/bin/iron-proxy.
fn running_installed_binary() -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(exe) = std::fs::read_link(e.path().join("exe")) {
                if exe.to_string_lossy().starts_with("/usr/bin/iron-proxy") {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

fn nothing_started() -> Result<()> {
    let pids = running_installed_binary();
    ensure!(
        pids.is_empty(),
        "iron-proxy is running after install (pids {pids:?})"
    );
    for link in [
        "/etc/systemd/system/multi-user.target.wants/iron-proxy.service",
        "/sys/fs/bpf/iron-proxy",
    ] {
        ensure!(
            !Path::new(link).exists(),
            "{link} exists after install: something was enabled or started"
        );
    }
    Ok(())
}

fn install_round_trip(built: &Built, validate: bool) -> Result<()> {
    println!("== dpkg -i / dpkg --purge {}", built.deb.display());
    if !nix_is_root() {
        bail!("the install/purge check needs root");
    }
    if installed() || Path::new("/etc/iron-proxy").exists() {
        bail!("iron-proxy is already installed or /etc/iron-proxy exists; refusing to install/purge over it");
    }
    let mut guard = PurgeGuard { armed: true };
    let (ok, text) = output(Command::new("dpkg").arg("-i").arg(&built.deb))?;
    print!("{text}");
    ensure!(ok, "dpkg -i failed");
    for f in &built.files {
        ensure!(Path::new(f).exists(), "{f} missing after install");
    }
    let (_, conffiles) =
        output(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", NAME]))?;
    ensure!(
        conffiles.contains("/etc/iron-proxy/proxy.yaml"),
        "proxy.yaml is not a conffile: {conffiles}"
    );
    nothing_started()?;
    man_renders("/usr/share/man/man1/iron-proxy.1.gz")?;
    let deb_scripts = ["postinst", "prerm", "postrm"]
        .iter()
        .filter_map(|s| std::fs::read_to_string(format!("/var/lib/dpkg/info/{NAME}.{s}")).ok())
        .collect::<Vec<_>>()
        .join("\n");
    no_autostart_scripts(&deb_scripts, "deb")?;
    let (ok, text) = output(
        Command::new("systemd-analyze")
            .args(["verify", "/usr/lib/systemd/system/iron-proxy.service"]),
    )?;
    ensure!(ok, "systemd-analyze verify failed:\n{text}");
    if validate {
        // The shipped config names /etc/iron-proxy/ca.crt, which the operator makes
        // (`generate-ca`, `init`): without it `validate` rightly says the proxy would not
        // start. A CA made elsewhere stands in through IRON_TLS_CA_CERT/KEY, so that
        // /etc/iron-proxy holds only what the package put there (the purge check below).
        let ca = tempdir_in_target(&built.tarball)?.join("ca");
        let (ok, text) = output(
            Command::new("/usr/bin/iron-proxy")
                .args(["generate-ca", "-outdir"])
                .arg(&ca),
        )?;
        ensure!(ok, "generate-ca for the validate check: {text}");
        let (ok, text) = output(
            Command::new("/usr/bin/iron-proxy")
                .args(["validate", "-config", "/etc/iron-proxy/proxy.yaml"])
                .env("IRON_TLS_CA_CERT", ca.join("ca.crt"))
                .env("IRON_TLS_CA_KEY", ca.join("ca.key")),
        )?;
        let _ = std::fs::remove_dir_all(&ca);
        ensure!(ok, "the packaged proxy.yaml does not validate:\n{text}");
    }
    let (ok, text) = output(Command::new("dpkg").args(["--purge", NAME]))?;
    print!("{text}");
    ensure!(ok, "dpkg --purge failed");
    guard.armed = false;
    for f in &built.files {
        ensure!(!Path::new(f).exists(), "{f} still present after purge");
    }
    ensure!(
        !Path::new("/etc/iron-proxy").exists(),
        "/etc/iron-proxy still present after purge"
    );
    ensure!(!installed(), "package still installed after purge");
    Ok(())
}

/// `man -l` renders the installed page, and `man --warnings` has nothing to say.
fn man_renders(page: &str) -> Result<()> {
    let out = Command::new("man")
        .args(["--warnings", "-l", page])
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .context("running man (apt-get install man-db)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let warnings = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && text.contains("iron-proxy init") && warnings.trim().is_empty(),
        "man -l {page} did not render cleanly (status {}):\n{warnings}",
        out.status
    );
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
