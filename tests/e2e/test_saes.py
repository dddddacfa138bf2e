"""SAEs served (lensd serve --sae NAME=DIR): attached by name, their hook points equal SAELens's
(tests/data/saes, tools/reference/make_sae_references.py), the model unchanged with the error
term kept, the spliced logits SAELens's; served equals `lensd run --sae` bit for bit; bad names
are clear errors and leave the server healthy."""
import json

import numpy as np
import pytest

import lensd
from conftest import GOLDEN, LENSCTL, LENSD, Server, read_safetensors, run_cli

SAES = GOLDEN.parent / "saes"
SITE = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def server():
    s = Server("--model", str(GOLDEN / "gpt2"), "--sae", f"res1={SAES / 'gpt2_standard'}",
               "--sae", f"z0={SAES / 'gpt2_topk_z'}")
    yield s
    assert s.stop() == 0, "".join(s.log)


@pytest.fixture(scope="module")
def reference():
    return read_safetensors(SAES / "gpt2_standard" / "reference.safetensors")


def close(got, want, what):
    tol = 1e-4 * max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= tol, what


def test_hook_points_equal_saelens_and_the_model_is_unchanged(server, reference):
    prompts = [reference[f"p{j}.input_ids"][0].tolist() for j in range(2)]
    with lensd.Client(server.addr) as client:
        logits, cache = client.run_with_cache(prompts, f"{SITE}.hook_sae_*", saes=["res1"])
        plain, _ = client.run_with_cache(prompts, [])
    np.testing.assert_array_equal(logits, plain)
    assert len(cache) == 6
    for j, ids in enumerate(prompts):
        for name in cache:
            close(cache[name][j, -len(ids):], reference[f"p{j}.{name}"][0], f"p{j} {name}")


def test_spliced_logits_equal_saelens_and_lensd_run(server, reference, tmp_path):
    ids = reference["p1.input_ids"][0].tolist()
    with lensd.Client(server.addr) as client:
        logits, cache = client.run_with_cache(ids, [f"{SITE}.hook_sae_acts_post", "blocks.0.attn.hook_z.*"],
                                              saes=[lensd.sae("res1", splice=True), "z0"])
    close(logits[0], reference["p1.spliced_logits"][0], "spliced logits")
    assert cache["blocks.0.attn.hook_z.hook_sae_acts_post"].shape == (1, len(ids), 72)
    assert (cache["blocks.0.attn.hook_z.hook_sae_acts_post"][0] > 0).sum(-1).max() <= 6, "top-6"
    path = tmp_path / "offline.safetensors"
    run_cli(LENSD, "run", "--model", str(GOLDEN / "gpt2"), "--token-ids", ",".join(map(str, ids)),
            "--sae", f"res1={SAES / 'gpt2_standard'}", "--splice",
            "--hooks", f"{SITE}.hook_sae_acts_post", "--out", str(path))
    offline = read_safetensors(path)
    np.testing.assert_array_equal(offline["logits"], logits)
    remote = tmp_path / "remote.safetensors"
    run_cli(LENSCTL, "--addr", server.addr, "cache", "--token-ids", ",".join(map(str, ids)),
            "--sae", "res1", "--splice", "--hooks", f"{SITE}.hook_sae_acts_post", "--out", str(remote))
    assert remote.read_bytes() == path.read_bytes(), "lensctl cache --sae differs from lensd run"
    np.testing.assert_array_equal(offline[f"{SITE}.hook_sae_acts_post"],
                                  cache[f"{SITE}.hook_sae_acts_post"])


def test_feature_edits_steer_as_saelens_does(server, reference, tmp_path):
    """The reference script's `steer` (feature 3 += 4, feature 5 = 0, features 1 and 2 doubled
    at position 1; error kept) over the wire, by SAE name and by hook, and from a JSON file
    offline."""
    prompts = [reference[f"p{j}.input_ids"][0].tolist() for j in range(2)]
    edits = [lensd.steer_feature("res1", 3, coeff=4.0),
             lensd.edit_features(SITE, [5], "zero"),
             lensd.edit_features("res1", [1, 2], "scale", 2.0, positions=[1])]
    with lensd.Client(server.addr) as client:
        logits, cache = client.run_with_cache(prompts, f"{SITE}.hook_sae_acts_post", saes=["res1"],
                                              interventions=edits)
    for j, ids in enumerate(prompts):
        close(logits[j, -len(ids):], reference[f"p{j}.steered_logits"][0], f"p{j} steered logits")
        acts = cache[f"{SITE}.hook_sae_acts_post"][j, -len(ids):]
        assert np.all(acts[:, 5] == 0), "the captured features are the edited ones"
    spec = tmp_path / "edits.json"
    spec.write_text(json.dumps([
        {"hook": f"{SITE}.hook_sae_acts_post", "op": "add", "features": [3], "value": [4.0]},
        {"hook": "res1.hook_sae_acts_post", "op": "zero", "features": [5]},
        {"hook": "res1.hook_sae_acts_post", "op": "scale", "factor": 2.0, "features": [1, 2],
         "positions": [1]}]))
    path = tmp_path / "offline.safetensors"
    ids = prompts[1]
    run_cli(LENSD, "run", "--model", str(GOLDEN / "gpt2"), "--token-ids", ",".join(map(str, ids)),
            "--sae", f"res1={SAES / 'gpt2_standard'}", "--interventions", str(spec),
            "--hooks", f"{SITE}.hook_sae_acts_post", "--out", str(path))
    np.testing.assert_array_equal(read_safetensors(path)["logits"][0], logits[1, -len(ids):])


def test_top_k_feature_streaming_equals_the_dense_activations(server, reference):
    prompts = [reference[f"p{j}.input_ids"][0].tolist() for j in range(2)]
    name = f"{SITE}.hook_sae_acts_post"
    with lensd.Client(server.addr) as client:
        _, dense = client.run_with_cache(prompts, name, saes=["res1"])
        _, sparse = client.run_with_cache(prompts, name, saes=["res1"], feature_top_k=8)
        with pytest.raises(lensd.InvalidArgument, match="feature_top_k = 97 exceeds the 96 "
                                                        "features of " + name):
            client.run_with_cache(prompts, name, saes=["res1"], feature_top_k=97)
        with pytest.raises(lensd.InvalidArgument, match="feature_top_k = 5000 is out of range"):
            client.run_with_cache(prompts, name, saes=["res1"], feature_top_k=5000)
    indices, values = sparse[name + ".top_indices"], sparse[name + ".top_values"]
    assert name not in sparse and indices.dtype == np.int32 and indices.shape == (2, 19, 8)
    full = dense[name]
    n0 = len(prompts[0])
    assert np.all(indices[0, :-n0] == -1), "padded positions carry index -1"
    want = -np.sort(-full, axis=-1)[..., :8]  # each position's 8 largest, descending
    got = np.take_along_axis(full, np.maximum(indices, 0), -1)
    np.testing.assert_array_equal(values[1], want[1])
    np.testing.assert_array_equal(got[1], values[1])
    kept = lensd.dense_features(indices, values, 96)
    np.testing.assert_array_equal(kept[1], np.where(full[1] >= want[1][:, -1:], full[1], 0))


def test_steered_generation_equals_saelens_and_lensd_generate(server, reference, tmp_path):
    """The reference's steered greedy tokens served and offline; the SAE's K/V never mix with
    plain traffic's through the prefix cache, in either order."""
    ids = reference["p1.input_ids"][0].tolist()
    want = reference["p1.steered_greedy"][0].tolist()[len(ids):]
    edits = [lensd.steer_feature("res1", 3, coeff=4.0),
             lensd.edit_features("res1", [5], "zero"),
             lensd.edit_features("res1", [1, 2], "scale", 2.0, positions=[1])]
    n = len(want)
    with lensd.Client(server.addr) as client:
        plain_first = list(client.generate(ids, n, ignore_eos=True))[-1].ids
        steered = list(client.generate(ids, n, ignore_eos=True, saes=["res1"],
                                       interventions=edits))[-1].ids
        plain_again = list(client.generate(ids, n, ignore_eos=True))[-1].ids
        kept = list(client.generate(ids, n, ignore_eos=True, saes=["res1"]))[-1].ids
    assert steered == want
    assert plain_first == plain_again == kept != steered
    spec = tmp_path / "edits.json"
    spec.write_text(json.dumps([
        {"hook": "res1.hook_sae_acts_post", "op": "add", "features": [3], "value": [4.0]},
        {"hook": "res1.hook_sae_acts_post", "op": "zero", "features": [5]},
        {"hook": "res1.hook_sae_acts_post", "op": "scale", "factor": 2.0, "features": [1, 2],
         "positions": [1]}]))
    out = run_cli(LENSD, "generate", "--model", str(GOLDEN / "gpt2"), "--token-ids",
                  ",".join(map(str, ids)), "--max-new-tokens", str(n), "--ignore-eos",
                  "--sae", f"res1={SAES / 'gpt2_standard'}", "--interventions", str(spec)).stdout
    assert out.decode().split("\n")[0] == " ".join(map(str, want))
    remote = run_cli(LENSCTL, "--addr", server.addr, "generate", "--token-ids", ",".join(map(str, ids)),
                     "--max-new-tokens", str(n), "--ignore-eos", "--sae", "res1",
                     "--interventions", str(spec)).stdout
    assert remote == out


def test_feature_gradients_served_equal_lensd_run(server, reference, tmp_path):
    """Feature attribution: a steered, spliced SAE's hooks' gradients (SAELens's: the error
    term a constant) served equal `lensd run --grad` bit for bit."""
    ids = reference["p1.input_ids"][0].tolist()
    hooks = [f"{SITE}.hook_sae_acts_post", f"{SITE}.hook_sae_input", "blocks.0.hook_resid_pre"]
    steer = lensd.steer_feature("res1", 3, coeff=4.0)
    with lensd.Client(server.addr) as client:
        _, cache = client.run_with_cache(ids, hooks, saes=[lensd.sae("res1", splice=True)],
                                         interventions=[steer], grad=lensd.loss())
    spec = tmp_path / "steer.json"
    spec.write_text(json.dumps([{"hook": f"{SITE}.hook_sae_acts_post", "op": "add",
                                 "features": [3], "value": [1.0], "coeff": 4.0}]))
    path = tmp_path / "offline.safetensors"
    run_cli(LENSD, "run", "--model", str(GOLDEN / "gpt2"), "--token-ids", ",".join(map(str, ids)),
            "--sae", f"res1={SAES / 'gpt2_standard'}", "--splice", "--interventions", str(spec),
            "--hooks", ",".join(hooks), "--grad", "loss", "--out", str(path))
    offline = read_safetensors(path)
    for name in hooks:
        assert np.abs(offline[name + "_grad"]).max() > 0, name
        np.testing.assert_array_equal(cache[name + "_grad"], offline[name + "_grad"], err_msg=name)


def test_model_info_and_list_hooks_name_the_saes(server):
    with lensd.Client(server.addr) as client:
        info = client.model_info()
        hooks = dict(client.list_hooks([f"{SITE}.*"]))
    assert [(s["name"], s["hook"], s["kind"], s["d_sae"]) for s in info["saes"]] == [
        ("res1", SITE, "standard", 96), ("z0", "blocks.0.attn.hook_z", "topk", 72)]
    assert hooks[f"{SITE}.hook_sae_acts_post"] == "[1, P, d_sae]"
    assert hooks[f"{SITE}.hook_sae_recons"] == "[1, P, 64]"
    assert f"{SITE}.hook_sae_output" in [h["name"] for h in info["hooks"]]


def test_bad_requests_are_clear_errors(server):
    with lensd.Client(server.addr) as client:
        with pytest.raises(lensd.InvalidArgument, match="saes\\[0\\]: no SAE named 'nope'; "
                                                        "loaded: res1, z0"):
            client.run_with_cache([1, 2, 3], saes=["nope"])
        with pytest.raises(lensd.InvalidArgument, match="names_filter"):
            client.run_with_cache([1, 2, 3], f"{SITE}.hook_sae_acts_post")
        for edit, message in [
                (lensd.steer_feature("res1", 96), "features\\[0\\] = 96 is out of range: SAE "
                                                  "'res1' has 96 features"),
                (lensd.steer_feature("z0", 1), "no SAE in saes is attached at z0"),
                (lensd.project(f"{SITE}.hook_sae_acts_post", np.ones(96)), "zero, scale, set or add")]:
            if edit.HasField("project"):
                edit.features.append(1)
            with pytest.raises(lensd.InvalidArgument, match=message):
                client.run_with_cache([1, 2, 3], [], saes=["res1"], interventions=[edit])
        bad = lensd.zero(SITE)
        bad.features.append(1)
        with pytest.raises(lensd.InvalidArgument, match="features applies to an attached SAE"):
            client.run_with_cache([1, 2, 3], [], saes=["res1"], interventions=[bad])
        with pytest.raises(lensd.InvalidArgument, match="gradients through SAE 'z0' are not "
                                                        "supported: its normalize_activations"):
            client.run_with_cache([1, 2, 3], saes=["z0"], grad=lensd.loss())
        assert client.health() == "SERVING"
        logits, _ = client.run_with_cache([1, 2, 3], [])
    assert logits.shape == (1, 3, 1000)
