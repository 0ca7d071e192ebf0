//! `sd_notify(3)` for `Type=notify` (and `notify-reload`) systemd units: one
//! datagram to the unix socket named by `$NOTIFY_SOCKET`. Without that
//! variable (not under systemd) every call is a no-op.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (for example `READY=1`) to `$NOTIFY_SOCKET`. Returns `false`
/// when the variable is unset.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) if !path.is_empty() => {
            let path = path.to_string_lossy();
            sd_notify_to(&path, state).map(|()| true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` to the socket `path`; a leading `@` names an abstract socket.
pub fn sd_notify_to(path: &str, state: &str) -> io::Result<()> {
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(path)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

fn send_logged(state: &str) {
    if let Err(e) = sd_notify(state) {
        tracing::warn!(error = %e, state, "sd_notify failed");
    }
}

/// `READY=1`: startup (or a reload) is complete.
pub fn notify_ready() {
    send_logged("READY=1");
}

/// `STOPPING=1`: shutdown has begun.
pub fn notify_stopping() {
    send_logged("STOPPING=1");
}

/// `RELOADING=1` with the `MONOTONIC_USEC` that `Type=notify-reload` requires.
pub fn notify_reloading() {
    send_logged(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64) * 1_000_000 + (ts.tv_nsec() as u64) / 1_000,
        Err(_) => 0,
    }
}
