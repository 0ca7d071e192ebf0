//! The MITM certificate authority: loading and checking `tls.ca_cert` / `tls.ca_key`.
//!
//! Loading is strict because a CA that "almost works" fails later, per client,
//! with opaque handshake errors. [`CertificateAuthority::load`] refuses a
//! certificate that is not a CA, a key that does not belong to it, an expired
//! CA, and a subject name that the leaf minter could not reproduce byte for
//! byte (leaves would then not chain). Every error names the file at fault,
//! and says which of the two it is ([`CaError::file`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, Issuer, KeyPair, SerialNumber};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Which of the two CA files (`tls.ca_cert`, `tls.ca_key`) a [`CaError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaFile {
    /// The certificate (`tls.ca_cert`).
    Cert,
    /// The private key (`tls.ca_key`).
    Key,
}

/// Errors from loading the CA certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Which one it is.
        file: CaFile,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file was empty.
    #[error("{path}: file is empty")]
    Empty {
        /// The file.
        path: PathBuf,
        /// Which one it is.
        file: CaFile,
    },
    /// A file is not valid PEM.
    #[error("{path}: invalid PEM")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Which one it is.
        file: CaFile,
        /// The parse error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{path}: no PEM certificate found")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The certificate could not be parsed as X.509.
    #[error("{path}: invalid X.509 certificate: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The certificate is not allowed to issue certificates.
    #[error("{path}: not a CA certificate: {reason}")]
    NotCa {
        /// The file.
        path: PathBuf,
        /// Which extension is missing or wrong.
        reason: &'static str,
    },
    /// The certificate's validity period has ended.
    #[error("{path}: CA certificate expired at {not_after}")]
    Expired {
        /// The file.
        path: PathBuf,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The key file holds no unencrypted private key.
    #[error("{path}: no unencrypted PEM private key found (PKCS#8, PKCS#1 RSA or SEC1 EC; encrypted keys are not supported)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of an unsupported type or is malformed.
    #[error("{path}: unsupported or invalid private key (supported: RSA 2048-8192, ECDSA P-256/P-384, Ed25519)")]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key does not belong to the certificate.
    #[error("{key} does not match the public key of {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Leaves signed by this CA would not chain to it.
    #[error("{path}: cannot issue certificates with this CA: {reason}")]
    Unusable {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl CaError {
    /// The file at fault, so that the error can point at the field that
    /// names it: the file that could not be read or parsed, the key when it is
    /// missing, unsupported or not the certificate's own, and the certificate
    /// for everything else.
    pub fn file(&self) -> CaFile {
        match self {
            CaError::Read { file, .. }
            | CaError::Empty { file, .. }
            | CaError::Pem { file, .. } => *file,
            CaError::NoKey { .. }
            | CaError::UnsupportedKey { .. }
            | CaError::KeyMismatch { .. } => CaFile::Key,
            CaError::NoCertificate { .. }
            | CaError::BadCertificate { .. }
            | CaError::NotCa { .. }
            | CaError::Expired { .. }
            | CaError::Unusable { .. } => CaFile::Cert,
        }
    }
}

/// A loaded, checked CA: the certificate chain to present and the signer for leaves.
pub struct CertificateAuthority {
    chain: Vec<CertificateDer<'static>>,
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    subject: String,
}

impl fmt::Debug for CertificateAuthority {
    // Hand-written so the key can never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads a PEM CA certificate and its PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    ///
    /// The first certificate in `cert_path` is the issuing CA; any that follow
    /// (an intermediate's own chain) are sent to clients after each leaf.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let cert_pem = read_nonempty(cert_path, CaFile::Cert)?;
        let key_pem = read_nonempty(key_path, CaFile::Key)?;
        Self::from_pem(
            &cert_pem,
            cert_path,
            &key_pem,
            key_path,
            OffsetDateTime::now_utc(),
        )
    }

    /// Like [`load`](Self::load), from bytes already read; the paths are for messages only.
    pub fn from_pem(
        cert_pem: &[u8],
        cert_path: &Path,
        key_pem: &[u8],
        key_path: &Path,
        now: OffsetDateTime,
    ) -> Result<Self, CaError> {
        let chain = parse_certs(cert_pem, cert_path)?;
        let key = parse_key(key_pem, key_path)?;
        let ca_der = &chain[0];
        let bad = |reason: String| CaError::BadCertificate {
            path: cert_path.to_owned(),
            reason,
        };
        let (rest, x509) = X509Certificate::from_der(ca_der).map_err(|e| bad(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the certificate".into()));
        }
        check_is_ca(&x509, cert_path)?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        if now > not_after {
            return Err(CaError::Expired {
                path: cert_path.to_owned(),
                not_after,
            });
        }
        if now < not_before {
            tracing::warn!(%not_before, "CA certificate is not valid yet; check the clock");
        }
        let unusable = |reason: String| CaError::Unusable {
            path: cert_path.to_owned(),
            reason,
        };
        // rcgen's name conversion panics on an empty RDN and merges repeated
        // attribute types; refuse those names here instead.
        for rdn in x509.subject().iter() {
            if rdn.iter().count() != 1 {
                return Err(unusable("subject has an empty or multi-valued RDN".into()));
            }
        }
        let issuer = Issuer::from_ca_cert_der(ca_der, key).map_err(|e| unusable(e.to_string()))?;
        let probe_time = now.max(not_before);
        self_test(&issuer, ca_der, &x509, probe_time).map_err(unusable)?;
        let subject = x509.subject().to_string();
        drop(x509);
        Ok(CertificateAuthority {
            subject,
            chain,
            issuer,
            not_before,
            not_after,
        })
    }

    /// The CA certificate, DER (what workloads must trust).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The CA certificate and any certificates that followed it in the file.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// End of the CA's validity, for the CA-expiry metric and to cap leaf lifetimes.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Start of the CA's validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The subject name, RFC 4514 style, for logs.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

/// Signs a throwaway leaf and verifies it with webpki, the CA as the only
/// trust anchor, at `at`: catches a subject name that rcgen cannot reproduce
/// byte for byte (leaves would not chain) and any signing mismatch, at load
/// time instead of in every client.
fn self_test(
    issuer: &Issuer<'static, KeyPair>,
    ca_der: &CertificateDer<'static>,
    ca: &X509Certificate<'_>,
    at: OffsetDateTime,
) -> Result<(), String> {
    const PROBE_NAME: &str = "self-test.iron-proxy.invalid";
    let mut params = CertificateParams::new(vec![PROBE_NAME.to_owned()])
        .map_err(|e| format!("test certificate parameters: {e}"))?;
    params.serial_number = Some(SerialNumber::from_slice(&[1]));
    params.not_before = ca.validity().not_before.to_datetime();
    params.not_after = ca.validity().not_after.to_datetime();
    let probe = params
        .signed_by(issuer.key(), issuer)
        .map_err(|e| format!("signing a test certificate: {e}"))?;
    let (_, parsed) = X509Certificate::from_der(probe.der())
        .map_err(|e| format!("parsing the test certificate: {e}"))?;
    if parsed.issuer().as_raw() != ca.subject().as_raw() {
        return Err("its subject name cannot be reproduced exactly in issued certificates (unusual string types or attribute order)".into());
    }
    let mut roots = RootCertStore::empty();
    roots
        .add(ca_der.clone())
        .map_err(|e| format!("not usable as a trust anchor: {e}"))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), super::provider())
        .build()
        .map_err(|e| format!("building a verifier: {e}"))?;
    let secs = u64::try_from(at.unix_timestamp()).map_err(|_| "validity before 1970")?;
    let name = ServerName::try_from(PROBE_NAME).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(
            probe.der(),
            &[],
            &name,
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        )
        .map(|_| ())
        .map_err(|e| format!("a test leaf does not verify against it: {e}"))
}

fn read_nonempty(path: &Path, file: CaFile) -> Result<Vec<u8>, CaError> {
    let bytes = crate::config_source::file::read_named(path).map_err(|source| CaError::Read {
        path: path.to_owned(),
        file,
        source,
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CaError::Empty {
            path: path.to_owned(),
            file,
        });
    }
    Ok(bytes)
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let chain = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CaError::Pem {
            path: path.to_owned(),
            file: CaFile::Cert,
            source,
        })?;
    if chain.is_empty() {
        return Err(CaError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn parse_key(pem: &[u8], path: &Path) -> Result<KeyPair, CaError> {
    let key = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|source| CaError::Pem {
            path: path.to_owned(),
            file: CaFile::Key,
            source,
        })?
        .ok_or_else(|| CaError::NoKey {
            path: path.to_owned(),
        })?;
    let unsupported = || CaError::UnsupportedKey {
        path: path.to_owned(),
    };
    // rcgen on ring only reads PKCS#8, so PKCS#1 and SEC1 keys are wrapped
    // into a PKCS#8 envelope first (RFC 5208: version, algorithm, key octets).
    let candidates: Vec<zeroize::Zeroizing<Vec<u8>>> = match &key {
        PrivateKeyDer::Pkcs8(k) => vec![zeroize::Zeroizing::new(k.secret_pkcs8_der().to_vec())],
        PrivateKeyDer::Pkcs1(k) => vec![pkcs8_wrap(RSA_ALG_ID, k.secret_pkcs1_der())],
        PrivateKeyDer::Sec1(k) => vec![
            pkcs8_wrap(EC_P256_ALG_ID, k.secret_sec1_der()),
            pkcs8_wrap(EC_P384_ALG_ID, k.secret_sec1_der()),
        ],
        _ => return Err(unsupported()),
    };
    candidates
        .iter()
        .find_map(|der| KeyPair::try_from(&PrivatePkcs8KeyDer::from(der.as_slice())).ok())
        .ok_or_else(unsupported)
}

fn check_is_ca(x509: &X509Certificate<'_>, path: &Path) -> Result<(), CaError> {
    let not_ca = |reason| CaError::NotCa {
        path: path.to_owned(),
        reason,
    };
    match x509.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => return Err(not_ca("basicConstraints CA:TRUE is missing")),
        Err(_) => return Err(not_ca("basicConstraints is invalid or repeated")),
    }
    match x509.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            Err(not_ca("keyUsage is present but lacks keyCertSign"))
        }
        Ok(_) => Ok(()),
        Err(_) => Err(not_ca("keyUsage is invalid or repeated")),
    }
}

/// AlgorithmIdentifier { rsaEncryption, NULL }.
const RSA_ALG_ID: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// AlgorithmIdentifier { id-ecPublicKey, secp256r1 }.
const EC_P256_ALG_ID: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];
/// AlgorithmIdentifier { id-ecPublicKey, secp384r1 }.
const EC_P384_ALG_ID: &[u8] = &[
    0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
    0x00, 0x22,
];

/// Builds `PrivateKeyInfo ::= SEQUENCE { INTEGER 0, alg_id, OCTET STRING key }`.
fn pkcs8_wrap(alg_id: &[u8], key: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
    let mut octets = zeroize::Zeroizing::new(Vec::with_capacity(key.len() + 4));
    octets.push(0x04);
    der_len(&mut octets, key.len());
    octets.extend_from_slice(key);
    let body_len = 3 + alg_id.len() + octets.len();
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(body_len + 4));
    out.push(0x30);
    der_len(&mut out, body_len);
    out.extend_from_slice(&[0x02, 0x01, 0x00]);
    out.extend_from_slice(alg_id);
    out.extend_from_slice(&octets);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

#[cfg(test)]
mod tests;
