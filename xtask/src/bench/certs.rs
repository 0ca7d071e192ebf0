//! Certificates for the bench: the upstream's own CA and server certificate
//! (which every proxy trusts through `SSL_CERT_FILE` or its own option), and
//! one MITM CA made by iron-proxy's `generate_ca`, shared by every MITM proxy
//! so that they all mint from the same kind of key (ECDSA P-256).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The name the upstream is reached by, through every topology.
pub const UPSTREAM_NAME: &str = "upstream.bench.test";

/// Everything the topologies need, as files under the work directory.
pub struct Certs {
    /// PEM of the CA that signed the upstream's certificate.
    pub upstream_ca: PathBuf,
    /// The upstream's certificate chain and key, in memory.
    pub upstream_chain: Vec<CertificateDer<'static>>,
    /// The upstream's private key (PKCS#8 DER).
    pub upstream_key_der: Vec<u8>,
    /// The MITM CA certificate (PEM), as iron-proxy wrote it.
    pub mitm_ca_cert: PathBuf,
    /// The MITM CA key (PEM).
    pub mitm_ca_key: PathBuf,
    /// Key then certificate in one PEM file (squid's `tls-cert`, mitmproxy's `mitmproxy-ca.pem`).
    pub mitm_ca_combined: PathBuf,
}

impl Certs {
    /// Creates every certificate under `dir` (which must not hold them yet).
    pub fn create(dir: &Path, upstream_ip: IpAddr) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

        // Upstream CA and server certificate.
        let ca_key = KeyPair::generate().context("generating the upstream CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "iron-proxy bench upstream CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().context("generating the upstream key")?;
        let mut leaf_params =
            CertificateParams::new(vec![UPSTREAM_NAME.to_string(), "localhost".to_string()])?;
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress(upstream_ip));
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, UPSTREAM_NAME);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

        let upstream_ca = dir.join("upstream-ca.pem");
        write(&upstream_ca, ca_cert.pem().as_bytes())?;

        // The MITM CA, made the way operators make it.
        let mitm_dir = dir.join("mitm-ca");
        let (mitm_ca_cert, mitm_ca_key) = iron_proxy::tls::generate_ca(
            &mitm_dir,
            "iron-proxy bench MITM CA",
            24,
            iron_proxy::tls::CaAlg::Ecdsa,
        )
        .context("generating the MITM CA")?;
        let mut combined = std::fs::read_to_string(&mitm_ca_key)?;
        combined.push_str(&std::fs::read_to_string(&mitm_ca_cert)?);
        let mitm_ca_combined = dir.join("mitm-ca-combined.pem");
        write(&mitm_ca_combined, combined.as_bytes())?;

        Ok(Certs {
            upstream_ca,
            upstream_chain: vec![leaf.der().clone(), ca_cert.der().clone()],
            upstream_key_der: leaf_key.serialize_der(),
            mitm_ca_cert,
            mitm_ca_key,
            mitm_ca_combined,
        })
    }

    /// The upstream's rustls server config (HTTP/1.1 only, so every topology
    /// speaks the same protocol end to end).
    pub fn upstream_server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let key = PrivateKeyDer::try_from(self.upstream_key_der.clone())
            .map_err(|e| anyhow::anyhow!("upstream key: {e}"))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.upstream_chain.clone(), key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The load client's config: trusts the upstream CA and the MITM CA, offers
    /// only HTTP/1.1, and never resumes sessions (every new connection is a
    /// full handshake).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        client_config_from(&[self.upstream_ca.clone(), self.mitm_ca_cert.clone()])
    }
}

/// A client config trusting the PEM certificates in `cas` (the load client's;
/// the `bench-client` child builds it from the same files).
pub fn client_config_from(cas: &[PathBuf]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for path in cas {
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading {}", path.display()))?
        {
            roots.add(cert.with_context(|| format!("parsing {}", path.display()))?)?;
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// rustls with aws-lc-rs, as the proxy uses, limited to the classic key
/// exchange groups (X25519 first), as earlier rounds and the issue's
/// reference figures measured. Some dependency turns on rustls's
/// `prefer-post-quantum` feature, which would put X25519MLKEM768 first and
/// add its cost to every new connection of the client, the upstream and the
/// proxy (which follows the client's order): 30-70 µs of proxy CPU.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..default_provider()
    })
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}
