//! rustls configurations: the MITM server side facing workloads, and the
//! client side facing real upstreams.
//!
//! Both use the aws-lc-rs provider explicitly (`super::provider`) rather than
//! a process default, so a dependency that enables another provider cannot
//! change what we negotiate.

use std::sync::Arc;

use rustls::server::ResolvesServerCert;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN protocols the proxy offers on both sides, most preferred first.
pub const ALPN_H2_HTTP11: &[&[u8]] = &[b"h2", b"http/1.1"];

/// ALPN protocols the proxy accepts from clients: [`ALPN_H2_HTTP11`] and
/// `http/1.0`, so that a client offering only that one (`curl --http1.0`) is
/// served rather than refused with `no_application_protocol` (the HTTP
/// server tells the versions apart by what the client sends).
pub const ALPN_SERVED: &[&[u8]] = &[b"h2", b"http/1.1", b"http/1.0"];

/// Errors from building TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// No usable root certificate was found for upstream verification.
    #[error("no upstream root certificates loaded (checked SSL_CERT_FILE, SSL_CERT_DIR or the system store){}", first_error(.errors))]
    NoRoots {
        /// What went wrong while loading, one line each.
        errors: Vec<String>,
    },
}

fn first_error(errors: &[String]) -> String {
    errors.first().map(|e| format!(": {e}")).unwrap_or_default()
}

/// The server config for MITM handshakes with workloads: certificates come
/// from `resolver` (normally an [`SniResolver`](super::SniResolver)), `alpn`
/// is offered in preference order (use [`ALPN_H2_HTTP11`]).
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        // The aws-lc-rs provider supports TLS 1.2 and 1.3 with its default suites.
        .expect("the aws-lc-rs provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Our suite order (AES-128-GCM first, see `provider`), not the client's.
    config.ignore_client_order = true;
    // Session resumption that holds up under load: stateless tickets, sealed
    // with AEAD keys that rustls keeps in memory only and rotates every 6 h,
    // so a workload reconnecting to a host (Node's https agent, curl, a
    // browser) skips the certificate and its signature however many other
    // clients came in between. The default, a 256-entry session cache fed two
    // entries per handshake, forgets a session after ~128 other handshakes.
    // One ticket per handshake: clients resume the latest one.
    match rustls::crypto::aws_lc_rs::Ticketer::new() {
        Ok(ticketer) => {
            config.ticketer = ticketer;
            config.send_tls13_tickets = 1;
        }
        Err(e) => {
            tracing::warn!(error = %e, "no TLS session tickets; resumption falls back to a session cache")
        }
    }
    Arc::new(config)
}

/// Loads upstream roots with rustls-native-certs: `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` when set (and then only those), else the system store.
/// Unparsable entries are logged and skipped; no usable root at all is an error.
pub fn load_native_roots() -> Result<RootCertStore, TlsConfigError> {
    let loaded = rustls_native_certs::load_native_certs();
    let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    for error in &errors {
        tracing::warn!(%error, "while loading upstream root certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if ignored > 0 {
        tracing::warn!(ignored, "skipped unparsable upstream root certificates");
    }
    if added == 0 {
        return Err(TlsConfigError::NoRoots { errors });
    }
    tracing::debug!(roots = added, "loaded upstream root certificates");
    Ok(roots)
}

/// A client config verifying upstreams against `roots` and offering `alpn`.
pub fn client_config(roots: RootCertStore, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The upstream client config: native roots, ALPN h2 then http/1.1.
/// Build it once at startup (or reload) and share the `Arc`.
pub fn upstream_client_config() -> Result<Arc<ClientConfig>, TlsConfigError> {
    Ok(client_config(load_native_roots()?, ALPN_H2_HTTP11))
}

#[cfg(test)]
mod tests;
