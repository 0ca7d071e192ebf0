//! The child side of the connect() micro-benchmark: the timed
//! socket + connect + close loop, run by `bench-client connect` inside a
//! bench cgroup.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::ConnectRun;
use crate::bench::load::percentile;

/// The child side: loops for `secs` and reports.
pub fn client_loop(addr: SocketAddr, secs: f64) -> Result<ConnectRun> {
    let SocketAddr::V4(v4) = addr else {
        bail!("IPv4 only");
    };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let mut run = ConnectRun::default();
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let t0 = Instant::now();
        // SAFETY: plain syscalls on a socket this loop owns; `sa` and
        // `linger` outlive the calls and their sizes are passed.
        let rc = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                -1
            } else {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const linger).cast(),
                    size_of::<libc::linger>() as libc::socklen_t,
                );
                let rc = libc::connect(
                    fd,
                    (&raw const sa).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if rc == 0 {
                    0
                } else {
                    err.raw_os_error().unwrap_or(-1)
                }
            }
        };
        let ns = t0.elapsed().as_nanos();
        if rc == 0 {
            run.connects += 1;
            lat.push(u32::try_from(ns).unwrap_or(u32::MAX));
        } else {
            run.errors += 1;
            if run.first_error.is_none() {
                let e = std::io::Error::from_raw_os_error(rc);
                run.first_error = Some(format!("connect {addr}: {e}"));
            }
            if run.errors >= 1000 {
                break;
            }
        }
    }
    let wall = start.elapsed().as_nanos() as f64;
    let cpu = thread_cpu_ns().saturating_sub(cpu0) as f64;
    let n = (run.connects + run.errors).max(1) as f64;
    run.mean_ns = wall / n;
    run.cpu_ns = cpu / n;
    lat.sort_unstable();
    run.p50_ns = percentile(&lat, 0.50);
    run.p99_ns = percentile(&lat, 0.99);
    Ok(run)
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
