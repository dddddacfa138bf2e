#!/usr/bin/env bash
# Serving benchmark on this machine's CPU: starts `lensd serve` for the built-in model and a
# GPT-2-small-shaped one, then measures with bench/load_gen (client side of the wire):
# generate tokens/s and time to first token at 1, 8 and 32 concurrent streams, and
# RunWithCache bytes/s for the full cache, and one-stream decode beside a busy process (the
# server must degrade gracefully on a shared machine). Usage: bench/serve_bench.sh [build dir];
# THREADS=N sets the server's --threads (default: serve's own).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
LOAD="$BUILD/bench/load_gen"
PORT=$((20000 + RANDOM % 20000))

start_server() {  # model, kv-tokens: starts lensd serve (pid in $SERVER_PID), waits until ready
  local log
  log=$(mktemp)
  "$BUILD/server/lensd" serve --host 127.0.0.1 --port "$PORT" --model "$1" \
    --kv-tokens "$2" --max-running 64 ${THREADS:+--threads "$THREADS"} 2>"$log" &
  SERVER_PID=$!
  for _ in $(seq 600); do grep -q "ready: serving" "$log" && break; sleep 0.1; done
  grep -q "ready: serving" "$log" || { cat "$log"; kill "$SERVER_PID"; return 1; }
  rm -f "$log"
}

stop_server() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; }

run_model() {  # model, kv-tokens, prompt tokens, new tokens, cache prompt tokens
  local model="$1" prompt="$3" new="$4" cache_prompt="$5"
  start_server "$1" "$2" || return 1
  local addr="127.0.0.1:$PORT"
  "$LOAD" --addr "$addr" --mode generate --streams 1 --requests 1 --prompt-tokens 8 --max-new-tokens 4 >/dev/null  # warm-up
  for streams in 1 8 32; do
    "$LOAD" --addr "$addr" --label "$model" --mode generate --streams "$streams" \
      --requests 2 --prompt-tokens "$prompt" --max-new-tokens "$new"
  done
  "$LOAD" --addr "$addr" --label "$model" --mode cache --streams 1 --requests 3 \
    --prompt-tokens "$cache_prompt"
  stop_server
}

busy_neighbour() {  # model: one-stream decode quiet, beside one busy process, quiet again
  start_server "$1" 8192 || return 1
  local addr="127.0.0.1:$PORT" busy
  "$LOAD" --addr "$addr" --mode generate --streams 1 --requests 1 --prompt-tokens 8 --max-new-tokens 4 >/dev/null
  for phase in quiet busy quiet; do
    if [ "$phase" = busy ]; then (while :; do :; done) & busy=$!; fi
    "$LOAD" --addr "$addr" --label "$1 $phase" --mode generate --streams 1 --requests 3 \
      --prompt-tokens 32 --max-new-tokens 32
    if [ "$phase" = busy ]; then kill "$busy"; wait "$busy" 2>/dev/null || true; fi
  done
  stop_server
}

echo "== $(nproc) CPU cores; lensd serve on 127.0.0.1:$PORT"
run_model builtin:tiny 16384 32 64 256
run_model builtin:gpt2-small 8192 32 16 64
echo "== decode beside one busy process (a shell loop on one core)"
busy_neighbour builtin:gpt2-small
