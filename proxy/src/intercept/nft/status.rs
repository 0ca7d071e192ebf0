//! `intercept status` in nftables mode: whether the table exists, what it
//! selects, and its counters (summed per `iron:<name>` rule comment).

use std::fmt;

use super::ruleset::COMMENT_PREFIX;
use super::{nft_cmd, NftError};
use crate::intercept::Counters;

/// The state of one instance's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftStatus {
    /// `inet` table name.
    pub table: String,
    /// Whether the table exists (interception in force).
    pub present: bool,
    /// The selections (`cgroup=/ci.slice uids=1001`), one per selector.
    pub selection: Vec<String>,
    /// Counters with the eBPF names: `redirected` and `dns_redirected`
    /// count connections (the nat chain sees first packets only),
    /// `denied`, `udp_refused` and `raw_refused` count dropped packets.
    pub counters: Counters,
}

pub(crate) fn read(table: &str) -> Result<NftStatus, NftError> {
    let mut status = NftStatus {
        table: table.to_owned(),
        present: false,
        selection: Vec::new(),
        counters: Counters::default(),
    };
    let Some(listing) = nft_cmd::list_table(table)? else {
        return Ok(status);
    };
    status.present = true;
    from_listing(&listing, &mut status);
    Ok(status)
}

/// Fills selection and counters from `nft -j list table` output.
pub(crate) fn from_listing(listing: &serde_json::Value, status: &mut NftStatus) {
    let objects = listing
        .get("nftables")
        .and_then(|v| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for rule in objects.iter().filter_map(|o| o.get("rule")) {
        let Some(name) = rule
            .get("comment")
            .and_then(|c| c.as_str())
            .and_then(|c| c.strip_prefix(COMMENT_PREFIX))
        else {
            continue;
        };
        if let Some(sel) = name.strip_prefix("select ") {
            if rule.get("chain").and_then(|c| c.as_str()) == Some("nat_select") {
                status.selection.push(sel.to_owned());
            }
            continue;
        }
        let packets: u64 = rule
            .get("expr")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("counter")?.get("packets")?.as_u64())
            .sum();
        let c = &mut status.counters;
        match name {
            "redirected" => c.redirected += packets,
            "dns_redirected" => c.dns_redirected += packets,
            "denied" => c.denied += packets,
            "udp_refused" => c.udp_refused += packets,
            "raw_refused" => c.raw_refused += packets,
            _ => {}
        }
    }
}

impl fmt::Display for NftStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.present {
            return writeln!(
                f,
                "interception: off (mode nftables, no table inet {})",
                self.table
            );
        }
        writeln!(
            f,
            "interception: on (mode nftables, table inet {})",
            self.table
        )?;
        for s in &self.selection {
            writeln!(f, "  selected: {s}")?;
        }
        let c = &self.counters;
        writeln!(
            f,
            "counters: redirected={} denied={} udp_refused={} dns_redirected={} raw_refused={}",
            c.redirected, c.denied, c.udp_refused, c.dns_redirected, c.raw_refused
        )
    }
}
