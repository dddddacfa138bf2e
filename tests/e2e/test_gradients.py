"""Gradients over the wire: RunWithCache with an objective gives, bit for bit, what
`lensd run --grad` gives offline (Python client and lensctl), batched or alone, and refuses
what it cannot compute with a clear status."""
import json

import numpy as np
import pytest

import lensd
from conftest import GOLDEN, LENSCTL, LENSD, Server, model_dir, read_safetensors, run_cli


@pytest.fixture(scope="module")
def llama():
    s = Server("--model", str(GOLDEN / "llama"))
    yield s
    assert s.stop() == 0, "".join(s.log)


PROMPTS = [[1, 17, 33, 5, 240, 9], [3, 44, 8, 912]]
HOOKS = ["hook_embed", "blocks.*.hook_resid_post", "blocks.1.attn.hook_z", "blocks.0.attn.hook_pattern"]


def test_run_with_cache_grad_equals_lensd_run_grad(llama, tmp_path):
    with lensd.Client(llama.addr) as client:
        logits, cache = client.run_with_cache(PROMPTS, HOOKS, grad=lensd.logit_diff(5, 7))
    assert cache.objective.shape == (2,)
    assert cache["blocks.0.attn.hook_pattern_grad"].shape == cache["blocks.0.attn.hook_pattern"].shape
    for j, ids in enumerate(PROMPTS):
        path = tmp_path / f"offline{j}.safetensors"
        args = ["--token-ids", ",".join(map(str, ids)), "--hooks", ",".join(HOOKS),
                "--grad", "logit_diff:5:7", "--out", str(path)]
        run_cli(LENSD, "run", "--model", str(GOLDEN / "llama"), *args)
        offline = read_safetensors(path)
        assert cache.objective[j] == pytest.approx(float(offline["objective"][0]), abs=1e-6)
        grads = [n for n in offline if n.endswith("_grad")]
        assert len(grads) == len([n for n in cache if n.endswith("_grad")]) == 6
        for name in grads:
            got = cache[name][j:j + 1]
            got = got[:, :, -len(ids):, -len(ids):] if "pattern" in name else got[:, -len(ids):]
            np.testing.assert_array_equal(got, offline[name], err_msg=f"prompt {j} {name}")
        remote = tmp_path / f"remote{j}.safetensors"
        run_cli(LENSCTL, "--addr", llama.addr, "cache", *args[:-2], "--out", str(remote))
        assert remote.read_bytes() == path.read_bytes(), "lensctl cache --grad differs"


def test_gradients_through_interventions_equal_lensd_run(llama, tmp_path):
    """A patch, a head ablation and a scale in place: served and offline gradients agree bit
    for bit, the patched slice's upstream gradient is cut, the source prompt's gradients are
    its own."""
    edits = [{"hook": "blocks.1.hook_resid_pre", "op": "patch", "source": 1, "prompts": [0],
              "positions": [2, 3]},
             {"hook": "blocks.0.attn.hook_z", "op": "zero", "heads": [1]},
             {"hook": "blocks.0.hook_mlp_out", "op": "scale", "factor": 0.5}]
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.0.attn.hook_z"]
    with lensd.Client(llama.addr) as client:
        _, cache = client.run_with_cache(PROMPTS, hooks, grad=lensd.loss(), interventions=[
            lensd.patch("blocks.1.hook_resid_pre", 1, prompts=[0], positions=[2, 3]),
            lensd.zero("blocks.0.attn.hook_z", heads=[1]),
            lensd.scale("blocks.0.hook_mlp_out", 0.5)])
        _, alone = client.run_with_cache(PROMPTS[1], hooks, grad=lensd.loss(), interventions=[
            lensd.zero("blocks.0.attn.hook_z", heads=[1]),
            lensd.scale("blocks.0.hook_mlp_out", 0.5)])
    g = cache["blocks.0.hook_resid_post_grad"][0]
    assert np.all(g[2:4] == 0) and np.any(g[:2] != 0), "a patch cuts the gradient it replaces"
    # (positions 2 and 3 are replaced downstream; the last predicts nothing the loss reads)
    assert np.all(cache["blocks.0.attn.hook_z_grad"][0, [0, 1, 4], 1] != 0), "z_grad is before the zero"
    n = len(PROMPTS[1])
    for name in alone:
        np.testing.assert_array_equal(cache[name][1][-n:], alone[name][0], err_msg=name)
    spec = tmp_path / "edits.json"
    spec.write_text(json.dumps(edits))
    path = tmp_path / "offline.safetensors"
    args = [a for ids in PROMPTS for a in ("--token-ids", ",".join(map(str, ids)))]
    args += ["--hooks", ",".join(hooks), "--grad", "loss", "--interventions", str(spec)]
    run_cli(LENSD, "run", "--model", str(GOLDEN / "llama"), *args, "--out", str(path))
    offline = read_safetensors(path)
    for j, ids in enumerate(PROMPTS):
        for name in cache:
            np.testing.assert_array_equal(cache[name][j:j + 1, -len(ids):],
                                          offline[f"p{j}.{name}"], err_msg=f"p{j} {name}")
    remote = tmp_path / "remote.safetensors"
    run_cli(LENSCTL, "--addr", llama.addr, "cache", *args, "--out", str(remote))
    assert remote.read_bytes() == path.read_bytes(), "lensctl cache --grad differs"


def test_hook_dot_objective_served_equals_lensd_run(llama, tmp_path):
    """⟨blocks.1.hook_resid_post, v⟩ at two positions: its value is the captured hook's, its
    gradient there is v / 2 at those positions, later hooks get none; served == offline."""
    d = 64
    v = np.random.default_rng(4).standard_normal(d).astype(np.float32)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
    with lensd.Client(llama.addr) as client:
        _, cache = client.run_with_cache(PROMPTS, hooks, grad=lensd.hook_dot(hooks[1], v, [1, -1]))
        with pytest.raises(lensd.InvalidArgument, match="objective.hook_dot.direction has 3 "
                                                        "elements; blocks.1.hook_resid_post has 64"):
            client.run_with_cache(PROMPTS, hooks, grad=lensd.hook_dot(hooks[1], v[:3]))
        with pytest.raises(lensd.InvalidArgument, match="objective.hook_dot.hook"):
            client.run_with_cache(PROMPTS, hooks, grad=lensd.hook_dot("blocks.9.hook_resid_post", v))
    for j, ids in enumerate(PROMPTS):
        x = cache[hooks[1]][j, -len(ids):]
        assert cache.objective[j] == pytest.approx((x[1] @ v + x[-1] @ v) / 2, rel=1e-5)
        g = cache[hooks[1] + "_grad"][j, -len(ids):]
        np.testing.assert_allclose(g[[1, -1]], np.stack([v, v]) / 2, rtol=1e-6)
        assert np.all(cache[hooks[2] + "_grad"][j] == 0)
        assert np.any(cache[hooks[0] + "_grad"][j] != 0)
    path = tmp_path / "v.safetensors"
    header = json.dumps({"v": {"dtype": "F32", "shape": [d], "data_offsets": [0, 4 * d]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + v.tobytes())
    out = tmp_path / "offline.safetensors"
    run_cli(LENSD, "run", "--model", str(GOLDEN / "llama"), "--token-ids",
            ",".join(map(str, PROMPTS[0])), "--hooks", ",".join(hooks), "--grad",
            f"hook_dot:{hooks[1]}:{path}:v@1,-1", "--out", str(out))
    offline = read_safetensors(out)
    assert float(offline["objective"][0]) == pytest.approx(cache.objective[0], abs=1e-6)
    for name in hooks:
        np.testing.assert_array_equal(offline[name + "_grad"], cache[name + "_grad"][:1])


def test_loss_gradient_points_downhill(llama):
    """A small step against resid_pre's gradient lowers the loss (an add intervention)."""
    ids = PROMPTS[0]
    with lensd.Client(llama.addr) as client:
        _, cache = client.run_with_cache(ids, "blocks.1.hook_resid_pre", grad=lensd.loss())
        g = cache["blocks.1.hook_resid_pre_grad"][0]
        step = lensd.add("blocks.1.hook_resid_pre", -1e-2 * g / np.abs(g).max())
        logits, _ = client.run_with_cache(ids, [], interventions=[step])
        base, _ = client.run_with_cache(ids, [])
    def loss(l):
        l = l[0].astype(np.float64)
        z = np.log(np.exp(l - l.max(-1, keepdims=True)).sum(-1)) + l.max(-1)
        return float(np.mean(z[:-1] - l[np.arange(len(ids) - 1), ids[1:]]))
    assert loss(base) == pytest.approx(cache.objective[0], abs=1e-5)
    assert loss(logits) < loss(base)


def test_gradient_work_is_counted(llama):
    with lensd.Client(llama.addr) as client:
        before = client.model_info()
        assert before["gradients_unavailable"] == ""
        client.run_with_cache(PROMPTS, "hook_embed", grad=lensd.loss())
        after = client.model_info()
    assert after["gradient_requests"] == before["gradient_requests"] + 1
    assert after["gradient_tokens"] == before["gradient_tokens"] + sum(map(len, PROMPTS))


@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe", "phi3_longrope"])
def test_mixtures_and_longrope_served_equal_lensd_run(server_factory, family, tmp_path):
    """Gradients through experts and routers, and through longrope's scaled rotary (a 19-token
    prompt: long factors), served and offline, bit for bit."""
    server = server_factory("--model", str(model_dir(family)))
    ids = read_safetensors(model_dir(family) / "reference.safetensors")["p1.input_ids"][0].tolist()
    hooks = ["hook_embed", "blocks.*.hook_resid_post", "blocks.0.mlp.hook_pre",
             "blocks.1.mlp.hook_post", "blocks.0.attn.hook_rot_q"]
    with lensd.Client(server.addr) as client:
        _, cache = client.run_with_cache(ids, hooks, grad=lensd.loss())
    path = tmp_path / "offline.safetensors"
    run_cli(LENSD, "run", "--model", str(model_dir(family)), "--token-ids",
            ",".join(map(str, ids)), "--hooks", ",".join(hooks), "--grad", "loss", "--out",
            str(path))
    offline = read_safetensors(path)
    grads = [n for n in offline if n.endswith("_grad")]
    assert len(grads) == 7 and not any(np.all(offline[n] == 0) for n in grads)
    for name in grads:
        np.testing.assert_array_equal(cache[name], offline[name], err_msg=f"{family} {name}")


def test_gradient_memory_is_checked_before_running(server_factory):
    server = server_factory("--model", str(GOLDEN / "llama"), "--gradient-mib", "1")
    with lensd.Client(server.addr) as client:
        with pytest.raises(lensd.ResourceExhausted, match=r"allows 1 MiB \(--gradient-mib\)"):
            client.run_with_cache(list(range(3, 200)), grad=lensd.loss())
        assert client.run_with_cache(PROMPTS[0], names_filter=[])[0].shape[1] == 6  # serving on


def test_refusals_name_the_reason(llama):
    with lensd.Client(llama.addr) as client:
        with pytest.raises(lensd.InvalidArgument, match="gradients cannot pass zero at "
                           "blocks.0.attn.hook_pattern"):
            client.run_with_cache(PROMPTS[0], grad=lensd.loss(),
                                  interventions=[lensd.zero("blocks.0.attn.hook_pattern")])
        with pytest.raises(lensd.InvalidArgument, match="objective.logprob.ids"):
            client.run_with_cache(PROMPTS[0], grad=lensd.logprob(5000))
        with pytest.raises(ValueError, match="grad must be"):
            client.run_with_cache(PROMPTS[0], grad=lensd.kl())
