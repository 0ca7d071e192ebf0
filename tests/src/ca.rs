//! `TestCa`: a throwaway certificate authority written to disk as `ca.crt` / `ca.key`.
//!
//! Two kinds are used: the proxy's MITM CA (what the proxy mints leaves from, and what clients
//! trust with `--cacert`), and each fake internet's upstream CA (what signs the fake servers'
//! certificates, and what the proxy trusts through `SSL_CERT_FILE`). Keeping them separate
//! proves the proxy verifies upstreams against its own roots rather than its MITM CA.

use std::fmt;
use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A CA on disk. Its key stays in memory to sign leaves.
pub struct TestCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").field("dir", &self.dir).finish()
    }
}

/// Paths of a leaf certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// PEM certificate chain (leaf only).
    pub cert: PathBuf,
    /// PEM PKCS#8 private key.
    pub key: PathBuf,
}

fn validity(params: &mut CertificateParams) {
    // UTCTime range, understood by every client.
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2049, 12, 31);
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl TestCa {
    /// Generates a CA named `common_name` and writes `dir/ca.crt` and `dir/ca.key`.
    pub fn new(common_name: &str, dir: &Path) -> Self {
        Self::valid(common_name, dir, validity)
    }

    /// A CA like [`TestCa::new`] that expires `left` from now (valid since a day ago), for
    /// the warnings about a CA's coming expiry. Returns its `notAfter` as well (to the
    /// second, as the certificate holds it).
    pub fn expiring_in(
        common_name: &str,
        dir: &Path,
        left: std::time::Duration,
    ) -> (Self, time::OffsetDateTime) {
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("0 ns is in range");
        let not_after = now + left;
        let ca = Self::valid(common_name, dir, |params| {
            params.not_before = now - time::Duration::days(1);
            params.not_after = not_after;
        });
        (ca, not_after)
    }

    fn valid(common_name: &str, dir: &Path, validity: impl Fn(&mut CertificateParams)) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let key = KeyPair::generate().expect("generating a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params.self_signed(&key).expect("self-signing the CA");
        write(&dir.join("ca.crt"), &cert.pem());
        write(&dir.join("ca.key"), &key.serialize_pem());
        Self {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        }
    }

    /// `ca.crt`, the CA certificate (PEM).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `ca.key`, the CA private key (PEM).
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// Issues a server certificate for `names` (DNS names or IP literals) and writes it as
    /// `<dir>/<stem>.crt` / `<stem>.key`.
    pub fn issue(&self, names: &[String], dir: &Path, stem: &str) -> Leaf {
        self.issue_for(names, dir, stem, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Issues a client certificate (clientAuth) for mTLS, like [`TestCa::issue`].
    pub fn issue_client(&self, names: &[String], dir: &Path, stem: &str) -> Leaf {
        self.issue_for(names, dir, stem, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue_for(
        &self,
        names: &[String],
        dir: &Path,
        stem: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> Leaf {
        let key = KeyPair::generate().expect("generating a leaf key");
        let mut params = leaf_params(names);
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a leaf certificate");
        write_leaf(dir, stem, &cert.pem(), &key.serialize_pem())
    }
}

/// A self-signed certificate for `names`, trusted by nobody: for tests that prove the proxy
/// refuses upstreams it cannot verify.
pub fn self_signed_leaf(names: &[String], dir: &Path, stem: &str) -> Leaf {
    let key = KeyPair::generate().expect("generating a leaf key");
    let cert = leaf_params(names)
        .self_signed(&key)
        .expect("self-signing a leaf certificate");
    write_leaf(dir, stem, &cert.pem(), &key.serialize_pem())
}

fn leaf_params(names: &[String]) -> CertificateParams {
    let mut params = CertificateParams::new(names.to_vec())
        .unwrap_or_else(|e| panic!("invalid certificate names {names:?}: {e}"));
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    params
}

fn write_leaf(dir: &Path, stem: &str, cert: &str, key: &str) -> Leaf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let leaf = Leaf {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    write(&leaf.cert, cert);
    write(&leaf.key, key);
    leaf
}
