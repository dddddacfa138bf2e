"""Gradients measured through a real `lensd serve` (GPT-2-small shape, random weights) on this
machine:

    PYTHONPATH=build/python /usr/bin/python3 bench/grad_bench.py --lensd build/server/lensd

1. RunWithCache of 128 tokens (resid_pre of every layer) with and without a loss objective:
   forward + backward ÷ forward (best of 5 each).
2. A resid_pre PatchSweep of every layer × 64 positions, exact vs attribution (best of 3),
   with peak resident memory of the server after each.
"""
import argparse
import random

import lensd
from sweep_bench import Server, best


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lensd", required=True)
    p.add_argument("--threads", default="2")
    args = p.parse_args()
    server = Server(args.lensd, "--threads", args.threads)
    client = server.client
    rng = random.Random(1)
    vocab = client.model_info()["vocab_size"]
    layers = client.model_info()["n_layers"]
    ids = [rng.randrange(vocab) for _ in range(128)]
    hooks = "blocks.*.hook_resid_pre"
    client.run_with_cache(ids[:8], hooks, grad=lensd.loss())  # warm-up
    fwd = best(lambda: client.run_with_cache(ids, hooks), 5)
    bwd = best(lambda: client.run_with_cache(ids, hooks, grad=lensd.loss()), 5)
    print(f"128 tokens, {layers} layers: forward {fwd * 1e3:.0f} ms, forward+backward "
          f"{bwd * 1e3:.0f} ms, ratio {bwd / fwd:.2f}; peak RSS {peak_rss_mib(server.proc.pid):.0f} MiB")
    clean = [rng.randrange(vocab) for _ in range(64)]
    corrupted = list(clean)
    corrupted[32] = (corrupted[32] + 1) % vocab
    metric = lensd.logit_diff(11, 12)
    exact = best(lambda: client.patch_sweep(clean, corrupted, metric=metric), 3)
    attribution = best(lambda: client.patch_sweep(clean, corrupted, metric=metric,
                                                  method="attribution"), 3)
    print(f"resid_pre sweep {layers} layers x 64 positions: exact {exact:.2f} s, attribution "
          f"{attribution:.3f} s, {exact / attribution:.1f}x; peak RSS "
          f"{peak_rss_mib(server.proc.pid):.0f} MiB")
    server.stop()


if __name__ == "__main__":
    main()
