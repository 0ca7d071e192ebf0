//! `iron-proxy generate-ca`, checked with openssl: a CA certificate (CA:TRUE, keyCertSign),
//! a valid private key, modes 0644/0600, no overwriting; and the proxy mints working leaves
//! from it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::*;

fn run(cmd: &mut Command) -> (i32, String) {
    let out = iron_proxy_tests::process::run_with_timeout("command", cmd, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.exit, text)
}

fn generate(outdir: &Path) -> (i32, String) {
    run(Command::new(iron_proxy_tests::paths::iron_proxy_bin())
        .arg("generate-ca")
        .arg("-outdir")
        .arg(outdir))
}

fn openssl(args: &[&str]) -> String {
    let (exit, text) = run(Command::new("openssl").args(args));
    assert_eq!(exit, 0, "openssl {args:?} failed:\n{text}");
    text
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn generate_ca_writes_a_ca_openssl_accepts_with_safe_modes_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outdir = dir.path().join("ca");
    let (exit, text) = generate(&outdir);
    assert_eq!(exit, 0, "generate-ca failed:\n{text}");
    let (crt, key) = (outdir.join("ca.crt"), outdir.join("ca.key"));
    let crt_s = crt.to_str().expect("utf-8 path");
    let key_s = key.to_str().expect("utf-8 path");

    let x509 = openssl(&["x509", "-in", crt_s, "-noout", "-text"]);
    assert!(
        x509.contains("CA:TRUE"),
        "basicConstraints CA:TRUE:\n{x509}"
    );
    assert!(
        x509.contains("Certificate Sign"),
        "keyUsage keyCertSign:\n{x509}"
    );
    let check = openssl(&["pkey", "-in", key_s, "-check", "-noout"]);
    assert!(check.contains("valid"), "{check}");
    // The key belongs to the certificate.
    let cert_pub = openssl(&["x509", "-in", crt_s, "-noout", "-pubkey"]);
    let key_pub = openssl(&["pkey", "-in", key_s, "-pubout"]);
    assert_eq!(cert_pub, key_pub, "the key matches the certificate");
    assert_eq!(mode(&crt), 0o644, "ca.crt mode");
    assert_eq!(mode(&key), 0o600, "ca.key mode");

    let (crt_bytes, key_bytes) = (std::fs::read(&crt), std::fs::read(&key));
    let (exit, text) = generate(&outdir);
    assert_ne!(exit, 0, "a second run must refuse:\n{text}");
    assert!(text.contains("refusing to overwrite"), "{text}");
    assert_eq!(std::fs::read(&crt).ok(), crt_bytes.ok(), "ca.crt untouched");
    assert_eq!(std::fs::read(&key).ok(), key_bytes.ok(), "ca.key untouched");
}

/// An `-outdir` that exists and is not a directory is named as such, not
/// reported as "creating /dev/null: File exists" (what creating it says),
/// and nothing is written.
#[test]
fn an_outdir_that_is_not_a_directory_is_named_as_such() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ca");
    std::fs::write(&file, "not a directory").expect("writing a file");
    for (outdir, kind) in [
        (Path::new("/dev/null"), "a character device"),
        (file.as_path(), "a regular file"),
    ] {
        let (exit, text) = generate(outdir);
        assert_ne!(exit, 0, "generate-ca into {}:\n{text}", outdir.display());
        assert_eq!(
            text.trim_end(),
            format!(
                "iron-proxy generate-ca: {} is not a directory (it is {kind})",
                outdir.display()
            )
        );
    }
    assert_eq!(
        std::fs::read_to_string(&file).ok().as_deref(),
        Some("not a directory")
    );
}

#[test]
fn the_proxy_mints_leaves_clients_accept_from_a_generated_ca() {
    require_root!();
    let dir = tempfile::tempdir().expect("temp dir");
    let outdir = dir.path().join("ca");
    let (exit, text) = generate(&outdir);
    assert_eq!(exit, 0, "generate-ca failed:\n{text}");
    let crt = outdir.join("ca.crt");
    let config = format!(
        "tls:\n  ca_cert: {}\n  ca_key: {}\n{MITM}",
        crt.display(),
        outdir.join("ca.key").display()
    );
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(config).resolver(&net).start();
    let r = Curl::get(&up.url("/get"))
        .args([
            "--cacert".to_string(),
            crt.display().to_string(),
            "--connect-to".to_string(),
            px.connect_to_https(),
        ])
        .run();
    r.expect_status(200);
    // The leaf as a client sees it: issued by the generated CA, for the name.
    let https = hostport(px.https_addr());
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &https,
        "-servername",
        "httpbin.test",
        "-CAfile",
    ])
    .arg(&crt);
    let (_, text) = run(&mut cmd);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(
        text.contains("iron-proxy CA"),
        "issuer is the generated CA:\n{text}"
    );
}
