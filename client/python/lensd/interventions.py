"""Typed interventions (DESIGN.md, "Interventions"), passed as `interventions=[...]` to
Client.run_with_cache and Client.generate:

    lensd.zero("blocks.3.attn.hook_z", heads=[5])                      # head ablation
    lensd.patch("blocks.6.hook_resid_pre", source=0, prompts=[1])       # activation patching
    lensd.add("blocks.8.hook_resid_pre", steering_vector, coeff=4.0)    # steering, every token
    lensd.sae_clamp("blocks.8.hook_resid_post", encoder=w, decoder=u, target=0.0)

Common selection arguments: `positions` (None = all; a list of indices, negative from the
prompt's end; slice(start, stop) over the prompt; "all", "prompt" or "generated"), `heads` (per-head
hooks and attention maps), `keys` (attention maps: key positions), `prompts` (RunWithCache:
indices of the prompts it applies to). Values are numpy arrays (float32 or float16; other
dtypes are converted to float32), broadcast numpy-style to the selected slice.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from lensd.v1 import lensd_pb2

Positions = Union[None, str, slice, int, Sequence[int]]
_SCOPES = {"all": lensd_pb2.SCOPE_ALL, "prompt": lensd_pb2.SCOPE_PROMPT,
           "generated": lensd_pb2.SCOPE_GENERATED}


def _positions(p: Positions, field: str) -> Optional[lensd_pb2.Positions]:
    if p is None:
        return None
    if isinstance(p, str):
        if p not in _SCOPES:
            raise ValueError(f"{field} must be 'all', 'prompt' or 'generated', got {p!r}")
        return lensd_pb2.Positions(scope=_SCOPES[p])
    if isinstance(p, slice):
        start, stop = p.start, p.stop
        if p.step not in (None, 1):
            raise ValueError(f"{field}: slices with a step are not supported")
        s = lensd_pb2.PositionSlice()
        if start is not None:
            s.start = int(start)
        if stop is not None:
            s.stop = int(stop)
        return lensd_pb2.Positions(slice=s)
    if isinstance(p, (int, np.integer)):
        p = [p]
    return lensd_pb2.Positions(indices=lensd_pb2.IndexList(values=[int(v) for v in p]))


def _ints(v) -> list:
    if v is None:
        return []
    if isinstance(v, (int, np.integer)):
        return [int(v)]
    return [int(x) for x in v]


def tensor(value) -> lensd_pb2.Tensor:
    """A numpy-compatible value as a wire Tensor (float16 stays float16, else float32)."""
    a = np.asarray(value)
    if a.dtype == np.float16:
        return lensd_pb2.Tensor(dtype=lensd_pb2.DTYPE_FLOAT16, shape=list(a.shape),
                                data=np.ascontiguousarray(a, dtype="<f2").tobytes())
    a = np.ascontiguousarray(a, dtype="<f4")
    shape = list(a.shape) if a.ndim > 0 else [1]
    return lensd_pb2.Tensor(dtype=lensd_pb2.DTYPE_FLOAT32, shape=shape, data=a.tobytes())


def _make(hook: str, positions: Positions, heads, keys: Positions, prompts,
          **op) -> lensd_pb2.Intervention:
    iv = lensd_pb2.Intervention(hook=hook, heads=_ints(heads), prompts=_ints(prompts), **op)
    for field in ("positions", "keys"):
        p = _positions(positions if field == "positions" else keys, field)
        if p is not None:
            getattr(iv, field).CopyFrom(p)
    return iv


def zero(hook: str, *, positions: Positions = None, heads=None, keys: Positions = None,
         prompts=None) -> lensd_pb2.Intervention:
    """x = 0 on the selected slice."""
    return _make(hook, positions, heads, keys, prompts, zero=lensd_pb2.ZeroOp())


def scale(hook: str, factor: float, *, positions: Positions = None, heads=None,
          keys: Positions = None, prompts=None) -> lensd_pb2.Intervention:
    """x = factor · x."""
    return _make(hook, positions, heads, keys, prompts, scale=lensd_pb2.ScaleOp(factor=float(factor)))


def set(hook: str, value, *, positions: Positions = None, heads=None,  # noqa: A001
        keys: Positions = None, prompts=None) -> lensd_pb2.Intervention:
    """x = value (broadcast to the slice)."""
    return _make(hook, positions, heads, keys, prompts, set=lensd_pb2.SetOp(value=tensor(value)))


def add(hook: str, value, coeff: float = 1.0, *, positions: Positions = None, heads=None,
        keys: Positions = None, prompts=None) -> lensd_pb2.Intervention:
    """x += coeff · value: a steering vector (in generate, on every token by default)."""
    return _make(hook, positions, heads, keys, prompts,
                 add=lensd_pb2.AddOp(value=tensor(value), coeff=float(coeff)))


def patch(hook: str, source: int, *, source_positions: Positions = None,
          positions: Positions = None, heads=None, keys: Positions = None,
          prompts=None) -> lensd_pb2.Intervention:
    """x = the same hook's value in prompt `source` of the request (before any op there)."""
    op = lensd_pb2.PatchOp(source=int(source))
    sp = _positions(source_positions, "source_positions")
    if sp is not None:
        op.source_positions.CopyFrom(sp)
    return _make(hook, positions, heads, keys, prompts, patch=op)


def project(hook: str, direction, target: float = 0.0, *, positions: Positions = None,
            heads=None, prompts=None) -> lensd_pb2.Intervention:
    """x += (target − x·d̂) d̂; target 0 ablates the direction."""
    return _make(hook, positions, heads, None, prompts,
                 project=lensd_pb2.ProjectOp(direction=tensor(direction), target=float(target)))


def sae_clamp(hook: str, *, encoder, decoder, target: float, encoder_bias: float = 0.0,
              decoder_bias=None, threshold: float = 0.0, only_active: bool = False,
              positions: Positions = None, heads=None, prompts=None) -> lensd_pb2.Intervention:
    """Clamps one SAE feature a = act((x − b_dec)·w + b) to `target`: x += (target − a)·u,
    keeping the SAE's reconstruction error (SAELens semantics). act is ReLU above
    `threshold` (JumpReLU when threshold > 0)."""
    op = lensd_pb2.SaeClampOp(encoder=tensor(encoder), decoder=tensor(decoder),
                              encoder_bias=float(encoder_bias), threshold=float(threshold),
                              target=float(target), only_active=bool(only_active))
    if decoder_bias is not None:
        op.decoder_bias.CopyFrom(tensor(decoder_bias))
    return _make(hook, positions, heads, None, prompts, sae_clamp=op)


def noise(hook: str, std: float, seed: int = 0, *, positions: Positions = None, heads=None,
          keys: Positions = None, prompts=None) -> lensd_pb2.Intervention:
    """x += N(0, std²), reproducible for a seed and independent of the batch."""
    return _make(hook, positions, heads, keys, prompts,
                 noise=lensd_pb2.NoiseOp(std=float(std), seed=int(seed)))

