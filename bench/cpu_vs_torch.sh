#!/usr/bin/env bash
# lensd's CPU backend beside eager PyTorch (Debian's python3-torch, when installed) on the
# same GPT-2-small-shaped model, in one invocation: prefill 128 and 512 tokens, cached decode
# at batch 1 and 16, float32 and bfloat16, 1 and 2 threads; then the ratios against PyTorch's
# best thread count (float32 PyTorch for lensd's bfloat16), and a Llama-3.2-1B-shaped
# bfloat16 decode of lensd alone. Usage: bench/cpu_vs_torch.sh [build dir]
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
OUT=$(mktemp)
echo "== $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== CPU flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512_bf16|avx512bf16|amx_bf16|amx_tile)$' | tr '\n' ' ')"
for threads in 1 2; do
  for dtype in float32 bfloat16; do
    for n in 128 512; do
      "$BUILD/bench/model_bench" --model builtin:gpt2-small --threads "$threads" --dtype "$dtype" \
        --kv-tokens 8192 --prefill "$n" 2>/dev/null |
        awk -v t="$threads" -v d="$dtype" -v n="$n" '/^prefill/ {print "lensd prefill" n, d, t, $4}' >>"$OUT"
    done
    "$BUILD/bench/model_bench" --model builtin:gpt2-small --threads "$threads" --dtype "$dtype" \
      --kv-tokens 8192 --batches 1,16 2>/dev/null |
      awk -v t="$threads" -v d="$dtype" '/^decode/ {print "lensd decode" $3, d, t, $4}' >>"$OUT"
    # PyTorch in float32 only: the goals compare lensd's bfloat16 with PyTorch's float32
    # (PyTorch 1.13's bfloat16 CPU kernels are scalar without AVX512_BF16).
    if [ "$dtype" = float32 ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; then
      /usr/bin/python3 bench/torch_gpt2.py --threads "$threads" --dtype "$dtype" >>"$OUT"
    fi
  done
done
"$BUILD/bench/model_bench" --model builtin:llama-1b --dtype bfloat16 --kv-tokens 1024 --batches 1 \
  2>/dev/null | awk '/^decode/ {print "lensd llama1b-decode1 bfloat16 all", $4}' >>"$OUT"
/usr/bin/python3 - "$OUT" <<'PY'
import collections, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
r = collections.defaultdict(dict)  # (what, dtype) -> {(who, threads): tok/s}
for who, what, dtype, threads, value in rows:
    r[(what, dtype)][(who, threads)] = float(value)
print(f"{'measure':<16}{'dtype':<10}{'lensd 1t':>10}{'lensd 2t':>10}{'torch 1t':>10}{'torch 2t':>10}{'ratio':>8}")
for (what, dtype), v in sorted(r.items()):
    torch_best = max([v.get(("torch", t), 0) for t in ("1", "2")] +
                     [0] if dtype == "float32" else
                     [r[(what, "float32")].get(("torch", t), 0) for t in ("1", "2")])
    lensd_best = max(v.get(("lensd", t), 0) for t in ("1", "2", "all"))
    ratio = f"{lensd_best / torch_best:.2f}x" if torch_best else "-"
    cells = [v.get((w, t)) for w, t in (("lensd", "1"), ("lensd", "2"), ("torch", "1"), ("torch", "2"))]
    if what.startswith("llama"):
        cells = [v.get(("lensd", "all")), None, None, None]
    print(f"{what:<16}{dtype:<10}" + "".join(f"{c:>10.1f}" if c else f"{'-':>10}" for c in cells) + f"{ratio:>8}")
print("ratio: lensd's best thread count over PyTorch's best (bfloat16 rows: over PyTorch float32)")
PY
rm -f "$OUT"
