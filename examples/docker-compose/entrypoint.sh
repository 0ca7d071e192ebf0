#!/bin/sh
# Generates the CA into the shared /certs volume on first start (the client
# container trusts it from there), then runs the proxy.
set -eu
if [ ! -f /certs/ca.crt ]; then
  iron-proxy generate-ca -outdir /certs -name "iron-proxy demo CA" -expiry-hours 720
  chmod 0644 /certs/ca.crt
fi
exec iron-proxy -config /etc/iron-proxy/proxy.yaml
