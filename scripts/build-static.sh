#!/usr/bin/env bash
# A static-pie build of keywarden (glibc linked in, no ld.so, no libgcc_s):
# the flag applies to the final binary only, so proc-macros still build as
# host dylibs and the normal build is untouched. Prints the binary's path.
#
#   scripts/build-static.sh [OUT=target/static/keywarden]
#
# With static glibc, `--user` name lookups use the `files` NSS source
# (/etc/passwd, /etc/group) only: LDAP/SSSD users need the normal build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/static/keywarden}
cargo rustc --release --quiet --manifest-path "$root/Cargo.toml" --bin keywarden \
    -- -C target-feature=+crt-static
mkdir -p "$(dirname "$out")"
cp "${CARGO_TARGET_DIR:-$root/target}/release/keywarden" "$out"
# Leave release/keywarden as the normal (dynamic) build.
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
echo "$out"
