"""tools/gpu-check.sh dry-run: the GPU check's whole script runs here without a device (the
bundle assembled from this build and sized against the carry limit, every carried binary's
libraries resolved, every GPU step "skipped: no device"), and its summary prints last."""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import LENSD, ROOT


def test_gpu_check_dry_run(tmp_path):
    build = Path(LENSD).resolve().parents[1]
    if not (build / "engine/cuda/liblensd_cuda_module.so").exists():
        pytest.skip("built without CUDA (no nvcc): nothing to bundle")
    if build != ROOT / "build":
        pytest.skip(f"the script bundles from {ROOT / 'build'}, this build is {build}")
    r = subprocess.run(["bash", str(ROOT / "tools/gpu-check.sh"), "dry-run"], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "OUT": str(tmp_path)})
    out = r.stdout.strip().splitlines()
    assert r.returncode == 0, r.stdout + r.stderr
    summary = out.index(next(line for line in out if line.startswith("== summary (no device")))
    tail = out[summary + 1:]
    assert tail[0].startswith("PASS  libraries"), tail
    skipped = {line.split()[1].rstrip(":") for line in tail if line.startswith("SKIP")}
    assert skipped == {"gpu-tests", "llama-bench", "graphs-bench", "capture-bench"}, tail
    assert all("skipped: no device" in line for line in tail if line.startswith("SKIP"))
    assert "MiB of the 64 MiB carry limit" in r.stdout
    # Full logs go to $OUT, where the device tool brings them back from.
    assert (tmp_path / "libraries.log").read_text().count("== ldd ") == 4
    assert (tmp_path / "environment.log").exists()
