#!/usr/bin/env bash
# Runs the README's demo (scripts/demo.sh) and checks that every step shows what the README
# promises: the allowed call passes, the unlisted host and the IP literal are refused with 403,
# the upstream sees the real key (and the workload gets it back masked), QUIC and the metadata address are refused in the kernel, the
# audit log has one record per request and no secret. The demo cleans up after itself; this
# also checks that it left no namespace, cgroup or pin behind.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! bash scripts/demo.sh >"$out" 2>&1; then
  cat "$out"; echo "demo-test: scripts/demo.sh failed" >&2; exit 1
fi
# Strip the demo's bold escapes so lines compare as plain text.
sed -i 's/\x1b\[[0-9;]*m//g' "$out"
fail=0
expect() { # expect LABEL REGEX [COUNT]
  local n; n=$(grep -cE -- "$2" "$out" || true)
  if [ "$n" -ne "${3:-1}" ]; then
    echo "demo-test: $1: expected ${3:-1} line(s) matching /$2/, found $n" >&2; fail=1
  fi
}
expect "allowed call" '^HTTP 200$'
expect "unlisted host refused" '^HTTP 403$'
expect "the refusal names the policy" '^Blocked by iron-proxy policy: GET blocked\.demo\.test/ is not in the allowlist$'
expect "secret swapped" '^upstream saw Authorization: Bearer sk-real-openai-key-do-not-share$'
expect "the echo scrubbed" '^workload got back: Bearer \[redacted\]\*{21}$'
expect "IP literal refused" '^HTTP 403 \(IP literals need a cidrs rule\)$'
expect "QUIC refused in the kernel" '^UDP 443 \(QUIC\) -> refused in the kernel \(EPERM\)$'
expect "metadata refused in the kernel" '^IMDS 169\.254\.169\.254:80 -> refused in the kernel \(EPERM\)$'
expect "audit: allowed requests" '^allow +200 GET +api\.demo\.test/(get|headers) +by pid=[0-9]+ comm=curl cgroup=/iron-demo-' 2
expect "audit: refused requests" '^reject 403 GET +(blocked\.demo\.test|198\.18\.250\.11)/ +by pid=[0-9]+ comm=curl .* rejected_by=allowlist$' 2
expect "audit: the swap annotated" 'secrets=\{"swapped": \[\{"locations": \["header:Authorization"\], "secret": "OPENAI_API_KEY"\}\]\}'
expect "no secret in the audit log" '^ok: no secret in the audit log$'
if grep -q 'sk-real-openai' <(sed -n '/== audit log/,$p' "$out" | grep -v '^upstream saw'); then
  echo "demo-test: the real key appears after the audit log heading" >&2; fail=1
fi
pid_tag=$(grep -oE 'iron-demo-[0-9]+' "$out" | head -1)
if ip netns list | grep -q "$pid_tag" || [ -e "/sys/fs/bpf/$pid_tag" ] \
  || [ -e "$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)/$pid_tag" ]; then
  echo "demo-test: $pid_tag left behind (netns, pin or cgroup)" >&2; fail=1
fi
if [ $fail -ne 0 ]; then cat "$out"; exit 1; fi
echo "demo-test: every step as the README shows it"
