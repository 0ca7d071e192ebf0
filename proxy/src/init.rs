//! `iron-proxy init`: sets a host up in one idempotent step.
//!
//! 1. a 90-day ECDSA CA in the config directory (kept if present; replaced only with `-force`);
//! 2. `proxy.yaml` with the allowlist from `-allow`/`-egress-rules`, eBPF interception of
//!    `-intercept-user`/`-intercept-cgroup`, metrics and management on loopback; checked with
//!    the config parser before it is written;
//! 3. the secrets file `iron-proxy.env` (0600) with a random management API key;
//! 4. a drop-in for the packaged unit, or the full unit where there is none,
//!    and then also the packages' logrotate file (when logrotate is installed
//!    and has no file for iron-proxy yet);
//! 5. optionally the CA in the system trust store (`-trust`);
//! 6. `systemctl enable` + start, then waits for `/readyz` (skipped with `-no-start` or `-root`).
//!
//! Files whose content and mode are already right are not touched, so a
//! second run changes nothing and does not restart the service.
//! `-root DIR` writes the same tree under DIR (no root needed, nothing started).

mod options;
mod render;
mod system;
mod systemd_syntax;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use options::{InitArgs, InitError};
pub use render::{config_yaml, ConfigInputs, EgressRule, EgressRules};
use system::{Change, TrustStore};

/// CA validity: 90 days, as the bare-metal guide says.
pub const CA_EXPIRY_HOURS: u64 = 90 * 24;
/// Name of the unit.
pub const UNIT: &str = "iron-proxy.service";
/// Where the packages install the unit.
pub const PACKAGED_UNIT_PATH: &str = "/usr/lib/systemd/system/iron-proxy.service";
/// Where logrotate reads its per-package files.
pub const LOGROTATE_DIR: &str = "/etc/logrotate.d";
/// The log file of the unit (`StandardError=append:`).
pub const LOG_FILE: &str = "/var/log/iron-proxy.log";
/// Name of the drop-in `init` writes next to a packaged unit.
pub const DROP_IN: &str = "/etc/systemd/system/iron-proxy.service.d/10-iron-proxy-init.conf";

/// What `init` did, for the report.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per step, e.g. `created /etc/iron-proxy/proxy.yaml`.
    pub steps: Vec<String>,
    /// How to check the result.
    pub verify: Vec<String>,
    /// What the operator should act on (a kept CA that expires soon).
    pub warnings: Vec<String>,
}

/// `path` (absolute, as on the target system) under `root`.
fn under(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(r) => r.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Builds the config inputs from the flags (reads `-egress-rules`).
pub fn inputs(args: &InitArgs) -> Result<ConfigInputs, InitError> {
    if !args.config_dir.is_absolute() {
        return Err(InitError::Usage(format!(
            "-config-dir must be absolute, got {}",
            args.config_dir.display()
        )));
    }
    // It goes into the unit: refused here, before anything is written.
    let config_dir = systemd_syntax::unit_path(&args.config_dir, "-config-dir")?;
    let mut c = ConfigInputs {
        config_dir: config_dir.to_string(),
        warn: args.warn,
        // On by default when intercepting: the kernel refuses an intercepted
        // workload's UDP, DNS included, unless it goes to the proxy's server.
        intercept_dns: args
            .intercept_dns
            .unwrap_or(!args.intercept_users.is_empty() || !args.intercept_cgroups.is_empty()),
        upstream_resolver: args.upstream_resolver.clone(),
        ..Default::default()
    };
    c.allow(&args.allow);
    if let Some(path) = &args.egress_rules {
        let err = |message: String| InitError::EgressRules {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let rules: EgressRules = if text.trim().is_empty() {
            EgressRules::default()
        } else {
            serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?
        };
        if let Some(i) = rules
            .rules
            .iter()
            .position(|r| r.host.is_some() == r.cidr.is_some())
        {
            return Err(err(format!(
                "rules[{i}]: needs exactly one of host (or domain) and cidr"
            )));
        }
        c.add_rules(&rules);
    }
    for u in &args.intercept_users {
        let u = u.trim();
        if u.is_empty() {
            return Err(InitError::Usage("-intercept-user must not be empty".into()));
        }
        if args.root.is_none()
            && u.parse::<u32>().is_err()
            && !matches!(nix::unistd::User::from_name(u), Ok(Some(_)))
        {
            return Err(InitError::Usage(format!(
                "-intercept-user {u}: no such user"
            )));
        }
        if !c.users.iter().any(|x| x == u) {
            c.users.push(u.to_string());
        }
    }
    for g in &args.intercept_cgroups {
        if !c.cgroups.contains(g) {
            c.cgroups.push(g.clone());
        }
    }
    if !c.allows_anything() && !c.warn {
        return Err(InitError::NothingAllowed);
    }
    Ok(c)
}

/// Renders the config and checks it with the config parser.
pub fn checked_config(c: &ConfigInputs) -> Result<String, InitError> {
    let yaml = config_yaml(c);
    let file = format!("{}/proxy.yaml", c.config_dir.trim_end_matches('/'));
    crate::config::parse(&yaml, &file, &|_| None).map_err(|errs| {
        InitError::InvalidConfig(
            errs.0
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    Ok(yaml)
}

/// Records a step; returns whether it changed anything.
fn step(report: &mut Report, change: Change, path: &Path) -> bool {
    report
        .steps
        .push(format!("{} {}", change.verb(), path.display()));
    change != Change::Unchanged
}

/// Whether an existing file may be replaced without `-force`.
fn ours(path: &Path, markers: &[&str]) -> Result<bool, InitError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(markers.iter().any(|m| t.starts_with(m))
            || t.lines().take(3).any(|l| markers.contains(&l))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(InitError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Writes `content` to `path` unless a foreign file is there (`-force`
/// replaces it). Whatever it replaces with different content, its own earlier
/// output included (which the spec's guide tells users to edit), is kept as
/// `<name>.bak` first, so a rerun never silently discards hand edits.
fn replace_owned(
    path: &Path,
    content: &str,
    mode: u32,
    markers: &[&str],
    force: bool,
) -> Result<Change, InitError> {
    if !ours(path, markers)? && !force {
        return Err(InitError::Foreign(path.to_path_buf()));
    }
    let old = match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(InitError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if old.is_some_and(|b| b != content.as_bytes()) {
        let bak = path.with_extension(format!(
            "{}.bak",
            path.extension()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        std::fs::copy(path, &bak).map_err(|source| InitError::Io {
            path: bak.clone(),
            source,
        })?;
    }
    system::write_if_changed(path, content, mode)
}

/// The directory the unit hides that `bin` is under (`ProtectHome=yes`
/// hides the home directories, `PrivateTmp=yes` gives the service its own
/// `/tmp` and `/var/tmp`), if it is under one.
fn hidden_from_the_unit(bin: &Path) -> Option<&'static str> {
    ["/home", "/root", "/run/user", "/tmp", "/var/tmp"]
        .into_iter()
        .find(|d| bin.starts_with(d))
}

/// What is wrong with the CA init keeps: one that expires within 30 days,
/// or one the proxy would not load (expired, a key of another CA); `-force`
/// replaces it.
fn kept_ca_warning(crt: &Path, key: &Path) -> Option<String> {
    match crate::tls::CertificateAuthority::load(crt, key) {
        Ok(ca) => crate::tls::expiry::check(&ca, crt)
            .map(|soon| format!("{soon}; or rerun init with -force for a new 90-day CA")),
        Err(e) => Some(format!(
            "the kept CA does not load, so the proxy will not start with it: {}; rerun init \
             with -force for a new CA",
            crate::error_chain(&e)
        )),
    }
}

/// 256 random bits from the kernel, hex-encoded.
fn random_key() -> Result<String, InitError> {
    use std::io::Read;
    let path = Path::new("/dev/urandom");
    let mut b = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|source| InitError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(hex::encode(b))
}

/// Runs `init`.
pub fn run(args: &InitArgs) -> Result<Report, InitError> {
    let root = args.root.as_deref();
    if root.is_none() && !is_root() {
        return Err(InitError::NotRoot);
    }
    let c = inputs(args)?;
    let yaml = checked_config(&c)?;
    let bin = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(render::PACKAGED_BIN));
    let bin = if root.is_some() {
        PathBuf::from(render::PACKAGED_BIN)
    } else {
        bin
    };
    // Before anything is written: a unit that can never start is worse
    // than none.
    if let Some(hidden) = hidden_from_the_unit(&bin) {
        return Err(InitError::Usage(format!(
            "{} is under {hidden}, which the unit hides from the service (ProtectHome=yes, \
             PrivateTmp=yes), so it could never start (status 203/EXEC): install the binary \
             first, e.g. `install -m 0755 {} {}`, and run init from there",
            bin.display(),
            bin.display(),
            render::PACKAGED_BIN
        )));
    }
    let bin_text = systemd_syntax::unit_path(&bin, "the binary's path")?;
    let mut report = Report::default();
    let mut changed = false;

    let dir = under(root, &args.config_dir);
    std::fs::create_dir_all(&dir).map_err(|source| InitError::Io {
        path: dir.clone(),
        source,
    })?;
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    match (crt.exists(), key.exists(), args.force) {
        (true, true, false) => {
            report
                .steps
                .push(format!("kept existing CA {}", crt.display()));
            report.warnings.extend(kept_ca_warning(&crt, &key));
        }
        (true, false, false) => return Err(InitError::HalfCa(crt)),
        (false, true, false) => return Err(InitError::HalfCa(key)),
        (had_crt, had_key, _) => {
            for (had, p) in [(had_crt, &crt), (had_key, &key)] {
                if had {
                    std::fs::remove_file(p).map_err(|source| InitError::Io {
                        path: p.clone(),
                        source,
                    })?;
                }
            }
            let alg = crate::tls::generate::CaAlg::Ecdsa;
            crate::tls::generate::generate_ca(&dir, "iron-proxy CA", CA_EXPIRY_HOURS, alg)
                .map_err(|source| InitError::Ca {
                    dir: dir.clone(),
                    source,
                })?;
            changed = true;
            report.steps.push(format!(
                "generated 90-day ECDSA CA {} (key {} mode 0600)",
                crt.display(),
                key.display()
            ));
        }
    }

    let config_path = dir.join("proxy.yaml");
    let markers = [render::CONFIG_MARKER, render::PACKAGED_MARKER];
    changed |= step(
        &mut report,
        replace_owned(&config_path, &yaml, 0o644, &markers, args.force)?,
        &config_path,
    );

    let env_path = dir.join("iron-proxy.env");
    let old_env = std::fs::read_to_string(&env_path).ok();
    let env_change = match old_env.as_deref().map(render::existing_api_key) {
        // Keep the key (and whatever else the admin added); only fix the mode.
        Some(Some(_)) => {
            system::write_if_changed(&env_path, old_env.as_deref().unwrap_or_default(), 0o600)?
        }
        Some(None) => {
            let mut text = old_env.unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("{}={}\n", render::API_KEY_ENV, random_key()?));
            system::write_if_changed(&env_path, &text, 0o600)?
        }
        None => system::write_if_changed(&env_path, &render::env_file(&random_key()?), 0o600)?,
    };
    changed |= step(&mut report, env_change, &env_path);

    let config_dir = c.config_dir.clone();
    let unit_markers = [render::UNIT_MARKER];
    if under(root, Path::new(PACKAGED_UNIT_PATH)).exists() {
        let p = under(root, Path::new(DROP_IN));
        changed |= step(
            &mut report,
            replace_owned(
                &p,
                &render::drop_in(bin_text, &config_dir),
                0o644,
                &unit_markers,
                args.force,
            )?,
            &p,
        );
    } else {
        let p = under(root, Path::new("/etc/systemd/system").join(UNIT).as_path());
        changed |= step(
            &mut report,
            replace_owned(
                &p,
                &render::full_unit(bin_text, &config_dir),
                0o644,
                &unit_markers,
                args.force,
            )?,
            &p,
        );
        // The package ships it; without the package, init does.
        let step = system::install_logrotate(&under(root, Path::new(LOGROTATE_DIR)))?;
        report.steps.push(step);
    }

    if args.trust {
        let store = TrustStore::detect(root).ok_or(InitError::NoTrustStore)?;
        let pem = std::fs::read_to_string(&crt).map_err(|source| InitError::Io {
            path: crt.clone(),
            source,
        })?;
        let anchor = under(root, Path::new(store.anchor()));
        let change = system::trust(store, &pem, &anchor, root.is_none())?;
        report.steps.push(format!(
            "{} trust anchor {} (bundle {})",
            change.verb(),
            anchor.display(),
            store.bundle()
        ));
    }

    if root.is_some() || args.no_start {
        report
            .steps
            .push("did not enable or start the service (-root or -no-start)".into());
    } else if !system::systemd_running() {
        return Err(InitError::NoSystemd(config_path));
    } else {
        let what = system::enable_and_start(UNIT, changed)?;
        let addr: SocketAddr = render::METRICS_LISTEN.parse().expect("constant address");
        system::wait_ready(addr, Duration::from_secs(args.ready_timeout))?;
        report.steps.push(format!(
            "{UNIT} enabled and {what}; http://{addr}/readyz answers 200"
        ));
    }

    let ca = format!("{}/ca.crt", config_dir.trim_end_matches('/'));
    let host = c
        .domains
        .iter()
        .find(|d| !d.contains('*'))
        .cloned()
        .unwrap_or_else(|| "example.com".into());
    report.verify.push("systemctl status iron-proxy".into());
    report.verify.push(format!(
        "curl --cacert {ca} --proxy http://{} https://{host}/",
        render::TUNNEL_LISTEN
    ));
    for u in &c.users {
        report.verify.push(format!("sudo -u {u} curl -sS -o /dev/null -w '%{{http_code}}\\n' https://example.com/   # 403 unless allowed"));
    }
    report.verify.push(format!(
        "tail -f {LOG_FILE}   # one JSON audit record per request"
    ));
    report
        .verify
        .push("journalctl -u iron-proxy   # why it did not start, if it did not".into());
    report.verify.push(format!(
        "iron-proxy intercept status -config {config_dir}/proxy.yaml"
    ));
    Ok(report)
}

#[cfg(test)]
mod tests;
