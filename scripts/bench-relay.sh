#!/usr/bin/env bash
# Relay throughput: `keywarden run -- cat FILE > /dev/null` against the plain
# pipe `cat FILE | cat > /dev/null`, alternating in one run, on log-like text,
# with 0, 10, 100, 1,000 and 10,000 secrets of 32-48 bytes (the matcher adds
# their encodings). Prints best-of-N wall times, MB/s and the ratio
# (pipe time / keywarden time: 1.0 = as fast as the plain pipe), also net of
# keywarden's start-up with the same registry (`keywarden run -- true`).
#
#   scripts/bench-relay.sh [SIZE_MIB=256] [ROUNDS=5] [COUNTS="0 10 100 1000 10000"]
set -euo pipefail
size_mib=${1:-256}
rounds=${2:-5}
counts=${3:-"0 10 100 1000 10000"}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
kw="$root/target/release/keywarden"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

python3 - "$size_mib" <<'PY'
import random, sys
size = int(sys.argv[1]) << 20
rnd = random.Random(7)
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
        v = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(32, 49)))
        with open(f"secrets/s{i}", "w") as f:
            f.write(v)
        reg.write(f"s{i}:\n  dev:\n    secret_ref: file://secrets/s{i}\n")
PY
}

now() { date +%s.%N; }
best() { sort -g | head -1; }
printf '%-8s %9s %9s %9s %10s %10s %10s %7s %7s\n' secrets "pipe s" "kw s" "start s" "pipe MB/s" "kw MB/s" "net MB/s" ratio "net"
for n in $counts; do
  make_secrets "$n"
  args=(run --pty never --env dev --registry reg.yaml --)
  [ "$n" = 0 ] && args=(run --pty never --env dev --)
  pipe_times=(); kw_times=(); start_times=()
  for r in $(seq "$rounds"); do
    t0=$(now); "$kw" "${args[@]}" true; t1=$(now)
    start_times+=("$(echo "$t1 - $t0" | bc -l)")
    t0=$(now); cat log.txt | cat > /dev/null; t1=$(now)
    "$kw" "${args[@]}" cat log.txt > /dev/null; t2=$(now)
    pipe_times+=("$(echo "$t1 - $t0" | bc -l)")
    kw_times+=("$(echo "$t2 - $t1" | bc -l)")
  done
  p=$(printf '%s\n' "${pipe_times[@]}" | best)
  k=$(printf '%s\n' "${kw_times[@]}" | best)
  s=$(printf '%s\n' "${start_times[@]}" | best)
  mb=$(echo "$size_mib * 1.048576" | bc -l)
  printf '%-8s %9.3f %9.3f %9.3f %10.0f %10.0f %10.0f %7.2f %7.2f\n' "$n" "$p" "$k" "$s" \
    "$(echo "$mb / $p" | bc -l)" "$(echo "$mb / $k" | bc -l)" "$(echo "$mb / ($k - $s)" | bc -l)" \
    "$(echo "$p / $k" | bc -l)" "$(echo "$p / ($k - $s)" | bc -l)"
done
