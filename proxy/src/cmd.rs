//! The commands behind the CLI, each returning the process exit code:
//! 0 for success or a clean shutdown, 1 for a failure, 2 for a usage error.

use std::path::Path;
use std::process::ExitCode;

use crate::app::App;
use crate::audit::AuditSink;
use crate::cli::Alg;
use crate::config;
use crate::config_source::ConfigSource;
use crate::console::{errln, outln, printed};

mod intercept;
pub use intercept::{intercept, intercept_load};

/// How a command says what is wrong: [`crate::console::err`] (`validate`),
/// or [`fatal_json`] (`run`, which stops).
type Say = fn(std::fmt::Arguments<'_>);

/// `errln!` for the reasons `run` stops: see [`crate::console::fatal`].
macro_rules! fatal {
    ($format:expr, $($arg:tt)*) => {
        crate::console::fatal($format, format_args!($($arg)*))
    };
}

/// [`crate::console::fatal`] before the config (and so its `log.format`) is
/// known: the default format, JSON.
fn fatal_json(args: std::fmt::Arguments<'_>) {
    crate::console::fatal(config::LogFormat::Json, args)
}

fn print_config_errors(errors: &config::ConfigErrors, say: Say) {
    for e in &errors.0 {
        say(format_args!("{e}"));
    }
}

/// The source `-config` names (a file, or `s3://bucket/key`); a malformed
/// `s3://` URL is said.
fn config_source(arg: &Path, say: Say) -> Option<ConfigSource> {
    ConfigSource::parse(arg)
        .map_err(|e| say(format_args!("iron-proxy: {e}")))
        .ok()
}

/// The config `-config` names, loaded with its bytes; `None` once what is wrong is said: a
/// malformed `s3://` URL, or each config error and then `invalid(source, error count)`.
fn load_config(
    arg: &Path,
    say: Say,
    invalid: impl FnOnce(&ConfigSource, usize),
) -> Option<(ConfigSource, config::Config, Vec<u8>)> {
    let source = config_source(arg, say)?;
    match source.load_blocking() {
        Ok((cfg, bytes)) => Some((source, cfg, bytes)),
        Err(e) => {
            print_config_errors(&e, say);
            invalid(&source, e.0.len());
            None
        }
    }
}

/// The CA as the proxy loads it, or the error as `validate` prints it, at
/// the field that names the file at fault (`proxy.yaml:3:11: error:
/// tls.ca_key: /etc/hostname: no unencrypted PEM private key found ...`).
fn load_ca(
    cfg: &config::Config,
    m: &config::MitmConfig,
) -> Result<crate::tls::CertificateAuthority, String> {
    crate::app::load_ca(cfg, m).map_err(|e| e.with_label("error: "))
}

/// `iron-proxy -config FILE|s3://BUCKET/KEY`: runs until SIGTERM/SIGINT.
pub fn run(arg: &Path) -> ExitCode {
    // First: until their handlers exist, SIGHUP and SIGUSR1 (logrotate's)
    // would end a proxy that is still starting.
    if let Err(e) = crate::ops::signals::catch_early() {
        fatal_json(format_args!("iron-proxy: {}", crate::error_chain(&e)));
        return ExitCode::FAILURE;
    }
    let Some((source, cfg, bytes)) = load_config(arg, fatal_json, |source, n| {
        fatal_json(format_args!(
            "iron-proxy: {n} error(s) in {source}; not starting"
        ))
    }) else {
        return ExitCode::FAILURE;
    };
    // The CA is loaded here, before anything starts, so that a pair that does
    // not load is reported as `validate` reports it: at the field that names
    // the file at fault. The app takes it from here.
    let format = cfg.log.format;
    let ca = match &cfg.tls {
        config::TlsConfig::Mitm(m) => match load_ca(&cfg, m) {
            Ok(ca) => Some(ca),
            Err(e) => {
                fatal!(format, "{e}");
                fatal!(format, "iron-proxy: 1 error(s) in {source}; not starting");
                return ExitCode::FAILURE;
            }
        },
        config::TlsConfig::SniOnly => None,
    };
    crate::ops::log_file::prepare_stderr_file();
    crate::ops::logs::init_queued(cfg.log.level.as_str(), cfg.log.format);
    // Whatever way `run` returns, the queued log lines and audit records go
    // out first (boundedly: a stuck stderr does not hold the exit forever).
    let _flush = FlushStderr;
    if let Some(keep) = crate::rep_movsb::kept() {
        let threshold = crate::rep_movsb::describe(keep);
        tracing::debug!(%threshold, "glibc REP MOVSB copy threshold");
    }
    match crate::ops::fd_limit::raise() {
        Ok(Some(r)) => tracing::info!(from = r.from, to = r.to, "raised the open-file limit"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    for finding in config::lint(&cfg) {
        tracing::warn!(%finding, "configuration warning");
    }
    if let (Some(ca), config::TlsConfig::Mitm(m)) = (&ca, &cfg.tls) {
        if let Some(soon) = crate::tls::expiry::of_config(ca, m) {
            soon.log();
        }
    }
    for finding in config::unknown_variables(&cfg, config::process_names()) {
        tracing::warn!(%finding, "configuration warning");
    }
    // What a reload would refuse (`app::reload`): here the proxy starts,
    // and what needs it fails closed.
    for r in config::missing_inputs(&cfg, &|k| std::env::var(k).ok()) {
        let finding = format!("{}: {r}", cfg.locate(&r.path));
        tracing::warn!(%finding, "configuration warning");
    }
    // Read and checked here: tokio panics on a value it cannot parse.
    let threads = match crate::listen::workers::thread_count(
        std::env::var_os(crate::listen::workers::THREADS_VAR).as_deref(),
    ) {
        Ok(n) => n,
        Err(e) => {
            FlushStderr::now();
            fatal!(format, "iron-proxy: {e}; not starting");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            FlushStderr::now();
            fatal!(
                format,
                "iron-proxy: starting the runtime: {}",
                crate::error_chain(&e)
            );
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        // Install signal handlers first so a SIGTERM during startup is not lost.
        let mut stop = match crate::ops::ShutdownSignal::install() {
            Ok(s) => s,
            Err(e) => {
                FlushStderr::now();
                fatal!(format, "iron-proxy: {}", crate::error_chain(&e));
                return ExitCode::FAILURE;
            }
        };

        let audit = match AuditSink::stderr() {
            Ok(a) => a,
            Err(e) => {
                FlushStderr::now();
                fatal!(
                    format,
                    "iron-proxy: starting the audit writer thread: {}",
                    crate::error_chain(&e)
                );
                return ExitCode::FAILURE;
            }
        };
        let app = match App::start(cfg, source, &bytes, audit.clone(), ca).await {
            Ok(app) => app,
            Err(e) => {
                // One line with the whole cause (not a log line as well: the
                // same text twice in the journal).
                FlushStderr::now();
                fatal!(format, "iron-proxy: {}", crate::error_chain(&e));
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(version = crate::VERSION, "ready");
        let signal = stop.recv().await;
        tracing::info!(signal, "shutting down");
        app.shutdown(SHUTDOWN_GRACE, stop.recv()).await;
        // Every record of the drained requests reaches the log before exit;
        // an output that takes none of them for EXIT_FLUSH fails the exit.
        if audit.flush(EXIT_FLUSH) {
            ExitCode::SUCCESS
        } else {
            FlushStderr::give_up();
            ExitCode::FAILURE
        }
    })
}

/// How long the exit waits for stderr to take the last records and lines.
const EXIT_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// Flushes the stderr writer thread when `run` returns, so that queued log
/// lines are out before a plain-text error printed after them.
struct FlushStderr;

/// Set once a flush timed out: later ones would only wait as long again.
static STDERR_STUCK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl FlushStderr {
    fn now() {
        if STDERR_STUCK.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Some(w) = crate::audit::stderr_writer() {
            if !w.flush(EXIT_FLUSH) {
                Self::give_up();
            }
        }
    }

    fn give_up() {
        STDERR_STUCK.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for FlushStderr {
    fn drop(&mut self) {
        Self::now();
    }
}

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// `iron-proxy validate -config FILE|s3://BUCKET/KEY [-strict] [-preflight]`.
pub fn validate(arg: &Path, strict: bool, preflight: bool) -> ExitCode {
    let Some((source, cfg, _)) = load_config(arg, crate::console::err, |source, n| {
        errln!("{source}: invalid ({n} error(s))")
    }) else {
        return ExitCode::FAILURE;
    };
    // What this machine lacks is a warning: the config itself is valid
    // (every example of the docs validates on any machine). Under
    // -preflight (`nginx -t`'s question: will it start here?) what the
    // proxy refuses to start without is an error; under -strict all of it
    // is, what the proxy starts without and fails closed on too.
    let refs = config::check_references(&cfg, &|k| std::env::var(k).ok());
    let here = strict || preflight;
    for r in &refs {
        let kind = if strict || (preflight && r.stops_start) {
            "error"
        } else {
            "warning"
        };
        errln!("{}: {kind}: {r}", cfg.locate(&r.path));
    }
    let stop_start = refs.iter().filter(|r| r.stops_start).count();
    // The CA as the proxy loads it, when both files are here: a pair that does
    // not load (not PEM, not a CA, expired, a key of another CA) stops the
    // proxy, so it is an error here too, under -strict or not. One that
    // loads and expires within 30 days is a warning at `tls.ca_cert`.
    let mut ca_expiry = None;
    let ca_error = match &cfg.tls {
        config::TlsConfig::Mitm(m) => match m.ca_paths() {
            Ok((cert, key)) if cert.exists() && key.exists() => match load_ca(&cfg, m) {
                Ok(ca) => {
                    ca_expiry = crate::tls::expiry::check(&ca, cert);
                    None
                }
                Err(e) => Some(e),
            },
            _ => None,
        },
        config::TlsConfig::SniOnly => None,
    };
    if let Some(e) = &ca_error {
        errln!("{e}");
    }
    // Start-up reads this variable before anything else and refuses a
    // value it cannot use.
    let threads_error = crate::listen::workers::thread_count(
        std::env::var_os(crate::listen::workers::THREADS_VAR).as_deref(),
    )
    .err();
    if let Some(e) = &threads_error {
        let var = crate::listen::workers::THREADS_VAR;
        let text = e.to_string();
        let text = text
            .strip_prefix(&format!("{var}: "))
            .unwrap_or(&text)
            .to_string();
        let kind = if here { "error" } else { "warning" };
        errln!("{var}: {kind}: {text}");
    }
    // Everything start-up builds from the config, built the same way, so
    // that what only a build finds (a gRPC TLS file that holds no usable
    // key) fails here and not at start or reload. Transforms that need a
    // file or variable this machine lacks are left out: the reference
    // check above names what is missing.
    let build_errors = build_errors(&cfg, &refs);
    for e in &build_errors {
        errln!("{e}");
    }
    if let Some(soon) = &ca_expiry {
        let field = "tls.ca_cert";
        errln!("{}: warning: {field}: {soon}", cfg.locate(field));
    }
    // Lints are warnings even under -strict: each is a choice the spec allows.
    // Each names where its field was set, as errors do: `proxy.yaml:14:5: warning: ...`.
    for l in config::lint(&cfg) {
        errln!("{}", l.warning_line());
    }
    // `IRON_*` variables nothing reads (a misspelt override), placed at their names.
    for l in config::unknown_variables(&cfg, config::process_names()) {
        errln!("{}", l.warning_line());
    }
    // Errors in the config itself, and what this machine lacks printed as
    // errors (-preflight: what start-up refuses without; -strict: all of it).
    let errors = usize::from(ca_error.is_some()) + build_errors.len();
    let machine = usize::from(here && threads_error.is_some())
        + if strict {
            refs.len()
        } else if preflight {
            stop_start
        } else {
            0
        };
    if strict && errors == 0 && machine > 0 {
        errln!("{source}: invalid under -strict ({machine} problem(s))");
        return ExitCode::FAILURE;
    }
    if errors + machine > 0 {
        errln!("{source}: invalid ({} error(s))", errors + machine);
        return ExitCode::FAILURE;
    }
    printed(outln!("{source}: valid"))
}

/// What `validate` finds building the config as start-up would: each
/// transform that does not build, and a management key variable that is set
/// but holds no key, each as a line at its field. Nothing is fetched,
/// connected, bound or written (see [`crate::app::check_build`]); the
/// runtime exists only because a gRPC channel needs one to be created.
fn build_errors(cfg: &config::Config, refs: &[config::Reference]) -> Vec<String> {
    let missing = |prefix: &str| refs.iter().any(|r| r.path.starts_with(prefix));
    let mut out = Vec::new();
    if let Some(m) = &cfg.management {
        if !missing("management.api_key_env") {
            if let Err(e) = crate::ops::ApiKey::from_env(&m.api_key_env) {
                let field = "management.api_key_env";
                out.push(format!("{}: error: {field}: {e}", cfg.locate(field)));
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.push(format!(
                "iron-proxy: starting a runtime to build the transforms: {}",
                crate::error_chain(&e)
            ));
            return out;
        }
    };
    let skip = |i: usize| missing(&format!("transforms[{i}]."));
    out.extend(rt.block_on(async { crate::app::check_build(cfg, &skip) }));
    out
}

/// What is wrong with `-outdir` that generating would report badly: a path
/// that exists and is not a directory (`/dev/null`, a regular file), which
/// creating the directory reports as "File exists".
fn outdir_problem(outdir: &Path) -> Option<String> {
    let meta = std::fs::metadata(outdir).ok()?;
    if meta.is_dir() {
        return None;
    }
    let kind = crate::config_source::file::kind_of(&meta).unwrap_or("a regular file");
    Some(format!(
        "{} is not a directory (it is {kind})",
        outdir.display()
    ))
}

/// `iron-proxy generate-ca`.
pub fn generate_ca(outdir: &Path, name: &str, expiry_hours: u64, alg: Alg) -> ExitCode {
    let alg = match alg {
        Alg::Ecdsa => crate::tls::generate::CaAlg::Ecdsa,
        Alg::Rsa4096 => crate::tls::generate::CaAlg::Rsa4096,
        Alg::Ed25519 => crate::tls::generate::CaAlg::Ed25519,
    };
    if let Some(problem) = outdir_problem(outdir) {
        errln!("iron-proxy generate-ca: {problem}");
        return ExitCode::FAILURE;
    }
    match crate::tls::generate::generate_ca(outdir, name, expiry_hours, alg) {
        Ok((cert, key)) => printed(outln!(
            "wrote {} (0644) and {} (0600)",
            cert.display(),
            key.display()
        )),
        Err(e) => {
            errln!("iron-proxy generate-ca: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `iron-proxy init`: prints each step and how to verify; exit 1 on failure.
pub fn init(args: &crate::init::InitArgs) -> ExitCode {
    match crate::init::run(args) {
        Ok(report) => {
            let mut ok = true;
            for s in &report.steps {
                ok &= outln!("{s}");
            }
            ok &= outln!("\nVerify:");
            for v in &report.verify {
                ok &= outln!("  {v}");
            }
            for w in &report.warnings {
                errln!("iron-proxy init: warning: {w}");
            }
            printed(ok)
        }
        Err(e) => {
            errln!("iron-proxy init: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `iron-proxy summary`: exit 1 when the log cannot be read or the summary written.
pub fn summary(args: &crate::summary::SummaryArgs) -> ExitCode {
    match crate::summary::run(
        &args.log_file,
        args.show_full_paths,
        args.suggest_rules.as_deref(),
    ) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("iron-proxy summary: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_support::make_ca;

    /// What loading the CA says for a config naming `cert` (line 2) and `key` (line 3).
    fn ca_error_of(cert: &Path, key: &Path) -> Option<String> {
        let text = format!(
            "tls:\n  ca_cert: {}\n  ca_key: {}\n",
            cert.display(),
            key.display()
        );
        let cfg = config::parse(&text, "p.yaml", &|_| None).expect("valid config");
        let config::TlsConfig::Mitm(m) = &cfg.tls else {
            panic!("mitm is the default")
        };
        load_ca(&cfg, m).err()
    }

    #[test]
    fn a_ca_that_does_not_load_is_reported_at_the_field_of_the_file_at_fault() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("writing a test file");
            path
        };
        let (ca, other) = (make_ca(), make_ca());
        let cert = write("ca.crt", &ca.cert_pem);
        let key = write("ca.key", &ca.key_pem);
        let other_key = write("other.key", &other.key_pem);
        let hostname = write("hostname", "build-host\n");
        assert_eq!(ca_error_of(&cert, &key), None);
        // Key-side faults at `ca_key: ...` (3:11): not a key, another CA's key, no file.
        assert_eq!(
            ca_error_of(&cert, &hostname),
            Some(format!(
                "p.yaml:3:11: error: tls.ca_key: {}: no unencrypted PEM private key found \
                 (PKCS#8, PKCS#1 RSA or SEC1 EC; encrypted keys are not supported)",
                hostname.display()
            ))
        );
        assert_eq!(
            ca_error_of(&cert, &other_key),
            Some(format!(
                "p.yaml:3:11: error: tls.ca_key: {} does not match the public key of {}",
                other_key.display(),
                cert.display()
            ))
        );
        let missing = ca_error_of(&cert, &dir.path().join("none.key")).expect("an error");
        assert!(
            missing.starts_with("p.yaml:3:11: error: tls.ca_key: reading "),
            "{missing}"
        );
        // Certificate-side faults stay at `ca_cert: ...` (2:12): here it holds the key.
        assert_eq!(
            ca_error_of(&key, &key),
            Some(format!(
                "p.yaml:2:12: error: tls.ca_cert: {}: no PEM certificate found",
                key.display()
            ))
        );
    }

    /// `-outdir` naming a file or a device is said to be one; a directory,
    /// or a path not there yet (created), is no problem.
    #[test]
    fn an_outdir_that_is_not_a_directory_is_named() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("ca");
        std::fs::write(&file, "x").expect("writing a file");
        assert_eq!(
            outdir_problem(&file),
            Some(format!(
                "{} is not a directory (it is a regular file)",
                file.display()
            ))
        );
        assert_eq!(
            outdir_problem(Path::new("/dev/null")).as_deref(),
            Some("/dev/null is not a directory (it is a character device)")
        );
        assert_eq!(outdir_problem(dir.path()), None);
        assert_eq!(outdir_problem(&dir.path().join("new")), None);
    }
}
