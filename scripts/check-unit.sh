#!/usr/bin/env bash
# systemd/keywarden-agent.service, checked without a running systemd:
#  1. `systemd-analyze verify` on a copy whose paths exist (this keywarden,
#     a stand-in gateway);
#  2. `systemd-analyze security --offline=true`: the exposure score is
#     printed and must stay at or under MAX_EXPOSURE (default 2.0);
#  3. keywarden and an agent that uses the socket API and a pty run under
#     strace: every system call they make must
#     pass the unit's SystemCallFilter= lines (expanded by systemd-analyze
#     syscall-filter), every socket family its RestrictAddressFamilies=,
#     and no /proc file outside the process folders may be opened
#     (ProcSubset=pid).
# What this cannot show: the kernel enforcing those settings (that needs
# systemd as PID 1), the credentials, PrivateUsers= and IPAddressDeny=.
#
#   scripts/check-unit.sh [KEYWARDEN_BINARY]   # default: the debug build
#
# Needs systemd (for systemd-analyze only), strace and python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
unit=${UNIT:-$root/systemd/keywarden-agent.service}
kw=$(realpath "${1:-${CARGO_TARGET_DIR:-$root/target}/debug/keywarden}")
max_exposure=${MAX_EXPOSURE:-2.0}

fail() {
    echo "check-unit: $*" >&2
    exit 1
}
for tool in systemd-analyze strace python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "no $tool (apt-get install systemd strace python3)"
done
[[ -x $kw ]] || fail "$kw: no keywarden binary (cargo build first, or give its path)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. verify, with real paths.
sed -e "s#/usr/bin/keywarden#$kw#g" -e "s#/usr/bin/openclaw#$(command -v true)#g" \
    "$unit" >"$tmp/keywarden-agent.service"
systemd-analyze verify "$tmp/keywarden-agent.service"
echo "ok   systemd-analyze verify"

# 2. the exposure score.
score=$(systemd-analyze security --offline=true "$unit" 2>&1 |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
[[ -n $score ]] || fail "no exposure score from systemd-analyze security"
awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }' ||
    fail "exposure $score, above $max_exposure"
echo "ok   systemd-analyze security --offline=true: exposure $score (at most $max_exposure)"

# 3. what keywarden and its child do, against what the unit allows.
mkdir -m 0700 "$tmp/secrets"
head -c 24 /dev/urandom | base64 >"$tmp/secrets/key"
cat >"$tmp/secrets-registry.yaml" <<'EOF'
agent:
  prod:
    secret_ref: "file://secrets/key"
    scope: ["llm:chat"]
    env: AGENT_KEY
EOF
cat >"$tmp/secrets-policy.json" <<'EOF'
{
  "allowed_secrets": ["agent"],
  "allowed_schemes": ["file"],
  "max_ttl_seconds": {"prod": 300},
  "child_scopes": ["llm:chat"]
}
EOF
# shellcheck disable=SC2016 # expanded by the child's shell
agent='
    [ "$("$KW" get agent)" = "$AGENT_KEY" ] || { echo "socket: wrong value"; exit 1; }
    echo "agent: done"'
out=$(cd "$tmp" && KW=$kw XDG_RUNTIME_DIR=$tmp strace -f -qq -e signal=none -o "$tmp/trace" \
    "$kw" run --env prod --registry secrets-registry.yaml --policy secrets-policy.json \
    --pty always -- sh -c "$agent" </dev/null 2>&1) || fail "the agent failed: $out"
[[ $out == *"agent: done"* ]] || fail "unexpected output: $out"
echo "ok   agent ran under strace: socket API and pty worked"

# Hold a strace log to the unit: SystemCallFilter= lines (given), the last
# RestrictAddressFamilies= line, ProcSubset=pid.
check_trace() {
    local families
    families=$(sed -n 's/^RestrictAddressFamilies=//p' "$unit" | tail -n 1)
    python3 - "$1" "$families" "$2" <<'EOF'
import re, subprocess, sys

trace, families, filters = sys.argv[1], sys.argv[2].split(), sys.argv[3].splitlines()

def expand(names):
    out = set()
    for name in names:
        if name.startswith("@"):
            text = subprocess.run(["systemd-analyze", "syscall-filter", name],
                                  check=True, capture_output=True, text=True).stdout
            body = [l.strip() for l in text.splitlines()[1:]]
            out |= expand(l for l in body if l and not l.startswith("#"))
        else:
            out.add(name)
    return out

# systemd: the first line sets the allow list; each "~" line then removes.
allowed = None
for line in filters:
    if not line.strip():
        allowed = None  # an empty assignment resets the list
        continue
    deny = line.startswith("~")
    names = expand(line.lstrip("~").split())
    if allowed is None:
        allowed = set() if deny else names
        if deny:
            sys.exit("check-unit: a deny list first is not handled here")
    elif deny:
        allowed -= names
    else:
        allowed |= names

# Read by glibc for sysconf(_SC_NGROUPS_MAX) when --user looks up the
# groups; when hidden, glibc takes its built-in limit.
proc_fallbacks = {"/proc/sys/kernel/ngroups_max"}

used, bad_families, bad_proc = {}, set(), set()
call = re.compile(r"^\d+\s+([a-z0-9_]+)\((.*)")
for line in open(trace):
    m = call.match(line)
    if not m:
        continue
    name, args = m.groups()
    used[name] = used.get(name, 0) + 1
    if name == "socket":
        family = args.split(",")[0]
        if family not in families:
            bad_families.add(family)
    if name in ("open", "openat", "openat2", "readlink", "readlinkat", "stat", "newfstatat", "statx"):
        for path in re.findall(r'"(/proc/[^"]*)"', args):
            if not re.match(r"^/proc/(self|thread-self|\d+)(/|$)", path) and path not in proc_fallbacks:
                bad_proc.add(path)

refused = sorted(n for n in used if n not in allowed)
print(f"     {len(used)} distinct system calls, {sum(used.values())} calls")
problems = []
if refused:
    problems.append("refused by SystemCallFilter=: " + ", ".join(refused))
if bad_families:
    problems.append("socket families outside RestrictAddressFamilies=: " + ", ".join(sorted(bad_families)))
if bad_proc:
    problems.append("/proc files hidden by ProcSubset=pid: " + ", ".join(sorted(bad_proc)))
if problems:
    sys.exit("check-unit: " + "; ".join(problems))
print("ok   every system call, socket family and /proc file is one the unit allows")
EOF
}

# Same-uid mode, as the unit stands.
check_trace "$tmp/trace" "$(sed -n 's/^SystemCallFilter=//p' "$unit")"

# Separate-uid mode (`--user`), with the filter lines the unit's comment
# gives for it: keywarden as root, the agent as nobody.
chmod 0711 "$tmp"
chmod 0644 "$tmp/secrets-registry.yaml" "$tmp/secrets-policy.json"
# shellcheck disable=SC2016 # expanded by the child's shell
agent='grep -Eq "^Uid:\s+$NOBODY\s" /proc/self/status && [ "$("$KW" get agent)" = "$AGENT_KEY" ] && echo "agent: done as nobody"'
out=$(cd "$tmp" && KW=$kw NOBODY=$(id -u nobody) XDG_RUNTIME_DIR=$tmp strace -f -qq -e signal=none -o "$tmp/trace-user" \
    "$kw" run --env prod --registry secrets-registry.yaml --policy secrets-policy.json \
    --user nobody -- sh -c "$agent" </dev/null 2>&1) || fail "the agent as nobody failed: $out"
[[ $out == *"agent: done as nobody"* ]] || fail "unexpected output: $out"
echo "ok   agent ran as nobody (--user) under strace"
check_trace "$tmp/trace-user" "$(sed -n 's/^#   SystemCallFilter=//p' "$unit")"
