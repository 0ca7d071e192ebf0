//! Lines for the terminal that never panic. `eprintln!` and `println!` panic
//! when their stream fails (`2>/dev/full`, a disk full under a log file), and
//! a start-up error printed that way ended the process with a panic and exit
//! code 101 instead of its documented 1. A closed stream is no failure here
//! (Rust's standard streams take an `EBADF` as written).
//!
//! Under systemd with stdout in the journal and stderr in a file
//! (`StandardOutput=journal`, `StandardError=append:/var/log/iron-proxy.log`,
//! as the packaged unit has it) the file holds JSON lines only, so a log
//! pipeline (`jq`) reads all of it: plain lines for people go to the journal
//! instead (see [`journal_split`]), where `systemctl status` and `journalctl -u`
//! show them, and a fatal start-up error goes to both, as a JSON record in the
//! file ([`fatal`]). Run from a terminal, everything is as it always was.

use std::ffi::OsStr;
use std::fmt::Arguments;
use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::sync::OnceLock;

/// `eprintln!` that never panics: a line stderr does not take is lost (there
/// is nowhere left to say so), and the exit code still says what happened.
/// Under systemd with stdout in the journal and stderr in a log file, the
/// line goes to the journal ([`journal_split`]).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::console::err(format_args!($($arg)*))
    };
}

/// `println!` that never panics; `false` when stdout did not take the line.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::console::out(format_args!($($arg)*))
    };
}

pub(crate) use {errln, outln};

/// Writes one line to stderr, or to the journal under [`journal_split`]; a
/// failure is ignored (see [`errln!`]).
pub fn err(args: Arguments<'_>) {
    if journal_split() {
        let _ = out(args);
        return;
    }
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(format_args!("{args}\n"));
}

/// A line that says why the proxy stops (at start-up, before or after the
/// logger is up). On a terminal it is [`err`]'s plain line on stderr. Under
/// [`journal_split`] the plain line goes to the journal, where `systemctl
/// status` shows it, and the log file gets it as one record in the log
/// format (`log.format`; `json` when the config did not load): a JSON line of
/// the logger's shape, `{"time":...,"level":"error","msg":"..."}`, so every
/// line of the file still parses.
pub fn fatal(format: crate::config::LogFormat, args: Arguments<'_>) {
    if !journal_split() {
        return err(args);
    }
    let line = args.to_string();
    let _ = out(format_args!("{line}"));
    let record = match format {
        crate::config::LogFormat::Json => crate::ops::logs::json_line(tracing::Level::ERROR, &line),
        crate::config::LogFormat::Text => format!("{line}\n"),
    };
    let _ = std::io::stderr().lock().write_all(record.as_bytes());
}

/// Whether stdout is systemd's journal stream and stderr is not: the
/// packaged unit's `StandardOutput=journal` with `StandardError=append:FILE`.
/// systemd sets `JOURNAL_STREAM` to the `device:inode` of the journal
/// stream it connected; a process that merely inherited the variable (a
/// shell in a session a unit started) has other streams, so only a match
/// counts. Decided once, at the first line.
pub fn journal_split() -> bool {
    static SPLIT: OnceLock<bool> = OnceLock::new();
    *SPLIT.get_or_init(|| {
        let id = |fd: BorrowedFd<'_>| {
            nix::sys::stat::fstat(fd)
                .ok()
                .map(|st| (st.st_dev, st.st_ino))
        };
        splits(
            std::env::var_os(JOURNAL_STREAM).as_deref(),
            id(std::io::stdout().as_fd()),
            id(std::io::stderr().as_fd()),
        )
    })
}

/// The variable systemd sets when stdout or stderr is the journal.
pub const JOURNAL_STREAM: &str = "JOURNAL_STREAM";

/// [`journal_split`] for a `JOURNAL_STREAM` value and the `(device, inode)`
/// of stdout and stderr.
fn splits(
    journal_stream: Option<&OsStr>,
    stdout: Option<(u64, u64)>,
    stderr: Option<(u64, u64)>,
) -> bool {
    let Some(journal) = journal_stream.and_then(|v| parse_stream(v.to_str()?)) else {
        return false;
    };
    stdout == Some(journal) && stderr != Some(journal)
}

/// `"device:inode"`, both decimal.
fn parse_stream(v: &str) -> Option<(u64, u64)> {
    let (dev, ino) = v.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// Writes one line to stdout; `false` when it failed.
pub fn out(args: Arguments<'_>) -> bool {
    let mut o = std::io::stdout().lock();
    o.write_fmt(format_args!("{args}\n")).is_ok() && o.flush().is_ok()
}

/// The exit code of a command whose output was `written` (all of it, or
/// not): 0, or 1 when stdout failed (said on stderr, as coreutils do).
pub fn printed(written: bool) -> ExitCode {
    if written {
        ExitCode::SUCCESS
    } else {
        err(format_args!("iron-proxy: writing to stdout failed"));
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Neither macro panics when its stream fails; a test binary's streams
    /// are captured, so this checks the plain path; `proxy/tests/cli.rs`
    /// runs the binary with `2>/dev/full` and `>/dev/full`.
    #[test]
    fn lines_are_written_without_panicking() {
        errln!("console test: {}", 1);
        assert!(outln!("console test: {}", 2));
        assert_eq!(printed(true), ExitCode::SUCCESS);
    }

    /// Only a `JOURNAL_STREAM` naming stdout, with stderr elsewhere, sends
    /// lines to the journal; an inherited or malformed variable changes nothing.
    #[test]
    fn lines_go_to_the_journal_only_when_stdout_is_the_journal_and_stderr_is_not() {
        let (journal, file) = (Some((21, 4242)), Some((2049, 77)));
        fn v(s: &str) -> Option<&OsStr> {
            Some(OsStr::new(s))
        }
        assert!(splits(v("21:4242"), journal, file), "the packaged unit");
        assert!(
            !splits(None, journal, file),
            "no JOURNAL_STREAM: a terminal"
        );
        assert!(
            !splits(v("21:4242"), journal, journal),
            "both in the journal"
        );
        assert!(
            !splits(v("21:4242"), file, journal),
            "only stderr in the journal"
        );
        assert!(
            !splits(v("21:9"), journal, file),
            "inherited from another unit"
        );
        for bad in ["", "21", "21:", ":4242", "x:4242", "21:4242:1", "-1:4242"] {
            assert!(!splits(v(bad), journal, file), "{bad:?}");
        }
        assert!(!splits(v("21:4242"), None, file), "stdout closed");
    }
}
