//! Peer proxies: squid-openssl with ssl-bump and tinyproxy from Debian,
//! mitmproxy from PyPI in a virtualenv under the bench directory, and
//! hudsucker (a Rust MITM library on hyper and rustls) built from crates.io
//! (`xtask/hudsucker-peer`). Each is installed or built on first use and started in the foreground on a free loopback
//! port with a config written here. They log to /dev/null or to files in
//! their work directory, as iron-proxy's audit log goes to /dev/null.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::certs::UPSTREAM_NAME;
use super::load::Route;
use super::procstat::Watch;
use super::topo::{free_port, wait_listening, ChildGuard, Env, Running};

const CERTGEN: &str = "/usr/lib/squid/security_file_certgen";

/// Installs a Debian package when `binary` is missing.
pub fn ensure_apt(package: &str, binary: &str) -> Result<()> {
    if Path::new(binary).exists() {
        return Ok(());
    }
    eprintln!("bench: installing {package} (apt-get)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
    };
    if !install()?.success() {
        let _ = Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::null())
            .status();
        if !install()?.success() {
            bail!("apt-get install {package} failed");
        }
    }
    if !Path::new(binary).exists() {
        bail!("{package} installed but {binary} is missing");
    }
    Ok(())
}

/// Creates the virtualenv and installs mitmproxy into it when missing.
pub fn ensure_mitmproxy(venv: &Path) -> Result<()> {
    if venv.join("bin/mitmdump").exists() {
        return Ok(());
    }
    eprintln!("bench: installing mitmproxy into {} (pip)", venv.display());
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .context("running python3 -m venv")?
        .success();
    if !ok {
        bail!("python3 -m venv failed");
    }
    let ok = Command::new("timeout")
        .arg("400")
        .arg(venv.join("bin/pip"))
        .args(["install", "--quiet", "mitmproxy"])
        .status()
        .context("running pip")?
        .success();
    if !ok {
        bail!("pip install mitmproxy failed");
    }
    Ok(())
}

/// squid with `ssl_bump peek step1; bump all`, one worker, no cache.
pub fn start_squid(env: &Env<'_>) -> Result<Running> {
    ensure_apt("squid-openssl", "/usr/sbin/squid")?;
    if !Path::new(CERTGEN).exists() {
        bail!("{CERTGEN} missing: squid without OpenSSL support (install squid-openssl)");
    }
    let dir = env.work.join("squid");
    std::fs::create_dir_all(&dir)?;
    let port = free_port(false)?;
    std::fs::copy(&env.certs.mitm_ca_combined, dir.join("ca.pem"))?;
    std::fs::copy(&env.certs.upstream_ca, dir.join("upstream-ca.pem"))?;
    std::fs::write(
        dir.join("hosts"),
        format!("{} {UPSTREAM_NAME}\n", env.upstream.ip()),
    )?;
    let db = dir.join("ssl_db");
    // certgen -c refuses an existing database (a restart for the idle measure).
    let _ = std::fs::remove_dir_all(&db);
    let ok = Command::new(CERTGEN)
        .args(["-c", "-s"])
        .arg(&db)
        .args(["-M", "16MB"])
        .stdout(Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("{CERTGEN} -c failed");
    }
    let d = dir.display();
    let conf = format!(
        r#"http_port 127.0.0.1:{port} ssl-bump tls-cert={d}/ca.pem generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program {CERTGEN} -s {d}/ssl_db -M 16MB
sslcrtd_children 4 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile={d}/upstream-ca.pem
http_access allow all
cache deny all
hosts_file {d}/hosts
access_log stdio:/dev/null
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
max_filedescriptors 65536
shutdown_lifetime 0 seconds
pinger_enable off
"#
    );
    std::fs::write(dir.join("squid.conf"), conf)?;
    // squid drops to the `proxy` user, which must read and write its directory.
    chown_r("proxy:proxy", &dir)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let guard = spawn_peer(
        Command::new("/usr/sbin/squid")
            .arg("-N")
            .arg("-f")
            .arg(dir.join("squid.conf")),
        "squid",
        &dir,
        addr,
        &dir.join("cache.log"),
    )?;
    let version = first_line(Command::new("/usr/sbin/squid").arg("-v"));
    Ok(connect_peer(
        guard,
        addr,
        format!("{UPSTREAM_NAME}:443"),
        version,
    ))
}

/// mitmdump in regular (CONNECT) mode with the shared MITM CA.
pub fn start_mitmproxy(env: &Env<'_>) -> Result<Running> {
    ensure_mitmproxy(&env.venv)?;
    let dir = env.work.join("mitmproxy");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(&env.certs.mitm_ca_combined, dir.join("mitmproxy-ca.pem"))?;
    let port = free_port(false)?;
    let bin = env.venv.join("bin/mitmdump");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let guard = spawn_peer(
        Command::new(&bin)
            .args(["--listen-host", "127.0.0.1", "--listen-port"])
            .arg(port.to_string())
            .arg("--set")
            .arg(format!("confdir={}", dir.display()))
            .arg("--set")
            .arg(format!(
                "ssl_verify_upstream_trusted_ca={}",
                env.certs.upstream_ca.display()
            )),
        "mitmdump",
        &dir,
        addr,
        &dir.join("stderr.log"),
    )?;
    let version = first_line(Command::new(&bin).arg("--version"));
    // mitmproxy resolves CONNECT targets with the system resolver, so the
    // tunnel names the upstream's IP; the client's SNI still names the host.
    Ok(connect_peer(guard, addr, env.upstream.to_string(), version))
}

/// tinyproxy as a plain CONNECT tunnel: the TLS session is the client's and the upstream's.
pub fn start_tinyproxy(env: &Env<'_>) -> Result<Running> {
    ensure_apt("tinyproxy", "/usr/bin/tinyproxy")?;
    let dir = env.work.join("tinyproxy");
    std::fs::create_dir_all(&dir)?;
    let port = free_port(false)?;
    let d = dir.display();
    let conf = format!(
        r#"User nobody
Group nogroup
Port {port}
Listen 127.0.0.1
Timeout 600
MaxClients 12000
Allow 127.0.0.1
ConnectPort 443
LogLevel Error
LogFile "{d}/tinyproxy.log"
PidFile "{d}/tinyproxy.pid"
"#
    );
    std::fs::write(dir.join("tinyproxy.conf"), conf)?;
    chown_r("nobody:nogroup", &dir)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let guard = spawn_peer(
        Command::new("/usr/bin/tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(dir.join("tinyproxy.conf")),
        "tinyproxy",
        &dir,
        addr,
        &dir.join("stderr.log"),
    )?;
    let version = first_line(Command::new("/usr/bin/tinyproxy").arg("-v"));
    Ok(connect_peer(guard, addr, env.upstream.to_string(), version))
}

/// Builds the hudsucker peer (`xtask/hudsucker-peer`, its own lock file) into
/// `env.peer_build` unless it is there, and returns the binary.
fn ensure_hudsucker(env: &Env<'_>) -> Result<std::path::PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("hudsucker-peer/Cargo.toml");
    let bin = env.peer_build.join("release/bench-hudsucker");
    if !bin.exists() {
        eprintln!("bench: building the hudsucker peer (cargo, release; a few minutes once)");
    }
    let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&env.peer_build)
        .stdout(Stdio::null())
        .status()
        .context("running cargo build for the hudsucker peer")?
        .success();
    if !ok || !bin.exists() {
        bail!("building {} failed", manifest.display());
    }
    Ok(bin)
}

/// hudsucker as a MITM CONNECT proxy with the shared MITM CA, TCP_NODELAY on
/// both legs, and the upstream's name resolved to the upstream (as the bench
/// DNS answers it for the other proxies).
pub fn start_hudsucker(env: &Env<'_>) -> Result<Running> {
    let bin = ensure_hudsucker(env)?;
    let dir = env.work.join("hudsucker");
    std::fs::create_dir_all(&dir)?;
    let port = free_port(false)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let guard = spawn_peer(
        Command::new(&bin)
            .arg(addr.to_string())
            .arg(&env.certs.mitm_ca_cert)
            .arg(&env.certs.mitm_ca_key)
            .arg(&env.certs.upstream_ca)
            .arg(format!("{UPSTREAM_NAME}={}", env.upstream.ip())),
        "the hudsucker peer",
        &dir,
        addr,
        &dir.join("stderr.log"),
    )?;
    Ok(connect_peer(
        guard,
        addr,
        format!("{UPSTREAM_NAME}:{}", env.upstream.port()),
        "hudsucker 0.25 (hyper 1, rustls 0.23, aws-lc-rs; TCP_NODELAY)".into(),
    ))
}

/// `chown -R OWNER DIR`, for a peer that drops to that user and must read and write `dir`.
fn chown_r(owner: &str, dir: &Path) -> Result<()> {
    let ok = Command::new("chown")
        .args(["-R", owner])
        .arg(dir)
        .status()?
        .success();
    if !ok {
        bail!("chown -R {owner} {} failed", dir.display());
    }
    Ok(())
}

/// Starts the peer `what` (stdin and stdout to /dev/null, stderr to `dir/stderr.log`) and
/// waits until it listens on `addr` (`log` is what is shown if it does not).
fn spawn_peer(
    cmd: &mut Command,
    what: &str,
    dir: &Path,
    addr: SocketAddr,
    log: &Path,
) -> Result<ChildGuard> {
    let stderr = std::fs::File::create(dir.join("stderr.log"))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let guard = ChildGuard::new(child);
    wait_listening(guard.pid(), &[addr], log)?;
    Ok(guard)
}

/// A started peer CONNECT proxy at `addr` whose tunnels name `connect`.
fn connect_peer(guard: ChildGuard, addr: SocketAddr, connect: String, version: String) -> Running {
    Running {
        route: Route {
            addr,
            connect: Some(connect),
            host: UPSTREAM_NAME.into(),
        },
        watch: Some(Watch { pid: guard.pid() }),
        version,
        _child: Some(guard),
        intercept: None,
    }
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}
