//! Every way a TLS file can be wrong gives an error that names the variable,
//! the file and the problem, and never a byte of the file.

use std::path::{Path, PathBuf};

use super::*;
use crate::ops::otel::tests::pki::pki;

/// Text planted in the bad files: no error may repeat it.
const MARKER: &str = "SECRETKEYMATERIAL";

fn file(var: &'static str, path: &Path) -> Option<FileVar> {
    Some(FileVar {
        var,
        path: path.to_path_buf(),
    })
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("writing a test file");
    p
}

const CA: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
const CERT: &str = "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE";
const KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";

/// The error of `files`, as the start-up line shows it, checked for `var`,
/// `wanted` and the absence of the marker.
fn refused(files: &TlsFiles, var: &str, wanted: &str) {
    let err = match load(files) {
        Ok(_) => panic!("{files:?} accepted"),
        Err(e) => crate::error_chain(&e),
    };
    assert!(err.contains(var), "names {var}: {err}");
    assert!(err.contains(wanted), "says {wanted:?}: {err}");
    assert!(!err.contains(MARKER), "repeats the file: {err}");
}

#[test]
fn good_files_make_a_config() {
    let p = pki();
    let files = TlsFiles {
        ca: file(CA, &p.ca),
        client_cert: file(CERT, &p.client_cert),
        client_key: file(KEY, &p.client_key),
    };
    let loaded = load(&files).expect("a config");
    assert!(loaded.rustls.client_auth_cert_resolver.has_certs());
    assert_eq!(
        describe(&files),
        format!(
            "roots from {} ({CA}), client certificate {}",
            p.ca.display(),
            p.client_cert.display()
        )
    );
}

#[test]
fn bad_files_are_named_without_their_contents() {
    let p = pki();
    let d = p.dir.path();
    let missing = d.join("missing.pem");
    let not_pem = write(d, "not-pem.txt", &format!("{MARKER}\n{MARKER}\n"));
    let bad_begin = write(
        d,
        "bad-begin.key",
        &format!("-----BEGIN PRIVATE KEY-----\n{MARKER}!!\n"),
    );
    let encrypted = write(
        d,
        "encrypted.key",
        &format!(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\n{MARKER}\n-----END ENCRYPTED PRIVATE KEY-----\n"
        ),
    );
    let bad_der = write(
        d,
        "bad-der.pem",
        "-----BEGIN CERTIFICATE-----\nU0VDUkVUS0VZTUFURVJJQUw=\n-----END CERTIFICATE-----\n",
    );
    let huge = d.join("huge.pem");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(crate::config_source::file::MAX_NAMED_BYTES + 1))
        .expect("a sparse file");

    let ca = |path: &Path| TlsFiles {
        ca: file(CA, path),
        ..TlsFiles::default()
    };
    refused(&ca(&missing), CA, "No such file or directory");
    refused(&ca(d), CA, "reading");
    refused(&ca(&not_pem), CA, "no PEM certificate");
    refused(&ca(&p.client_key), CA, "no PEM certificate");
    refused(
        &ca(&bad_der),
        CA,
        "certificate 1 is not a usable CA certificate",
    );
    refused(&ca(&huge), CA, "is larger than 4 MiB");
    let fifo = d.join("ca.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    refused(
        &ca(&fifo),
        CA,
        "it is a FIFO (named pipe), not a regular file",
    );

    let identity = |cert: &Path, key: &Path| TlsFiles {
        ca: file(CA, &p.ca),
        client_cert: file(CERT, cert),
        client_key: file(KEY, key),
    };
    refused(
        &identity(&p.client_cert, &not_pem),
        KEY,
        "no PEM private key",
    );
    refused(
        &identity(&p.client_cert, &p.client_cert),
        KEY,
        "no PEM private key",
    );
    refused(&identity(&p.client_cert, &bad_begin), KEY, "not valid PEM");
    refused(
        &identity(&p.client_cert, &encrypted),
        KEY,
        "encrypted private key",
    );
    refused(
        &identity(&p.client_key, &p.client_key),
        CERT,
        "no PEM certificate",
    );
    refused(&identity(&missing, &p.client_key), CERT, "reading");
    // A key that is not the certificate's.
    refused(
        &identity(&p.client_cert, &p.stray_key),
        &format!("{CERT} and {KEY} do not make a usable client identity"),
        "",
    );
}

#[test]
fn half_an_identity_is_refused() {
    let p = pki();
    refused(
        &TlsFiles {
            client_cert: file(CERT, &p.client_cert),
            ..TlsFiles::default()
        },
        &format!("{CERT} is set without OTEL_EXPORTER_OTLP_CLIENT_KEY"),
        "mutual TLS needs both",
    );
    refused(
        &TlsFiles {
            client_key: file(KEY, &p.client_key),
            ..TlsFiles::default()
        },
        &format!("{KEY} is set without OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
        "mutual TLS needs both",
    );
}
