//! `proxy.https_listen`: TLS from workloads that DNS interception or routing
//! sent here. SNI is required and names the upstream, on port 443: this is
//! where workloads' port-443 traffic lands (DNS answers `dns.proxy_ip`, so a
//! connection to another port never reaches this listener), so a request
//! whose Host or URI names another port is refused (421 `host_mismatch`),
//! as on a tunnel or an intercepted connection, and as sni-only mode here
//! always dials 443: a Host header cannot move an allowed name to another
//! of its ports.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::sniffed::{Intake, KnownDest};
use crate::audit::Mode;
use crate::exchange::ConnInfo;

/// Accepts TLS connections until the task is dropped.
pub async fn run(listener: TcpListener, intake: Intake) {
    let mut errors = super::accept::AcceptErrors::new("https");
    loop {
        let (stream, remote): (_, SocketAddr) = errors.accept(&listener).await;
        let Ok(permit) = super::per_client::admit(&intake.shared, Mode::Https, remote) else {
            continue;
        };
        let intake = intake.clone();
        super::per_client::spawn(permit, async move {
            let mut conn = Box::new(ConnInfo::new(remote, Mode::Https, true, 443));
            conn.fixed_port = true;
            intake
                .serve(
                    stream,
                    conn,
                    KnownDest {
                        host: None,
                        port: 443,
                    },
                )
                .await;
        });
    }
}
