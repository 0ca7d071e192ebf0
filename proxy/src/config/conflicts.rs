//! Two listeners of one config on the same address: start-up would fail to
//! bind the second ("Address already in use", with no line to look at), and
//! `validate` would have called the file valid. Found here, at the later of
//! the two fields, naming the other.

use std::net::IpAddr;

use super::decode::{Cx, Res};
use super::values::ListenAddr;
use super::yaml::Node;
use super::Config;

/// One TCP listener of a config: its field path and address.
struct Listener {
    path: &'static str,
    addr: ListenAddr,
    /// An unspecified IPv6 address takes IPv4 too (the metrics and
    /// management endpoints bind it dual-stack; the data plane IPv6-only).
    dual_stack: bool,
}

/// The config's TCP listeners, in the order their sockets are opened.
fn listeners(cfg: &Config) -> Vec<Listener> {
    let one = |path, addr, dual_stack| Listener {
        path,
        addr,
        dual_stack,
    };
    let mut out = vec![
        one("proxy.http_listen", cfg.proxy.http_listen, false),
        one("proxy.https_listen", cfg.proxy.https_listen, false),
    ];
    if let Some(t) = cfg.proxy.tunnel_listen {
        out.push(one("proxy.tunnel_listen", t, false));
    }
    if let Some(i) = &cfg.intercept {
        out.push(one("intercept.listen", i.listen, false));
    }
    if let Some(d) = &cfg.dns {
        // DNS over TCP listens beside the UDP socket.
        out.push(one("dns.listen", d.listen, false));
    }
    out.push(one("metrics.listen", cfg.metrics.listen, true));
    if let Some(m) = &cfg.management {
        out.push(one("management.listen", m.listen, true));
    }
    out
}

/// Whether a socket for `a` and one for `b` cannot both be bound.
fn overlap(a: &Listener, b: &Listener) -> bool {
    use ListenAddr::{Addr, AllInterfaces};
    if a.addr.port() != b.addr.port() || a.addr.port() == 0 {
        return false;
    }
    let ip = |l: &Listener| match l.addr {
        AllInterfaces(_) => None,
        Addr(s) => Some(s.ip()),
    };
    match (ip(a), ip(b)) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => takes(x, a.dual_stack, y) || takes(y, b.dual_stack, x),
    }
}

/// Whether a listener on `ip` also takes `other`.
fn takes(ip: IpAddr, dual_stack: bool, other: IpAddr) -> bool {
    match (ip, other) {
        _ if ip == other => true,
        (IpAddr::V4(v4), IpAddr::V4(_)) => v4.is_unspecified(),
        (IpAddr::V6(v6), IpAddr::V6(_)) => v6.is_unspecified(),
        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.is_unspecified() && dual_stack,
        _ => false,
    }
}

/// The node a field path names, when the file (or an `IRON_*` variable)
/// set it; `None` for a default.
fn node<'a>(root: &'a Node, path: &str) -> Option<&'a Node> {
    let (section, key) = path.split_once('.')?;
    root.get(section)?.get(key)
}

/// Refuses two listeners on one address, at the later field (at the one
/// the file set, when the other is a default).
pub(super) fn check(cfg: &Config, root: &Node, cx: &mut Cx) -> Res<()> {
    let all = listeners(cfg);
    let mut ok = true;
    for (j, b) in all.iter().enumerate() {
        let Some(a) = all[..j].iter().find(|a| overlap(a, b)) else {
            continue;
        };
        let (here, n, other) = match (node(root, b.path), node(root, a.path)) {
            (Some(n), _) => (b, n, a),
            (None, Some(n)) => (a, n, b),
            // Two defaults never meet.
            (None, None) => continue,
        };
        let other_text = if node(root, other.path).is_some() {
            format!("{} ({})", other.path, other.addr)
        } else {
            format!("{} (its default, {})", other.path, other.addr)
        };
        cx.error_at_path(
            n.pos,
            here.path.to_string(),
            format!(
                "{} is also {other_text}: two listeners cannot share an address; give one \
                 another port",
                here.addr
            ),
        );
        ok = false;
    }
    if ok {
        Ok(())
    } else {
        Err(super::decode::Failed)
    }
}
