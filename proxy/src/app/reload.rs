//! Hot reload (`POST /v1/reload`, SIGHUP): re-read the config from its source
//! (the file, or the S3 object fetched again), build a
//! complete new policy, bind the listener addresses it adds, and change
//! anything only if all of that succeeded. Requests in flight keep the policy
//! they started with.
//!
//! What a reload changes: `transforms`, and in `proxy` the body limits, the
//! upstream response header timeout, `upstream_deny_cidrs` and
//! `max_connections_per_client` (for connections accepted from then on,
//! counted with the ones open: `listen::per_client`). With eBPF
//! interception the new deny list is written into the pinned kernel trie too
//! (new ranges first, then the removed ones go, so a range in both lists is
//! never absent), before the userspace policy swaps. After the swap, the
//! listener addresses (`proxy.http_listen`, `proxy.https_listen`,
//! `proxy.tunnel_listen`, `metrics.listen`) follow the config
//! ([`super::listeners`]: new sockets were bound before anything changed, so
//! an address that is taken fails the whole reload), and `log.level` is
//! applied unless `IRON_LOG_FILTER` set the filter (then the answer's
//! `not_applied` says so).
//!
//! Everything else (`tls`, `dns`, `management`, whose listener serves the reload's own answer, `log.format`,
//! `intercept`) is fixed at startup. A reload that changes one of those still
//! applies the rest, keeps the running values, logs a warning and lists the
//! settings in the response's `restart_required`. A config that startup would
//! refuse (`mcp` servers, which this build cannot enforce) is refused by the
//! reload too, so a reload can never load a policy that is silently ignored.
//! Transforms a reload builds take their backend HTTP client from the
//! process-long [`Sources`], so it keeps the startup resolver, exactly as the
//! data plane does (`dns` is restart-only). They are built through a staged
//! registry ([`Sources::stage`]): what they ask of the secret sources (the
//! first fetch of a source the config adds, a kept source's new `ttl`) is
//! done by the commit after the swap, which also re-reads the sources kept
//! (the answer's `secrets_reread`), so a reload refused after its build has
//! contacted no backend and retuned nothing.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::config::{self, Config};
use crate::config_source::{self, ConfigSource};
use crate::ops::{self, Metrics, ReloadController, ReloadSummary, Reloader};
use crate::secrets::aws::AwsShared;
use crate::secrets::{Sources, Staged};
use crate::state::Shared;

use super::build_policy;
use super::listeners::{self, Listeners};

struct SourceReloader {
    source: ConfigSource,
    /// The AWS chain an S3 source is fetched with (the backend client, so
    /// the startup resolver).
    aws: AwsShared,
    shared: Arc<Shared>,
    sources: Sources,
    /// The config the process started with, for the settings a reload cannot
    /// change.
    started: Config,
    /// The CA the process started with (MITM).
    started_ca: Option<CaFingerprint>,
    metrics: Arc<Metrics>,
    /// The interception in force, whose kernel deny list follows
    /// `proxy.upstream_deny_cidrs`.
    kernel_deny: Option<KernelDeny>,
    /// The listeners whose addresses follow the config.
    listeners: Arc<Listeners>,
}

/// Interception whose kernel-side deny list a reload must update.
#[derive(Debug, Clone)]
pub enum KernelDeny {
    /// eBPF: the pin directory; the deny trie is updated in place.
    Bpf(PathBuf),
    /// nftables: the settings the table is built from (shared with the
    /// cgroup watcher, which rebuilds it for a cgroup made again); the table
    /// is replaced in one transaction with the new deny list.
    Nft(Arc<std::sync::Mutex<crate::intercept::InterceptSettings>>),
}

impl KernelDeny {
    /// Puts `cidrs` into the kernel; returns how many entries were written.
    fn update(&self, cidrs: Vec<crate::intercept::DenyCidr>) -> Result<usize, String> {
        match self {
            KernelDeny::Bpf(pin) => {
                crate::intercept::Interceptor::update_deny(pin, &cidrs).map_err(|e| e.to_string())
            }
            KernelDeny::Nft(settings) => {
                let mut s = settings.lock().unwrap_or_else(|p| p.into_inner());
                let previous = std::mem::replace(&mut s.deny, cidrs);
                let n = s.deny.len();
                super::intercept::nft_apply(&s).map(|_| n).inspect_err(|_| {
                    // The table in force still has the old list.
                    s.deny = previous;
                })
            }
        }
    }
}

impl SourceReloader {
    /// Loads the CA (only to refuse what the next start would refuse) and
    /// builds the policy, reading every file the config names, on the
    /// blocking pool and for [`BUILD_TIMEOUT`] at most. A read that never
    /// returns (a file on a hung network file system) would otherwise hold a
    /// runtime thread, and the reload lock with every reload queued behind
    /// it, forever; its thread is left to finish on its own.
    async fn build(&self, cfg: &Config) -> Result<Built, Vec<String>> {
        let (cfg, sources, metrics) = (cfg.clone(), self.sources.clone(), self.metrics.clone());
        let build = tokio::task::spawn_blocking(move || {
            let mut ca_expiry = None;
            let ca = match &cfg.tls {
                config::TlsConfig::Mitm(m) => {
                    let loaded = super::load_ca(&cfg, m).map_err(|e| vec![e.with_label("")])?;
                    ca_expiry = crate::tls::expiry::of_config(&loaded, m);
                    Some(CaFingerprint::of(&loaded))
                }
                config::TlsConfig::SniOnly => None,
            };
            // Nothing the build asks of the secret sources happens before
            // the commit, after the swap: a reload refused below contacts
            // no backend and retunes no cache.
            let staged = sources.stage();
            let (policy, deny) = build_policy(&cfg, staged.sources(), Some(&metrics))
                .map_err(|e| vec![e.to_string()])?;
            Ok(Built {
                policy,
                deny,
                ca,
                ca_expiry,
                staged,
            })
        });
        match tokio::time::timeout(BUILD_TIMEOUT, build).await {
            Ok(Ok(built)) => built,
            Ok(Err(joined)) => Err(vec![format!("building the policy failed: {joined}")]),
            Err(_) => Err(vec![format!(
                "building the policy took longer than {} s: a file the config names (the CA, \
                 a TLS file, a key file) did not finish reading; is it on a hung network file \
                 system? The running policy is unchanged",
                BUILD_TIMEOUT.as_secs()
            )]),
        }
    }

    /// Puts `proxy.client_cidrs`, `proxy.max_connections_per_client` and
    /// `proxy.max_connections` of `cfg` in force, logging what changed.
    fn apply_client_limits(&self, cfg: &Config) {
        let cap = cfg.proxy.max_connections_per_client;
        let was = self.shared.client_limit.set_max(cap);
        if was != cap {
            let text = |c: Option<std::num::NonZeroU32>| c.map_or("none".into(), |n| n.to_string());
            tracing::info!(
                from = %text(was),
                to = %text(cap),
                "proxy.max_connections_per_client changed"
            );
        }
        let total = super::max_connections(&cfg.proxy);
        let was = self.shared.client_limit.set_max_total(total);
        if was != total {
            let text = |c: Option<std::num::NonZeroU32>| c.map_or("none".into(), |n| n.to_string());
            tracing::info!(
                from = %text(was),
                to = %text(total),
                "proxy.max_connections changed"
            );
        }
        if self.shared.client_acl.set(cfg.proxy.client_cidrs.clone()) {
            let to = cfg
                .proxy
                .client_cidrs
                .as_ref()
                .map_or("any client".into(), |c| {
                    c.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                });
            tracing::info!(%to, "proxy.client_cidrs changed (loopback is always admitted)");
        }
    }
}

/// What [`SourceReloader::build`] made of a config.
struct Built {
    policy: crate::state::Policy,
    deny: crate::upstream::DenyList,
    /// The CA the config names (MITM), as its files hold it now.
    ca: Option<CaFingerprint>,
    /// That CA's coming expiry, within 30 days.
    ca_expiry: Option<crate::tls::expiry::ExpiresSoon>,
    /// What the build asks of the secret sources, done once it is in force.
    staged: Staged,
}

/// The SHA-256 of a CA's certificate chain (DER): a CA replaced in its
/// files (same paths, new contents) is told apart from the one running,
/// which a reload does not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFingerprint([u8; 32]);

impl CaFingerprint {
    /// The fingerprint of `ca`.
    pub fn of(ca: &crate::tls::CertificateAuthority) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for der in std::iter::once(ca.cert_der()).chain(ca.chain()) {
            h.update((der.len() as u64).to_be_bytes());
            h.update(der.as_ref());
        }
        CaFingerprint(h.finalize().into())
    }
}

/// The `restart_required` entry of a CA rotated in place.
const CA_FILES_CHANGED: &str = "tls (CA files changed)";

/// Whether a reload would leave no `allowlist` transform while the running
/// policy has one: every destination would then be allowed. The config may
/// have been cut short while written (a file ends before or just after
/// `transforms:`), so this is refused; an explicit `allowlist` of
/// `domains: ["*"]` says that every destination is meant (the spec's
/// catch-all), and a restart takes a config without one (with a warning).
fn drops_the_allowlist(running: &crate::state::Policy, new: &Config) -> Option<String> {
    let had = running
        .pipeline
        .transforms()
        .iter()
        .any(|t| t.name() == "allowlist");
    let keeps = new
        .transforms
        .iter()
        .any(|t| matches!(t, config::TransformConfig::Allowlist(_)));
    (had && !keeps).then(|| {
        format!(
            "{}: transforms: the new config has no allowlist transform while the running one \
             has: every destination would be allowed. Was the file read while it was being \
             written? Write the config to a temporary file and rename it into place. To allow \
             every destination on purpose, configure an allowlist with domains: [\"*\"]. The \
             running policy is unchanged",
            new.locate("transforms")
        )
    })
}

/// How long a reload waits for its CA and policy to be built: they read
/// the files the config names, and nothing else takes time.
pub const BUILD_TIMEOUT: std::time::Duration = config_source::READ_TIMEOUT;

#[async_trait]
impl Reloader for SourceReloader {
    async fn reload(&self) -> Result<ReloadSummary, Vec<String>> {
        let name = self.source.to_string();
        // Parse the very bytes that are hashed, so the reported hash is the config in force.
        let bytes = self.source.read(&self.aws).await.map_err(|e| match e {
            // S3 errors name the object already.
            config_source::SourceError::S3(e) => vec![e.to_string()],
            e => vec![format!("{name}: {}", crate::error_chain(&e))],
        })?;
        let cfg = config_source::parse(&bytes, &name)
            .map_err(|e| e.0.iter().map(|x| x.to_string()).collect::<Vec<_>>())?;
        // What the next start would refuse is refused here too, though the
        // running proxy keeps its CA and management key until a restart:
        // else a reload would report success and the next restart (a
        // deploy, a crash, a reboot) would fail. As nginx re-tests its
        // certificates on reload.
        if let Some(mgmt) = &cfg.management {
            crate::ops::ApiKey::from_env(&mgmt.api_key_env).map_err(|e| {
                vec![format!(
                    "{}: management.api_key_env: {e}",
                    cfg.locate("management.api_key_env")
                )]
            })?;
        }
        // A secret's variable or file that is not there would turn a working
        // credential into one that fails every request (502
        // `secret_unavailable`) with the reload answered 200: refused, the
        // running policy kept.
        let missing = config::missing_inputs(&cfg, &|k| std::env::var(k).ok());
        if !missing.is_empty() {
            return Err(missing
                .iter()
                .map(|r| format!("{}: {r}", cfg.locate(&r.path)))
                .collect());
        }
        if let Some(refused) = drops_the_allowlist(&self.shared.policy(), &cfg) {
            return Err(vec![refused]);
        }
        let Built {
            policy,
            deny,
            ca,
            ca_expiry,
            staged,
        } = self.build(&cfg).await?;
        // Lints, and the `IRON_*` variables nothing reads, as start-up logs them: the
        // environment is the one the process started with, but what the config names (a
        // secret source's `var`, `api_key_env`) is this config's.
        let mut findings = config::lint(&cfg);
        findings.extend(config::unknown_variables(&cfg, config::process_names()));
        let mut warnings: Vec<String> = findings.iter().map(|l| l.to_string()).collect();
        for finding in &warnings {
            tracing::warn!(%finding, "configuration warning");
        }
        // As at start-up, and in the reload's answer: the CA in the files
        // (the one in force unless rotated in place, which a restart takes).
        if let Some(soon) = &ca_expiry {
            soon.log();
            warnings.push(format!(
                "{}: tls.ca_cert: {soon}",
                cfg.locate("tls.ca_cert")
            ));
        }
        let transforms = policy.pipeline.transforms().len();
        // Every new socket is bound before anything changes: a reload whose
        // address is taken changes nothing.
        let prepared = self
            .listeners
            .prepare(&cfg, &listeners::Kind::ALL)
            .map_err(|e| vec![crate::error_chain(&e)])?;
        let kernel_deny = match &self.kernel_deny {
            Some(kd) => {
                let cidrs = super::intercept::deny_cidrs(&cfg);
                let n = cidrs.len();
                // Off the runtime: nftables runs `nft`, under the lock the
                // cgroup watcher takes to rebuild the table.
                let kd = kd.clone();
                let entries = tokio::task::spawn_blocking(move || kd.update(cidrs))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                    .map_err(|e| vec![format!("intercept: updating the kernel deny list: {e}")])?;
                tracing::info!(cidrs = n, entries, "kernel deny list reloaded");
                Some(n)
            }
            None => None,
        };
        // The client list and the connection caps go in with the policy,
        // before the swap is announced: the splices it wakes check their
        // client against the new list, and no request is served under the
        // new policy with the old list while the listeners move (which may
        // take seconds).
        self.apply_client_limits(&cfg);
        self.shared.swap(policy, deny);
        // In force: the sources it adds are fetched, the ones it keeps
        // re-read (in the background; "configuration reloaded" counts them).
        let secrets = staged.commit();
        let moved = self.listeners.commit(prepared).await;
        for c in &moved {
            tracing::info!(
                listener = c.kind.field(),
                old = %addrs(&c.old),
                new = %addrs(&c.new),
                "listener address changed"
            );
        }
        let mut not_applied = Vec::new();
        match ops::logs::set_level(cfg.log.level.as_str()) {
            ops::logs::LevelChange::Applied { from, to } => {
                tracing::info!(%from, %to, "log level changed");
            }
            ops::logs::LevelChange::EnvFilter => {
                if self.started.log.level != cfg.log.level {
                    let note = format!(
                        "log.level: {} is set and decides the log filter; log.level {} is not applied",
                        ops::logs::FILTER_ENV,
                        cfg.log.level.as_str()
                    );
                    tracing::info!("{note}");
                    not_applied.push(note);
                }
            }
            ops::logs::LevelChange::Unchanged | ops::logs::LevelChange::NotInstalled => {}
        }
        // Parsing and building touched start-up code again.
        crate::resident::release_after("reload");
        let mut restart_required = restart_only_changes(&self.started, &cfg);
        // The same files with new contents: `tls` compares equal, but the CA
        // in force is still the one loaded at startup.
        if !restart_required.contains(&"tls") && ca.is_some() && ca != self.started_ca {
            restart_required.push(CA_FILES_CHANGED);
        }
        // "configuration reloaded" itself is logged once, by the management
        // side that ran this reload (with its trigger and the config hash).
        if !restart_required.is_empty() {
            tracing::warn!(
                sections = %restart_required.join(", "),
                "these settings changed but take effect only after a restart"
            );
        }
        let mut details = Map::new();
        details.insert("transforms".into(), Value::from(transforms));
        details.insert("secrets_reread".into(), Value::from(secrets.reread));
        if let Some(cidrs) = kernel_deny {
            details.insert("kernel_deny_cidrs".into(), Value::from(cidrs));
        }
        if !moved.is_empty() {
            let changed: Vec<Value> = moved
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "field": c.kind.field(),
                        "old": c.old.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "new": c.new.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })
                })
                .collect();
            details.insert("listeners_changed".into(), Value::from(changed));
        }
        details.insert("restart_required".into(), Value::from(restart_required));
        if !not_applied.is_empty() {
            details.insert("not_applied".into(), Value::from(not_applied));
        }
        if !warnings.is_empty() {
            details.insert("warnings".into(), Value::from(warnings));
        }
        Ok(ReloadSummary {
            config_hash: ops::management::config_hash(&bytes),
            details,
        })
    }
}

/// Addresses for a log line: `127.0.0.1:8443`, `0.0.0.0:80, [::]:80`, or `none`.
fn addrs(list: &[std::net::SocketAddr]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The settings fixed at startup that differ between `old` and `new`, by config path.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, name: &'static str| {
        if changed {
            out.push(name);
        }
    };
    check(old.tls != new.tls, "tls");
    check(old.dns != new.dns, "dns");
    check(old.management != new.management, "management");
    check(old.log.format != new.log.format, "log.format");
    check(old.intercept != new.intercept, "intercept");
    out
}

/// What the process started with.
pub struct Started<'a> {
    /// The config in force.
    pub config: Config,
    /// The bytes it was parsed from (their hash is the first `config_hash`).
    pub bytes: &'a [u8],
    /// The CA in force (MITM).
    pub ca: Option<CaFingerprint>,
}

/// The reload controller shared by the management API and SIGHUP.
/// `kernel_deny`: the interception in force, if any.
pub fn controller(
    source: ConfigSource,
    started: Started<'_>,
    shared: Arc<Shared>,
    sources: Sources,
    metrics: Arc<Metrics>,
    kernel_deny: Option<KernelDeny>,
    listeners: Arc<Listeners>,
) -> Arc<ReloadController> {
    let reloader = Arc::new(SourceReloader {
        source,
        aws: sources.aws_chain(None),
        shared,
        sources,
        started: started.config,
        started_ca: started.ca,
        metrics: metrics.clone(),
        kernel_deny,
        listeners,
    });
    ReloadController::new(
        reloader,
        ops::management::config_hash(started.bytes),
        Some(metrics),
    )
}

#[cfg(test)]
mod tests;
