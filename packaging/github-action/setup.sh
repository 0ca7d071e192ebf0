#!/usr/bin/env bash
# iron-proxy GitHub Action: locks down the runner's egress.
#
# 1. installs the iron-proxy package (a local .deb, or the release for INPUT_VERSION);
# 2. generates an ephemeral CA (valid 24 hours) for this job;
# 3. runs `iron-proxy init`: every TCP connection of the runner user is
#    redirected to the proxy with eBPF, and its DNS to the proxy's DNS server
#    (which answers 127.0.0.1, a connection there reaching the proxy), the allowlist is
#    GitHub's own infrastructure plus the egress rules file, and the CA is
#    trusted system-wide;
# 4. exports SSL_CERT_FILE, NODE_EXTRA_CA_CERTS and REQUESTS_CA_BUNDLE via $GITHUB_ENV;
# 5. revokes sudo and Docker for the runner user when asked.
#
# Inputs come as INPUT_* variables (see action.yml). For tests:
#   IRON_PROXY_ROOT=DIR       dry run: unpack the .deb and write everything under DIR
#                             (`init -root`), nothing is started and no system file changes;
#   IRON_PROXY_RUNNER_USER    the user to lock down (default: the user running this script);
#   IRON_PROXY_RELEASES       base URL of the release downloads.
set -euo pipefail

log() { echo "iron-proxy: $*"; }
die() { echo "::error::iron-proxy: $*" >&2; exit 1; }
truthy() { case "${1:-}" in true|True|TRUE|1|yes) return 0 ;; *) return 1 ;; esac; }

VERSION="${INPUT_VERSION:-latest}"
RULES="${INPUT_EGRESS_RULES:-egress-rules.yaml}"
RESOLVER="${INPUT_UPSTREAM_RESOLVER:-8.8.8.8:53}"
DEB="${IRON_PROXY_DEB:-}"
ROOT="${IRON_PROXY_ROOT:-}"
RUNNER_USER="${IRON_PROXY_RUNNER_USER:-$(id -un)}"
RELEASES="${IRON_PROXY_RELEASES:-https://github.com/ironsh/iron-proxy/releases}"

# GitHub's own infrastructure: checkout, artifacts, caches, logs, packages.
GITHUB_DOMAINS="github.com,*.github.com,*.githubusercontent.com,*.actions.githubusercontent.com,*.blob.core.windows.net,ghcr.io,pkg-containers.githubusercontent.com"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if [ "$RUNNER_USER" = root ]; then
  die "refusing to lock down root: set IRON_PROXY_RUNNER_USER to the workload user"
fi
id "$RUNNER_USER" >/dev/null 2>&1 || die "no such user: $RUNNER_USER"

# Paths on the (possibly simulated) target system.
at() { echo "${ROOT}$1"; }

# --- 1. install -------------------------------------------------------------
if [ -z "$DEB" ]; then
  arch="$(dpkg --print-architecture)"
  if [ "$VERSION" = latest ]; then
    url="$RELEASES/latest/download/iron-proxy_${arch}.deb"
  else
    url="$RELEASES/download/v${VERSION}/iron-proxy_${VERSION}_${arch}.deb"
  fi
  DEB="${RUNNER_TEMP:-/tmp}/iron-proxy.deb"
  log "downloading $url"
  curl -fsSL --retry 3 -o "$DEB" "$url" || die "download of $url failed"
fi
[ -f "$DEB" ] || die "package $DEB not found"
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  dpkg-deb -x "$DEB" "$ROOT"
  BIN="$ROOT/usr/bin/iron-proxy"
  log "dry run: unpacked $DEB into $ROOT"
else
  $SUDO dpkg -i "$DEB" >/dev/null
  BIN=/usr/bin/iron-proxy
  log "installed $("$BIN" version 2>/dev/null || echo "$DEB")"
fi

# --- 2. ephemeral CA --------------------------------------------------------
CONF_DIR=/etc/iron-proxy
if [ ! -f "$(at $CONF_DIR/ca.crt)" ]; then
  $SUDO mkdir -p "$(at $CONF_DIR)"
  $SUDO "$BIN" generate-ca -outdir "$(at $CONF_DIR)" -name "iron-proxy CA (GitHub Actions run ${GITHUB_RUN_ID:-local})" -expiry-hours 24 -alg ecdsa >/dev/null
  log "generated an ephemeral CA (24 hours)"
fi

# --- 3. init ----------------------------------------------------------------
args=(init -allow "$GITHUB_DOMAINS" -intercept-user "$RUNNER_USER" -intercept-dns -upstream-resolver "$RESOLVER" -trust)
rules_path="$RULES"
case "$rules_path" in /*) ;; *) rules_path="${GITHUB_WORKSPACE:-$PWD}/$rules_path" ;; esac
if [ -f "$rules_path" ]; then
  args+=(-egress-rules "$rules_path")
elif [ -n "${INPUT_EGRESS_RULES:-}" ] && [ "$INPUT_EGRESS_RULES" != egress-rules.yaml ]; then
  die "egress rules file $rules_path not found"
else
  log "no $RULES in the workspace: only GitHub's own domains are allowed"
fi
if truthy "${INPUT_WARN:-false}"; then args+=(-warn); fi
if [ -n "$ROOT" ]; then
  args+=(-root "$ROOT")
elif [ ! -d /run/systemd/system ]; then
  die "systemd is not running on this runner; iron-proxy needs it to run as a service"
fi
# The summary step runs without sudo: keep the audit log readable by the runner.
$SUDO mkdir -p "$(at /var/log)"
$SUDO touch "$(at /var/log/iron-proxy.log)"
$SUDO chmod 0644 "$(at /var/log/iron-proxy.log)"
$SUDO "$BIN" "${args[@]}"

# --- 4. environment for later steps -----------------------------------------
if [ -f "$(at /etc/pki/ca-trust/source/anchors/iron-proxy.crt)" ]; then
  bundle=/etc/pki/tls/certs/ca-bundle.crt
else
  bundle=/etc/ssl/certs/ca-certificates.crt
fi
if [ -n "${GITHUB_ENV:-}" ]; then
  {
    echo "SSL_CERT_FILE=$bundle"
    echo "NODE_EXTRA_CA_CERTS=$CONF_DIR/ca.crt"
    echo "REQUESTS_CA_BUNDLE=$bundle"
    echo "IRON_PROXY_LOG=/var/log/iron-proxy.log"
  } >> "$GITHUB_ENV"
fi

# --- 5. revoke sudo and Docker ----------------------------------------------
remove_from_group() { # group user
  local group_file
  group_file="$(at /etc/group)"
  [ -f "$group_file" ] || return 0
  if grep -Eq "^$1:[^:]*:[^:]*:(.*,)?$2(,.*)?$" "$group_file"; then
    if [ -n "$ROOT" ]; then
      awk -F: -v g="$1" -v u="$2" 'BEGIN { OFS = ":" }
        $1 == g { n = split($4, m, ","); s = ""; for (i = 1; i <= n; i++) if (m[i] != u && m[i] != "") s = (s == "" ? m[i] : s "," m[i]); $4 = s }
        { print }' "$group_file" > "$group_file.new" && mv "$group_file.new" "$group_file"
    else
      $SUDO gpasswd -d "$2" "$1" >/dev/null
    fi
    log "removed $2 from group $1"
  fi
}
if truthy "${INPUT_DISABLE_DOCKER:-true}"; then
  remove_from_group docker "$RUNNER_USER"
  # Running processes keep their supplementary groups: take the socket away too.
  for sock in "$(at /var/run/docker.sock)" "$(at /run/docker.sock)"; do
    if [ -S "$sock" ] || [ -f "$sock" ]; then $SUDO chown root:root "$sock"; $SUDO chmod 0600 "$sock"; log "restricted $sock to root"; fi
  done
fi
if truthy "${INPUT_DISABLE_SUDO:-true}"; then
  remove_from_group sudo "$RUNNER_USER"
  remove_from_group admin "$RUNNER_USER"
  remove_from_group wheel "$RUNNER_USER"
  sudoers_dir="$(at /etc/sudoers.d)"
  if [ -d "$sudoers_dir" ]; then
    for f in $($SUDO grep -lE "^[[:space:]]*$RUNNER_USER[[:space:]]" "$sudoers_dir"/* 2>/dev/null || true); do
      $SUDO rm -f "$f"
      log "removed $f (sudo revoked for $RUNNER_USER)"
    done
  fi
fi
log "egress is locked down for $RUNNER_USER; audit log: /var/log/iron-proxy.log"
