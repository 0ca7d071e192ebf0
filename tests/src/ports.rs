//! Free ports for the servers the harness and the bench start.
//!
//! Ports come from below the kernel's ephemeral range when there is room
//! there: a port `bind(0)` hands out may be taken by some client socket's
//! local port between the moment it is chosen and the moment the server
//! binds it, and tests and the bench open thousands of client connections.

use std::collections::HashSet;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::ops::Range;
use std::sync::Mutex;

/// Ports handed out by this process, so two servers never get the same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port free for TCP (and for UDP too when `udp`) on `ip`, never returned
/// twice by this process; panics when none is found.
pub fn free_port(ip: IpAddr, udp: bool) -> u16 {
    try_free_port(ip, udp).unwrap_or_else(|| panic!("no free port on {ip}"))
}

/// [`free_port`], or `None` after 200 tries.
pub fn try_free_port(ip: IpAddr, udp: bool) -> Option<u16> {
    let candidates = below_ephemeral(ephemeral_start());
    for _ in 0..200 {
        let want = match &candidates {
            Some(r) => r.start + (random_u32() % u32::from(r.end - r.start)) as u16,
            None => 0,
        };
        let Ok(l) = TcpListener::bind((ip, want)) else {
            continue;
        };
        let Ok(port) = l.local_addr().map(|a| a.port()) else {
            continue;
        };
        if udp && UdpSocket::bind((ip, port)).is_err() {
            continue;
        }
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Some(port);
        }
    }
    None
}

/// The first port of this network namespace's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Ports from 10000 up to the ephemeral range, when there are enough of them.
fn below_ephemeral(ephemeral_start: u16) -> Option<Range<u16>> {
    (ephemeral_start > 11_000).then_some(10_000..ephemeral_start)
}

/// A random number from std's per-process hasher keys and a counter.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn free_ports_come_from_below_the_ephemeral_range_and_are_not_repeated() {
        assert_eq!(below_ephemeral(32768), Some(10_000..32768));
        assert_eq!(below_ephemeral(1024), None, "too few ports below: bind(0)");
        let start = ephemeral_start();
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let port = free_port(Ipv4Addr::LOCALHOST.into(), true);
            if start > 11_000 {
                assert!((10_000..start).contains(&port), "{port} not below {start}");
            }
            assert!(seen.insert(port), "{port} handed out twice");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("free for TCP");
            UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("free for UDP");
        }
    }
}
