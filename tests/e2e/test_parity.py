"""The server gives bit-for-bit what the offline commands give, for every golden family."""
import numpy as np
import pytest

import lensd
from conftest import FAMILIES, NEW_FAMILIES, model_dir, GOLDEN, LENSCTL, LENSD, Server, read_safetensors, run_cli


@pytest.fixture(scope="module", params=FAMILIES + NEW_FAMILIES)
def golden(request):
    s = Server("--model", str(model_dir(request.param)))
    ref = read_safetensors(model_dir(request.param) / "reference.safetensors")
    prompts = [ref[f"p{j}.input_ids"][0].tolist() for j in range(2)]
    yield request.param, s, prompts
    assert s.stop() == 0, "".join(s.log)


def ids_flag(ids):
    return ",".join(str(i) for i in ids)


def unpad(array, j, want):
    """Prompt j of a left-padded batch shaped like `want` (its batch-of-1 array from `lensd
    run`): the last entries of every axis, wherever the positions are (routing hooks, without a
    batch axis, are [batch · positions, experts])."""
    if array.ndim == want.ndim and array.shape[0] != 1 and want.shape[0] != 1:  # routing
        width = array.shape[0] // 2
        return array[(j + 1) * width - want.shape[0]:(j + 1) * width]
    a = array[j:j + 1]
    return a[(slice(None),) + tuple(slice(a.shape[ax] - want.shape[ax], None)
                                    for ax in range(1, a.ndim))]


def test_run_with_cache_equals_lensd_run(golden, tmp_path):
    family, server, prompts = golden
    with lensd.Client(server.addr) as client:
        logits, cache = client.run_with_cache(prompts)
    assert cache.mask.shape == (2, max(map(len, prompts)))
    for j, ids in enumerate(prompts):
        path = tmp_path / f"offline{j}.safetensors"
        run_cli(LENSD, "run", "--model", str(model_dir(family)), "--token-ids", ids_flag(ids),
                "--out", str(path))
        offline = read_safetensors(path)
        assert set(offline) == set(cache) | {"logits", "input_ids"}
        assert cache.mask[j].sum() == len(ids)
        np.testing.assert_array_equal(cache.tokens[j, -len(ids):], offline["input_ids"][0])
        np.testing.assert_array_equal(unpad(logits, j, offline["logits"]), offline["logits"])
        for name, want in offline.items():
            if name in ("logits", "input_ids"):
                continue
            np.testing.assert_array_equal(unpad(cache[name], j, want), want,
                                          err_msg=f"{family} prompt {j} {name}")
        remote = tmp_path / f"remote{j}.safetensors"
        run_cli(LENSCTL, "--addr", server.addr, "cache", "--token-ids", ids_flag(ids),
                "--out", str(remote))
        assert remote.read_bytes() == path.read_bytes(), "lensctl cache differs from lensd run"


def test_generate_equals_lensd_generate(golden):
    family, server, prompts = golden
    for ids in prompts:
        offline = run_cli(LENSD, "generate", "--model", str(model_dir(family)), "--token-ids",
                          ids_flag(ids), "--max-new-tokens", "12").stdout
        remote = run_cli(LENSCTL, "--addr", server.addr, "generate", "--token-ids", ids_flag(ids),
                         "--max-new-tokens", "12").stdout
        assert remote == offline
        with lensd.Client(server.addr) as client:
            events = list(client.generate(ids, max_new_tokens=12))
        done = events[-1]
        assert isinstance(done, lensd.GenerateDone)
        assert [e.id for e in events[:-1]] == done.ids
        assert " ".join(map(str, done.ids)) == offline.decode().split("\n")[0]
        assert done.prompt_ids == ids


def test_sampled_generation_is_reproducible_and_matches_offline(golden):
    family, server, prompts = golden
    args = ["--token-ids", ids_flag(prompts[0]), "--max-new-tokens", "10", "--temperature", "0.9",
            "--top-k", "50", "--top-p", "0.9", "--seed", "7"]
    offline = run_cli(LENSD, "generate", "--model", str(model_dir(family)), *args).stdout
    remote = run_cli(LENSCTL, "--addr", server.addr, "generate", *args).stdout
    assert remote == offline


def to_bf16(a):
    """float32 rounded to bfloat16 (nearest even) and widened back, as the server's wire does."""
    bits = np.ascontiguousarray(a, dtype="<f4").view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


def test_bfloat16_weights_served_like_offline(server_factory, tmp_path):
    """--dtype bfloat16: the server reports it, captures default to it, and their values are
    exactly `lensd run --dtype bfloat16`'s float32 file rounded to bfloat16."""
    model = str(GOLDEN / "llama")
    server = server_factory("--model", model, "--dtype", "bfloat16")
    client = lensd.Client(server.addr)
    assert client.model_info()["dtype"] == "DTYPE_BFLOAT16"
    ids = [5, 6, 7, 8, 9]
    out = tmp_path / "bf16.safetensors"
    run_cli(LENSD, "run", "--model", model, "--dtype", "bfloat16", "--token-ids", ids_flag(ids),
            "--out", str(out))
    offline = read_safetensors(out)
    logits, cache = client.run_with_cache(ids, ["blocks.1.hook_resid_post"], dtype=None)
    np.testing.assert_array_equal(logits, to_bf16(offline["logits"]))
    np.testing.assert_array_equal(cache["blocks.1.hook_resid_post"],
                                  to_bf16(offline["blocks.1.hook_resid_post"]))
    f32_logits, _ = client.run_with_cache(ids, [], dtype="float32")
    np.testing.assert_array_equal(f32_logits, offline["logits"])
