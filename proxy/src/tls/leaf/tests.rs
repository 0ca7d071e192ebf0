use std::time::Instant;

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::*;
use crate::tls::test_support::{ca_params, load, make_ca_with, minter, verify_chain};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
    X509Certificate::from_der(der).expect("parsing the leaf").1
}

#[test]
fn dns_leaf_chains_to_the_ca_and_only_for_its_name() {
    let (minter, _) = minter();
    let t = now();
    let leaf = minter.mint("example.test", t).expect("mint");
    let chain = &leaf.certified.cert;
    assert_eq!(chain.len(), 2, "chain is [leaf, CA]");
    assert_eq!(&chain[1], minter.ca().cert_der());
    verify_chain(chain, minter.ca().cert_der(), "example.test", t).expect("verifies");
    let err = verify_chain(chain, minter.ca().cert_der(), "other.test", t).expect_err("wrong name");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[test]
fn ip_leaves_get_an_ip_san() {
    let (minter, _) = minter();
    let t = now();
    for ip in ["127.0.0.1", "::1", "2001:db8::7"] {
        let leaf = minter.mint(ip, t).expect("mint");
        verify_chain(&leaf.certified.cert, minter.ca().cert_der(), ip, t)
            .unwrap_or_else(|e| panic!("{ip}: {e}"));
        let x509 = parse(&leaf.certified.cert[0]);
        let san = x509
            .subject_alternative_name()
            .expect("SAN ok")
            .expect("SAN present");
        let expected: std::net::IpAddr = ip.parse().expect("ip");
        let octets = match expected {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::IPAddress(&octets)],
            "{ip}"
        );
    }
}

#[test]
fn leaf_fields_validity_san_cn_eku() {
    let (minter, _) = minter();
    let t = now().replace_nanosecond(0).expect("valid");
    let leaf = minter.mint("api.example.test", t).expect("mint");
    assert_eq!(leaf.not_before, t - time::Duration::minutes(1));
    assert_eq!(leaf.not_after, t + time::Duration::hours(72));
    let x509 = parse(&leaf.certified.cert[0]);
    assert_eq!(x509.validity().not_before.to_datetime(), leaf.not_before);
    assert_eq!(x509.validity().not_after.to_datetime(), leaf.not_after);
    let san = x509
        .subject_alternative_name()
        .expect("SAN ok")
        .expect("SAN present");
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::DNSName("api.example.test")]
    );
    let cn = x509
        .subject()
        .iter_common_name()
        .next()
        .expect("CN")
        .as_str()
        .expect("utf8");
    assert_eq!(cn, "api.example.test");
    let eku = x509
        .extended_key_usage()
        .expect("EKU ok")
        .expect("EKU present");
    assert!(eku.value.server_auth && !eku.value.client_auth);
    assert!(!x509.is_ca());
    assert_eq!(
        x509.issuer().as_raw(),
        parse(minter.ca().cert_der()).subject().as_raw()
    );

    // Valid a minute before "now", not after expiry.
    let ca = minter.ca().cert_der();
    verify_chain(
        &leaf.certified.cert,
        ca,
        "api.example.test",
        t - time::Duration::seconds(50),
    )
    .expect("backdated");
    verify_chain(
        &leaf.certified.cert,
        ca,
        "api.example.test",
        t + time::Duration::hours(73),
    )
    .expect_err("expired after 72h");
}

#[test]
fn serials_are_random_and_cn_is_skipped_for_long_names() {
    let (minter, _) = minter();
    let a = minter.mint("a.test", now()).expect("mint");
    let b = minter.mint("a.test", now()).expect("mint");
    let (xa, xb) = (parse(&a.certified.cert[0]), parse(&b.certified.cert[0]));
    assert_ne!(xa.raw_serial(), xb.raw_serial());
    assert_eq!(xa.raw_serial().len(), 16);

    let long = format!("{}.example.test", "a".repeat(60));
    let leaf = minter.mint(&long, now()).expect("mint");
    let x509 = parse(&leaf.certified.cert[0]);
    assert_eq!(x509.subject().iter_common_name().count(), 0);
    verify_chain(&leaf.certified.cert, minter.ca().cert_der(), &long, now()).expect("verifies");
}

#[test]
fn leaves_never_outlive_the_ca_and_an_expired_ca_mints_nothing() {
    let mut params = ca_params("short-lived");
    params.not_after = now() + time::Duration::hours(2);
    let ca = load(&make_ca_with(&params, &rcgen::PKCS_ECDSA_P256_SHA256)).expect("load");
    let ca_not_after = ca.not_after();
    let minter = LeafMinter::new(Arc::new(ca), Duration::from_secs(72 * 3600)).expect("minter");
    let leaf = minter.mint("x.test", now()).expect("mint");
    assert_eq!(leaf.not_after, ca_not_after);
    let err = minter
        .mint("x.test", ca_not_after + time::Duration::seconds(1))
        .expect_err("expired");
    assert!(matches!(err, LeafError::CaExpired(_)), "{err}");
}

#[test]
fn refuses_invalid_names_and_lifetimes() {
    let (minter, _) = minter();
    for bad in [
        "",
        "a..b",
        "*.example.test",
        "bad name",
        "x\0y",
        "ünicode.test",
        ".lead",
        "[::1]",
    ] {
        let err = minter.mint(bad, now()).expect_err(bad);
        assert!(matches!(err, LeafError::InvalidName(_)), "{bad:?}: {err}");
    }
    let long_label = format!("{}.test", "a".repeat(64));
    assert!(minter.mint(&long_label, now()).is_err());
    assert!(minter.mint("under_score.test", now()).is_ok());

    let ca = minter.ca().clone();
    let err = LeafMinter::new(ca, Duration::ZERO).expect_err("zero lifetime");
    assert!(matches!(err, LeafError::InvalidLifetime), "{err}");
}

#[test]
fn rsa_and_ed25519_cas_sign_verifiable_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::tls::test_support::openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "k.pem",
        ],
    );
    let pem = std::fs::read_to_string(dir.path().join("k.pem")).expect("read");
    let rsa_key = rcgen::KeyPair::from_pem(&pem).expect("rsa key");
    let rsa = crate::tls::test_support::sign_ca(&ca_params("rsa"), &rsa_key);
    let ed = make_ca_with(&ca_params("ed"), &rcgen::PKCS_ED25519);
    for (ca, what) in [(rsa, "rsa"), (ed, "ed25519")] {
        let ca = Arc::new(load(&ca).expect(what));
        let minter = LeafMinter::new(ca.clone(), Duration::from_secs(3600)).expect(what);
        let leaf = minter.mint("svc.test", now()).expect(what);
        verify_chain(&leaf.certified.cert, ca.cert_der(), "svc.test", now())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[test]
fn minting_is_fast() {
    let (minter, _) = minter();
    let t = now();
    minter.mint("warm.test", t).expect("mint");
    let n = 200;
    let start = Instant::now();
    for i in 0..n {
        minter.mint(&format!("host{i}.test"), t).expect("mint");
    }
    let per = start.elapsed() / n;
    eprintln!("mint: {per:?} per leaf (debug build)");
    // Generous for an unoptimised build on a shared 2-core machine; release is ~50-100µs.
    assert!(
        per < Duration::from_millis(20),
        "minting took {per:?} per leaf"
    );
}

#[test]
fn normalize_lowercases_and_drops_one_trailing_dot() {
    assert_eq!(normalize_name("Example.TEST."), "example.test");
    assert_eq!(normalize_name("a.b"), "a.b");
    assert_eq!(normalize_name("."), "");
}
