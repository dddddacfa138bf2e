#!/usr/bin/env bash
# Serving benchmark on this machine's CPU: starts `lensd serve` for the built-in model and a
# GPT-2-small-shaped one, then measures with bench/load_gen (client side of the wire):
# generate tokens/s and time to first token at 1, 8 and 32 concurrent streams, and
# RunWithCache bytes/s for the full cache. Usage: bench/serve_bench.sh [build dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
LOAD="$BUILD/bench/load_gen"
PORT=$((20000 + RANDOM % 20000))

run_model() {  # model, kv-tokens, prompt tokens, new tokens, cache prompt tokens
  local model="$1" kv="$2" prompt="$3" new="$4" cache_prompt="$5" log
  log=$(mktemp)
  "$BUILD/server/lensd" serve --host 127.0.0.1 --port "$PORT" --model "$model" \
    --kv-tokens "$kv" --max-running 64 2>"$log" &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true' RETURN
  for _ in $(seq 600); do grep -q "ready: serving" "$log" && break; sleep 0.1; done
  grep -q "ready: serving" "$log" || { cat "$log"; return 1; }
  local addr="127.0.0.1:$PORT"
  "$LOAD" --addr "$addr" --mode generate --streams 1 --requests 1 --prompt-tokens 8 --max-new-tokens 4 >/dev/null  # warm-up
  for streams in 1 8 32; do
    "$LOAD" --addr "$addr" --label "$model" --mode generate --streams "$streams" \
      --requests 2 --prompt-tokens "$prompt" --max-new-tokens "$new"
  done
  "$LOAD" --addr "$addr" --label "$model" --mode cache --streams 1 --requests 3 \
    --prompt-tokens "$cache_prompt"
  kill -TERM "$pid"; wait "$pid" || true
  rm -f "$log"
}

echo "== $(nproc) CPU cores; lensd serve on 127.0.0.1:$PORT"
run_model builtin:tiny 16384 32 64 256
run_model builtin:gpt2-small 8192 32 16 64
