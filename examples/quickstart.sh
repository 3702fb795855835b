#!/bin/sh
# Quick start: create the example's secret files with random values, so that
# examples/configs/secrets-registry.yaml resolves on a fresh machine with no
# store and no vault. Nothing secret is committed: examples/configs/secrets/
# is git-ignored, and every value is generated here, on this machine.
#
# Idempotent: files that already exist are left as they are.
#
#   sh examples/quickstart.sh
#   cargo run --release -- run \
#       --registry examples/configs/secrets-registry.yaml \
#       --policy examples/configs/secrets-policy.json --env dev -- \
#       sh -c 'echo "OPENAI_API_KEY has ${#OPENAI_API_KEY} bytes"'
set -eu

umask 077
here=$(cd "$(dirname "$0")" && pwd)
dir="$here/configs/secrets"

# 32 random bytes, URL-safe base64 without padding: 43 characters, one line.
random_value() {
    head -c 32 /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_'
}

mkdir -p "$dir"
chmod 700 "$dir"

created=""
if [ ! -e "$dir/openai_api_key" ]; then
    random_value >"$dir/openai_api_key"
    echo >>"$dir/openai_api_key" # one trailing newline: trimmed by file://
    created="$created openai_api_key"
fi
if [ ! -e "$dir/slack.env" ]; then
    {
        echo "# dotenv://secrets/slack.env#KEY (random values for the example)"
        echo "SLACK_BOT_TOKEN=$(random_value)"
        echo "SLACK_SIGNING_SECRET=$(random_value)"
    } >"$dir/slack.env"
    created="$created slack.env"
fi
chmod 600 "$dir/openai_api_key" "$dir/slack.env"

if [ -n "$created" ]; then
    echo "quickstart: created in $dir:$created (random values, mode 0600)"
else
    echo "quickstart: $dir already set up; nothing changed"
fi
# billing_master_key is deliberately not created: the policy leaves the
# 'billing' secret out, so keywarden never reads it.
