"""tools/gpu-check.sh dry-run: every mode's step limits fit its time budget, and the whole script
runs here without a device (the bundle assembled from this build and sized against the carry
limit, every carried binary's libraries resolved, every GPU step "skipped: no device"), each
mode's summary printing last."""
import os
import re
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
    # Every mode's limits fit its budget, and a command (at most 600 s) leaves room to start.
    totals = [line for line in out if line.strip().startswith("total ")]
    assert len(totals) == 3, out
    for line in totals:
        used, budget = int(line.split()[1]), int(line.split()[5])
        assert used <= budget <= 540, line
    assert int(totals[0].split()[5]) <= 300, totals[0]  # quick: the first card's first call
    expected = {"quick": {"gpu-tests-quick", "llama-bench-quick"},
                "full": {"gpu-tests-rest", "llama-bench", "graphs-bench", "capture-bench"}}
    for mode, skipped_steps in expected.items():
        summary = out.index(next(line for line in out
                                 if line.startswith(f"== summary (no device; mode {mode}")))
        tail = []
        for line in out[summary + 1:]:
            if line.startswith("=="):
                break
            tail.append(line)
        assert tail[0].startswith("PASS  libraries"), tail
        skipped = {line.split()[1].rstrip(":") for line in tail if line.startswith("SKIP")}
        assert skipped == skipped_steps, tail
        assert all("skipped: no device" in line for line in tail if line.startswith("SKIP"))
    assert "MiB of the 64 MiB carry limit" in r.stdout
    # Full logs go to $OUT, where the device tool brings them back from.
    assert (tmp_path / "libraries.log").read_text().count("== ldd ") == 4
    assert (tmp_path / "environment.log").exists()


def test_gpu_check_plan_refuses_a_mode_over_its_budget(tmp_path):
    """The plan is checked, not only printed: a mode whose limits exceed its budget fails."""
    script = (ROOT / "tools/gpu-check.sh").read_text().replace("QUICK_BUDGET=300", "QUICK_BUDGET=100")
    copy = tmp_path / "gpu-check.sh"
    copy.write_text(script)
    r = subprocess.run(["bash", str(copy), "plan"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert re.search(r"mode quick plans \d+ s, over its 100 s", r.stderr), r.stderr
