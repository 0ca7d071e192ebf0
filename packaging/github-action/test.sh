#!/usr/bin/env bash
# Simulated-runner test of the GitHub Action (root only):
#   bash packaging/github-action/test.sh path/to/iron-proxy_*.deb
#
# Creates a throwaway runner user, fakes the GITHUB_* environment, runs
# setup.sh as a dry run (IRON_PROXY_ROOT: the .deb is unpacked and `init
# -root` writes under a temporary root, so no service starts and no real
# sudoers/group file changes), checks what it wrote, then runs the summary
# action on a sample audit log. The user and every temporary file are
# removed on exit, on failure too.
set -euo pipefail

DEB="${1:?usage: test.sh PATH.deb}"
DEB="$(readlink -f "$DEB")"
HERE="$(cd "$(dirname "$0")" && pwd)"
[ "$(id -u)" = 0 ] || { echo "test.sh: needs root (creates a user)" >&2; exit 1; }

USER_NAME="ipxrun$$"
TMP="$(mktemp -d)"
cleanup() {
  userdel "$USER_NAME" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
useradd -M -s /usr/sbin/nologin "$USER_NAME"

fail() { echo "FAIL: $*" >&2; exit 1; }
check() { # description, then a command that must succeed
  local what="$1"; shift
  if "$@"; then echo "ok - $what"; passed=$((passed + 1)); else fail "$what"; fi
}
passed=0

ROOT="$TMP/root"
mkdir -p "$ROOT/etc/sudoers.d" "$ROOT/var/run" "$TMP/ws"
echo "$USER_NAME ALL=(ALL) NOPASSWD:ALL" > "$ROOT/etc/sudoers.d/$USER_NAME"
echo "other ALL=(ALL) NOPASSWD:ALL" > "$ROOT/etc/sudoers.d/other"
printf 'root:x:0:\nsudo:x:27:alice,%s\ndocker:x:999:%s\nusers:x:100:%s\n' "$USER_NAME" "$USER_NAME" "$USER_NAME" > "$ROOT/etc/group"
: > "$ROOT/var/run/docker.sock"
chmod 0666 "$ROOT/var/run/docker.sock"
cat > "$TMP/ws/egress-rules.yaml" <<'EOF'
domains:
  - "registry.npmjs.org"
  - "*.nodejs.org"
cidrs:
  - "10.0.0.0/8"
rules:
  - domain: "api.example.com"
    methods: ["GET"]
    paths: ["/v1/*"]
EOF

export GITHUB_ENV="$TMP/github_env" GITHUB_STEP_SUMMARY="$TMP/step_summary.md"
export GITHUB_WORKSPACE="$TMP/ws" GITHUB_RUN_ID=42 RUNNER_TEMP="$TMP"
: > "$GITHUB_ENV"
: > "$GITHUB_STEP_SUMMARY"

echo "== setup.sh (dry run under $ROOT)"
INPUT_VERSION=latest INPUT_EGRESS_RULES=egress-rules.yaml INPUT_WARN=true \
  INPUT_DISABLE_SUDO=true INPUT_DISABLE_DOCKER=true INPUT_UPSTREAM_RESOLVER=8.8.8.8:53 \
  IRON_PROXY_DEB="$DEB" IRON_PROXY_ROOT="$ROOT" IRON_PROXY_RUNNER_USER="$USER_NAME" \
  bash "$HERE/setup.sh"

conf="$ROOT/etc/iron-proxy/proxy.yaml"
check "binary unpacked" test -x "$ROOT/usr/bin/iron-proxy"
check "CA generated, key 0600" test "$(stat -c %a "$ROOT/etc/iron-proxy/ca.key")" = 600
check "config written" test -f "$conf"
check "runner user intercepted" grep -q "^    - \"$USER_NAME\"$" "$conf"
check "eBPF mode, DNS redirected to the proxy" grep -q '^  dns: true$' "$conf"
check "DNS answers 127.0.0.1" grep -q '^  proxy_ip: "127.0.0.1"$' "$conf"
check "warn mode" grep -q '^      warn: true$' "$conf"
check "GitHub domains allowed" grep -q '"\*.actions.githubusercontent.com"' "$conf"
check "egress rules merged (domain alias)" grep -q 'host: "api.example.com"' "$conf"
check "upstream resolver" grep -q 'upstream_resolver: "8.8.8.8:53"' "$conf"
# validate answers whether the proxy would start: with the CA and the secrets file init wrote
# under $ROOT standing in for /etc/iron-proxy (as the unit's EnvironmentFile= supplies them).
validate_as_the_unit() {
  (set -a; . "$ROOT/etc/iron-proxy/iron-proxy.env"; set +a
   IRON_TLS_CA_CERT="$ROOT/etc/iron-proxy/ca.crt" IRON_TLS_CA_KEY="$ROOT/etc/iron-proxy/ca.key" \
     "$ROOT/usr/bin/iron-proxy" validate -preflight -config "$conf")
}
check "config validates" validate_as_the_unit
check "secrets file 0600" test "$(stat -c %a "$ROOT/etc/iron-proxy/iron-proxy.env")" = 600
check "drop-in for the packaged unit" test -f "$ROOT/etc/systemd/system/iron-proxy.service.d/10-iron-proxy-init.conf"
check "CA trusted" cmp -s "$ROOT/etc/iron-proxy/ca.crt" "$ROOT/usr/local/share/ca-certificates/iron-proxy.crt"
check "SSL_CERT_FILE exported" grep -qx 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' "$GITHUB_ENV"
check "NODE_EXTRA_CA_CERTS exported" grep -qx 'NODE_EXTRA_CA_CERTS=/etc/iron-proxy/ca.crt' "$GITHUB_ENV"
check "REQUESTS_CA_BUNDLE exported" grep -qx 'REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' "$GITHUB_ENV"
check "runner's sudoers entry removed" test ! -e "$ROOT/etc/sudoers.d/$USER_NAME"
check "other sudoers entries kept" test -e "$ROOT/etc/sudoers.d/other"
check "removed from sudo group" grep -qx 'sudo:x:27:alice' "$ROOT/etc/group"
check "removed from docker group" grep -qx 'docker:x:999:' "$ROOT/etc/group"
check "other groups kept" grep -qx "users:x:100:$USER_NAME" "$ROOT/etc/group"
check "docker socket restricted" test "$(stat -c %a "$ROOT/var/run/docker.sock")" = 600
check "audit log readable by the runner" test "$(stat -c %a "$ROOT/var/log/iron-proxy.log")" = 644

echo "== setup.sh again (idempotent)"
before="$(cd "$ROOT/etc/iron-proxy" && sha256sum ca.crt ca.key proxy.yaml iron-proxy.env)"
INPUT_WARN=true IRON_PROXY_DEB="$DEB" IRON_PROXY_ROOT="$ROOT" IRON_PROXY_RUNNER_USER="$USER_NAME" \
  bash "$HERE/setup.sh" >/dev/null
after="$(cd "$ROOT/etc/iron-proxy" && sha256sum ca.crt ca.key proxy.yaml iron-proxy.env)"
check "second run changes nothing" test "$before" = "$after"

echo "== summary action"
cat > "$ROOT/var/log/iron-proxy.log" <<'EOF'
2026-06-01T00:00:00Z  INFO iron_proxy: ready
{"host":"registry.npmjs.org","method":"GET","path":"/react/-/react-18.2.0.tgz","action":"allow","status_code":200,"request_transforms":[{"name":"allowlist","action":"continue"}]}
{"host":"telemetry.example","method":"POST","path":"/v1/collect","action":"allow","status_code":200,"request_transforms":[{"name":"allowlist","action":"continue","annotations":{"action":"warn","reason":"not_allowlisted"}}]}
{"host":"evil.example","method":"GET","path":"/x","action":"reject","status_code":403,"reason":"not_allowlisted","request_transforms":[{"name":"allowlist","action":"reject"}]}
EOF
INPUT_LOG_FILE="$ROOT/var/log/iron-proxy.log" INPUT_SHOW_FULL_PATHS=false INPUT_SUGGEST_RULES="$TMP/suggested.yaml" \
  IRON_PROXY_BIN="$ROOT/usr/bin/iron-proxy" bash "$HERE/summary/summary.sh"
check "summary table" grep -q '^| HOST | TOTAL | ALLOWED | WARNED | DENIED |$' "$GITHUB_STEP_SUMMARY"
check "warned host row" grep -q '^| `telemetry.example` | 1 | 0 | 1 | 0 |$' "$GITHUB_STEP_SUMMARY"
check "denied host row" grep -q '^| `evil.example` | 1 | 0 | 0 | 1 |$' "$GITHUB_STEP_SUMMARY"
check "suggested rules" grep -q '"telemetry.example"' "$TMP/suggested.yaml"
INPUT_LOG_FILE="$TMP/missing.log" IRON_PROXY_BIN="$ROOT/usr/bin/iron-proxy" bash "$HERE/summary/summary.sh" >/dev/null
check "missing log is a warning, not a failure" grep -q 'missing or unreadable' "$GITHUB_STEP_SUMMARY"

echo "$passed passed, 0 failed"
