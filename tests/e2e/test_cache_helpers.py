"""TransformerLens's shorthand on the client's ActivationCache: cache["resid_post", 0] and
friends resolve to the names TransformerLens's get_act_name documents, and stack_activation
stacks a hook over blocks as TransformerLens's does; the residual helpers on a served golden
cache equal TransformerLens's own."""
import json

import numpy as np
import pytest

import lensd
from conftest import GOLDEN, read_metadata, read_safetensors
from lensd.cache import ActivationCache


@pytest.mark.parametrize("args, full", [
    (("k6",), "blocks.6.attn.hook_k"),
    (("scale4ln1",), "blocks.4.ln1.hook_scale"),
    (("pre5",), "blocks.5.mlp.hook_pre"),
    (("normalized", 27, "ln2"), "blocks.27.ln2.hook_normalized"),
    (("k", 6, "a"), "blocks.6.attn.hook_k"),
    (("pre", 2), "blocks.2.mlp.hook_pre"),
    (("embed",), "hook_embed"),
    (("scale",), "ln_final.hook_scale"),
    (("resid_post", 0), "blocks.0.hook_resid_post"),
    (("attn", 1), "blocks.1.attn.hook_pattern"),
    (("attn_logits", 1), "blocks.1.attn.hook_attn_scores"),
    (("attn_out", 3), "blocks.3.hook_attn_out"),
    (("mlp_post", 2), "blocks.2.mlp.hook_post"),
    (("blocks.0.hook_resid_pre",), "blocks.0.hook_resid_pre"),
])
def test_shorthand_resolves_as_transformer_lens_documents(args, full):
    assert lensd.act_name(*args) == full


def make_cache(layers=3, batch=2, pos=5, d=4):
    cache = ActivationCache()
    rng = np.random.default_rng(0)
    for layer in range(layers):
        for hook in ("resid_pre", "resid_mid", "resid_post"):
            cache[f"blocks.{layer}.hook_{hook}"] = rng.normal(size=(batch, pos, d))
        cache[f"blocks.{layer}.ln1.hook_scale"] = rng.normal(size=(batch, pos, 1))
    cache["ln_final.hook_scale"] = rng.normal(size=(batch, pos, 1))
    return cache


def test_cache_takes_the_shorthand_and_full_names():
    cache = make_cache()
    assert cache["resid_post", 1] is cache["blocks.1.hook_resid_post"]
    assert cache["scale", 2, "ln1"] is cache["blocks.2.ln1.hook_scale"]
    assert cache["scale"] is cache["ln_final.hook_scale"]
    assert cache["scale0ln1"] is cache["blocks.0.ln1.hook_scale"]
    with pytest.raises(KeyError):
        cache["resid_post", 7]


def test_stack_activation_stacks_blocks_before_the_layer():
    cache = make_cache()
    every = cache.stack_activation("resid_post")
    assert every.shape == (3, 2, 5, 4)
    for layer in range(3):
        np.testing.assert_array_equal(every[layer], cache[f"blocks.{layer}.hook_resid_post"])
    assert cache.stack_activation("resid_post", 2).shape == (2, 2, 5, 4)
    assert cache.stack_activation("scale", -1, "ln1").shape == (3, 2, 5, 1)


def test_accumulated_resid_is_the_stream_before_each_block_then_the_final_one():
    cache = make_cache()
    stacked, labels = cache.accumulated_resid(return_labels=True)
    assert labels == ["0_pre", "1_pre", "2_pre", "final_post"]
    np.testing.assert_array_equal(stacked[1], cache["blocks.1.hook_resid_pre"])
    np.testing.assert_array_equal(stacked[3], cache["blocks.2.hook_resid_post"])
    # Up to and including block `layer`'s input, as TransformerLens's.
    with_mid, labels = cache.accumulated_resid(layer=2, incl_mid=True, return_labels=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid", "2_pre"]
    np.testing.assert_array_equal(with_mid[3], cache["blocks.1.hook_resid_mid"])
    assert cache.accumulated_resid(layer=1).shape == (2, 2, 5, 4)
    with pytest.raises(NotImplementedError, match="ln_final with its weights"):
        cache.accumulated_resid(apply_ln=True)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_helpers_equal_transformer_lens_on_a_served_golden_model(server_factory, family):
    """decompose_resid, accumulated_resid (with apply_ln) and apply_ln_to_stack on a served
    cache against TransformerLens's own ActivationCache on the same model and prompt
    (tests/data/cache_helpers, tools/reference/make_cache_helper_references.py): LayerNorm
    (gpt2, centred) and RMSNorm (llama)."""
    ref = read_safetensors(GOLDEN.parent / "cache_helpers" / f"{family}.safetensors")
    labels = json.loads(read_metadata(GOLDEN.parent / "cache_helpers" / f"{family}.safetensors")
                        ["labels"])
    ids = read_safetensors(GOLDEN / family / "reference.safetensors")["p0.input_ids"][0].tolist()
    server = server_factory("--model", str(GOLDEN / family))
    with lensd.Client(server.addr) as client:
        _, cache = client.run_with_cache(ids)
    assert cache.normalization == ("LN" if family == "gpt2" else "RMS")
    got = {
        "decompose_resid": cache.decompose_resid(return_labels=True),
        "decompose_resid.layer1_mlp_input_attn_ln": cache.decompose_resid(
            layer=1, mlp_input=True, mode="attn", apply_ln=True, return_labels=True),
        "accumulated_resid.layer2_mlp_input_ln": cache.accumulated_resid(
            layer=2, mlp_input=True, apply_ln=True, return_labels=True),
        "apply_ln_to_stack.final": (cache.apply_ln_to_stack(cache.accumulated_resid()), None),
        "decompose_resid.last_position_ln": cache.decompose_resid(
            pos_slice=-1, apply_ln=True, return_labels=True),
        "accumulated_resid.layer2_positions_1_4_ln": cache.accumulated_resid(
            layer=2, apply_ln=True, pos_slice=(1, 4), return_labels=True),
        "apply_ln_to_stack.positions_0_2": (cache.apply_ln_to_stack(
            cache.accumulated_resid(pos_slice=[0, 2]), pos_slice=[0, 2]), None),
        "accumulated_resid.layer2_mid": cache.accumulated_resid(layer=2, incl_mid=True,
                                                                return_labels=True),
        "apply_ln_to_stack.layer1_mlp_input": (cache.apply_ln_to_stack(
            cache.accumulated_resid(layer=1), layer=1, mlp_input=True), None),
    }
    for name, (value, names) in got.items():
        assert names == labels[name], name
        want = ref[name]
        assert value.shape == want.shape, name
        assert np.abs(value - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), name
