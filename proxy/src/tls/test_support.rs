//! Test helpers: throwaway CAs, the openssl CLI, and chain verification.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;

use super::ca::CertificateAuthority;
use super::leaf::LeafMinter;

/// PEM certificate and key of a test CA.
pub(crate) struct TestCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// CA parameters like the docs' openssl recipe, valid from an hour ago for 30 days.
pub(crate) fn ca_params(cn: &str) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
    params
}

/// A self-signed CA with `params` and a fresh key for `alg` (not RSA: ring cannot generate it).
pub(crate) fn make_ca_with(params: &CertificateParams, alg: &'static SignatureAlgorithm) -> TestCa {
    let key = KeyPair::generate_for(alg).expect("generating a test key");
    sign_ca(params, &key)
}

/// Self-signs `params` with `key`.
pub(crate) fn sign_ca(params: &CertificateParams, key: &KeyPair) -> TestCa {
    let cert = params.self_signed(key).expect("self-signing the test CA");
    TestCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A P-256 test CA.
pub(crate) fn make_ca() -> TestCa {
    make_ca_with(
        &ca_params("iron-proxy test CA"),
        &rcgen::PKCS_ECDSA_P256_SHA256,
    )
}

/// Loads a test CA from PEM strings.
pub(crate) fn load(ca: &TestCa) -> Result<CertificateAuthority, super::CaError> {
    CertificateAuthority::from_pem(
        ca.cert_pem.as_bytes(),
        Path::new("test-ca.crt"),
        ca.key_pem.as_bytes(),
        Path::new("test-ca.key"),
        OffsetDateTime::now_utc(),
    )
}

/// A minter over a fresh P-256 test CA, leaves valid for 72 hours, plus the CA's PEM.
pub(crate) fn minter() -> (LeafMinter, TestCa) {
    let ca = make_ca();
    let loaded = load(&ca).expect("loading the test CA");
    let minter = LeafMinter::new(Arc::new(loaded), std::time::Duration::from_secs(72 * 3600))
        .expect("building the minter");
    (minter, ca)
}

/// Runs the openssl CLI in `dir`, panicking with its stderr on failure; returns stdout.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Verifies `chain` (leaf first) for `name` at `now` with `root` as the only trust anchor.
pub(crate) fn verify_chain(
    chain: &[CertificateDer<'static>],
    root: &CertificateDer<'static>,
    name: &str,
    now: OffsetDateTime,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).expect("adding the test root");
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), super::provider())
        .build()
        .expect("building the verifier");
    let server_name = ServerName::try_from(name.to_owned()).expect("a valid server name");
    let secs = u64::try_from(now.unix_timestamp()).expect("a time after 1970");
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &server_name,
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        )
        .map(|_| ())
}
