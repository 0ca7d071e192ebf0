//! Linking the programs in force to selected cgroups that were removed and
//! made again.
//!
//! Programs attach to a cgroup, not to its path. When the directory named in
//! `intercept.cgroups` is deleted (the kernel then detaches its links) and
//! created again (systemd restarting a unit whose own cgroup is selected), the
//! new cgroup has no programs until they are linked to it. The proxy's
//! watcher (`app::cgroup_watch`) calls [`Interceptor::reattach`] when a
//! selected path's cgroup id changes: it links the programs the loader pinned
//! under `progs/` (nothing is loaded, so it takes a few system calls per
//! hook), and drops the pins of links the kernel detached.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::cgroup::{cgroup_id, CgroupError};
use super::{links, links_dir, progs_dir, read_dir_sorted, InterceptError, Interceptor};

/// What [`Interceptor::reattach`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reattached {
    /// Links created (hooks of cgroups that had none attached).
    pub linked: usize,
    /// Pins of detached links removed (cgroups that went away).
    pub dropped: usize,
    /// Selected cgroups that do not exist now (nothing runs there to
    /// intercept; linked once they exist again).
    pub absent: Vec<PathBuf>,
    /// Pins of links whose cgroup is gone but which the kernel has not
    /// detached yet (it does so once the removed cgroup is released, a
    /// moment after `rmdir`): dropped by a later call.
    pub lingering: usize,
}

impl Interceptor {
    /// Makes every hook of every selected cgroup run through a pinned,
    /// attached link, with the programs pinned by the last load: a cgroup
    /// whose links are all attached is left as it is, one that was made
    /// again gets new links (the egress backstop first, connect last, as at
    /// start), and pins of links whose cgroup went away are removed.
    /// `cgroups` and `getsockopt_cgroups` are the settings' selection.
    pub fn reattach(
        pin_path: &Path,
        cgroups: &[PathBuf],
        getsockopt_cgroups: &[PathBuf],
    ) -> Result<Reattached, InterceptError> {
        let (links_dir, progs_dir) = (links_dir(pin_path), progs_dir(pin_path));
        let plan = cgroups
            .iter()
            .flat_map(|c| links::WORKLOAD_HOOKS.iter().map(move |h| (h, c)))
            .chain(
                getsockopt_cgroups
                    .iter()
                    .map(|c| (&links::GETSOCKOPT_HOOK, c)),
            );
        let mut done = Reattached::default();
        let mut live_ids = BTreeSet::new();
        let mut programs: HashMap<&'static str, OwnedFd> = HashMap::new();
        for (hook, cgroup) in plan {
            let id = match cgroup_id(cgroup) {
                Ok(id) => id,
                Err(CgroupError::Stat { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    if !done.absent.contains(cgroup) {
                        done.absent.push(cgroup.clone());
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            live_ids.insert(id);
            let pin = links_dir.join(format!("{id}_{}", hook.name));
            if links::is_attached(&pin) {
                continue;
            }
            let prog = match programs.entry(hook.name) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(links::pinned_program(&progs_dir, hook)?)
                }
            };
            links::ensure_link(prog.as_fd(), hook, cgroup, &links_dir)?;
            done.linked += 1;
        }
        for pin in read_dir_sorted(&links_dir)? {
            let Some((id, _)) = links::pin_hook(&pin) else {
                continue;
            };
            if live_ids.contains(&id) {
                continue;
            }
            if links::is_attached(&pin) {
                done.lingering += 1;
            } else {
                links::detach_pinned(&pin)?;
                done.dropped += 1;
            }
        }
        Ok(done)
    }
}
