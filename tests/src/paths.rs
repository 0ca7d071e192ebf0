//! Where things live: the repository, the cargo output directory and the binaries in it, the
//! Python virtualenv.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Root of the repository (the workspace), the parent of this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's output directory for the profile the tests were built with (e.g. `target/debug`).
///
/// Derived from the running test executable (`<dir>/deps/e2e-<hash>`), which follows
/// `CARGO_TARGET_DIR` and the profile without guessing; falls back to `$CARGO_TARGET_DIR/debug`
/// and `<repo>/target/debug`.
pub fn profile_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps") {
                if let Some(dir) = deps.parent() {
                    return dir.to_path_buf();
                }
            }
        }
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("debug"),
        None => repo_root().join("target").join("debug"),
    }
}

/// Finds a binary built by cargo: `$<env_var>` if set, else `<profile_dir>/<name>`, else
/// `$CARGO_TARGET_DIR/debug/<name>`, else `<repo>/target/debug/<name>`.
///
/// Panics with the command that builds it when it is missing.
pub fn binary(name: &str, env_var: &str, package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env_var}={} does not exist", p.display());
        return p;
    }
    let mut candidates = vec![profile_dir().join(name)];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join(name));
    }
    candidates.push(repo_root().join("target").join("debug").join(name));
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "binary `{name}` not found (looked in {candidates:?}); build it with \
         `cargo build -p {package} --bin {name}` or point {env_var} at it"
    );
}

/// The `iron-proxy` binary under test (`IRON_PROXY_BIN` overrides).
pub fn iron_proxy_bin() -> PathBuf {
    binary("iron-proxy", "IRON_PROXY_BIN", "iron-proxy")
}

/// The `fake-upstream` server binary (`FAKE_UPSTREAM_BIN` overrides).
pub fn fake_upstream_bin() -> PathBuf {
    binary("fake-upstream", "FAKE_UPSTREAM_BIN", "iron-proxy-tests")
}

/// The test virtualenv (`IRON_TEST_VENV`, default `<repo>/target/test-venv`).
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("IRON_TEST_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("target").join("test-venv"),
    }
}

/// The virtualenv's Python, created on first use by `scripts/setup-test-env.sh --venv-only`
/// (which is idempotent and serialises parallel callers with a lock file).
pub fn venv_python() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let script = repo_root().join("scripts").join("setup-test-env.sh");
            let out = Command::new(&script)
                .arg("--venv-only")
                .env("IRON_TEST_VENV", venv_dir())
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} --venv-only failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            venv_dir().join("bin").join("python")
        })
        .clone()
}

/// A temp dir named `ipx-<pid>-<tag>.XXXX`, removed on drop; if the test process dies first,
/// the next run's sweep (see [`crate::netns`]) removes it because `<pid>` is gone.
pub fn scratch_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ipx-{}-{tag}.", std::process::id()))
        .tempdir()
        .expect("creating a temp dir")
}

/// The Node packages of `tests/node` (undici), installed by `scripts/setup-test-env.sh` into
/// `IRON_TEST_NODE` (default `<repo>/target/test-node`): the `node_modules` directory, for
/// `NODE_PATH`. Runs the setup's on-demand part first, like [`venv_python`].
pub fn node_modules() -> PathBuf {
    venv_python();
    let dir = match std::env::var_os("IRON_TEST_NODE") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("target").join("test-node"),
    }
    .join("node_modules");
    assert!(
        dir.join("undici").is_dir(),
        "{} has no undici: install node and npm, then run scripts/setup-test-env.sh",
        dir.display()
    );
    dir
}
