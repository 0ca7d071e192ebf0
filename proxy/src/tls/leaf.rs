//! Minting leaf certificates for MITM, signed by the loaded CA.
//!
//! Every leaf shares one ECDSA P-256 key pair generated when the minter is
//! built: a mint then costs one CA signature instead of a key generation,
//! about 20 µs with an ECDSA P-256 CA, but milliseconds with an RSA-4096 one
//! (3.6 ms on the 2-core test machine), which is why the cache mints on the
//! blocking pool, in fair turns (`cache::LeafCache::prepare`). The key never
//! leaves the process, so sharing it across names gives an attacker nothing a
//! per-name key would not.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::ca::CertificateAuthority;

/// How far a leaf's notBefore is put in the past, for clients whose clock lags.
const BACKDATE: time::Duration = time::Duration::minutes(1);
/// RFC 5280's upper bound on a commonName; longer names go in the SAN only.
const MAX_CN_LEN: usize = 64;

/// Errors from minting a leaf certificate.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    /// The name is neither an IP address nor a valid DNS name.
    #[error("invalid server name {0:?}")]
    InvalidName(String),
    /// The CA has expired, so no leaf it signs can be valid.
    #[error("CA certificate expired at {0}")]
    CaExpired(OffsetDateTime),
    /// The configured leaf lifetime is zero or out of range.
    #[error("invalid leaf certificate lifetime")]
    InvalidLifetime,
    /// Generating the shared leaf key failed.
    #[error("generating the leaf key")]
    KeyGeneration(#[source] rcgen::Error),
    /// The shared leaf key was not accepted by rustls.
    #[error("loading the leaf key into rustls")]
    KeyLoad(#[source] rustls::Error),
    /// The random generator failed.
    #[error("random number generator failed")]
    Random,
    /// rcgen refused to sign the certificate.
    #[error("signing the leaf certificate")]
    Sign(#[source] rcgen::Error),
}

/// A freshly minted leaf, ready for rustls, with its validity window.
#[derive(Clone, Debug)]
pub struct MintedLeaf {
    /// The chain `[leaf, CA, ...]` and the shared leaf signing key.
    pub certified: Arc<CertifiedKey>,
    /// Start of validity (backdated by one minute).
    pub not_before: OffsetDateTime,
    /// End of validity (never after the CA's own).
    pub not_after: OffsetDateTime,
}

/// Signs leaf certificates for server names with the CA and the shared leaf key.
pub struct LeafMinter {
    ca: Arc<CertificateAuthority>,
    leaf_key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    lifetime: time::Duration,
}

impl std::fmt::Debug for LeafMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafMinter")
            .field("ca", &self.ca)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl LeafMinter {
    /// Generates the process-wide leaf key; leaves will be valid for `lifetime`
    /// (`tls.leaf_cert_expiry_hours`).
    pub fn new(ca: Arc<CertificateAuthority>, lifetime: Duration) -> Result<Self, LeafError> {
        let lifetime =
            time::Duration::try_from(lifetime).map_err(|_| LeafError::InvalidLifetime)?;
        if lifetime <= time::Duration::ZERO {
            return Err(LeafError::InvalidLifetime);
        }
        let leaf_key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(LeafError::KeyGeneration)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing_key = super::provider()
            .key_provider
            .load_private_key(der)
            .map_err(LeafError::KeyLoad)?;
        Ok(LeafMinter {
            ca,
            leaf_key,
            signing_key,
            lifetime,
        })
    }

    /// The CA that signs the leaves.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// The configured leaf lifetime.
    pub fn lifetime(&self) -> time::Duration {
        self.lifetime
    }

    /// Mints a leaf for `name` (a DNS name, or an IP address which gets an IP SAN),
    /// valid from `now - 1 min` for the configured lifetime, capped at the CA's expiry.
    ///
    /// `name` is used as given; callers normalise case (see [`normalize_name`]).
    pub fn mint(&self, name: &str, now: OffsetDateTime) -> Result<MintedLeaf, LeafError> {
        let ca_not_after = self.ca.not_after();
        if now >= ca_not_after {
            return Err(LeafError::CaExpired(ca_not_after));
        }
        let san = san_for(name)?;
        let not_before = now - BACKDATE;
        let not_after = (now + self.lifetime).min(ca_not_after);

        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        if name.len() <= MAX_CN_LEN {
            dn.push(DnType::CommonName, name);
        }
        params.distinguished_name = dn;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;

        let cert = params
            .signed_by(&self.leaf_key, self.ca.issuer())
            .map_err(LeafError::Sign)?;
        let mut chain = Vec::with_capacity(1 + self.ca.chain().len());
        chain.push(cert.der().clone());
        chain.extend(self.ca.chain().iter().cloned());
        Ok(MintedLeaf {
            certified: Arc::new(CertifiedKey::new(chain, self.signing_key.clone())),
            not_before,
            not_after,
        })
    }
}

/// Lowercases `name` and drops one trailing dot, so that `Example.COM.` and
/// `example.com` share a cache entry and a certificate.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn san_for(name: &str) -> Result<SanType, LeafError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if !is_dns_name(name) {
        return Err(LeafError::InvalidName(name.to_owned()));
    }
    let ia5 = name
        .try_into()
        .map_err(|_| LeafError::InvalidName(name.to_owned()))?;
    Ok(SanType::DnsName(ia5))
}

/// A DNS name as clients send it in SNI: 1..=253 bytes, labels of 1..=63
/// letters, digits, `-` or `_`. Wildcards are refused: we mint for exact names.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// 16 random bytes with the top bit clear, so the DER INTEGER stays positive.
/// Leaves share a key, so the serial must not be derived from it (rcgen's
/// default), or browsers see one issuer+serial on many certificates.
fn random_serial() -> Result<SerialNumber, LeafError> {
    let mut bytes = [0u8; 16];
    super::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| LeafError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte: keeps the encoding 16 bytes long
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests;
