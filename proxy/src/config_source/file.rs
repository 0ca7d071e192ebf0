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
    // `stat` first (it follows links), so that what must not be opened is
    // refused before `open(2)`.
    let meta = std::fs::metadata(path).map_err(SourceError::File)?;
    check(path, &meta)?;
    // Non-blocking: were the path swapped for a FIFO between the `stat` and
    // the `open`, the open returns at once (and the check of what was opened
    // refuses it) rather than waiting for a writer. No controlling terminal
    // is taken from a tty either. A regular file reads as ever.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(SourceError::File)?;
    // What was opened is what is read: checked again through the descriptor.
    check(path, &file.metadata().map_err(SourceError::File)?)?;
    read_bounded(file)
}

/// Refuses what is not a regular file, or is one over the limit.
fn check(path: &Path, meta: &Metadata) -> Result<(), SourceError> {
    if let Some(kind) = kind_of(meta) {
        return Err(SourceError::NotRegular {
            kind,
            target: link_target(path),
        });
    }
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        return Err(SourceError::TooLarge(MAX_CONFIG_BYTES >> 20));
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

/// At most one byte past the limit is read: a file that grew past it since
/// the `stat` is refused all the same.
fn read_bounded(file: File) -> Result<Vec<u8>, SourceError> {
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(SourceError::File)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(SourceError::TooLarge(MAX_CONFIG_BYTES >> 20));
    }
    Ok(bytes)
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
        let f = File::create(&big).expect("create");
        // Sparse: no 16 MiB written.
        f.set_len(MAX_CONFIG_BYTES as u64 + 1).expect("set_len");
        assert_eq!(
            refused(&big),
            "cannot read config: the file is larger than 16 MiB; is it the config?"
        );
        f.set_len(MAX_CONFIG_BYTES as u64).expect("set_len");
        assert_eq!(read(&big).expect("at the limit").len(), MAX_CONFIG_BYTES);
    }
}
