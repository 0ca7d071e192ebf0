//! Spliced connections checked again when a reload swaps the policy.
//!
//! A WebSocket or an sni-only passthrough is checked once, when it is
//! admitted, and then carries bytes the proxy does not parse for as long as
//! both ends keep it open. So that removing a host from the policy takes
//! effect on them too, each splice holds a [`Recheck`]: at every policy swap
//! it runs the new pipeline on its host alone (as a tunnel's target is
//! checked), and the splice is cut when that is refused. Its audit record
//! then says `revoked`, with the transform that refused and the bytes moved.

use std::sync::Arc;

use tokio::sync::watch;

use crate::audit::{AuditRecord, Mode};
use crate::state::{Policy, Shared};

/// What a splice is checked against after each reload.
pub struct Recheck {
    shared: Arc<Shared>,
    swaps: watch::Receiver<u64>,
    /// The policy the splice was last allowed by.
    allowed_by: Arc<Policy>,
    host: String,
    port: u16,
    precheck: bool,
}

/// Why a splice was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The transform that refused the host under the new policy.
    pub by: Option<String>,
    /// That transform's reason (`host_not_allowed`, ...).
    pub reason: Option<String>,
    /// `host:port`, for the record's `error`.
    pub target: String,
}

impl Recheck {
    /// Checks `host:port` again at each policy swap after `allowed_by`,
    /// the policy that admitted it (a swap between admission and this call
    /// counts). `precheck` as in [`Policy::check_host`]: true where the
    /// admission looked at a whole request (a WebSocket handshake), so that
    /// a rule's host alone keeps it; false for sni-only, admitted by host.
    pub fn new(
        shared: &Arc<Shared>,
        allowed_by: Arc<Policy>,
        host: &str,
        port: u16,
        precheck: bool,
    ) -> Self {
        Recheck {
            swaps: shared.swaps(),
            shared: shared.clone(),
            allowed_by,
            host: host.to_string(),
            port,
            precheck,
        }
    }

    /// Resolves once a policy refuses the host; pending for as long as
    /// every policy swapped in allows it.
    pub async fn revoked(mut self) -> Revoked {
        loop {
            self.swaps.borrow_and_update();
            let policy = self.shared.policy();
            if !Arc::ptr_eq(&policy, &self.allowed_by) {
                // A scratch record: only the refusal is read from it.
                let mut rec = AuditRecord::new(Mode::SniOnly, String::new());
                if !policy
                    .check_host(&self.host, self.port, self.precheck, &mut rec)
                    .await
                {
                    return Revoked {
                        by: rec.rejected_by,
                        reason: rec.reason,
                        target: format!("{}:{}", self.host, self.port),
                    };
                }
                self.allowed_by = policy;
            }
            if self.swaps.changed().await.is_err() {
                // The state is gone: no policy will come.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Revoked {
    /// Writes the cut into the splice's record: `reject` by the refusing
    /// transform, reason `revoked`, the status already sent kept.
    pub fn record(&self, rec: &mut AuditRecord, what: &str) {
        let status = rec.status_code;
        rec.reject(self.by.as_deref(), "revoked", status);
        rec.error = Some(format!(
            "a reload's policy no longer allows {} ({}): the {what} was closed",
            self.target,
            self.reason.as_deref().unwrap_or("refused")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_splice_keeps_its_status_and_names_the_refusal() {
        let mut rec = AuditRecord::new(Mode::Https, "127.0.0.1:5000".into());
        rec.status_code = 101;
        Revoked {
            by: Some("allowlist".into()),
            reason: Some("host_not_allowed".into()),
            target: "ws.test:443".into(),
        }
        .record(&mut rec, "upgraded connection");
        assert_eq!(rec.status_code, 101);
        assert_eq!(rec.reason.as_deref(), Some("revoked"));
        assert_eq!(rec.rejected_by.as_deref(), Some("allowlist"));
        assert_eq!(
            rec.error.as_deref(),
            Some(
                "a reload's policy no longer allows ws.test:443 (host_not_allowed): \
                 the upgraded connection was closed"
            )
        );
    }
}
