"""lensd.RemoteModel, TransformerLens's HookedTransformer surface, against a GPT-2-shaped
built-in model with GPT-2's real tokenizer (../shared/tokenizers/gpt2): tokens and BOS as
TransformerLens gives them, run_with_cache and calling equal the plain client's, generation,
and clear errors."""
import numpy as np
import pytest

import lensd
from conftest import Server
from test_readme_examples import GPT2_TOKENIZER

GPT2_BOS = 50256  # <|endoftext|>, GPT-2's BOS and EOS


@pytest.fixture(scope="module")
def gpt2():
    if not (GPT2_TOKENIZER / "tokenizer.json").exists():
        pytest.skip(f"shared test data {GPT2_TOKENIZER} absent")
    s = Server("--model", "builtin:gpt2-small", "--tokenizer", str(GPT2_TOKENIZER))
    yield s
    assert s.stop() == 0, "".join(s.log)


def test_tokens_and_bos_as_transformer_lens(gpt2):
    model = lensd.RemoteModel(gpt2.addr, return_type="numpy")
    assert model.cfg.n_layers == 12 and model.cfg.d_vocab == 50257 and model.cfg.d_head == 64
    assert model.bos_token_id == GPT2_BOS
    # GPT-2's tokenizer adds no BOS itself: prepend_bos (the default) adds it.
    tokens = model.to_tokens("Hello world")
    assert tokens.shape == (1, 3) and tokens[0, 0] == GPT2_BOS
    assert model.to_tokens("Hello world", prepend_bos=False).tolist() == [tokens[0, 1:].tolist()]
    assert model.to_str_tokens("Hello world") == ["<|endoftext|>", "Hello", " world"]
    assert model.to_str_tokens(tokens[0]) == ["<|endoftext|>", "Hello", " world"]
    assert model.to_string(tokens[0, 1:]) == "Hello world"
    assert model.to_string(tokens) == ["<|endoftext|>Hello world"]
    mary = model.to_single_token(" Mary")
    assert model.to_str_tokens([mary]) == [" Mary"]
    with pytest.raises(ValueError, match="is 2 tokens, not one"):
        model.to_single_token(" Mary and")
    batch = model.to_tokens(["a b c", "a"])
    assert batch.shape == (2, 4) and batch[1, 2:].tolist() == [GPT2_BOS, GPT2_BOS]


def test_run_with_cache_and_calling_equal_the_client(gpt2):
    model = lensd.RemoteModel(gpt2.addr, return_type="numpy")
    tokens = model.to_tokens("The cat sat on the mat")
    logits, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    want_logits, want = model.client.run_with_cache(tokens[0].tolist(),
                                                    names_filter="blocks.0.hook_resid_post")
    np.testing.assert_array_equal(logits, want_logits)
    np.testing.assert_array_equal(cache["resid_post", 0], want["blocks.0.hook_resid_post"])
    np.testing.assert_array_equal(model("The cat sat on the mat"), want_logits)
    # Several strings: ragged prompts, left-padded with the cache's mask as the client does.
    _, ragged = model.run_with_cache(["The cat", "The cat sat on"], names_filter=[])
    assert ragged.mask.tolist() == [[False, False, True, True, True],
                                    [True, True, True, True, True]]


def test_generate_and_errors(gpt2):
    model = lensd.RemoteModel(gpt2.addr, return_type="numpy")
    text = model.generate("Once upon a time", max_new_tokens=4, ignore_eos=True)
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")
    ids = model.generate(model.to_tokens("Once upon a time")[0], max_new_tokens=4, ignore_eos=True)
    assert text == "Once upon a time" + model.to_string(ids)
    with pytest.raises(ValueError, match="return_type must be"):
        lensd.RemoteModel(gpt2.addr, return_type="jax")
    with pytest.raises(ValueError, match="generate takes one prompt"):
        model.generate(["a", "b"])
