#!/bin/sh
# The example agent (Dockerfile, target agent-example): a busybox shell
# script that keywarden starts as its child. It shows both ways a secret
# reaches an agent, then works until it is asked to stop.
#  - OPENAI_API_KEY in its environment (the registry's `env:`);
#  - the socket API, through `keywarden get` (KEYWARDEN_SOCKET and
#    KEYWARDEN_TOKEN are set by keywarden).
# Its own output never shows a value: keywarden would mask it anyway.
set -eu

stop() {
    echo "agent: SIGTERM, stopping"
    exit 0
}
trap stop TERM INT

echo "agent: OPENAI_API_KEY has ${#OPENAI_API_KEY} bytes"
from_socket=$(keywarden get openai)
if [ "$from_socket" = "$OPENAI_API_KEY" ]; then
    echo "agent: the socket gives the same value"
else
    echo "agent: the socket gives another value" >&2
    exit 1
fi
echo "agent: ready"
# The shell runs a trap between commands: a short sleep keeps the answer
# to SIGTERM quick. (Not `sleep & wait`: without /dev/null, as in a bare
# chroot, busybox cannot start a background job.)
while :; do
    sleep 1
done
