//! stderr as a log file: what the proxy does when whoever started it sent
//! stderr to a regular file (systemd's `StandardError=append:`, `2>>file`).
//!
//! - At start-up ([`prepare_stderr_file`]) `O_APPEND` is set on it if it
//!   lacks it, as nginx opens its logs, and its path is remembered.
//! - On SIGUSR1 ([`reopen_stderr_file`], called by the stderr writer
//!   between whole lines) that path is opened again and put in place of
//!   stderr: after logrotate renamed the file (`create`, then `postrotate`
//!   sends the signal) records go to the new file, and none is lost or
//!   split between the two (nginx's `USR1`). Pipes, terminals, sockets and
//!   the journal are left alone.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Why stderr could not be reopened.
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    /// stderr was not a regular file at start-up: nothing to reopen.
    #[error("stderr was not a regular file at start-up (a pipe, the journal, a terminal); nothing to reopen")]
    NotAFile,
    /// Opening the path failed; stderr stays on the file it was.
    #[error("opening {path}")]
    Open {
        /// The log file's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// What is at the path now is not a regular file (a FIFO, a device):
    /// writing there could block the writer for good.
    #[error("{path} is not a regular file")]
    NotRegular {
        /// The log file's path.
        path: PathBuf,
    },
    /// Putting the new file in place of stderr failed.
    #[error("replacing stderr with {path}")]
    Replace {
        /// The log file's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

/// The file stderr was at start-up.
#[derive(Debug)]
struct StderrFile {
    path: PathBuf,
    /// Permission bits a file made again gets (logrotate's `create` usually
    /// made it first, with its own).
    mode: u32,
}

static STDERR_FILE: OnceLock<Option<StderrFile>> = OnceLock::new();

/// At start-up: sets `O_APPEND` on a regular-file stderr opened without it
/// (after logrotate's `copytruncate`, writes then land at the new end of
/// the file instead of at the old offset, which left a hole of NUL bytes)
/// and remembers its path for [`reopen_stderr_file`].
pub fn prepare_stderr_file() {
    let stderr = std::io::stderr();
    let _ = ensure_append(stderr.as_fd());
    let _ = STDERR_FILE.set(file_of(stderr.as_fd(), Path::new("/proc/self/fd/2")));
}

/// The path and mode of `fd` when it is a regular file that `link` (its
/// `/proc/self/fd` entry) names and the path still leads to.
fn file_of(fd: BorrowedFd<'_>, link: &Path) -> Option<StderrFile> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    if !is_regular(st.st_mode) {
        return None;
    }
    let path = std::fs::read_link(link).ok()?;
    // A deleted file reads as "/x (deleted)", a file of another mount
    // namespace as a path that is not this one: keep a path only when it
    // leads to this very file.
    let meta = std::fs::metadata(&path).ok()?;
    (meta.dev() == st.st_dev && meta.ino() == st.st_ino).then_some(StderrFile {
        path,
        mode: st.st_mode & 0o7777,
    })
}

fn is_regular(mode: u32) -> bool {
    use nix::sys::stat::SFlag;
    mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

/// Sets `O_APPEND` on `fd` if it is a regular file; true when it did.
pub(crate) fn ensure_append(fd: BorrowedFd<'_>) -> bool {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let regular = nix::sys::stat::fstat(fd).is_ok_and(|st| is_regular(st.st_mode));
    if !regular {
        return false;
    }
    let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) else {
        return false;
    };
    let flags = OFlag::from_bits_truncate(flags);
    if flags.contains(OFlag::O_APPEND) {
        return false;
    }
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_APPEND)).is_ok()
}

/// After a log rotation (SIGUSR1): opens stderr's start-up path again and
/// puts it in place of stderr, logging the outcome. On failure stderr stays
/// on the file it was, so nothing is lost. The stderr writer calls this
/// between whole lines.
pub fn reopen_stderr_file() {
    let file = STDERR_FILE.get().and_then(Option::as_ref);
    match file
        .ok_or(LogFileError::NotAFile)
        .and_then(|f| reopen(f, |new| nix::unistd::dup2_stderr(new)))
    {
        Ok(path) => tracing::info!(path = %path.display(), "SIGUSR1: reopened the log file"),
        Err(e @ LogFileError::NotAFile) => tracing::warn!("SIGUSR1: {e}"),
        Err(e) => tracing::error!(
            error = %crate::error_chain(&e),
            "SIGUSR1: could not reopen the log file; still writing to the one open before"
        ),
    }
}

/// Opens `f.path` (appending, created with `f.mode` if missing, never
/// through a symbolic link: the proxy may run as root; only a regular file,
/// opened without blocking: a FIFO put there with no reader would hold the
/// writer's `open` for good) and puts it in place of the old descriptor
/// with `replace` (`dup2`, which does it in one step: no write finds the
/// descriptor closed).
fn reopen(
    f: &StderrFile,
    replace: impl FnOnce(&std::fs::File) -> nix::Result<()>,
) -> Result<&Path, LogFileError> {
    let open_err = |source| LogFileError::Open {
        path: f.path.clone(),
        source,
    };
    let new = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(f.mode)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(&f.path)
        .map_err(open_err)?;
    if !new.metadata().map_err(open_err)?.file_type().is_file() {
        return Err(LogFileError::NotRegular {
            path: f.path.clone(),
        });
    }
    // Writes to a regular file never block anyway; cleared for what the
    // descriptor is handed to.
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(&new, FcntlArg::F_GETFL).map_err(|e| open_err(e.into()))?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(&new, FcntlArg::F_SETFL(flags)).map_err(|e| open_err(e.into()))?;
    replace(&new).map_err(|source| LogFileError::Replace {
        path: f.path.clone(),
        source,
    })?;
    Ok(&f.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_regular_file_gets_o_append_and_other_outputs_are_left_alone() {
        use std::io::Seek;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stderr.log");
        let mut f = std::fs::File::create(&path).expect("a file opened without O_APPEND");
        f.write_all(b"0123456789\n").expect("write");
        assert!(ensure_append(f.as_fd()), "O_APPEND set");
        assert!(!ensure_append(f.as_fd()), "already set");
        // What logrotate's copytruncate does; the next line must start at offset 0.
        f.set_len(0).expect("truncate");
        f.write_all(b"after\n").expect("write");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"after\n",
            "no hole of NULs"
        );
        assert_eq!(f.stream_position().expect("tell"), 6);
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        assert!(!ensure_append(r.as_fd()), "a pipe is left alone");
    }

    /// The descriptor of `file` as `/proc/self/fd/N`.
    fn link_of(file: &std::fs::File) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
    }

    #[test]
    fn after_a_rename_the_path_is_opened_again_in_place_of_the_descriptor() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.log");
        let out = std::fs::File::create(&path).expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let f = file_of(out.as_fd(), &link_of(&out)).expect("a regular file");
        let mut out = std::os::fd::OwnedFd::from(out);
        assert_eq!((f.path.as_path(), f.mode), (path.as_path(), 0o640));
        let write = |fd: &std::os::fd::OwnedFd, b: &[u8]| {
            nix::unistd::write(fd, b).expect("write");
        };
        write(&out, b"before\n");

        // logrotate without copytruncate: rename, then signal.
        let rotated = dir.path().join("proxy.log.1");
        std::fs::rename(&path, &rotated).expect("rename");
        write(&out, b"between\n");
        let into_out =
            |new: &std::fs::File, out: &mut std::os::fd::OwnedFd| nix::unistd::dup2(new, out);
        let reopened = reopen(&f, |new| into_out(new, &mut out)).expect("reopen");
        assert_eq!(reopened, path.as_path());
        write(&out, b"after\n");
        assert_eq!(std::fs::read(&rotated).expect("read"), b"before\nbetween\n");
        assert_eq!(std::fs::read(&path).expect("read"), b"after\n");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "made again with the old file's mode");

        // Reopening a file that was not rotated keeps appending to it.
        reopen(&f, |new| into_out(new, &mut out)).expect("reopen");
        write(&out, b"again\n");
        assert_eq!(std::fs::read(&path).expect("read"), b"after\nagain\n");
    }

    #[test]
    fn a_symbolic_link_put_at_the_path_is_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.log");
        let out = std::fs::File::create(&path).expect("create");
        let f = file_of(out.as_fd(), &link_of(&out)).expect("a regular file");
        std::fs::remove_file(&path).expect("remove");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"").expect("write");
        std::os::unix::fs::symlink(&elsewhere, &path).expect("symlink");
        let mut replaced = false;
        let result = reopen(&f, |_| {
            replaced = true;
            Ok(())
        });
        assert!(
            matches!(result, Err(LogFileError::Open { .. })),
            "{result:?}"
        );
        assert!(!replaced);
    }

    #[test]
    fn a_fifo_put_at_the_path_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.log");
        let out = std::fs::File::create(&path).expect("create");
        let f = file_of(out.as_fd(), &link_of(&out)).expect("a regular file");
        std::fs::remove_file(&path).expect("remove");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // With no reader, a blocking open for writing would never return; this one
        // fails at once (ENXIO) or finds no regular file.
        let (done, got) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(matches!(
                reopen(&f, |_| Ok(())),
                Err(LogFileError::Open { .. } | LogFileError::NotRegular { .. })
            ));
        });
        let refused = got
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reopen returned");
        assert!(refused);
    }

    #[test]
    fn a_pipe_or_a_deleted_file_has_no_path_to_reopen() {
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let link = PathBuf::from(format!("/proc/self/fd/{}", r.as_raw_fd()));
        assert!(file_of(r.as_fd(), &link).is_none());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gone.log");
        let out = std::fs::File::create(&path).expect("create");
        std::fs::remove_file(&path).expect("remove");
        assert!(file_of(out.as_fd(), &link_of(&out)).is_none());
    }
}
