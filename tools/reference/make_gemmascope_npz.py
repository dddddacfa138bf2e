#!/usr/bin/env python3
"""A tiny Gemma Scope-format SAE (params.npz: W_enc, W_dec, b_enc, b_dec, threshold, as
np.savez_compressed writes it) for the golden GPT-2-shaped model at blocks.1.hook_resid_post,
and its reference computed by numpy from numpy's own reading of the archive (np.load) and the
golden reference's hook values: Gemma Scope's JumpReLU, acts = relu(pre) · (pre > threshold),
pre = x·W_enc + b_enc (no b_dec on the input), recons = acts·W_dec + b_dec.

Needs only numpy (Debian's python3-numpy does):
  /usr/bin/python3 tools/reference/make_gemmascope_npz.py
Writes tests/data/saes/gemmascope_gpt2/{params.npz, reference.safetensors}.
"""
import json
import os
import struct

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data")
HOOK = "blocks.1.hook_resid_post"


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    kinds = {"F32": "<f4", "I32": "<i4"}
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]],
                             kinds[v["dtype"]]).reshape(v["shape"])
            for k, v in header.items() if k != "__metadata__"}


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        t = np.ascontiguousarray(t)
        dtype = {"float32": "F32", "int32": "I32"}[t.dtype.name]
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
        blobs.append(t.tobytes())
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def main():
    golden = read_safetensors(os.path.join(ROOT, "golden", "gpt2", "reference.safetensors"))
    d_in, d_sae = 64, 48
    rng = np.random.default_rng(7)
    out = os.path.join(ROOT, "saes", "gemmascope_gpt2")
    os.makedirs(out, exist_ok=True)
    np.savez_compressed(
        os.path.join(out, "params.npz"),
        W_enc=(rng.standard_normal((d_in, d_sae)) / np.sqrt(d_in)).astype(np.float32),
        W_dec=(rng.standard_normal((d_sae, d_in)) * 0.3).astype(np.float32),
        b_enc=(rng.standard_normal(d_sae) * 0.2).astype(np.float32),
        b_dec=(rng.standard_normal(d_in) * 0.1).astype(np.float32),
        threshold=(rng.random(d_sae) * 0.3).astype(np.float32))
    p = np.load(os.path.join(out, "params.npz"))  # numpy's own reading of the archive
    ref = {}
    for j in range(2):
        x = golden[f"p{j}.{HOOK}"].astype(np.float64)
        pre = x @ p["W_enc"] + p["b_enc"]
        acts = np.maximum(pre, 0) * (pre > p["threshold"])
        recons = acts @ p["W_dec"] + p["b_dec"]
        ref[f"p{j}.input_ids"] = golden[f"p{j}.input_ids"].astype(np.int32)
        ref[f"p{j}.{HOOK}.hook_sae_acts_pre"] = pre.astype(np.float32)
        ref[f"p{j}.{HOOK}.hook_sae_acts_post"] = acts.astype(np.float32)
        ref[f"p{j}.{HOOK}.hook_sae_recons"] = recons.astype(np.float32)
    write_safetensors(os.path.join(out, "reference.safetensors"), ref)


if __name__ == "__main__":
    main()
