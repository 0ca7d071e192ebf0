//! The flags and errors of `iron-proxy init`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `iron-proxy init` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InitArgs {
    /// Refused: init writes the config (see `-config-dir`).
    #[command(flatten)]
    pub no_config: crate::cli::NoConfig,
    /// Hosts to allow, comma-separated (repeatable); globs such as *.example.com work.
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub allow: Vec<String>,
    /// Intercept every TCP connection of this user (name or uid; repeatable).
    #[arg(long = "intercept-user", value_name = "USER")]
    pub intercept_users: Vec<String>,
    /// Intercept every TCP connection from this cgroup v2 path (repeatable).
    #[arg(long = "intercept-cgroup", value_name = "PATH")]
    pub intercept_cgroups: Vec<String>,
    /// Redirect the intercepted workloads' DNS to the built-in server: on by
    /// default with `-intercept-user`/`-intercept-cgroup` (without it their
    /// DNS, like all UDP, is refused); `-intercept-dns=false` turns it off.
    #[arg(
        long = "intercept-dns",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub intercept_dns: Option<bool>,
    /// Upstream DNS resolver for the proxy's own lookups (host:port).
    #[arg(long = "upstream-resolver", value_name = "ADDR")]
    pub upstream_resolver: Option<String>,
    /// Log allowlist violations instead of blocking them.
    #[arg(long)]
    pub warn: bool,
    /// Egress rules file (domains, cidrs, rules), as used by the GitHub Action.
    #[arg(long = "egress-rules", value_name = "FILE")]
    pub egress_rules: Option<PathBuf>,
    /// Directory for proxy.yaml, the CA and the secrets file.
    #[arg(
        long = "config-dir",
        value_name = "DIR",
        default_value = "/etc/iron-proxy"
    )]
    pub config_dir: PathBuf,
    /// Write everything under DIR instead of / (no root needed; nothing is started).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Write the files but do not enable or start the service.
    #[arg(long = "no-start")]
    pub no_start: bool,
    /// Replace an existing CA, and a proxy.yaml or unit that init did not write.
    #[arg(long)]
    pub force: bool,
    /// Install the CA into the system trust store.
    #[arg(long)]
    pub trust: bool,
    /// Seconds to wait for /readyz after starting.
    #[arg(long = "ready-timeout", value_name = "SECONDS", default_value_t = 30)]
    pub ready_timeout: u64,
}

/// Errors from `init`.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Not root, and no `-root` given.
    #[error("init changes system files and must run as root (or pass -root DIR to write the tree elsewhere)")]
    NotRoot,
    /// Neither `-allow` nor `-egress-rules` allow anything, and not in warn mode.
    #[error("nothing to allow: pass -allow \"host1,host2\" or -egress-rules FILE (or -warn to learn what is needed)")]
    NothingAllowed,
    /// A flag value is unusable.
    #[error("{0}")]
    Usage(String),
    /// The egress rules file could not be read or parsed.
    #[error("egress rules {path}: {message}")]
    EgressRules {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The rendered config does not pass validation (a bug or a bad flag value).
    #[error("the generated config is invalid:\n{0}")]
    InvalidConfig(String),
    /// A file exists that init did not write; `-force` replaces it.
    #[error(
        "{0} exists and was not written by init; pass -force to replace it (a .bak copy is kept)"
    )]
    Foreign(PathBuf),
    /// Only one of ca.crt and ca.key exists.
    #[error("{0} exists without its pair; pass -force to generate a new CA")]
    HalfCa(PathBuf),
    /// Generating the CA failed.
    #[error("generating the CA in {dir}")]
    Ca {
        /// The output directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: crate::tls::generate::GenerateError,
    },
    /// A file operation failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An external command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output.
        detail: String,
    },
    /// -trust without a known trust store.
    #[error("-trust: neither update-ca-certificates nor update-ca-trust is installed")]
    NoTrustStore,
    /// systemd is not running, so the service cannot be started.
    #[error("systemd is not running on this host; re-run with -no-start and start `iron-proxy -config {0}` yourself")]
    NoSystemd(PathBuf),
    /// The service did not answer 200 on /readyz in time.
    #[error("iron-proxy did not become ready: http://{addr}/readyz gave no 200 within {seconds}s (last: {last}); see `systemctl status iron-proxy` and /var/log/iron-proxy.log")]
    NotReady {
        /// Metrics address.
        addr: SocketAddr,
        /// The timeout.
        seconds: u64,
        /// Last answer or error.
        last: String,
    },
}
