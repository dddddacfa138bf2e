"""Fixtures for the end-to-end tests: real `lensd serve` processes on 127.0.0.1.

Run through ctest (which sets LENSD_BIN, LENSCTL_BIN, LENSD_GOLDEN_DIR and PYTHONPATH), or by
hand: PYTHONPATH=build/python /usr/bin/python3 -m pytest tests/e2e
"""
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LENSD = os.environ.get("LENSD_BIN", str(ROOT / "build/server/lensd"))
LENSCTL = os.environ.get("LENSCTL_BIN", str(ROOT / "build/client/lensctl"))
GOLDEN = Path(os.environ.get("LENSD_GOLDEN_DIR", str(ROOT / "tests/data/golden")))
FAMILIES = ["gpt2", "llama", "qwen2", "gpt_neox"]
# The newer families' models and references (tools/reference/make_family_goldens.py), beside
# the golden ones.
NEW_FAMILIES = ["qwen3", "olmo2", "gemma2", "gemma3_text", "phi3", "phi3_longrope", "mixtral",
                "qwen3_moe", "qwen3_moe_sparse"]


def model_dir(family):
    """The directory of a golden or newer family's model and its reference.safetensors."""
    return GOLDEN / family if family in FAMILIES else GOLDEN.parent / "families" / family


class Server:
    """A lensd serve process; `addr` once it is listening, stderr kept in `log`."""

    def __init__(self, *args, wait_ready=True, env=None):
        self.proc = subprocess.Popen(
            [LENSD, "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        self.log = []
        self._listening = threading.Event()
        self._ready = threading.Event()
        self.addr = None
        threading.Thread(target=self._pump, daemon=True).start()
        assert self._listening.wait(60), "lensd did not start listening:\n" + "".join(self.log)
        if wait_ready:
            self.wait_ready()

    def _pump(self):
        for line in self.proc.stderr:
            self.log.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.addr = f"127.0.0.1:{m.group(1)}"
                self._listening.set()
            if "ready: serving" in line:
                self._ready.set()
        self._listening.set()

    def wait_ready(self, timeout=120):
        assert self._ready.wait(timeout), "lensd did not become ready:\n" + "".join(self.log)

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def server_factory():
    servers = []

    def make(*args, **kwargs):
        s = Server(*args, **kwargs)
        servers.append(s)
        return s

    yield make
    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture(scope="module")
def builtin_server():
    s = Server("--kv-tokens", "8192")
    yield s
    assert s.stop() == 0, "".join(s.log)


def run_cli(binary, *args, check=True):
    r = subprocess.run([binary, *args], capture_output=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r


def read_metadata(path):
    """A safetensors file's __metadata__ (strings by name)."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]).get("__metadata__", {})


def read_safetensors(path):
    """name -> numpy array (f32 / i32 / bf16 widened), the few dtypes lensd writes."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = {"F32": "<f4", "I32": "<i4", "F16": "<f2"}[info["dtype"]]
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(info["shape"])
    return out
