//! Keeps interception on selected cgroups that are removed and made again.
//!
//! Interception attaches to a cgroup, not to its path: when the directory an
//! `intercept.cgroups` entry names is deleted and created again (systemd
//! restarting a unit whose own cgroup is selected, a container re-created),
//! the new cgroup starts with nothing attached. This task watches the
//! selected paths (inotify on their parents, which reports the `mkdir` at
//! once, and a check every [`POLL`] besides) and, when a path's cgroup id
//! changes, relinks interception: eBPF links the pinned programs to the new
//! cgroup (`Interceptor::reattach`), nftables rebuilds its table (its rules
//! hold cgroup ids). A relink that fails makes `/readyz` answer 503 and is
//! tried again at every check.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

use crate::state::Shared;

/// How often the selected paths are checked besides inotify's events (a
/// watched parent that was itself made again, a lost event).
const POLL: Duration = Duration::from_secs(1);

/// Links of a removed cgroup that the kernel has not detached yet (open
/// sockets can keep a removed cgroup alive for long) are looked at again
/// after 1 s, then twice as long each time, up to this.
const LINGER_RETRY_MAX: Duration = Duration::from_secs(60);

/// What a relink did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relinked {
    /// Hooks (eBPF links, or nftables tables) put in place.
    pub linked: usize,
    /// Something is left for a later call (links of a removed cgroup the
    /// kernel has not detached yet).
    pub retry: bool,
}

/// Puts interception on every selected cgroup that exists; the error is
/// shown to operators as is.
pub type Relink = Arc<dyn Fn() -> Result<Relinked, String> + Send + Sync>;

/// `iron_proxy_intercept_relinks_total{result}`: selected cgroups seen made
/// again that interception was linked to (`linked`), and relinks that failed
/// (`failed`, one per attempt).
#[derive(Debug, Default)]
pub struct RelinkCounts {
    linked: AtomicU64,
    failed: AtomicU64,
}

impl RelinkCounts {
    /// `(result, count)` series for the metric.
    pub fn series(&self) -> Vec<(Vec<String>, u64)> {
        vec![
            (vec!["linked".into()], self.linked.load(Ordering::Relaxed)),
            (vec!["failed".into()], self.failed.load(Ordering::Relaxed)),
        ]
    }
}

/// The selected paths whose cgroup changed from `known` to `now` (made
/// again, made for the first time, or removed), by index.
fn changed(known: &[Option<u64>], now: &[Option<u64>]) -> Vec<usize> {
    known
        .iter()
        .zip(now)
        .enumerate()
        .filter(|(_, (k, n))| k != n)
        .map(|(i, _)| i)
        .collect()
}

/// The cgroup id at each path, `None` where nothing is.
pub fn ids(paths: &[PathBuf]) -> Vec<Option<u64>> {
    paths
        .iter()
        .map(|p| crate::intercept::cgroup_id(p).ok())
        .collect()
}

/// The directories to watch: each selected path's parent, once.
fn parents(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Watches `paths` (the selected cgroups, whose ids were `known` before
/// interception was attached) until aborted, relinking with `relink` when
/// one changes, and keeps `shared`'s interception gap (and so `/readyz`) in
/// step with the outcome.
pub fn spawn(
    paths: Vec<PathBuf>,
    mut known: Vec<Option<u64>>,
    relink: Relink,
    shared: Arc<Shared>,
    counts: Arc<RelinkCounts>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let notify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(std::io::Error::from)
            .and_then(|i| {
                // SAFETY: `Watch` owns its inotify fd and always returns it.
                unsafe { AsyncFd::register_with_interest(Watch(i), Interest::READABLE) }
                    .map_err(std::io::Error::from)
            }) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable: selected cgroups are checked every second only");
                None
            }
        };
        let parents = parents(&paths);
        // `known` dates from before the attach: a cgroup made again since is
        // a change the first check sees (taken here, it would already be the
        // new id, and never linked).
        let mut retry_at = None;
        let mut linger_wait = POLL;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(fd) = &notify {
                // Cheap when already watched; a parent made again needs a
                // new watch.
                for p in &parents {
                    let flags = AddWatchFlags::IN_CREATE
                        | AddWatchFlags::IN_DELETE
                        | AddWatchFlags::IN_MOVED_TO
                        | AddWatchFlags::IN_ONLYDIR;
                    let _ = fd.get_ref().0.add_watch(p.as_path(), flags);
                }
            }
            wait(notify.as_ref(), &mut tick).await;
            let now = ids(&paths);
            let moved = changed(&known, &now);
            let due = retry_at.is_some_and(|t| tokio::time::Instant::now() >= t);
            if moved.is_empty() && !due {
                continue;
            }
            for &i in &moved {
                let path = paths[i].display();
                match now[i] {
                    Some(_) => {
                        tracing::warn!(cgroup = %path, "a selected cgroup was made again: linking interception to it")
                    }
                    None => tracing::info!(cgroup = %path, "a selected cgroup was removed"),
                }
            }
            let r = relink.clone();
            let outcome = tokio::task::spawn_blocking(move || r())
                .await
                .unwrap_or_else(|e| Err(format!("the relink task failed: {e}")));
            match outcome {
                Ok(done) => {
                    // Counted by cgroup seen made again, not by links made: a
                    // relink started when the path was still missing may have
                    // linked the new cgroup already.
                    let made_again = moved.iter().filter(|&&i| now[i].is_some()).count();
                    if made_again > 0 {
                        counts
                            .linked
                            .fetch_add(made_again as u64, Ordering::Relaxed);
                        tracing::info!(
                            cgroups = made_again,
                            links = done.linked,
                            "interception linked to the selected cgroups made again"
                        );
                    }
                    if shared.interception_gap() {
                        tracing::info!("every selected cgroup is intercepted again");
                    }
                    shared.set_interception_gap(false);
                    known = now;
                    // Links the kernel has not detached yet: a removed
                    // cgroup that open sockets keep alive can linger long.
                    retry_at = done
                        .retry
                        .then(|| tokio::time::Instant::now() + linger_wait);
                    linger_wait = if done.retry {
                        (linger_wait * 2).min(LINGER_RETRY_MAX)
                    } else {
                        POLL
                    };
                }
                Err(e) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    // Only a cgroup that exists can run unintercepted.
                    let gap = moved.iter().any(|&i| now[i].is_some()) || shared.interception_gap();
                    if gap {
                        tracing::error!(error = %e, "linking interception to a selected cgroup failed: it runs unintercepted; /readyz answers 503 until a retry succeeds");
                    } else {
                        tracing::warn!(error = %e, "tidying the links of a removed cgroup failed");
                    }
                    shared.set_interception_gap(gap);
                    known = now;
                    retry_at = Some(tokio::time::Instant::now());
                }
            }
        }
    })
}

/// The inotify instance, registered with the runtime by its fd.
struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Until an inotify event under a watched parent or the next tick.
async fn wait(notify: Option<&AsyncFd<Watch>>, tick: &mut tokio::time::Interval) {
    let Some(fd) = notify else {
        tick.tick().await;
        return;
    };
    tokio::select! {
        ready = fd.readable() => {
            if let Ok(mut guard) = ready {
                // Read every queued event; which child it names does not
                // matter, the selected paths are all checked.
                while guard.get_inner().0.read_events().is_ok() {}
                guard.clear_ready();
            }
        }
        _ = tick.tick() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_whose_id_changed_appeared_or_went_is_reported() {
        let known = [Some(1), Some(2), None, Some(4)];
        let now = [Some(1), Some(9), Some(3), None];
        assert_eq!(changed(&known, &now), vec![1, 2, 3]);
        assert!(changed(&now, &now).is_empty());
    }

    #[test]
    fn each_parent_is_watched_once() {
        let paths = [
            PathBuf::from("/cg/ci.slice/a.service"),
            PathBuf::from("/cg/ci.slice/b.service"),
            PathBuf::from("/cg/other"),
        ];
        assert_eq!(
            parents(&paths),
            vec![PathBuf::from("/cg"), PathBuf::from("/cg/ci.slice")]
        );
    }
}
