//! The standard `process_*` metrics of Prometheus client libraries, read
//! from `/proc/self` at scrape time: CPU, memory, descriptors (open and the
//! limit, the one that ends a proxy that holds too many connections), start
//! time. Unprefixed, as every exporter names them, so the usual dashboards
//! and alerts (`process_open_fds / process_max_fds`) work unchanged.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Reads this process's figures when scraped.
#[derive(Debug, Default)]
pub(super) struct ProcessCollector;

/// One scrape's figures; a figure that could not be read is left out.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Figures {
    pub(super) cpu_seconds: Option<f64>,
    pub(super) resident_bytes: Option<i64>,
    pub(super) virtual_bytes: Option<i64>,
    pub(super) open_fds: Option<i64>,
    pub(super) max_fds: Option<i64>,
    pub(super) start_time_seconds: Option<f64>,
}

impl Figures {
    pub(super) fn read() -> Figures {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let boot = std::fs::read_to_string("/proc/stat").ok();
        let mut f = stat.as_deref().map(from_stat).unwrap_or_default();
        if let (Some(stat), Some(boot)) = (stat.as_deref(), boot.as_deref()) {
            f.start_time_seconds = start_time(stat, boot);
        }
        f.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX));
        f.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| i64::try_from(soft).unwrap_or(i64::MAX));
        f
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
fn ticks() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of `/proc/self/stat` after the command (which may hold
/// spaces and parentheses): field 3 (state) is the first.
fn fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// CPU and memory from `/proc/self/stat` (proc(5): utime 14, stime 15,
/// vsize 23, rss 24, counted from 1).
pub(super) fn from_stat(stat: &str) -> Figures {
    let f = fields(stat);
    let at = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf only reads a constant.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p,
        _ => 4096,
    };
    Figures {
        cpu_seconds: at(14).zip(at(15)).map(|(u, s)| (u + s) as f64 / ticks()),
        virtual_bytes: at(23).map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        resident_bytes: at(24).map(|p| i64::try_from(p).unwrap_or(i64::MAX).saturating_mul(page)),
        ..Figures::default()
    }
}

/// Start time in Unix seconds: the boot time (`btime` in `/proc/stat`) plus
/// field 22 (starttime, in ticks since boot).
pub(super) fn start_time(stat: &str, proc_stat: &str) -> Option<f64> {
    let started = fields(stat).get(22 - 3)?.parse::<u64>().ok()?;
    let btime = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(btime as f64 + started as f64 / ticks())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let f = Figures::read();
        if let Some(v) = f.cpu_seconds {
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(v).encode(m)?;
        }
        let gauges: [(&str, &str, Option<f64>); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                f.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                f.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                f.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                f.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                f.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(m)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/proc/self/stat` line whose command holds a space and a `)`.
    const STAT: &str = "4242 (iron proxy) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                        250 50 0 0 20 0 3 0 123400 104857600 2560 18446744073709551615";

    #[test]
    fn stat_fields_are_read_after_the_command() {
        let f = from_stat(STAT);
        assert_eq!(f.cpu_seconds, Some(300.0 / ticks()));
        assert_eq!(f.virtual_bytes, Some(104_857_600));
        // SAFETY: sysconf only reads a constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        assert_eq!(f.resident_bytes, Some(2560 * page));
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(
            start_time(STAT, boot),
            Some(1_700_000_000.0 + 123_400.0 / ticks())
        );
        assert_eq!(from_stat("garbage"), Figures::default());
        assert_eq!(start_time(STAT, "no boot time"), None);
    }

    #[test]
    fn this_process_has_figures() {
        let f = Figures::read();
        assert!(f.open_fds.is_some_and(|n| n >= 3), "{f:?}");
        assert!(
            f.max_fds.is_some_and(|n| n >= f.open_fds.unwrap_or(0)),
            "{f:?}"
        );
        assert!(f.resident_bytes.is_some_and(|b| b > 0), "{f:?}");
        assert!(
            f.start_time_seconds.is_some_and(|t| t > 1_600_000_000.0),
            "{f:?}"
        );
    }
}
