#!/bin/sh
# Demo client: five requests through iron-proxy (see the quickstart).
set -u
apk add --no-cache curl >/dev/null 2>&1 || true
# Wait for the proxy to write its CA into the shared volume.
i=0
while [ ! -f /certs/ca.crt ] && [ "$i" -lt 60 ]; do sleep 1; i=$((i + 1)); done
CA="--cacert /certs/ca.crt"

step() { echo; echo "== $1"; }

step "1. Allowed request"
echo "> curl https://httpbin.org/get"
curl -sS $CA https://httpbin.org/get

step "2. Blocked request (expect 403)"
echo "> curl https://example.com/"
curl -sS $CA -o /dev/null -w "status=%{http_code}\n" https://example.com/

step "3. Secret swap in Authorization header"
echo '> curl -H "Authorization: Bearer proxy-openai-abc123" https://httpbin.org/headers'
curl -sS $CA -H "Authorization: Bearer proxy-openai-abc123" https://httpbin.org/headers

step "4. Secret swap in custom header"
echo '> curl -H "X-Internal: proxy-internal-tok" https://httpbin.org/headers'
curl -sS $CA -H "X-Internal: proxy-internal-tok" https://httpbin.org/headers

step "5. Secret swap in query parameter"
echo '> curl "https://httpbin.org/get?token=proxy-openai-abc123&q=hello"'
curl -sS $CA "https://httpbin.org/get?token=proxy-openai-abc123&q=hello"

echo
echo "Done. See the audit log with: docker compose logs proxy"
