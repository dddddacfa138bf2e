#!/usr/bin/env bash
# GPU verification in two halves, because GPU machines are lent briefly and cannot build:
#   tools/gpu-check.sh bundle    (here)  build with CUDA; copy the gpu test, the benchmark and
#                                        every non-system shared library into build/gpu-bundle
#                                        (fails if the bundle plus the tracked tree would not
#                                        fit the device tool's 64 MiB carry limit with margin)
#   tools/gpu-check.sh run       (there) every step under its own timeout, full logs in $OUT:
#                                        ldd of everything carried, the gpu tests, decode and
#                                        prefill benchmarks, capture; the summary prints last
#   tools/gpu-check.sh sanitize  (there) compute-sanitizer memcheck and racecheck on the op
#                                        tests, and a CUDA_LAUNCH_BLOCKING=1 rerun of failures
#   tools/gpu-check.sh dry-run   (here)  the bundle from the existing build (no rebuild), then
#                                        `run` without a device: every GPU step reports
#                                        "skipped: no device" and the summary still prints
# With the device tool: run(command="tools/gpu-check.sh run", carry=["build/gpu-bundle"]).
# The tracked tree travels with the bundle, so the golden models are read from
# tests/data/golden, not copied.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE=$ROOT/build/gpu-bundle
CARRY_LIMIT=$((64 << 20))
MARGIN=$((6 << 20))

assemble() {  # copies the built gpu artifacts and their non-system libraries into $BUNDLE
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/lib"
  cp build/tests/cuda_test build/bench/model_bench build/engine/liblensd_spm.so \
    build/engine/cuda/liblensd_cuda_module.so "$BUNDLE/" || return 1
  strip --strip-debug "$BUNDLE"/*.so "$BUNDLE/cuda_test" "$BUNDLE/model_bench"
  for f in "$BUNDLE"/cuda_test "$BUNDLE"/model_bench "$BUNDLE"/*.so; do ldd "$f"; done |
    awk '/=> \// {print $3}' | sort -u |
    grep -vE '/(libc|libm|libstdc\+\+|libgcc_s|ld-linux-x86-64|libcuda|libcublas|libcublasLt|libnccl|libcudart|libdl|libpthread|librt)\.so' |
    xargs -r -I{} cp -L {} "$BUNDLE/lib/"
  local bundle tracked
  bundle=$(du -sb "$BUNDLE" | cut -f1)
  tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  echo "bundle $((bundle >> 20)) MiB + tracked tree $((tracked >> 20)) MiB of the $((CARRY_LIMIT >> 20)) MiB carry limit"
  if ((bundle + tracked > CARRY_LIMIT - MARGIN)); then
    echo "error: the bundle would not fit the carry limit with a $((MARGIN >> 20)) MiB margin" >&2
    return 1
  fi
}

bundle() {
  LENSD_CMAKE_FLAGS="-DLENSD_CUDA=ON ${LENSD_CMAKE_FLAGS:-}" bash tools/build.sh || exit 1
  assemble || exit 1
}

# ---- on the GPU machine ----------------------------------------------------------------

LOGS=${OUT:-$(mktemp -d)}
declare -a RESULTS=()
HAVE_GPU=0

# Library folders: the bundle, CUDA's own, and any Python wheel's nvidia/*/lib (NCCL, and
# cuBLAS where /usr/local/cuda lacks it), looked up here rather than assumed.
library_path() {
  local dirs=("$BUNDLE/lib" /usr/local/cuda/lib64 /usr/local/nvidia/lib64)
  local wheel
  while IFS= read -r wheel; do dirs+=("$wheel"); done < <(
    find /opt /usr/local /usr/lib /root /home -maxdepth 8 -type d \
      -path '*-packages/nvidia/*/lib' 2>/dev/null | sort)
  local IFS=:
  echo "${dirs[*]}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

step() {  # step NAME TIMEOUT_S needs-gpu|any COMMAND...: full log in $LOGS/NAME.log
  local name=$1 limit=$2 needs=$3; shift 3
  if [ "$needs" = needs-gpu ] && [ "$HAVE_GPU" = 0 ]; then
    RESULTS+=("SKIP  $name: skipped: no device")
    return 0
  fi
  local start=$SECONDS rc
  # Through bash: the steps are often this script's functions (exported below).
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  if [ $rc = 0 ]; then
    RESULTS+=("PASS  $name ($((SECONDS - start)) s)")
  else
    [ $rc = 124 ] && echo "timed out after $limit s" >>"$LOGS/$name.log"
    RESULTS+=("FAIL  $name (exit $rc, $((SECONDS - start)) s): $(tail -n 2 "$LOGS/$name.log" | tr '\n' ' ' | cut -c1-300)")
  fi
}

check_libraries() {  # every carried binary and module resolves every library
  local missing=0 f
  for f in "$BUNDLE"/cuda_test "$BUNDLE"/model_bench "$BUNDLE"/*.so; do
    echo "== ldd $f"
    ldd "$f"
    if ldd "$f" | grep -q "not found"; then
      echo "missing: $(basename "$f") needs $(ldd "$f" | awk '/not found/ {print $1}' | tr '\n' ' ')"
      missing=1
    fi
  done
  return $missing
}

gpu_tests() {
  LENSD_GOLDEN_DIR="$ROOT/tests/data/golden" "$BUNDLE/cuda_test" --gtest_brief=1 "$@"
}

llama_bench() {  # decode batch 1/8/64 against the weight-read roofline, prefill vs GEMM peak
  "$BUNDLE/model_bench" --model builtin:llama-1b --devices cuda:0 --dtype bfloat16 \
    --batches 1,8,64 --prefill 8x1024 --mem-gbs "${MEM_GBS:-4300}" --peak-tflops measure \
    --kv-tokens 16384 "$@"
}

graphs_bench() {
  llama_bench --cuda-graphs true | sed 's/^decode /decode+graphs /'
}

capture_bench() {
  "$BUNDLE/model_bench" --model builtin:gpt2-small --devices cuda:0 --capture 8x256 --kv-tokens 4096
}

export ROOT BUNDLE
export -f check_libraries gpu_tests llama_bench graphs_bench capture_bench

summary() {
  echo
  echo "== summary ($GPU_NAME; logs in $LOGS)"
  if [ -f "$LOGS/gpu-tests.log" ]; then
    grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$LOGS/gpu-tests.log" | head -40
  fi
  grep -hE "^(decode|gemm|prefill|capture)" "$LOGS"/llama-bench.log "$LOGS"/graphs-bench.log \
    "$LOGS"/capture-bench.log 2>/dev/null
  printf '%s\n' "${RESULTS[@]}"
}

prepare_run() {
  export LD_LIBRARY_PATH
  LD_LIBRARY_PATH=$(library_path)
  export LENSD_SPM_MODULE="$BUNDLE/liblensd_spm.so"
  export LENSD_CUDA_MODULE="$BUNDLE/liblensd_cuda_module.so"
  GPU_NAME=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
  if [ -n "$GPU_NAME" ] && [ "${GPU_CHECK_DRY_RUN:-0}" = 0 ]; then HAVE_GPU=1; else GPU_NAME="no device"; fi
  echo "== $GPU_NAME; LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee "$LOGS/environment.log"
  trap summary EXIT
  if [ ! -x "$BUNDLE/cuda_test" ]; then
    RESULTS+=("FAIL  bundle: $BUNDLE/cuda_test absent (carry build/gpu-bundle)")
    exit 1
  fi
}

run() {
  prepare_run
  step libraries 60 any check_libraries
  step gpu-tests 300 needs-gpu gpu_tests
  step llama-bench 150 needs-gpu llama_bench
  step graphs-bench 120 needs-gpu graphs_bench
  step capture-bench 60 needs-gpu capture_bench
}

sanitize() {  # the second call of a session: memory and race checks, blocking launches
  prepare_run
  local cs=/usr/local/cuda/bin/compute-sanitizer
  # Our kernels; the batch-invariance GEMM test (cuBLASLt, up to a 128256 x 2048 head) would
  # take most of the step's time under the sanitizers.
  local ops='OpTest.*:-OpTest.LinearRowsDoNotDependOnTheirBatch'
  step libraries 60 any check_libraries
  step memcheck 240 needs-gpu "$cs" --tool memcheck --error-exitcode 1 \
    env LENSD_GOLDEN_DIR="$ROOT/tests/data/golden" "$BUNDLE/cuda_test" --gtest_filter="$ops"
  step racecheck 240 needs-gpu "$cs" --tool racecheck --error-exitcode 1 \
    env LENSD_GOLDEN_DIR="$ROOT/tests/data/golden" "$BUNDLE/cuda_test" --gtest_filter="$ops"
  local failed
  failed=$(grep -hoE '^\[  FAILED  \] [A-Za-z0-9_/.]+' "$LOGS"/memcheck.log "$LOGS"/racecheck.log \
    2>/dev/null | awk '{print $4}' | sort -u | paste -sd: -)
  if [ -n "$failed" ]; then
    step blocking-rerun 240 needs-gpu env CUDA_LAUNCH_BLOCKING=1 \
      LENSD_GOLDEN_DIR="$ROOT/tests/data/golden" "$BUNDLE/cuda_test" --gtest_filter="$failed"
  fi
}

# Exit 1 when a step failed (the summary still prints last, from the EXIT trap).
finish() {
  local r
  for r in "${RESULTS[@]}"; do [[ $r == FAIL* ]] && exit 1; done
  exit 0
}

case "${1:-}" in
  bundle) bundle ;;
  run) run; finish ;;
  sanitize) sanitize; finish ;;
  dry-run) assemble || exit 1; GPU_CHECK_DRY_RUN=1 run; finish ;;
  *) echo "usage: tools/gpu-check.sh bundle|run|sanitize|dry-run" >&2; exit 2 ;;
esac
