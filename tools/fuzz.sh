#!/usr/bin/env bash
# libFuzzer targets (tests/fuzz) built with clang, AddressSanitizer and UBSan into build-fuzz.
#   tools/fuzz.sh smoke            each target for a few seconds (CI)
#   tools/fuzz.sh long [SECONDS]   each target for SECONDS (default 600), corpora kept in
#                                  build-fuzz/corpus/<target>; prints execs and findings
# Seed corpora come from the repository (golden models, tokenizers' own files) and from
# ../shared when present. A crash leaves its input in build-fuzz/findings/<target>/.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-smoke}"
SECONDS_EACH="${2:-600}"
[ "$MODE" = smoke ] && SECONDS_EACH=5
bash tools/setup.sh >/dev/null
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLENSD_CUDA=OFF -DLENSD_FUZZ=ON -DLENSD_SANITIZE=address,undefined >/dev/null || exit 1
ninja -C build-fuzz -j"${LENSD_JOBS:-2}" fuzzers || exit 1

SHARED=../shared
seed() {  # seed <target> <files...>: copies existing files into the target's corpus
  local dir="build-fuzz/corpus/$1"; shift
  mkdir -p "$dir"
  for f in "$@"; do [ -f "$f" ] && cp -f "$f" "$dir/" 2>/dev/null; done
  return 0
}
seed fuzz_safetensors tests/data/golden/*/model.safetensors
seed fuzz_config tests/data/golden/*/config.json $SHARED/reference-models/*/config.json
seed fuzz_tokenizer_json tests/fuzz/seeds/tokenizers/*.json $SHARED/tokenizers/llama3style/tokenizer.json
seed fuzz_tokenize tests/fuzz/seeds/*.txt README.md tools/setup.sh
seed fuzz_interventions_json tests/fuzz/seeds/*.json
seed fuzz_request_edge tests/fuzz/seeds/*.pb
seed fuzz_metrics_http tests/fuzz/seeds/*.http

export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
summary=""
for target in fuzz_safetensors fuzz_config fuzz_tokenizer_json fuzz_tokenize fuzz_request_edge \
              fuzz_interventions_json fuzz_metrics_http; do
  mkdir -p "build-fuzz/findings/$target"
  log="build-fuzz/$target.log"
  "build-fuzz/tests/fuzz/$target" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="build-fuzz/findings/$target/" "build-fuzz/corpus/$target" \
    >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  [ -z "$execs" ] && execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  found=$(ls "build-fuzz/findings/$target" | wc -l)
  summary+=$(printf '%-26s %10s execs  %s findings  exit %s' "$target" "${execs:-?}" "$found" "$rc")$'\n'
  if [ "$rc" != 0 ] || [ "$found" != 0 ]; then status=1; tail -30 "$log"; fi
done
printf '\nfuzz %s (%ss each):\n%s' "$MODE" "$SECONDS_EACH" "$summary"
exit $status
