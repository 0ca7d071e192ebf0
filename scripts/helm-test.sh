#!/usr/bin/env bash
# Checks the Helm chart in examples/kubernetes/helm/iron-proxy with a real helm:
#   - `helm lint --strict`;
#   - `helm template` with values that mirror the plain manifests renders the
#     same Service, ConfigMap (proxy.yaml), Deployment pod spec and
#     NetworkPolicy as examples/kubernetes/0*.yaml;
#   - every rendered proxy.yaml (defaults, the mirror, warn mode with CIDRs)
#     passes `iron-proxy validate`;
#   - a missing proxyIP or CA secret name fails the render;
#   - the image (packaging/docker/Dockerfile) has the binary as its exec-form
#     entrypoint, so the Deployment's args (and ECS's command) are iron-proxy's
#     flags: they validate the rendered config.
#
#   scripts/helm-test.sh [PATH/TO/iron-proxy]     (helm from scripts/setup-test-env.sh)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
bin="${1:-$target/debug/iron-proxy}"
helm="${IRON_HELM:-${IRON_TOOLS_DIR:-$repo/target/tools}/helm-v3.17.1/helm}"
python="${IRON_TEST_VENV:-$repo/target/test-venv}/bin/python"
chart="$repo/examples/kubernetes/helm/iron-proxy"
manifests="$repo/examples/kubernetes"

say() { echo "helm-test: $*"; }
fail() {
    echo "helm-test: FAILED: $*" >&2
    exit 1
}
[[ -x "$helm" ]] || fail "no helm at $helm (scripts/setup-test-env.sh installs it)"
[[ -x "$bin" ]] || fail "no iron-proxy binary at $bin (cargo build -p iron-proxy)"
[[ -x "$python" ]] || fail "no test virtualenv at $python (scripts/setup-test-env.sh creates it)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$helm" lint --strict "$chart" >"$work/lint.txt" 2>&1 || fail "helm lint: $(cat "$work/lint.txt")"
say "ok: helm lint --strict"

# Values that make the chart render what the numbered manifests say.
cat >"$work/mirror.yaml" <<'EOF'
upstreamSecrets:
  secretName: iron-proxy-upstream-secrets
extraTransforms:
  - name: secrets
    config:
      secrets:
        - source:
            type: env
            var: HTTPBIN_API_KEY
          proxy_value: "proxy-httpbin-token"
          match_headers: ["Authorization"]
          require: true
          rules:
            - host: "httpbin.org"
EOF
cat >"$work/warn.yaml" <<'EOF'
allowlist:
  warn: true
  domains: ["*.example.com", "api.openai.com"]
  cidrs: ["10.0.0.0/8"]
networkPolicy:
  enabled: false
EOF

render() { "$helm" template iron-proxy "$chart" --namespace iron-proxy "$@"; }
render >"$work/default.yaml"
render -f "$work/mirror.yaml" >"$work/mirror-rendered.yaml"
render -f "$work/warn.yaml" >"$work/warn-rendered.yaml"

# Compares the mirror rendering with the manifests and writes each rendered proxy.yaml out.
"$python" - "$work" "$manifests" <<'PY'
import glob, os, sys
import yaml

work, manifests = sys.argv[1], sys.argv[2]

def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def by_kind(objs):
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}

rendered = by_kind(docs(os.path.join(work, "mirror-rendered.yaml")))
plain = by_kind(
    o for p in sorted(glob.glob(os.path.join(manifests, "0*.yaml"))) for o in docs(p)
    if o["kind"] != "Namespace" and not o["metadata"]["name"].startswith("iron-proxy-workload")
)
problems = []
if set(rendered) != set(plain):
    problems.append(f"objects differ: chart {sorted(rendered)} vs manifests {sorted(plain)}")
for key in sorted(set(rendered) & set(plain)):
    r, p = rendered[key], plain[key]
    if key[0] == "ConfigMap":
        r, p = yaml.safe_load(r["data"]["proxy.yaml"]), yaml.safe_load(p["data"]["proxy.yaml"])
    elif key[0] == "Deployment":
        for o in (r, p):
            o["spec"]["template"]["metadata"] = None  # the chart adds labels and a checksum
            o["metadata"]["labels"] = None
        r, p = r["spec"], p["spec"]
        # The image is a value; the manifests hard-code the same default.
    else:
        r, p = r["spec"], p["spec"]
    if r != p:
        problems.append(f"{key}: chart renders\n{yaml.safe_dump(r)}\nmanifests say\n{yaml.safe_dump(p)}")
if problems:
    sys.exit("helm-test: FAILED: the chart does not match the manifests:\n" + "\n".join(problems))

for name in ("default", "mirror-rendered", "warn-rendered"):
    cms = [o for o in docs(os.path.join(work, f"{name}.yaml")) if o["kind"] == "ConfigMap"]
    if len(cms) != 1:
        sys.exit(f"helm-test: FAILED: {name}: expected one ConfigMap, got {len(cms)}")
    with open(os.path.join(work, f"{name}.proxy.yaml"), "w") as f:
        f.write(cms[0]["data"]["proxy.yaml"])
PY
say "ok: helm template with mirroring values equals examples/kubernetes/0*.yaml"

# The rendering names the CA where the pod mounts its Secret; validate answers whether the
# proxy would start here, so a CA made here stands in for it (IRON_TLS_CA_* override the paths).
"$bin" generate-ca -outdir "$work/ca" >/dev/null || fail "generate-ca for the validate checks"
export IRON_TLS_CA_CERT="$work/ca/ca.crt" IRON_TLS_CA_KEY="$work/ca/ca.key"
for name in default mirror-rendered warn-rendered; do
    "$bin" validate -config "$work/$name.proxy.yaml" >"$work/validate.txt" 2>&1 ||
        fail "the $name rendering's proxy.yaml does not validate: $(cat "$work/validate.txt")"
done
grep -q 'warn: true' "$work/warn-rendered.proxy.yaml" || fail "allowlist.warn did not reach the config"
grep -q 'NetworkPolicy' "$work/warn-rendered.yaml" && fail "networkPolicy.enabled=false still renders one"
say "ok: every rendered proxy.yaml passes iron-proxy validate"

# The image's contract (packaging/docker/Dockerfile): the entrypoint is the binary in exec
# form, so the Deployment's args (and ECS's command, the compose file's command) are
# iron-proxy's own flags; run them, with the config path pointed at the rendering.
"$python" - "$repo" "$work" <<'PY' >"$work/args.txt" || fail "image contract: $(cat "$work/args.txt")"
import json, os, sys
import yaml

repo, work = sys.argv[1], sys.argv[2]
stages, current = [], None
with open(os.path.join(repo, "packaging/docker/Dockerfile")) as f:
    for line in f:
        word, _, rest = line.strip().partition(" ")
        if word == "FROM":
            current = {}
            stages.append(current)
        elif word in ("ENTRYPOINT", "CMD"):
            try:
                current[word] = json.loads(rest)
            except ValueError:
                sys.exit(f"{word} {rest} is not in exec (JSON) form: a shell would swallow the arguments")
final = stages[-1]
if final.get("ENTRYPOINT") != ["/usr/local/bin/iron-proxy"]:
    sys.exit(f"the image's ENTRYPOINT is {final.get('ENTRYPOINT')}, not the binary")
cmd = final.get("CMD")
if cmd != ["-config", "/etc/iron-proxy/proxy.yaml"]:
    sys.exit(f"the image's CMD is {cmd}")
with open(os.path.join(work, "mirror-rendered.yaml")) as f:
    deps = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "Deployment"]
args = deps[0]["spec"]["template"]["spec"]["containers"][0]["args"]
if args != cmd:
    sys.exit(f"the Deployment's args {args} differ from the image's CMD {cmd}")
with open(os.path.join(repo, "examples/docker-compose/docker-compose.yml")) as f:
    proxy = yaml.safe_load(f)["services"]["proxy"]
if proxy["build"]["dockerfile"] != "packaging/docker/Dockerfile" or proxy["command"] != cmd:
    sys.exit(f"the compose demo does not run the image's command: {proxy}")
print("\n".join(a.replace("/etc/iron-proxy/proxy.yaml", os.path.join(work, "mirror-rendered.proxy.yaml")) for a in args))
PY
mapfile -t image_args <"$work/args.txt"
"$bin" validate "${image_args[@]}" >"$work/validate.txt" 2>&1 ||
    fail "iron-proxy validate with the image's arguments (${image_args[*]}): $(cat "$work/validate.txt")"
grep -q '^exec iron-proxy "\$@"$' "$repo/examples/docker-compose/entrypoint.sh" ||
    fail "the compose demo's entrypoint.sh does not pass the container's arguments on"
say "ok: the image runs the binary with the container's arguments (${image_args[*]})"

render --set proxyIP= >/dev/null 2>&1 && fail "rendering without proxyIP succeeded"
render --set ca.secretName= >/dev/null 2>&1 && fail "rendering without ca.secretName succeeded"
say "ok: missing required values fail the render"
say "passed"
