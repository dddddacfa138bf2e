#!/usr/bin/env bash
# Proves the Python client's pip route (by hand: needs the Python Package Index): a fresh virtual
# environment, `pip install ./client/python` (grpcio, protobuf, numpy from PyPI; the stubs
# generated from proto/ at build time), then against `lensd serve` with the built-in model:
# readiness, health, model info, a cache and a generation.
# Usage: tools/python-venv-check.sh [build dir]   (after the README's build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
VENV=$(mktemp -d)
LOG=$(mktemp)
PORT=$((20000 + RANDOM % 20000))
cleanup() { [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null; rm -rf "$VENV" "$LOG"; }
trap cleanup EXIT
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q ./client/python
"$BUILD/server/lensd" serve --host 127.0.0.1 --port "$PORT" 2>"$LOG" &
SERVER=$!
"$VENV/bin/python" - "$PORT" <<'PY'
import sys
import numpy as np
import lensd

client = lensd.Client(f"127.0.0.1:{sys.argv[1]}", wait_for_ready=120)
assert client.health() == "SERVING", client.health()
ids = [1, 72, 101, 108, 108, 111]
logits, cache = client.run_with_cache(ids, names_filter="blocks.*.hook_resid_post")
assert logits.shape[:2] == (1, len(ids)), logits.shape
assert cache["blocks.0.hook_resid_post"].shape[:2] == (1, len(ids))
assert np.isfinite(logits).all()
events = list(client.generate(ids, max_new_tokens=4))
assert isinstance(events[-1], lensd.GenerateDone), events[-1]
tokens = [e for e in events if isinstance(e, lensd.TokenEvent)]
assert len(tokens) == 4, events
print("venv client OK:", lensd.__file__, "logits", logits.shape, "tokens", len(tokens))
PY
