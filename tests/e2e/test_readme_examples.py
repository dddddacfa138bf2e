"""The README's runnable examples (fenced blocks after an `<!-- example: SERVER -->` line) run as
written against a real server, so they cannot rot: `builtin` is the default built-in model,
`gpt2` the GPT-2-shaped built-in one with GPT-2's tokenizer (../shared/tokenizers/gpt2)."""
import os
import re
import subprocess
from pathlib import Path

import pytest

import lensd
from conftest import LENSCTL, LENSD, ROOT, Server

PACKAGE_ROOT = str(Path(lensd.__file__).resolve().parents[1])  # the blocks run in a temp dir

SHARED = Path(os.environ.get("LENSD_SHARED_DIR", ROOT.parent / "shared"))
GPT2_TOKENIZER = SHARED / "tokenizers/gpt2"


def examples():
    """(server kind, language, code) of every marked block, in README order."""
    text = (ROOT / "README.md").read_text()
    pattern = r"<!-- example: (\w+)[^>]*-->\n```(\w+)\n(.*?)```"
    return [(m.group(1), m.group(2), m.group(3)) for m in re.finditer(pattern, text, re.S)]


def run_block(language, code, addr, tmp_path):
    if language == "python":
        code = code.replace('("localhost:50051")', f'("{addr}")')  # Client, RemoteModel
        prelude = f'import lensd\nimport numpy as np\nclient = lensd.Client("{addr}")\n'
        command = ["/usr/bin/python3", "-c", prelude + code]
    else:
        code = code.replace("build/client/lensctl --addr localhost:50051", f"{LENSCTL} --addr {addr}")
        prelude = f'lensctl() {{ {LENSCTL} --addr {addr} "$@"; }}\nset -e\n'
        command = ["bash", "-c", prelude + code]
    r = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, errors="replace",
                       timeout=600,
                       env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": PACKAGE_ROOT})
    assert r.returncode == 0, f"README example failed:\n{code}\n{r.stdout}\n{r.stderr}"
    return r


def test_the_marked_examples_exist():
    kinds = [kind for kind, _, _ in examples()]
    assert kinds.count("builtin") >= 2 and kinds.count("gpt2") >= 2, kinds


def run_examples(kind, tmp_path, *server_flags):
    """Every `kind` block against one server started with `server_flags`."""
    server = Server(*server_flags, "--kv-tokens", "8192")
    try:
        for block_kind, language, code in examples():
            if block_kind == kind:
                run_block(language, code, server.addr, tmp_path)
    finally:
        assert server.stop() == 0


def test_builtin_examples(tmp_path):
    run_examples("builtin", tmp_path)
    assert (tmp_path / "cache.safetensors").exists()


def test_sae_examples(tmp_path):
    run_examples("sae", tmp_path, "--model", str(ROOT / "tests/data/golden/gpt2"),
                 "--sae", f"res1={ROOT / 'tests/data/saes/gpt2_standard'}")


def test_gpt2_examples(tmp_path):
    if not (GPT2_TOKENIZER / "vocab.json").exists():
        pytest.skip(f"GPT-2's tokenizer is not at {GPT2_TOKENIZER}")
    run_examples("gpt2", tmp_path, "--model", "builtin:gpt2-small", "--tokenizer",
                 str(GPT2_TOKENIZER))
    assert (tmp_path / "ioi_resid_pre.png").stat().st_size > 1000
    rows = (tmp_path / "heads.csv").read_text().splitlines()
    assert sum(not r.startswith("#") for r in rows) == 1 + 12 * 12  # header + layer x head


def test_a_tokenizer_larger_than_the_model_is_refused():
    if not (GPT2_TOKENIZER / "vocab.json").exists():
        pytest.skip(f"GPT-2's tokenizer is not at {GPT2_TOKENIZER}")
    r = subprocess.run([LENSD, "generate", "--tokenizer", str(GPT2_TOKENIZER), "--prompt", "hi"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "50257 tokens do not fit the model's vocabulary of 259" in r.stderr, r.stderr
