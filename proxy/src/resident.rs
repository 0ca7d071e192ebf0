//! Unmapping the read-only file-backed pages that start-up touched.
//!
//! The kernel maps a binary's file pages in 64 KiB fault-around blocks, and
//! they stay mapped (and count in RSS) for the life of the process. Start-up
//! touches a lot that never runs again: the dynamic loader's pass over the
//! relocation table (`.rela.dyn`, about 0.8 MB), the config parser, clap, the
//! CA and TLS set-up, the eBPF loader's hand-off. [`release_startup_pages`]
//! drops the page-table entries of every read-only, private, file-backed
//! mapping once the proxy is ready; the pages stay in the page cache, and
//! the process maps again only what it touches from then on.
//!
//! Only mappings that hold no private copy of a page are released
//! (`Anonymous: 0 kB` in `/proc/self/smaps`): a read-only mapping with
//! private pages is a RELRO segment the loader wrote before protecting it,
//! and `MADV_DONTNEED` would reset it to the file's unrelocated bytes. A
//! read-only mapping cannot gain private pages afterwards without
//! `mprotect`, which nothing in the process calls on them.

use std::ops::Range;

/// What could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ResidentError {
    /// `/proc/self/smaps` could not be read.
    #[error("reading /proc/self/smaps")]
    Smaps(#[source] std::io::Error),
}

/// What [`release_startup_pages`] released.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Mappings released.
    pub mappings: usize,
    /// Resident bytes those mappings held before.
    pub bytes: u64,
    /// Mappings the kernel refused (`madvise` failed, for example when
    /// locked by `mlockall`); they stay as they were.
    pub refused: usize,
}

/// One mapping of `/proc/self/smaps` that may be released.
#[derive(Debug, PartialEq, Eq)]
struct Candidate {
    range: Range<usize>,
    rss: u64,
}

/// Drops this process's page-table entries for its read-only, private,
/// file-backed mappings (code and read-only data of the binary and its
/// libraries) that hold no private pages. Call it once start-up is over.
///
/// Never inlined: `cargo xtask link-order` has callgrind dump its profile
/// when this returns, to tell start-up functions from serving ones.
#[inline(never)]
pub fn release_startup_pages() -> Result<Released, ResidentError> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(ResidentError::Smaps)?;
    let mut released = Released::default();
    for c in candidates(&smaps) {
        // SAFETY: the range is a whole mapping of this process, read-only,
        // private and file-backed with no private pages (see the module
        // doc), so MADV_DONTNEED only unmaps pages that fault back in with
        // the same bytes from the page cache. No Rust reference is
        // invalidated: the memory stays mapped and keeps its contents.
        let rc = unsafe {
            libc::madvise(
                c.range.start as *mut libc::c_void,
                c.range.end - c.range.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released.mappings += 1;
            released.bytes += c.rss;
        } else {
            released.refused += 1;
        }
    }
    Ok(released)
}

/// [`release_startup_pages`], with a debug log line of what it did: `after`
/// names the work whose pages go (start-up, a reload).
pub fn release_after(after: &str) {
    match release_startup_pages() {
        Ok(r) => tracing::debug!(
            after,
            mappings = r.mappings,
            kib = r.bytes / 1024,
            refused = r.refused,
            "released read-only file-backed pages"
        ),
        Err(e) => tracing::debug!(after, error = %e, "read-only pages not released"),
    }
}

/// The mappings of an smaps text that [`release_startup_pages`] releases.
/// Each mapping is a header line (`start-end perms offset dev inode path`)
/// followed by `Key: value` lines; a mapping whose fields cannot be read is
/// left alone.
fn candidates(smaps: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut current: Option<(Candidate, Option<u64>)> = None;
    for line in smaps.lines() {
        if let Some(header) = header(line) {
            out.extend(current.take().and_then(finish));
            current = header.map(|range| (Candidate { range, rss: 0 }, None));
            continue;
        }
        let Some((cand, anonymous)) = current.as_mut() else {
            continue;
        };
        if let Some(kb) = field_kb(line, "Rss:") {
            cand.rss = kb * 1024;
        } else if let Some(kb) = field_kb(line, "Anonymous:") {
            *anonymous = Some(kb);
        }
    }
    out.extend(current.and_then(finish));
    out
}

/// A mapping is kept when smaps reported its private pages, and none.
fn finish((cand, anonymous): (Candidate, Option<u64>)) -> Option<Candidate> {
    (anonymous == Some(0) && cand.rss > 0).then_some(cand)
}

/// `None` when `line` is a `Key: value` line (its first word ends with a
/// colon); otherwise it starts a mapping: `Some(Some(range))` for a
/// candidate, readable, not writable, private (`r--p` or `r-xp`), backed by
/// a file (a non-zero inode and a path), and `Some(None)` for any other
/// mapping or a header that cannot be read, whose fields are then ignored
/// (they never count for the mapping before it).
fn header(line: &str) -> Option<Option<Range<usize>>> {
    let first = line.split_ascii_whitespace().next()?;
    if first.ends_with(':') {
        return None;
    }
    Some(candidate_range(line))
}

/// The range of a mapping header line, if the mapping is a candidate.
fn candidate_range(line: &str) -> Option<Range<usize>> {
    let mut parts = line.split_ascii_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = parts.next()?.as_bytes();
    let (_offset, _dev, inode) = (parts.next()?, parts.next()?, parts.next()?);
    let path = parts.next();
    let candidate = perms.len() == 4
        && perms[0] == b'r'
        && perms[1] == b'-'
        && perms[3] == b'p'
        && inode != "0"
        && path.is_some_and(|p| p.starts_with('/'))
        && end > start;
    candidate.then_some(start..end)
}

/// The value of a `Key:   N kB` line, in kB.
fn field_kb(line: &str, key: &str) -> Option<u64> {
    let rest = line.strip_prefix(key)?.trim();
    rest.strip_suffix("kB")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0200000 r--p 00000000 fe:01 1234 /usr/bin/iron-proxy
Size:               2048 kB
Rss:                 812 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
55d0a0200000-55d0a0a00000 r-xp 00200000 fe:01 1234 /usr/bin/iron-proxy
Size:               8192 kB
Rss:                3900 kB
Anonymous:             0 kB
55d0a0a00000-55d0a0a40000 r--p 00a00000 fe:01 1234 /usr/bin/iron-proxy
Size:                256 kB
Rss:                 256 kB
Anonymous:           256 kB
55d0a0a40000-55d0a0a50000 rw-p 00a40000 fe:01 1234 /usr/bin/iron-proxy
Rss:                  64 kB
Anonymous:            64 kB
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0 [heap]
Rss:                 100 kB
Anonymous:           100 kB
7f0000000000-7f0000001000 r--p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             0 kB
7f0000010000-7f0000020000 r--s 00000000 fe:01 99 /var/cache/some.db
Rss:                  64 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 r-xp 00000000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 400 kB
Anonymous:             0 kB
7f0000300000-7f0000310000 r--p 00000000 fe:01 78 /usr/lib/x86_64-linux-gnu/libm.so.6
Rss:                   0 kB
Anonymous:             0 kB
7f0000400000-7f0000410000 r--p 00000000 fe:01 79 /usr/lib/x86_64-linux-gnu/libz.so.1
Rss:                  64 kB
7ffc00000000-7ffc00002000 r-xp 00000000 00:00 0 [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_pure_read_only_file_mappings_are_candidates() {
        let got = candidates(SMAPS);
        assert_eq!(
            got,
            vec![
                // the binary's read-only data and code
                Candidate {
                    range: 0x55d0a0000000..0x55d0a0200000,
                    rss: 812 * 1024,
                },
                Candidate {
                    range: 0x55d0a0200000..0x55d0a0a00000,
                    rss: 3900 * 1024,
                },
                // libc's code
                Candidate {
                    range: 0x7f0000100000..0x7f0000200000,
                    rss: 400 * 1024,
                },
            ],
            "left alone: RELRO with private pages, writable, anonymous, \
             shared, nothing resident, no Anonymous line, vdso"
        );
    }

    #[test]
    fn the_fields_of_an_unreadable_header_never_count_for_the_mapping_before() {
        // A RELRO mapping with private pages, then a header that cannot be
        // read whose Anonymous line says 0: the RELRO mapping must stay out.
        let text = "1000-2000 r--p 0 fe:01 5 /bin/x\nRss: 4 kB\nAnonymous: 4 kB\n\
                    zz-yy r--p 0 fe:01 5 /bin/x\nRss: 4 kB\nAnonymous: 0 kB\n";
        assert!(candidates(text).is_empty());
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "zzzz-55 r--p 0 fe:01 1 /x\nRss: 4 kB\nAnonymous: 0 kB\n\
                    1000-2000 r--p\nRss: 4 kB\nAnonymous: 0 kB\n\
                    3000-4000 r--p 0 fe:01 5 /y\nRss: four kB\nAnonymous: 0 kB\n";
        assert!(candidates(text).is_empty());
    }

    #[test]
    fn field_values_are_read_in_kb() {
        assert_eq!(field_kb("Rss:                 812 kB", "Rss:"), Some(812));
        assert_eq!(field_kb("Rss: 812", "Rss:"), None);
        assert_eq!(field_kb("Pss: 812 kB", "Rss:"), None);
    }

    /// RssFile of this process, in kB.
    fn rss_file_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| field_kb(l, "RssFile:"))
            .expect("RssFile line")
    }

    /// Relocated pointers (RELRO, left alone) and read-only data (released).
    static NAMES: [&str; 3] = ["connect4", "sockops", "getsockopt"];

    /// The real thing on this process: what was mapped is unmapped, and
    /// code, read-only data and relocated pointers work afterwards.
    #[test]
    fn released_pages_fault_back_with_the_same_bytes() {
        let before = rss_file_kb();
        let released = release_startup_pages().expect("release");
        let after = rss_file_kb();
        assert!(released.mappings > 0, "{released:?}");
        assert!(released.bytes > 0, "{released:?}");
        assert!(
            after < before,
            "RssFile {before} kB before, {after} kB after: {released:?}"
        );
        assert_eq!(NAMES.join(","), "connect4,sockops,getsockopt");
        assert_eq!(format!("{:?}", Some(3u8)), "Some(3)");
    }
}
