//! Reading a local config file: a regular file, or a chain of symbolic links
//! that ends at one (a Kubernetes ConfigMap volume is two links deep, and is
//! updated by swapping a link), at most [`MAX_CONFIG_BYTES`] of it.
//!
//! Anything else is refused before it is read, naming its type: a FIFO, on
//! which `open(2)` waits for a writer (a reload would hang, and every reload
//! after it wait behind it), a character device such as `/dev/zero` or a
//! terminal (endless), a socket (`open(2)` fails with a bare "No such device
//! or address"), a directory or a block device. The config is read again on
//! every reload, so it has to be something that can be read again: a pipe,
//! `/dev/stdin` or a shell's process substitution cannot.
//!
//! The files a config names (a CA, a keyfile: [`read_named`]) and the audit
//! log `iron-proxy summary` reads ([`open_named`]) are refused the same way.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{SourceError, MAX_CONFIG_BYTES};

/// What a path that is not a regular file is, as errors name it.
pub fn kind_of(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        Some("a file of another type")
    }
}

/// Reads the config file at `path`: see the module doc.
pub fn read(path: &Path) -> Result<Vec<u8>, SourceError> {
    read_regular(path, MAX_CONFIG_BYTES as u64).map_err(|r| match r {
        Refusal::Io(e) => SourceError::File(e),
        Refusal::NotRegular { kind, target } => SourceError::NotRegular { kind, target },
        Refusal::TooLarge => SourceError::TooLarge(MAX_CONFIG_BYTES >> 20),
    })
}

/// The largest file a config names (a CA, a TLS certificate or key, a
/// service-account keyfile, a token file) that [`read_named`] reads: far
/// above any of them (a CA bundle of every public root is 200 KiB).
pub const MAX_NAMED_BYTES: u64 = 4 << 20;

/// Reads a file the config names, as [`read`] reads the config: a regular
/// file or links to one, opened without waiting on a FIFO (a reload, or a
/// request minting a token, would hang on one), at most
/// [`MAX_NAMED_BYTES`]. The errors are `io::Error`s, for the callers'
/// own errors that already name the file and what it is for.
pub fn read_named(path: &Path) -> std::io::Result<Vec<u8>> {
    read_regular(path, MAX_NAMED_BYTES).map_err(|r| named_error(r, MAX_NAMED_BYTES))
}

/// How long [`read_named_off_thread`] waits for a file: a local file reads
/// in microseconds, a network file system's in milliseconds.
pub const NAMED_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`read_named`] for a request's task (a token minted from a keyfile or a
/// token file): the read runs on the runtime's blocking pool and is waited
/// for [`NAMED_READ_TIMEOUT`] at most. Read on the task's own thread, a file
/// on a hung network file system would stall every connection that thread
/// serves; the blocked read's thread is left to finish on its own.
pub async fn read_named_off_thread(path: &Path) -> std::io::Result<Vec<u8>> {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_named(&owned));
    match tokio::time::timeout(NAMED_READ_TIMEOUT, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(joined)) => Err(std::io::Error::other(joined)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "reading it took longer than {} s (a hung network file system?)",
                NAMED_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Why [`read_regular`] read nothing.
enum Refusal {
    Io(std::io::Error),
    /// Not a regular file (see [`kind_of`]); `target`: where the link
    /// `path` is leads.
    NotRegular {
        kind: &'static str,
        target: Option<PathBuf>,
    },
    /// Over the limit.
    TooLarge,
}

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Self {
        Refusal::Io(e)
    }
}

/// Opens a file the operator names to be read as a stream (the audit log
/// `iron-proxy summary` reads): a regular file or links to one, refused
/// otherwise as [`read_named`] refuses it, but of any size. A FIFO would
/// wait for a writer, and a device such as `/dev/zero` never ends: both are
/// refused before anything is read. The errors are `io::Error`s, for the
/// callers' own errors that already name the file.
pub fn open_named(path: &Path) -> std::io::Result<File> {
    open_regular(path, None)
        .map(|(file, _)| file)
        .map_err(|r| named_error(r, u64::MAX))
}

/// A [`Refusal`] as the `io::Error` of [`read_named`] and [`open_named`].
fn named_error(r: Refusal, max: u64) -> std::io::Error {
    let invalid = |text: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, text);
    match r {
        Refusal::Io(e) => e,
        Refusal::NotRegular { kind, target } => invalid(match target {
            Some(t) => format!(
                "it is a symbolic link to {}, {kind}, not a regular file",
                t.display()
            ),
            None => format!("it is {kind}, not a regular file"),
        }),
        Refusal::TooLarge => invalid(format!("it is larger than {} MiB", max >> 20)),
    }
}

/// The regular file at `path` (or at the end of the links it is), opened
/// for reading, with what the descriptor says of it; refused when it is
/// larger than `max`, if given.
fn open_regular(path: &Path, max: Option<u64>) -> Result<(File, Metadata), Refusal> {
    // `stat` first (it follows links), so that what must not be opened is
    // refused before `open(2)`.
    check(path, &std::fs::metadata(path)?, max)?;
    // Non-blocking: were the path swapped for a FIFO between the `stat` and
    // the `open`, the open returns at once (and the check of what was opened
    // refuses it) rather than waiting for a writer. No controlling terminal
    // is taken from a tty either. A regular file reads as ever.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    // What was opened is what is read: checked again through the descriptor.
    let meta = file.metadata()?;
    check(path, &meta, max)?;
    Ok((file, meta))
}

/// The bytes of the regular file at `path` (or at the end of the links it
/// is), at most `max` of them.
fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, Refusal> {
    let (file, meta) = open_regular(path, Some(max))?;
    // Sized from the start, as `std::fs::read` does: a key is not left
    // behind in the freed buffers of a growing one. At most one byte past
    // the limit is read: a file that grew past it since the `stat` is
    // refused all the same.
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Refusal::TooLarge);
    }
    Ok(bytes)
}

/// Refuses what is not a regular file, or is one over `max` bytes.
fn check(path: &Path, meta: &Metadata, max: Option<u64>) -> Result<(), Refusal> {
    if let Some(kind) = kind_of(meta) {
        return Err(Refusal::NotRegular {
            kind,
            target: link_target(path),
        });
    }
    if max.is_some_and(|max| meta.len() > max) {
        return Err(Refusal::TooLarge);
    }
    Ok(())
}

/// Where the symbolic link at `path` finally leads, for the error; `None`
/// when `path` is not a link or its end is not a path (`/dev/stdin` to a
/// pipe leads to `pipe:[1234]`).
fn link_target(path: &Path) -> Option<PathBuf> {
    let is_link = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    if !is_link {
        return None;
    }
    std::fs::canonicalize(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn fifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    }

    fn refused(path: &Path) -> String {
        match read(path) {
            Err(e) => crate::error_chain(&e),
            Ok(bytes) => panic!("{} was read ({} bytes)", path.display(), bytes.len()),
        }
    }

    /// A FIFO with no writer is refused at once (the test would hang on the
    /// old `open`), and so is one reached through a link, naming the FIFO.
    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().expect("dir");
        let pipe = dir.path().join("proxy.yaml");
        fifo(&pipe);
        let e = refused(&pipe);
        assert_eq!(
            e,
            "cannot read config: it is a FIFO (named pipe), not a regular file; the config is \
             read again on every reload, so it must be a file (not a pipe, /dev/stdin or a \
             process substitution)"
        );
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&pipe, &link).expect("symlink");
        let e = refused(&link);
        let target = std::fs::canonicalize(&pipe).expect("canonical");
        assert!(
            e.starts_with(&format!(
                "cannot read config: it is a symbolic link to {}, a FIFO (named pipe), not a regular file",
                target.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn directories_sockets_and_devices_are_refused_by_their_type() {
        let dir = tempfile::tempdir().expect("dir");
        let sock = dir.path().join("s.yaml");
        let _listener = UnixListener::bind(&sock).expect("bind");
        for (path, kind) in [
            (dir.path().to_path_buf(), "a directory"),
            (sock, "a socket"),
            (PathBuf::from("/dev/zero"), "a character device"),
            (PathBuf::from("/dev/null"), "a character device"),
        ] {
            let e = refused(&path);
            assert!(
                e.starts_with(&format!(
                    "cannot read config: it is {kind}, not a regular file"
                )),
                "{}: {e}",
                path.display()
            );
        }
    }

    /// A ConfigMap volume: `proxy.yaml -> ..data/proxy.yaml`, `..data ->
    /// ..2026_01_01`; the update swaps `..data` by `rename(2)`.
    #[test]
    fn a_chain_of_links_to_a_regular_file_is_read_and_follows_a_swap() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).expect("v1");
        std::fs::write(d.join("..v1/proxy.yaml"), "one").expect("write");
        std::os::unix::fs::symlink("..v1", d.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/proxy.yaml", d.join("proxy.yaml")).expect("link");
        assert_eq!(read(&d.join("proxy.yaml")).expect("read"), b"one");
        std::fs::create_dir(d.join("..v2")).expect("v2");
        std::fs::write(d.join("..v2/proxy.yaml"), "two").expect("write");
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).expect("link");
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap");
        assert_eq!(read(&d.join("proxy.yaml")).expect("read"), b"two");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_by_its_size() {
        let dir = tempfile::tempdir().expect("dir");
        let big = dir.path().join("big.yaml");
        let f = std::fs::File::create(&big).expect("create");
        // Sparse: no 16 MiB written.
        f.set_len(MAX_CONFIG_BYTES as u64 + 1).expect("set_len");
        assert_eq!(
            refused(&big),
            "cannot read config: the file is larger than 16 MiB; is it the config?"
        );
        f.set_len(MAX_CONFIG_BYTES as u64).expect("set_len");
        assert_eq!(read(&big).expect("at the limit").len(), MAX_CONFIG_BYTES);
    }

    /// A file the config names (a CA, a keyfile) is read as the config is:
    /// a FIFO behind it refused at once rather than waited on, a device or
    /// an oversized file refused, a link to a regular file read.
    #[test]
    fn a_named_file_is_read_only_when_it_is_a_regular_file() {
        let dir = tempfile::tempdir().expect("dir");
        let pipe = dir.path().join("ca.pem");
        fifo(&pipe);
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&pipe, &link).expect("symlink");
        let e = read_named(&link).expect_err("a FIFO");
        let target = std::fs::canonicalize(&pipe).expect("canonical");
        assert_eq!(
            e.to_string(),
            format!(
                "it is a symbolic link to {}, a FIFO (named pipe), not a regular file",
                target.display()
            )
        );
        assert_eq!(
            read_named(Path::new("/dev/zero"))
                .expect_err("a device")
                .to_string(),
            "it is a character device, not a regular file"
        );
        let big = dir.path().join("big.pem");
        std::fs::File::create(&big)
            .expect("create")
            .set_len(MAX_NAMED_BYTES + 1)
            .expect("set_len");
        assert_eq!(
            read_named(&big).expect_err("too large").to_string(),
            "it is larger than 4 MiB"
        );
        let pem = dir.path().join("real.pem");
        std::fs::write(&pem, "-----BEGIN-----").expect("write");
        std::fs::remove_file(&link).expect("unlink");
        std::os::unix::fs::symlink(&pem, &link).expect("symlink");
        assert_eq!(read_named(&link).expect("read"), b"-----BEGIN-----");
    }
}
