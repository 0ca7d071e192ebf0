//! The DNS server's sockets: a UDP socket and a TCP listener on one address,
//! bound without sharing, marked as the proxy's when interception asks.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use super::{DnsError, UDP_RECV_BUFFER};

/// Binds a UDP socket and a TCP listener on the same address. With port 0 the
/// UDP port is chosen first and TCP retried a few times on the same port.
pub(crate) fn bind_pair(
    addr: SocketAddr,
    any_v4: bool,
    mark: bool,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener, SocketAddr), DnsError> {
    // An IPv6 wildcard next to IPv4 entries must not claim the IPv4 port too.
    let only_v6 = addr.is_ipv6() && any_v4;
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 16 } else { 1 } {
        let udp = bind_socket(addr, Type::DGRAM, only_v6, mark)?;
        let local = udp
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| DnsError::Bind {
                proto: "udp",
                addr,
                source: std::io::Error::other("bound socket has no inet address"),
            })?;
        match bind_socket(local, Type::STREAM, only_v6, mark) {
            Ok(tcp) => {
                let udp = tokio::net::UdpSocket::from_std(udp.into()).map_err(|source| {
                    DnsError::Bind {
                        proto: "udp",
                        addr,
                        source,
                    }
                })?;
                let tcp = tokio::net::TcpListener::from_std(tcp.into()).map_err(|source| {
                    DnsError::Bind {
                        proto: "tcp",
                        addr,
                        source,
                    }
                })?;
                return Ok((udp, tcp, local));
            }
            Err(e @ DnsError::Mark { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| DnsError::Bind {
        proto: "tcp",
        addr,
        source: std::io::Error::other("no attempt made"),
    }))
}

/// One socket of the pair, bound (and listening, for TCP). Neither sets
/// `SO_REUSEPORT`, and the UDP socket not `SO_REUSEADDR` either, so no other
/// socket can share the address while the server holds it (a TCP listener's
/// `SO_REUSEADDR` lets it rebind over connections in TIME_WAIT, never next
/// to another listener).
fn bind_socket(addr: SocketAddr, ty: Type, only_v6: bool, mark: bool) -> Result<Socket, DnsError> {
    let proto = if ty == Type::DGRAM { "udp" } else { "tcp" };
    let bind_err = |source| DnsError::Bind {
        proto,
        addr,
        source,
    };
    let socket = Socket::new(
        Domain::for_address(addr),
        ty,
        Some(if ty == Type::DGRAM {
            Protocol::UDP
        } else {
            Protocol::TCP
        }),
    )
    .map_err(bind_err)?;
    if mark {
        crate::intercept::mark_listener(&socket).map_err(|source| DnsError::Mark {
            proto,
            addr,
            source,
        })?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6).map_err(bind_err)?;
    }
    if ty == Type::STREAM {
        socket.set_reuse_address(true).map_err(bind_err)?;
    } else {
        // Best effort: a smaller buffer than asked for is still a working socket.
        match socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
            Ok(()) => debug!(
                %addr,
                requested = UDP_RECV_BUFFER,
                granted = socket.recv_buffer_size().unwrap_or(0),
                "dns udp receive buffer (capped by net.core.rmem_max)"
            ),
            Err(e) => debug!(%addr, error = %e, "dns udp receive buffer left at the default"),
        }
    }
    socket.set_nonblocking(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    if ty == Type::STREAM {
        socket.listen(1024).map_err(bind_err)?;
    }
    Ok(socket)
}
