//! Spliced connections checked again when a reload swaps the policy.
//!
//! A WebSocket or an sni-only passthrough is checked once, when it is
//! admitted, and then carries bytes the proxy does not parse for as long as
//! both ends keep it open. So that a reload narrowing access takes effect on
//! them too, each splice holds a [`Recheck`]: at every policy swap it checks,
//! against what the reload put in force,
//! - the client's address against `proxy.client_cidrs`,
//! - the upstream's address (the peer the splice is connected to) against
//!   `proxy.upstream_deny_cidrs`,
//! - its host, running the new pipeline on the host alone (as a tunnel's
//!   target is checked),
//!
//! and the splice is cut when one of them refuses. Its audit record then says
//! `revoked`, with what refused and the bytes moved.

use std::net::IpAddr;
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
    /// The client's address, checked against `proxy.client_cidrs`.
    client: Option<IpAddr>,
    /// The upstream address the splice is connected to, checked against
    /// `proxy.upstream_deny_cidrs`.
    peer: Option<IpAddr>,
}

/// Why a splice was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// What refused it.
    pub cause: Cause,
    /// `host:port`, for the record's `error`.
    pub target: String,
}

/// What refused a splice at a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The new pipeline refused the host.
    Policy {
        /// The transform that refused the host under the new policy.
        by: Option<String>,
        /// That transform's reason (`host_not_allowed`, ...).
        reason: Option<String>,
    },
    /// The upstream address is in a range of the new
    /// `proxy.upstream_deny_cidrs`.
    Denied {
        /// The upstream address.
        ip: IpAddr,
        /// The range it falls in.
        net: ipnet::IpNet,
    },
    /// The client's address is not in the new `proxy.client_cidrs`.
    Client {
        /// The client's address.
        ip: IpAddr,
    },
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
            client: None,
            peer: None,
        }
    }

    /// Also checks, at each swap, `client` (the client's address) against
    /// `proxy.client_cidrs` and `peer` (the upstream address the splice is
    /// connected to, when known) against `proxy.upstream_deny_cidrs`.
    pub fn between(mut self, client: IpAddr, peer: Option<IpAddr>) -> Self {
        self.client = Some(client);
        self.peer = peer;
        self
    }

    /// Resolves once a reload refuses the splice; pending for as long as
    /// everything swapped in allows it. A check is made at once, too: a swap
    /// between admission and this call counts.
    pub async fn revoked(mut self) -> Revoked {
        let mut seen = None;
        loop {
            let generation = *self.swaps.borrow_and_update();
            if seen != Some(generation) {
                seen = Some(generation);
                if let Some(cause) = self.refusal().await {
                    return Revoked {
                        cause,
                        target: format!("{}:{}", self.host, self.port),
                    };
                }
            }
            if self.swaps.changed().await.is_err() {
                // The state is gone: no policy will come.
                std::future::pending::<()>().await;
            }
        }
    }

    /// What refuses the splice now, if anything. The client list and the
    /// deny list are set before the policy's swap is announced (a reload
    /// puts them in place first).
    async fn refusal(&mut self) -> Option<Cause> {
        if let Some(ip) = self.client.filter(|ip| !self.shared.client_acl.allows(*ip)) {
            return Some(Cause::Client { ip });
        }
        if let Some(ip) = self.peer {
            if let Some(net) = self.shared.deny.load().check(ip) {
                return Some(Cause::Denied { ip, net: *net });
            }
        }
        let policy = self.shared.policy();
        if Arc::ptr_eq(&policy, &self.allowed_by) {
            return None;
        }
        // A scratch record: only the refusal is read from it.
        let mut rec = AuditRecord::new(Mode::SniOnly, String::new());
        if !policy
            .check_host(&self.host, self.port, self.precheck, &mut rec)
            .await
        {
            return Some(Cause::Policy {
                by: rec.rejected_by,
                reason: rec.reason,
            });
        }
        self.allowed_by = policy;
        None
    }
}

impl Revoked {
    /// Writes the cut into the splice's record: `reject` (by the refusing
    /// transform, if a transform refused), reason `revoked`, the status
    /// already sent kept, and an `error` that says what refused.
    pub fn record(&self, rec: &mut AuditRecord, what: &str) {
        let status = rec.status_code;
        let (by, why) = match &self.cause {
            Cause::Policy { by, reason } => (
                by.as_deref(),
                format!(
                    "a reload's policy no longer allows {} ({})",
                    self.target,
                    reason.as_deref().unwrap_or("refused")
                ),
            ),
            Cause::Denied { ip, net } => (
                None,
                format!(
                    "a reload's proxy.upstream_deny_cidrs denies the address {} of {} ({net})",
                    ip.to_canonical(),
                    self.target
                ),
            ),
            Cause::Client { ip } => (
                None,
                format!(
                    "after a reload, {} ({})",
                    crate::client_acl::ClientAcl::error(*ip),
                    crate::client_acl::REASON
                ),
            ),
        };
        rec.reject(by, "revoked", status);
        rec.error = Some(format!("{why}: the {what} was closed"));
    }

    /// A short name of what refused, for the log line.
    pub fn refused_by(&self) -> &'static str {
        match self.cause {
            Cause::Policy { .. } => "policy",
            Cause::Denied { .. } => "proxy.upstream_deny_cidrs",
            Cause::Client { .. } => "proxy.client_cidrs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(cause: Cause) -> AuditRecord {
        let mut rec = AuditRecord::new(Mode::Https, "127.0.0.1:5000".into());
        rec.status_code = 101;
        Revoked {
            cause,
            target: "ws.test:443".into(),
        }
        .record(&mut rec, "upgraded connection");
        rec
    }

    #[test]
    fn a_revoked_splice_keeps_its_status_and_names_the_refusal() {
        let rec = cut(Cause::Policy {
            by: Some("allowlist".into()),
            reason: Some("host_not_allowed".into()),
        });
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

    #[test]
    fn a_splice_cut_by_the_deny_list_or_the_client_list_says_which() {
        let rec = cut(Cause::Denied {
            ip: "::ffff:127.0.0.1".parse().expect("ip"),
            net: "127.0.0.0/8".parse().expect("net"),
        });
        assert_eq!(
            (rec.status_code, rec.reason.as_deref()),
            (101, Some("revoked"))
        );
        assert_eq!(rec.rejected_by, None);
        assert_eq!(
            rec.error.as_deref(),
            Some(
                "a reload's proxy.upstream_deny_cidrs denies the address 127.0.0.1 of \
                 ws.test:443 (127.0.0.0/8): the upgraded connection was closed"
            )
        );
        let rec = cut(Cause::Client {
            ip: "192.0.2.7".parse().expect("ip"),
        });
        assert_eq!(rec.reason.as_deref(), Some("revoked"));
        assert_eq!(
            rec.error.as_deref(),
            Some(
                "after a reload, client address 192.0.2.7 is not in proxy.client_cidrs \
                 (client_not_allowed): the upgraded connection was closed"
            )
        );
    }
}
