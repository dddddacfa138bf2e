#!/usr/bin/env python3
"""TransformerLens's own ActivationCache helpers on the golden models, the reference for lensd's
client-side ones (tests/e2e/test_cache_helpers.py).

Run by hand inside .reference-venv (tools/reference/make-env.sh), never by CI:
  .reference-venv/bin/python tools/reference/make_cache_helper_references.py
For golden gpt2 (LayerNorm) and llama (RMSNorm), prompt p0, through TransformerLens 4.3's bridge
(compatibility mode, no processing): decompose_resid and accumulated_resid with and without
apply_ln, and apply_ln_to_stack before a block's attention and MLP; each result under its
name in tests/data/cache_helpers/<family>.safetensors, its labels in the metadata.
"""
import json
import os

import torch
import transformers
from importlib.metadata import version
from safetensors.numpy import load_file
from safetensors.torch import save_file
from transformer_lens.model_bridge import TransformerBridge

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "tests", "data")


def main():
    for family in ("gpt2", "llama"):
        golden = os.path.join(DATA, "golden", family)
        model = transformers.AutoModelForCausalLM.from_pretrained(golden, dtype=torch.float32).eval()
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(
            HERE, "..", "..", "..", "shared", "tokenizers", "gpt2", "tokenizer.json"))
        bridge = TransformerBridge.boot_transformers(golden, hf_model=model, tokenizer=tokenizer)
        bridge.enable_compatibility_mode(no_processing=True)
        ids = torch.tensor(load_file(os.path.join(golden, "reference.safetensors"))["p0.input_ids"],
                           dtype=torch.int64).reshape(1, -1)
        with torch.no_grad():
            _, cache = bridge.run_with_cache(ids)
            calls = {
                "decompose_resid": lambda: cache.decompose_resid(return_labels=True),
                "decompose_resid.layer1_mlp_input_attn_ln": lambda: cache.decompose_resid(
                    layer=1, mlp_input=True, mode="attn", apply_ln=True, return_labels=True),
                "accumulated_resid.layer2_mlp_input_ln": lambda: cache.accumulated_resid(
                    layer=2, mlp_input=True, apply_ln=True, return_labels=True),
                "apply_ln_to_stack.final": lambda: (cache.apply_ln_to_stack(
                    cache.accumulated_resid()), None),
                "decompose_resid.last_position_ln": lambda: cache.decompose_resid(
                    pos_slice=-1, apply_ln=True, return_labels=True),
                "accumulated_resid.layer2_positions_1_4_ln": lambda: cache.accumulated_resid(
                    layer=2, apply_ln=True, pos_slice=(1, 4), return_labels=True),
                "apply_ln_to_stack.positions_0_2": lambda: (cache.apply_ln_to_stack(
                    cache.accumulated_resid(pos_slice=[0, 2]), pos_slice=[0, 2]), None),
                "accumulated_resid.layer2_mid": lambda: cache.accumulated_resid(
                    layer=2, incl_mid=True, return_labels=True),
                "apply_ln_to_stack.layer1_mlp_input": lambda: (cache.apply_ln_to_stack(
                    cache.accumulated_resid(layer=1), layer=1, mlp_input=True), None),
            }
            out, labels = {}, {}
            for name, call in calls.items():
                value, names = call()
                out[name] = value.float().contiguous()
                labels[name] = names
        save_file(out, os.path.join(DATA, "cache_helpers", f"{family}.safetensors"),
                  metadata={"labels": json.dumps(labels),
                            "source": f"transformer-lens {version('transformer-lens')} bridge "
                                      "(compatibility mode, no processing), p0 of the golden model"})
        print(family, {k: tuple(v.shape) for k, v in out.items()}, labels)


if __name__ == "__main__":
    main()
