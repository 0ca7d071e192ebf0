//! Lines for the terminal that never panic. `eprintln!` and `println!` panic
//! when their stream fails (`2>/dev/full`, a disk full under a log file), and
//! a start-up error printed that way ended the process with a panic and exit
//! code 101 instead of its documented 1. A closed stream is no failure here
//! (Rust's standard streams take an `EBADF` as written).

use std::fmt::Arguments;
use std::io::Write as _;
use std::process::ExitCode;

/// `eprintln!` that never panics: a line stderr does not take is lost (there
/// is nowhere left to say so), and the exit code still says what happened.
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

/// Writes one line to stderr; a failure is ignored (see [`errln!`]).
pub fn err(args: Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(format_args!("{args}\n"));
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
}
