"""PatchSweep through real servers: every cell equals the same patch run as its own
RunWithCache request (bit for bit), for every component kind on every golden family;
noising, metrics and baselines; the cells reuse the corrupted run's cached prefix; errors. The
newer families (tests/data/families) too."""
import importlib.util
import json
import subprocess

import grpc
import numpy as np
import pytest

import lensd
from conftest import (FAMILIES, GOLDEN, LENSCTL, NEW_FAMILIES, Server, model_dir,
                      read_safetensors, run_cli)
from lensd.v1 import lensd_pb2

P = lensd_pb2


@pytest.fixture(scope="module", params=FAMILIES + NEW_FAMILIES)
def golden(request):
    s = Server("--model", str(model_dir(request.param)))
    ref = read_safetensors(model_dir(request.param) / "reference.safetensors")
    clean = ref["p0.input_ids"][0].tolist()  # 7 tokens
    corrupted = list(clean)
    corrupted[2] = (corrupted[2] + 11) % 1000
    yield request.param, s, clean, corrupted
    assert s.stop() == 0, "".join(s.log)


HOOKS = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid",
         "resid_post": "hook_resid_post", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out",
         "z": "attn.hook_z", "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v",
         "pattern": "attn.hook_pattern"}


def individual(client, clean, corrupted, hook, position, head):
    """The corrupted run's last logits with one patch from the clean run: the definition."""
    iv = lensd.patch(hook, 0, prompts=[1], positions=None if position < 0 else [position],
                     heads=None if head < 0 else [head])
    logits, _ = client.run_with_cache([clean, corrupted], names_filter=[], interventions=[iv])
    return logits[1, -1]


@pytest.mark.parametrize("component", list(HOOKS))
def test_every_cell_equals_its_own_patch_request(golden, component):
    family, server, clean, corrupted = golden
    if family == "gpt_neox" and component == "resid_mid":
        pytest.skip("parallel residual: no hook_resid_mid (an error, tested below)")
    client = lensd.Client(server.addr)
    per_head = component in ("z", "q", "k", "v", "pattern")
    # Per-head components: heads each with positions at once; and positions each, heads at once.
    shapes = [("all", "each"), ("each", "all")] if per_head else [("each", "each")]
    for positions, heads in shapes:
        r = client.patch_sweep(clean, corrupted, component=component, metric=lensd.logits(),
                               layers=(0, 2), positions=positions, heads=heads)
        assert r.grid.shape[0] == 2 and r.logits is not None
        for index in range(r.logits.shape[0]):
            layer = r.layers[index // (r.grid.size // len(r.layers))]
            rest = index % (r.grid.size // len(r.layers))
            n_heads = len(r.heads) if r.heads else 1
            position = r.positions[rest // n_heads] if r.positions else -1
            head = r.heads[rest % n_heads] if r.heads else -1
            want = individual(client, clean, corrupted, f"blocks.{layer}.{HOOKS[component]}",
                              position, head)
            np.testing.assert_array_equal(r.logits[index], want,
                                          err_msg=f"{family} {component} cell {index}")
    info = client.model_info()
    assert info["active_requests"] == 0 and info["kv_blocks_free"] == info["kv_blocks_total"]


def test_metrics_baselines_and_noising(golden):
    family, server, clean, corrupted = golden
    client = lensd.Client(server.addr)
    logits, _ = client.run_with_cache([clean, corrupted], names_filter=[])
    answer, wrong = int(np.argmax(logits[0, -1])), int(np.argmin(logits[0, -1]))
    r = client.patch_sweep(clean, corrupted, metric=lensd.logit_diff(answer, wrong))
    assert r.clean_metric == float(logits[0, -1, answer]) - float(logits[0, -1, wrong])
    assert r.corrupted_metric == float(logits[1, -1, answer]) - float(logits[1, -1, wrong])
    # Patching every position of resid_pre at layer 0 restores the clean run entirely.
    full = client.patch_sweep(clean, corrupted, metric=lensd.logit_diff(answer, wrong),
                              positions="all")
    assert full.grid[0, 0] == r.clean_metric
    np.testing.assert_allclose(full.normalized()[0, 0], 1.0)
    assert r.grid.shape == (client.model_info()["n_layers"], len(clean))
    # KL to the target run: 0 for the unpatched target; noising targets the clean run.
    k = client.patch_sweep(clean, corrupted, metric=lensd.kl(), direction="noising", layers=(1, 2))
    assert k.clean_metric == 0.0 and k.corrupted_metric > 0
    assert np.all(k.grid >= -1e-9)


def test_cells_reuse_the_target_runs_prefix(golden):
    """A 40-token prompt: a resid_pre cell at position p reuses the corrupted run's full
    16-token blocks before p (0, 16 or 32 tokens) and still equals its own patch request."""
    family, server, _, _ = golden
    clean = [(7 * i + 3) % 500 for i in range(40)]
    corrupted = list(clean)
    corrupted[30] = (corrupted[30] + 11) % 500
    client = lensd.Client(server.addr)
    block = client.model_info()["kv_block_size"]
    before = client.model_info()["prefix_hit_tokens"]
    r = client.patch_sweep(clean, corrupted, metric=lensd.logits(), positions="each")
    per_layer = sum(min(p, len(clean) - 1) // block * block for p in range(len(clean)))
    assert r.prompt_tokens_cached == per_layer * len(r.layers)
    assert r.prompt_tokens_computed == r.grid.size * len(clean) - r.prompt_tokens_cached
    assert client.model_info()["prefix_hit_tokens"] - before == r.prompt_tokens_cached
    for layer, position in [(0, 5), (0, 20), (len(r.layers) - 1, 39)]:
        want = individual(client, clean, corrupted, f"blocks.{layer}.hook_resid_pre", position, -1)
        np.testing.assert_array_equal(r.logits[layer * len(clean) + position], want)


def test_sweep_errors(server_factory):
    server = server_factory("--model", str(GOLDEN / "gpt_neox"), "--max-sweep-cells", "10")
    client = lensd.Client(server.addr)

    def expect(code, needle, **kwargs):
        args = dict(clean=[5, 6, 7], corrupted=[5, 9, 7], metric=lensd.kl(), layers=(0, 1))
        args.update(kwargs)
        with pytest.raises(grpc.RpcError) as info:
            client.patch_sweep(args.pop("clean"), args.pop("corrupted"), **args)
        assert info.value.code() == code, info.value.details()
        assert needle in info.value.details(), info.value.details()

    invalid, exhausted = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
    expect(invalid, "clean has 3 tokens and corrupted 2", corrupted=[5, 9])
    expect(invalid, "this model (gpt_neox) has no blocks.0.hook_resid_mid", component="resid_mid")
    expect(invalid, "layers selects none", layers=(5, 9))
    expect(invalid, "metric.logit_diff.answer_ids[0] = 5000 is outside the vocabulary",
           metric=lensd.logit_diff(5000, 1))
    expect(invalid, "metric.positions[0] = 3 is out of range", metric=lensd.kl(positions=[3]))
    expect(invalid, "all_heads applies to per-head components only", heads="all")
    # 2 layers x 3 positions x 4 heads.
    for bad in (dict(component="resid"), dict(positions="every"), dict(heads=3),
                dict(direction="backwards")):
        with pytest.raises(ValueError):
            client.patch_sweep([5, 6], [5, 7], metric=lensd.kl(), **bad)
    expect(exhausted, "the sweep has 24 cells; this server allows 10", layers=(0, 2),
           component="z", positions="each", heads="each")


def test_lensctl_sweep_writes_csv_and_plot_writes_png(golden, tmp_path):
    family, server, clean, corrupted = golden
    out = tmp_path / "grid.csv"
    run_cli(LENSCTL, "--addr", server.addr, "sweep", "--clean-ids", ",".join(map(str, clean)),
            "--corrupted-ids", ",".join(map(str, corrupted)), "--component", "resid_pre",
            "--metric", "logit_diff:3:4", "--out", str(out))
    lines = out.read_text().splitlines()
    rows = [l for l in lines if not l.startswith("#")]
    assert rows[0] == "layer,position,head,value"
    client = lensd.Client(server.addr)
    r = client.patch_sweep(clean, corrupted, metric=lensd.logit_diff(3, 4))
    assert [float(row.split(",")[3]) for row in rows[1:]] == list(r.grid.reshape(-1))
    run_cli(LENSCTL, "--addr", server.addr, "sweep", "--clean-ids", ",".join(map(str, clean)),
            "--corrupted-ids", ",".join(map(str, corrupted)), "--metric", "logit_diff:3:4",
            "--method", "attribution", "--out", str(out))
    rows = [l for l in out.read_text().splitlines() if not l.startswith("#")]
    a = client.patch_sweep(clean, corrupted, metric=lensd.logit_diff(3, 4), method="attribution")
    assert [float(row.split(",")[3]) for row in rows[1:]] == list(a.grid.reshape(-1))
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib absent (Debian: python3-matplotlib)")
    png = tmp_path / "sweep.png"
    r.plot(str(png))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 300 and height >= 200


@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "mlp_out", "z", "v"])
def test_attribution_cells_are_the_gradients_dot_products(golden, component):
    """method="attribution": each cell is Σ (clean − corrupted) · ∂metric/∂corrupted over the
    patched slice, the gradient of the unpatched corrupted run (run_with_cache(grad=...))."""
    family, server, clean, corrupted = golden
    client = lensd.Client(server.addr)
    metric = lensd.logit_diff(5, 7)
    name = f"blocks.{{}}.{HOOKS[component]}"
    per_head = component in ("z", "v")
    r = client.patch_sweep(clean, corrupted, component=component, metric=metric, layers=(0, 2),
                           positions="each", heads="all" if per_head else "each",
                           method="attribution")
    assert r.grid.shape[:2] == (2, len(clean))
    hooks = [name.format(l) for l in (0, 1)]
    _, source = client.run_with_cache(clean, hooks)
    _, target = client.run_with_cache(corrupted, hooks, grad=metric)
    assert r.corrupted_metric == pytest.approx(target.objective[0], abs=1e-5)
    for l, hook in enumerate(hooks):
        diff = (source[hook][0].astype(np.float64) - target[hook][0]) * target[hook + "_grad"][0]
        want = diff.reshape(len(clean), -1).sum(axis=1)
        np.testing.assert_allclose(r.grid[l].reshape(-1), want, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{family} {component} layer {l}")
