//! `generate-ca`: create a fresh CA certificate and key for MITM.
//!
//! Produces what the docs' openssl recipe produces (CA:TRUE, keyCertSign),
//! with pathlen 0 so the CA can sign leaves but no intermediate. The key file
//! is created with mode 0600 in the same `open` call, so it is never readable
//! by others even for an instant, and neither file is ever overwritten.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use time::OffsetDateTime;

/// Default subject common name.
pub const DEFAULT_CA_NAME: &str = "iron-proxy CA";
/// File name of the certificate in the output directory.
pub const CERT_FILE: &str = "ca.crt";
/// File name of the private key in the output directory.
pub const KEY_FILE: &str = "ca.key";

/// Key algorithm of a generated CA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaAlg {
    /// ECDSA P-256 with SHA-256: small, fast, universally supported.
    #[default]
    Ecdsa,
    /// RSA 4096 with SHA-256, for clients that accept RSA only (slow to generate).
    Rsa4096,
    /// Ed25519: not accepted by most browsers and many TLS stacks.
    Ed25519,
}

impl std::str::FromStr for CaAlg {
    type Err = GenerateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ecdsa" | "ecdsa-p256" | "p256" => Ok(CaAlg::Ecdsa),
            "rsa" | "rsa4096" | "rsa-4096" => Ok(CaAlg::Rsa4096),
            "ed25519" => Ok(CaAlg::Ed25519),
            _ => Err(GenerateError::UnknownAlg(s.to_owned())),
        }
    }
}

/// Errors from generating a CA.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The algorithm name is not one of ecdsa, rsa4096, ed25519.
    #[error("unknown CA key algorithm {0:?} (expected ecdsa, rsa4096 or ed25519)")]
    UnknownAlg(String),
    /// The common name is empty.
    #[error("CA name must not be empty")]
    EmptyName,
    /// The validity is zero or too large to represent.
    #[error("invalid CA expiry of {0} hours")]
    InvalidExpiry(u64),
    /// An output file already exists; it is left untouched.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// Creating the output directory failed.
    #[error("creating {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing an output file failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Generating or encoding the RSA key failed (aws-lc gives no detail).
    #[error("generating the RSA key")]
    Rsa,
    /// Generating the key or the certificate failed.
    #[error("generating the CA")]
    Rcgen(#[source] rcgen::Error),
    /// The random generator failed.
    #[error("random number generator failed")]
    Random,
}

/// Writes `outdir/ca.crt` (0644) and `outdir/ca.key` (0600), creating `outdir`
/// if needed. Returns their paths. The certificate is valid from one minute
/// ago for `expiry_hours`, with CN `name` (use [`DEFAULT_CA_NAME`]).
pub fn generate_ca(
    outdir: &Path,
    name: &str,
    expiry_hours: u64,
    alg: CaAlg,
) -> Result<(PathBuf, PathBuf), GenerateError> {
    generate_ca_at(outdir, name, expiry_hours, alg, OffsetDateTime::now_utc())
}

/// [`generate_ca`] with an explicit "now".
pub fn generate_ca_at(
    outdir: &Path,
    name: &str,
    expiry_hours: u64,
    alg: CaAlg,
    now: OffsetDateTime,
) -> Result<(PathBuf, PathBuf), GenerateError> {
    if name.trim().is_empty() {
        return Err(GenerateError::EmptyName);
    }
    let not_after = i64::try_from(expiry_hours)
        .ok()
        .filter(|h| *h > 0)
        .and_then(|h| now.checked_add(time::Duration::hours(h)))
        // rcgen writes GeneralizedTime, which stops at year 9999.
        .filter(|t| t.year() <= 9999)
        .ok_or(GenerateError::InvalidExpiry(expiry_hours))?;

    let cert_path = outdir.join(CERT_FILE);
    let key_path = outdir.join(KEY_FILE);
    for path in [&cert_path, &key_path] {
        if path.symlink_metadata().is_ok() {
            return Err(GenerateError::Exists(path.clone()));
        }
    }

    let key = generate_key(alg)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key).map_err(GenerateError::Rcgen)?;
    let key_pem = match alg {
        CaAlg::Ed25519 => ed25519_v1_pem(&key.serialize_der())?,
        _ => zeroize::Zeroizing::new(key.serialize_pem()),
    };

    std::fs::create_dir_all(outdir).map_err(|source| GenerateError::CreateDir {
        path: outdir.to_owned(),
        source,
    })?;
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    if let Err(error) = write_new(&cert_path, cert.pem().as_bytes(), 0o644) {
        // Leave no half-made CA behind; the key was ours, created just now.
        let _ = std::fs::remove_file(&key_path);
        return Err(error);
    }
    Ok((cert_path, key_path))
}

fn generate_key(alg: CaAlg) -> Result<KeyPair, GenerateError> {
    match alg {
        CaAlg::Ecdsa => {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(GenerateError::Rcgen)
        }
        CaAlg::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(GenerateError::Rcgen),
        CaAlg::Rsa4096 => {
            use aws_lc_rs::encoding::AsDer as _;
            let rsa_key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa4096)
                .map_err(|_| GenerateError::Rsa)?;
            let der = rsa_key.as_der().map_err(|_| GenerateError::Rsa)?;
            KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(der.as_ref()),
                &rcgen::PKCS_RSA_SHA256,
            )
            .map_err(GenerateError::Rcgen)
        }
    }
}

/// Crypto libraries write Ed25519 keys as PKCS#8 v2 with the public key in a
/// form OpenSSL 3.0 refuses; re-encode as plain v1 (RFC 8410), which every
/// tool reads. A v1 key is re-encoded as is.
fn ed25519_v1_pem(der: &[u8]) -> Result<zeroize::Zeroizing<String>, GenerateError> {
    // SEQUENCE, INTEGER 1, AlgorithmIdentifier { id-Ed25519 }, OCTET STRING { OCTET STRING (32) }
    const V2_PREFIX: [u8; 16] = [
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    // The same with version 0 and no public key.
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let seed = der
        .strip_prefix(&V2_PREFIX[..])
        .or_else(|| der.strip_prefix(&V1_PREFIX[..]))
        .and_then(|rest| rest.get(..32))
        .ok_or(GenerateError::Rcgen(rcgen::Error::CouldNotParseKeyPair))?;
    let mut v1 = zeroize::Zeroizing::new(Vec::with_capacity(48));
    v1.extend_from_slice(&V1_PREFIX);
    v1.extend_from_slice(seed);
    let pem = pem_encode("PRIVATE KEY", &v1);
    Ok(zeroize::Zeroizing::new(pem))
}

/// Minimal PEM encoder (64-column base64 lines).
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    // Sized up front so no reallocation leaves key material behind.
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Creates `path` exclusively with `mode` (umask can only narrow it, so a
/// 0600 key is never more open), then sets `mode` exactly and writes `data`.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), GenerateError> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => GenerateError::Exists(path.to_owned()),
            _ => GenerateError::Write {
                path: path.to_owned(),
                source,
            },
        })?;
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(data))
        .and_then(|()| file.sync_all());
    written.map_err(|source| {
        // The file is ours (create_new); do not leave a truncated one behind.
        let _ = std::fs::remove_file(path);
        GenerateError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

fn random_serial() -> Result<SerialNumber, GenerateError> {
    let mut bytes = [0u8; 16];
    super::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| GenerateError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests;
