//! `proxy.http_listen`: plain HTTP, routed by Host (origin-form) or by the
//! request URI (absolute-form).

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::audit::Mode;
use crate::exchange::ConnInfo;
use crate::state::Shared;

/// Accepts plain-HTTP connections until the task is dropped.
pub async fn run(listener: TcpListener, shared: Arc<Shared>) {
    let mut errors = super::accept::AcceptErrors::new("http");
    loop {
        let (stream, remote) = errors.accept(&listener).await;
        let Ok(permit) = super::per_client::admit(&shared, Mode::Http, remote) else {
            continue;
        };
        let shared = shared.clone();
        super::per_client::spawn(permit, async move {
            let conn = Box::new(ConnInfo::new(remote, Mode::Http, false, 80));
            super::serve_http(shared, conn, stream).await;
        });
    }
}
