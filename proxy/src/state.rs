//! Process-wide state shared by every listener: the swappable policy (the
//! pipeline and the limits that come with it), the upstream client and the
//! audit sink. A reload builds a whole new [`Policy`] first and then swaps it;
//! requests in flight keep the `Arc` they started with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::audit::{AuditRecord, AuditSink};
use crate::pipeline::{Dest, Flow, PhaseOutcome, Pipeline};
use crate::upstream::{DenyList, Upstream};

/// Request limits from `proxy.*`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `proxy.max_request_body_bytes`: cap for buffered request bodies.
    pub max_request_body_bytes: usize,
    /// `proxy.max_response_body_bytes`: cap for buffered response bodies (0 = none).
    pub max_response_body_bytes: usize,
    /// `proxy.max_buffered_bytes`: all buffered bodies at once (0 = none).
    pub max_buffered_bytes: usize,
    /// `proxy.upstream_response_header_timeout`.
    pub upstream_response_header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body_bytes: 1 << 20,
            max_response_body_bytes: 0,
            max_buffered_bytes: crate::body::budget::DEFAULT_TOTAL as usize,
            upstream_response_header_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything a reload replaces at once.
pub struct Policy {
    /// The transforms.
    pub pipeline: Pipeline,
    /// Body and timeout limits.
    pub limits: Limits,
}

impl Policy {
    /// True when no request to `host` (normalised) can pass the pipeline,
    /// whatever its method and path ([`Pipeline::refuses_host`]): its MITM
    /// leaf is kept out of the main leaf cache. Asked only when the leaf is
    /// not cached, not per request.
    pub fn refuses_host(&self, host: &str) -> bool {
        let t = crate::rules::Target {
            host,
            ip: host.parse().ok(),
            method: "",
            method_overrides: &[],
            path: "",
            scheme: crate::rules::Scheme::Https,
        };
        self.pipeline.refuses_host(&t)
    }

    /// Runs the pipeline on a host-only request (a tunnel's target, an
    /// sni-only name, a spliced connection checked again after a reload)
    /// and reports whether it may go on; a refusal is written into `rec`.
    /// With `precheck`, the inner requests will be checked again in full, so
    /// a rule's host alone is enough.
    pub async fn check_host(
        &self,
        host: &str,
        port: u16,
        precheck: bool,
        rec: &mut AuditRecord,
    ) -> bool {
        let dest = Dest {
            ip: host.parse().ok(),
            host: host.to_string(),
            port,
            tls: true,
        };
        let mut cx = Flow::new(dest, String::new(), String::new());
        cx.precheck = precheck;
        let mut req = http::Request::new(crate::body::empty());
        match self
            .pipeline
            .on_request(&mut req, &mut cx, &mut rec.request_transforms)
            .await
        {
            PhaseOutcome::Continue => true,
            PhaseOutcome::Reject(by, r) => {
                rec.reject(Some(&by), &r.reason, r.status.as_u16());
                false
            }
            PhaseOutcome::Stub(by, _) => {
                rec.reject(Some(&by), "stub_on_tunnel", 403);
                false
            }
            PhaseOutcome::Fail(by, e) => {
                rec.fail(e.reason, e.detail, e.status.as_u16());
                rec.rejected_by = Some(by);
                false
            }
        }
    }
}

/// State shared by all connections.
pub struct Shared {
    policy: ArcSwap<Policy>,
    /// The deny list, shared with the dialer.
    pub deny: Arc<ArcSwap<DenyList>>,
    /// The pooled upstream client.
    pub upstream: Upstream,
    /// Where audit records go.
    pub audit: AuditSink,
    /// Tracks in-flight exchanges for graceful shutdown.
    pub drain: crate::ops::Drain,
    /// The runtimes that serve client connections.
    pub workers: crate::listen::workers::Workers,
    /// Every client address's open connections, and
    /// `proxy.max_connections_per_client` (which a reload may change).
    pub client_limit: Arc<crate::listen::per_client::ClientLimit>,
    /// `proxy.client_cidrs` (which a reload may change), shared with the
    /// DNS server.
    pub client_acl: Arc<crate::client_acl::ClientAcl>,
    /// Counts policy swaps; spliced connections watch it to be checked
    /// again (`revoke`).
    swaps: watch::Sender<u64>,
    ready: AtomicBool,
    stopping: AtomicBool,
    /// A selected cgroup runs without interception (`app::cgroup_watch`).
    interception_gap: AtomicBool,
}

impl Shared {
    /// State with an initial policy; not ready until [`Shared::set_ready`].
    pub fn new(
        policy: Policy,
        deny: Arc<ArcSwap<DenyList>>,
        upstream: Upstream,
        audit: AuditSink,
        drain: crate::ops::Drain,
        workers: crate::listen::workers::Workers,
    ) -> Self {
        crate::body::budget::global().set_total(policy.limits.max_buffered_bytes);
        Shared {
            policy: ArcSwap::from_pointee(policy),
            deny,
            upstream,
            audit,
            drain,
            workers,
            client_limit: crate::listen::per_client::ClientLimit::new(None),
            client_acl: crate::client_acl::ClientAcl::new(None),
            swaps: watch::Sender::new(0),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            interception_gap: AtomicBool::new(false),
        }
    }

    /// With a cap of `max` connections per client address (`None`: no cap).
    pub fn with_client_limit(self, max: Option<std::num::NonZeroU32>) -> Self {
        self.client_limit.set_max(max);
        self
    }

    /// The current policy; hold the `Arc` for the whole request.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Swaps in a new policy and deny list atomically for new requests.
    /// When the deny list changes, every upstream HTTP connection open is
    /// retired: a pooled one would otherwise keep reaching a range the new
    /// list denies. Spliced connections (WebSockets, sni-only passthrough)
    /// are told, and each checks its host against the new policy
    /// (`revoke`).
    pub fn swap(&self, policy: Policy, deny: DenyList) {
        let changed = **self.deny.load() != deny;
        crate::body::budget::global().set_total(policy.limits.max_buffered_bytes);
        self.deny.store(Arc::new(deny));
        self.policy.store(Arc::new(policy));
        self.swaps.send_modify(|n| *n = n.wrapping_add(1));
        if changed {
            self.upstream.retire_pools();
            tracing::info!("upstream_deny_cidrs changed: open upstream connections are not reused");
        }
    }

    /// A receiver that wakes at each policy swap after this call.
    pub fn swaps(&self) -> watch::Receiver<u64> {
        self.swaps.subscribe()
    }

    /// True once policy, listeners and interception are in place, and while
    /// no selected cgroup runs without interception.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.interception_gap()
    }

    /// Whether a selected cgroup runs without interception (a cgroup made
    /// again that interception could not be linked to).
    pub fn interception_gap(&self) -> bool {
        self.interception_gap.load(Ordering::Acquire)
    }

    /// Records whether a selected cgroup runs without interception.
    pub fn set_interception_gap(&self, gap: bool) {
        self.interception_gap.store(gap, Ordering::Release);
    }

    /// Marks the proxy ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Marks the proxy as shutting down: no longer ready, for good.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
        self.set_ready(false);
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}
