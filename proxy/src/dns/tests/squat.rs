//! While the server runs, no other socket can take or share its port: the
//! UDP socket sets neither `SO_REUSEADDR` nor `SO_REUSEPORT` and the TCP
//! listener not `SO_REUSEPORT`, so a second bind on the address, on the
//! wildcard address, or with either option fails, and the queries keep
//! reaching the server. (While the proxy is down, interception refuses to
//! redirect to a socket without the proxy's mark: `DnsSettings::mark_as_proxy`,
//! tested with the eBPF programs in `proxy/tests/intercept_kernel`.)

use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use super::peers::dig;
use super::*;

/// Binds a `ty` socket at `addr` with the given options, as a squatter would.
fn squat(addr: SocketAddr, ty: Type, reuse_addr: bool, reuse_port: bool) -> std::io::Result<()> {
    let proto = if ty == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let s = Socket::new(Domain::IPV4, ty, Some(proto))?;
    s.set_reuse_address(reuse_addr)?;
    s.set_reuse_port(reuse_port)?;
    s.bind(&addr.into())?;
    if ty == Type::STREAM {
        s.listen(16)?;
    }
    Ok(())
}

#[tokio::test]
async fn another_socket_cannot_take_or_share_the_port() {
    let (server, addr) = start(settings(&[], None)).await;
    let wildcard = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
    for ty in [Type::DGRAM, Type::STREAM] {
        for at in [addr, wildcard] {
            for (reuse_addr, reuse_port) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let bound = squat(at, ty, reuse_addr, reuse_port);
                assert_eq!(
                    bound.as_ref().map_err(std::io::Error::kind),
                    Err(std::io::ErrorKind::AddrInUse),
                    "{ty:?} at {at}, SO_REUSEADDR {reuse_addr}, SO_REUSEPORT {reuse_port}: {bound:?}"
                );
            }
        }
    }
    for mode in ["+notcp", "+tcp"] {
        let d = dig(addr, &[mode, "x.example.com", "A"]).await;
        assert_eq!(
            d.rdata("A"),
            vec![PROXY_IP.to_string()],
            "{mode}: {}",
            d.raw
        );
    }
    assert_eq!(server.stats().snapshot().intercepted, 2);
}
