"""An attached SAE measured through a real `lensd serve` (GPT-2-small shape, random weights) on
this machine:

    PYTHONPATH=build/python /usr/bin/python3 bench/sae_bench.py --lensd build/server/lensd

Writes a random 16,384-feature TopK SAE (k 64) at blocks.6.hook_resid_post (d_in 768) as an
SAELens directory, then times RunWithCache of 128 tokens (best of 7 each): the plain model
capturing the hook; the SAE attached (error kept) capturing its feature activations
hook_sae_acts_post (the decoder does not run); the same with every hook_sae_* captured (encoder
and decoder); the SAE spliced in (logits only). Reports the bytes of the dense
hook_sae_acts_post for those 128 tokens on the wire against feature_top_k 64 (index + value).
"""
import argparse
import json
import struct
import tempfile
from pathlib import Path

import numpy as np

import lensd

from sweep_bench import Server, best


def write_sae(directory: Path, d_in: int, d_sae: int, hook: str):
    rng = np.random.default_rng(0)
    tensors = {"W_enc": rng.standard_normal((d_in, d_sae), np.float32) / np.sqrt(d_in),
               "W_dec": rng.standard_normal((d_sae, d_in), np.float32) * 0.05,
               "b_enc": rng.standard_normal(d_sae, np.float32) * 0.1 - 0.5,
               "b_dec": np.zeros(d_in, np.float32)}
    header, offset = {}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(directory / "sae_weights.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for t in tensors.values():
            f.write(t.tobytes())
    (directory / "cfg.json").write_text(json.dumps(
        {"architecture": "topk", "k": 64, "d_in": d_in, "d_sae": d_sae,
         "metadata": {"hook_name": hook}}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lensd", required=True)
    p.add_argument("--threads", default="2")
    args = p.parse_args()
    hook = "blocks.6.hook_resid_post"
    with tempfile.TemporaryDirectory() as tmp:
        write_sae(Path(tmp), 768, 16384, hook)
        server = Server(args.lensd, "--threads", args.threads, "--sae", f"s={tmp}")
        client = server.client
        rng = np.random.default_rng(1)
        ids = rng.integers(0, client.model_info()["vocab_size"], 128).tolist()
        client.run_with_cache(ids[:8], [], saes=["s"])  # warm-up
        feats = f"{hook}.hook_sae_acts_post"
        plain = best(lambda: client.run_with_cache(ids, hook), 7)
        kept = best(lambda: client.run_with_cache(ids, feats, saes=["s"]), 7)
        top = best(lambda: client.run_with_cache(ids, feats, saes=["s"], feature_top_k=64), 7)
        _, sparse = client.run_with_cache(ids, feats, saes=["s"], feature_top_k=64)
        every = best(lambda: client.run_with_cache(ids, f"{hook}.hook_sae_*", saes=["s"]), 7)
        logits = best(lambda: client.run_with_cache(ids, []), 7)
        spliced = best(lambda: client.run_with_cache(ids, [], saes=[lensd.sae("s", splice=True)]), 7)
        _, cache = client.run_with_cache(ids, feats, saes=["s"])
        acts = cache[feats]
        server.stop()
    print(f"128 tokens, capturing {hook}: {plain * 1e3:.1f} ms; with the SAE capturing "
          f"hook_sae_acts_post {kept * 1e3:.1f} ms (+{(kept / plain - 1) * 100:.1f} %); every "
          f"hook_sae_* {every * 1e3:.1f} ms (+{(every / plain - 1) * 100:.1f} %); feature_top_k "
          f"64 {top * 1e3:.1f} ms (+{(top / plain - 1) * 100:.1f} %)")
    print(f"128 tokens, logits only: {logits * 1e3:.1f} ms; SAE spliced {spliced * 1e3:.1f} ms "
          f"(+{(spliced / logits - 1) * 100:.1f} %)")
    nonzero = int((acts > 0).sum())
    sparse_bytes = sum(sparse[f"{feats}.{part}"].nbytes for part in ("top_indices", "top_values"))
    print(f"hook_sae_acts_post, 128 tokens: dense float32 {acts.nbytes} bytes; "
          f"{nonzero / acts.shape[1]:.1f} active features per position; feature_top_k 64 "
          f"(int32 index + float32 value): {sparse_bytes} bytes ({acts.nbytes / sparse_bytes:.0f}x "
          f"fewer)")


if __name__ == "__main__":
    main()
