#!/usr/bin/env bash
# Build the container images (Dockerfile) from host-built binaries with
# buildah, then run the image's keywarden as PID 1 in a fresh pid namespace,
# chrooted into the image's files as they are (no /dev: a scratch image
# has none), and check what a PID 1 owes its container: the image starts,
# orphaned zombies are reaped, SIGTERM reaches the agent once and its exit
# code comes back, and the exit codes (0, 3, 127, 128+N).
#
#   scripts/check-image.sh            # builds the static binary first
#   KEYWARDEN_STATIC=path/to/keywarden scripts/check-image.sh
#
# Needs root, buildah, unshare (util-linux) and Debian's busybox-static
# (apt-get install buildah busybox-static). Takes well under a minute once
# the static binary exists.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

fail() {
    echo "check-image: $*" >&2
    exit 1
}
[[ $(id -u) == 0 ]] || fail "needs root (buildah's chroot isolation, unshare --pid)"
for tool in buildah unshare chroot mount; do
    command -v "$tool" >/dev/null 2>&1 || fail "no $tool (apt-get install buildah util-linux coreutils)"
done
busybox=/bin/busybox
linkage=$(ldd "$busybox" 2>&1 || true)
[[ -x $busybox && $linkage =~ (not a dynamic executable|statically linked) ]] ||
    fail "$busybox is not Debian's static busybox (apt-get install busybox-static)"

bh() { buildah --storage-driver vfs "$@"; }
tag=localhost/keywarden:check
agent_tag=localhost/keywarden-agent-example:check

# 1. The binaries, where the Dockerfile's `prebuilt` stage takes them.
mkdir -p target/static
if [[ -n ${KEYWARDEN_STATIC-} ]]; then
    cp "$KEYWARDEN_STATIC" target/static/keywarden
else
    scripts/build-static.sh "$root/target/static/keywarden" >/dev/null
fi
cp "$busybox" target/static/busybox

# 2. The images.
started=$(date +%s%N)
for target in keywarden:"$tag" agent-example:"$agent_tag"; do
    bh bud --quiet --isolation chroot --pull=never --layers=false \
        --build-arg BINARIES=prebuilt --target "${target%%:*}" -t "${target#*:}" . >/dev/null
done
echo "images built in $((($(date +%s%N) - started) / 1000000)) ms"

containers=()
cleanup() {
    local c
    for c in "${containers[@]}"; do
        umount -l "$(bh mount "$c")/proc" 2>/dev/null || true
        bh umount "$c" >/dev/null 2>&1 || true
        bh rm "$c" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

# A container's files, mounted on the host (its writable layer).
rootfs_of() {
    local c
    c=$(bh from --pull=never "$1")
    containers+=("$c")
    rootfs=$(bh mount "$c")
    [[ ! -e $rootfs/dev ]] || fail "$1 has a /dev: the checks would not show that keywarden needs none"
    mkdir -p "$rootfs/proc"
    mapfile -t image_env < <(config_list "$1" Env)
    mapfile -t entrypoint < <(config_list "$1" Entrypoint)
    [[ ${entrypoint[*]} == "keywarden run --" ]] || fail "$1: entrypoint is ${entrypoint[*]}"
}

# One list of an image's configuration (Env, Entrypoint, Cmd), one a line.
config_list() {
    bh inspect --type image --format "{{range .OCIv1.Config.$2}}{{println .}}{{end}}" "$1" | sed '/^$/d'
}

# Run the entrypoint with ARGS as PID 1 of a new pid namespace, chrooted
# into $rootfs with the image's entrypoint and environment only, as a
# runtime would (but with no /dev). stdin is the host's /dev/null.
pid1() {
    unshare --pid --fork --mount --propagation private -- \
        /bin/sh -c 'root=$1; shift; mount -t proc proc "$root/proc" && exec "$@"' sh "$rootfs" \
        env -i "${image_env[@]}" "$(command -v chroot)" "$rootfs" "${entrypoint[@]}" "$@" </dev/null
}

expect_exit() { # WANT NAME ARGS...
    local want=$1 name=$2 got=0
    shift 2
    pid1 "$@" >"$rootfs/tmp/out" 2>&1 || got=$?
    if [[ $got != "$want" ]]; then
        cat "$rootfs/tmp/out" >&2
        fail "$name: exit $got, want $want"
    fi
    echo "ok   $name (exit $got)"
}

# The only child of PID (a background job: its subshell, then unshare,
# then keywarden, PID 1 in its namespace).
child_of() {
    local kids
    kids=$(cat "/proc/$1/task/$1/children")
    [[ $kids =~ ^[0-9]+\ ?$ ]] || fail "process $1 has children '$kids', want one"
    echo "${kids% }"
}

# Poll for a file, up to 10 s.
wait_for() {
    local i
    for ((i = 0; i < 200; i++)); do
        [[ -e $1 ]] && return 0
        sleep 0.05
    done
    fail "timed out waiting for $1"
}

# 3. The bare image: keywarden with no /dev starts, binds its socket (a
# random name: the getrandom system call, no /dev/urandom) and serves its
# child, here keywarden's own client (no such secret: 65).
rootfs_of "$tag"
expect_exit 65 "scratch image without /dev: socket up, \`keywarden get\` answered" keywarden get no_such_secret
grep -q "no_such_secret" "$rootfs/tmp/out" || fail "keywarden get: unexpected answer: $(cat "$rootfs/tmp/out")"

# 4. The agent image, with its secret mounted where its registry expects
# it: exit codes first.
rootfs_of "$agent_tag"
mkdir -p "$rootfs/run/secrets"
head -c 24 /dev/urandom | base64 >"$rootfs/run/secrets/openai_api_key"
expect_exit 0 "exit 0 passed through" sh -c 'exit 0'
expect_exit 3 "exit 3 passed through" sh -c 'exit 3'
expect_exit 127 "missing command: 127" /usr/bin/no-such-agent
expect_exit 137 "child killed by SIGKILL: 128+9" sh -c 'kill -KILL $$'

# Reaping: a grandchild orphaned to PID 1 exits; it must not stay a zombie.
# shellcheck disable=SC2016 # expanded by the image's shell
expect_exit 0 "orphaned zombie reaped" sh -c '
    orphan=$(sh -c "sleep 0.2 >/tmp/orphan.out 2>&1 & echo \$!")
    i=0
    while [ -e /proc/$orphan ]; do
        i=$((i + 1))
        [ $i -lt 200 ] || { echo "orphan $orphan: $(cat /proc/$orphan/stat)"; exit 1; }
        sleep 0.05
    done'

# Signals: one SIGTERM to PID 1 (from outside, as `docker stop` sends it)
# reaches the agent once; the agent's exit code (40 + times received)
# comes back.
rm -f "$rootfs/tmp/ready" "$rootfs/tmp/term"
# shellcheck disable=SC2016 # expanded by the image's shell
pid1 sh -c '
    n=0
    trap "n=\$((n + 1)); echo \$n >>/tmp/term" TERM
    touch /tmp/ready
    while [ ! -s /tmp/term ]; do sleep 0.05; done
    sleep 0.3 # would a second copy come?
    exit $((40 + n))' >"$rootfs/tmp/out" 2>&1 &
job=$!
wait_for "$rootfs/tmp/ready"
kill -TERM "$(child_of "$(child_of "$job")")"
got=0
wait "$job" || got=$?
[[ $got == 41 ]] || fail "SIGTERM: exit $got, want 41 (the agent's, after one SIGTERM); $(cat "$rootfs/tmp/out")"
echo "ok   SIGTERM reached the agent once, its exit code passed through (exit $got)"

# 5. The example agent as the image runs it (CMD); `docker stop` is a
# SIGTERM.
mapfile -t cmd < <(config_list "$agent_tag" Cmd)
pid1 "${cmd[@]}" >"$rootfs/tmp/agent.log" 2>&1 &
job=$!
for ((i = 0; i < 200; i++)); do
    grep -q '^agent: ready' "$rootfs/tmp/agent.log" && break
    kill -0 "$job" 2>/dev/null || break
    sleep 0.05
done
grep -q '^agent: ready' "$rootfs/tmp/agent.log" || fail "example agent: $(cat "$rootfs/tmp/agent.log")"
kill -TERM "$(child_of "$(child_of "$job")")"
got=0
wait "$job" || got=$?
[[ $got == 0 ]] || fail "example agent: exit $got after SIGTERM; $(cat "$rootfs/tmp/agent.log")"
grep -q '^agent: OPENAI_API_KEY has 32 bytes' "$rootfs/tmp/agent.log" || fail "example agent: $(cat "$rootfs/tmp/agent.log")"
sed 's/^/     /' "$rootfs/tmp/agent.log"
echo "ok   example agent: secret in its environment and from the socket, stopped by SIGTERM"
echo "check-image: all passed"
