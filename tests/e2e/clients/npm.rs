//! npm through the MITM: `npm install` of a package built here from a static registry on a
//! local origin (metadata JSON and tarball), trusting the proxy's CA with `--cafile`; the
//! registry token in `.npmrc` is a placeholder the proxy swaps for the real one. A registry on
//! a host the allowlist does not name fails with the proxy's 403.

use super::*;

const REGISTRY: &str = "npm.test";
const DENIED: &str = "evil-npm.test";

const TRANSFORMS: &str = r#"
  - name: allowlist
    config:
      domains: ["npm.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: NPM_TOKEN}
          replace:
            proxy_value: "proxy-npm-token"
            match_headers: ["Authorization"]
          rules:
            - host: "npm.test"
"#;

/// Writes the registry's answers for NAME (default `tiny-pkg`; `@scope/name` for a scoped
/// one) 1.0.0 under ROOT (the origin's static root): `npm/NAME/index.json` (metadata) and
/// the tarball it points to, `npm/NAME/-/BASENAME-1.0.0.tgz`, for a registry at BASE.
pub(super) const BUILD_REGISTRY: &str = r#"
import base64, hashlib, io, json, os, sys, tarfile
root, base = sys.argv[1], sys.argv[2]
name, version = (sys.argv[3] if len(sys.argv) > 3 else "tiny-pkg"), "1.0.0"
files = {
    "package/package.json": json.dumps({"name": name, "version": version, "main": "index.js"}).encode(),
    "package/index.js": b"module.exports = 42;\n",
}
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as t:
    for path, data in files.items():
        info = tarfile.TarInfo(path)
        info.size = len(data)
        info.mode = 0o644
        t.addfile(info, io.BytesIO(data))
tgz = buf.getvalue()
rel = f"npm/{name}/-/{name.split('/')[-1]}-{version}.tgz"
os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
open(os.path.join(root, rel), "wb").write(tgz)
meta = {
    "name": name,
    "dist-tags": {"latest": version},
    "versions": {
        version: {
            "name": name,
            "version": version,
            "main": "index.js",
            "dist": {
                "tarball": f"{base}/{rel}",
                "shasum": hashlib.sha1(tgz).hexdigest(),
                "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode(),
            },
        }
    },
}
open(os.path.join(root, "npm", name, "index.json"), "w").write(json.dumps(meta))
"#;

fn npm(via: Via) {
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &[REGISTRY]);
    python(
        BUILD_REGISTRY,
        [
            origin.static_root().to_str().expect("utf-8"),
            &format!("https://{REGISTRY}"),
        ],
    )
    .assert_ok();
    let px = Px::start_for(&net, via, TRANSFORMS);
    let work = tempfile::tempdir().expect("npm dir");
    // The workload's .npmrc holds only the placeholder.
    let npmrc = work.path().join("npmrc");
    write(
        &npmrc,
        format!("//{REGISTRY}/npm/:_authToken={}\n", "proxy-npm-token").as_bytes(),
    );

    let npm = |project: &str, registry: &str, package: &str, extra: &[&str]| {
        let dir = work.path().join(project);
        std::fs::create_dir_all(&dir).expect("project dir");
        write(
            &dir.join("package.json"),
            br#"{"name": "app", "version": "0.0.0", "private": true}"#,
        );
        let mut cmd = px.command(via, &[REGISTRY, DENIED], "npm");
        cmd.current_dir(&dir)
            .args([
                "install",
                package,
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
            ])
            .arg(format!("--registry=https://{registry}/npm/"))
            .arg(format!("--cafile={}", px.client_ca().display()))
            .arg(format!("--cache={}", work.path().join("cache").display()))
            .arg(format!("--userconfig={}", npmrc.display()))
            .args(["--fetch-retries=0", "--loglevel=http"])
            .args(extra)
            .env("HOME", work.path());
        if via == Via::Connect {
            cmd.arg(format!("--proxy={}", px.proxy_url()))
                .arg(format!("--https-proxy={}", px.proxy_url()));
        }
        (run(&mut cmd), dir)
    };

    // A fresh install, then one that revalidates its cache (If-None-Match, answered 304).
    let runs: [(&str, u16, &[&str]); 2] = [("app", 200, &[]), ("again", 304, &["--prefer-online"])];
    for (project, status, extra) in runs {
        let (out, dir) = npm(project, REGISTRY, "tiny-pkg", extra);
        ok(out);
        let installed = dir.join("node_modules/tiny-pkg");
        assert_eq!(
            std::fs::read_to_string(installed.join("index.js")).expect("installed package"),
            "module.exports = 42;\n"
        );
        let requests = origin.requests();
        for path in ["/npm/tiny-pkg", "/npm/tiny-pkg/-/tiny-pkg-1.0.0.tgz"] {
            let r = requests
                .iter()
                .rev()
                .find(|r| r["path"] == path)
                .unwrap_or_else(|| panic!("npm fetched {path}: {requests:?}"));
            assert_eq!(r["status"], status, "{project}: {r}");
            assert_eq!(
                r["authorization"],
                format!("Bearer {REAL_TOKEN}"),
                "the registry saw the real token: {r}"
            );
        }
    }
    assert_audit_matches_origin(&px, &origin, REGISTRY, &[]);
    assert_never_logged(&px, REAL_TOKEN);

    // A registry on a host the allowlist does not name.
    let (out, _) = npm("denied", DENIED, "other-pkg", &[]);
    assert_ne!(out.exit, 0, "npm failed:\n{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("403"), "npm shows the proxy's 403:\n{said}");
    assert_refused_by_allowlist(&px, DENIED, 1);
}

#[test]
fn npm_install_through_connect() {
    require_root!();
    npm(Via::Connect);
}

#[test]
fn npm_install_through_https_listen() {
    require_root!();
    npm(Via::HttpsListen);
}

#[test]
fn npm_install_under_transparent_interception() {
    require_root!();
    npm(TRANSPARENT);
}

/// A path rule for one npm scope, as docs/allowlist.md gives it: npm asks for a scoped
/// package's metadata with the scope's slash percent-encoded (`/npm/@acme%2ftiny`), and path
/// rules match the raw path, so `/npm/@acme/*` alone (which does match the tarball,
/// `/npm/@acme/tiny/-/tiny-1.0.0.tgz`) refuses the metadata; the rule names both forms.
/// `naive.test` has only `/npm/@acme/*`; another scope is refused on the good host too.
const SCOPED: &str = r#"
  - name: allowlist
    config:
      rules:
        - host: "npm.test"
          methods: ["GET"]
          paths: ["/npm/@acme%2f*", "/npm/@acme%2F*", "/npm/@acme/*"]
        - host: "naive.test"
          methods: ["GET"]
          paths: ["/npm/@acme/*"]
"#;

#[test]
fn npm_scoped_package_with_a_path_rule_for_its_scope() {
    require_root!();
    const NAIVE: &str = "naive.test";
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &[REGISTRY, NAIVE]);
    for name in ["@acme/tiny", "@other/tiny"] {
        python(
            BUILD_REGISTRY,
            [
                origin.static_root().to_str().expect("utf-8"),
                &format!("https://{REGISTRY}"),
                name,
            ],
        )
        .assert_ok();
    }
    let px = Px::start(&net, SCOPED);
    let work = tempfile::tempdir().expect("npm dir");
    let install = |project: &str, registry: &str, package: &str| {
        let dir = work.path().join(project);
        write(
            &dir.join("package.json"),
            br#"{"name": "app", "version": "0.0.0", "private": true}"#,
        );
        let mut cmd = px.command(Via::HttpsListen, &[REGISTRY, NAIVE], "npm");
        cmd.current_dir(&dir)
            .args(["install", package, "--no-audit", "--no-fund"])
            .arg("--no-update-notifier")
            .arg(format!("--registry=https://{registry}/npm/"))
            .arg(format!("--cafile={}", px.client_ca().display()))
            .arg(format!("--cache={}", work.path().join("cache").display()))
            .arg(format!(
                "--userconfig={}",
                work.path().join("npmrc").display()
            ))
            .args(["--fetch-retries=0", "--prefer-online"])
            .env("HOME", work.path());
        (run(&mut cmd), dir)
    };

    let (out, dir) = install("acme", REGISTRY, "@acme/tiny");
    ok(out);
    assert_eq!(
        std::fs::read_to_string(dir.join("node_modules/@acme/tiny/index.js"))
            .expect("installed package"),
        "module.exports = 42;\n"
    );
    let paths: Vec<String> = origin
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        paths,
        ["/npm/@acme%2ftiny", "/npm/@acme/tiny/-/tiny-1.0.0.tgz"],
        "npm's requests as the origin got them (raw paths)"
    );

    for (project, registry, package) in [
        ("other", REGISTRY, "@other/tiny"),
        ("naive", NAIVE, "@acme/tiny"),
    ] {
        let (out, _) = install(project, registry, package);
        assert_ne!(out.exit, 0, "{project}: npm failed:\n{}", text(&out));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("403"),
            "{project}: npm shows the 403:\n{said}"
        );
    }
    assert_audit_matches_origin(&px, &origin, REGISTRY, &[("GET", "/npm/@other%2ftiny")]);
    assert_refused_by_allowlist(&px, NAIVE, 1);
    let rec = px.wait_for_audit(|a| a.host() == Some(NAIVE));
    assert_eq!(rec.path(), Some("/npm/@acme%2ftiny"), "{rec}");
}
