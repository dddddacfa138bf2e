"""TransformerLens's shorthand for hook names, as `cache["resid_post", 0]` and
`utils.get_act_name` accept it: ("k", 6) -> "blocks.6.attn.hook_k", ("pre", 2) ->
"blocks.2.mlp.hook_pre", ("scale", 4, "ln1") -> "blocks.4.ln1.hook_scale", ("scale",) ->
"ln_final.hook_scale", "k6" -> "blocks.6.attn.hook_k", "scale4ln1" -> "blocks.4.ln1.hook_scale".
Full names come back unchanged."""
from __future__ import annotations

import re
from typing import Optional, Union

# Other spellings TransformerLens accepts for a hook's own name.
_SYNONYMS = {"attn": "pattern", "attn_logits": "attn_scores", "key": "k", "query": "q",
             "value": "v", "mlp_pre": "pre", "mlp_mid": "mid", "mlp_post": "post"}
# Short forms of the sublayer part.
_SUBLAYERS = {"a": "attn", "attention": "attn", "m": "mlp", "b": "", "block": "", "blocks": ""}
# Hooks that live in a sublayer whatever the caller says.
_IN_ATTN = {"q", "k", "v", "z", "rot_q", "rot_k", "result", "pattern", "attn_scores"}
_IN_MLP = {"pre", "post", "mid", "pre_linear"}
_NORM = {"scale", "normalized"}


def act_name(name: str, layer: Optional[Union[int, str]] = None,
             sublayer: Optional[str] = None) -> str:
    """The full hook name for TransformerLens's shorthand (see the module docstring)."""
    if layer is None and sublayer is None and ("." in name or name.startswith("hook_")):
        return name
    packed = re.fullmatch(r"([a-z_]+?)(\d+)(.*)", name)
    if packed is not None:  # "k6", "scale4ln1"
        name, layer, sublayer = packed.group(1), packed.group(2), packed.group(3) or sublayer
    name = _SYNONYMS.get(name, name)
    if name in _IN_ATTN:
        sublayer = "attn"
    elif name in _IN_MLP:
        sublayer = "mlp"
    elif sublayer is not None:
        sublayer = _SUBLAYERS.get(sublayer, sublayer)
    parts = [] if layer is None else ["blocks", str(int(layer))]
    if sublayer:
        parts.append(sublayer)
    elif name in _NORM and layer is None:
        parts.append("ln_final")
    parts.append(f"hook_{name}")
    return ".".join(parts)
