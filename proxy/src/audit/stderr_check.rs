//! Whether file descriptor 2 can take the audit records, checked before the
//! proxy starts: records go to stderr, and a stderr that is closed or open
//! for reading only would lose every one of them without a trace (a write
//! to it fails with `EBADF`, which `std::io::stderr()` even reports as done).
//!
//! A closed fd 2 must be seen before Rust's runtime starts: it opens
//! `/dev/null` on a closed standard descriptor before `main`. The binary
//! therefore reads the flags in an ELF constructor ([`flags`]) and `main`
//! judges them ([`check`]) before anything else runs. The operational log
//! goes to stderr too, so the refusal is said on stdout, if anywhere, and
//! by the exit status (1).

use std::os::fd::RawFd;

/// Why fd 2 cannot take the audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unwritable {
    /// The descriptor is not open.
    #[error("stderr (fd 2) is closed")]
    Closed,
    /// The descriptor is open, but not for writing.
    #[error("stderr (fd 2) is open for reading only")]
    ReadOnly,
}

/// The file status flags of `fd` (`fcntl(F_GETFL)`), or -1 when it is not
/// open. Allocates nothing and touches no Rust runtime state, so an ELF
/// constructor may call it.
pub fn flags(fd: RawFd) -> libc::c_int {
    // SAFETY: F_GETFL only reads the flags of the descriptor; any number
    // may be asked about (one not open fails with EBADF).
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

/// Whether a descriptor with `flags` (from [`flags`]) can be written.
pub fn check(flags: libc::c_int) -> Result<(), Unwritable> {
    if flags < 0 {
        Err(Unwritable::Closed)
    } else if flags & libc::O_ACCMODE == libc::O_RDONLY {
        Err(Unwritable::ReadOnly)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_closed_or_read_only_descriptor_is_refused_a_writable_one_taken() {
        let (read, write) = std::io::pipe().expect("a pipe");
        assert_eq!(check(flags(read.as_raw_fd())), Err(Unwritable::ReadOnly));
        assert_eq!(check(flags(write.as_raw_fd())), Ok(()));
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .expect("/dev/null");
        assert_eq!(check(flags(rw.as_raw_fd())), Ok(()));
        // A number no descriptor has (closing one of ours would race with
        // the other tests' opens).
        assert_eq!(check(flags(RawFd::MAX)), Err(Unwritable::Closed));
    }
}
