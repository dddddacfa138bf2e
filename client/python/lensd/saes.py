"""SAEs the server loaded (lensd serve --sae NAME=DIR): attaching them to a request, editing
their features, and reading sparse feature activations."""
from __future__ import annotations

import numpy as np

from lensd.interventions import Positions, add, scale, set, zero  # noqa: A004
from lensd.v1 import lensd_pb2


def sae(name: str, *, splice: bool = False) -> lensd_pb2.SaeAttach:
    """An SAE the server loaded (lensd serve --sae NAME=DIR), for run_with_cache(saes=[...]):
    its hook points (H.hook_sae_input ... H.hook_sae_output) become capturable under its hook
    H. The error term is kept (the model's outputs unchanged) unless `splice`, which makes the
    reconstruction replace the hook's value (SAELens's use_error_term=False)."""
    return lensd_pb2.SaeAttach(name=str(name), splice=bool(splice))


def steer_feature(sae_or_hook: str, feature: int, coeff: float = 1.0, *,
                  positions: Positions = None, prompts=None) -> lensd_pb2.Intervention:
    """Adds `coeff` to one feature of an attached SAE (named, or its hook) before its decoder:
    with the error term kept the output becomes the steered reconstruction + the clean error.
    lensd.steer_feature("res1", 10200, coeff=8), with saes=["res1"] in the same request."""
    return edit_features(sae_or_hook, [feature], "add", coeff, positions=positions,
                         prompts=prompts)


def edit_features(sae_or_hook: str, features, op: str, value=None, *,
                  positions: Positions = None, prompts=None) -> lensd_pb2.Intervention:
    """An edit of SAE features (indices) at `<sae_or_hook>.hook_sae_acts_post`: op "zero",
    "scale" (value: factor), "set" or "add" (value: a number or one per feature)."""
    hook = f"{sae_or_hook}.hook_sae_acts_post"
    if op == "zero":
        iv = zero(hook, positions=positions, prompts=prompts)
    elif op == "scale":
        iv = scale(hook, float(value), positions=positions, prompts=prompts)
    elif op in ("set", "add"):
        make = set if op == "set" else add
        iv = make(hook, np.atleast_1d(np.asarray(value, np.float32)), positions=positions,
                  prompts=prompts)
    else:
        raise ValueError(f"op must be zero, scale, set or add, not {op!r}")
    iv.features.extend(int(f) for f in features)
    return iv



def dense_features(indices: np.ndarray, values: np.ndarray, d_sae: int) -> np.ndarray:
    """Top-k feature activations (run_with_cache(..., feature_top_k=k) gives
    cache["<hook>.hook_sae_acts_post.top_indices"] and ".top_values", [batch, P, k]) as the dense
    [batch, P, d_sae] array; padded positions (index -1) stay 0."""
    dense = np.zeros(indices.shape[:-1] + (int(d_sae),), dtype=np.float32)
    b, p, k = np.nonzero(indices >= 0)
    dense[b, p, indices[b, p, k]] = values[b, p, k]
    return dense
