#!/usr/bin/env bash
# The README's run command: set up, build, then serve the built-in model (deterministic random
# weights) on port 50051 until Ctrl-C / SIGTERM. Extra arguments go to `lensd serve`, e.g.
#   tools/run.sh --model /path/to/hf-model --port 50052
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
cat >&2 <<'HELP'
== lensd serve (Ctrl-C to stop). From another shell, for example:
   build/client/lensctl --addr localhost:50051 health
   build/client/lensctl --addr localhost:50051 generate --prompt "Hello" --max-new-tokens 16
   build/client/lensctl --addr localhost:50051 cache --prompt "Hello" --out /tmp/cache.safetensors
   PYTHONPATH=build/python /usr/bin/python3 -c 'import lensd; print(lensd.Client().model_info()["model"])'
HELP
exec build/server/lensd serve "$@"
