#!/usr/bin/python3
"""Eager PyTorch reference for bench/cpu_vs_torch.sh: a GPT-2-small-shaped model (12 layers,
d 768, 12 heads, MLP 3072, vocab 50257, random weights) with a KV cache, timed like lensd's
model_bench: prefill tokens/s for one prompt, cached decode tokens/s at a batch size after a
128-token context. Prints "torch <what> <dtype> <threads> <tok/s>" lines.

Usage: /usr/bin/python3 bench/torch_gpt2.py --threads 1 --dtype float32 --prefill 128,512 --batches 1,16
"""
import argparse
import time

import torch

L, D, H, M, V, CTX = 12, 768, 12, 3072, 50257, 1024


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.fc, self.out = torch.nn.Linear(D, M), torch.nn.Linear(M, D)

    def forward(self, x, cache):
        B, T, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=cache is None) \
            if hasattr(torch.nn.functional, "scaled_dot_product_attention") else \
            self._attend(q, k, v, cache is None)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        x = x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x, (k, v)

    @staticmethod
    def _attend(q, k, v, causal):
        s = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
        if causal:
            n = q.shape[2]
            s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
        return torch.softmax(s, -1) @ v


class Gpt2(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(V, D), torch.nn.Embedding(CTX, D)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(L))
        self.ln_f = torch.nn.LayerNorm(D)

    def forward(self, ids, start, caches):
        pos = torch.arange(start, start + ids.shape[1])
        x = self.wte(ids) + self.wpe(pos)
        new = []
        for block, cache in zip(self.blocks, caches):
            x, c = block(x, cache)
            new.append(c)
        return self.ln_f(x[:, -1]) @ self.wte.weight.T, new  # last position's logits, as lensd


def timed(fn, repeats):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--prefill", default="128,512")
    p.add_argument("--batches", default="1,16")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, a.dtype)
    model = Gpt2().to(dtype).eval()
    with torch.inference_mode():
        for n in [int(v) for v in a.prefill.split(",") if v]:
            ids = torch.randint(0, V, (1, n))
            secs = timed(lambda: model(ids, 0, [None] * L), 2)
            print(f"torch prefill{n} {a.dtype} {a.threads} {n / secs:.1f}", flush=True)
        for b in [int(v) for v in a.batches.split(",") if v]:
            ids = torch.randint(0, V, (b, 128))
            _, caches = model(ids, 0, [None] * L)
            step = torch.randint(0, V, (b, 1))
            state = {"caches": caches, "pos": 128}

            def decode():
                _, state["caches"] = model(step, state["pos"], state["caches"])
                state["pos"] += 1

            secs = timed(decode, 16)
            print(f"torch decode{b} {a.dtype} {a.threads} {b / secs:.1f}", flush=True)


if __name__ == "__main__":
    main()
