#!/bin/sh
# The demo's proxy: generates the CA into the shared /certs volume on first
# start (the client container trusts it from there), then runs iron-proxy with
# the container's arguments (the image's default: -config
# /etc/iron-proxy/proxy.yaml, this directory's proxy.yaml mounted there).
set -eu
if [ ! -f /certs/ca.crt ]; then
  iron-proxy generate-ca -outdir /certs -name "iron-proxy demo CA" -expiry-hours 720
  chmod 0644 /certs/ca.crt
fi
exec iron-proxy "$@"
