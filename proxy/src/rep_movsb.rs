//! glibc's `REP MOVSB` copies on AMD Zen 3 and later, turned off at startup.
//!
//! glibc before 2.40 copies blocks of 2 KiB and more (`memcpy`, `memmove`)
//! with `REP MOVSB` on CPUs that announce fast string moves (FSRM). On AMD
//! Zen 3, 4 and 5 that instruction runs 10 to 20 times slower when the
//! destination sits a few bytes after the source's alignment (glibc bug
//! 30994). rustls builds each TLS record by copying the plaintext to five
//! bytes past the start of a fresh buffer, behind the record header: exactly
//! that case, on every 16 KiB record the proxy seals. On a Zen 4 guest with
//! Debian 12's glibc 2.36 the copy took 4.8 us per 16 KiB record instead of
//! 0.4 us: a fifth of the proxy's CPU per 64 KiB response
//! (docs/benchmarks.md, round 32).
//!
//! glibc 2.40 stopped using `REP MOVSB` on those CPUs below the L2 cache
//! size. For older glibc, its tunable `glibc.cpu.x86_rep_movsb_threshold`
//! does the same, but glibc reads tunables only from the environment the
//! process starts with. So [`reexec_if_needed`], called first thing by the
//! serving command, executes the same binary again in the same process
//! (same PID, arguments, open descriptors and the rest of the environment)
//! with the tunable added to `GLIBC_TUNABLES`, when all of these hold:
//! - the CPU is AMD's and announces FSRM;
//! - the C library is glibc older than 2.40;
//! - `GLIBC_TUNABLES` does not already set the threshold (an operator's
//!   value wins, whatever it is, and the new process finds it set and does
//!   not execute again);
//! - the process is not privileged by its file (setuid, file capabilities:
//!   glibc ignores the tunable there);
//! - executing again keeps exactly the capabilities the process has: root
//!   with its permitted set equal to its bounding set, or any user whose
//!   permitted capabilities are all ambient (the systemd unit's
//!   `AmbientCapabilities`). Otherwise the process goes on as it is.
//!
//! If the execution fails, the process goes on as it is too. The new process
//! is told it was executed again by [`MARK_VAR`], which it removes from its
//! environment before anything reads it, so it never executes a second time
//! (whatever a C library makes of `GLIBC_TUNABLES`) and the processes it
//! starts do not see the mark.
//!
//! Executing `/proc/self/exe` names the new image `exe` (the kernel takes a
//! process's name from the file name it executes), which `ps`, `top`,
//! `pgrep`/`pkill` and the journal's `_COMM` would then show. The mark carries
//! the name the process had, and the new process takes it back.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The environment variable glibc reads its tunables from.
pub const TUNABLES_VAR: &str = "GLIBC_TUNABLES";
/// The tunable that sets the smallest copy done with `REP MOVSB`.
pub const THRESHOLD_KEY: &str = "glibc.cpu.x86_rep_movsb_threshold";
/// The threshold set: above any Zen core's L2 cache, which glibc uses as the
/// largest size it copies with `REP MOVSB` on AMD; so no copy below glibc's
/// non-temporal threshold uses it.
pub const THRESHOLD: u64 = 4 << 20;
/// Set in the environment of the process executed again, which removes it;
/// its value is the name the process had (`/proc/PID/comm`).
pub const MARK_VAR: &str = "IRON_PROXY_REEXECUTED";
/// The first glibc release that no longer uses `REP MOVSB` on these CPUs.
const FIXED_IN: (u32, u32) = (2, 40);

/// Why the process goes on without executing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Keep {
    /// Not an AMD CPU with FSRM.
    #[error("not an AMD CPU with fast short string moves")]
    Cpu,
    /// Not glibc, or a glibc that already avoids the slow copies.
    #[error("the C library is not a glibc older than 2.40")]
    Libc,
    /// `GLIBC_TUNABLES` sets the threshold already.
    #[error("GLIBC_TUNABLES sets {THRESHOLD_KEY} already")]
    AlreadySet,
    /// The process runs privileged by its file (`AT_SECURE`).
    #[error("the process is privileged by its file (setuid or file capabilities)")]
    SecureExec,
    /// Executing again would change the process's capabilities.
    #[error("executing again would change the process's capabilities")]
    Capabilities,
    /// `execve` failed (or an argument held a NUL byte); the process goes on.
    #[error("executing the binary again failed")]
    ExecFailed,
    /// This process is the one executed again ([`MARK_VAR`] was set).
    #[error("{MARK_VAR} was set at start: executed again already")]
    Executed,
}

/// What [`decide`] looks at.
#[derive(Debug, Clone)]
pub struct Host {
    /// The CPU is AMD's and announces FSRM.
    pub amd_fsrm: bool,
    /// glibc's version, `None` for another C library.
    pub glibc: Option<(u32, u32)>,
    /// The kernel started the process in secure mode (`AT_SECURE`).
    pub secure_exec: bool,
    /// Executing the binary again keeps the process's capabilities.
    pub caps_kept: bool,
}

/// The `GLIBC_TUNABLES` value to execute again with, given `current` (the
/// variable's value, if set), or why not to.
pub fn decide(host: &Host, current: Option<&OsStr>) -> Result<OsString, Keep> {
    if !host.amd_fsrm {
        return Err(Keep::Cpu);
    }
    if host.glibc.is_none_or(|v| v >= FIXED_IN) {
        return Err(Keep::Libc);
    }
    let entry = format!("{THRESHOLD_KEY}={THRESHOLD}");
    let value = match current.map(OsStr::as_bytes) {
        Some(cur) if threshold_pair(cur).is_some() => return Err(Keep::AlreadySet),
        Some(cur) if !cur.is_empty() => {
            let mut v = cur.to_vec();
            v.push(b':');
            v.extend_from_slice(entry.as_bytes());
            OsString::from_vec(v)
        }
        _ => OsString::from(entry),
    };
    if host.secure_exec {
        return Err(Keep::SecureExec);
    }
    if !host.caps_kept {
        return Err(Keep::Capabilities);
    }
    Ok(value)
}

/// The `name=value` pair of a `GLIBC_TUNABLES` value (pairs separated by
/// `:`) that sets the threshold, if one does.
fn threshold_pair(tunables: &[u8]) -> Option<&[u8]> {
    tunables.split(|&b| b == b':').find(|pair| {
        pair.split(|&b| b == b'=')
            .next()
            .is_some_and(|name| name == THRESHOLD_KEY.as_bytes())
    })
}

/// Whether executing a file without privileges of its own keeps the
/// capabilities `/proc/self/status` (`status`) lists: for root (`root`: real
/// and effective user id 0, `SECBIT_NOROOT` clear) the new permitted set is
/// the bounding set; for anyone else it is the ambient set.
pub fn exec_keeps_caps(status: &str, root: bool) -> bool {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            u64::from_str_radix(rest.trim(), 16).ok()
        })
    };
    match (field("CapPrm"), field("CapBnd"), field("CapAmb")) {
        (Some(prm), Some(bnd), _) if root => prm == bnd,
        (Some(prm), _, Some(amb)) if !root => prm & !amb == 0,
        _ => false,
    }
}

/// glibc's version from `gnu_get_libc_version` text (`2.36`).
pub fn parse_glibc_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((major, minor.parse().ok()?))
}

/// Whether the CPU is AMD's and announces FSRM (CPUID leaf 7, EDX bit 4).
#[cfg(target_arch = "x86_64")]
fn amd_fsrm() -> bool {
    use std::arch::x86_64::__cpuid;
    let leaf0 = __cpuid(0);
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    &vendor == b"AuthenticAMD" && leaf0.eax >= 7 && __cpuid(7).edx & (1 << 4) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn amd_fsrm() -> bool {
    false
}

#[cfg(target_env = "gnu")]
fn glibc_version() -> Option<(u32, u32)> {
    // SAFETY: gnu_get_libc_version returns a pointer to a static,
    // NUL-terminated string.
    let text = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) };
    parse_glibc_version(text.to_str().ok()?)
}

#[cfg(not(target_env = "gnu"))]
fn glibc_version() -> Option<(u32, u32)> {
    None
}

/// This process's [`Host`].
fn this_host() -> Host {
    // SAFETY: getauxval, getuid, geteuid and prctl(PR_GET_SECUREBITS) take no
    // pointers and only read process state.
    let (secure_exec, root) = unsafe {
        let noroot = libc::prctl(libc::PR_GET_SECUREBITS) & 1 != 0;
        (
            libc::getauxval(libc::AT_SECURE) != 0,
            libc::getuid() == 0 && libc::geteuid() == 0 && !noroot,
        )
    };
    let caps_kept = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|status| exec_keeps_caps(&status, root));
    Host {
        amd_fsrm: amd_fsrm(),
        glibc: glibc_version(),
        secure_exec,
        caps_kept,
    }
}

/// Why [`reexec_if_needed`] went on without executing again, for the log.
static KEPT: std::sync::OnceLock<Keep> = std::sync::OnceLock::new();

/// Why this process went on without executing again, if
/// [`reexec_if_needed`] ran.
pub fn kept() -> Option<Keep> {
    KEPT.get().copied()
}

/// The threshold in effect, for the startup log: the value
/// `GLIBC_TUNABLES` sets (after [`reexec_if_needed`] executed again, ours),
/// or glibc's default and why it was kept.
pub fn describe(keep: Keep) -> String {
    let tunables = std::env::var_os(TUNABLES_VAR).unwrap_or_default();
    let set = threshold_pair(tunables.as_bytes()).map(String::from_utf8_lossy);
    match (keep, set) {
        (Keep::AlreadySet | Keep::Executed, Some(pair)) => format!("{TUNABLES_VAR} sets {pair}"),
        (keep, _) => format!("glibc's default ({keep})"),
    }
}

/// Executes this binary again with the tunable added (see the module docs),
/// or records why not ([`kept`]). Call it before any thread starts: it does
/// not return when the execution succeeds.
pub fn reexec_if_needed() {
    let keep = try_reexec();
    let _ = KEPT.set(keep);
}

fn try_reexec() -> Keep {
    if let Some(name) = std::env::var_os(MARK_VAR) {
        // Called before any thread starts (see reexec_if_needed), so nothing
        // reads the environment while it changes.
        std::env::remove_var(MARK_VAR);
        set_name(&name);
        return Keep::Executed;
    }
    let value = match decide(&this_host(), std::env::var_os(TUNABLES_VAR).as_deref()) {
        Ok(v) => v,
        Err(keep) => return keep,
    };
    let args: Option<Vec<CString>> = std::env::args_os()
        .map(|a| CString::new(a.into_vec()).ok())
        .collect();
    let Some(args) = args else {
        // An argument with a NUL byte cannot have come from execve; nothing
        // to do but go on.
        return Keep::ExecFailed;
    };
    let env = environment(raw_environment(), &value, &name());
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: the path and every argv/envp entry are NUL-terminated strings
    // that outlive the call, and both arrays end with a null pointer. On
    // success execve does not return; on failure it changes nothing.
    unsafe { libc::execve(c"/proc/self/exe".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Keep::ExecFailed
}

/// The new process's environment: every entry of `raw` as it is, except
/// those that set [`TUNABLES_VAR`] or [`MARK_VAR`], then the tunables
/// `value` and the mark, holding the process's `name`. Entries are taken as
/// bytes, so one without `=` (which only a raw `execve` can make, and which
/// Rust's view of the environment skips) is passed on too.
fn environment<'a>(
    raw: impl Iterator<Item = &'a CStr>,
    value: &OsStr,
    name: &[u8],
) -> Vec<CString> {
    let mut env: Vec<CString> = raw
        .filter(|e| {
            let name = e.to_bytes().split(|&b| b == b'=').next();
            name != Some(TUNABLES_VAR.as_bytes()) && name != Some(MARK_VAR.as_bytes())
        })
        .map(CStr::to_owned)
        .collect();
    // A value with a NUL byte cannot be passed on; it comes from the
    // environment glibc read, so it has none.
    env.extend(CString::new([TUNABLES_VAR.as_bytes(), b"=", value.as_bytes()].concat()).ok());
    // A name never holds a NUL byte (the kernel ends it with one); if it
    // did, the mark still goes, as `1`, and the new process keeps `exe`.
    let mark = CString::new([MARK_VAR.as_bytes(), b"=", name].concat())
        .unwrap_or_else(|_| CString::from(c"IRON_PROXY_REEXECUTED=1"));
    env.push(mark);
    env
}

/// The calling thread's name (the process's, before any thread starts):
/// what `/proc/self/comm` shows, at most 15 bytes.
fn name() -> Vec<u8> {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, to a buffer
    // of 16.
    let rc = unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) };
    if rc != 0 {
        return b"1".to_vec();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf[..len].to_vec()
}

/// Names the calling thread (the process, before any thread starts)
/// `name`, cut to the kernel's 15 bytes; an empty name or one holding a NUL
/// byte is left alone.
fn set_name(name: &OsStr) {
    let bytes = &name.as_bytes()[..name.len().min(15)];
    if bytes.is_empty() {
        return;
    }
    let Ok(name) = CString::new(bytes) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes;
    // `name` is one, and outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// The process's environment as the C library holds it, entry by entry.
fn raw_environment() -> impl Iterator<Item = &'static CStr> {
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: called before any thread starts (see reexec_if_needed), so
    // nothing changes `environ` while it is read; it is a null-terminated
    // array of NUL-terminated strings, which live as long as the process
    // does not change its environment, which it does not before execve.
    let mut at = unsafe { environ };
    std::iter::from_fn(move || {
        if at.is_null() {
            return None;
        }
        // SAFETY: see above; `at` points into the array, before its end.
        let entry = unsafe { *at };
        if entry.is_null() {
            return None;
        }
        // SAFETY: as above.
        at = unsafe { at.add(1) };
        Some(unsafe { CStr::from_ptr(entry) })
    })
}

#[cfg(test)]
mod tests;
