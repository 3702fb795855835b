#!/usr/bin/env bash
# The credential proxy's figures, against one local HTTPS upstream
# (tests/util/upstream.py, TLS with a CA made here by openssl), direct and
# through `keywarden run`'s proxy, in one run:
#   - added latency (p50/p99) of small JSON requests (GET /echo, keep-alive);
#   - a 256 MiB streamed response (GET /big), response redaction on;
#   - time to the first server-sent event (GET /sse);
#   - keywarden's peak RSS with 64 concurrent streams;
#   - start-up of `run -- true` with one proxied route vs without.
# Clients are Python (http.client, persistent connections) on both paths,
# so their own cost is the same on both sides; the upstream is Python too,
# which bounds the throughput figure (see docs/PERFORMANCE.md).
#
#   scripts/bench-proxy.sh [REQUESTS=2000] [MIB=256]
# KEYWARDEN=/path/to/bin skips the release build.
set -euo pipefail
requests=${1:-2000}
mib=${2:-256}
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${KEYWARDEN:-} ]]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
    KEYWARDEN="$root/target/release/keywarden"
fi
work=$(mktemp -d)
cleanup() {
    [[ -n ${up_pid:-} ]] && kill "$up_pid" 2>/dev/null || true
    [[ -n ${kw_pid:-} ]] && { touch "$work/stop"; wait "$kw_pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > ext.cnf
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 1 -subj /CN=bench-ca 2>/dev/null
openssl req "${ec[@]}" -keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 -extfile ext.cnf 2>/dev/null
head -c 30 /dev/urandom | base64 | tr -d '/+=' > key
mkdir up
python3 "$root/tests/util/upstream.py" up key srv.pem srv.key & up_pid=$!
for _ in $(seq 200); do [[ -f up/port ]] && break; sleep 0.05; done
port=$(cat up/port)
cat > reg.yaml <<YAML
bench:
  dev:
    secret_ref: file://key
    proxy:
      preset: openai
      upstream: "https://127.0.0.1:$port/v1"
      allow: ["*"]
YAML
: > empty.yaml
"$KEYWARDEN" run --env dev --registry reg.yaml --proxy-ca ca.pem --no-socket -- \
    sh -c 'env > child.env; while [ ! -f stop ]; do sleep 0.05; done' & kw_pid=$!
for _ in $(seq 200); do [[ -f child.env ]] && break; sleep 0.05; done
# keywarden's own pid (the child's parent).
kw_real=$kw_pid
python3 - "$port" "$requests" "$mib" "$kw_real" "$KEYWARDEN" <<'PY'
import http.client, json, os, ssl, statistics, subprocess, sys, threading, time
port, n, mib, kwpid, kwbin = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
env = dict(l.rstrip("\n").split("=", 1) for l in open("child.env") if "=" in l)
url = env["OPENAI_BASE_URL"]; phantom = env["OPENAI_API_KEY"]; key = open("key").read().strip()
pport = int(url.split(":")[2].split("/")[0])
ctx = ssl.create_default_context(cafile="ca.pem")
def direct(): return http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
def proxied(): return http.client.HTTPConnection("127.0.0.1", pport)
paths = {"direct": ("/v1", "Bearer " + key, direct), "proxy": ("/bench", "Bearer " + phantom, proxied)}
def lat(name):
    base, auth, mk = paths[name]; c = mk(); out = []
    for i in range(n + 100):
        t = time.perf_counter(); c.request("GET", base + "/echo", headers={"Authorization": auth})
        r = c.getresponse(); r.read(); assert r.status == 200, r.status
        if i >= 100: out.append((time.perf_counter() - t) * 1e3)
    out.sort(); return out[len(out) // 2], out[int(len(out) * 0.99)]
def big(name):
    base, auth, mk = paths[name]; c = mk(); t = time.perf_counter()
    c.request("GET", base + "/big?mib=%d" % mib, headers={"Authorization": auth}); r = c.getresponse(); total = 0
    while True:
        b = r.read(1 << 20)
        if not b: break
        total += len(b)
    assert total == mib << 20, total
    return total / (time.perf_counter() - t) / (1 << 20)
def ttfb(name):
    base, auth, mk = paths[name]; res = []
    for _ in range(20):
        c = mk(); t = time.perf_counter()
        c.request("GET", base + "/sse?n=1&pause=0", headers={"Authorization": auth}); r = c.getresponse()
        r.read1(65536); res.append((time.perf_counter() - t) * 1e3); r.read(); c.close()
    res.sort(); return res[len(res) // 2]
def rss(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS"): return int(l.split()[1]) / 1024
print("added latency, small JSON (GET /echo, %d requests, keep-alive)" % n)
res = {}
for name in ["direct", "proxy", "direct", "proxy"]:
    res.setdefault(name, []).append(lat(name))
for name, v in res.items():
    p50 = min(x[0] for x in v); p99 = min(x[1] for x in v)
    print("  %-7s p50 %.3f ms  p99 %.3f ms" % (name, p50, p99))
d, p = res["direct"], res["proxy"]
print("  added   p50 %.3f ms  p99 %.3f ms" % (min(x[0] for x in p) - min(x[0] for x in d), min(x[1] for x in p) - min(x[1] for x in d)))
print("streamed response, %d MiB (redaction on)" % mib)
bd = max(big("direct") for _ in range(2)); bp = max(big("proxy") for _ in range(2))
print("  direct %.0f MiB/s  proxy %.0f MiB/s  ratio %.2f" % (bd, bp, bp / bd))
print("SSE time to first event (median of 20, new connection each)")
td = ttfb("direct"); tp = ttfb("proxy")
print("  direct %.2f ms  proxy %.2f ms  added %.2f ms" % (td, tp, tp - td))
print("RSS with 64 concurrent streams")
before = rss(kwpid); peak = [before]
def stream():
    c = proxied(); c.request("GET", "/bench/sse?n=20&pause=0.1", headers={"Authorization": "Bearer " + phantom})
    r = c.getresponse(); r.read()
ts = [threading.Thread(target=stream) for _ in range(64)]
for t in ts: t.start()
while any(t.is_alive() for t in ts):
    peak.append(rss(kwpid)); time.sleep(0.05)
print("  keywarden RSS idle %.1f MiB, peak %.1f MiB" % (before, max(peak)))
print("start-up: run -- true, median of 40 (with one proxied route / without)")
def startup(reg):
    out = []
    for _ in range(40):
        t = time.perf_counter()
        subprocess.run([kwbin, "run", "--env", "dev", "--registry", reg, "--proxy-ca", "ca.pem", "--", "true"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((time.perf_counter() - t) * 1e3)
    out.sort(); return out[len(out) // 2]
a = startup("empty.yaml"); b = startup("reg.yaml"); a2 = startup("empty.yaml"); b2 = startup("reg.yaml")
print("  without %.2f ms  with proxy %.2f ms  added %.2f ms" % (min(a, a2), min(b, b2), min(b, b2) - min(a, a2)))
PY
