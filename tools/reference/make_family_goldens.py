#!/usr/bin/env python3
"""Reference data for the model families: a tiny random "sharpened" model per family, saved as
`save_pretrained` writes it, and for two prompts Hugging Face logits, 12 greedy tokens by full
recompute, and every hook of TransformerLens's bridge (`TransformerBridge.boot_transformers` +
`enable_compatibility_mode(no_processing=True)`, the HookedTransformer-equivalent mode of
transformer-lens 4.x).

Run by hand inside .reference-venv (tools/reference/make-env.sh), never by CI:
  .reference-venv/bin/python tools/reference/make_family_goldens.py [family ...]
Writes tests/data/families/<family>/{config.json, model.safetensors, reference.safetensors}.
"""
import json
import os
import sys
import zlib

import torch
import transformers
from safetensors.torch import save_file
from transformer_lens.model_bridge import TransformerBridge

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "families")
PROMPTS = {"p0": [1, 17, 293, 5, 804, 61, 12], "p1": [1, 45, 45, 45, 902, 3, 77, 150, 9, 600,
                                                      31, 31, 8, 415, 999, 2, 64, 128, 256]}
GREEDY = 12
COMMON = dict(vocab_size=1000, hidden_size=64, intermediate_size=176, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)


def qwen3():
    return transformers.Qwen3Config(**COMMON, num_hidden_layers=3, head_dim=32,
                                    rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False)


def olmo2():
    return transformers.Olmo2Config(**COMMON, num_hidden_layers=3, rope_theta=5e5,
                                    rms_norm_eps=1e-6, tie_word_embeddings=False)


def gemma2():
    return transformers.Gemma2Config(**COMMON, num_hidden_layers=4, head_dim=32,
                                     query_pre_attn_scalar=24, sliding_window=4,
                                     attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                                     hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6)


def gemma3_text():
    # 7 layers: the 5 local : 1 global cycle and one more local; linear rope scaling on global.
    return transformers.Gemma3TextConfig(**COMMON, num_hidden_layers=7, head_dim=32,
                                         query_pre_attn_scalar=24, sliding_window=4,
                                         rope_scaling={"rope_type": "linear", "factor": 8.0},
                                         rms_norm_eps=1e-6)


def phi3():
    return transformers.Phi3Config(**COMMON, num_hidden_layers=3, rms_norm_eps=1e-5,
                                   sliding_window=5, tie_word_embeddings=False)


def phi3_longrope():
    # Phi-3.5 / Phi-4-mini's long-context rope: pretrained on 8 positions (so the 7-token prompt
    # uses the short factors, the 19-token one and greedy continuations past 8 the long ones),
    # attention factor from max/original positions, partial rotary 0.75 (6 factors per head).
    half = 6
    return transformers.Phi3Config(**COMMON, num_hidden_layers=3, rms_norm_eps=1e-5,
                                   tie_word_embeddings=False, original_max_position_embeddings=8,
                                   partial_rotary_factor=0.75,
                                   rope_scaling={"type": "longrope",
                                                 "short_factor": [1.0 + 0.05 * i
                                                                  for i in range(half)],
                                                 "long_factor": [1.0 + 2.5 * i
                                                                 for i in range(half)]})


def mixtral():
    # 4 experts, 2 per token (renormalised, as Mixtral always does); experts of 96.
    return transformers.MixtralConfig(**{**COMMON, "intermediate_size": 96}, num_hidden_layers=3,
                                      num_local_experts=4, num_experts_per_tok=2,
                                      tie_word_embeddings=False)


def qwen3_moe():
    # Qwen3's attention, 4 experts of 48, 2 per token, not renormalised (norm_topk_prob false).
    return transformers.Qwen3MoeConfig(**COMMON, num_hidden_layers=3, head_dim=32, num_experts=4,
                                       num_experts_per_tok=2, moe_intermediate_size=48,
                                       norm_topk_prob=False, tie_word_embeddings=False)


def qwen3_moe_sparse():
    # Dense gated MLPs (intermediate_size) beside the mixtures: every second layer is sparse
    # (decoder_sparse_step 2) unless listed in mlp_only_layers, so layer 3 alone is a mixture.
    return transformers.Qwen3MoeConfig(**COMMON, num_hidden_layers=4, head_dim=32, num_experts=4,
                                       num_experts_per_tok=2, moe_intermediate_size=48,
                                       decoder_sparse_step=2, mlp_only_layers=[1],
                                       norm_topk_prob=True, tie_word_embeddings=False)


FAMILIES = {"qwen3": qwen3, "olmo2": olmo2, "gemma2": gemma2, "gemma3_text": gemma3_text,
            "phi3": phi3, "mixtral": mixtral, "qwen3_moe": qwen3_moe,
            "phi3_longrope": phi3_longrope, "qwen3_moe_sparse": qwen3_moe_sparse}


def sharpen(model, seed):
    """Random weights large enough that attention is far from uniform and greedy choices are
    separated; norm weights around their identity (1, or 0 for Gemma's stored w - 1)."""
    g = torch.Generator().manual_seed(seed)
    gemma = "gemma" in model.config.model_type
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                base = 0.0 if gemma else 1.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                std = 1.5 / p.shape[1] ** 0.5 if ("q_proj" in name or "k_proj" in name) else \
                    1.0 / p.shape[1] ** 0.5
                if "embed" in name:
                    std = 1.0 if not gemma else 0.125
                p.copy_(std * torch.randn(p.shape, generator=g))


def canonical(name):
    """The bridge's HookedTransformer names, without its module aliases (x.hook_in / x.hook_out,
    rotary tables, the router's copies of the routing hooks): the names lensd serves."""
    if name in ("unembed.hook_in", "unembed.hook_out"):
        return True
    last = name.rsplit(".", 1)[-1]
    return last not in ("hook_in", "hook_out", "hook_cos", "hook_sin", "hook_unembed") and \
        not name.startswith("rotary_emb") and ".mlp.gate." not in name  # router aliases


def greedy(model, ids):
    seq = list(ids)
    for _ in range(GREEDY):
        logits = model(torch.tensor([seq])).logits[0, -1]
        seq.append(int(logits.argmax()))
    return seq


def make(family, seed):
    torch.manual_seed(seed)
    config = FAMILIES[family]()
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    sharpen(model, seed)
    out = os.path.join(OUT, family)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    if os.path.exists(os.path.join(out, "generation_config.json")):  # not read by lensd
        os.remove(os.path.join(out, "generation_config.json"))
    bridge = TransformerBridge.boot_transformers(out, hf_model=model, tokenizer=any_tokenizer())
    bridge.enable_compatibility_mode(no_processing=True)
    tensors = {}
    with torch.no_grad():
        for p, ids in PROMPTS.items():
            x = torch.tensor([ids])
            hf_logits = model(x).logits
            tl_logits, cache = bridge.run_with_cache(x)
            diff = (tl_logits - hf_logits).abs().max().item()
            print(f"{family} {p}: bridge vs HF logits max |diff| {diff:.2e}")
            tensors[f"{p}.input_ids"] = x.to(torch.int32)
            tensors[f"{p}.logits"] = hf_logits.float()
            tensors[f"{p}.greedy"] = torch.tensor([greedy(model, ids)], dtype=torch.int32)
            tensors.update(hooks(p, cache))
    save(tensors, out, "reference.safetensors", "no processing")
    processed(out)


def hooks(p, cache):
    """The cache's canonical hooks under `<p>.<name>`, float32."""
    return {f"{p}.{name}": value.float().clone().contiguous()
            for name, value in cache.items() if canonical(name)}


def save(tensors, out, file, processing):
    save_file(tensors, os.path.join(out, file),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__,
                        "transformer_lens": f"bridge, compatibility mode, {processing}"})


def any_tokenizer():
    """The bridge wants a tokenizer (and changes it); ids are passed directly, so a fresh
    GPT-2 one will do."""
    return transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(
        os.path.dirname(__file__), "..", "..", "..", "shared", "tokenizers", "gpt2",
        "tokenizer.json"))


def processed(out):
    """The same prompts through a bridge with TransformerLens's default weight processing
    (compatibility mode: fold_ln, center_writing_weights, center_unembed, fold_value_biases as
    the bridge applies them per architecture). The bridge rewrites the Hugging Face model's
    weights in place, so it gets a fresh copy from the saved directory."""
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    bridge = TransformerBridge.boot_transformers(out, hf_model=model, tokenizer=any_tokenizer())
    bridge.enable_compatibility_mode()
    tensors = {}
    with torch.no_grad():
        for p, ids in PROMPTS.items():
            logits, cache = bridge.run_with_cache(torch.tensor([ids]))
            tensors[f"{p}.logits"] = logits.float().clone().contiguous()
            tensors.update(hooks(p, cache))
    save(tensors, out, "processed.safetensors", "default processing")


def main():
    families = sys.argv[1:] or list(FAMILIES)
    for family in families:
        make(family, zlib.crc32(family.encode()))  # a seed per family, whatever else runs


if __name__ == "__main__":
    main()
