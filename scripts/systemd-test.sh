#!/usr/bin/env bash
# Live systemd test of the packaged unit: boots a real systemd as PID 1 in a
# systemd-nspawn container and drives `iron-proxy init` there.
#
#   scripts/systemd-test.sh [PATH/TO/iron-proxy_*.deb]     (root; run by scripts/test.sh)
#
# What it proves, in a container with its own network namespace whose cgroup
# subtree this script created:
#   - the .deb installs without enabling or starting anything;
#   - without interception (the packaged config) the unit runs where
#     /sys/fs/bpf does not exist;
#   - `iron-proxy init -allow allowed.test -intercept-user app` (DNS redirected by default)
#     enables and starts the unit and waits for /readyz; the unit is active;
#   - Type=notify: `systemctl restart` returns only after READY=1, and at that
#     moment /readyz answers and the eBPF links are pinned;
#   - an intercepted user's curl reaches an allowed name, is refused (403) for
#     another, and root (not intercepted) goes direct; the user's DNS is
#     answered by the proxy (127.0.0.1), and following that answer leads to
#     the proxy, not to EPERM; a user namespace mapped to the user's
#     subordinate uids (newuidmap) is intercepted too;
#   - `systemctl reload` (SIGHUP) applies a changed allowlist; a broken config
#     is refused by ExecReload's reload and by ExecStartPre's validate;
#   - why the service did not start is in `journalctl -u iron-proxy` (validate's
#     error from ExecStartPre; the proxy's own reason when validate passes but
#     a transform cannot start), and every line of /var/log/iron-proxy.log
#     still parses as JSON, the proxy's reason there as an error record;
#   - logrotate with the packaged config: the proxy reopens its log file on
#     SIGUSR1 (postrotate), records before and after in the right files;
#   - `systemctl stop` leaves interception in force (fail closed: connection
#     refused), `iron-proxy intercept detach` ends it;
#   - `systemd-analyze security iron-proxy` (exposure printed), `dpkg --purge`.
#
# The root filesystem is a minimal Debian tree made by mmdebstrap and cached
# under $CARGO_TARGET_DIR/systemd-test (or target/), booted with
# --volatile=overlay so runs never change it. The container gets a private
# network namespace (traffic stays on its loopback; the fake upstream is
# 198.18.0.10 on that loopback), a private bpffs and, through a cgroup
# namespace, the subtree of a cgroup created here: the programs attach there,
# never to the host's root cgroup. Everything is torn down on exit, on
# failure too: the container is killed by PID, its cgroups removed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
deb="${1:-$(ls -t "$target"/package/iron-proxy_*.deb 2>/dev/null | head -1)}"
cache="$target/systemd-test"
# Packages of the tree; changing the list makes a new cached tree.
tree_packages="systemd,systemd-sysv,dbus,curl,ca-certificates,busybox,iproute2,uidmap,logrotate"
machine="iron-test-$$"
user=app
upstream_ip=198.18.0.10

say() { echo "systemd-test: $*"; }
fail() {
    echo "systemd-test: FAILED: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root"
[[ -f "$deb" ]] || fail "no .deb given and none in $target/package (run cargo xtask package first)"
deb="$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"
for tool in systemd-nspawn mmdebstrap nsenter; do
    command -v "$tool" >/dev/null || fail "$tool is missing (scripts/setup-test-env.sh installs it)"
done

# ---- the root filesystem (cached) ------------------------------------------
# shellcheck disable=SC1091
. /etc/os-release
suite="${VERSION_CODENAME:?/etc/os-release has no VERSION_CODENAME}"
[[ "${ID:-}" == debian ]] || fail "the container tree is built from the Debian archive; this host is ${ID:-unknown}"
key="$(echo "$suite $tree_packages v1" | sha256sum | cut -c1-12)"
tree="$cache/tree-$key"
mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8
if [[ ! -x "$tree/lib/systemd/systemd" ]]; then
    say "building the container tree ($suite, minbase + $tree_packages) into $tree"
    rm -rf "$tree.tmp"
    mmdebstrap --quiet --variant=minbase --include="$tree_packages" "$suite" "$tree.tmp"
    mv "$tree.tmp" "$tree"
else
    say "using cached container tree $tree"
fi

# ---- the container ----------------------------------------------------------
cg2="$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)"
[[ -n "$cg2" ]] || fail "no cgroup v2 mount in /proc/self/mountinfo"
cg="$cg2/iron-systemd-test-$$"
log="$cache/console-$$.log"
nspawn_pid=""
leader=""

teardown() {
    local rc=$?
    set +e
    if [[ -n "$nspawn_pid" ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" # nspawn asks the container's systemd to power off
        for _ in $(seq 150); do
            kill -0 "$nspawn_pid" 2>/dev/null || break
            sleep 0.2
        done
    fi
    if [[ -d "$cg" ]]; then
        # Whatever is left in our subtree (only processes this script started).
        if [[ -f "$cg/cgroup.kill" ]]; then
            echo 1 >"$cg/cgroup.kill" 2>/dev/null
        else
            find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
        fi
    fi
    [[ -n "$nspawn_pid" ]] && wait "$nspawn_pid" 2>/dev/null
    if [[ -d "$cg" ]]; then
        for _ in $(seq 50); do
            find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
            [[ -d "$cg" ]] || break
            sleep 0.2
        done
        [[ -d "$cg" ]] && echo "systemd-test: WARNING: could not remove $cg" >&2
    fi
    rm -rf "/run/systemd/nspawn/propagate/$machine" 2>/dev/null
    if [[ $rc -ne 0 ]]; then
        echo "systemd-test: last lines of the container console ($log):" >&2
        tail -n 40 "$log" >&2 2>/dev/null
    else
        rm -f "$log"
    fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

mkdir "$cg"
say "booting $tree in a container (cgroup $cg)"
(
    # Into our own cgroup first: the container's cgroup namespace is rooted there.
    echo "$BASHPID" >"$cg/cgroup.procs"
    export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
    exec systemd-nspawn --quiet --boot --directory="$tree" --volatile=overlay \
        --machine="$machine" --register=no --keep-unit --private-network \
        --capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN --system-call-filter=bpf \
        --bind-ro="$deb:/iron-test/iron-proxy.deb" \
        --console=read-only
) </dev/null >"$log" 2>&1 &
nspawn_pid=$!

for _ in $(seq 300); do
    leader="$(cat "/proc/$nspawn_pid/task/$nspawn_pid/children" 2>/dev/null | awk '{print $1}')"
    [[ -n "$leader" && "$(cat "/proc/$leader/comm" 2>/dev/null)" == systemd ]] && break
    kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited during boot"
    leader=""
    sleep 0.1
done
[[ -n "$leader" ]] || fail "the container's init did not start"

# Runs a command inside the container (all its namespaces), as root, outside any unit.
in_ct() { nsenter --target "$leader" --all env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
# Runs a command as a transient unit, so it lives in the container's cgroup tree.
as_unit() { in_ct systemd-run --quiet --wait --pipe --collect "$@"; }
# curl's HTTP status (or "exit N" when curl failed) for URL, run as USER in a unit.
status_as() {
    local who=$1 url=$2 out
    if out=$(as_unit -p "User=$who" -- curl -sS -m 10 -o /dev/null -w '%{http_code}' "$url" 2>/dev/null); then
        echo "$out"
    else
        echo "exit $?"
    fi
}
expect_status() {
    local who=$1 url=$2 want=$3 got
    got="$(status_as "$who" "$url")"
    [[ "$got" == "$want" ]] || fail "curl $url as $who: expected $want, got $got"
    say "ok: curl $url as $who -> $got"
}
unit_prop() { in_ct systemctl show --value -p "$2" "$1"; }
# Fails unless every line of the unit's log file is a JSON object (checked on the host: the
# container has no python3).
log_is_json_lines() {
    local why
    why="$(in_ct cat /var/log/iron-proxy.log | python3 -c '
import json, sys
for n, line in enumerate(sys.stdin, 1):
    try:
        ok = isinstance(json.loads(line), dict)
    except ValueError:
        ok = False
    if not ok:
        sys.exit(f"line {n} is not a JSON object: {line!r}")
' 2>&1)" || fail "/var/log/iron-proxy.log ($1): $why"
}
# Waits until `journalctl -u iron-proxy` has a line containing $1 (journald takes the
# lines a moment after the process wrote them); fails naming $2 if it never does.
expect_journal() {
    for _ in $(seq 100); do
        in_ct journalctl -u iron-proxy --no-pager -o cat | grep -qF -- "$1" && return 0
        sleep 0.1
    done
    fail "$2: the journal does not say \"$1\": $(in_ct journalctl -u iron-proxy --no-pager -o cat -n 20)"
}

# systemctl needs PID 1's private socket, which appears a moment into boot.
for _ in $(seq 300); do
    in_ct test -S /run/systemd/private 2>/dev/null && break
    kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited during boot"
    sleep 0.1
done
state="$(timeout 120 nsenter --target "$leader" --all systemctl is-system-running --wait || true)"
case "$state" in
running) ;;
degraded) say "boot degraded; failed units: $(in_ct systemctl --failed --plain --no-legend | tr '\n' ' ')" ;;
*) fail "container did not boot: is-system-running says '$state'" ;;
esac
say "container booted ($state), leader pid $leader"

# ---- the world inside -------------------------------------------------------
in_ct ip addr add "$upstream_ip/32" dev lo
in_ct sh -c "echo '$upstream_ip allowed.test denied.test' >>/etc/hosts"
in_ct mkdir -p /srv/www
in_ct sh -c 'echo "hello from the fake upstream" >/srv/www/index.html'
in_ct systemd-run --quiet --unit=fake-upstream -p Type=exec \
    busybox httpd -f -p "$upstream_ip:80" -h /srv/www
in_ct useradd --create-home "$user"
expect_status root "http://allowed.test/" 200

# ---- install ----------------------------------------------------------------
in_ct dpkg -i /iron-test/iron-proxy.deb >/dev/null
[[ "$(unit_prop iron-proxy.service UnitFileState)" == disabled ]] ||
    fail "the package enabled the unit: $(unit_prop iron-proxy.service UnitFileState)"
[[ "$(unit_prop iron-proxy.service ActiveState)" == inactive ]] || fail "the package started the unit"
say "ok: dpkg -i installed the unit, disabled and inactive"
in_ct systemd-analyze verify iron-proxy.service || fail "systemd-analyze verify iron-proxy.service"

# Without interception the unit needs no bpffs; here /sys/fs/bpf does not even exist.
readyz() { in_ct curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9090/readyz || true; }
in_ct test ! -e /sys/fs/bpf || fail "/sys/fs/bpf exists before the test made it"
in_ct iron-proxy generate-ca -outdir /etc/iron-proxy >/dev/null
in_ct systemctl start iron-proxy ||
    fail "the packaged config does not start without bpffs: $(in_ct systemctl status --no-pager iron-proxy)"
[[ "$(readyz)" == 200 ]] || fail "/readyz does not answer 200 for the packaged config"
in_ct systemctl stop iron-proxy
in_ct rm /etc/iron-proxy/ca.crt /etc/iron-proxy/ca.key
say "ok: the packaged config (no interception) runs without /sys/fs/bpf"

# What a host's systemd does at boot: bpffs at /sys/fs/bpf (nspawn's /sys is a
# read-only tmpfs without that directory). A fresh bpffs instance, private to
# the container: its pins go away with the container.
in_ct sh -c 'mount -o remount,rw /sys && mkdir /sys/fs/bpf && mount -o remount,ro /sys &&
    mount -t bpf -o mode=0700 bpf /sys/fs/bpf'

# ---- init -------------------------------------------------------------------
in_ct iron-proxy init -allow allowed.test -intercept-user "$user" ||
    fail "iron-proxy init (journal: $(in_ct journalctl -u iron-proxy --no-pager -n 30))"
[[ "$(in_ct systemctl is-active iron-proxy)" == active ]] || fail "iron-proxy is not active after init"
[[ "$(in_ct systemctl is-enabled iron-proxy)" == enabled ]] || fail "iron-proxy is not enabled after init"
say "ok: init enabled and started the unit"

pid_first="$(unit_prop iron-proxy MainPID)"
second="$(in_ct iron-proxy init -allow allowed.test -intercept-user "$user")" || fail "a second init failed"
[[ "$(unit_prop iron-proxy MainPID)" == "$pid_first" ]] || fail "a second, identical init restarted the service"
grep -q 'already running' <<<"$second" || fail "a second init did not say the service was already running: $second"
say "ok: a second identical init changes nothing"

# On an AMD CPU with FSRM under glibc before 2.40 the proxy executes itself again with glibc's
# REP MOVSB threshold raised (proxy/src/rep_movsb.rs). Under the unit (root, permitted = bounding
# set, ambient capabilities, NoNewPrivileges) that must still happen, in the same MainPID.
ct_glibc="$(in_ct getconf GNU_LIBC_VERSION | awk '{print $2}')"
if grep -q '^vendor_id.*AuthenticAMD' /proc/cpuinfo && grep -qw fsrm /proc/cpuinfo &&
    [[ "$(printf '%s\n2.40\n' "$ct_glibc" | sort -V | head -1)" != 2.40 ]]; then
    main_env="$(in_ct cat "/proc/$pid_first/environ" | tr '\0' '\n')"
    # The mark holds the name the process had; only these two entries are shown (the unit's
    # environment also holds the management API key).
    grep -qx 'IRON_PROXY_REEXECUTED=iron-proxy' <<<"$main_env" &&
        grep -qx 'GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=4194304' <<<"$main_env" ||
        fail "the unit's proxy did not execute itself again with the REP MOVSB threshold (glibc $ct_glibc): $(grep -E '^(GLIBC_TUNABLES|IRON_PROXY_REEXECUTED)=' <<<"$main_env")"
    # Executed again through /proc/self/exe, it still goes by its name (ps, pgrep, the journal).
    main_comm="$(in_ct cat "/proc/$pid_first/comm")"
    [[ "$main_comm" == iron-proxy ]] || fail "the unit's proxy is named '$main_comm' after executing itself again"
    say "ok: under the unit the proxy runs with glibc's REP MOVSB threshold raised (AMD, FSRM, glibc $ct_glibc)"
else
    say "not checked: REP MOVSB threshold (not an AMD CPU with FSRM under glibc before 2.40; glibc $ct_glibc)"
fi

[[ "$(readyz)" == 200 ]] || fail "/readyz does not answer 200 after init"

# Type=notify: restart blocks until READY=1, so right after it returns the
# listeners answer and the links are pinned, with no waiting.
in_ct systemctl restart iron-proxy
[[ "$(readyz)" == 200 ]] || fail "restart returned before /readyz was up (READY=1 too early)"
in_ct iron-proxy intercept status -config /etc/iron-proxy/proxy.yaml >/dev/null ||
    fail "restart returned before interception was attached: $(in_ct iron-proxy intercept status -config /etc/iron-proxy/proxy.yaml 2>&1)"
[[ -n "$(in_ct ls /sys/fs/bpf/iron-proxy)" ]] || fail "no pins under /sys/fs/bpf/iron-proxy"
say "ok: READY=1 came after listeners and interception"

# Where the programs are: in the container's cgroup subtree (ours), not the host's root.
if command -v bpftool >/dev/null; then
    ours="$(bpftool cgroup show "$cg/payload" 2>/dev/null | awk 'NR > 1 { print $1 }' | sort)"
    [[ -n "$ours" ]] || fail "no programs attached under $cg/payload"
    at_root="$(bpftool cgroup show "$cg2" 2>/dev/null | awk 'NR > 1 { print $1 }' | sort)"
    [[ -z "$(comm -12 <(echo "$ours") <(echo "$at_root"))" ]] ||
        fail "programs of the container are attached to the host's root cgroup $cg2"
    say "ok: programs attached under $cg/payload, none of them at the host root"
fi

# ---- traffic ----------------------------------------------------------------
expect_status "$user" "http://allowed.test/" 200
expect_status "$user" "http://denied.test/" 403
expect_status "$user" "http://$upstream_ip/" 403
expect_status root "http://denied.test/" 200
# init redirects DNS by default when it intercepts: the user's lookups of names /etc/hosts
# does not know go to the proxy's DNS server, whatever resolv.conf names, and get 127.0.0.1
# (inside the default deny list): a connection there still reaches the proxy, which judges
# it by name.
got="$(as_unit -p "User=$user" -- getent hosts viadns.test 2>&1 || true)"
[[ "$got" == "127.0.0.1"*"viadns.test" ]] || fail "getent hosts viadns.test as $user: expected 127.0.0.1, got '$got'"
expect_status "$user" "http://viadns.test/" 403
in_ct grep -q '"host":"viadns.test"' /var/log/iron-proxy.log || fail "no audit record for viadns.test"
say "ok: the intercepted user's DNS is answered by the proxy, and its answer leads to the proxy"
in_ct grep -q '"host":"allowed.test"' /var/log/iron-proxy.log || fail "no audit record for allowed.test"
uid="$(in_ct id -u "$user")"
in_ct grep '"host":"denied.test"' /var/log/iron-proxy.log | grep -q "\"uid\":$uid" ||
    fail "the audit record for denied.test does not name uid $uid"
say "ok: audit records name the intercepted user"

# useradd gave the user subordinate uids (/etc/subuid); through the setuid newuidmap it can run
# processes as them in a user namespace. They are intercepted with it: denied.test is refused,
# not reached directly as uid 100000+.
in_ct grep -q "^$user:" /etc/subuid || fail "useradd gave $user no /etc/subuid range"
sub_start="$(in_ct awk -F: -v u="$user" '$1 == u { print $2; exit }' /etc/subuid)"
# --map-auto maps the first subordinate block to uids 0..; --setuid 0 then runs curl as the
# first subordinate uid (not as the user's own uid, which --map-root-user would map).
got="$(as_unit -p "User=$user" -- unshare --map-auto --setuid 0 --setgid 0 \
    curl -sS -m 10 -o /dev/null -w '%{http_code}' http://denied.test/subuid 2>&1 || true)"
[[ "$got" == 403 ]] || fail "curl http://denied.test/subuid as $user's subordinate uid: expected 403, got '$got'"
in_ct grep '"path":"/subuid"' /var/log/iron-proxy.log | grep -q "\"uid\":$sub_start[,}]" ||
    fail "the audit record for /subuid does not name subordinate uid $sub_start: $(in_ct grep '"path":"/subuid"' /var/log/iron-proxy.log)"
say "ok: the user's subordinate uids (uid $sub_start in a user namespace, through newuidmap) are intercepted too"

# ---- reload -----------------------------------------------------------------
reloads() { in_ct grep -c 'reload' /var/log/iron-proxy.log || true; }
in_ct sed -i 's/- "allowed.test"/- "allowed.test"\n        - "denied.test"/' /etc/iron-proxy/proxy.yaml
in_ct grep -q '"denied.test"' /etc/iron-proxy/proxy.yaml || fail "could not edit proxy.yaml"
in_ct systemctl reload iron-proxy
# SIGHUP reloads asynchronously (systemd 252 has no Type=notify-reload): wait for the effect.
for _ in $(seq 100); do
    [[ "$(status_as "$user" http://denied.test/)" == 200 ]] && break
    sleep 0.1
done
expect_status "$user" "http://denied.test/" 200
pid_before="$(unit_prop iron-proxy MainPID)"
say "ok: systemctl reload applied the new allowlist (same MainPID $pid_before)"

in_ct sh -c 'echo "transforms: [oops" >>/etc/iron-proxy/proxy.yaml'
in_ct systemctl reload iron-proxy
expect_status "$user" "http://denied.test/" 200
[[ "$(unit_prop iron-proxy MainPID)" == "$pid_before" ]] || fail "a broken reload replaced the process"
if in_ct systemctl restart iron-proxy 2>/dev/null; then fail "restart with a broken config succeeded"; fi
status="$(in_ct systemctl status --no-pager --lines=0 iron-proxy || true)"
grep -q 'ExecStartPre=.*validate.*status=[1-9]' <<<"$status" ||
    fail "the broken config was not stopped by ExecStartPre: $status"
expect_status "$user" "http://allowed.test/" "exit 7"
say "ok: a broken config is refused by reload and by ExecStartPre; interception stays closed"
# validate writes to the journal (stdout), not into the JSON-lines log file (stderr).
expect_journal "/etc/iron-proxy/proxy.yaml: invalid (1 error(s))" "ExecStartPre's validate"
log_is_json_lines "after ExecStartPre refused a broken config"
say "ok: journalctl -u iron-proxy names the config error; the log file is still all JSON lines"
in_ct sed -i '$d' /etc/iron-proxy/proxy.yaml
in_ct systemctl start iron-proxy
expect_status "$user" "http://allowed.test/" 200

# A config plain validate passes (an unset key variable is only a warning there) but
# `validate -preflight`, the unit's ExecStartPre, refuses: the proxy would not start here.
# Run by hand, with the variables the unit's EnvironmentFile= gives it.
validate_as_the_unit() {
    in_ct sh -c 'set -a; . /etc/iron-proxy/iron-proxy.env; set +a; exec iron-proxy validate "$@"' sh "$@"
}
in_ct cp /etc/iron-proxy/proxy.yaml /etc/iron-proxy/proxy.yaml.good
in_ct sed -i 's/^transforms:$/transforms:\n  - name: judge\n    config:\n      name: guard\n      prompt: "Deny all."\n      rules: [{host: nothing.test}]\n      provider: {type: openai, model: m, api_key_env: IRON_SYSTEMD_TEST_UNSET_KEY}/' \
    /etc/iron-proxy/proxy.yaml
in_ct grep -q IRON_SYSTEMD_TEST_UNSET_KEY /etc/iron-proxy/proxy.yaml || fail "could not add the judge to proxy.yaml"
in_ct iron-proxy validate -config /etc/iron-proxy/proxy.yaml >/dev/null 2>&1 ||
    fail "plain validate refuses the config with the judge: $(in_ct iron-proxy validate -config /etc/iron-proxy/proxy.yaml 2>&1)"
validate_as_the_unit -preflight -config /etc/iron-proxy/proxy.yaml.good >/dev/null 2>&1 ||
    fail "validate -preflight refuses the good config: $(validate_as_the_unit -preflight -config /etc/iron-proxy/proxy.yaml.good 2>&1)"
if validate_as_the_unit -preflight -config /etc/iron-proxy/proxy.yaml >/dev/null 2>&1; then
    fail "validate -preflight accepts a judge whose key variable is unset"
fi
if in_ct systemctl restart iron-proxy 2>/dev/null; then fail "restart with a judge whose key is unset succeeded"; fi
expect_journal "error: transforms[0].config.provider.api_key_env: environment variable IRON_SYSTEMD_TEST_UNSET_KEY is not set" \
    "ExecStartPre's validate -preflight"
log_is_json_lines "after ExecStartPre -preflight refused the config"
say "ok: ExecStartPre (validate -preflight) refuses what the proxy would not start with, and says so in the journal"
in_ct cp /etc/iron-proxy/proxy.yaml.good /etc/iron-proxy/proxy.yaml
in_ct systemctl reset-failed iron-proxy 2>/dev/null || true

# A config -preflight passes (it binds nothing) but the proxy refuses at start: the metrics
# listener on the fake upstream's address, which is taken. The proxy's own reason, in the
# journal and as a JSON record in the log file.
in_ct sed -i "/^metrics:\$/,/^\$/ s/^  listen: .*/  listen: \"$upstream_ip:80\"/" /etc/iron-proxy/proxy.yaml
in_ct grep -q "listen: \"$upstream_ip:80\"" /etc/iron-proxy/proxy.yaml || fail "could not move metrics.listen"
validate_as_the_unit -preflight -config /etc/iron-proxy/proxy.yaml >/dev/null 2>&1 ||
    fail "validate -preflight refuses the config: $(validate_as_the_unit -preflight -config /etc/iron-proxy/proxy.yaml 2>&1)"
if in_ct systemctl restart iron-proxy 2>/dev/null; then fail "restart with metrics.listen on a taken address succeeded"; fi
why="metrics.listen: binding $upstream_ip:80: Address already in use"
expect_journal "$why" "the proxy's start-up failure"
log_is_json_lines "after the proxy refused to start"
in_ct grep -F -- "$why" /var/log/iron-proxy.log | grep -q '"level":"error"' ||
    fail "no error record in /var/log/iron-proxy.log says \"$why\": $(in_ct tail -n 5 /var/log/iron-proxy.log)"
say "ok: a proxy that refuses to start says why in the journal, and as a JSON record in the log file"
in_ct mv /etc/iron-proxy/proxy.yaml.good /etc/iron-proxy/proxy.yaml
in_ct systemctl reset-failed iron-proxy 2>/dev/null || true
in_ct systemctl restart iron-proxy
expect_status "$user" "http://allowed.test/" 200

# ---- log rotation -------------------------------------------------------------
# The packaged logrotate config: rename, create, then SIGUSR1 to the main process, which
# reopens the path. Records before are in the rotated file, records after in the new one.
in_ct sh -c 'echo before >/srv/www/before-rotation && echo after >/srv/www/after-rotation'
expect_status "$user" "http://allowed.test/before-rotation" 200
for _ in $(seq 50); do
    in_ct grep -q '"path":"/before-rotation"' /var/log/iron-proxy.log && break
    sleep 0.1
done
in_ct logrotate -f /etc/logrotate.d/iron-proxy || fail "logrotate -f /etc/logrotate.d/iron-proxy failed"
in_ct test -f /var/log/iron-proxy.log.1 || fail "logrotate made no /var/log/iron-proxy.log.1"
for _ in $(seq 100); do
    in_ct grep -q 'reopened the log file' /var/log/iron-proxy.log 2>/dev/null && break
    sleep 0.1
done
in_ct grep -q 'reopened the log file' /var/log/iron-proxy.log ||
    fail "the proxy did not reopen /var/log/iron-proxy.log after logrotate: $(in_ct tail -n 3 /var/log/iron-proxy.log.1)"
expect_status "$user" "http://allowed.test/after-rotation" 200
for _ in $(seq 50); do
    in_ct grep -q '"path":"/after-rotation"' /var/log/iron-proxy.log && break
    sleep 0.1
done
in_ct grep -q '"path":"/after-rotation"' /var/log/iron-proxy.log || fail "no record in the new log file"
in_ct grep -q '"path":"/before-rotation"' /var/log/iron-proxy.log.1 || fail "the rotated file lost its records"
if in_ct grep -q '"path":"/after-rotation"' /var/log/iron-proxy.log.1; then
    fail "a record after the rotation went to the rotated file"
fi
log_is_json_lines "after logrotate"
say "ok: logrotate with the packaged config; the proxy reopened its log on SIGUSR1, no record lost"

# ---- security score -----------------------------------------------------------
exposure="$(in_ct systemd-analyze security --no-pager iron-proxy.service | tail -n 1)"
say "systemd-analyze security iron-proxy.service: $exposure"

# ---- stop, detach -------------------------------------------------------------
in_ct systemctl stop iron-proxy
expect_status "$user" "http://allowed.test/" "exit 7"
say "ok: stopped service leaves interception fail-closed (connection refused)"
in_ct iron-proxy intercept detach -config /etc/iron-proxy/proxy.yaml >/dev/null
[[ -z "$(in_ct ls /sys/fs/bpf/iron-proxy 2>/dev/null)" ]] || fail "pins left after detach"
expect_status "$user" "http://allowed.test/" 200
say "ok: intercept detach ends interception"

in_ct dpkg --purge iron-proxy >/dev/null
in_ct test ! -e /etc/iron-proxy || fail "/etc/iron-proxy left after purge"
say "ok: purge"
say "passed"
