//! pip through the MITM: `pip download` and `pip install` of a wheel built here, from a
//! simple index (PEP 503) on a local origin, trusting the proxy's CA with `--cert`; an index
//! on a host the allowlist does not name fails with the proxy's 403.

use super::*;

const INDEX: &str = "pypi.test";
const DENIED: &str = "evil-pypi.test";

/// A private index, the way CI reaches one: the credential in the index URL is a placeholder
/// the proxy swaps for the real one.
const TRANSFORMS: &str = r#"
  - name: allowlist
    config:
      domains: ["pypi.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: PIP_TOKEN}
          replace:
            proxy_value: "proxy-git-token"
            match_headers: ["Authorization"]
          rules:
            - host: "pypi.test"
"#;

/// Writes `tinypkg-0.1.0-py3-none-any.whl` (one module, `VALUE = 42`) under
/// `static/packages/` and the simple index that links to it.
pub(super) const BUILD_INDEX: &str = r#"
import base64, hashlib, os, sys, zipfile
root = sys.argv[1]
name, version = "tinypkg", "0.1.0"
wheel = f"{name}-{version}-py3-none-any.whl"
dist = f"{name}-{version}.dist-info"
files = {
    f"{name}/__init__.py": b"VALUE = 42\n",
    f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
    f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: iron-proxy-e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
def digest(data):
    d = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={d}"
record = "".join(f"{p},{digest(d)},{len(d)}\n" for p, d in files.items()) + f"{dist}/RECORD,,\n"
files[f"{dist}/RECORD"] = record.encode()
os.makedirs(os.path.join(root, "packages"), exist_ok=True)
path = os.path.join(root, "packages", wheel)
with zipfile.ZipFile(path, "w") as z:
    for p, d in files.items():
        z.writestr(p, d)
sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
os.makedirs(os.path.join(root, "simple", name), exist_ok=True)
with open(os.path.join(root, "simple", "index.html"), "w") as f:
    f.write(f'<!DOCTYPE html><html><body><a href="{name}/">{name}</a></body></html>\n')
with open(os.path.join(root, "simple", name, "index.html"), "w") as f:
    f.write(f'<!DOCTYPE html><html><body><a href="/packages/{wheel}#sha256={sha}">{wheel}</a></body></html>\n')
"#;

fn pip(via: Via) {
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &[INDEX]);
    python(BUILD_INDEX, [origin.static_root()]).assert_ok();
    let px = Px::start_for(&net, via, TRANSFORMS);
    let work = tempfile::tempdir().expect("pip dir");

    let pip = |args: &[&str], index: &str| {
        let mut cmd = px.command(via, &[INDEX, DENIED], paths::venv_python());
        cmd.args(["-m", "pip"])
            .args(args)
            .args([
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-deps",
                "--retries",
                "0",
                "--timeout",
                "20",
                "--index-url",
                &format!("https://ci:{PROXY_TOKEN}@{index}/simple"),
                "--cert",
                px.client_ca().to_str().expect("utf-8"),
            ])
            .env("HOME", work.path())
            // No config files (this machine's may name other indexes or bundles).
            .env("PIP_CONFIG_FILE", "/dev/null");
        if via == Via::Connect {
            cmd.args(["--proxy", &px.proxy_url()]);
        }
        cmd.arg("tinypkg==0.1.0");
        run(&mut cmd)
    };

    let dl = work.path().join("dl");
    ok(pip(&["download", "-d", dl.to_str().expect("utf-8")], INDEX));
    assert!(
        dl.join("tinypkg-0.1.0-py3-none-any.whl").is_file(),
        "pip downloaded the wheel"
    );
    let site = work.path().join("site");
    ok(pip(
        &["install", "--target", site.to_str().expect("utf-8")],
        INDEX,
    ));
    let out = python(
        "import sys; sys.path.insert(0, sys.argv[1]); import tinypkg; print(tinypkg.VALUE)",
        [&site],
    );
    assert_eq!(out.assert_ok().stdout.trim(), "42", "{out}");
    assert_audit_matches_origin(&px, &origin, INDEX, &[]);
    // pip sent the index URL's credential, which reached the index as the real one.
    let requests = origin.requests();
    for r in &requests {
        let auth = r["authorization"].as_str().unwrap_or_default();
        assert_eq!(
            super::git::base64_decode_basic(auth),
            format!("ci:{REAL_TOKEN}"),
            "{r}"
        );
    }
    assert_never_logged(&px, REAL_TOKEN);
    assert_eq!(
        origin
            .requests()
            .iter()
            .filter(|r| r["path"] == "/packages/tinypkg-0.1.0-py3-none-any.whl")
            .count(),
        2,
        "each pip run fetched the wheel once"
    );

    // An index on a host the allowlist does not name.
    let out = pip(
        &["download", "-vv", "-d", dl.to_str().expect("utf-8")],
        DENIED,
    );
    assert_ne!(out.exit, 0, "pip failed:\n{}", text(&out));
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("403"), "pip shows the proxy's 403:\n{said}");
    assert_refused_by_allowlist(&px, DENIED, 1);
}

#[test]
fn pip_download_and_install_through_connect() {
    require_root!();
    pip(Via::Connect);
}

#[test]
fn pip_download_and_install_through_https_listen() {
    require_root!();
    pip(Via::HttpsListen);
}

#[test]
fn pip_download_and_install_under_transparent_interception() {
    require_root!();
    pip(TRANSPARENT);
}
