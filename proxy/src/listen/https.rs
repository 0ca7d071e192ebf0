//! `proxy.https_listen`: TLS from workloads that DNS interception or routing
//! sent here. SNI is required and names the upstream (port 443).

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::sniffed::{Intake, KnownDest};
use crate::audit::Mode;
use crate::exchange::ConnInfo;

/// Accepts TLS connections until the task is dropped.
pub async fn run(listener: TcpListener, intake: Intake) {
    loop {
        let (stream, remote): (_, SocketAddr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on https listener");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let intake = intake.clone();
        tokio::spawn(async move {
            let conn = ConnInfo::new(remote, Mode::Https, true, 443);
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
