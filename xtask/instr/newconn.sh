#!/usr/bin/env bash
# newconn.sh BIN [N]: user-space instructions iron-proxy binary BIN executes per
# new client connection (CONNECT, TLS handshake with a cached leaf, one 1 KiB
# GET over a pooled upstream connection), counted by callgrind.
#
# Instruction counts do not depend on what else the machine is doing, so two
# builds compare on a noisy guest where CPU-time A/B runs do not (see
# docs/benchmarks.md, round 19). Kernel time is not counted; the CPUs' crypto
# extensions (SHA-NI, ADX) are hidden from programs under valgrind, so
# aws-lc's generic code runs and its share is larger than on hardware.
# Loopback only. Needs valgrind, openssl and python3.
set -euo pipefail
bin=$(realpath "$1"); n=${2:-200}
. "$(dirname "$0")/common.sh"
python3 "$here/client.py" newconn "$tunnel" "$up_port" 20 >/dev/null   # leaf minted, upstream pooled
callgrind_control -i on "$px" >/dev/null 2>&1
python3 "$here/client.py" newconn "$tunnel" "$up_port" "$n" >/dev/null
count
echo "$bin: $total instructions for $n connections, $((total / n)) per connection"
