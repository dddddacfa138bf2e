"""TransformerLens's shorthand on the client's ActivationCache: cache["resid_post", 0] and
friends resolve to the names TransformerLens's get_act_name documents, and stack_activation
stacks a hook over blocks as TransformerLens's does. No server needed."""
import numpy as np
import pytest

import lensd
from lensd.client import ActivationCache


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
    with_mid, labels = cache.accumulated_resid(layer=2, incl_mid=True, return_labels=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid"]
    np.testing.assert_array_equal(with_mid[3], cache["blocks.1.hook_resid_mid"])
    assert cache.accumulated_resid(layer=1).shape == (1, 2, 5, 4)
