#!/usr/bin/env bash
# Start-up of `keywarden run -- true` with a registry of N `file://` secrets
# (40-byte values, the registry `bench-relay.sh` makes): wall and user time
# and peak RSS from /usr/bin/time, alternating the builds in every round so
# that both see the same load; min/median/max over the rounds. With
# CALLGRIND=1, also the instructions of one run of each build (callgrind
# counts them the same on a loaded machine), split into the relay matcher's
# build (`matcher_for`, inclusive) and everything else.
#
#   KEYWARDEN=path [KEYWARDEN_OLD=path] [CALLGRIND=1] \
#     scripts/bench-startup-secrets.sh [ROUNDS=5] [COUNTS="1000 10000 50000"]
set -euo pipefail
rounds=${1:-5}
counts=${2:-"1000 10000 50000"}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${KEYWARDEN:-}" ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Fresh copies (see "How it is measured" in docs/PERFORMANCE.md).
cp "${KEYWARDEN:-"${CARGO_TARGET_DIR:-$root/target}/release/keywarden"}" "$work/new"
builds=(new)
if [ -n "${KEYWARDEN_OLD:-}" ]; then
  cp "$KEYWARDEN_OLD" "$work/old"
  builds=(old new)
fi
cd "$work"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-7s %-4s %-20s %-8s %-8s %-9s %-14s %s\n' secrets build "wall s min/med/max" "user s" "sys s" "peak RSS" "instructions" "of them matcher"
for n in $counts; do
  rm -rf secrets reg.yaml
  mkdir -p secrets
  python3 - "$n" <<'PY'
import random, string, sys
n = int(sys.argv[1]); rnd = random.Random(11)
alphabet = string.ascii_letters + string.digits
with open("reg.yaml", "w") as reg:
    for i in range(n):
        with open(f"secrets/s{i}", "w") as f:
            f.write("".join(rnd.choice(alphabet) for _ in range(40)))
        reg.write(f"s{i}:\n  dev:\n    secret_ref: file://secrets/s{i}\n")
PY
  for b in "${builds[@]}"; do : > "times-$b"; done
  for r in $(seq "$rounds"); do
    # Rotate the order each round.
    if [ $((r % 2)) = 0 ]; then order=("${builds[@]}"); else order=($(printf '%s\n' "${builds[@]}" | tac)); fi
    for b in "${order[@]}"; do
      /usr/bin/time -a -o "times-$b" -f "%e %U %S %M" \
        "./$b" run --pty never --env dev --registry reg.yaml -- true
    done
  done
  for b in "${builds[@]}"; do
    ir="-"; matcher="-"
    if [ -n "${CALLGRIND:-}" ]; then
      valgrind --tool=callgrind --callgrind-out-file="cg-$b" \
        "./$b" run --pty never --env dev --registry reg.yaml -- true 2> /dev/null
      ir=$(callgrind_annotate "cg-$b" | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
      matcher=$(callgrind_annotate --inclusive=yes "cg-$b" \
        | awk '/redact::live::matcher_for \[/ && !done {gsub(",","",$1); print $1; done=1}')
    fi
    python3 - "$n" "$b" "times-$b" "$ir" "$matcher" <<'PY'
import statistics, sys
n, b, path, ir, matcher = sys.argv[1:]
rows = [list(map(float, l.split())) for l in open(path) if l.strip() and l[0].isdigit()]
wall = sorted(r[0] for r in rows)
user = statistics.median(r[1] for r in rows)
sys_ = statistics.median(r[2] for r in rows)
rss = statistics.median(r[3] for r in rows) / 1024
three = "/".join("%.3f" % x for x in (wall[0], statistics.median(wall), wall[-1]))
print("%-7s %-4s %-20s %-8.3f %-8.3f %-9s %-14s %s" % (
    n, b, three, user, sys_, "%.1f MiB" % rss, ir, matcher))
PY
  done
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
