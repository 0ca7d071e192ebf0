use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::*;
use crate::tls::ca::CertificateAuthority;
use crate::tls::leaf::LeafMinter;
use crate::tls::test_support::{openssl, verify_chain};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn check_generated(alg: CaAlg, key_text: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("nested").join("certs");
    let (cert, key) = generate_ca(&out, DEFAULT_CA_NAME, 24, alg).expect("generate");
    assert_eq!(cert, out.join("ca.crt"));
    assert_eq!(key, out.join("ca.key"));
    assert_eq!(mode(&cert), 0o644, "{alg:?}: ca.crt mode");
    assert_eq!(mode(&key), 0o600, "{alg:?}: ca.key mode");

    let text = openssl(
        dir.path(),
        &[
            "x509",
            "-noout",
            "-text",
            "-in",
            cert.to_str().expect("utf8"),
        ],
    );
    for needle in [
        "CA:TRUE, pathlen:0",
        "Certificate Sign",
        "CRL Sign",
        "Digital Signature",
        "CN = iron-proxy CA",
        key_text,
    ] {
        assert!(
            text.contains(needle),
            "{alg:?}: {needle:?} missing in:\n{text}"
        );
    }
    assert!(
        text.contains("X509v3 Basic Constraints: critical"),
        "{alg:?}:\n{text}"
    );
    assert!(
        text.contains("X509v3 Key Usage: critical"),
        "{alg:?}:\n{text}"
    );
    let check = openssl(
        dir.path(),
        &[
            "pkey",
            "-check",
            "-noout",
            "-in",
            key.to_str().expect("utf8"),
        ],
    );
    assert!(
        check.contains("valid"),
        "{alg:?}: pkey -check said: {check}"
    );

    // The pair loads as our MITM CA and its leaves verify.
    let ca = Arc::new(CertificateAuthority::load(&cert, &key).expect("load generated CA"));
    let life = ca.not_after() - ca.not_before();
    assert_eq!(
        life,
        time::Duration::hours(24) + time::Duration::minutes(1),
        "{alg:?}"
    );
    let minter = LeafMinter::new(ca.clone(), std::time::Duration::from_secs(3600)).expect("minter");
    let now = OffsetDateTime::now_utc();
    let leaf = minter.mint("gen.test", now).expect("mint");
    verify_chain(&leaf.certified.cert, ca.cert_der(), "gen.test", now).expect("leaf verifies");

    // Never overwrite.
    let err = generate_ca(&out, DEFAULT_CA_NAME, 24, alg).expect_err("overwrite");
    assert!(
        matches!(err, GenerateError::Exists(ref p) if p.ends_with("ca.crt")),
        "{err}"
    );
}

#[test]
fn generates_an_ecdsa_ca() {
    check_generated(CaAlg::Ecdsa, "Public Key Algorithm: id-ecPublicKey");
}

#[test]
fn generates_an_ed25519_ca() {
    check_generated(CaAlg::Ed25519, "Public Key Algorithm: ED25519");
}

#[test]
fn generates_an_rsa4096_ca() {
    check_generated(CaAlg::Rsa4096, "Public-Key: (4096 bit)");
}

#[test]
fn refuses_to_overwrite_either_file_and_leaves_the_other_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.key"), "precious").expect("write");
    let err = generate_ca(dir.path(), "x", 1, CaAlg::Ecdsa).expect_err("key exists");
    assert!(
        matches!(err, GenerateError::Exists(ref p) if p.ends_with("ca.key")),
        "{err}"
    );
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert!(
        !dir.path().join("ca.crt").exists(),
        "no certificate written"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.key")).expect("read"),
        "precious"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink("/nonexistent", dir.path().join("ca.crt")).expect("symlink");
    let err = generate_ca(dir.path(), "x", 1, CaAlg::Ecdsa).expect_err("dangling symlink");
    assert!(matches!(err, GenerateError::Exists(_)), "{err}");
    assert!(!dir.path().join("ca.key").exists());
}

#[test]
fn validates_name_expiry_and_alg() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        generate_ca(dir.path(), " ", 1, CaAlg::Ecdsa),
        Err(GenerateError::EmptyName)
    ));
    assert!(matches!(
        generate_ca(dir.path(), "x", 0, CaAlg::Ecdsa),
        Err(GenerateError::InvalidExpiry(0))
    ));
    assert!(matches!(
        generate_ca(dir.path(), "x", u64::MAX, CaAlg::Ecdsa),
        Err(GenerateError::InvalidExpiry(_))
    ));
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read_dir").count(),
        0,
        "nothing written"
    );
    assert_eq!("ECDSA".parse::<CaAlg>().expect("alg"), CaAlg::Ecdsa);
    assert_eq!("rsa4096".parse::<CaAlg>().expect("alg"), CaAlg::Rsa4096);
    assert_eq!("ed25519".parse::<CaAlg>().expect("alg"), CaAlg::Ed25519);
    assert!("dsa".parse::<CaAlg>().is_err());
}

#[test]
fn custom_name_and_unwritable_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = generate_ca(dir.path(), "Acme Egress CA", 48, CaAlg::Ecdsa).expect("generate");
    let text = openssl(
        dir.path(),
        &[
            "x509",
            "-noout",
            "-subject",
            "-in",
            cert.to_str().expect("utf8"),
        ],
    );
    assert!(text.contains("CN = Acme Egress CA"), "{text}");

    // A file where the directory should be.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").expect("write");
    let err = generate_ca(&blocker.join("sub"), "x", 1, CaAlg::Ecdsa).expect_err("not a dir");
    assert!(matches!(err, GenerateError::CreateDir { .. }), "{err}");
}
