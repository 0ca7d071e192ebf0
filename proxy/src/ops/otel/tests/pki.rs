//! Throwaway certificates for the TLS tests, written to a temporary
//! directory: the collector's CA and its certificate (for `localhost` and
//! 127.0.0.1), and a second CA that issues the proxy's client certificate.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The common name of the client certificate.
pub(in crate::ops::otel) const CLIENT_CN: &str = "iron-proxy-otlp-client";

/// The files, deleted with the directory.
pub(in crate::ops::otel) struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA that issued the collector's certificate.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The CA the collector checks client certificates against.
    pub client_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A key that belongs to no certificate here.
    pub stray_key: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    p
}

fn ca(cn: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = params.self_signed(&key).expect("self-signing a CA").pem();
    (pem, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().expect("a leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("valid names");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).expect("signing a leaf");
    (cert.pem(), key.serialize_pem())
}

/// A fresh set of certificates.
pub(in crate::ops::otel) fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (ca_pem, ca_issuer) = ca("otlp test collector CA");
    let (server_cert, server_key) = leaf(
        &ca_issuer,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_ca_pem, client_issuer) = ca("otlp test client CA");
    let (client_cert, client_key) = leaf(
        &client_issuer,
        &[CLIENT_CN],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let stray = KeyPair::generate().expect("a stray key").serialize_pem();
    Pki {
        ca: write(d, "ca.pem", &ca_pem),
        server_cert: write(d, "server.pem", &server_cert),
        server_key: write(d, "server.key", &server_key),
        client_ca: write(d, "client-ca.pem", &client_ca_pem),
        client_cert: write(d, "client.pem", &client_cert),
        client_key: write(d, "client.key", &client_key),
        stray_key: write(d, "stray.key", &stray),
        dir,
    }
}

impl Pki {
    /// The receiver's arguments for TLS with this collector certificate,
    /// and mutual TLS against the client CA when `mtls`.
    pub(in crate::ops::otel) fn receiver_args(&self, mtls: bool) -> Vec<String> {
        let mut a = vec![
            "--tls-cert".to_string(),
            self.server_cert.display().to_string(),
            "--tls-key".to_string(),
            self.server_key.display().to_string(),
        ];
        if mtls {
            a.push("--client-ca".into());
            a.push(self.client_ca.display().to_string());
        }
        a
    }
}
