#!/usr/bin/env bash
# GPU verification in two halves, because GPU machines are lent briefly and cannot build:
#   tools/gpu-check.sh bundle   (here)  build with CUDA, copy the gpu test, the benchmarks and
#                                       every non-system shared library into build/gpu-bundle
#   tools/gpu-check.sh run      (there) run the gpu-labelled tests and the benchmarks from the
#                                       bundle, then print a short table
# With the device tool: run(command="tools/gpu-check.sh run", carry=["build/gpu-bundle"]).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=build/gpu-bundle

bundle() {
  LENSD_CMAKE_FLAGS="-DLENSD_CUDA=ON ${LENSD_CMAKE_FLAGS:-}" bash tools/build.sh
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/lib"
  cp build/tests/cuda_test build/bench/model_bench build/engine/liblensd_spm.so \
    build/engine/cuda/liblensd_cuda_module.so "$BUNDLE/"
  strip --strip-debug "$BUNDLE"/*.so "$BUNDLE"/cuda_test "$BUNDLE"/model_bench
  cp -r tests/data/golden "$BUNDLE/golden"
  for f in "$BUNDLE"/cuda_test "$BUNDLE"/model_bench "$BUNDLE"/*.so; do ldd "$f"; done |
    awk '/=> \// {print $3}' | sort -u |
    grep -vE '/(libc|libm|libstdc\+\+|libgcc_s|ld-linux|libcuda|libcublas|libcublasLt|libnccl|libcudart|libdl|libpthread|librt)\.so' |
    xargs -r -I{} cp -L {} "$BUNDLE/lib/"
  du -sh "$BUNDLE"
}

run() {
  export LD_LIBRARY_PATH="$BUNDLE/lib:/usr/local/cuda/lib64:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib:${LD_LIBRARY_PATH:-}"
  export LENSD_SPM_MODULE="$PWD/$BUNDLE/liblensd_spm.so"
  export LENSD_CUDA_MODULE="$PWD/$BUNDLE/liblensd_cuda_module.so"
  local gpu; gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU")
  echo "== $gpu"
  local out; out=$(mktemp -d)
  # The golden paths are compiled in; point the test at the bundled copy.
  (cd "$BUNDLE" && LENSD_GOLDEN_DIR="$PWD/golden" ./cuda_test --gtest_brief=1) 2>&1 | tee "$out/tests" | tail -20
  # Goals (issue 4): decode batch 1 >= 70% of the weight-read roofline, prefill >= 50% of the
  # measured GEMM peak, capture >= 20 GB/s. MEM_GBS: 4300 on an H200, ~3350 on an H100 SXM.
  "$BUNDLE/model_bench" --model builtin:llama-1b --devices cuda:0 --dtype bfloat16 \
    --batches 1,8,64 --prefill 512 --mem-gbs "${MEM_GBS:-4300}" --peak-tflops measure \
    --kv-tokens 16384 | tee "$out/llama" || true
  "$BUNDLE/model_bench" --model builtin:llama-1b --devices cuda:0 --dtype bfloat16 \
    --batches 1,8,64 --mem-gbs "${MEM_GBS:-4300}" --kv-tokens 16384 --cuda-graphs true |
    sed 's/^decode /decode+graphs /' | tee "$out/graphs" || true
  "$BUNDLE/model_bench" --model builtin:gpt2-small --devices cuda:0 --capture 8x256 \
    --kv-tokens 4096 | tee "$out/gpt2" || true
  echo "== summary ($gpu)"
  grep -E "PASSED|FAILED" "$out/tests" | tail -2
  grep -hE "^(decode|gemm|prefill|capture)" "$out/llama" "$out/graphs" "$out/gpt2"
}

case "${1:-}" in
  bundle) bundle ;;
  run) run ;;
  *) echo "usage: tools/gpu-check.sh bundle|run" >&2; exit 2 ;;
esac
