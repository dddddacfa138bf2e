#!/usr/bin/env python3
"""Reference data for SAEs attached to the golden models: tiny random SAEs of each SAELens
architecture (standard, jumprelu, topk) and normalisation, saved with SAELens's own
`save_model` (cfg.json + sae_weights.safetensors), and for the golden prompts every SAELens
hook point (`SAE.run_with_cache` with the error term kept) plus the model's logits with the
SAE spliced in (its output replacing the hook's value, as HookedSAETransformer does with
use_error_term=False) and with the error term kept and a feature edit on hook_sae_acts_post
(`steered_logits`, see `steer`), run through Hugging Face transformers with a module hook.

Run by hand inside .reference-venv (tools/reference/make-env.sh), never by CI:
  .reference-venv/bin/python tools/reference/make_sae_references.py
Writes tests/data/saes/<case>/{cfg.json, sae_weights.safetensors, reference.safetensors}.

sae-lens 6.54.12 pins transformer-lens < 4 while the family references use 4.3, so it is
installed without its dependencies and imported through two shims (below): the SAE classes
need only `HookedRootModule` (TransformerLens 4 keeps the class, under a new module) and a
logger; the package's training and analysis modules are never imported.
"""
import importlib.util
import logging
import os
import sys
import types

import torch
import transformer_lens
import transformers
from safetensors.numpy import load_file
from safetensors.torch import save_file

_shim = types.ModuleType("transformer_lens.HookedTransformer")
_shim.HookedRootModule = transformer_lens.HookedRootModule
sys.modules["transformer_lens.HookedTransformer"] = _shim
_pkg = types.ModuleType("sae_lens")
_pkg.__path__ = list(importlib.util.find_spec("sae_lens").submodule_search_locations)
_pkg.__version__ = "6.54.12"
_pkg.logger = logging.getLogger("sae_lens")
sys.modules["sae_lens"] = _pkg
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig  # noqa: E402
from sae_lens.saes.sae import SAEMetadata  # noqa: E402
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig  # noqa: E402
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data")
HOOKS = ["hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
         "hook_sae_error", "hook_sae_output"]

# name: (golden model, hook, layer, architecture, extra config, d_sae)
CASES = {
    "gpt2_standard": ("gpt2", "hook_resid_post", 1, "standard",
                      dict(apply_b_dec_to_input=True), 96),
    "llama_jumprelu": ("llama", "hook_mlp_out", 0, "jumprelu",
                       dict(apply_b_dec_to_input=False, normalize_activations="layer_norm"), 80),
    "gpt2_topk_z": ("gpt2", "attn.hook_z", 0, "topk",
                    dict(k=6, rescale_acts_by_decoder_norm=True,
                         normalize_activations="constant_norm_rescale"), 72),
    "llama_topk": ("llama", "hook_resid_pre", 2, "topk", dict(k=4), 64),
}
CLASSES = {"standard": (StandardSAE, StandardSAEConfig), "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
           "topk": (TopKSAE, TopKSAEConfig)}


def hf_module(model, family, hook, layer):
    """The Hugging Face module whose output (or, for z, input) is the TransformerLens hook."""
    block = model.transformer.h[layer] if family == "gpt2" else model.model.layers[layer]
    if hook in ("hook_resid_post", "hook_resid_pre"):
        return block
    if hook == "hook_mlp_out":
        return block.mlp
    return block.attn.c_proj if family == "gpt2" else block.self_attn.o_proj  # attn.hook_z


# The feature edit of the steered references (tests/runtime/sae_test.cc repeats it): feature 3
# += 4 everywhere, feature 5 set to 0, features 1 and 2 scaled by 2 at position 1.
def steer(acts, hook):
    acts = acts.clone()
    acts[..., 3] += 4.0
    acts[..., 5] = 0.0
    acts[:, 1, 1:3] *= 2.0
    return acts


def make_sae(arch, extra, d_in, d_sae, hook_name, seed):
    cls, cfg_cls = CLASSES[arch]
    cfg = cfg_cls(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook_name), **extra)
    sae = cls(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) * 0.3)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.2)
        sae.b_dec.copy_(torch.randn(d_in, generator=g) * 0.1)
        if arch == "jumprelu":
            sae.threshold.copy_(torch.rand(d_sae, generator=g) * 0.3)
    sae.eval()
    return sae


def run_case(name, family, hook, layer, arch, extra, d_sae, seed):
    golden = os.path.join(ROOT, "golden", family)
    model = transformers.AutoModelForCausalLM.from_pretrained(golden, dtype=torch.float32).eval()
    ref = load_file(os.path.join(golden, "reference.safetensors"))
    hook_name = f"blocks.{layer}.{hook}"
    d_in = ref[f"p0.{hook_name}"].reshape(ref[f"p0.{hook_name}"].shape[:2] + (-1,)).shape[-1]
    sae = make_sae(arch, extra, d_in, d_sae, hook_name, seed)
    out = {}
    module = hf_module(model, family, hook, layer)
    for p in ("p0", "p1"):
        ids = torch.tensor(ref[f"{p}.input_ids"].astype("int64")).reshape(1, -1)
        x = torch.tensor(ref[f"{p}.{hook_name}"]).reshape(1, ids.shape[1], d_in)
        sae.use_error_term = True
        with torch.no_grad():
            _, cache = sae.run_with_cache(x)
        for h in HOOKS:
            out[f"{p}.{hook_name}.{h}"] = cache[h].contiguous()
        sae.use_error_term = False
        out[f"{p}.spliced_logits"] = spliced_logits(model, module, hook, sae, ids, x)
        # Steered: the error term kept and a hook on hook_sae_acts_post editing features.
        sae.use_error_term = True
        sae.add_hook("hook_sae_acts_post", steer)
        out[f"{p}.steered_logits"] = spliced_logits(model, module, hook, sae, ids, x)
        out[f"{p}.steered_greedy"] = steered_greedy(model, module, hook, sae, ids)
        if extra.get("normalize_activations", "none") == "none":  # lensd refuses the others
            out.update(gradients(model, family, module, hook, sae, ids, p))
        sae.reset_hooks()
        out[f"{p}.input_ids"] = ids.to(torch.int32)
    d = os.path.join(ROOT, "saes", name)
    sae.save_model(d)
    save_file(out, os.path.join(d, "reference.safetensors"))
    print(name, {k: tuple(v.shape) for k, v in out.items() if k.startswith("p0")})


def gradients(model, family, module, hook, sae, ids, p):
    """Autograd of the steered model's loss (mean −log p of each next token, error term kept):
    the gradient of every SAE hook point SAELens differentiates (the error term is computed
    without gradient) and of blocks.0.hook_resid_pre, as `<p>.grad.<name>`."""
    grads, handles = {}, []

    def keep(name):
        def hook(value, hook=None):
            if value.requires_grad:
                value.register_hook(lambda g: grads.__setitem__(name, g.detach().clone()))
            return value
        return hook

    hook_name = sae.cfg.metadata.hook_name
    for h in HOOKS:
        if h != "hook_sae_error":
            sae.add_hook(h, keep(f"{hook_name}.{h}"))  # after steer: the edited value's
    first = model.transformer.h[0] if family == "gpt2" else model.model.layers[0]

    def pre(m, args, kwargs):
        value = args[0] if args else kwargs["hidden_states"]
        keep("blocks.0.hook_resid_pre")(value)
        return None
    handles.append(first.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logits = run_with_sae(model, module, hook, sae, None, embeds=embeds)[0]
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
            loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return {f"{p}.grad.{name}": g.reshape(g.shape[:2] + (-1,)).contiguous()
            for name, g in grads.items()}


def steered_greedy(model, module, hook, sae, ids, new_tokens=8):
    """The prompt and `new_tokens` greedy tokens of the steered model, each by full recompute
    (the edit applies at every position, generated ones included)."""
    for _ in range(new_tokens):
        logits = run_with_sae(model, module, hook, sae, ids)[0]
        ids = torch.cat([ids, logits[0, -1].argmax().reshape(1, 1)], dim=1)
    return ids.to(torch.int32)


def spliced_logits(model, module, hook, sae, ids, x):
    """Logits with the SAE's output in place of the hook's value (checked against the golden
    value first, so the module hook is the TransformerLens hook)."""
    logits, seen = run_with_sae(model, module, hook, sae, ids)
    torch.testing.assert_close(seen, x, atol=1e-4, rtol=1e-4)
    return logits.contiguous()


def run_with_sae(model, module, hook, sae, ids, embeds=None):
    """(logits, the hook's value as the SAE saw it) with the SAE's output in its place; from
    `embeds` (with gradients) instead of `ids` when given."""
    seen = {}

    def replace(value):
        shape = value.shape
        flat = value.reshape(1, shape[1], -1)
        seen["x"] = flat.detach().clone()
        return sae(flat).reshape(shape)

    if hook == "attn.hook_z":
        handle = module.register_forward_pre_hook(lambda m, args: (replace(args[0]),) + args[1:])
    elif hook == "hook_resid_pre":
        def pre(m, args, kwargs):
            if args:
                return (replace(args[0]),) + args[1:], kwargs
            return args, dict(kwargs, hidden_states=replace(kwargs["hidden_states"]))
        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(m, args, output):
            if isinstance(output, tuple):
                return (replace(output[0]),) + output[1:]
            return replace(output)
        handle = module.register_forward_hook(post)
    try:
        if embeds is not None:
            logits = model(inputs_embeds=embeds).logits
        else:
            with torch.no_grad():
                logits = model(ids).logits
    finally:
        handle.remove()
    return logits, seen["x"]


def main():
    names = sys.argv[1:] or list(CASES)
    for i, name in enumerate(CASES):
        if name in names:
            run_case(name, *CASES[name], seed=100 + i)


if __name__ == "__main__":
    main()
