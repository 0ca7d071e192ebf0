#!/usr/bin/env bash
# Appends the egress summary to $GITHUB_STEP_SUMMARY (stdout when unset).
# Runs as the runner user: setup.sh leaves the log readable to it, because
# sudo may have been revoked by then.
set -euo pipefail
bin="${IRON_PROXY_BIN:-iron-proxy}"
log="${INPUT_LOG_FILE:-/var/log/iron-proxy.log}"
args=(summary -log-file "$log")
case "${INPUT_SHOW_FULL_PATHS:-false}" in true|True|TRUE|1) args+=(-show-full-paths) ;; esac
if [ -n "${INPUT_SUGGEST_RULES:-}" ]; then args+=(-suggest-rules "$INPUT_SUGGEST_RULES"); fi
if [ ! -r "$log" ]; then
  msg="iron-proxy summary: $log is missing or unreadable; was the iron-proxy action run earlier in this job?"
  echo "::warning::$msg"
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then printf '## iron-proxy egress summary\n\n%s\n' "$msg" >> "$GITHUB_STEP_SUMMARY"; fi
  exit 0
fi
exec "$bin" "${args[@]}"
