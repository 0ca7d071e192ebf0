//! The TLS client configuration of the collector connection: the roots that
//! verify the collector (`OTEL_EXPORTER_OTLP_CERTIFICATE`, else the system's)
//! and the client certificate and key for mutual TLS
//! (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY`),
//! each also in its `_LOGS_` form. The files are read once, when the exporter
//! is built.
//!
//! An error names the variable, the path and what is wrong, never the file's
//! contents: the PEM parser's own messages quote the offending line, which in
//! a key file is key material, so they are replaced by ours.

use std::path::PathBuf;

use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig};
use zeroize::Zeroizing;

use super::settings::{FileVar, TlsFiles};

#[cfg(test)]
mod tests;

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{var}: reading {}", path.display())]
    Read {
        /// The variable that named the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what the variable needs.
    #[error("{var}: {}: {problem}", path.display())]
    Content {
        /// The variable that named the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, in our words (never the parser's, which quote the file).
        problem: &'static str,
    },
    /// A certificate in the CA file is not one rustls can use as a root.
    #[error("{var}: {}: certificate {n} is not a usable CA certificate", path.display())]
    BadRoot {
        /// The variable that named the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// Its position in the file, from 1.
        n: usize,
        /// What the X.509 parser said (about the structure, not the contents).
        #[source]
        source: rustls::Error,
    },
    /// One half of the client identity without the other.
    #[error(
        "{set} is set without {missing}: mutual TLS needs both the client certificate and its key"
    )]
    HalfIdentity {
        /// The variable that is set.
        set: &'static str,
        /// The variable that is missing.
        missing: &'static str,
    },
    /// The certificate and key do not make a client identity (a key that is
    /// not the certificate's, a key type rustls cannot sign with).
    #[error("{cert} and {key} do not make a usable client identity")]
    Identity {
        /// The certificate's variable.
        cert: &'static str,
        /// The key's variable.
        key: &'static str,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// An https endpoint, no CA file, and no system roots.
    #[error(
        "no trusted root certificates for the https OTLP endpoint: none in the system store \
         (SSL_CERT_FILE, SSL_CERT_DIR) and OTEL_EXPORTER_OTLP_CERTIFICATE is not set"
    )]
    NoRoots,
    /// rustls refused the protocol versions (cannot happen with the process's provider).
    #[error("tls setup")]
    Setup(#[source] rustls::Error),
}

/// The TLS settings of an https endpoint, loaded and checked.
pub(super) struct Loaded {
    /// For the HTTP client (hyper-rustls, which sets ALPN).
    pub(super) rustls: rustls::ClientConfig,
    /// The same for the gRPC channel: tonic does the TLS of an https
    /// endpoint itself (it refuses one whose connector did), from PEM.
    pub(super) tonic: ClientTlsConfig,
}

/// Reads and checks the files (or the system's roots) once, for both clients.
pub(super) fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let (roots, ca_pem) = match &files.ca {
        Some(ca) => {
            let pem = read(ca)?;
            (ca_roots(ca, &pem)?, Some(pem))
        }
        None => (system_roots()?, None),
    };
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots);
    let mut tonic = match ca_pem {
        Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&*pem)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    let rustls = match identity(files)? {
        None => builder.with_no_client_auth(),
        Some(id) => {
            tonic = tonic.identity(tonic::transport::Identity::from_pem(
                &*id.cert_pem,
                &*id.key_pem,
            ));
            // rustls checks here that the key is the certificate's.
            builder
                .with_client_auth_cert(id.chain, id.key)
                .map_err(|source| TlsError::Identity {
                    cert: id.cert_var,
                    key: id.key_var,
                    source,
                })?
        }
    };
    Ok(Loaded { rustls, tonic })
}

/// A configuration for the connector of a plaintext endpoint, which never
/// does TLS: nothing is loaded.
pub(super) fn unused_config() -> Result<rustls::ClientConfig, TlsError> {
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    )
}

/// The system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` honoured).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        return Err(TlsError::NoRoots);
    }
    Ok(roots)
}

/// Only the certificates of the CA file: it replaces the system's roots for
/// this connection, as the OTLP exporters of the other SDKs do (Go, Java,
/// Python), so a private collector is trusted through its own CA alone.
fn ca_roots(ca: &FileVar, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let certs = certificates(ca, pem)?;
    let mut roots = RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        roots.add(c).map_err(|source| TlsError::BadRoot {
            var: ca.var,
            path: ca.path.clone(),
            n: i + 1,
            source,
        })?;
    }
    Ok(roots)
}

/// The client certificate and key, parsed, and as read (tonic parses its own).
struct ClientIdentity {
    cert_var: &'static str,
    key_var: &'static str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_pem: Zeroizing<Vec<u8>>,
    key_pem: Zeroizing<Vec<u8>>,
}

/// The client certificate chain and key, when both are set.
fn identity(files: &TlsFiles) -> Result<Option<ClientIdentity>, TlsError> {
    let (cert, key) = match (&files.client_cert, &files.client_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => {
            return Err(TlsError::HalfIdentity {
                set: c.var,
                missing: "OTEL_EXPORTER_OTLP_CLIENT_KEY (or its _LOGS_ form)",
            })
        }
        (None, Some(k)) => {
            return Err(TlsError::HalfIdentity {
                set: k.var,
                missing: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE (or its _LOGS_ form)",
            })
        }
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    Ok(Some(ClientIdentity {
        cert_var: cert.var,
        key_var: key.var,
        chain: certificates(cert, &cert_pem)?,
        key: private_key(key, &key_pem)?,
        cert_pem,
        key_pem,
    }))
}

/// The file's bytes, read as the files the config names are (a regular
/// file, a FIFO refused rather than waited on, at most 4 MiB:
/// [`crate::config_source::file::read_named`]); zeroed when dropped (it may
/// be a key).
fn read(f: &FileVar) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    crate::config_source::file::read_named(&f.path)
        .map(Zeroizing::new)
        .map_err(|source| TlsError::Read {
            var: f.var,
            path: f.path.clone(),
            source,
        })
}

fn content(f: &FileVar, problem: &'static str) -> TlsError {
    TlsError::Content {
        var: f.var,
        path: f.path.clone(),
        problem,
    }
}

/// Every PEM certificate of the file, at least one.
fn certificates(f: &FileVar, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| content(f, "not valid PEM (a malformed or unterminated section)"))?;
    if certs.is_empty() {
        return Err(content(
            f,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
        ));
    }
    Ok(certs)
}

/// The file's private key (PKCS#8, PKCS#1 or SEC1 PEM).
fn private_key(f: &FileVar, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    if is_encrypted(pem) {
        return Err(content(
            f,
            "an encrypted private key is not supported (give the key unencrypted, readable only by the proxy)",
        ));
    }
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(content(
            f,
            "no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in the file",
        )),
        Err(_) => Err(content(
            f,
            "not valid PEM (a malformed or unterminated section)",
        )),
    }
}

/// A PKCS#8 `ENCRYPTED PRIVATE KEY`, or a legacy OpenSSL key with `Proc-Type: 4,ENCRYPTED`.
fn is_encrypted(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// The TLS in effect, for the start-up line: where the roots come from, and
/// the client certificate (paths only).
pub(super) fn describe(files: &TlsFiles) -> String {
    let roots = match &files.ca {
        Some(ca) => format!("roots from {} ({})", ca.path.display(), ca.var),
        None => "system roots".to_string(),
    };
    match &files.client_cert {
        Some(c) => format!("{roots}, client certificate {}", c.path.display()),
        None => roots,
    }
}
