#!/usr/bin/env bash
# keepalive.sh BIN [N] [SIZE]: user-space instructions iron-proxy binary BIN
# executes per keep-alive request (a GET with a SIZE-byte answer, default
# 1024, on one client connection already through CONNECT + MITM TLS, over a
# pooled upstream connection), counted by callgrind. 50 warm-up requests run
# before counting starts; the N counted ones (default 500) follow.
#
# As newconn.sh: instruction counts are load-proof, kernel time is not
# counted, and aws-lc runs its generic code under valgrind (AES-GCM and GHASH
# without AES-NI/PCLMUL weigh far more than on the hardware, more so at 64 KiB).
# Loopback only. Needs valgrind, openssl and python3.
set -euo pipefail
bin=$(realpath "$1"); n=${2:-500}; body=${3:-1024}
. "$(dirname "$0")/common.sh"
python3 "$here/client.py" keepalive "$tunnel" "$up_port" 50 "$n" & cl=$!
wait_for() { for _ in $(seq 1 1200); do [ -e "$1" ] && return; sleep 0.1; done; echo "client stuck before $1" >&2; exit 1; }
wait_for warm
callgrind_control -i on "$px" >/dev/null 2>&1
touch go
wait_for done
callgrind_control -i off "$px" >/dev/null 2>&1
count
touch stop; wait "$cl"
echo "$bin: $total instructions for $n requests of $body bytes, $((total / n)) per request"
