#!/usr/bin/env bash
# iron-proxy demo: transparent eBPF interception of a workload, allow and deny,
# secret swap, and the audit log. Self-contained: it builds a tiny fake
# internet in a network namespace (two HTTPS servers and a DNS server on
# 198.18.250.0/24), runs the proxy, and runs a workload in its own cgroup with
# NO proxy settings. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "$(id -u)" != 0 ]; then
  echo "scripts/demo.sh: run as root (eBPF, cgroups and network namespaces need it): sudo $0" >&2
  exit 1
fi
bash scripts/setup-test-env.sh >/dev/null
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say "building iron-proxy and the demo upstream"
cargo build -q -p iron-proxy --bin iron-proxy
cargo build -q -p iron-proxy-tests --bin fake-upstream
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PROXY=$TARGET/debug/iron-proxy
UPSTREAM=$TARGET/debug/fake-upstream

WORK=$(mktemp -d /tmp/iron-demo.XXXXXX)
NS=iron-demo-$$
VETH=idemo$$
CGMOUNT=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
[ -n "$CGMOUNT" ] || { echo "no cgroup v2 mount found in /proc/self/mountinfo" >&2; exit 1; }
CG=$CGMOUNT/iron-demo-$$
PIN=/sys/fs/bpf/iron-demo-$$
PIDS=()

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -e "$PIN" ] && "$PROXY" intercept detach -config "$WORK/proxy.yaml" >/dev/null 2>&1
  [ -d "$CG" ] && rmdir "$CG" 2>/dev/null
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null
  ip link del "$VETH" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

say "building a fake internet in network namespace $NS (198.18.250.0/24)"
ip netns add "$NS"
ip link add "$VETH" type veth peer name "${VETH}n"
ip link set "${VETH}n" netns "$NS"
ip addr add 198.18.250.1/24 dev "$VETH"; ip link set "$VETH" up
ip -n "$NS" addr add 198.18.250.2/24 dev "${VETH}n"
ip -n "$NS" addr add 198.18.250.10/24 dev "${VETH}n"
ip -n "$NS" addr add 198.18.250.11/24 dev "${VETH}n"
ip -n "$NS" link set "${VETH}n" up; ip -n "$NS" link set lo up

# Certificates: an upstream CA (trusted by the proxy only) and the proxy's MITM CA (trusted by the workload).
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=demo upstream CA" \
  -keyout up-ca.key -out up-ca.crt -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign 2>/dev/null
for name in api.demo.test blocked.demo.test; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$name" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA up-ca.crt -CAkey up-ca.key -CAcreateserial -days 1 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
done
"$PROXY" generate-ca -outdir "$WORK/ca" -name "iron-proxy demo CA" >/dev/null

ip netns exec "$NS" "$UPSTREAM" --name api.demo.test --listen 198.18.250.10:443 --tls-cert api.demo.test.crt --tls-key api.demo.test.key --log api.log >/dev/null 2>&1 &
PIDS+=($!)
ip netns exec "$NS" "$UPSTREAM" --name blocked.demo.test --listen 198.18.250.11:443 --listen-plain 198.18.250.11:80 --tls-cert blocked.demo.test.crt --tls-key blocked.demo.test.key --log blocked.log >/dev/null 2>&1 &
PIDS+=($!)
ip netns exec "$NS" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=198.18.250.2 --port=53 --user=root --group=root --pid-file="$WORK/dnsmasq.pid" \
  --address=/api.demo.test/198.18.250.10 --address=/blocked.demo.test/198.18.250.11 >/dev/null 2>&1 &
PIDS+=($!)

mkdir "$CG"
cat > proxy.yaml <<EOF
dns:
  listen: "127.0.0.1:15353"
  proxy_ip: "198.18.250.1"               # every name resolves here; the connect is redirected anyway
  upstream_resolver: "198.18.250.2:53"    # the proxy's own lookups (the fake internet's DNS)
proxy:
  http_listen: "127.0.0.1:18080"
  https_listen: "127.0.0.1:18443"
tls:
  ca_cert: "$WORK/ca/ca.crt"
  ca_key: "$WORK/ca/ca.key"
metrics:
  listen: "127.0.0.1:19090"
transforms:
  - name: allowlist
    config:
      domains: ["api.demo.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: OPENAI_API_KEY}
          replace:
            proxy_value: "proxy-openai-abc123"
            match_headers: ["Authorization"]
          rules:
            - host: "api.demo.test"
intercept:
  cgroups: ["$CG"]
  listen: "127.0.0.1:15001"
  pin_path: "$PIN"
EOF
say "validating the config"
OPENAI_API_KEY=set "$PROXY" validate -config proxy.yaml

# stderr carries operational logs and audit records, both as JSON lines; an audit
# record is the line with an "action" key (docs/audit-log.md).
AUDIT_FILTER='
import json, sys
for line in sys.stdin:
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    if isinstance(rec, dict) and "action" in rec:
        sys.stdout.write(line)
        sys.stdout.flush()
'
say "starting iron-proxy (audit log: $WORK/audit.log, everything: $WORK/proxy.log)"
OPENAI_API_KEY=sk-real-openai-key-do-not-share SSL_CERT_FILE="$WORK/up-ca.crt" \
  "$PROXY" -config proxy.yaml 2> >(tee -a "$WORK/proxy.log" | python3 -u -c "$AUDIT_FILTER" > "$WORK/audit.log") &
PIDS+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:19090/readyz && break; sleep 0.1; done
"$PROXY" intercept status -config proxy.yaml | sed -n 1,3p   # sed reads it all: no SIGPIPE under pipefail

# The workload: a shell in its own cgroup, with its own resolv.conf pointing into the fake internet.
printf 'nameserver 198.18.250.2\n' > resolv.conf
workload() {
  unshare --mount sh -c "echo \$\$ > '$CG/cgroup.procs'; mount --bind '$WORK/resolv.conf' /etc/resolv.conf; $1"
}
CURL="curl -sS --max-time 10 --cacert $WORK/ca/ca.crt"

say "1. allowed: the workload calls https://api.demo.test/get with no proxy settings"
workload "$CURL -o /dev/null -w 'HTTP %{http_code}\n' https://api.demo.test/get"

say "2. denied: https://blocked.demo.test/ is not in the allowlist"
workload "$CURL -w '\nHTTP %{http_code}\n' https://blocked.demo.test/" || true

say "3. secret swap: the workload sends a placeholder; the upstream receives the real key"
# /headers echoes the request's headers: the upstream's own log shows what it received, and the
# echo the workload gets back has the real key masked (an upstream that reflects a credential
# does not hand it to the workload).
# (The echo's headers are a map; the log's a list of name, value pairs.)
AUTH_OF='import json, sys
h = json.loads(sys.argv[2] if len(sys.argv) > 2 else sys.stdin.read())["headers"]
pairs = h.items() if isinstance(h, dict) else h
print(sys.argv[1], next(v for k, v in pairs if k.lower() == "authorization"))'
workload "$CURL -H 'Authorization: Bearer proxy-openai-abc123' https://api.demo.test/headers" \
  | python3 -c "$AUTH_OF" "workload got back:"
python3 -c "$AUTH_OF" "upstream saw Authorization:" "$(grep '"/headers"' api.log | tail -1)"

say "4. bypass attempts: a direct IP, QUIC/UDP, the metadata service"
workload "$CURL -w 'HTTP %{http_code} (IP literals need a cidrs rule)\n' -o /dev/null http://198.18.250.11/" || true
PROBE='import socket, sys
what, kind, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
try:
    s.connect((host, port)); s.send(b"x"); print(what, "-> sent?!")
except PermissionError:
    print(what, "-> refused in the kernel (EPERM)")
except OSError as e:
    print(what, "->", e.strerror, "(not refused by iron-proxy!)")'
workload "python3 -c '$PROBE' 'UDP 443 (QUIC)' udp 198.18.250.11 443"
# The metadata address is not inside the fake internet, so this probe runs in a network
# namespace of its own with no routes: were the kernel check missing, nothing would leave.
workload "unshare --net python3 -c '$PROBE' 'IMDS 169.254.169.254:80' tcp 169.254.169.254 80"
sleep 0.5

say "audit log (one JSON record per request)"
python3 - "$WORK/audit.log" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    proc = r.get("client", {})
    notes = [t for t in r.get("request_transforms", []) if t.get("annotations")]
    print(f'{r["action"]:6} {r["status_code"]:3} {r["method"]:4} {r["host"]}{r["path"]}  '
          f'by pid={proc.get("pid")} comm={proc.get("comm")} cgroup={proc.get("cgroup")}'
          + (f'  rejected_by={r["rejected_by"]}' if r.get("rejected_by") else "")
          + "".join(f'  {t["name"]}={json.dumps(t["annotations"])}' for t in notes))
EOF
say "the real key never appeared in the workload or the audit log"
if grep -q sk-real-openai "$WORK/audit.log"; then echo "LEAK"; exit 1; else echo "ok: no secret in the audit log"; fi
say "done; cleaning up (detach, cgroup, netns)"
