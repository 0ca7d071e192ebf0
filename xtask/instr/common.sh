# Sourced by newconn.sh and keepalive.sh: the shared setup. Makes a scratch
# directory with an upstream CA and certificate for 127.0.0.1, a MITM CA and a
# proxy config (CONNECT MITM on a free loopback port, allowlist 127.0.0.1),
# starts the Python HTTPS upstream (answers of $body bytes, keep-alive) and the
# proxy under callgrind with instrumentation off, and cleans up on exit.
# Sets: here, work, up_port, tunnel, up, px. Loopback only.
# Needs valgrind, openssl and python3. The caller sets `bin` and `body`.
# With METRICS=1 the proxy also serves metrics (on a free loopback port), so
# that the metrics observer's work per request is counted too. With SECRETS=1
# a `secrets` transform injects a 40-byte key into every request (X-Api-Key),
# so each response is searched for it too: a deployment's usual request.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
up=""; px=""
cleanup() {
  [ -n "$px" ] && kill "$px" 2>/dev/null && wait "$px" 2>/dev/null
  [ -n "$up" ] && kill "$up" 2>/dev/null && wait "$up" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
key up-ca.key; openssl req -x509 -new -key up-ca.key -subj /CN=up-ca -days 2 -out up-ca.pem 2>/dev/null
key up.key; openssl req -new -key up.key -subj /CN=127.0.0.1 -out up.csr 2>/dev/null
printf "subjectAltName=IP:127.0.0.1\n" > ext.cnf
openssl x509 -req -in up.csr -CA up-ca.pem -CAkey up-ca.key -CAcreateserial -days 2 -extfile ext.cnf \
  -out up.pem 2>/dev/null
key mitm-ca.key; openssl req -x509 -new -key mitm-ca.key -subj /CN=mitm-ca -days 2 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" -out mitm-ca.pem 2>/dev/null
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(port); tunnel=$(port)
cat > proxy.yaml <<YAML
proxy:
  tunnel_listen: "127.0.0.1:$tunnel"
  upstream_deny_cidrs: ["169.254.169.254/32"]
tls:
  mode: mitm
  ca_cert: "$work/mitm-ca.pem"
  ca_key: "$work/mitm-ca.key"
transforms:
  - name: allowlist
    config:
      cidrs: ["127.0.0.1/32"]
YAML
if [ "${SECRETS:-0}" = 1 ]; then
  export BENCH_KEY=sk-live_ABCdef0123456789abcdefghijklmnop
  cat >> proxy.yaml <<YAML
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: BENCH_KEY}
          inject:
            header: "X-Api-Key"
          rules:
            - host: "127.0.0.1"
YAML
fi
printf 'log:\n  level: warn\n' >> proxy.yaml
if [ "${METRICS:-0}" = 1 ]; then printf 'metrics:\n  listen: "127.0.0.1:%s"\n' "$(port)" >> proxy.yaml; fi
python3 "$here/upstream.py" "$up_port" "${body:-1024}" & up=$!
SSL_CERT_FILE="$work/up-ca.pem" valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$work/cg.%p" "$bin" --config "$work/proxy.yaml" 2>"$work/stderr" >/dev/null & px=$!
for _ in $(seq 1 240); do ss -ltn | grep -q ":$tunnel " && break; sleep 0.5; done
ss -ltn | grep -q ":$tunnel " || { cat "$work/stderr" >&2; echo "proxy did not start" >&2; exit 1; }

# count: callgrind's instructions since `callgrind_control -i on`, summed over
# the dump files of the proxy's threads; CALLGRIND_OUT=FILE keeps the main dump.
count() {
  callgrind_control -d "$px" >/dev/null 2>&1
  total=$(grep -h '^totals:' "$work"/cg.$px.* | awk '{s+=$2} END {print s}')
  if [ -n "${CALLGRIND_OUT:-}" ]; then cp "$work"/cg.$px.1 "$CALLGRIND_OUT"; fi
}
