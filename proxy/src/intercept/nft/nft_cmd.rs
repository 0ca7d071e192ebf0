//! Running `nft`: scripts on stdin, preflight checks (`nft -c`, which asks
//! the kernel but commits nothing), and JSON batches through the
//! `nftables` crate.

use std::borrow::Cow;
use std::io::Write;
use std::process::{Command, Stdio};

use nftables::{batch::Batch, schema, types};

use super::ruleset::{probe_socket, probe_tables, Selector};
use super::NftError;

/// Runs `nft ARGS` with `stdin`; returns stdout.
pub(crate) fn run(
    args: &[&str],
    stdin: Option<&str>,
    what: &'static str,
) -> Result<String, NftError> {
    let mut cmd = Command::new("nft");
    crate::ops::fd_limit::restore_in_child(&mut cmd);
    let mut child = cmd
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NftError::NftMissing,
            _ => NftError::Spawn(e),
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Nft {
            what,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel's refusal text, or the error itself when it is not one (a
/// syntax error is our bug, not a missing kernel feature).
fn stderr_of(e: NftError) -> Result<String, NftError> {
    match e {
        NftError::Nft { stderr, what } if stderr.contains("syntax error") => {
            Err(NftError::Nft { what, stderr })
        }
        NftError::Nft { stderr, .. } => Ok(stderr),
        other => Err(other),
    }
}

/// `nft` is installed, the kernel has inet nat/redirect/reject, and the
/// socket cgroupv2 expression accepts every selected cgroup.
pub(crate) fn preflight(table: &str, selectors: &[Selector]) -> Result<(), NftError> {
    run(&["--version"], None, "--version")?;
    if let Err(e) = run(&["-c", "-f", "-"], Some(&probe_tables(table)), "check") {
        return Err(NftError::NoNfTables(stderr_of(e)?));
    }
    for sel in selectors.iter().filter(|s| s.cgroup.is_some()) {
        if let Err(e) = run(&["-c", "-f", "-"], Some(&probe_socket(table, sel)), "check") {
            return Err(NftError::NoSocketExpr(stderr_of(e)?));
        }
    }
    Ok(())
}

fn table(name: &str) -> schema::Table<'static> {
    schema::Table {
        family: types::NfFamily::INet,
        name: Cow::Owned(name.to_owned()),
        ..Default::default()
    }
}

/// The JSON batch that deletes `name` whether or not it exists (add, then
/// delete, in one transaction).
pub(crate) fn delete_batch(name: &str) -> schema::Nftables<'static> {
    let mut batch = Batch::new();
    batch.add(schema::NfListObject::Table(table(name)));
    batch.delete(schema::NfListObject::Table(table(name)));
    batch.to_nftables()
}

/// Deletes table `name` (no error when absent).
pub(crate) fn delete_table(name: &str) -> Result<(), NftError> {
    let batch = delete_batch(name);
    nftables::helper::apply_ruleset(&batch).map_err(|e| match e {
        nftables::helper::NftablesError::NftExecution { inner, .. }
            if inner.kind() == std::io::ErrorKind::NotFound =>
        {
            NftError::NftMissing
        }
        other => NftError::Nft {
            what: "deleting the table",
            stderr: other.to_string(),
        },
    })
}

/// `nft -j list table inet NAME`, or `None` when the table does not exist.
pub(crate) fn list_table(name: &str) -> Result<Option<serde_json::Value>, NftError> {
    let tables = run(&["-j", "list", "tables", "inet"], None, "listing tables")?;
    let tables: schema::Nftables = serde_json::from_str(&tables).map_err(NftError::Json)?;
    let exists = tables.objects.iter().any(|o| {
        matches!(o, schema::NfObject::ListObject(schema::NfListObject::Table(t)) if t.name == name)
    });
    if !exists {
        return Ok(None);
    }
    let text = run(
        &["-j", "list", "table", "inet", name],
        None,
        "listing the table",
    )?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(NftError::Json)
}
