//! Builds the .deb (with dpkg-deb) and the .rpm (with rpmbuild) from one
//! staged file tree, so both packages carry exactly the same files.
//!
//! Layout of the payload:
//! - `/usr/bin/iron-proxy` (stripped)
//! - `/usr/lib/systemd/system/iron-proxy.service`
//! - `/etc/iron-proxy/proxy.yaml` (conffile; intercepts nothing)
//! - `/etc/logrotate.d/iron-proxy` (conffile)
//! - `/usr/share/man/man1/iron-proxy.1.gz` (from `docs/man/iron-proxy.1`)
//! - `/usr/share/doc/iron-proxy/` (copyright, changelog, guides)
//!
//! The maintainer scripts never enable or start the service.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Package name, as installed.
pub const NAME: &str = "iron-proxy";
/// Version of the workspace (xtask shares it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Maintainer shown in the packages.
const MAINTAINER: &str = "iron-proxy maintainers <maintainers@example.invalid>";
/// Docs shipped in /usr/share/doc/iron-proxy (relative to the workspace).
/// The operator's guides: install, run, read the log, write the config.
const DOCS: [&str; 12] = [
    "docs/deploy-bare-metal.md",
    "docs/github-actions.md",
    "docs/packaging.md",
    "docs/audit-log.md",
    "docs/operations.md",
    "docs/security.md",
    "docs/allowlist.md",
    "docs/secrets.md",
    "docs/dns.md",
    "docs/judge.md",
    "docs/mcp.md",
    "docs/grpc-transform.md",
];

/// What `build` produced.
pub struct Built {
    /// The Debian package.
    pub deb: PathBuf,
    /// The RPM package.
    pub rpm: PathBuf,
    /// The binary alone, `iron-proxy_<version>_linux_<arch>.tar.gz` (the
    /// release tarball the spec's install steps download).
    pub tarball: PathBuf,
    /// `SHA256SUMS` over every artifact, for `sha256sum -c`.
    pub sums: PathBuf,
    /// Files (absolute install paths) both packages must contain.
    pub files: Vec<String>,
}

/// Builds (or takes) the binary, stages the tree and writes both packages into `out`.
pub fn build(root: &Path, binary: Option<&Path>, profile: &str, out: &Path) -> Result<Built> {
    let binary = match binary {
        Some(b) => b.to_path_buf(),
        None => build_binary(root, profile)?,
    };
    if !binary.is_file() {
        bail!("binary {} does not exist", binary.display());
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let work = out.join("work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("cleaning {}", work.display()))?;
    }
    let stage = work.join("root");
    let files = stage_tree(root, &binary, &stage)?;
    let deb = build_deb(root, &stage, &work, out)?;
    let rpm = build_rpm(root, &stage, &work, out)?;
    let tarball = build_tarball(&stage, out)?;
    let sums = write_sums(
        out,
        &[
            &deb,
            &out.join(format!("{NAME}_{}.deb", deb_arch()?)),
            &rpm,
            &tarball,
        ],
    )?;
    Ok(Built {
        deb,
        rpm,
        tarball,
        sums,
        files,
    })
}

/// `iron-proxy_<version>_linux_<arch>.tar.gz` holding the stripped binary at
/// its top level (`tar -xzf ... -C /tmp` gives `/tmp/iron-proxy`).
fn build_tarball(stage: &Path, out: &Path) -> Result<PathBuf> {
    let tarball = out.join(format!("{NAME}_{VERSION}_linux_{}.tar.gz", deb_arch()?));
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
        .arg(&tarball)
        .arg("-C")
        .arg(stage.join("usr/bin"))
        .arg(NAME))?;
    Ok(tarball)
}

/// `SHA256SUMS` in `out` over `files` (by file name), as `sha256sum` writes it.
fn write_sums(out: &Path, files: &[&Path]) -> Result<PathBuf> {
    let mut cmd = Command::new("sha256sum");
    cmd.current_dir(out);
    for f in files {
        cmd.arg(f.file_name().context("artifact without a file name")?);
    }
    let output = cmd.output().context("running sha256sum")?;
    if !output.status.success() {
        bail!(
            "sha256sum failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let sums = out.join("SHA256SUMS");
    write(&sums, &output.stdout, 0o644)?;
    Ok(sums)
}

fn build_binary(root: &Path, profile: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).current_dir(root).args([
        "build",
        "-p",
        "iron-proxy",
        "--bin",
        "iron-proxy",
        "--profile",
        profile,
    ]))?;
    let dir = if profile == "dev" { "debug" } else { profile };
    Ok(crate::target_dir(root).join(dir).join("iron-proxy"))
}

fn install(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(dst: &Path, text: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(dst, text).with_context(|| format!("writing {}", dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn stage_tree(root: &Path, binary: &Path, stage: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut put = |rel: &str| {
        files.push(format!("/{rel}"));
        stage.join(rel)
    };
    let bin = put("usr/bin/iron-proxy");
    install(binary, &bin, 0o755)?;
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
        ])
        .arg(&bin))?;
    install(
        &root.join("systemd/iron-proxy.service"),
        &put("usr/lib/systemd/system/iron-proxy.service"),
        0o644,
    )?;
    install(
        &root.join("packaging/proxy.yaml"),
        &put("etc/iron-proxy/proxy.yaml"),
        0o644,
    )?;
    install(
        &root.join("packaging/logrotate"),
        &put("etc/logrotate.d/iron-proxy"),
        0o644,
    )?;
    let doc = "usr/share/doc/iron-proxy";
    install(
        &root.join("packaging/copyright"),
        &put(&format!("{doc}/copyright")),
        0o644,
    )?;
    for d in DOCS {
        let src = root.join(d);
        let name = Path::new(d)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(d);
        install(&src, &put(&format!("{doc}/{name}")), 0o644)?;
    }
    let man = fs::read(root.join("docs/man/iron-proxy.1")).context("reading the man page")?;
    write(
        &put("usr/share/man/man1/iron-proxy.1.gz"),
        &gzip(&man)?,
        0o644,
    )?;
    let changelog = gzip(changelog().as_bytes())?;
    write(&put(&format!("{doc}/changelog.gz")), &changelog, 0o644)?;
    // Every directory 0755 whatever the umask was.
    for entry in walk(stage)? {
        if entry.is_dir() {
            fs::set_permissions(&entry, fs::Permissions::from_mode(0o755))?;
        }
    }
    fs::set_permissions(stage, fs::Permissions::from_mode(0o755))?;
    Ok(files)
}

fn changelog() -> String {
    format!(
        "{NAME} ({VERSION}) unstable; urgency=medium\n\n  * Release {VERSION}.\n\n -- {MAINTAINER}  Mon, 01 Jun 2026 00:00:00 +0000\n"
    )
}

/// gzip -9n (no name, no timestamp: reproducible).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    child.stdin.take().context("gzip stdin")?.write_all(data)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn deb_arch() -> Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `Depends:` from dpkg-shlibdeps (needs a debian/control to run in).
fn shlib_depends(work: &Path, bin: &Path) -> Result<String> {
    let dir = work.join("shlibs");
    write(
        &dir.join("debian/control"),
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let out = Command::new("dpkg-shlibdeps")
        .current_dir(&dir)
        .args(["-O", "-e"])
        .arg(bin)
        .output()
        .context("running dpkg-shlibdeps")?;
    if !out.status.success() {
        bail!(
            "dpkg-shlibdeps failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .context("dpkg-shlibdeps printed no shlibs:Depends")
}

fn build_deb(root: &Path, stage: &Path, work: &Path, out: &Path) -> Result<PathBuf> {
    let tree = work.join("deb");
    run(Command::new("cp").args(["-a"]).arg(stage).arg(&tree))?;
    install(
        &root.join("packaging/deb/lintian-overrides"),
        &tree.join("usr/share/lintian/overrides/iron-proxy"),
        0o644,
    )?;
    for d in ["usr/share/lintian", "usr/share/lintian/overrides"] {
        fs::set_permissions(tree.join(d), fs::Permissions::from_mode(0o755))?;
    }
    let control = tree.join("DEBIAN");
    fs::create_dir_all(&control)?;
    fs::set_permissions(&control, fs::Permissions::from_mode(0o755))?;
    let arch = deb_arch()?;
    let depends = shlib_depends(work, &stage.join("usr/bin/iron-proxy"))?;
    let size_kib = walk(stage)?
        .iter()
        .filter_map(|p| p.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len().div_ceil(1024))
        .sum::<u64>();
    let text = format!(
        "Package: {NAME}\nVersion: {VERSION}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n\
         Installed-Size: {size_kib}\nDepends: {depends}\nRecommends: ca-certificates\nSection: net\nPriority: optional\n\
         Homepage: https://example.invalid/iron-proxy\n\
         Description: egress-control proxy for untrusted workloads\n \
         iron-proxy is a default-deny egress boundary for untrusted workloads on\n \
         Linux: host, method and path allowlists, credential injection at the\n \
         boundary, a JSON audit log, and eBPF interception of chosen cgroups or\n \
         users.\n .\n \
         Installing the package does not enable or start the service; run\n \
         `iron-proxy init` to configure it.\n"
    );
    write(&control.join("control"), text.as_bytes(), 0o644)?;
    write(
        &control.join("conffiles"),
        b"/etc/iron-proxy/proxy.yaml\n/etc/logrotate.d/iron-proxy\n",
        0o644,
    )?;
    for s in ["postinst", "prerm", "postrm"] {
        install(&root.join("packaging/deb").join(s), &control.join(s), 0o755)?;
    }
    let mut sums = String::new();
    for p in walk(&tree)? {
        if p.is_file() && !p.starts_with(&control) {
            let out = Command::new("md5sum")
                .arg(&p)
                .output()
                .context("running md5sum")?;
            let line = String::from_utf8_lossy(&out.stdout);
            let sum = line.split_whitespace().next().context("md5sum output")?;
            let rel = p.strip_prefix(&tree)?.display().to_string();
            sums.push_str(&format!("{sum}  {rel}\n"));
        }
    }
    write(&control.join("md5sums"), sums.as_bytes(), 0o644)?;
    let deb = out.join(format!("{NAME}_{VERSION}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&deb))?;
    // The same package under the name the GitHub Action's `version: latest`
    // downloads (`releases/latest/download/iron-proxy_<arch>.deb`): a release
    // publishes both.
    let latest = out.join(format!("{NAME}_{arch}.deb"));
    std::fs::copy(&deb, &latest).with_context(|| format!("writing {}", latest.display()))?;
    Ok(deb)
}

fn build_rpm(root: &Path, stage: &Path, work: &Path, out: &Path) -> Result<PathBuf> {
    let arch = std::env::consts::ARCH;
    let template = fs::read_to_string(root.join("packaging/rpm/iron-proxy.spec.in"))
        .context("reading the rpm spec template")?;
    let stage_abs = fs::canonicalize(stage)?;
    let spec = template
        .replace("@VERSION@", VERSION)
        .replace("@ARCH@", arch)
        .replace("@STAGE@", &stage_abs.display().to_string());
    let top = work.join("rpmbuild");
    let spec_path = top.join("SPECS/iron-proxy.spec");
    write(&spec_path, spec.as_bytes(), 0o644)?;
    let top_abs = fs::canonicalize(&top)?;
    run(Command::new("rpmbuild")
        .args(["-bb", "--quiet"])
        .arg("--define")
        .arg(format!("_topdir {}", top_abs.display()))
        .args(["--target", arch])
        .arg(&spec_path))?;
    let built = top
        .join("RPMS")
        .join(arch)
        .join(format!("{NAME}-{VERSION}-1.{arch}.rpm"));
    let rpm = out.join(built.file_name().context("rpm name")?);
    fs::copy(&built, &rpm).with_context(|| format!("copying {}", built.display()))?;
    Ok(rpm)
}

/// Runs a command, failing with its name when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
