//! Process accounting from /proc: CPU time (utime + stime) and memory (VmRSS,
//! VmHWM) of a proxy, summed over the process and its descendants (squid's
//! certificate helpers, for example), and raising RLIMIT_NOFILE.

use std::collections::HashMap;

use anyhow::{Context, Result};

/// Watches one process tree.
#[derive(Clone, Copy, Debug)]
pub struct Watch {
    /// The root process.
    pub pid: u32,
}

/// CPU time of a process tree at one moment, in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    /// User time (utime).
    user: u64,
    /// Kernel time on the tree's behalf (stime): its system calls, and the
    /// loopback delivery and wake-ups they carry.
    sys: u64,
}

impl CpuSample {
    /// Microseconds of CPU between two samples.
    pub fn delta_us(before: &CpuSample, after: &CpuSample) -> f64 {
        let ticks = (after.user + after.sys).saturating_sub(before.user + before.sys);
        ticks as f64 * 1e6 / clk_tck()
    }

    /// The kernel's share (0 to 1) of the CPU time between two samples;
    /// `None` when no tick passed.
    pub fn sys_share(before: &CpuSample, after: &CpuSample) -> Option<f64> {
        let sys = after.sys.saturating_sub(before.sys);
        let all = sys + after.user.saturating_sub(before.user);
        (all > 0).then(|| sys as f64 / all as f64)
    }
}

/// Memory of a process tree, in KiB.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Mem {
    /// Current resident set size.
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM).
    pub hwm_kib: u64,
    /// Current anonymous resident memory (RssAnon: heap, stacks).
    pub anon_kib: u64,
    /// Current file-backed resident memory (RssFile: mostly the binary's
    /// pages, shared with every other process mapping the same file).
    pub file_kib: u64,
}

impl Watch {
    /// Utime and stime of the tree now.
    pub fn sample(&self) -> Result<CpuSample> {
        let (mut user, mut sys) = (0, 0);
        for pid in self.tree() {
            // Processes may exit between listing and reading; skip them.
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some((_, utime, stime)) = parse_stat(&stat) {
                    user += utime;
                    sys += stime;
                }
            }
        }
        if user + sys == 0 && !alive(self.pid) {
            anyhow::bail!("process {} is gone", self.pid);
        }
        Ok(CpuSample { user, sys })
    }

    /// VmRSS and VmHWM of the tree, summed.
    pub fn mem(&self) -> Mem {
        let mut m = Mem::default();
        for pid in self.tree() {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            m.rss_kib += status_kib(&status, "VmRSS:");
            m.hwm_kib += status_kib(&status, "VmHWM:");
            m.anon_kib += status_kib(&status, "RssAnon:");
            m.file_kib += status_kib(&status, "RssFile:");
        }
        m
    }

    /// Resident KiB of the root process's own executable code (the `r-xp`
    /// mappings of `/proc/PID/exe`): for iron-proxy, about the serving part of
    /// `proxy/link-order.txt` plus aws-lc's assembly when the list is current,
    /// more when serving functions fell out of it.
    pub fn exe_code_kib(&self) -> Option<u64> {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid)).ok()?;
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.pid)).ok()?;
        Some(exe_code_kib(&smaps, &exe.to_string_lossy()))
    }

    /// Resets the tree's peak RSS (VmHWM) to its current RSS (writes 5 to
    /// /proc/PID/clear_refs), so the next `mem()` reports the peak since now.
    pub fn reset_peak(&self) {
        for pid in self.tree() {
            // A process that exited meanwhile has no peak left to reset.
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    /// The root and all its descendants.
    fn tree(&self) -> Vec<u32> {
        let mut parent_of: HashMap<u32, u32> = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                    if let Some((ppid, _, _)) = parse_stat(&stat) {
                        parent_of.insert(pid, ppid);
                    }
                }
            }
        }
        let mut out = vec![self.pid];
        let mut i = 0;
        while i < out.len() {
            let p = out[i];
            out.extend(parent_of.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
            i += 1;
        }
        out
    }
}

/// The `Rss:` of the executable mappings of `exe` in an smaps text, KiB.
fn exe_code_kib(smaps: &str, exe: &str) -> u64 {
    let mut total = 0;
    let mut in_code = false;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            let perms = fields.next().unwrap_or("");
            // Offset, device and inode, then the path (which may hold spaces).
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            in_code = perms.starts_with("r-x") && path == exe;
        } else if in_code && first == "Rss:" {
            total += fields
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// True when /proc has the pid and it is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// (ppid, utime, stime) from /proc/PID/stat. The command name may hold
/// spaces and parentheses, so fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(u32, u64, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(0) ppid(1) ... utime(11) stime(12).
    Some((
        f.get(1)?.parse().ok()?,
        f.get(11)?.parse().ok()?,
        f.get(12)?.parse().ok()?,
    ))
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Raises RLIMIT_NOFILE (soft and, when allowed, hard) to at least `want`;
/// children inherit it. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads one rlimit from a struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    // Not allowed to raise the hard limit (not root): take what the hard limit allows.
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        return Ok(lim.rlim_max);
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_share_counts_only_the_ticks_between_the_samples() {
        let before = CpuSample {
            user: 100,
            sys: 900,
        };
        let after = CpuSample {
            user: 140,
            sys: 960,
        };
        assert_eq!(CpuSample::sys_share(&before, &after), Some(0.6));
        assert_eq!(
            CpuSample::delta_us(&before, &after),
            100.0 * 1e6 / clk_tck()
        );
        assert_eq!(CpuSample::sys_share(&after, &after), None);
    }

    #[test]
    fn exe_code_counts_only_the_executables_code_mappings() {
        let smaps = "\
55d000000000-55d000100000 r--p 00000000 fe:00 1 /usr/bin/iron-proxy
Rss:                 512 kB
55d000100000-55d000900000 r-xp 00100000 fe:00 1 /usr/bin/iron-proxy
Size:               8192 kB
Rss:                3072 kB
7f0000000000-7f0000100000 r-xp 00026000 fe:00 2 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 704 kB
7f0000200000-7f0000300000 r-xp 00000000 fe:00 3 /usr/bin/iron-proxy (deleted)
Rss:                  64 kB
";
        assert_eq!(exe_code_kib(smaps, "/usr/bin/iron-proxy"), 3072);
        assert_eq!(exe_code_kib(smaps, "/usr/bin/other"), 0);
    }

    #[test]
    fn stat_with_parens_in_comm() {
        let s = "42 (a) b) S 7 42 42 0 -1 4194560 100 0 0 0 15 3 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(s), Some((7, 15, 3)));
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(super::super::load::percentile(&v, 0.5), 50.0);
        assert_eq!(super::super::load::percentile(&v, 0.99), 99.0);
        assert_eq!(super::super::load::percentile(&[], 0.5), 0.0);
    }
}
