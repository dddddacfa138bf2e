#!/usr/bin/env bash
# GPU verification in halves, because GPU machines are lent briefly (15 minutes of device time
# a task, at most 600 s a command) and cannot build:
#   tools/gpu-check.sh bundle    (here)  build with CUDA; copy the gpu test, the benchmark and
#                                        every non-system shared library into build/gpu-bundle
#                                        (fails if the bundle plus the tracked tree would not
#                                        fit the device tool's 64 MiB carry limit with margin)
#   tools/gpu-check.sh quick     (there) first call on a fresh card, <= 300 s: libraries, load +
#                                        golden + batch invariance, one decode/prefill benchmark
#   tools/gpu-check.sh full      (there) second call, <= 540 s: the other gpu tests and the rest
#                                        of the benchmarks (decode 1/8/64, CUDA graphs, capture)
#   tools/gpu-check.sh sanitize  (there) <= 540 s: compute-sanitizer memcheck and racecheck on the
#                                        op tests, a CUDA_LAUNCH_BLOCKING=1 rerun of failures
#   tools/gpu-check.sh plan      (here)  each mode's steps, their time limits and the sums
#   tools/gpu-check.sh dry-run   (here)  checks every mode's plan fits its budget, then the
#                                        bundle from the existing build (no rebuild) and quick
#                                        and full without a device: every GPU step reports
#                                        "skipped: no device" and the summary still prints
# Every step runs under its own limit; the limits of a mode sum to at most its budget, and a
# deadline (GPU_CHECK_BUDGET_S, default the mode's budget) cuts the last steps short if the
# machine is slower than planned, so the summary always prints (last) inside the command's time.
# With the device tool: run(command="tools/gpu-check.sh quick", carry=["build/gpu-bundle"],
# timeout_s=360), then the same with `full` (timeout_s=600) while device time is left.
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
PLAN_ONLY=0
PLANNED=0
DEADLINE=0
SUMMARY_RESERVE=10  # seconds kept for the summary after the deadline cuts a step

# What the first card must show (load, golden end to end, GEMM batch invariance); `full`
# runs every other gpu test.
QUICK_TESTS='OpTest.LinearWithAndWithoutBias:OpTest.LinearRowsDoNotDependOnTheirBatch:CudaNorm.*:Golden/GoldenOnGpu.MatchesCpuAndCachedDecodeEqualsRecompute/*'

# Library folders: the bundle, CUDA's own, and every Python `nvidia` wheel's */lib (NCCL, and
# cuBLAS where /usr/local/cuda lacks it), asked of Python itself, then searched for.
library_path() {
  local dirs=("$BUNDLE/lib" /usr/local/cuda/lib64 /usr/local/nvidia/lib64)
  local found py
  for py in python3 /usr/bin/python3; do
    command -v "$py" >/dev/null || continue
    found=$("$py" -c 'import glob, nvidia
print("\n".join(d for p in nvidia.__path__ for d in sorted(glob.glob(p + "/*/lib"))))' 2>/dev/null)
    [ -n "$found" ] && break
  done
  [ -n "$found" ] || found=$(find /opt /usr/local /usr/lib /root /home -maxdepth 10 -type d \
    -path '*-packages/nvidia/*/lib' 2>/dev/null | sort)
  local dir
  while IFS= read -r dir; do [ -n "$dir" ] && dirs+=("$dir"); done <<<"$found"
  local IFS=:
  echo "${dirs[*]}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

step() {  # step NAME LIMIT_S needs-gpu|any COMMAND...: full log in $LOGS/NAME.log
  local name=$1 limit=$2 needs=$3; shift 3
  if [ "$PLAN_ONLY" = 1 ]; then
    printf '  %-16s %4d s\n' "$name" "$limit"
    PLANNED=$((PLANNED + limit))
    return 0
  fi
  if [ "$needs" = needs-gpu ] && [ "$HAVE_GPU" = 0 ]; then
    RESULTS+=("SKIP  $name: skipped: no device")
    return 0
  fi
  local left=$((DEADLINE - SECONDS - SUMMARY_RESERVE))
  if ((left < 5)); then
    RESULTS+=("FAIL  $name: not run: the ${BUDGET} s budget is spent")
    return 0
  fi
  ((limit > left)) && limit=$left
  local start=$SECONDS rc
  # Through bash: the steps are often this script's functions (exported below).
  timeout --kill-after=5 "$limit" bash -c '"$@"' "$name" "$@" >"$LOGS/$name.log" 2>&1
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

llama_bench() {  # decode against the weight-read roofline, prefill 8x1024 vs the GEMM peak
  "$BUNDLE/model_bench" --model builtin:llama-1b --devices cuda:0 --dtype bfloat16 \
    --prefill 8x1024 --mem-gbs "${MEM_GBS:-4300}" --peak-tflops measure --kv-tokens 16384 "$@"
}

graphs_bench() {
  llama_bench --batches 1,8,64 --cuda-graphs true | sed 's/^decode /decode+graphs /'
}

capture_bench() {
  "$BUNDLE/model_bench" --model builtin:gpt2-small --devices cuda:0 --capture 8x256 --kv-tokens 4096
}

export ROOT BUNDLE
export -f check_libraries gpu_tests llama_bench graphs_bench capture_bench

summary() {
  echo
  echo "== summary ($GPU_NAME; mode $MODE, budget $BUDGET s, $SECONDS s used; logs in $LOGS)"
  local log
  for log in "$LOGS"/gpu-tests*.log; do
    [ -f "$log" ] && grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$log" | head -40
  done
  grep -hE "^(decode|gemm|prefill|capture)" "$LOGS"/*bench*.log 2>/dev/null
  printf '%s\n' "${RESULTS[@]}"
}

prepare_run() {  # prepare_run MODE BUDGET_S
  MODE=$1 BUDGET=${GPU_CHECK_BUDGET_S:-$2}
  DEADLINE=$((SECONDS + BUDGET))
  export LD_LIBRARY_PATH
  LD_LIBRARY_PATH=$(library_path)
  export LENSD_SPM_MODULE="$BUNDLE/liblensd_spm.so"
  export LENSD_CUDA_MODULE="$BUNDLE/liblensd_cuda_module.so"
  GPU_NAME=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
  if [ -n "$GPU_NAME" ] && [ "${GPU_CHECK_DRY_RUN:-0}" = 0 ]; then HAVE_GPU=1; else GPU_NAME="no device"; fi
  echo "== $GPU_NAME; mode $MODE; LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee "$LOGS/environment.log"
  trap summary EXIT
  if [ ! -x "$BUNDLE/cuda_test" ]; then
    RESULTS+=("FAIL  bundle: $BUNDLE/cuda_test absent (carry build/gpu-bundle)")
    exit 1
  fi
}

# The modes: each one's steps, most telling first (a cut deadline takes the last ones). The
# budgets are what one device-tool command may take (600 s) less start-up and transfer slack.
QUICK_BUDGET=300
FULL_BUDGET=540
SANITIZE_BUDGET=540

quick_steps() {
  step libraries 20 any check_libraries
  step gpu-tests-quick 170 needs-gpu gpu_tests --gtest_filter="$QUICK_TESTS"
  step llama-bench-quick 100 needs-gpu llama_bench --batches 1,8
}

full_steps() {
  step libraries 20 any check_libraries
  step gpu-tests-rest 250 needs-gpu gpu_tests --gtest_filter="-$QUICK_TESTS"
  step llama-bench 100 needs-gpu llama_bench --batches 1,8,64
  step graphs-bench 90 needs-gpu graphs_bench
  step capture-bench 50 needs-gpu capture_bench
}

sanitize_steps() {  # memory and race checks, then blocking launches for what failed
  local cs=/usr/local/cuda/bin/compute-sanitizer
  # Our kernels; the batch-invariance GEMM test (cuBLASLt, up to a 128256 x 2048 head) would
  # take most of the step's time under the sanitizers.
  local ops='OpTest.*:-OpTest.LinearRowsDoNotDependOnTheirBatch'
  step libraries 20 any check_libraries
  step memcheck 220 needs-gpu "$cs" --tool memcheck --error-exitcode 1 \
    env LENSD_GOLDEN_DIR="$ROOT/tests/data/golden" "$BUNDLE/cuda_test" --gtest_filter="$ops"
  step racecheck 200 needs-gpu "$cs" --tool racecheck --error-exitcode 1 \
    env LENSD_GOLDEN_DIR="$ROOT/tests/data/golden" "$BUNDLE/cuda_test" --gtest_filter="$ops"
  local failed=""
  [ "$PLAN_ONLY" = 1 ] || failed=$(grep -hoE '^\[  FAILED  \] [A-Za-z0-9_/.]+' \
    "$LOGS"/memcheck.log "$LOGS"/racecheck.log 2>/dev/null | awk '{print $4}' | sort -u | paste -sd: -)
  if [ -n "$failed" ] || [ "$PLAN_ONLY" = 1 ]; then
    step blocking-rerun 90 needs-gpu env CUDA_LAUNCH_BLOCKING=1 \
      LENSD_GOLDEN_DIR="$ROOT/tests/data/golden" "$BUNDLE/cuda_test" --gtest_filter="$failed"
  fi
}

# Prints every mode's steps and limits; fails when a mode's limits exceed its budget.
plan() {
  local mode budget over=0
  PLAN_ONLY=1
  for mode in quick full sanitize; do
    budget=$(eval echo "\$${mode^^}_BUDGET")
    PLANNED=0
    echo "mode $mode:"
    "${mode}_steps"
    echo "  total $PLANNED s of a $budget s budget"
    ((PLANNED <= budget)) || { echo "error: mode $mode plans $PLANNED s, over its $budget s" >&2; over=1; }
  done
  PLAN_ONLY=0
  return $over
}

run_mode() {  # run_mode MODE
  local budget
  budget=$(eval echo "\$${1^^}_BUDGET")
  prepare_run "$1" "$budget"
  "${1}_steps"
}

# Exit 1 when a step failed (the summary still prints last, from the EXIT trap).
finish() {
  local r
  for r in "${RESULTS[@]}"; do [[ $r == FAIL* ]] && exit 1; done
  exit 0
}

case "${1:-}" in
  bundle) bundle ;;
  quick | full | sanitize) run_mode "$1"; finish ;;
  plan) plan ;;
  dry-run)
    plan || exit 1
    assemble || exit 1
    # Each mode in a child of its own (each prints its own summary on exit).
    GPU_CHECK_DRY_RUN=1 bash "$0" quick; q=$?
    GPU_CHECK_DRY_RUN=1 bash "$0" full; f=$?
    exit $((q || f)) ;;
  *) echo "usage: tools/gpu-check.sh bundle|quick|full|sanitize|plan|dry-run" >&2; exit 2 ;;
esac
