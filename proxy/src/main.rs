//! The `iron-proxy` binary: parses arguments and calls the library.
//! Exit codes: 0 clean shutdown, 1 startup or runtime failure (among them a
//! stderr that is closed or not open for writing: audit records go there),
//! 2 usage error.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use iron_proxy::cli::{Cli, Command, InterceptAction};

/// mimalloc instead of glibc malloc: the request path allocates per request
/// (headers, bodies, the audit line) and glibc's arena locking and
/// consolidation showed up at 12-17% of proxy CPU (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` (option 4 in mimalloc 3's `mi_option_e`).
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
/// mimalloc's `allow_thp` (option 43 in mimalloc 3's `mi_option_e`).
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 43;

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Whether the environment sets `name` (a NUL-terminated C string).
fn env_has(name: &std::ffi::CStr) -> bool {
    // SAFETY: getenv with a NUL-terminated name; it allocates nothing. The
    // constructor runs single-threaded, before anything could call setenv.
    unsafe { !libc::getenv(name.as_ptr()).is_null() }
}

/// The allocator's defaults for a proxy, each unless the environment sets
/// the option itself (`MIMALLOC_*` wins):
/// - mimalloc's eager arena commit off, which roughly halves peak RSS under
///   load at no CPU cost (docs/benchmarks.md).
/// - transparent huge pages off for the process (`PR_SET_THP_DISABLE`, what
///   mimalloc's `allow_thp=0` does). On hosts whose THP mode is `always`
///   (RHEL and its rebuilds, among others) the kernel backs mimalloc's
///   arena with 2 MiB pages as it is touched: peak RSS under load 22.8
///   MiB with them against 14.3 without, 13.9 against 6.6 MiB before the
///   idle connections (docs/benchmarks.md, round 26). The prctl is made
///   here as well as through the option because mimalloc applies the
///   option only when it initializes, which may come before this
///   constructor.
///
/// mimalloc reads an option the first time it needs it, which is the first
/// allocation, and Rust's runtime allocates before `main`; so this runs as
/// an ELF constructor, before any Rust code, and allocates nothing.
extern "C" fn mimalloc_defaults() {
    if !env_has(c"MIMALLOC_ARENA_EAGER_COMMIT") {
        // SAFETY: mi_option_set only stores the value in mimalloc's static
        // option table; it is valid to call before mimalloc initializes.
        unsafe { mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    }
    if !env_has(c"MIMALLOC_ALLOW_THP") {
        // SAFETY: as above; prctl(PR_SET_THP_DISABLE) takes no pointers and
        // only sets a flag on this process (inherited by its children). On a
        // kernel without it the call fails and nothing changes.
        unsafe {
            mi_option_set(MI_OPTION_ALLOW_THP, 0);
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static MIMALLOC_DEFAULTS: extern "C" fn() = mimalloc_defaults;

/// fd 2's flags as the process found them (`iron_proxy::audit::stderr_check`):
/// read by an ELF constructor because Rust's runtime opens `/dev/null` on a
/// closed fd 2 before `main`, after which it looks open. Starts as
/// "writable" should the constructor not run.
static STDERR_FLAGS: std::sync::atomic::AtomicI32 =
    std::sync::atomic::AtomicI32::new(libc::O_WRONLY);

extern "C" fn note_stderr() {
    STDERR_FLAGS.store(
        iron_proxy::audit::stderr_check::flags(2),
        std::sync::atomic::Ordering::Relaxed,
    );
}

#[used]
#[unsafe(link_section = ".init_array")]
static NOTE_STDERR: extern "C" fn() = note_stderr;

/// A one-shot command whose reader went away (`iron-proxy summary ... | head`)
/// ends the way Unix tools do, killed by SIGPIPE, instead of panicking in
/// `println!` (Rust starts with SIGPIPE ignored). The proxy itself and the
/// eBPF loader child keep it ignored: a peer that resets a socket must not kill
/// the process.
fn default_sigpipe() {
    // SAFETY: signal() with a valid signal number and SIG_DFL; called on the
    // main thread before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn main() -> ExitCode {
    iron_proxy::tls::install_default_provider();
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let go_style = iron_proxy::cli::go_style(&raw);
    let args = iron_proxy::cli::normalize_args(raw);
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // Help lists the Go-style flags (`-config`) too.
            // Written as clap prints: a closed pipe (`--help | head`) is no panic.
            let text = iron_proxy::cli::render(&e, go_style);
            let _ = if e.use_stderr() {
                std::io::stderr().write_all(text.as_bytes())
            } else {
                std::io::stdout().write_all(text.as_bytes())
            };
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if !matches!(
        cli.command,
        None | Some(Command::Run)
            | Some(Command::Intercept {
                action: InterceptAction::Load { .. }
            })
    ) {
        default_sigpipe();
    }
    if cli.version || matches!(cli.command, Some(Command::Version)) {
        return iron_proxy::console::printed(iron_proxy::console::out(format_args!(
            "iron-proxy {}",
            iron_proxy::VERSION
        )));
    }
    let need_config = |cli: &Cli| match &cli.config {
        Some(p) => Ok(p.clone()),
        None => {
            iron_proxy::console::err(format_args!(
                "iron-proxy: missing -config FILE (see iron-proxy --help)"
            ));
            Err(ExitCode::from(2))
        }
    };
    // `-config` is global so that it may come before or after the command;
    // a command that reads no config refuses it rather than ignore it.
    // Such a command declares its own hidden `-config` so that its help does
    // not list the global one; before the command, the global takes it.
    let unused_config = match &cli.command {
        Some(Command::GenerateCa { no_config, .. }) => Some(("generate-ca", no_config)),
        Some(Command::Init(a)) => {
            Some(("init (it writes the config; see -config-dir)", &a.no_config))
        }
        Some(Command::Summary(a)) => Some(("summary (it reads an audit log)", &a.no_config)),
        _ => None,
    };
    if let Some((command, _)) = unused_config.filter(|(_, n)| n.given() || cli.config.is_some()) {
        iron_proxy::console::err(format_args!("iron-proxy: -config is not used by {command}"));
        return ExitCode::from(2);
    }
    match cli.command {
        None | Some(Command::Run) => match need_config(&cli) {
            Ok(path) => {
                // Audit records go to stderr: a closed or read-only one
                // would lose them all without a trace. The operational log
                // goes there too, so stdout is the only place to say so;
                // the exit status says it anyway.
                let flags = STDERR_FLAGS.load(std::sync::atomic::Ordering::Relaxed);
                if let Err(why) = iron_proxy::audit::stderr_check::check(flags) {
                    let _ = writeln!(
                        std::io::stdout(),
                        "iron-proxy: {why}: the audit records written there would be lost; \
                         not starting"
                    );
                    return ExitCode::FAILURE;
                }
                // All three before any thread starts; see their docs.
                iron_proxy::ops::otel::trim_compression_variables();
                iron_proxy::rep_movsb::reexec_if_needed();
                iron_proxy::ops::otel::take_header_variables();
                iron_proxy::cmd::run(&path)
            }
            Err(code) => code,
        },
        Some(Command::Validate { strict, preflight }) => match need_config(&cli) {
            Ok(path) => iron_proxy::cmd::validate(&path, strict, preflight),
            Err(code) => code,
        },
        Some(Command::GenerateCa {
            ref outdir,
            ref name,
            expiry_hours,
            alg,
            ..
        }) => iron_proxy::cmd::generate_ca(outdir, name, expiry_hours, alg),
        Some(Command::Init(ref args)) => iron_proxy::cmd::init(args),
        Some(Command::Summary(ref args)) => iron_proxy::cmd::summary(args),
        Some(Command::Intercept {
            action:
                InterceptAction::Load {
                    ref log_level,
                    log_format,
                },
        }) => iron_proxy::cmd::intercept_load(log_level, log_format.into()),
        Some(Command::Intercept {
            action: InterceptAction::Status(ref t),
        }) => iron_proxy::cmd::intercept(cli.config.as_deref(), t.pin_path.as_deref(), false),
        Some(Command::Intercept {
            action: InterceptAction::Detach(ref t),
        }) => iron_proxy::cmd::intercept(cli.config.as_deref(), t.pin_path.as_deref(), true),
        Some(Command::Version) => ExitCode::SUCCESS,
    }
}
