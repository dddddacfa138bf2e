"""PatchSweep and prefix caching, measured through a real `lensd serve` (GPT-2-small shape,
random weights) on this machine. Run by bench/sweep_bench.sh; needs Debian's Python packages:

    PYTHONPATH=build/python /usr/bin/python3 bench/sweep_bench.py --lensd build/server/lensd

1. A resid_pre sweep of every layer × 20 positions as one PatchSweep, against the same cells
   as sequential RunWithCache requests with one `patch` each (last-position logits only);
   both read the same logit difference, which must agree cell for cell.
2. 32 Generate requests (one new token) whose prompts share a 512-token prefix, one after the
   other, with --prefix-caching true and false: prompt tokens computed and mean TTFT.
"""
import argparse
import random
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

import lensd


class Server:
    def __init__(self, lensd_bin, *args):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [lensd_bin, "serve", "--host", "127.0.0.1", "--port", "0",
             "--model", "builtin:gpt2-small", "--kv-tokens", "8192", *args],
            stderr=self.log, stdout=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:
            self.log.seek(0)
            text = self.log.read()
            if "ready: serving" in text:
                break
            if self.proc.poll() is not None:
                sys.exit(f"lensd exited:\n{text}")
            time.sleep(0.1)
        self.addr = re.search(r"listening on (\S+):(\d+) ", text)
        self.addr = f"127.0.0.1:{self.addr.group(2)}"
        self.client = lensd.Client(self.addr)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def best(fn, repeats):
    """The shortest of `repeats` timed calls of fn, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def sweep_vs_requests(server, positions, rng):
    client = server.client
    vocab = client.model_info()["vocab_size"]
    clean = [rng.randrange(vocab) for _ in range(positions)]
    corrupted = list(clean)
    corrupted[positions // 2] = (corrupted[positions // 2] + 1) % vocab
    answer, wrong = 11, 12
    metric = lensd.logit_diff(answer, wrong)
    client.patch_sweep(clean[:4], corrupted[:4], metric=metric, layers=(0, 1))  # warm-up
    t0 = time.perf_counter()
    r = client.patch_sweep(clean, corrupted, metric=metric)
    sweep_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = np.zeros_like(r.grid)
    for li, layer in enumerate(r.layers):
        for pi, position in enumerate(r.positions):
            iv = lensd.patch(f"blocks.{layer}.hook_resid_pre", 0, prompts=[1], positions=[position])
            logits, _ = client.run_with_cache([clean, corrupted], names_filter=[],
                                              position_slice=(-1, None), interventions=[iv])
            grid[li, pi] = float(logits[1, -1, answer]) - float(logits[1, -1, wrong])
    requests_s = time.perf_counter() - t0
    np.testing.assert_allclose(r.grid, grid, rtol=0, atol=1e-5)
    cells = r.grid.size
    print(f"sweep {len(r.layers)}x{positions} resid_pre: PatchSweep {sweep_s:.2f} s "
          f"({cells / sweep_s:.1f} cells/s; prompt tokens computed {r.prompt_tokens_computed}, "
          f"from cache {r.prompt_tokens_cached}); {cells} sequential patch requests "
          f"{requests_s:.2f} s ({cells / requests_s:.1f} cells/s, {cells * 2 * positions} prompt "
          f"tokens); speedup {requests_s / sweep_s:.2f}x")


def shared_prefix(lensd_bin, threads, caching, rng_seed):
    server = Server(lensd_bin, "--threads", str(threads), "--prefix-caching", caching)
    try:
        rng = random.Random(rng_seed)
        vocab = server.client.model_info()["vocab_size"]
        prefix = [rng.randrange(vocab) for _ in range(512)]
        list(server.client.generate([1, 2, 3], max_new_tokens=1))  # warm-up
        hits0 = server.client.model_info()["prefix_hit_tokens"]
        ttft, t0 = [], time.perf_counter()
        for i in range(32):
            suffix = [rng.randrange(vocab) for _ in range(16)]
            for event in server.client.generate(prefix + suffix, max_new_tokens=1, ignore_eos=True):
                if isinstance(event, lensd.GenerateDone):
                    ttft.append(event.time_to_first_token_ms)
        total = time.perf_counter() - t0
        computed = 32 * 528 - (server.client.model_info()["prefix_hit_tokens"] - hits0)
        print(f"32 requests, 512-token shared prefix + 16, prefix caching {caching}: prompt tokens "
              f"computed {computed:.0f} of {32 * 528}; mean TTFT {np.mean(ttft):.1f} ms "
              f"(first {ttft[0]:.1f}, median {np.median(ttft):.1f}); total {total:.2f} s")
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lensd", default="build/server/lensd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--positions", type=int, default=20)
    args = parser.parse_args()
    server = Server(args.lensd, "--threads", str(args.threads))
    try:
        sweep_vs_requests(server, args.positions, random.Random(1))
    finally:
        server.stop()
    for caching in ("true", "false"):
        shared_prefix(args.lensd, args.threads, caching, 2)


if __name__ == "__main__":
    main()
