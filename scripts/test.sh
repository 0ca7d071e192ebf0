#!/usr/bin/env bash
# The whole test suite: installs what it needs, then formatting, lints, unit,
# integration, privileged eBPF and end-to-end tests. Run as root on Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (the eBPF and network-namespace tests need it): sudo $0" >&2
  exit 1
fi
bash scripts/setup-test-env.sh
# Rust comes from rustup on developer and CI machines; refuse clearly if it is missing.
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build"
cargo build --workspace --all-targets
echo "== tests"
# One test binary per crate; the e2e suite runs the real binary against a fake internet in network namespaces.
cargo test --workspace -- --test-threads="${IRON_TEST_THREADS:-2}"
echo "== the README's demo (scripts/demo.sh), every step checked"
bash scripts/demo-test.sh
echo "== packages: .deb/.rpm build, lintian, rpm -qpl, install/purge round trip"
cargo xtask package --profile dev --check
echo "== systemd: the packaged unit under a real systemd (PID 1 in a systemd-nspawn container)"
deb=$(ls -t target/package/iron-proxy_*_*.deb 2>/dev/null | head -1)
bash scripts/systemd-test.sh "$deb"
echo "== Helm chart: helm lint, helm template against the manifests, validate the rendered config"
bash scripts/helm-test.sh target/debug/iron-proxy
echo "== GitHub Action in a simulated runner"
bash packaging/github-action/test.sh "$deb"
echo "== xtask bench --quick (smoke only; never fails on numbers)"
if cargo xtask --help 2>/dev/null | grep -q bench; then cargo xtask bench --quick; fi
echo "== xtask link-order (smoke: callgrind over the debug binary; the release list is proxy/link-order.txt)"
cargo xtask link-order --proxy-bin target/debug/iron-proxy --out target/link-order-smoke.txt --duration 2
