//! The open-file limit. Every client connection costs the proxy a file
//! descriptor, and one it forwards costs two; at the soft `RLIMIT_NOFILE`
//! (often 1024 when started from a shell or a container runtime) accepts
//! fail and the data plane stops taking connections. Like the Go runtime
//! does for every Go program since Go 1.19, the proxy raises its soft limit
//! to the hard limit at start-up: no privilege is needed to do that.
//!
//! Children do not inherit the raised limit: as Go's `os/exec` does, every
//! program the proxy runs (the eBPF loader, `nft`, a credential executable)
//! starts with the limit the proxy started with ([`restore_in_child`]). A
//! program may use `select(2)`, which breaks on descriptors above 1023, and
//! a limit it did not ask for is not the proxy's to hand on.
//!
//! The limit also sets the default of `proxy.max_connections`
//! ([`default_max_connections`]): the proxy refuses client connections
//! before its descriptors run out, so that the connections it has
//! accepted can still dial their upstreams.

use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit the process started with.
    pub from: u64,
    /// The soft limit now (the hard limit).
    pub to: u64,
}

/// The limits (soft, hard) the process started with, once [`raise`] changed them.
static ORIGINAL: OnceLock<(u64, u64)> = OnceLock::new();

/// Raises the soft open-file limit to the hard limit. `Ok(None)` when it
/// already is there.
pub fn raise() -> Result<Option<Raised>, nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok(None);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    // The first raise is the one that saw the limits the process started with.
    let _ = ORIGINAL.set((soft, hard));
    Ok(Some(Raised {
        from: soft,
        to: hard,
    }))
}

/// The share of the soft open-file limit that `proxy.max_connections`
/// takes when unset, as a fraction: two fifths. A client connection
/// costs a descriptor and its request's upstream connection a second, so
/// at the cap four fifths are in use and the last fifth is left for what
/// else the proxy holds open (idle upstream connections kept for reuse,
/// DNS, the listeners, the metrics and management servers, the log, a
/// reload reading its config). HAProxy derives its default `maxconn` from
/// the limit the same way (about half of it).
pub const DEFAULT_MAX_CONNECTIONS_SHARE: (u64, u64) = (2, 5);

/// `proxy.max_connections` when the config leaves it unset: two fifths of
/// the soft open-file limit now (after [`raise`]), within 1..=1,000,000.
/// `None` if the limit cannot be read. Without such a cap, one workload
/// that opens connections until the proxy has no descriptor left makes
/// the connections already accepted fail too: their upstream dials get
/// `EMFILE` (502 `connect_failed`), as do DNS forwarding and a reload.
pub fn default_max_connections() -> Option<std::num::NonZeroU32> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    Some(max_connections_for(soft))
}

/// The soft open-file limit now; `None` if it cannot be read. The
/// upstream idle pool sizes its cap from it (`upstream::held`).
pub fn soft_limit() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// [`default_max_connections`] for a soft limit of `soft`.
pub fn max_connections_for(soft: u64) -> std::num::NonZeroU32 {
    let (num, den) = DEFAULT_MAX_CONNECTIONS_SHARE;
    let share = soft / den * num + soft % den * num / den;
    let max = u32::try_from(share.clamp(1, 1_000_000)).unwrap_or(1_000_000);
    std::num::NonZeroU32::new(max).unwrap_or(std::num::NonZeroU32::MIN)
}

/// The limits to give a child: the ones the process started with, if
/// [`raise`] changed them.
fn original() -> Option<(u64, u64)> {
    ORIGINAL.get().copied()
}

/// Makes `cmd`'s child start with the open-file limit the proxy started
/// with (nothing to do when the proxy did not raise it).
pub fn restore_in_child(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt as _;
    if let Some((soft, hard)) = original() {
        // SAFETY: the closure runs in the child between fork and exec, where
        // only async-signal-safe calls are allowed: it makes one setrlimit
        // system call on values copied in before the fork, and allocates
        // nothing. A failure leaves the child with the raised limit, which
        // is no reason not to run it.
        unsafe {
            cmd.pre_exec(move || {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, soft, hard);
                Ok(())
            });
        }
    }
    cmd
}

/// [`restore_in_child`] for a tokio command.
pub fn restore_in_tokio_child(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    if let Some((soft, hard)) = original() {
        // SAFETY: as in `restore_in_child`.
        unsafe {
            cmd.pre_exec(move || {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, soft, hard);
                Ok(())
            });
        }
    }
    cmd
}

/// For tests: the process's limits lowered below the hard limit (as when
/// started from a shell), then raised by [`raise`], once per process.
/// Returns the limits the children must get.
#[cfg(test)]
pub(crate) fn raised_for_tests() -> (u64, u64) {
    static ONCE: OnceLock<(u64, u64)> = OnceLock::new();
    *ONCE.get_or_init(|| {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        let started = soft.min(hard - 1);
        setrlimit(Resource::RLIMIT_NOFILE, started, hard).expect("setrlimit");
        let raised = raise().expect("raise");
        assert_eq!(
            raised,
            Some(Raised {
                from: started,
                to: hard
            })
        );
        (started, hard)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell that prints its own open-file limits (soft, hard).
    const PRINT_LIMITS: [&str; 2] = ["-c", "grep 'Max open files' /proc/$$/limits"];

    fn limits_in(stdout: &[u8]) -> Vec<u64> {
        String::from_utf8_lossy(stdout)
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    }

    #[test]
    fn the_default_connection_cap_is_two_fifths_of_the_limit_within_bounds() {
        let at = |soft| max_connections_for(soft).get();
        assert_eq!(at(20_000), 8_000);
        assert_eq!(at(65_536), 26_214);
        assert_eq!(at(1024), 409);
        assert_eq!(at(2), 1, "never 0");
        assert_eq!(at(0), 1, "never 0");
        assert_eq!(at(u64::MAX), 1_000_000, "RLIM_INFINITY");
    }

    #[test]
    fn a_child_starts_with_the_limit_the_process_started_with() {
        let (started, hard) = raised_for_tests();
        let mut cmd = std::process::Command::new("sh");
        restore_in_child(&mut cmd);
        let out = cmd.args(PRINT_LIMITS).output().expect("sh");
        assert_eq!(limits_in(&out.stdout), [started, hard]);
        // The process keeps the raised limit.
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit"),
            (hard, hard)
        );
    }

    #[tokio::test]
    async fn a_tokio_child_starts_with_the_limit_the_process_started_with() {
        let (started, hard) = raised_for_tests();
        let mut cmd = tokio::process::Command::new("sh");
        restore_in_tokio_child(&mut cmd);
        let out = cmd.args(PRINT_LIMITS).output().await.expect("sh");
        assert_eq!(limits_in(&out.stdout), [started, hard]);
    }
}
