//! The proxy's own name resolution for dialing upstreams: hickory-resolver with
//! its TTL-respecting cache, pointed at `dns.upstream_resolver` when set and at
//! the OS configuration otherwise. Names are resolved only after the pipeline
//! allowed the request, so a denied name never leaves the proxy.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;

/// Errors building the resolver or resolving a name.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The resolver could not be built (for example, unreadable resolv.conf).
    #[error("building the resolver")]
    Build(#[source] crate::dns::DnsError),
    /// The lookup failed or returned no address.
    #[error("resolving {name}: {detail}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// What went wrong.
        detail: String,
    },
}

/// Resolves upstream host names.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// A resolver using `upstream` (UDP and TCP) or, when `None`, the OS configuration.
    pub fn new(upstream: Option<SocketAddr>) -> Result<Self, ResolveError> {
        Ok(Resolver {
            inner: crate::dns::build_resolver(upstream).map_err(ResolveError::Build)?,
        })
    }

    /// All addresses of `host` (A and AAAA). An IP literal resolves to itself.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        // A trailing dot makes the name fully qualified, so search domains never apply.
        let fqdn = format!("{host}.");
        let found =
            self.inner
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| ResolveError::Lookup {
                    name: host.to_string(),
                    detail: e.to_string(),
                })?;
        let ips: Vec<IpAddr> = found.iter().collect();
        if ips.is_empty() {
            return Err(ResolveError::Lookup {
                name: host.to_string(),
                detail: "no addresses".into(),
            });
        }
        Ok(ips)
    }
}
