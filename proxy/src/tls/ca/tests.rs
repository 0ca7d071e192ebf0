use std::path::Path;

use rcgen::{IsCa, KeyUsagePurpose};
use time::OffsetDateTime;

use super::*;
use crate::tls::test_support::{ca_params, load, make_ca, make_ca_with, openssl, TestCa};

fn openssl_ca(dir: &Path, key_file: &str, subj: &str) -> TestCa {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            key_file,
            "-sha256",
            "-days",
            "90",
            "-subj",
            subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
            "ca.crt",
        ],
    );
    TestCa {
        cert_pem: std::fs::read_to_string(dir.join("ca.crt")).expect("reading ca.crt"),
        key_pem: std::fs::read_to_string(dir.join(key_file)).expect("reading the key"),
    }
}

fn assert_loads(ca: &TestCa, what: &str) {
    let loaded = load(ca).unwrap_or_else(|e| panic!("{what}: load failed: {e}"));
    assert!(
        loaded.not_after() > OffsetDateTime::now_utc(),
        "{what}: not_after in the past"
    );
    assert_eq!(loaded.chain().len(), 1, "{what}");
}

#[test]
fn loads_pkcs8_keys_of_each_type() {
    for (alg, what) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256"),
        (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384"),
        (&rcgen::PKCS_ED25519, "Ed25519"),
    ] {
        let ca = make_ca_with(&ca_params("test"), alg);
        assert!(
            ca.key_pem.contains("BEGIN PRIVATE KEY"),
            "{what}: expected PKCS#8"
        );
        assert_loads(&ca, what);
    }
}

#[test]
fn loads_openssl_rsa_pkcs8_and_pkcs1() {
    let dir = tempfile::tempdir().expect("tempdir");
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "k8.pem",
        ],
    );
    let ca = openssl_ca(dir.path(), "k8.pem", "/CN=iron-proxy CA");
    assert!(ca.key_pem.contains("BEGIN PRIVATE KEY"), "expected PKCS#8");
    assert_loads(&ca, "RSA PKCS#8");

    openssl(
        dir.path(),
        &["rsa", "-in", "k8.pem", "-traditional", "-out", "k1.pem"],
    );
    let pkcs1 = TestCa {
        cert_pem: ca.cert_pem.clone(),
        key_pem: std::fs::read_to_string(dir.path().join("k1.pem")).expect("reading k1.pem"),
    };
    assert!(
        pkcs1.key_pem.contains("BEGIN RSA PRIVATE KEY"),
        "expected PKCS#1"
    );
    assert_loads(&pkcs1, "RSA PKCS#1");
}

#[test]
fn loads_openssl_sec1_ec_keys() {
    for curve in ["prime256v1", "secp384r1"] {
        let dir = tempfile::tempdir().expect("tempdir");
        openssl(
            dir.path(),
            &[
                "ecparam", "-name", curve, "-genkey", "-noout", "-out", "ec.pem",
            ],
        );
        let ca = openssl_ca(dir.path(), "ec.pem", "/C=US/O=Example Org/CN=Example Root");
        assert!(
            ca.key_pem.contains("BEGIN EC PRIVATE KEY"),
            "{curve}: expected SEC1"
        );
        assert_loads(&ca, curve);
    }
}

#[test]
fn loads_key_and_cert_from_files_and_keeps_extra_chain_certs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_ca();
    let other = make_ca();
    let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    std::fs::write(&cert, format!("{}{}", ca.cert_pem, other.cert_pem)).expect("write");
    std::fs::write(&key, &ca.key_pem).expect("write");
    let loaded = CertificateAuthority::load(&cert, &key).expect("loading from files");
    assert_eq!(loaded.chain().len(), 2);
    assert!(
        loaded.subject().contains("iron-proxy test CA"),
        "{}",
        loaded.subject()
    );
    assert!(
        !format!("{loaded:?}").contains("PRIVATE"),
        "Debug must not show the key"
    );
}

#[test]
fn refuses_a_certificate_that_is_not_a_ca() {
    let mut params = ca_params("leaf");
    params.is_ca = IsCa::NoCa;
    let err = load(&make_ca_with(&params, &rcgen::PKCS_ECDSA_P256_SHA256)).expect_err("non-CA");
    assert!(matches!(err, CaError::NotCa { .. }), "{err}");
    assert!(
        err.to_string().contains("test-ca.crt") && err.to_string().contains("CA:TRUE"),
        "{err}"
    );

    params.is_ca = IsCa::ExplicitNoCa;
    let err = load(&make_ca_with(&params, &rcgen::PKCS_ECDSA_P256_SHA256)).expect_err("CA:FALSE");
    assert!(matches!(err, CaError::NotCa { .. }), "{err}");

    let mut params = ca_params("no keyCertSign");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let err =
        load(&make_ca_with(&params, &rcgen::PKCS_ECDSA_P256_SHA256)).expect_err("no keyCertSign");
    assert!(err.to_string().contains("keyCertSign"), "{err}");

    // keyUsage absent altogether is fine (the extension is optional).
    let mut params = ca_params("no keyUsage");
    params.key_usages = vec![];
    load(&make_ca_with(&params, &rcgen::PKCS_ECDSA_P256_SHA256)).expect("CA without keyUsage");
}

#[test]
fn refuses_a_key_that_does_not_match() {
    let ca = make_ca();
    let other = make_ca();
    let err = load(&TestCa {
        cert_pem: ca.cert_pem,
        key_pem: other.key_pem,
    })
    .expect_err("mismatch");
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "test-ca.key does not match the public key of test-ca.crt"
    );

    // Same algorithm family, different curve.
    let p384 = make_ca_with(&ca_params("x"), &rcgen::PKCS_ECDSA_P384_SHA384);
    let ca = make_ca();
    let err = load(&TestCa {
        cert_pem: ca.cert_pem,
        key_pem: p384.key_pem,
    })
    .expect_err("curve");
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
}

#[test]
fn refuses_an_expired_ca() {
    let mut params = ca_params("old");
    params.not_before = OffsetDateTime::now_utc() - time::Duration::days(10);
    params.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
    let err = load(&make_ca_with(&params, &rcgen::PKCS_ECDSA_P256_SHA256)).expect_err("expired");
    assert!(matches!(err, CaError::Expired { .. }), "{err}");
}

#[test]
fn names_the_file_for_missing_empty_and_garbage_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_ca();
    let cert = dir.path().join("ca.crt");
    let key = dir.path().join("ca.key");
    std::fs::write(&cert, &ca.cert_pem).expect("write");

    let err = CertificateAuthority::load(&cert, &key).expect_err("missing key");
    assert!(matches!(err, CaError::Read { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");

    std::fs::write(&key, "\n  \n").expect("write");
    let err = CertificateAuthority::load(&cert, &key).expect_err("empty key");
    assert!(
        matches!(err, CaError::Empty { .. }) && err.to_string().contains("ca.key"),
        "{err}"
    );

    std::fs::write(&key, "not a pem file").expect("write");
    let err = CertificateAuthority::load(&cert, &key).expect_err("garbage key");
    assert!(
        matches!(err, CaError::NoKey { .. }) && err.to_string().contains("ca.key"),
        "{err}"
    );

    std::fs::write(&key, &ca.key_pem).expect("write");
    std::fs::write(&cert, &ca.key_pem).expect("write");
    let err = CertificateAuthority::load(&cert, &key).expect_err("key in cert file");
    assert!(
        matches!(err, CaError::NoCertificate { .. }) && err.to_string().contains("ca.crt"),
        "{err}"
    );

    std::fs::write(&cert, "").expect("write");
    let err = CertificateAuthority::load(&cert, &key).expect_err("empty cert");
    assert!(
        matches!(err, CaError::Empty { .. }) && err.to_string().contains("ca.crt"),
        "{err}"
    );

    let bad_der = "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n";
    std::fs::write(&cert, bad_der).expect("write");
    let err = CertificateAuthority::load(&cert, &key).expect_err("bad DER");
    assert!(matches!(err, CaError::BadCertificate { .. }), "{err}");
}

#[test]
fn refuses_an_encrypted_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
    );
    let ca = openssl_ca(dir.path(), "ec.pem", "/CN=enc");
    openssl(
        dir.path(),
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "ec.pem",
            "-passout",
            "pass:secret",
            "-out",
            "enc.pem",
        ],
    );
    let encrypted = TestCa {
        cert_pem: ca.cert_pem,
        key_pem: std::fs::read_to_string(dir.path().join("enc.pem")).expect("read"),
    };
    let err = load(&encrypted).expect_err("encrypted key");
    assert!(matches!(err, CaError::NoKey { .. }), "{err}");
    assert!(
        err.to_string().contains("encrypted keys are not supported"),
        "{err}"
    );
}

#[test]
fn pkcs8_wrap_encodes_long_lengths() {
    let key = vec![0xAB; 300];
    let der = pkcs8_wrap(RSA_ALG_ID, &key);
    // SEQUENCE, long form length 0x82 0x01 0x47 = 3 + 15 + 4 + 300 = 322 + ...
    assert_eq!(der[0], 0x30);
    assert_eq!(der[1], 0x82);
    let body_len = usize::from(der[2]) << 8 | usize::from(der[3]);
    assert_eq!(body_len, der.len() - 4);
    assert_eq!(&der[der.len() - 300..], key.as_slice());
}
