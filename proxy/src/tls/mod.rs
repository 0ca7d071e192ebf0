//! TLS building blocks: the MITM CA, leaf minting and caching, rustls
//! configurations for both sides, ClientHello sniffing and CA generation.
//!
//! The listeners put these together: [`sniff::peek_client_hello`] decides
//! between MITM, passthrough and plain HTTP; for MITM, [`server::server_config`]
//! with an [`SniResolver`] over a [`LeafCache`] terminates the client's TLS, and
//! [`server::upstream_client_config`] verifies the real upstream.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub mod ca;
pub mod cache;
pub mod generate;
pub mod leaf;
pub mod server;
pub mod sniff;

#[cfg(test)]
mod test_support;

pub use ca::{CaError, CertificateAuthority};
pub use cache::{CacheStats, LeafCache, SniResolver};
pub use generate::{generate_ca, CaAlg, GenerateError};
pub use leaf::{LeafError, LeafMinter, MintedLeaf};
pub use server::{server_config, upstream_client_config, TlsConfigError, ALPN_H2_HTTP11};
pub use sniff::{peek_client_hello, sniff, PrefixedStream, Sniff, SniffError};

/// The ring crypto provider, shared by every config and signer we build.
///
/// Its suites are ring's defaults with `TLS13_AES_128_GCM_SHA256` moved
/// first: AES-128 costs less per record than AES-256, and its SHA-256 key
/// schedule less per handshake than SHA-384 (the proxy pays both on two legs).
/// The MITM server config prefers this order over the client's.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut p = rustls::crypto::ring::default_provider();
            p.cipher_suites
                .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
            Arc::new(p)
        })
        .clone()
}
