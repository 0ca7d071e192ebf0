//! What is pinned under a pin directory: links, the cgroups they hold, and
//! the counters. Read without loading anything, so `iron-proxy status`
//! works whether or not a proxy runs.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::maps::{count_cookie_origins, read_counters, Counters};
use super::{cgroup, links, links_dir, maps_dir, present, read_dir_sorted, sys, InterceptError};

/// The state under a pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The pin directory.
    pub pin_path: PathBuf,
    /// Whether anything is pinned there.
    pub pinned: bool,
    /// Every pinned link.
    pub links: Vec<LinkStatus>,
    /// Counters, when the maps are pinned.
    pub counters: Option<Counters>,
    /// Open redirected sockets whose origin sits in the cookie map, when it
    /// is pinned (a build before it has none).
    pub origins_held: Option<u64>,
}

/// One pinned link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// Hook name (`connect4`, `skb_egress`, ...).
    pub hook: String,
    /// The pin.
    pub pin: PathBuf,
    /// The cgroup id the pin was created for.
    pub cgroup_id: u64,
    /// Its directory, if still found under the cgroup2 mount.
    pub cgroup_path: Option<PathBuf>,
    /// Kernel link id, if the link could be read.
    pub link_id: Option<u32>,
    /// Id of the program it runs.
    pub prog_id: Option<u32>,
    /// Whether the link is still attached to a live cgroup.
    pub attached: bool,
}

pub(crate) fn read(pin_path: &Path) -> Result<Status, InterceptError> {
    let mut status = Status {
        pin_path: pin_path.to_owned(),
        pinned: present(pin_path)?,
        links: Vec::new(),
        counters: None,
        origins_held: None,
    };
    let links_dir = links_dir(pin_path);
    if present(&links_dir)? {
        for pin in read_dir_sorted(&links_dir)? {
            let Some((cgroup_id, hook)) = links::pin_hook(&pin) else {
                continue;
            };
            let info = sys::obj_get(&pin)
                .and_then(|fd| sys::link_info(fd.as_fd()))
                .ok();
            let cgroup_path = cgroup::cgroup_path(cgroup_id);
            // A removed cgroup's links stay in the kernel, still naming it,
            // until the kernel releases the cgroup, some time after the
            // rmdir: they serve nobody, and a cgroup made again under the
            // same path has another id. So a link counts as attached only
            // while a cgroup with its id is there.
            let live = cgroup_path
                .as_deref()
                .is_some_and(|p| cgroup::cgroup_id(p).ok() == Some(cgroup_id));
            status.links.push(LinkStatus {
                hook,
                cgroup_id,
                cgroup_path,
                link_id: info.map(|i| i.id),
                prog_id: info.map(|i| i.prog_id),
                attached: live && info.is_some_and(|i| i.cgroup_id != 0),
                pin,
            });
        }
    }
    let maps = maps_dir(pin_path);
    if present(&maps)? {
        status.counters = Some(read_counters(&maps)?);
        if present(&maps.join(ebpf_common::map::IRON_COOKIE_ORIGIN))? {
            status.origins_held = Some(count_cookie_origins(&maps)?);
        }
    }
    Ok(status)
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.pinned {
            return writeln!(
                f,
                "interception: off (nothing pinned at {})",
                self.pin_path.display()
            );
        }
        let live = self.links.iter().filter(|l| l.attached).count();
        writeln!(
            f,
            "interception: {} of {} links attached (pinned at {})",
            live,
            self.links.len(),
            self.pin_path.display()
        )?;
        for l in &self.links {
            let path = l.cgroup_path.as_ref().map_or_else(
                || format!("cgroup id {}", l.cgroup_id),
                |p| p.display().to_string(),
            );
            let state = if l.attached { "attached" } else { "DETACHED" };
            writeln!(f, "  {:<13} {state:<9} {path}", l.hook)?;
        }
        if let Some(c) = &self.counters {
            writeln!(
                f,
                "counters: redirected={} denied={} udp_refused={} dns_redirected={} raw_refused={} backstop_dropped={} foreign_listener={} proxy_exempt={} tuple_recorded={} origdst_answered={} unconfigured={}",
                c.redirected, c.denied, c.udp_refused, c.dns_redirected, c.raw_refused,
                c.backstop_dropped, c.foreign_listener, c.proxy_exempt, c.tuple_recorded,
                c.origdst_answered, c.unconfigured
            )?;
        }
        if let Some(n) = self.origins_held {
            writeln!(
                f,
                "origins: {n} open redirected sockets in the cookie map (room for {}; beyond it, socket-local storage)",
                ebpf_common::limits::IRON_COOKIE_ORIGINS_MAX
            )?;
        }
        Ok(())
    }
}
