//! TLS building blocks: the MITM CA, leaf minting and caching, rustls
//! configurations for both sides, ClientHello sniffing and CA generation.
//!
//! The listeners put these together: [`sniff::peek_client_hello`] decides
//! between MITM, passthrough and plain HTTP; for MITM, [`LeafCache::prepare`]
//! mints the leaf off the runtime if it is not cached ([`mint_queue`]: in
//! fair turns), [`server::server_config`] with an [`SniResolver`] over the
//! [`LeafCache`] terminates the client's TLS, and
//! [`server::upstream_client_config`] verifies the real upstream.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub mod ca;
pub mod cache;
pub mod expiry;
pub mod generate;
pub mod leaf;
pub mod mint_queue;
pub mod server;
pub mod sniff;
pub mod ticket_hold;

#[cfg(test)]
pub(crate) mod test_support;

pub use ca::{CaError, CaFile, CertificateAuthority};
pub use cache::{CacheStats, LeafCache, Minting, PrepareError, SniResolver};
pub use generate::{generate_ca, CaAlg, GenerateError};
pub use leaf::{LeafError, LeafMinter, MintedLeaf};
pub use server::{
    server_config, upstream_client_config, TlsConfigError, ALPN_H2_HTTP11, ALPN_SERVED,
};
pub use sniff::{peek_client_hello, sniff, PrefixedStream, Sniff, SniffError};

/// The crypto provider shared by every config and signer we build: aws-lc-rs.
///
/// - Its X25519 costs about half of ring's, the largest single item of a new
///   MITM connection (docs/benchmarks.md, round 4).
/// - Suites are its defaults with `TLS13_AES_128_GCM_SHA256` moved first:
///   AES-128 costs less per record than AES-256, and its SHA-256 key schedule
///   less per handshake than SHA-384 (the proxy pays both on two legs). The
///   MITM server config prefers this order over the client's.
/// - Key exchange offers the X25519MLKEM768 hybrid first, so upstream
///   connections are post-quantum where the server supports it (a server without
///   ML-KEM still gets the X25519 share in the same ClientHello). As a server,
///   rustls follows the client's group order, so a workload that offers the
///   hybrid gets it and one that offers X25519 pays for X25519 only.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::aws_lc_rs::{self, kx_group};
            let mut p = aws_lc_rs::default_provider();
            p.cipher_suites
                .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
            p.kx_groups = vec![
                kx_group::X25519MLKEM768,
                kx_group::X25519,
                kx_group::SECP256R1,
                kx_group::SECP384R1,
            ];
            Arc::new(p)
        })
        .clone()
}

/// Makes [`provider`] the process default, so that libraries building rustls
/// configs without naming a provider get the same suites and groups as the
/// rest of the process instead of rustls's stock aws-lc-rs order (which a
/// dependency's `prefer-post-quantum` feature changes). Idempotent.
pub fn install_default_provider() {
    // An Err means a default is already installed: ours, from an earlier call.
    let _ = CryptoProvider::install_default((*provider()).clone());
}
