//! `intercept.mode: nftables`: the fallback for hosts without cgroup BPF.
//! One `inet` table per instance ([`table_name`]) REDIRECTs the selected
//! workloads' TCP to the transparent listener and their port 53 to the DNS
//! listener, and drops their traffic to `upstream_deny_cidrs`, their other
//! UDP and everything that is neither TCP nor UDP.
//!
//! The table outlives the proxy (fail closed: REDIRECT to a closed port is
//! connection refused); [`NftInterceptor::detach`] is the only way it goes.
//! The original destination comes from conntrack (`SO_ORIGINAL_DST`), the
//! connecting process from `/proc` ([`owner`]).

mod nft_cmd;
pub mod owner;
mod ruleset;
mod status;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use owner::{OwnerError, SocketOwner};
pub use ruleset::{render, table_name, Selector};
pub use status::NftStatus;

use super::{cgroup2_mount, CgroupError, InterceptSettings};

/// Errors of installing, removing and reading the nftables interception.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` program is not installed.
    #[error("`nft` not found in PATH: intercept.mode nftables needs the nftables package (nft 0.9.7 or newer)")]
    NftMissing,
    /// `nft` could not be run.
    #[error("running nft")]
    Spawn(#[source] std::io::Error),
    /// The kernel refused a plain nat/filter table.
    #[error("the kernel lacks nf_tables with nat and reject for the inet family (CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET, CONFIG_NFT_NAT, CONFIG_NFT_REDIR, CONFIG_NFT_REJECT): {0}")]
    NoNfTables(String),
    /// The kernel refused the `socket cgroupv2` expression.
    #[error("the kernel lacks the nftables socket expression with cgroupv2 (CONFIG_NFT_SOCKET, Linux 5.13+), needed to select intercept.cgroups: {0}")]
    NoSocketExpr(String),
    /// nft rejected a command.
    #[error("nft {what}: {stderr}")]
    Nft {
        /// What was attempted.
        what: &'static str,
        /// nft's error output.
        stderr: String,
    },
    /// nft printed JSON we could not read.
    #[error("reading nft's JSON output")]
    Json(#[source] serde_json::Error),
    /// cgroup discovery failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A cgroup path nft cannot express (outside the mount, quotes, not UTF-8).
    #[error("{0}: cgroup path cannot be used in an nftables rule")]
    CgroupPath(PathBuf),
    /// Neither cgroups nor uids select anything.
    #[error("no cgroup or uid selected for interception")]
    NoSelection,
    /// The proxy itself would be intercepted: nftables cannot exempt it.
    #[error("the proxy itself runs in an intercepted cgroup or as an intercepted uid ({0}); in nftables mode run it outside the selection")]
    ProxySelected(String),
}

/// The nftables interception in force. Dropping it leaves the table in place.
#[derive(Debug)]
pub struct NftInterceptor {
    table: String,
    cgroups: Vec<PathBuf>,
}

impl NftInterceptor {
    /// Checks `nft` and the kernel, then installs (or atomically replaces)
    /// the table for `settings.pin_path`.
    pub fn attach(settings: &InterceptSettings) -> Result<Self, NftError> {
        let mount = cgroup2_mount()?;
        let selectors = ruleset::selectors(settings, &mount)?;
        refuse_self_selection(&mount, &selectors)?;
        let table = table_name(&settings.pin_path);
        nft_cmd::preflight(&table, &selectors)?;
        let script = render(&table, settings, &selectors);
        nft_cmd::run(&["-f", "-"], Some(&script), "replacing the table").map_err(|e| match e {
            NftError::Nft { stderr, .. } => NftError::Nft {
                what: "replacing the table",
                stderr,
            },
            other => other,
        })?;
        tracing::info!(table = %table, "nftables interception in force");
        Ok(Self {
            cgroups: ruleset::selected_cgroups(&mount, &selectors),
            table,
        })
    }

    /// Deletes the table of `pin_path`; succeeds when there is none.
    pub fn detach(pin_path: &Path) -> Result<(), NftError> {
        nft_cmd::delete_table(&table_name(pin_path))
    }

    /// The table, its selection and its counters.
    pub fn status(pin_path: &Path) -> Result<NftStatus, NftError> {
        status::read(&table_name(pin_path))
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Selected cgroup directories (empty in UID mode), for attribution.
    pub fn cgroups(&self) -> &[PathBuf] {
        &self.cgroups
    }
}

/// nftables cannot tell the proxy's sockets from a workload's the way the
/// eBPF programs do (by pid), so the proxy must sit outside the selection.
fn refuse_self_selection(mount: &Path, selectors: &[Selector]) -> Result<(), NftError> {
    let uid = nix::unistd::getuid().as_raw();
    let own = super::current_cgroup().ok();
    for sel in selectors {
        let uid_hit = sel.uids.is_empty() || sel.uids.contains(&uid);
        let cg_hit = match (&sel.cgroup, &own) {
            (None, _) => true,
            (Some((_, _, rel)), Some(own)) => {
                own.starts_with(mount.join(rel.trim_start_matches('/')))
            }
            (Some(_), None) => false,
        };
        if uid_hit && cg_hit {
            return Err(NftError::ProxySelected(sel.label()));
        }
    }
    Ok(())
}
