#!/usr/bin/env bash
# Start-up cost: `keywarden run -- /bin/true` (with its socket API, the
# default, and with --no-socket) against `tini -s -- /bin/true`
# and against `/bin/true` alone, on the release build, with no registry and
# no policy (run from an empty temp folder, so no default config is found,
# with a small fixed environment that holds no refs).
#
# The three commands ALTERNATE inside one run: every iteration runs each of
# them once, in a rotating order, so drift of the machine's load hits all
# three alike. Each run is timed from spawn to reap with a monotonic clock
# (perf_counter_ns around posix_spawn + waitpid in a small Python helper);
# stdin, stdout and stderr are /dev/null. Prints median, p90, mean and min
# per command, the ratio keywarden/tini, and the overhead of each over
# /bin/true. The machine's load is printed too: other work on the CPUs
# inflates keywarden more than tini (it has more hand-offs between threads
# and processes, each of which may wait for a CPU).
#
#   scripts/bench-startup.sh [ITERATIONS=2000] [WARMUP=100]
#
# Needs: python3, tini (Debian package `tini`), cargo. KEYWARDEN=/path/to/bin
# skips the build and measures that binary instead; KEYWARDEN_ALT=/path adds
# a second binary to the same alternating run (e.g. a static build from
# scripts/build-static.sh), reported as "alt".
set -euo pipefail
iterations=${1:-2000}
warmup=${2:-100}
root=$(cd "$(dirname "$0")/.." && pwd)

if [[ -z ${KEYWARDEN:-} ]]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
    KEYWARDEN="$root/target/release/keywarden"
fi
tini=$(command -v tini || true)
if [[ -z $tini ]]; then
    echo "bench-startup: tini is not installed (apt-get install -y tini)" >&2
    exit 69
fi
tini_version=$("$tini" --version 2>&1 | head -1)
truebin=$(command -v true)
[[ $truebin == /* ]] || truebin=/bin/true

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# Measure fresh copies (of tini too), made one after the other: a binary's page-cache
# state (how long ago it was written, whether memory reclaim has touched
# its pages since) moved its start-up by up to 0.5 ms on this machine, so
# two builds compared from their own places compare their histories too.
mkdir bin
cp "$KEYWARDEN" bin/keywarden
KEYWARDEN=$work/bin/keywarden
if [[ -n ${KEYWARDEN_ALT:-} ]]; then
    cp "$KEYWARDEN_ALT" bin/keywarden-alt
    KEYWARDEN_ALT=$work/bin/keywarden-alt
fi
cp "$tini" bin/tini # the baseline too
tini_origin=$tini
tini=$work/bin/tini

echo "keywarden: $("$KEYWARDEN" --version); $(stat -c '%s bytes' "$KEYWARDEN")${KEYWARDEN_ALT:+; alt: $(stat -c '%s bytes' "$KEYWARDEN_ALT")}"
echo "tini:      $tini_origin ($tini_version), copied like keywarden"
echo "kernel:    $(uname -r); cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "iterations: $iterations (+$warmup warm-up), alternating"

# BENCH_RUNTIME_DIR=/dev/shm measures with $XDG_RUNTIME_DIR on a tmpfs, as
# on a systemd host (/run/user/UID); by default the sockets' folders go in
# the temp folder.
env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work" LANG=C \
    ${BENCH_RUNTIME_DIR:+XDG_RUNTIME_DIR="$BENCH_RUNTIME_DIR"} \
    python3 - "$iterations" "$warmup" "$KEYWARDEN" "$tini" "$truebin" "${KEYWARDEN_ALT:-}" <<'PY'
import os, sys, time

iterations, warmup = int(sys.argv[1]), int(sys.argv[2])
keywarden, tini, true, alt = sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
commands = [
    ("keywarden", [keywarden, "run", "--", true]),
    ("no-socket", [keywarden, "run", "--no-socket", "--", true]),
    ("tini", [tini, "-s", "--", true]),
    ("true", [true]),
]
if alt:
    commands += [
        ("alt", [alt, "run", "--", true]),
        ("alt-no-sock", [alt, "run", "--no-socket", "--", true]),
    ]
null = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
]
env = dict(os.environ)

def once(argv):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=null)
    _, status = os.waitpid(pid, 0)
    t1 = time.perf_counter_ns()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench-startup: {' '.join(argv)} failed: {status}")
    return t1 - t0

samples = {name: [] for name, _ in commands}
for i in range(warmup + iterations):
    k = i % len(commands)
    for name, argv in commands[k:] + commands[:k]:  # rotate the order
        ns = once(argv)
        if i >= warmup:
            samples[name].append(ns)

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

stats = {}
print(f"{'command':<11} {'median':>9} {'p90':>9} {'mean':>9} {'min':>9}   (microseconds)")
for name, _ in commands:
    xs = samples[name]
    stats[name] = (pct(xs, 50), pct(xs, 90), sum(xs) / len(xs), min(xs))
    m, p, a, lo = (v / 1000 for v in stats[name])
    print(f"{name:<11} {m:>9.0f} {p:>9.0f} {a:>9.0f} {lo:>9.0f}")
kw, ti, tr = stats["keywarden"], stats["tini"], stats["true"]
ns = stats["no-socket"]
print(f"ratio keywarden/tini: median {kw[0] / ti[0]:.2f}x, p90 {kw[1] / ti[1]:.2f}x (goal: <= 1.10x)")
print(f"ratio keywarden --no-socket/tini: median {ns[0] / ti[0]:.2f}x, p90 {ns[1] / ti[1]:.2f}x")
print(f"over /bin/true (median): keywarden +{(kw[0] - tr[0]) / 1000:.0f} us, tini +{(ti[0] - tr[0]) / 1000:.0f} us")
if alt:
    a, an = stats["alt"], stats["alt-no-sock"]
    print(f"ratio alt/tini: median {a[0] / ti[0]:.2f}x; alt --no-socket/tini: median {an[0] / ti[0]:.2f}x")
PY
