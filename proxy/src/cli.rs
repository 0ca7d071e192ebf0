//! Command-line interface. The original product uses Go-style single-dash long
//! flags (`-config`); they keep working next to `--config`, and the help shows
//! both (`-config, --config <FILE>`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand, ValueEnum};

/// iron-proxy: egress control for untrusted workloads.
#[derive(Debug, Parser)]
#[command(name = "iron-proxy", disable_version_flag = true)]
pub struct Cli {
    /// Path to the YAML config, or `s3://bucket/key` (runs the proxy when no command is given).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// What to do; without a command, run the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run,
    /// Check a config file: errors and warnings with file:line:col; exit 0 when valid.
    #[command(visible_alias = "check")]
    Validate {
        /// Treat missing referenced files and unset environment variables as errors.
        #[arg(long)]
        strict: bool,
        /// Also answer whether the proxy would start on this machine, as
        /// `nginx -t` does: what it refuses to start without and this
        /// machine lacks (the MITM CA files, a key variable, a gRPC TLS
        /// file, an intercepted user, a usable TOKIO_WORKER_THREADS) is an
        /// error. The packaged unit's ExecStartPre uses it.
        #[arg(long)]
        preflight: bool,
    },
    /// Print the version.
    Version,
    /// Write a new CA certificate and key for MITM.
    GenerateCa {
        /// Directory for ca.crt and ca.key.
        #[arg(long, default_value = ".")]
        outdir: PathBuf,
        /// Common name of the CA.
        #[arg(long, default_value = "iron-proxy CA")]
        name: String,
        /// Validity in hours.
        #[arg(long = "expiry-hours", default_value_t = 8760)]
        expiry_hours: u64,
        /// Key algorithm.
        #[arg(long, value_enum, default_value_t = Alg::Ecdsa)]
        alg: Alg,
        #[command(flatten)]
        no_config: NoConfig,
    },
    /// Set up this host: CA, config, systemd unit and secrets file; start the service.
    Init(crate::init::InitArgs),
    /// Summarise an audit log as markdown (GitHub job summary), optionally suggesting rules.
    Summary(crate::summary::SummaryArgs),
    /// Inspect or remove eBPF interception.
    Intercept {
        /// status or detach.
        #[command(subcommand)]
        action: InterceptAction,
    },
}

/// `-config` on a command that reads no config. The global flag would be
/// taken and ignored there, and listed in the command's help; declared on the
/// command itself (hidden), it is neither: `main` refuses it with a usage
/// error.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NoConfig {
    #[arg(long = "config", id = "config", hide = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl NoConfig {
    /// Whether `-config` was given to the command.
    pub fn given(&self) -> bool {
        self.config.is_some()
    }
}

/// Where `intercept status|detach` looks: `-pin-path`, or the config's
/// `intercept.pin_path`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PinTarget {
    /// The pin directory (eBPF mode), without reading any config; for a config that does not load.
    #[arg(long = "pin-path", value_name = "PATH")]
    pub pin_path: Option<PathBuf>,
}

/// `--log-format` of the loader child: the proxy's `log.format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// One JSON object per line.
    Json,
    /// tracing's text format.
    Text,
}

impl From<LogFormatArg> for crate::config::LogFormat {
    fn from(a: LogFormatArg) -> Self {
        match a {
            LogFormatArg::Json => Self::Json,
            LogFormatArg::Text => Self::Text,
        }
    }
}

/// CA key algorithms.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Alg {
    /// ECDSA P-256 (fast leaf minting).
    Ecdsa,
    /// RSA 4096.
    Rsa4096,
    /// Ed25519.
    Ed25519,
}

/// `intercept` actions.
#[derive(Debug, Subcommand)]
pub enum InterceptAction {
    /// What is attached where, pin state and counters.
    Status(PinTarget),
    /// Remove pins and links: the only way interception ends.
    Detach(PinTarget),
    /// Internal: load, attach and pin the eBPF programs with settings read as
    /// JSON from stdin, then exit (`run` does this in a child process).
    #[command(hide = true)]
    Load {
        /// The log level (the proxy passes its own).
        #[arg(long, default_value = "info")]
        log_level: String,
        /// The log line format (the proxy passes its own).
        #[arg(long, value_enum, default_value = "json")]
        log_format: LogFormatArg,
    },
}

/// Rewrites Go-style `-flag` into `--flag` (single-letter flags such as `-v` are left alone).
///
/// Arguments are taken as the OS gave them: a path that is not UTF-8 is a
/// valid `-config` (`std::env::args` panicked on one).
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let b = a.as_encoded_bytes();
            let long_single_dash =
                i > 0 && b.len() > 2 && b[0] == b'-' && b[1] != b'-' && b[1].is_ascii_alphabetic();
            if long_single_dash {
                let mut dashed = OsString::from("-");
                dashed.push(&a);
                dashed
            } else {
                a
            }
        })
        .collect()
}

/// Whether the command line is in the Go style the docs teach (`-config`):
/// it is unless one of its flags is written `--name`. Usage errors then
/// quote flags as the user wrote them.
pub fn go_style(args: &[OsString]) -> bool {
    !args.iter().skip(1).any(|a| {
        let b = a.as_encoded_bytes();
        b.len() > 2 && b.starts_with(b"--")
    })
}

/// The text clap prints for `e`, with every flag of a help listing shown in
/// its Go-style form too: `--config <FILE>` becomes `-config, --config
/// <FILE>`, `-v, --version` becomes `-v, -version, --version`; the help
/// column is realigned. In a usage error of a Go-style command line
/// ([`go_style`]), flags are quoted in that style (`-confg`, as typed, where
/// clap would say `--confg`, the name it was rewritten to).
pub fn render(e: &clap::Error, go_style: bool) -> String {
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            go_style_help(&text)
        }
        _ if go_style => single_dash(&text),
        _ => text,
    }
}

/// `--name` → `-name` wherever a long flag starts (after a space, a quote or
/// a bracket, or at a line's start); a bare `--` stays.
fn single_dash(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev = '\n';
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let starts_flag = c == '-'
            && matches!(prev, ' ' | '\'' | '[' | '\n' | '`')
            && text[i..].starts_with("--")
            && text[i + 2..]
                .chars()
                .next()
                .is_some_and(|n| n.is_ascii_alphabetic());
        if starts_flag {
            // Drop the first dash; the second is written as the flag's own.
            chars.next();
            out.push('-');
            prev = '-';
            continue;
        }
        out.push(c);
        prev = c;
    }
    out
}

/// A flag line of clap's help: its indent is 2 (`  -v, --version`) or 6
/// (`      --config`); help text lines are indented further, or are not flags.
fn flag_spec(line: &str) -> Option<(&str, &str)> {
    let body = line
        .strip_prefix("      --")
        .map(|_| &line[6..])
        .or_else(|| {
            line.strip_prefix("  -")
                .filter(|r| !r.starts_with(' '))
                .map(|_| &line[2..])
        })?;
    // The spec ends at the first run of two spaces (or the end of the line).
    match body.find("  ") {
        Some(i) => Some((&body[..i], &body[i..])),
        None => Some((body.trim_end(), "")),
    }
}

/// `--name ...` → `-name, --name ...`; `-v, --version` → `-v, -version, --version`.
fn go_style_spec(spec: &str) -> String {
    match spec.find("--") {
        Some(i) => {
            let name_end = spec[i + 2..]
                .find([' ', '=', '['])
                .map_or(spec.len(), |j| i + 2 + j);
            format!("{}{}, {}", &spec[..i], &spec[i + 1..name_end], &spec[i..])
        }
        None => spec.to_string(),
    }
}

fn go_style_help(help: &str) -> String {
    let lines: Vec<&str> = help.split('\n').collect();
    // Where the help text of a flag line starts, before and after.
    let mut old_col = None;
    let mut widest = 0;
    for line in &lines {
        if let Some((spec, rest)) = flag_spec(line) {
            let spec_len = spec.len();
            if !rest.trim().is_empty() {
                let indent = line.len() - line.trim_start().len();
                let gap = rest.len() - rest.trim_start().len();
                old_col.get_or_insert(indent + spec_len + gap);
                widest = widest.max(go_style_spec(spec).len());
            }
        }
    }
    let new_col = 2 + widest + 2;
    let mut out = Vec::with_capacity(lines.len());
    let mut in_flag = false;
    for line in lines {
        if let Some((spec, rest)) = flag_spec(line) {
            let spec = go_style_spec(spec);
            in_flag = true;
            if rest.trim().is_empty() {
                out.push(format!("  {spec}"));
            } else {
                out.push(format!(
                    "  {spec:<w$}  {}",
                    rest.trim_start(),
                    w = new_col - 4
                ));
            }
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        // A continued help text of a flag line (same-line layout): realigned.
        match old_col {
            Some(col) if in_flag && indent == col && !line.trim().is_empty() => {
                out.push(format!("{:new_col$}{}", "", line.trim_start()));
            }
            _ => {
                in_flag = in_flag && indent > 2;
                out.push(line.to_string());
            }
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_quote_flags_as_written() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(go_style(&args(&["iron-proxy", "validate", "-confg", "x"])));
        assert!(go_style(&args(&[
            "iron-proxy",
            "validate",
            "-v",
            "--",
            "x"
        ])));
        assert!(!go_style(&args(&[
            "iron-proxy",
            "validate",
            "--confg",
            "x"
        ])));
        let err =
            |a: &[&str]| Cli::try_parse_from(normalize_args(args(a))).expect_err("a usage error");
        let e = err(&["iron-proxy", "validate", "-confg", "x"]);
        let text = render(&e, true);
        assert!(text.contains("unexpected argument '-confg'"), "{text}");
        assert!(text.contains("'-config'"), "the tip: {text}");
        assert!(text.contains("validate -config <FILE>"), "usage: {text}");
        assert!(!text.contains("--"), "{text}");
        let e = err(&["iron-proxy", "validate", "--confg", "x"]);
        let text = render(&e, false);
        assert!(text.contains("unexpected argument '--confg'"), "{text}");
        assert_eq!(
            single_dash("a [-- <ARGS>] --x '--y' `--z`\n--w"),
            "a [-- <ARGS>] -x '-y' `-z`\n-w"
        );
    }

    #[test]
    fn help_shows_go_style_flags_aligned() {
        let help = "Usage: x [OPTIONS]\n\nOptions:\n      --config <FILE>  Path\n  -v, --version        Print\n                       more\n  -h, --help           Print help\n";
        assert_eq!(
            go_style_help(help),
            "Usage: x [OPTIONS]\n\nOptions:\n  -config, --config <FILE>  Path\n  -v, -version, --version   Print\n                            more\n  -h, -help, --help         Print help\n"
        );
        // The long layout: help text on its own lines, left as it is.
        let help = "Options:\n      --alg <ALG>\n          Key algorithm\n\n          - ecdsa:   ECDSA\n\n  -h, --help\n          Print help\n";
        assert_eq!(
            go_style_help(help),
            "Options:\n  -alg, --alg <ALG>\n          Key algorithm\n\n          - ecdsa:   ECDSA\n\n  -h, -help, --help\n          Print help\n"
        );
        assert_eq!(go_style_spec("--x=<V>"), "-x, --x=<V>");
        assert_eq!(go_style_spec("--x[=<BOOL>]"), "-x, --x[=<BOOL>]");
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(normalize_args(args.iter().map(OsString::from))).expect("parses")
    }

    #[test]
    fn a_config_path_that_is_not_utf8_is_taken_as_written() {
        use std::os::unix::ffi::OsStringExt;
        let path = OsString::from_vec(b"\xff.yaml".to_vec());
        for flag in ["-config", "--config"] {
            let argv = [OsString::from("iron-proxy"), flag.into(), path.clone()];
            let cli = Cli::try_parse_from(normalize_args(argv)).expect("parses");
            assert_eq!(cli.config.as_deref(), Some(std::path::Path::new(&path)));
        }
    }

    #[test]
    fn go_style_flags() {
        let c = parse(&["iron-proxy", "-config", "/etc/p.yaml"]);
        assert_eq!(
            c.config.as_deref(),
            Some(std::path::Path::new("/etc/p.yaml"))
        );
        let c = parse(&["iron-proxy", "validate", "-config=/x.yaml", "-strict"]);
        assert!(matches!(
            c.command,
            Some(Command::Validate {
                strict: true,
                preflight: false
            })
        ));
        let c = parse(&["iron-proxy", "check", "--config", "/x.yaml"]);
        assert!(matches!(
            c.command,
            Some(Command::Validate {
                strict: false,
                preflight: false
            })
        ));
        assert!(parse(&["iron-proxy", "-v"]).version);
        let c = parse(&[
            "iron-proxy",
            "generate-ca",
            "-outdir",
            "/tmp/x",
            "-expiry-hours",
            "24",
            "-alg",
            "ed25519",
        ]);
        assert!(matches!(
            c.command,
            Some(Command::GenerateCa {
                expiry_hours: 24,
                alg: Alg::Ed25519,
                ..
            })
        ));
    }

    #[test]
    fn init_and_summary_flags() {
        let c = parse(&[
            "iron-proxy",
            "init",
            "-allow",
            "a.com,b.com",
            "-allow",
            "c.com",
            "-intercept-user",
            "app",
            "-intercept-cgroup",
            "/sys/fs/cgroup/ci.slice",
            "-warn",
            "-config-dir",
            "/srv/ip",
            "-root",
            "/tmp/r",
            "-no-start",
            "-force",
            "-trust",
        ]);
        let Some(Command::Init(a)) = c.command else {
            panic!("expected init, got {:?}", c.command)
        };
        assert_eq!(a.allow, ["a.com", "b.com", "c.com"]);
        assert_eq!(a.intercept_users, ["app"]);
        assert_eq!(a.intercept_cgroups, ["/sys/fs/cgroup/ci.slice"]);
        assert!(a.warn && a.no_start && a.force && a.trust);
        assert_eq!(a.intercept_dns, None, "unset: the default applies");
        assert_eq!(a.config_dir, std::path::Path::new("/srv/ip"));
        assert!(
            c.config.is_none(),
            "-config-dir must not be taken for -config"
        );
        // Go-style booleans: bare is true, `=false` turns the default off.
        for (flag, want) in [
            ("-intercept-dns", Some(true)),
            ("-intercept-dns=true", Some(true)),
            ("-intercept-dns=false", Some(false)),
        ] {
            let c = parse(&["iron-proxy", "init", flag, "-allow", "a.com"]);
            let Some(Command::Init(a)) = c.command else {
                panic!("expected init, got {:?}", c.command)
            };
            assert_eq!(a.intercept_dns, want, "{flag}");
            assert_eq!(a.allow, ["a.com"], "{flag} must not take the next argument");
        }
        let c = parse(&[
            "iron-proxy",
            "summary",
            "-log-file",
            "/x.log",
            "-show-full-paths",
            "-suggest-rules",
            "o.yaml",
        ]);
        let Some(Command::Summary(s)) = c.command else {
            panic!("expected summary, got {:?}", c.command)
        };
        assert_eq!(s.log_file, std::path::Path::new("/x.log"));
        assert!(s.show_full_paths);
        assert_eq!(
            s.suggest_rules.as_deref(),
            Some(std::path::Path::new("o.yaml"))
        );
    }
}
