#!/usr/bin/env bash
# The README's run command: set up, build, then run lensd's main jobs on the built-in model
# (deterministic random weights): a generation and an offline run_with_cache.
# Extra arguments replace the default prompt, e.g. tools/run.sh "Once upon a time".
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
prompt="${1:-Hello, lensd}"
echo "== lensd generate --prompt \"$prompt\" --max-new-tokens 16"
build/server/lensd generate --prompt "$prompt" --max-new-tokens 16
echo "== lensd run --prompt \"$prompt\" --out /tmp/lensd_cache.safetensors"
build/server/lensd run --prompt "$prompt" --out /tmp/lensd_cache.safetensors
