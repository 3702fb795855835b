#!/usr/bin/env bash
# Relay throughput: `keywarden run -- cat FILE > /dev/null` against the plain
# pipe `cat FILE | cat > /dev/null`, alternating in one run, on log-like text,
# with 0, 10, 100, 1,000 and 10,000 secrets of 32-48 bytes (the matcher adds
# their encodings). Prints best-of-N wall times, MB/s and the ratio
# (pipe time / keywarden time: 1.0 = as fast as the plain pipe), also net of
# keywarden's start-up with the same registry (`keywarden run -- true`).
# Each round runs the pipe, then keywarden, then keywarden's start-up alone,
# so that both see the same load; every ratio is taken within one round and
# printed as min/median/max over the rounds, next to the pipe's own speed.
# TEXT=base64 relays random base64 lines instead of log lines. LEN=40 makes
# every secret 40 bytes (else 32-48). KEYWARDEN=path measures that build
# instead of building this tree; KEYWARDEN_OLD=path adds a second build to
# every round (its own pipe run before it), printed on its own row.
#
#   [TEXT=log|base64] [LEN=n] [KEYWARDEN=path] [KEYWARDEN_OLD=path] \
#     scripts/bench-relay.sh [SIZE_MIB=256] [ROUNDS=5] [COUNTS="0 10 100 1000 10000"]
set -euo pipefail
size_mib=${1:-256}
rounds=${2:-5}
counts=${3:-"0 10 100 1000 10000"}
root=$(cd "$(dirname "$0")/.." && pwd)
text=${TEXT:-log}
if [ -z "${KEYWARDEN:-}" ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
fi
kw=${KEYWARDEN:-"${CARGO_TARGET_DIR:-$root/target}/release/keywarden"}
old=${KEYWARDEN_OLD:-}
export LEN=${LEN:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

python3 - "$size_mib" "$text" <<'PY'
import base64, random, sys
size = int(sys.argv[1]) << 20
rnd = random.Random(7)
if sys.argv[2] == "base64":
    block = b"".join(base64.b64encode(rnd.randbytes(57)) + b"\n" for _ in range((4 << 20) // 77))
    with open("log.txt", "wb") as f:
        written = 0
        while written < size:
            f.write(block); written += len(block)
    sys.exit(0)
levels = ["INFO", "DEBUG", "WARN", "ERROR"]
words = "request completed user session cache miss upstream latency token bucket retry gateway model reply stream chunk".split()
lines, total = [], 0
while total < (4 << 20):
    line = "2026-11-23T12:%02d:%02d.%03dZ %s [%s] %s id=%08x dur=%dms\n" % (
        rnd.randrange(60), rnd.randrange(60), rnd.randrange(1000), rnd.choice(levels),
        rnd.choice(words), " ".join(rnd.choice(words) for _ in range(rnd.randrange(4, 14))),
        rnd.getrandbits(32), rnd.randrange(2000))
    lines.append(line); total += len(line)
block = "".join(lines).encode()
with open("log.txt", "wb") as f:
    written = 0
    while written < size:
        f.write(block); written += len(block)
PY

make_secrets() { # N -> reg.yaml and secrets/
  local n=$1
  rm -rf secrets reg.yaml; mkdir -p secrets
  python3 - "$n" <<'PY'
import os, random, string, sys
n = int(sys.argv[1]); rnd = random.Random(11)
alphabet = string.ascii_letters + string.digits
with open("reg.yaml", "w") as reg:
    for i in range(n):
        length = int(os.environ["LEN"]) if os.environ.get("LEN") else rnd.randrange(32, 49)
        v = "".join(rnd.choice(alphabet) for _ in range(length))
        with open(f"secrets/s{i}", "w") as f:
            f.write(v)
        reg.write(f"s{i}:\n  dev:\n    secret_ref: file://secrets/s{i}\n")
PY
}

now() { date +%s.%N; }

round() { # BINARY ARGS... -> one line of times: pipe start/end, relay end, start-up end
  local bin=$1; shift
  local t0 t1 t2 t3
  t0=$(now); cat log.txt | cat > /dev/null; t1=$(now)
  "$bin" "$@" cat log.txt > /dev/null; t2=$(now)
  "$bin" "$@" true; t3=$(now)
  echo "$t0 $t1 $t2 $t3"
}

report() { # LABEL TIMES_FILE
  python3 - "$1" "$size_mib" "$2" <<'PY'
import statistics, sys
n, mib, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mb = mib * 1.048576
rows = [list(map(float, l.split())) for l in open(path)]
pipe = [b - a for a, b, _, _ in rows]
kw = [c - b for _, b, c, _ in rows]
start = [d - c for _, _, c, d in rows]
def three(xs, fmt):
    xs = sorted(xs)
    return "/".join(fmt % x for x in (xs[0], statistics.median(xs), xs[-1]))
ratio = [p / k for p, k in zip(pipe, kw)]
# Net of start-up only where the relay clearly outlasts it (else the
# difference of two noisy times means nothing).
net = [p / (k - s) for p, k, s in zip(pipe, kw, start) if k - s > 0.2 * k] or [float("nan")]
print("%-11s %-16s %-16s %-16s %-8.3f %-16s" % (
    n, three([mb / p for p in pipe], "%.0f"), three([mb / k for k in kw], "%.0f"),
    three(ratio, "%.2f"), statistics.median(start), three(net, "%.2f")))
PY
}

printf 'text: %s, %s MiB; MB/s and ratios as min/median/max over %s rounds\n' "$text" "$size_mib" "$rounds"
printf '%-11s %-16s %-16s %-16s %-8s %-16s\n' secrets "pipe MB/s" "keywarden MB/s" "ratio" "start s" "net ratio"
for n in $counts; do
  make_secrets "$n"
  args=(run --pty never --env dev --registry reg.yaml --)
  [ "$n" = 0 ] && args=(run --pty never --env dev --)
  : > times.txt
  : > times-old.txt
  for _ in $(seq "$rounds"); do
    round "$kw" "${args[@]}" >> times.txt
    if [ -n "$old" ]; then round "$old" "${args[@]}" >> times-old.txt; fi
  done
  report "$n" times.txt
  if [ -n "$old" ]; then report "$n old" times-old.txt; fi
done
