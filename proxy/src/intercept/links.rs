//! Loading the programs and keeping their cgroup links pinned.
//!
//! A link is pinned as `links/<cgroup id>_<hook>`. When that pin already
//! exists (a previous proxy run, possibly crashed), the new program replaces
//! the old one inside the same link with `BPF_LINK_UPDATE`: the hook never
//! goes empty, so workloads never reach the network directly.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::programs::{CgroupSkb, CgroupSock, CgroupSockAddr, CgroupSockopt, Program, ProgramError};
use aya::{Ebpf, EbpfError, EbpfLoader};

use super::cgroup::{cgroup_id, CgroupError};
use super::sys;

/// Errors of loading and linking programs.
#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    /// A BPF object failed to load (maps or relocation).
    #[error("loading BPF object {object} (needs Linux 5.9 or newer, and CAP_BPF with CAP_NET_ADMIN, or root)")]
    Object {
        /// Object name.
        object: &'static str,
        /// The underlying error.
        #[source]
        source: Box<EbpfError>,
    },
    /// A program is missing from its object.
    #[error("program {program} is missing from object {object}")]
    Missing {
        /// Program name.
        program: &'static str,
        /// Object name.
        object: &'static str,
    },
    /// The kernel refused a program.
    #[error("loading {program} for the {hook} hook (needs Linux {since} or newer)")]
    Load {
        /// Program name.
        program: &'static str,
        /// Hook name.
        hook: &'static str,
        /// Kernel version that introduced the hook.
        since: &'static str,
        /// The underlying error.
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching a program to a cgroup failed.
    #[error("attaching {hook} to cgroup {cgroup} (another exclusive program there, or an ancestor cgroup already has one)")]
    Attach {
        /// Hook name.
        hook: &'static str,
        /// The cgroup.
        cgroup: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Pinning, replacing or detaching a link failed.
    #[error("{op} link {pin}")]
    Pin {
        /// What was being done.
        op: &'static str,
        /// The link's pin.
        pin: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The cgroup could not be opened.
    #[error("opening cgroup {path}")]
    Cgroup {
        /// The cgroup.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The cgroup id could not be read.
    #[error(transparent)]
    CgroupId(#[from] CgroupError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SockAddr,
    Sockopt,
    Sock,
    Skb,
}

/// One attach point: which program, from which object, and since when the
/// kernel has it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hook {
    pub(crate) name: &'static str,
    object: &'static str,
    program: &'static str,
    kind: Kind,
    /// `enum bpf_attach_type`.
    attach_type: u32,
    since: &'static str,
}

const fn hook(
    name: &'static str,
    object: &'static str,
    program: &'static str,
    kind: Kind,
    attach_type: u32,
    since: &'static str,
) -> Hook {
    Hook {
        name,
        object,
        program,
        kind,
        attach_type,
        since,
    }
}

// `enum bpf_attach_type` values.
const BPF_CGROUP_INET_EGRESS: u32 = 1;
const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
const BPF_CGROUP_INET_SOCK_RELEASE: u32 = 34;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
const BPF_CGROUP_UDP4_RECVMSG: u32 = 19;
const BPF_CGROUP_UDP6_RECVMSG: u32 = 20;
const BPF_CGROUP_GETSOCKOPT: u32 = 21;
const BPF_CGROUP_SETSOCKOPT: u32 = 22;
const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;
const BPF_CGROUP_INET6_GETPEERNAME: u32 = 30;

/// Hooks attached to every intercepted cgroup. The egress backstop and
/// sock_create come first and the connect hooks last, so a half-attached
/// cgroup refuses more, not less.
pub(crate) const WORKLOAD_HOOKS: [Hook; 12] = [
    hook(
        "skb_egress",
        "skb",
        "iron_skb_egress",
        Kind::Skb,
        BPF_CGROUP_INET_EGRESS,
        "5.0",
    ),
    hook(
        "sock_create",
        "sock_create",
        "iron_sock_create",
        Kind::Sock,
        BPF_CGROUP_INET_SOCK_CREATE,
        "4.10",
    ),
    hook(
        "setsockopt",
        "sock_create",
        "iron_setsockopt",
        Kind::Sockopt,
        BPF_CGROUP_SETSOCKOPT,
        "5.3",
    ),
    hook(
        "sock_release",
        "sock_create",
        "iron_sock_release",
        Kind::Sock,
        BPF_CGROUP_INET_SOCK_RELEASE,
        "5.9",
    ),
    hook(
        "recvmsg4",
        "udp",
        "iron_recvmsg4",
        Kind::SockAddr,
        BPF_CGROUP_UDP4_RECVMSG,
        "5.2",
    ),
    hook(
        "recvmsg6",
        "udp",
        "iron_recvmsg6",
        Kind::SockAddr,
        BPF_CGROUP_UDP6_RECVMSG,
        "5.2",
    ),
    hook(
        "getpeername4",
        "udp",
        "iron_getpeername4",
        Kind::SockAddr,
        BPF_CGROUP_INET4_GETPEERNAME,
        "5.8",
    ),
    hook(
        "getpeername6",
        "udp",
        "iron_getpeername6",
        Kind::SockAddr,
        BPF_CGROUP_INET6_GETPEERNAME,
        "5.8",
    ),
    hook(
        "sendmsg4",
        "udp",
        "iron_sendmsg4",
        Kind::SockAddr,
        BPF_CGROUP_UDP4_SENDMSG,
        "4.18",
    ),
    hook(
        "sendmsg6",
        "udp",
        "iron_sendmsg6",
        Kind::SockAddr,
        BPF_CGROUP_UDP6_SENDMSG,
        "4.18",
    ),
    hook(
        "connect4",
        "connect",
        "iron_connect4",
        Kind::SockAddr,
        BPF_CGROUP_INET4_CONNECT,
        "4.17",
    ),
    hook(
        "connect6",
        "connect",
        "iron_connect6",
        Kind::SockAddr,
        BPF_CGROUP_INET6_CONNECT,
        "4.17",
    ),
];

/// The hook answering `SO_ORIGINAL_DST` where the proxy runs.
pub(crate) const GETSOCKOPT_HOOK: Hook = hook(
    "getsockopt",
    "getsockopt",
    "iron_getsockopt",
    Kind::Sockopt,
    BPF_CGROUP_GETSOCKOPT,
    "5.3",
);

/// The loaded objects, their maps reused from (or pinned to) `maps_dir`.
pub(crate) struct Loaded {
    objects: Vec<(&'static str, Ebpf)>,
}

impl Loaded {
    /// Loads every object and every program in it.
    pub(crate) fn load(maps_dir: &Path) -> Result<Self, LinksError> {
        let mut objects = Vec::new();
        // One loader for every object: each new loader parses the kernel's
        // BTF (/sys/kernel/btf/vmlinux, several MB) again.
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(maps_dir);
        for obj in iron_proxy_ebpf::OBJECTS {
            let ebpf = loader.load(obj.bytes).map_err(|e| LinksError::Object {
                object: obj.name,
                source: Box::new(e),
            })?;
            objects.push((obj.name, ebpf));
        }
        let mut loaded = Self { objects };
        for h in WORKLOAD_HOOKS.iter().chain([&GETSOCKOPT_HOOK]) {
            let load_err = |e| LinksError::Load {
                program: h.program,
                hook: h.name,
                since: h.since,
                source: Box::new(e),
            };
            let p = loaded.program_mut(h)?;
            match h.kind {
                Kind::SockAddr => <&mut CgroupSockAddr>::try_from(p).and_then(|p| p.load()),
                Kind::Sockopt => <&mut CgroupSockopt>::try_from(p).and_then(|p| p.load()),
                Kind::Sock => <&mut CgroupSock>::try_from(p).and_then(|p| p.load()),
                Kind::Skb => <&mut CgroupSkb>::try_from(p).and_then(|p| p.load()),
            }
            .map_err(load_err)?;
        }
        Ok(loaded)
    }

    fn program_mut(&mut self, h: &Hook) -> Result<&mut Program, LinksError> {
        self.objects
            .iter_mut()
            .find(|(name, _)| *name == h.object)
            .and_then(|(_, ebpf)| ebpf.program_mut(h.program))
            .ok_or(LinksError::Missing {
                program: h.program,
                object: h.object,
            })
    }

    /// Makes sure `h` runs on `cgroup` through a link pinned in `links_dir`
    /// ([`ensure_link`] with the program loaded here).
    pub(crate) fn ensure(
        &mut self,
        h: &Hook,
        cgroup: &Path,
        links_dir: &Path,
    ) -> Result<(PathBuf, Option<OwnedFd>), LinksError> {
        let prog_fd = self.prog_fd(h)?;
        ensure_link(prog_fd, h, cgroup, links_dir)
    }

    fn prog_fd(&mut self, h: &Hook) -> Result<BorrowedFd<'_>, LinksError> {
        let program = self.program_mut(h)?;
        Ok(program
            .fd()
            .map_err(|e| LinksError::Load {
                program: h.program,
                hook: h.name,
                since: h.since,
                source: Box::new(e),
            })?
            .as_fd())
    }

    /// Pins every loaded program as `progs_dir/<hook>`, replacing what a
    /// previous run pinned there, so that a cgroup re-created later can be
    /// linked again without loading anything ([`ensure_link`] with
    /// [`pinned_program`]). Each pin is swapped in with a rename: a reader
    /// never finds the name missing.
    pub(crate) fn pin_programs(&mut self, progs_dir: &Path) -> Result<(), LinksError> {
        for h in WORKLOAD_HOOKS.iter().chain([&GETSOCKOPT_HOOK]) {
            let pin = progs_dir.join(h.name);
            // bpffs refuses dots in names.
            let fresh = progs_dir.join(format!("{}-new", h.name));
            let pin_err = |op| {
                let pin = pin.clone();
                move |source| LinksError::Pin { op, pin, source }
            };
            if fresh.exists() {
                std::fs::remove_file(&fresh).map_err(pin_err("removing a leftover of"))?;
            }
            sys::obj_pin(self.prog_fd(h)?, &fresh).map_err(pin_err("pinning the program of"))?;
            std::fs::rename(&fresh, &pin).map_err(pin_err("replacing the program of"))?;
        }
        Ok(())
    }
}

/// Opens the program [`Loaded::pin_programs`] pinned for `h`.
pub(crate) fn pinned_program(progs_dir: &Path, h: &Hook) -> Result<OwnedFd, LinksError> {
    let pin = progs_dir.join(h.name);
    sys::obj_get(&pin).map_err(|source| LinksError::Pin {
        op: "opening the program of",
        pin,
        source,
    })
}

/// Whether the link pinned at `pin` is attached to a live cgroup (a link
/// whose cgroup was removed is detached by the kernel).
pub(crate) fn is_attached(pin: &Path) -> bool {
    sys::obj_get(pin)
        .and_then(|fd| sys::link_info(fd.as_fd()))
        .is_ok_and(|i| i.cgroup_id != 0)
}

/// Makes sure `h` runs `prog_fd` on `cgroup` through a link pinned in
/// `links_dir`: replaces the program of an existing pinned link, or attaches
/// and pins a new one. Returns the pin's path, and the new link.
pub(crate) fn ensure_link(
    prog_fd: BorrowedFd<'_>,
    h: &Hook,
    cgroup: &Path,
    links_dir: &Path,
) -> Result<(PathBuf, Option<OwnedFd>), LinksError> {
    let pin = links_dir.join(format!("{}_{}", cgroup_id(cgroup)?, h.name));
    let pin_err = |op| {
        let pin = pin.clone();
        move |source| LinksError::Pin { op, pin, source }
    };

    if pin.exists() {
        let link = sys::obj_get(&pin).map_err(pin_err("opening"))?;
        match sys::link_update(link.as_fd(), prog_fd) {
            Ok(()) => return Ok((pin, None)),
            // ENOLINK: the link was detached (its cgroup went away):
            // drop the stale pin and attach afresh.
            Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {
                std::fs::remove_file(&pin).map_err(pin_err("removing stale"))?;
            }
            Err(e) => return Err(pin_err("replacing the program of")(e)),
        }
    }

    let cgroup_file = File::open(cgroup).map_err(|source| LinksError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    let link = sys::link_create(prog_fd, cgroup_file.as_fd(), h.attach_type).map_err(|source| {
        LinksError::Attach {
            hook: h.name,
            cgroup: cgroup.to_owned(),
            source,
        }
    })?;
    sys::obj_pin(link.as_fd(), &pin).map_err(pin_err("pinning"))?;
    Ok((pin, Some(link)))
}

/// Forces the pinned link off its cgroup, then removes the pin.
pub(crate) fn detach_pinned(pin: &Path) -> Result<(), LinksError> {
    let pin_err = |op| {
        let pin = pin.to_owned();
        move |source| LinksError::Pin { op, pin, source }
    };
    let link = sys::obj_get(pin).map_err(pin_err("opening"))?;
    match sys::link_detach(link.as_fd()) {
        // ENOLINK: already detached.
        Err(e) if e.raw_os_error() != Some(libc::ENOLINK) => {
            return Err(pin_err("detaching")(e));
        }
        _ => {}
    }
    std::fs::remove_file(pin).map_err(pin_err("removing"))
}

/// The hook name encoded in a link pin's file name.
pub(crate) fn pin_hook(pin: &Path) -> Option<(u64, String)> {
    let name = pin.file_name()?.to_str()?;
    let (id, hook) = name.split_once('_')?;
    Some((id.parse().ok()?, hook.to_owned()))
}
