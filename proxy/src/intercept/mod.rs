//! eBPF transparent interception: loads the programs of `iron-proxy-ebpf`,
//! writes the settings into their maps, attaches them to the selected
//! cgroups and pins everything under bpffs.
//!
//! Pins keep interception in force when the proxy exits or crashes: the
//! workloads then fail closed (nothing listens where they are sent).
//! [`Interceptor::detach`] is the only way interception ends. A restarted
//! proxy calling [`Interceptor::attach`] with the same `pin_path` reuses the
//! pinned maps and swaps the programs inside the pinned links atomically.
//!
//! Pin layout: `<pin_path>/maps/<map>`, `<pin_path>/links/<cgroup id>_<hook>`
//! and `<pin_path>/progs/<hook>` (the programs in force, for linking a
//! selected cgroup that was re-created: [`Interceptor::reattach`]).

mod cgroup;
mod dns_senders;
mod links;
mod loader;
mod maps;
pub mod nft;
mod origin;
mod reattach;
mod settings;
mod status;
pub mod subuid;
mod sys;
pub mod workload;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::os::fd::OwnedFd;

pub use cgroup::{
    cgroup2_mount, cgroup_id, cgroup_name, cgroup_name_cached, cgroup_path, current_cgroup,
    resolve_cgroup, CgroupError,
};
pub use dns_senders::{DnsSenders, DnsSendersError};
pub use links::LinksError;
pub use loader::{child_main as loader_main, LoaderError, LOADER_ENV};
pub use maps::{addr16, Counters, MapsError};
pub use origin::{Origin, OriginError, OriginalDst};
pub use reattach::Reattached;
pub use settings::{
    mark_listener, resolve_user, DenyCidr, InterceptSettings, ProxyIdentity, SettingsError,
    UidRange,
};
pub use status::{LinkStatus, Status};
pub use workload::{Client, ClientIdentity, DatagramIdentity, Workload};

/// The oldest kernel with every hook used here (links and getpeername hooks
/// since 5.8, sock_release since 5.9).
pub const MIN_KERNEL: (u32, u32) = (5, 9);

/// Errors of attaching, detaching and inspecting interception.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The kernel is older than [`MIN_KERNEL`].
    #[error("kernel {release} is too old: eBPF interception needs Linux 5.9 or newer (cgroup BPF links, getpeername and sock_release hooks)")]
    KernelTooOld {
        /// `uname -r`.
        release: String,
    },
    /// The kernel version could not be read.
    #[error("reading the kernel version")]
    KernelVersion(#[source] std::io::Error),
    /// cgroup discovery failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A selected cgroup is not a cgroup v2 directory.
    #[error("{0} is not a cgroup v2 directory")]
    NotCgroup2(PathBuf),
    /// No cgroup was selected.
    #[error("no cgroup selected for interception")]
    NoCgroups,
    /// The pin directory's parent is not on bpffs.
    #[error("{0} is not on a BPF filesystem (mount one with `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs(PathBuf),
    /// The pin directory could not be created or read.
    #[error("pin directory {path}")]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Loading or linking programs failed.
    #[error(transparent)]
    Links(#[from] LinksError),
    /// Writing or reading the maps failed.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// The loader child process failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// [`Interceptor::adopt`] found no pinned links to take over.
    #[error("nothing is attached under {0}: the loader pinned no links")]
    NotAttached(PathBuf),
    /// Opening the origin lookup failed.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// Opening the DNS senders lookup failed.
    #[error(transparent)]
    DnsSenders(#[from] DnsSendersError),
}

pub(crate) fn maps_dir(pin_path: &Path) -> PathBuf {
    pin_path.join("maps")
}

pub(crate) fn links_dir(pin_path: &Path) -> PathBuf {
    pin_path.join("links")
}

pub(crate) fn progs_dir(pin_path: &Path) -> PathBuf {
    pin_path.join("progs")
}

/// Interception in force. Dropping it keeps interception in force (the links
/// stay pinned); call [`Interceptor::detach`] to end it.
pub struct Interceptor {
    pin_path: PathBuf,
    original_dst: OriginalDst,
    dns_senders: DnsSenders,
    /// Links this run created, kept open for the process's lifetime.
    _links: Vec<OwnedFd>,
    /// Keeps the programs' fds open until drop (the links hold them after);
    /// `None` when another process loaded them ([`Interceptor::adopt`]).
    _loaded: Option<links::Loaded>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("pin_path", &self.pin_path)
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Loads, configures, attaches and pins. With pins already under
    /// `settings.pin_path`, takes them over: maps are reused and updated in
    /// place (a map whose layout changed in an upgrade is replaced: the
    /// attached programs keep the old one until their link switches),
    /// programs are swapped inside the existing links, and links of cgroups
    /// no longer selected are detached last. No step leaves workloads
    /// unintercepted.
    pub fn attach(settings: &InterceptSettings) -> Result<Self, InterceptError> {
        preflight(settings)?;
        let pin = &settings.pin_path;
        let (maps_dir, links_dir) = (maps_dir(pin), links_dir(pin));
        for dir in [pin, &maps_dir, &links_dir, &progs_dir(pin)] {
            create_private_dir(dir)?;
        }
        let aside = maps::set_aside_incompatible(&maps_dir)?;
        let attached = Self::load_and_link(settings, &maps_dir, &links_dir);
        match &attached {
            // The links now run the new programs, which use the new maps.
            Ok(_) => {
                for old in &aside {
                    if let Err(e) = std::fs::remove_file(old) {
                        tracing::warn!(pin = %old.display(), error = %e, "removing a replaced map");
                    }
                }
            }
            Err(_) => maps::restore_aside(&aside),
        }
        attached
    }

    fn load_and_link(
        settings: &InterceptSettings,
        maps_dir: &Path,
        links_dir: &Path,
    ) -> Result<Self, InterceptError> {
        let pin = &settings.pin_path;
        let mut loaded = links::Loaded::load(maps_dir)?;
        // The kernel BTF aya parsed while loading is freed by now.
        crate::alloc::return_free_memory();
        maps::SettingsMaps::open(maps_dir)?.apply(settings)?;

        let mut wanted = BTreeSet::new();
        let mut created = Vec::new();
        let plan = settings
            .cgroups
            .iter()
            .flat_map(|c| links::WORKLOAD_HOOKS.iter().map(move |h| (h, c)))
            .chain(
                settings
                    .getsockopt_cgroups
                    .iter()
                    .map(|c| (&links::GETSOCKOPT_HOOK, c)),
            );
        for (hook, cgroup) in plan {
            let (path, link) = loaded.ensure(hook, cgroup, links_dir)?;
            wanted.insert(path);
            created.extend(link);
        }
        for stale in read_dir_sorted(links_dir)? {
            if !wanted.contains(&stale) {
                tracing::info!(pin = %stale.display(), "detaching a link no longer selected");
                links::detach_pinned(&stale)?;
            }
        }
        loaded.pin_programs(&progs_dir(pin))?;
        Ok(Self {
            pin_path: pin.clone(),
            original_dst: OriginalDst::open(pin)?,
            dns_senders: DnsSenders::open(pin)?,
            _links: created,
            _loaded: Some(loaded),
        })
    }

    /// Takes over interception another process attached and pinned under
    /// `pin_path` (the loader child, see [`Interceptor::attach_in_child`]):
    /// opens the pinned maps. The pinned links keep the programs attached.
    pub fn adopt(pin_path: &Path) -> Result<Self, InterceptError> {
        let links = links_dir(pin_path);
        if read_dir_sorted(&links)
            .map(|l| l.is_empty())
            .unwrap_or(true)
        {
            return Err(InterceptError::NotAttached(pin_path.to_owned()));
        }
        Ok(Self {
            pin_path: pin_path.to_owned(),
            original_dst: OriginalDst::open(pin_path)?,
            dns_senders: DnsSenders::open(pin_path)?,
            _links: Vec::new(),
            _loaded: None,
        })
    }

    /// Ends interception: detaches every pinned link (even ones another
    /// process holds open), then removes every pin and the pin directory.
    /// Returns whether anything was pinned; `Ok(false)` only when the pin
    /// directory is not there. A pin directory that cannot be looked at
    /// (`EACCES` for an unprivileged user) is an error, not "nothing pinned".
    pub fn detach(pin_path: &Path) -> Result<bool, InterceptError> {
        if !present(pin_path)? {
            return Ok(false);
        }
        let links_dir = links_dir(pin_path);
        if present(&links_dir)? {
            for pin in read_dir_sorted(&links_dir)? {
                links::detach_pinned(&pin)?;
            }
        }
        let (maps_dir, progs_dir) = (maps_dir(pin_path), progs_dir(pin_path));
        for dir in [&maps_dir, &progs_dir] {
            if present(dir)? {
                for pin in read_dir_sorted(dir)? {
                    std::fs::remove_file(&pin).map_err(|source| InterceptError::PinDir {
                        path: pin.clone(),
                        source,
                    })?;
                }
            }
        }
        for dir in [links_dir.as_path(), &maps_dir, &progs_dir, pin_path] {
            if present(dir)? {
                std::fs::remove_dir(dir).map_err(|source| InterceptError::PinDir {
                    path: dir.to_owned(),
                    source,
                })?;
            }
        }
        Ok(true)
    }

    /// What is attached where, and the counters.
    pub fn status(pin_path: &Path) -> Result<Status, InterceptError> {
        status::read(pin_path)
    }

    /// Replaces the kernel deny list of the interception pinned at
    /// `pin_path` (a reload of `proxy.upstream_deny_cidrs`). New entries go
    /// in before stale ones go, so a range in both the old and the new list
    /// is never absent. Returns the number of trie entries written.
    pub fn update_deny(pin_path: &Path, deny: &[DenyCidr]) -> Result<usize, InterceptError> {
        Ok(maps::SettingsMaps::open(&maps_dir(pin_path))?.apply_deny(deny)?)
    }

    /// The origin lookup for accepted connections.
    pub fn original_dst(&self) -> OriginalDst {
        self.original_dst.clone()
    }

    /// The lookup of redirected DNS datagrams' workloads.
    pub fn dns_senders(&self) -> DnsSenders {
        self.dns_senders.clone()
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, InterceptError> {
        Ok(maps::read_counters(&maps_dir(&self.pin_path))?)
    }

    /// Where the maps and links are pinned.
    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }
}

fn preflight(settings: &InterceptSettings) -> Result<(), InterceptError> {
    let (version, release) = sys::kernel_version().map_err(InterceptError::KernelVersion)?;
    if version < MIN_KERNEL {
        return Err(InterceptError::KernelTooOld { release });
    }
    cgroup2_mount()?;
    if settings.cgroups.is_empty() {
        return Err(InterceptError::NoCgroups);
    }
    for c in settings.cgroups.iter().chain(&settings.getsockopt_cgroups) {
        if !c.is_absolute() || !sys::is_cgroup2(c).unwrap_or(false) {
            return Err(InterceptError::NotCgroup2(c.clone()));
        }
    }
    let parent = settings
        .pin_path
        .parent()
        .ok_or_else(|| InterceptError::NotBpffs(settings.pin_path.clone()))?;
    if !sys::is_bpffs(parent).unwrap_or(false) {
        return Err(InterceptError::NotBpffs(parent.to_owned()));
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), InterceptError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(InterceptError::PinDir {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Whether `path` is there: `false` only when it is not (`NotFound`). Any
/// other failure to look (`EACCES` under a 0700 pin directory or bpffs
/// mount) is an error naming the path: `Path::exists` would call it absent.
pub(crate) fn present(path: &Path) -> Result<bool, InterceptError> {
    presence(path, std::fs::symlink_metadata(path).map(drop))
}

/// [`present`]'s classification of a lookup's outcome.
fn presence(path: &Path, lookup: std::io::Result<()>) -> Result<bool, InterceptError> {
    match lookup {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(InterceptError::PinDir {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, InterceptError> {
    let err = |source| InterceptError::PinDir {
        path: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        out.push(entry.map_err(err)?.path());
    }
    out.sort();
    Ok(out)
}
