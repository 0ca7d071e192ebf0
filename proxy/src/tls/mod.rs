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
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
